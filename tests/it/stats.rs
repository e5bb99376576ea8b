//! The leaderboard stats API, one "story" run on each store: SQLite in a
//! temp dir always, PostgreSQL when `SWITCHYARD_TEST_POSTGRES` holds a URL
//! (CI sets it), in a fresh schema per run so parallel runs never meet.
//! Everything goes through the handler functions the server's router
//! calls; no socket is needed.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode};
use serde_json::{Value, json};
use switchyard::db::{self, postgres};
use switchyard::http::stats as api;
use switchyard::stats::StatsApi;
use switchyard::stats::{AggRow, RegionSet, StatsStore, sign, unix_now};

const SECRET: &str = "story-secret";
const A: &str = "0xaaa";
const B: &str = "0xbbb";

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

async fn reply(r: hyper::Response<Full<Bytes>>) -> Reply {
    let (parts, body) = r.into_parts();
    let bytes = body.collect().await.expect("full body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn call(
    api: &StatsApi,
    method: Method,
    path: &str,
    query: Option<&str>,
    headers: HeaderMap,
    body: &[u8],
) -> Reply {
    let r = api::handle(
        api,
        &method,
        path,
        query,
        &headers,
        Bytes::copy_from_slice(body),
    )
    .await
    .unwrap_or_else(|| panic!("{path} is a stats path"));
    reply(r).await
}

fn auth(sig: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(sig).expect("hex is a header value"),
    );
    h
}

/// Posts `body` signed with the right secret.
async fn post(api: &StatsApi, body: &str) -> Reply {
    call(
        api,
        Method::POST,
        "/api/post_stats",
        None,
        auth(&sign(SECRET.as_bytes(), body.as_bytes())),
        body.as_bytes(),
    )
    .await
}

async fn get(api: &StatsApi, path: &str, query: &str) -> Reply {
    let r = call(api, Method::GET, path, Some(query), HeaderMap::new(), b"").await;
    if r.status == StatusCode::OK {
        assert_eq!(r.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(
            r.headers[header::CACHE_CONTROL],
            "public, max-age=30, stale-while-revalidate=15"
        );
        assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
        assert_keys_sorted(&r.json());
    }
    r
}

/// serde_json keeps insertion order here (`preserve_order`), so this sees
/// the order the server wrote.
fn assert_keys_sorted(v: &Value) {
    match v {
        Value::Object(m) => {
            let keys: Vec<&String> = m.keys().collect();
            let mut want = keys.clone();
            want.sort();
            assert_eq!(keys, want, "keys not sorted");
            m.values().for_each(assert_keys_sorted);
        }
        Value::Array(a) => a.iter().for_each(assert_keys_sorted),
        _ => {}
    }
}

fn record(orch: &str, region: &str, ts: Option<f64>, sr: f64, seg: f64, rtt: f64) -> String {
    let mut v = json!({
        "region": region, "orchestrator": orch, "segments_sent": 10, "segments_received": 10,
        "success_rate": sr, "seg_duration": seg, "round_trip_time": rtt,
        "upload_time": 0.5, "download_time": 0.25, "transcode_time": 0.75,
        "errors": ["timeout", {"error_code": "E42", "count": 2}],
    });
    if let Some(ts) = ts {
        v["timestamp"] = json!(ts);
    }
    v.to_string()
}

/// The spec quotes its worked values to six decimals, computed from means
/// that it also rounds (seg 2.00886, rtt 1.94704 give 0.6436175 exactly,
/// quoted 0.643616), so agreement is checked to the input rounding, 5e-6.
fn close(got: &Value, want: f64, what: &str) {
    let g = got
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {got}"));
    assert!((g - want).abs() < 5e-6, "{what}: got {g}, want {want}");
}

fn check_row(row: &Value, sr: f64, rts: f64, score: f64, what: &str) {
    let keys: Vec<&str> = row
        .as_object()
        .expect("row is an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "latency_score",
            "round_trip_score",
            "score",
            "success_rate",
            "total_score"
        ],
        "{what}"
    );
    close(&row["success_rate"], sr, what);
    close(&row["round_trip_score"], rts, what);
    close(&row["latency_score"], rts, what);
    close(&row["score"], score, what);
    close(&row["total_score"], score, what);
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// The whole story, on one store.
async fn story(store: Arc<dyn StatsStore>) {
    let api = StatsApi::new(store.clone(), Some(SECRET.into()), RegionSet::default());
    store.ping().await.expect("ping");
    assert_eq!(store.count().await.unwrap(), 0);

    // Nothing yet.
    assert_eq!(
        get(&api, "/api/aggregated_stats", "").await.json(),
        json!({})
    );
    assert_eq!(
        get(&api, "/api/raw_stats", "orchestrator=0xaaa")
            .await
            .json(),
        json!({})
    );

    // Regions.
    let regions = get(&api, "/api/regions", "").await.json();
    let list = regions["regions"].as_array().expect("regions array");
    assert_eq!(list.len(), 22);
    let mdw = list.iter().find(|r| r["id"] == "MDW").expect("MDW listed");
    assert_eq!(mdw["name"], "Chicago");
    assert!(
        (mdw["lat"].as_f64().unwrap() - 41.88).abs() < 0.1
            && (mdw["lon"].as_f64().unwrap() + 87.63).abs() < 0.1
    );
    assert_eq!(list[0]["id"], "GLOBAL");

    // Known posts. The spec's worked values come out of the means:
    // A/FRA seg (1.50886 + 2.50886)/2 = 2.00886, rtt (1.74704 + 2.14704)/2 = 1.94704.
    // Quarter seconds: fractional, yet exact in both decimal and binary.
    // serde_json (without its `float_roundtrip` feature) may parse a long
    // fraction 1 ulp off, which would move a post across an inclusive bound.
    let real_now = unix_now();
    let now = (real_now * 4.0).floor() / 4.0 + 0.25;
    let (t_a1, t_a2, t_old) = (now - 3600.0, now - 7200.0, now - 30.0 * 3600.0);
    let (t_b1, t_b2, t_b3) = (now - 600.0, now - 1200.0, now - 60.0);
    for body in [
        record("0xAaA", "fra", Some(t_a1), 1.0, 1.50886, 1.74704),
        record("0xaaa", "FRA", Some(t_a2), 1.0, 2.50886, 2.14704),
        record("0xAAA", "Fra", Some(t_old), 0.0, 2.0, 100.0),
        record("0xBBB", "mdw", Some(t_b1), 1.0, 2.08047, 0.634866),
        record("0xbbb", "MDW", Some(t_b2), 0.5, 2.08047, 0.634866),
        record("0xbbb", "SIN", Some(t_b3), 1.0, 2.0, 0.0),
        record("0xaaa", "LON", None, 0.9, 2.0, 1.0),
    ] {
        let r = post(&api, &body).await;
        assert_eq!(
            (r.status, r.text.as_str()),
            (StatusCode::OK, "ok"),
            "{body}"
        );
    }
    assert_eq!(store.count().await.unwrap(), 7);
    // `timestamp: 0` also means "now".
    let zero = record(A, "LON", Some(0.0), 0.9, 2.0, 1.0);
    assert_eq!(post(&api, &zero).await.status, StatusCode::OK);
    assert_eq!(store.count().await.unwrap(), 8);

    let lon_rts = 1.0 - (-2.0f64).exp();

    // Default window: the last 24 h; the 30 h old post is out.
    let agg = get(&api, "/api/aggregated_stats", "").await.json();
    assert_eq!(keys(&agg), [A, B]);
    assert_eq!(keys(&agg[A]), ["FRA", "LON"]);
    assert_eq!(keys(&agg[B]), ["MDW", "SIN"]);
    check_row(&agg[A]["FRA"], 1.0, 0.643616, 0.643616, "A/FRA");
    check_row(&agg[A]["LON"], 0.9, lon_rts, 0.9 * lon_rts, "A/LON");
    check_row(&agg[B]["MDW"], 0.75, 0.962259, 0.75 * 0.962259, "B/MDW");
    check_row(&agg[B]["SIN"], 1.0, 0.0, 0.0, "B/SIN (rtt 0)");

    // Filters, case-insensitive.
    let only_a = get(&api, "/api/aggregated_stats", "orchestrator=0XaAa")
        .await
        .json();
    assert_eq!(keys(&only_a), [A]);
    assert_eq!(only_a[A], agg[A]);
    let fra = get(&api, "/api/aggregated_stats", "region=fra")
        .await
        .json();
    assert_eq!(keys(&fra), [A]);
    assert_eq!(keys(&fra[A]), ["FRA"]);
    let b_mdw = get(
        &api,
        "/api/aggregated_stats",
        "orchestrator=0xBBB&region=Mdw",
    )
    .await
    .json();
    check_row(
        &b_mdw[B]["MDW"],
        0.75,
        0.962259,
        0.75 * 0.962259,
        "B/MDW filtered",
    );
    assert_eq!(
        get(&api, "/api/aggregated_stats", "orchestrator=0xnobody")
            .await
            .json(),
        json!({})
    );
    assert_eq!(
        get(&api, "/api/aggregated_stats", "region=NOWHERE")
            .await
            .json(),
        json!({})
    );

    // since only: since … now, which takes in the old post.
    let q = format!("since={}", now - 31.0 * 3600.0);
    let since = get(&api, "/api/aggregated_stats", &q).await.json();
    let (sr, seg, rtt) = (
        2.0 / 3.0,
        (1.50886 + 2.50886 + 2.0) / 3.0,
        (1.74704 + 2.14704 + 100.0) / 3.0,
    );
    let want = AggRow::from_means(sr, seg, rtt);
    check_row(
        &since[A]["FRA"],
        sr,
        want.round_trip_score,
        want.score,
        "A/FRA since",
    );
    assert_eq!(since[B], agg[B]);

    // until only: everything up to `until` (the README's rule).
    let q = format!("until={}", now - 29.0 * 3600.0);
    let until = get(&api, "/api/aggregated_stats", &q).await.json();
    assert_eq!(keys(&until), [A]);
    assert_eq!(keys(&until[A]), ["FRA"]);
    let old_rts = 1.0 - (-2.0f64 / 100.0).exp();
    check_row(&until[A]["FRA"], 0.0, old_rts, 0.0, "A/FRA until");

    // Both: bounds inclusive, on the posted timestamp, fractional seconds.
    let q = format!("since={t_a2}&until={t_a1}");
    let both = get(&api, "/api/aggregated_stats", &q).await.json();
    assert_eq!(keys(&both), [A]);
    check_row(&both[A]["FRA"], 1.0, 0.643616, 0.643616, "A/FRA both");
    let q = format!("since={t_b1}&until={t_b1}");
    let exact = get(&api, "/api/aggregated_stats", &q).await.json();
    check_row(&exact[B]["MDW"], 1.0, 0.962259, 0.962259, "B/MDW exact");
    assert_eq!(keys(&exact), [B]);
    let q = format!("since={}&until={}", t_b1 + 0.001, t_b1 + 1.0);
    assert_eq!(
        get(&api, "/api/aggregated_stats", &q).await.json(),
        json!({})
    );

    // Malformed numbers: 400 naming the parameter.
    for (q, p) in [
        ("since=yesterday", "since"),
        ("until=12abc", "until"),
        ("since=NaN", "since"),
        ("until=inf", "until"),
    ] {
        for path in ["/api/aggregated_stats", "/api/raw_stats"] {
            let r = get(&api, path, &format!("orchestrator=0xaaa&{q}")).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}?{q}");
            assert!(
                r.json()["error"].as_str().unwrap().contains(p),
                "{}",
                r.text
            );
        }
    }

    // Raw: per region, newest first, normalised records.
    let raw = get(&api, "/api/raw_stats", "orchestrator=0XAAA")
        .await
        .json();
    assert_eq!(keys(&raw), ["FRA", "LON"]);
    let ts = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["timestamp"].as_f64().unwrap())
            .collect()
    };
    assert_eq!(ts(&raw["FRA"]), [t_a1, t_a2]);
    assert_eq!(raw["LON"].as_array().unwrap().len(), 2);
    let lon_ts = ts(&raw["LON"]);
    assert!(
        lon_ts[0] >= lon_ts[1] && lon_ts[1] >= real_now,
        "LON timestamps filled with the receive time: {lon_ts:?}"
    );
    let first = &raw["FRA"][0];
    assert_eq!(first["orchestrator"], A);
    assert_eq!(first["region"], "FRA");
    assert_eq!(first["segments_sent"], 10);
    assert_eq!(first["seg_duration"], 1.50886);
    assert_eq!(
        first["errors"],
        json!([{"count": 1, "error_code": "timeout"}, {"count": 2, "error_code": "E42"}])
    );
    let raw_all = get(
        &api,
        "/api/raw_stats",
        &format!("orchestrator={A}&until={now}"),
    )
    .await
    .json();
    assert_eq!(ts(&raw_all["FRA"]), [t_a1, t_a2, t_old]);
    let raw_fra = get(&api, "/api/raw_stats", "orchestrator=0xaaa&region=fRa")
        .await
        .json();
    assert_eq!(keys(&raw_fra), ["FRA"]);
    let raw_b = get(&api, "/api/raw_stats", "orchestrator=0xbbb")
        .await
        .json();
    assert_eq!(ts(&raw_b["MDW"]), [t_b1, t_b2]);
    for q in ["", "region=FRA", "orchestrator=", "orchestrator=%20"] {
        let r = get(&api, "/api/raw_stats", q).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(
            r.text,
            r#"{"error":"orchestrator is a required parameter"}"#
        );
    }

    // Refused posts store nothing.
    let before = store.count().await.unwrap();
    let good = record(A, "FRA", Some(now - 10.0), 1.0, 2.0, 1.0);
    let good_sig = sign(SECRET.as_bytes(), good.as_bytes());
    let forbidden = |r: &Reply, what: &str| {
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {}", r.text);
        assert_eq!(
            r.text, r#"{"error":"request can not be authenticated"}"#,
            "{what}"
        );
    };
    // Missing Authorization.
    forbidden(
        &call(
            &api,
            Method::POST,
            "/api/post_stats",
            None,
            HeaderMap::new(),
            good.as_bytes(),
        )
        .await,
        "unsigned",
    );
    // Signed with another key.
    let other = sign(b"not-the-secret", good.as_bytes());
    forbidden(
        &call(
            &api,
            Method::POST,
            "/api/post_stats",
            None,
            auth(&other),
            good.as_bytes(),
        )
        .await,
        "wrong key",
    );
    // A replayed signature on an altered body (one byte changed).
    let mut altered = good.clone().into_bytes();
    let i = altered
        .iter()
        .position(|&b| b == b'1')
        .expect("a digit to change");
    altered[i] = b'0';
    forbidden(
        &call(
            &api,
            Method::POST,
            "/api/post_stats",
            None,
            auth(&good_sig),
            &altered,
        )
        .await,
        "altered body",
    );
    // Not hex; a prefix; truncated.
    for bad in ["nothex", &format!("sha256={good_sig}"), &good_sig[..40]] {
        forbidden(
            &call(
                &api,
                Method::POST,
                "/api/post_stats",
                None,
                auth(bad),
                good.as_bytes(),
            )
            .await,
            bad,
        );
    }
    // Upper-case hex is the same signature.
    let upper = auth(&good_sig.to_uppercase());
    let r = call(
        &api,
        Method::POST,
        "/api/post_stats",
        None,
        upper,
        good.as_bytes(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let before = before + 1;
    assert_eq!(store.count().await.unwrap(), before);
    // No secret configured (or an empty one): posting is off.
    for secret in [None, Some(String::new())] {
        let off = StatsApi::new(store.clone(), secret, RegionSet::default());
        let r = call(
            &off,
            Method::POST,
            "/api/post_stats",
            None,
            auth(&good_sig),
            good.as_bytes(),
        )
        .await;
        forbidden(&r, "no secret");
        let empty_sig = sign(b"", good.as_bytes());
        forbidden(
            &call(
                &off,
                Method::POST,
                "/api/post_stats",
                None,
                auth(&empty_sig),
                good.as_bytes(),
            )
            .await,
            "empty",
        );
    }

    // Validation: 400 naming the field.
    for (body, field) in [
        ("{not json".to_owned(), "JSON"),
        ("[]".to_owned(), "object"),
        (r#"{"orchestrator":"0x1"}"#.to_owned(), "region"),
        (r#"{"region":"FRA"}"#.to_owned(), "orchestrator"),
        (
            r#"{"region":"FRA","orchestrator":""}"#.to_owned(),
            "orchestrator",
        ),
        (
            r#"{"region":"ZZZ","orchestrator":"0x1"}"#.to_owned(),
            "region",
        ),
        (
            r#"{"region":["FRA"],"orchestrator":"0x1"}"#.to_owned(),
            "region",
        ),
        (
            r#"{"region":"FRA","orchestrator":{"a":1}}"#.to_owned(),
            "orchestrator",
        ),
        (
            r#"{"region":"FRA","orchestrator":"0x1","timestamp":"yesterday"}"#.to_owned(),
            "timestamp",
        ),
        (
            r#"{"region":"FRA","orchestrator":"0x1","timestamp":-5}"#.to_owned(),
            "timestamp",
        ),
        (
            r#"{"region":"FRA","orchestrator":"0x1","segments_sent":"10"}"#.to_owned(),
            "segments_sent",
        ),
        (
            r#"{"region":"FRA","orchestrator":"0x1","segments_received":2.5}"#.to_owned(),
            "segments_received",
        ),
        (
            r#"{"region":"FRA","orchestrator":"0x1","success_rate":91.5}"#.to_owned(),
            "success_rate",
        ),
        (
            r#"{"region":"FRA","orchestrator":"0x1","success_rate":-1}"#.to_owned(),
            "success_rate",
        ),
        (
            r#"{"region":"FRA","orchestrator":"0x1","seg_duration":-2}"#.to_owned(),
            "seg_duration",
        ),
        (
            r#"{"region":"FRA","orchestrator":"0x1","round_trip_time":-0.1}"#.to_owned(),
            "round_trip_time",
        ),
        (
            r#"{"region":"FRA","orchestrator":"0x1","upload_time":"fast"}"#.to_owned(),
            "upload_time",
        ),
        (
            r#"{"region":"FRA","orchestrator":"0x1","download_time":-1}"#.to_owned(),
            "download_time",
        ),
        (
            r#"{"region":"FRA","orchestrator":"0x1","transcode_time":false}"#.to_owned(),
            "transcode_time",
        ),
        (
            r#"{"region":"FRA","orchestrator":"0x1","round_trip_time":1e999}"#.to_owned(),
            "JSON",
        ),
        (
            r#"{"region":"FRA","orchestrator":"0x1","errors":{"a":1}}"#.to_owned(),
            "errors",
        ),
        (
            r#"{"region":"FRA","orchestrator":"0x1","errors":[true]}"#.to_owned(),
            "errors[0]",
        ),
        (
            r#"{"region":"FRA","orchestrator":"0x1","errors":[{"error_code":"x","count":"2"}]}"#
                .to_owned(),
            "errors[0].count",
        ),
    ] {
        let r = post(&api, &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        let msg = r.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(
            msg.contains(field),
            "{body}: error {msg:?} should name {field}"
        );
    }
    assert_eq!(
        store.count().await.unwrap(),
        before,
        "a refused post stored something"
    );

    // Size: 413 over 64 KiB (by bytes and by Content-Length); exactly 64 KiB is fine.
    let sized = |n: usize| {
        let base = record(A, "FRA", Some(now - 5.0), 1.0, 2.0, 1.0);
        let pad = n - base.len() - r#","pad":"""#.len();
        format!(
            r#"{},"pad":"{}"}}"#,
            &base[..base.len() - 1],
            "x".repeat(pad)
        )
    };
    let exact = sized(64 * 1024);
    assert_eq!(exact.len(), 65_536);
    assert_eq!(post(&api, &exact).await.status, StatusCode::OK);
    let before = before + 1;
    let over = sized(64 * 1024 + 1);
    assert_eq!(
        post(&api, &over).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let mut h = auth(&good_sig);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("100000"));
    let r = call(
        &api,
        Method::POST,
        "/api/post_stats",
        None,
        h,
        good.as_bytes(),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Through `handle_request`: the limit is enforced while reading, with or without Content-Length.
    let req = |body: &str, length: bool| {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri("/api/post_stats")
            .header(
                header::AUTHORIZATION,
                sign(SECRET.as_bytes(), body.as_bytes()),
            );
        if length {
            b = b.header(header::CONTENT_LENGTH, body.len());
        }
        b.body(Full::new(Bytes::from(body.to_owned())))
            .expect("request")
    };
    for length in [true, false] {
        let r = reply(api::handle_request(&api, req(&over, length)).await).await;
        assert_eq!(
            r.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "content-length: {length}"
        );
    }
    assert_eq!(store.count().await.unwrap(), before);
    let r = reply(api::handle_request(&api, req(&good, true)).await).await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "ok"));
    let before = before + 1;
    let get_req = Request::builder()
        .uri("/api/aggregated_stats?orchestrator=0xBBB&region=mdw")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let r = reply(api::handle_request(&api, get_req).await).await;
    assert_eq!(r.status, StatusCode::OK);
    check_row(
        &r.json()[B]["MDW"],
        0.75,
        0.962259,
        0.75 * 0.962259,
        "via handle_request",
    );

    // Routing: methods, foreign paths.
    let r = call(
        &api,
        Method::GET,
        "/api/post_stats",
        None,
        HeaderMap::new(),
        b"",
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers[header::ALLOW], "POST, OPTIONS");
    let r = call(
        &api,
        Method::POST,
        "/api/regions",
        None,
        HeaderMap::new(),
        b"",
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = call(
        &api,
        Method::GET,
        "/api/regions/",
        None,
        HeaderMap::new(),
        b"",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(
        &api,
        Method::OPTIONS,
        "/api/aggregated_stats",
        None,
        HeaderMap::new(),
        b"",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let none = api::handle(
        &api,
        &Method::GET,
        "/api/applications",
        None,
        &HeaderMap::new(),
        Bytes::new(),
    )
    .await;
    assert!(none.is_none());
    assert_eq!(store.count().await.unwrap(), before);

    duplicate_keys_pages_and_retries(&api, &store).await;
}

/// Issue 29: a post naming a key twice is refused; `/api/raw_stats` pages
/// (`limit`, `cursor` → `next`); a post retried with its `Idempotency-Key`
/// is stored once and answered as the first was.
async fn duplicate_keys_pages_and_retries(api: &StatsApi, store: &Arc<dyn StatsStore>) {
    const P: &str = "0xpage";
    let before = store.count().await.unwrap();
    // Signed, valid, but `success_rate` twice: which one counts depends on
    // the parser, so the post is refused whole.
    let dup = r#"{"region":"FRA","orchestrator":"0xpage","segments_sent":1,"segments_received":1,"success_rate":1,"seg_duration":1,"round_trip_time":1,"upload_time":0,"download_time":0,"transcode_time":0,"success_rate":0}"#;
    let r = post(api, dup).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(
        r.text.contains("success_rate") && r.text.contains("twice"),
        "{}",
        r.text
    );
    // Nested objects too.
    let nested = record(P, "FRA", Some(1000.0), 1.0, 1.0, 1.0).replace(
        r#"{"error_code":"E42","count":2}"#,
        r#"{"error_code":"E42","count":2,"count":3}"#,
    );
    assert!(nested.contains(r#""count":3"#), "{nested}");
    assert_eq!(post(api, &nested).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(store.count().await.unwrap(), before);

    // 25 records, two sharing one timestamp (ties go by row id).
    for i in 0..25 {
        let ts = 2000.0 + f64::from(i.min(23));
        let region = if i % 2 == 0 { "FRA" } else { "LON" };
        let r = post(api, &record(P, region, Some(ts), 1.0, 1.0, 1.0)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &cursor {
            Some(c) => format!("orchestrator={P}&since=0&limit=10&cursor={c}"),
            None => format!("orchestrator={P}&since=0&limit=10"),
        };
        let page = get(api, "/api/raw_stats", &q).await.json();
        pages += 1;
        let mut n = 0;
        for (region, rows) in page.as_object().unwrap() {
            if region == "next" {
                continue;
            }
            for row in rows.as_array().unwrap() {
                seen.push(row["timestamp"].as_f64().unwrap());
                n += 1;
            }
        }
        assert!(n <= 10, "page {pages} holds {n} records");
        match page.get("next") {
            Some(next) => cursor = Some(next.as_str().unwrap().to_string()),
            None => break,
        }
        assert!(pages < 5, "paging does not end: {page}");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 25, "every record once: {seen:?}");
    seen.sort_by(f64::total_cmp);
    let mut want: Vec<f64> = (0..25).map(|i| 2000.0 + f64::from(i.min(23))).collect();
    want.sort_by(f64::total_cmp);
    assert_eq!(seen, want);
    for bad in [
        "limit=0",
        "limit=10001",
        "limit=x",
        "cursor=nope",
        "cursor=1_x",
    ] {
        let r = get(api, "/api/raw_stats", &format!("orchestrator={P}&{bad}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
    }
    // Without a limit: one page of at most 1000, no `next` here.
    let all = get(api, "/api/raw_stats", &format!("orchestrator={P}&since=0"))
        .await
        .json();
    assert!(all.get("next").is_none(), "{all}");

    // Idempotency keys.
    let body = record(P, "MDW", Some(3000.0), 1.0, 1.0, 1.0);
    let keyed = |key: &str, body: &str| {
        let mut h = auth(&sign(SECRET.as_bytes(), body.as_bytes()));
        h.insert("idempotency-key", HeaderValue::from_str(key).unwrap());
        h
    };
    let send = |h: HeaderMap, body: String| async move {
        call(
            api,
            Method::POST,
            "/api/post_stats",
            None,
            h,
            body.as_bytes(),
        )
        .await
    };
    let count = store.count().await.unwrap();
    let first = send(keyed("retry-1", &body), body.clone()).await;
    assert_eq!((first.status, first.text.as_str()), (StatusCode::OK, "ok"));
    assert!(first.headers.get("idempotent-replayed").is_none());
    for _ in 0..3 {
        let again = send(keyed("retry-1", &body), body.clone()).await;
        assert_eq!((again.status, again.text.as_str()), (StatusCode::OK, "ok"));
        assert_eq!(again.headers["idempotent-replayed"], "true");
    }
    assert_eq!(
        store.count().await.unwrap(),
        count + 1,
        "a retry stored again"
    );
    // The same key with another body is refused, and stores nothing.
    let other = record(P, "MDW", Some(3001.0), 1.0, 1.0, 1.0);
    let r = send(keyed("retry-1", &other), other.clone()).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    // Another key stores; concurrent retries of one key store once.
    let r = send(keyed("retry-2", &other), other.clone()).await;
    assert_eq!(r.status, StatusCode::OK);
    let third = record(P, "MDW", Some(3002.0), 1.0, 1.0, 1.0);
    let shared = Arc::new(StatsApi::new(
        store.clone(),
        Some(SECRET.into()),
        RegionSet::default(),
    ));
    let racing: Vec<_> = (0..8)
        .map(|_| {
            let (api, h, body) = (shared.clone(), keyed("retry-3", &third), third.clone());
            tokio::spawn(async move {
                call(
                    &api,
                    Method::POST,
                    "/api/post_stats",
                    None,
                    h,
                    body.as_bytes(),
                )
                .await
            })
        })
        .collect();
    for r in racing {
        let r = r.await.expect("racing post");
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    assert_eq!(store.count().await.unwrap(), count + 3);
    // Bad keys.
    for key in ["", "has space", &"k".repeat(256)] {
        let mut h = auth(&sign(SECRET.as_bytes(), body.as_bytes()));
        h.insert("idempotency-key", HeaderValue::from_str(key).unwrap());
        let r = send(h, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{key:?}: {}", r.text);
    }
    assert_eq!(store.count().await.unwrap(), count + 3);
}

/// Says the PostgreSQL half did not run. Written to the stderr handle
/// itself: libtest captures `eprintln!` of passing tests, and a skip must
/// be seen.
#[tokio::test]
async fn story_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("nested/data");
    let store = db::open(&data, None)
        .await
        .expect("open SQLite store")
        .stats;
    assert_eq!(store.backend(), "sqlite");
    assert!(data.join("stats.db").exists(), "stats.db in the data dir");
    story(store).await;

    // Reopening keeps the rows and does not re-run the migration.
    let again = db::open(&data, None).await.expect("reopen").stats;
    assert!(again.count().await.unwrap() >= 8);
}

#[tokio::test]
async fn story_postgres() {
    let Some(url) = crate::common::pg::url_or_skip("store tests") else {
        return;
    };
    let schema = crate::common::pg::unique("switchyard_test");
    let store = postgres::open(&url, Some(&schema))
        .await
        .expect("open PostgreSQL store");
    let pool = store.pool().clone();
    let store: Arc<dyn StatsStore> = Arc::new(store);
    assert_eq!(store.backend(), "postgres");
    // Catch the panic so the schema is dropped either way.
    let outcome = tokio::spawn(story(store.clone())).await;
    // Opening the same schema again is a no-op migration.
    let again = postgres::open(&url, Some(&schema))
        .await
        .map(|s| s.pool().clone());
    let drop = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(&pool)
    .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
    again.expect("reopen");
    drop.expect("drop test schema");
}

#[tokio::test]
async fn bad_postgres_settings_are_typed_and_redacted() {
    let err = db::open(
        std::path::Path::new("unused"),
        Some("postgres://u:hunter2@127.0.0.1:1/x"),
    )
    .await
    .err()
    .expect("nothing listens on port 1");
    let msg = err.to_string();
    assert!(
        msg.contains("REDACTED") && !msg.contains("hunter2"),
        "{msg}"
    );
    let err = postgres::open("postgres://u:hunter2@127.0.0.1:1/x", Some("Bad-Schema"))
        .await
        .map(|_| ())
        .expect_err("bad schema");
    assert!(err.to_string().contains("Bad-Schema"), "{err}");
    let err = postgres::open("nonsense://::", None)
        .await
        .map(|_| ())
        .expect_err("bad url");
    assert!(!err.to_string().contains("::"), "{err}");
}

/// The two backends take different paths to the same means (SQLite walks
/// pairs through a covering index; PostgreSQL adds hourly sums to the
/// events at the window's edges), so: same records, many windows, same answers.
#[tokio::test]
async fn backends_agree_on_random_windows() {
    let Some(url) = crate::common::pg::url_or_skip("store tests") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = db::open(dir.path(), None).await.expect("SQLite").stats;
    let schema = crate::common::pg::unique("switchyard_test_agree");
    let pg = postgres::open(&url, Some(&schema))
        .await
        .expect("PostgreSQL");
    let pool = pg.pool().clone();
    // Catch a panic so the schema is dropped either way.
    let outcome = tokio::spawn(agree(sqlite, Arc::new(pg))).await;
    let drop = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(&pool)
    .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
    drop.expect("drop test schema");
}

async fn agree(sqlite: Arc<dyn StatsStore>, pg: Arc<dyn StatsStore>) {
    use switchyard::stats::{Filter, StatsRecord, Window};
    // A small deterministic generator (xorshift; no rand dependency).
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let base = 1_800_000_000.0;
    let regions = ["FRA", "MDW", "SIN"];
    let mut records = Vec::new();
    for i in 0..3000 {
        // Some on exact hour boundaries, the rest anywhere in three days.
        let ts = if i % 50 == 0 {
            base + (next() * 72.0).floor() * 3600.0
        } else {
            base + next() * 3.0 * 86_400.0
        };
        records.push(StatsRecord {
            region: regions[i % 3].into(),
            orchestrator: format!("0x{:02x}", i % 7),
            timestamp: ts,
            segments_sent: 10,
            segments_received: 9,
            success_rate: next(),
            seg_duration: 1.0 + next(),
            round_trip_time: if i % 13 == 0 { 0.0 } else { 0.2 + 3.0 * next() },
            upload_time: 0.0,
            download_time: 0.0,
            transcode_time: 0.0,
            errors: vec![],
        });
    }
    // Bulk and single inserts both feed PostgreSQL's hourly sums.
    let (bulk, single) = records.split_at(2500);
    for store in [&sqlite, &pg] {
        store.insert_batch(bulk).await.expect("bulk insert");
        for r in single {
            store.insert(r).await.expect("insert");
        }
    }

    let mut windows = vec![
        Window {
            since: None,
            until: base + 4.0 * 86_400.0,
        },
        Window {
            since: Some(base + 3600.0),
            until: base + 7200.0,
        },
        Window {
            since: Some(base + 3600.0),
            until: base + 3600.0,
        },
        Window {
            since: Some(base + 86_400.0),
            until: base + 2.0 * 86_400.0,
        },
    ];
    for _ in 0..40 {
        let a = base - 3600.0 + next() * 3.2 * 86_400.0;
        let b = a + next() * 40.0 * 3600.0;
        windows.push(Window {
            since: Some(a),
            until: b,
        });
        windows.push(Window {
            since: None,
            until: b,
        });
    }
    let mut compared = 0;
    for w in windows {
        for (o, r) in [
            (None, None),
            (Some("0x03"), None),
            (None, Some("sin")),
            (Some("0x01"), Some("FRA")),
        ] {
            let f = Filter::new(o, r, w);
            let a = sqlite.aggregated(&f).await.expect("SQLite aggregated");
            let b = pg.aggregated(&f).await.expect("PostgreSQL aggregated");
            assert_eq!(
                a.keys().collect::<Vec<_>>(),
                b.keys().collect::<Vec<_>>(),
                "orchestrators differ for {f:?}"
            );
            for (orch, rows) in &a {
                assert_eq!(
                    rows.keys().collect::<Vec<_>>(),
                    b[orch].keys().collect::<Vec<_>>(),
                    "{f:?}"
                );
                for (region, x) in rows {
                    let y = &b[orch][region];
                    for (p, q) in [
                        (x.success_rate, y.success_rate),
                        (x.round_trip_score, y.round_trip_score),
                        (x.score, y.score),
                    ] {
                        assert!(
                            (p - q).abs() < 1e-9,
                            "{orch}/{region} {f:?}: {x:?} vs {y:?}"
                        );
                    }
                    compared += 1;
                }
            }
        }
    }
    assert!(compared > 500, "only {compared} rows compared");
}
