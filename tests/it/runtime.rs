//! The Openmix runtime against JS snippets: every member of `config`,
//! `request` and `response`, the error paths, and the budgets.
//!
//! Hostile snippets run on their own thread with a deadline, so a broken
//! budget fails the test instead of hanging the suite.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use switchyard::openmix::{
    Answer, AppCode, AppError, AppInstance, AppMeta, Budget, CallOptions, DataSnapshot, Decision,
    Location, ProviderInfo, Request,
};

fn code(src: &str) -> AppCode {
    AppCode {
        name: "t".into(),
        path: PathBuf::from("apps/t.js"),
        source: Arc::from(src),
        version: 1,
        // Debug builds on a shared 2-core machine are slow; hostile tests
        // still check that calls stop far sooner than their thread deadline.
        budget: Budget {
            decision: Duration::from_millis(100),
            ..Budget::default()
        },
        setup: None,
        shared_data: false,
        providers: Arc::from([]),
    }
}

fn data() -> DataSnapshot {
    let probes = DataSnapshot::probes_from_json(&serde_json::json!({
        "avail": {"cdn_a": {"avail": 99.5}, "cdn_b": {"avail": 80}, "cdn_c": {}},
        "http_rtt": {"cdn_a": {"http_rtt": 40}, "cdn_b": {"http_rtt": 30}},
    }))
    .unwrap();
    DataSnapshot {
        version: 1,
        probes,
        fusion: vec![
            ("cdn_a".into(), "{\"usage\": 10}".into()),
            ("cdn_b".into(), "not json".into()),
        ],
        sonar: vec![("cdn_a".into(), "{\"avail\":1}".into())],
        providers: vec![
            (
                "cdn_a".into(),
                ProviderInfo {
                    latitude: Some(51.51),
                    longitude: Some(-0.13),
                    ..Default::default()
                },
            ),
            (
                "cdn_b".into(),
                ProviderInfo {
                    latitude: Some(35.68),
                    longitude: Some(139.69),
                    ..Default::default()
                },
            ),
            ("origin".into(), ProviderInfo::default()),
        ],
        ..Default::default()
    }
}

fn request() -> Request {
    Request {
        ip_address: Some("198.51.100.7".parse::<IpAddr>().unwrap()),
        client: Arc::new(Location {
            asn: 64510,
            market: "EU".into(),
            country: "GB".into(),
            region: "GB-R-ENG".into(),
            state: "GB-S-LND".into(),
            latitude: Some(48.85),
            longitude: Some(2.35),
        }),
        resolver_ip_address: Some("192.0.2.1".parse::<IpAddr>().unwrap()),
        resolver: Arc::new(Location {
            asn: 64500,
            market: "NA".into(),
            country: "US".into(),
            region: "US-R-CA".into(),
            state: "US-S-CA".into(),
            ..Default::default()
        }),
        hostname_prefix: "www.eu".into(),
        query_type: "AAAA".into(),
        headers: vec![("X-Sample-Header".into(), "sample".into())],
        query: vec![("q".into(), "1".into())],
    }
}

fn load(src: &str) -> Result<(AppInstance, AppMeta), AppError> {
    AppInstance::load(&code(src), &Arc::new(data()), None)
}

fn decide(src: &str) -> Result<Decision, AppError> {
    let (mut app, _) = load(src)?;
    app.decide(request(), &Arc::new(data()), CallOptions::default())
        .map(|o| o.decision)
}

/// Runs `onRequest` with a body that reports a value through the reason
/// code, in an app that declared cdn_a, cdn_b and cdn_c (not origin).
fn eval(expr: &str) -> String {
    let src = format!(
        "function init(c) {{ c.requireProvider('cdn_a'); c.requireProvider('cdn_b'); c.requireProvider('cdn_c'); }}
         function onRequest(request, response) {{ 'use strict'; response.respondEmpty(); response.setReasonCode(JSON.stringify({expr})); }}"
    );
    decide(&src)
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
        .reason
        .unwrap()
}

/// Runs `f` on its own thread; fails if it does not finish within `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .expect("call did not finish in time: the budget does not hold")
}

// ------------------------------------------------------------------ config

#[test]
fn config_members_are_recorded() {
    let (_, meta) = load(
        "function init(config) { 'use strict'; config.requireProvider('cdn_b'); config.requireProvider('cdn_a'); \
         config.requireProvider('cdn_b'); config.enableCors('https://a.example, https://b.example'); config.enableProximityData(); }
         function onRequest(request, response) { response.respondEmpty(); }",
    )
    .unwrap();
    assert_eq!(meta.providers, vec!["cdn_b", "cdn_a"]);
    assert_eq!(
        meta.cors.as_deref(),
        Some("https://a.example, https://b.example")
    );
    assert!(meta.proximity, "enableProximityData() defaults to true");

    let (_, meta) = load("function init(c) { c.enableProximityData(false); } function onRequest(q, r) { r.respondEmpty(); }").unwrap();
    assert!(!meta.proximity);
    assert_eq!(meta.cors, None);
}

#[test]
fn config_get_providers_lists_configured_providers() {
    let (mut app, _) = load(
        "var seen; function init(config) { var p = config.getProviders(); seen = Object.keys(p).join(',') + ':' + p.cdn_a.latitude; }
         function onRequest(q, r) { r.respondEmpty(); r.setReasonCode(seen); }",
    )
    .unwrap();
    let d = app
        .decide(request(), &Arc::new(data()), CallOptions::default())
        .unwrap()
        .decision;
    assert_eq!(d.reason.as_deref(), Some("cdn_a,cdn_b,origin:51.51"));
}

#[test]
fn config_outside_init_throws() {
    let err = decide("var c; function init(config) { c = config; } function onRequest(q, r) { c.requireProvider('x'); r.respondEmpty(); }").unwrap_err();
    assert!(
        err.to_string().contains("only be called during init"),
        "{err}"
    );
}

// ------------------------------------------------------------------ request

#[test]
fn request_properties() {
    assert_eq!(eval("request.asn"), "64510");
    assert_eq!(eval("request.market"), "\"EU\"");
    assert_eq!(eval("request.country"), "\"GB\"");
    assert_eq!(eval("request.region"), "\"GB-R-ENG\"");
    assert_eq!(eval("request.state"), "\"GB-S-LND\"");
    assert_eq!(eval("request.ip_address"), "\"198.51.100.7\"");
    assert_eq!(eval("request.resolver_asn"), "64500");
    assert_eq!(eval("request.resolver_market"), "\"NA\"");
    assert_eq!(eval("request.resolver_country"), "\"US\"");
    assert_eq!(eval("request.resolver_region"), "\"US-R-CA\"");
    assert_eq!(eval("request.resolver_state"), "\"US-S-CA\"");
    assert_eq!(eval("request.resolver_ip_address"), "\"192.0.2.1\"");
    assert_eq!(eval("request.hostname_prefix"), "\"www.eu\"");
    assert_eq!(eval("request.query_type"), "\"AAAA\"");
    assert_eq!(eval("typeof request.asn"), "\"number\"");
}

#[test]
fn request_get_probe() {
    assert_eq!(
        eval("request.getProbe('avail')"),
        r#"{"cdn_a":{"avail":99.5},"cdn_b":{"avail":80},"cdn_c":{}}"#
    );
    assert_eq!(
        eval("request.getProbe('http_rtt')"),
        r#"{"cdn_a":{"http_rtt":40},"cdn_b":{"http_rtt":30},"cdn_c":{}}"#
    );
    assert_eq!(eval("request.getProbe('video_rtt')"), "{}");
    // Each call is a fresh object: mutating one does not leak into the next.
    assert_eq!(
        eval(
            "(function(){ var a = request.getProbe('avail'); delete a.cdn_a; return Object.keys(request.getProbe('avail')); })()"
        ),
        r#"["cdn_a","cdn_b","cdn_c"]"#
    );
}

#[test]
fn declared_providers_without_a_value_get_an_empty_object() {
    // The Openmix API: a provider without the value gets `{}`. Here the
    // app declares cdn_c and origin; http_rtt has neither, avail lacks
    // origin, and proximity has no location for origin.
    let src = "function init(c) { c.requireProvider('cdn_a'); c.requireProvider('cdn_b');
            c.requireProvider('cdn_c'); c.requireProvider('origin'); c.enableProximityData(); }
        function onRequest(q, r) { r.respondEmpty(); r.setReasonCode(JSON.stringify([
            q.getProbe('http_rtt'), q.getProbe('avail'), q.getProbe('video_rtt'),
            Object.keys(q.getProbe('proximity_dist')), q.getProbe('proximity_dist').origin])); }";
    let d = decide(src).unwrap();
    let v: serde_json::Value = serde_json::from_str(d.reason.as_deref().unwrap()).unwrap();
    assert_eq!(
        v[0],
        serde_json::json!({"cdn_a": {"http_rtt": 40}, "cdn_b": {"http_rtt": 30}, "cdn_c": {}, "origin": {}})
    );
    assert_eq!(
        v[1],
        serde_json::json!({"cdn_a": {"avail": 99.5}, "cdn_b": {"avail": 80}, "cdn_c": {}, "origin": {}})
    );
    // A probe with no data at all stays empty: no provider has it.
    assert_eq!(v[2], serde_json::json!({}));
    assert_eq!(
        v[3],
        serde_json::json!(["cdn_a", "cdn_b", "cdn_c", "origin"])
    );
    assert_eq!(v[4], serde_json::json!({}));
}

/// Issue #20: an app sees only the providers it declared, in every probe
/// and feed; one that declared none sees none.
#[test]
fn an_app_sees_only_its_declared_providers() {
    let only_a = "function init(c) { c.requireProvider('cdn_a'); c.enableProximityData(); }
        function onRequest(q, r) { r.respondEmpty(); r.setReasonCode(JSON.stringify([
            q.getProbe('avail'), q.getProbe('http_rtt'), Object.keys(q.getProbe('proximity_dist')),
            q.getData('fusion'), q.getData('sonar')])); }";
    let d = decide(only_a).unwrap();
    let v: serde_json::Value = serde_json::from_str(d.reason.as_deref().unwrap()).unwrap();
    assert_eq!(
        v,
        serde_json::json!([
            {"cdn_a": {"avail": 99.5}},
            {"cdn_a": {"http_rtt": 40}},
            ["cdn_a"],
            {"cdn_a": "{\"usage\": 10}"},
            {"cdn_a": "{\"avail\":1}"}
        ])
    );
    let none = "function onRequest(q, r) { r.respondEmpty(); r.setReasonCode(JSON.stringify([
            q.getProbe('avail'), q.getData('fusion')])); }";
    let d = decide(none).unwrap();
    assert_eq!(d.reason.as_deref(), Some("[{},{}]"));
}

#[test]
fn request_proximity_needs_enable() {
    let off = decide("function onRequest(q, r) { r.respondEmpty(); r.setReasonCode(JSON.stringify(q.getProbe('proximity_dist'))); }").unwrap();
    assert_eq!(off.reason.as_deref(), Some("{}"));
    let on = decide(
        "function init(c) { c.requireProvider('cdn_a'); c.requireProvider('cdn_b'); c.enableProximityData(); }
         function onRequest(q, r) { r.respondEmpty(); r.setReasonCode(JSON.stringify(q.getProbe('proximity_dist'))); }",
    )
    .unwrap();
    // Paris to London ~344 km, to Tokyo ~9700 km; origin has no location.
    let v: serde_json::Value = serde_json::from_str(on.reason.as_deref().unwrap()).unwrap();
    let london = v["cdn_a"]["proximity_dist"].as_f64().unwrap();
    let tokyo = v["cdn_b"]["proximity_dist"].as_f64().unwrap();
    assert!((london - 344.0).abs() < 5.0, "{v}");
    assert!((tokyo - 9712.0).abs() < 60.0, "{v}");
    assert!(v.get("origin").is_none());
}

#[test]
fn request_get_data_values_are_strings() {
    assert_eq!(
        eval("request.getData('fusion')"),
        r#"{"cdn_a":"{\"usage\": 10}","cdn_b":"not json"}"#
    );
    assert_eq!(
        eval("request.getData('sonar')"),
        r#"{"cdn_a":"{\"avail\":1}"}"#
    );
    assert_eq!(eval("typeof request.getData('other')"), "\"undefined\"");
    // The seed's parseFusionData: parse in place, delete what fails.
    let parsed = eval(
        "(function(data){ var keys = Object.keys(data), i = keys.length, key; while (i--) { key = keys[i]; \
         try { data[key] = JSON.parse(data[key]); } catch (e) { delete data[key]; } } return data; })(request.getData('fusion'))",
    );
    assert_eq!(parsed, r#"{"cdn_a":{"usage":10}}"#);
}

#[test]
fn request_headers_and_query() {
    assert_eq!(eval("request.getHeader('x-sample-header')"), "\"sample\"");
    assert_eq!(eval("request.getHeader('X-SAMPLE-HEADER')"), "\"sample\"");
    assert_eq!(eval("request.getHeader('X-Missing')"), "null");
    assert_eq!(eval("request.getQueryString('q')"), "\"1\"");
    assert_eq!(eval("request.getQueryString('nope')"), "null");
}

#[test]
fn query_type_called_as_function_throws() {
    let err =
        decide("function onRequest(q, r) { var t = q.query_type(); r.respond('a', '192.0.2.1'); }")
            .unwrap_err();
    assert!(matches!(err, AppError::Thrown { .. }), "{err}");
    let warnings =
        switchyard::cli::lint("function f(request) {\n  var t = request.query_type();\n}");
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].0, 2);
}

// ------------------------------------------------------------------ response

#[test]
fn respond_classifies_host() {
    let d = decide("function onRequest(q, r) { r.respond('cdn_a', '192.0.2.10'); }").unwrap();
    assert_eq!(d.provider.as_deref(), Some("cdn_a"));
    assert_eq!(d.answers, vec![Answer::A("192.0.2.10".parse().unwrap())]);
    let d =
        decide("function onRequest(q, r) { r.respond('cdn_a', '2001:db8:0:0:0:0:2:1'); }").unwrap();
    assert_eq!(
        d.answers,
        vec![Answer::Aaaa("2001:db8::2:1".parse().unwrap())]
    );
    let d =
        decide("function onRequest(q, r) { r.respond('cdn_a', 'www.example.edgecastcdn.net'); }")
            .unwrap();
    assert_eq!(
        d.answers,
        vec![Answer::Cname("www.example.edgecastcdn.net".into())]
    );
}

#[test]
fn respond_bad_arguments_throw_catchable_type_errors() {
    let caught = eval(
        "(function(){ var out = []; function t(f) { try { f(); out.push('ok'); } catch (e) { out.push(e instanceof TypeError ? 'TypeError' : String(e)); } } \
         t(function(){ response.respond('p', '300.1.2.3'); }); \
         t(function(){ response.respond(42, 'a.example'); }); \
         t(function(){ response.respond('p', 'bad host name'); }); \
         t(function(){ response.addARecord('1.2.3'); }); \
         t(function(){ response.addAAAARecord('2001:db8::zz'); }); \
         t(function(){ response.setTTL(-1); }); \
         t(function(){ response.setTTL(1.5); }); \
         t(function(){ response.setStatus(99); }); \
         t(function(){ response.setProvider({}); }); \
         t(function(){ response.addCName('a b'); }); \
         return out; })()",
    );
    assert_eq!(
        caught,
        r#"["TypeError","TypeError","TypeError","TypeError","TypeError","TypeError","TypeError","TypeError","TypeError","TypeError"]"#
    );
}

#[test]
fn address_records_up_to_eight() {
    let d = decide(
        "function onRequest(q, r) { for (var i = 1; i <= 8; i++) { r.addARecord('192.0.2.' + i); r.addAAAARecord('2001:db8::' + i); } \
         var ninth = 'none'; try { r.addARecord('192.0.2.9'); } catch (e) { ninth = e.name + ': ' + e.message; } r.setReasonCode(ninth); }",
    )
    .unwrap();
    assert_eq!(d.count_a(), 8);
    assert_eq!(d.count_aaaa(), 8);
    assert_eq!(
        d.reason.as_deref(),
        Some("TypeError: addARecord: at most 8 A records per response")
    );
}

#[test]
fn cname_empty_and_other_setters() {
    let d = decide(
        "function onRequest(q, r) { r.setProvider('cdn_b'); r.addCName('bar.foo.com'); r.setTTL(600); r.setReasonCode('B'); \
         r.setStatus('403'); r.setHeader('X-Sample-Header', 'sample'); }",
    )
    .unwrap();
    assert_eq!(d.provider.as_deref(), Some("cdn_b"));
    assert_eq!(d.answers, vec![Answer::Cname("bar.foo.com".into())]);
    assert_eq!(d.ttl, Some(600));
    assert_eq!(d.reason.as_deref(), Some("B"));
    assert_eq!(d.status, Some(403));
    assert_eq!(
        d.headers,
        vec![("X-Sample-Header".to_string(), "sample".to_string())]
    );

    let d = decide("function onRequest(q, r) { r.respond('x', '192.0.2.1'); r.respondEmpty(); }")
        .unwrap();
    assert!(d.empty && d.answers.is_empty());
}

#[test]
fn add_provider_host_with_custom_data() {
    let d = decide(
        "function onRequest(q, r) { r.addProviderHost('edgecast', 'http://www.example.edgecastcdn.net', {custom_key1: 'custom_val1', n: 2}); \
         r.addProviderHost('origin', '1.2.3.4'); }",
    )
    .unwrap();
    assert_eq!(d.provider_hosts.len(), 2);
    assert_eq!(d.provider_hosts[0].provider, "edgecast");
    assert_eq!(
        d.provider_hosts[0].custom,
        Some(serde_json::json!({"custom_key1": "custom_val1", "n": 2}))
    );
    assert_eq!(d.provider_hosts[1].host, "1.2.3.4");
    assert_eq!(d.provider_hosts[1].custom, None);
}

#[test]
fn recorded_calls_keep_order_and_arguments() {
    let (mut app, _) = load("function onRequest(q, r) { r.respond('cdn_a', 'a.example.net'); r.setTTL(20); r.setReasonCode('A'); }").unwrap();
    let out = app
        .decide(
            request(),
            &Arc::new(data()),
            CallOptions {
                record: true,
                ..CallOptions::default()
            },
        )
        .unwrap();
    let calls: Vec<_> = out
        .calls
        .iter()
        .map(|c| (c.method, c.args.clone()))
        .collect();
    assert_eq!(
        calls[0],
        ("respond", vec!["cdn_a".into(), "a.example.net".into()])
    );
    assert_eq!(calls[1], ("setTTL", vec![serde_json::json!(20)]));
    assert_eq!(calls[2], ("setReasonCode", vec!["A".into()]));
}

// ------------------------------------------------------------------ ES5 behaviour apps rely on

#[test]
fn es5_features_real_apps_use() {
    assert_eq!(eval("Object.keys({b: 1, a: 2, c: 3})"), r#"["b","a","c"]"#);
    assert_eq!(
        eval("(function(){ var r = Math.random(); return r >= 0 && r < 1; })()"),
        "true"
    );
    assert_eq!(
        eval("typeof Date.now() === 'number' && new Date(0).getTime() === 0"),
        "true"
    );
    assert_eq!(
        eval(
            "[3,1,2].sort().map(function(x){ return x * 2; }).filter(function(x){ return x > 2; })"
        ),
        "[4,6]"
    );
    assert_eq!(
        eval("typeof console.log('hello from an app')"),
        "\"undefined\""
    );
}

#[test]
fn openmix_application_pattern_keeps_state() {
    let src = "var handler = new OpenmixApplication({ providers: { cdn_a: { cname: 'a.example.net' } } });
        function init(config) { 'use strict'; handler.do_init(config); }
        function onRequest(request, response) { 'use strict'; handler.handle_request(request, response); }
        function OpenmixApplication(settings) {
            'use strict';
            var count = 0;
            this.do_init = function(config) { Object.keys(settings.providers).forEach(function(p) { config.requireProvider(p); }); };
            this.handle_request = function(request, response) { count += 1; response.respond('cdn_a', settings.providers.cdn_a.cname); response.setReasonCode(String(count)); };
        }";
    let (mut app, meta) = load(src).unwrap();
    assert_eq!(meta.providers, vec!["cdn_a"]);
    let d = Arc::new(data());
    app.decide(request(), &d, CallOptions::default()).unwrap();
    let second = app
        .decide(request(), &d, CallOptions::default())
        .unwrap()
        .decision;
    assert_eq!(second.reason.as_deref(), Some("2"));
}

#[test]
fn on_fusion_sees_changed_providers() {
    let src = "var seen = []; function init(c) { c.requireProvider('cdn_a'); c.requireProvider('cdn_b'); } function onFusion(p, d) { seen.push(p + '=' + d); }
        function onRequest(q, r) { r.respondEmpty(); r.setReasonCode(seen.join('|')); }";
    let (mut app, _) = load(src).unwrap();
    let mut d = data();
    let first = app
        .decide(request(), &Arc::new(d.clone()), CallOptions::default())
        .unwrap()
        .decision;
    assert_eq!(
        first.reason.as_deref(),
        Some("cdn_a={\"usage\": 10}|cdn_b=not json")
    );
    d.version = 2;
    d.fusion[1].1 = "{\"usage\": 99}".into();
    let second = app
        .decide(request(), &Arc::new(d), CallOptions::default())
        .unwrap()
        .decision;
    assert_eq!(
        second.reason.as_deref(),
        Some("cdn_a={\"usage\": 10}|cdn_b=not json|cdn_b={\"usage\": 99}")
    );
}

#[test]
fn on_fusion_errors_do_not_fail_the_decision_or_skip_values() {
    // onFusion throws for cdn_a: the decision still runs and cdn_b is
    // still delivered; each value is delivered once.
    let src = "var seen = []; function init(c) { c.requireProvider('cdn_a'); c.requireProvider('cdn_b'); } function onFusion(p, d) { seen.push(p); if (p === 'cdn_a') { throw new Error('bad feed'); } }
        function onRequest(q, r) { r.respondEmpty(); r.setReasonCode(seen.join('|')); }";
    let (mut app, _) = load(src).unwrap();
    let d = Arc::new(data());
    for _ in 0..2 {
        let out = app
            .decide(request(), &d, CallOptions::default())
            .unwrap()
            .decision;
        assert_eq!(out.reason.as_deref(), Some("cdn_a|cdn_b"));
    }
}

#[test]
fn regular_expressions_work_and_refuse_huge_inputs() {
    assert_eq!(
        eval(
            "['abc'.replace(/b/, 'x'), /^a/.test('abc'), 'a,b'.split(/,/).length, 'x1y2'.match(/[0-9]/g), 'q=1'.search(/=/), /(b)/.exec('abc')[1]]"
        ),
        r#"["axc",true,2,["1","2"],1,"b"]"#
    );
    for call in [
        "/a+$/.test(s)",
        "s.replace(/a/g, 'b')",
        "s.split(/,/)",
        "s.match(/b/)",
        "/a/.exec(s)",
    ] {
        let body = format!("var s = 'a'.repeat(1000).repeat(1100); {call}");
        let (err, took) = hostile(&body);
        assert!(
            err.to_string()
                .contains("exceeds the limit for regular expressions"),
            "{call}: {err}"
        );
        assert!(took < Duration::from_millis(1000), "{call}: {took:?}");
    }
}

#[test]
fn on_fusion_runaway_is_stopped_by_the_budget() {
    let src = format!(
        "function init(c) {{ c.requireProvider('cdn_a'); c.requireProvider('cdn_b'); }} function onFusion(p, d) {{ {SPIN} }} function onRequest(q, r) {{ r.respondEmpty(); }}"
    );
    let (err, took, poisoned) = within(Duration::from_secs(10), move || {
        let (mut app, _) = load(&src).unwrap();
        let t = Instant::now();
        let err = app
            .decide(request(), &Arc::new(data()), CallOptions::default())
            .unwrap_err();
        (err, t.elapsed(), app.is_poisoned())
    });
    assert!(
        matches!(
            err,
            AppError::Timeout {
                phase: switchyard::openmix::Phase::OnFusion,
                ..
            }
        ),
        "{err}"
    );
    assert!(poisoned, "a stopped onFusion must poison the instance");
    assert!(took < Duration::from_millis(1000), "{took:?}");
}

// ------------------------------------------------------------------ errors and budgets

#[test]
fn syntax_error_names_file_and_line() {
    let err = load("function onRequest(q, r) {\n  var = 1;\n}")
        .err()
        .unwrap();
    assert!(matches!(err, AppError::Syntax { .. }), "{err}");
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[test]
fn throw_in_init_reports_line() {
    let err = load("function init(c) {\n  'use strict';\n  throw new Error('bad init');\n}\nfunction onRequest(q, r) { r.respondEmpty(); }").err().unwrap();
    assert!(
        err.to_string().starts_with("init threw Error: bad init"),
        "{err}"
    );
    assert!(err.to_string().contains("apps/t.js:3:"), "{err}");
    assert_eq!(err.line(), Some(3));
}

#[test]
fn no_on_request_and_no_decision() {
    assert_eq!(load("var x = 1;").err().unwrap(), AppError::NoOnRequest);
    assert_eq!(
        decide("function onRequest(q, r) { r.setTTL(5); }").unwrap_err(),
        AppError::NoDecision
    );
}

fn hostile(body: &str) -> (AppError, Duration) {
    let src =
        format!("function onRequest(request, response) {{ {body}; response.respondEmpty(); }}");
    within(Duration::from_secs(10), move || {
        let (mut app, _) = load(&src).unwrap();
        let t = Instant::now();
        let err = app
            .decide(request(), &Arc::new(data()), CallOptions::default())
            .unwrap_err();
        (err, t.elapsed())
    })
}

#[test]
fn infinite_loop_stops_at_the_time_budget() {
    // Work spread over call frames: boa's loop limit counts per frame and
    // never fires here, so only the time budget can stop it.
    let (err, took) = hostile(SPIN);
    assert!(matches!(err, AppError::Timeout { .. }), "{err}");
    assert!(took < Duration::from_millis(1000), "{took:?}");
}

#[test]
fn plain_loops_stop_at_the_budget_or_the_loop_limit() {
    // One frame: whichever comes first, the time budget or 1M iterations
    // (a fast machine reaches them inside a first call's longer budget).
    for body in [
        "while (true) {}",
        "for (var i = 0; i < 1e6; i++) { for (var j = 0; j < 1e6; j++) {} }",
    ] {
        let (err, took) = hostile(body);
        let limit = matches!(&err, AppError::Thrown { .. })
            && err
                .to_string()
                .contains("maximum number of iteration loops");
        assert!(
            matches!(err, AppError::Timeout { .. }) || limit,
            "{body}: {err}"
        );
        assert!(took < Duration::from_millis(1000), "{body}: {took:?}");
    }
}

/// A runaway that only the time budget stops: each frame stays far below
/// boa's per-frame loop limit.
const SPIN: &str = "function spin() { for (var i = 0; i < 1000; i++) {} } while (true) { spin(); }";

#[test]
fn deep_recursion_is_an_error() {
    let (err, took) = hostile("(function r(n) { return r(n + 1); })(0)");
    assert!(
        matches!(err, AppError::Thrown { .. } | AppError::Timeout { .. }),
        "{err}"
    );
    assert!(took < Duration::from_millis(1000), "{took:?}");
}

#[test]
fn huge_strings_are_refused() {
    let (err, _) = hostile("var s = 'x'.repeat(Math.pow(2, 29))");
    assert!(
        err.to_string().contains("RangeError") && err.to_string().contains("memory budget"),
        "{err}"
    );
    let (err, took) = hostile("var s = 'xxxxxxxxxxxxxxxx'; while (true) { s = s + s; }");
    assert!(
        matches!(
            err,
            AppError::Memory { .. } | AppError::Timeout { .. } | AppError::Thrown { .. }
        ),
        "{err}"
    );
    assert!(took < Duration::from_secs(8), "{took:?}");
    let (err, _) = hostile("var a = []; while (true) { a.push(new Array(100000)); }");
    assert!(
        matches!(err, AppError::Memory { .. } | AppError::Timeout { .. }),
        "{err}"
    );
    let (err, _) = hostile("new Array(1e9).fill(0)");
    assert!(err.to_string().contains("RangeError"), "{err}");
}

#[test]
fn hostile_init_is_stopped_too() {
    let err = within(Duration::from_secs(10), || {
        load(&format!(
            "function init(c) {{ {SPIN} }} function onRequest(q, r) {{ r.respondEmpty(); }}"
        ))
        .err()
        .unwrap()
    });
    assert!(
        matches!(
            err,
            AppError::Timeout {
                phase: switchyard::openmix::Phase::Init,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn instance_is_usable_after_an_error_and_rebuilt_after_a_timeout() {
    // An app that loops forever only when asked to.
    let src = format!(
        "function onRequest(q, r) {{ if (q.hostname_prefix === 'spin') {{ {SPIN} }} if (q.hostname_prefix === 'throw') {{ throw new Error('x'); }} r.respondEmpty(); }}"
    );
    let c = code(&src);
    let d = Arc::new(data());
    within(Duration::from_secs(10), move || {
        let mut req = request();
        for prefix in ["throw", "ok", "spin", "ok"] {
            req.hostname_prefix = prefix.into();
            let r =
                switchyard::openmix::runtime::decide(&c, req.clone(), &d, CallOptions::default());
            match prefix {
                "ok" => assert!(r.is_ok(), "{r:?}"),
                "spin" => assert!(matches!(r, Err(AppError::Timeout { .. }))),
                _ => assert!(matches!(r, Err(AppError::Thrown { .. }))),
            }
        }
        switchyard::openmix::runtime::clear();
    });
}

/// An app proven never to write to host data shares the snapshot's inner
/// probe objects, frozen; each call still gets a fresh outer object it may
/// change; a new snapshot gets new objects. Other apps get fresh, mutable
/// objects every time.
#[test]
fn proven_apps_share_frozen_inner_probe_objects() {
    let src = "var seen = [];
        function init(c) { c.requireProvider('cdn_a'); c.requireProvider('cdn_b'); c.requireProvider('cdn_c'); }
        function onRequest(request, response) {
            'use strict';
            var p = request.getProbe('avail');
            var first = p.extra === undefined;
            p.extra = 1;
            response.respondEmpty();
            response.setReasonCode(JSON.stringify([first, Object.isFrozen(p.cdn_a),
                p.cdn_a.avail, Object.keys(p)]));
        }";
    let run = |shared: bool, data: &Arc<DataSnapshot>, times: usize| -> Vec<String> {
        let mut c = code(src);
        c.shared_data = shared;
        let (mut app, _) = AppInstance::load(&c, data, None).unwrap();
        (0..times)
            .map(|_| {
                app.decide(request(), data, CallOptions::default())
                    .unwrap()
                    .decision
                    .reason
                    .unwrap()
            })
            .collect()
    };
    let one = Arc::new(data());
    let shared = run(true, &one, 3);
    assert_eq!(
        shared,
        vec![r#"[true,true,99.5,["cdn_a","cdn_b","cdn_c","extra"]]"#; 3],
        "a fresh outer object per call, frozen shared inner ones"
    );
    let fresh = run(false, &one, 2);
    assert_eq!(
        fresh,
        vec![r#"[true,false,99.5,["cdn_a","cdn_b","cdn_c","extra"]]"#; 2]
    );
    // A new snapshot version: the shared objects are built again from it.
    let mut two = data();
    two.version = 2;
    two.probes = DataSnapshot::probes_from_json(&serde_json::json!({
        "avail": {"cdn_a": {"avail": 12}}
    }))
    .unwrap();
    let mut c = code(src);
    c.shared_data = true;
    let (mut app, _) = AppInstance::load(&c, &one, None).unwrap();
    let reason = |app: &mut AppInstance, d: &Arc<DataSnapshot>| {
        app.decide(request(), d, CallOptions::default())
            .unwrap()
            .decision
            .reason
            .unwrap()
    };
    assert!(reason(&mut app, &one).contains("99.5"));
    assert_eq!(
        reason(&mut app, &Arc::new(two)),
        r#"[true,true,12,["cdn_a","cdn_b","cdn_c","extra"]]"#
    );
}

/// A write to a shared inner object (a hole in the proof would allow one)
/// cannot leak into the next decision: strict code throws, sloppy code's
/// write is ignored.
#[test]
fn shared_inner_probe_objects_cannot_carry_state() {
    let mut c = code(
        "function init(c) { c.requireProvider('cdn_a'); }
        function onRequest(request, response) {
            var row = request.getProbe('avail').cdn_a;
            var before = row.avail;
            row.avail = 1;
            response.respondEmpty();
            response.setReasonCode(String(before) + '/' + String(row.avail));
        }",
    );
    c.shared_data = true;
    let data = Arc::new(data());
    let (mut app, _) = AppInstance::load(&c, &data, None).unwrap();
    for _ in 0..2 {
        let d = app
            .decide(request(), &data, CallOptions::default())
            .unwrap();
        assert_eq!(d.decision.reason.as_deref(), Some("99.5/99.5"));
    }
    c.source = Arc::from(
        "function init(c) { c.requireProvider('cdn_a'); }
        function onRequest(request, response) {
            'use strict';
            request.getProbe('avail').cdn_a.avail = 1;
            response.respondEmpty();
        }",
    );
    c.version = 2;
    let (mut app, _) = AppInstance::load(&c, &data, None).unwrap();
    let err = app
        .decide(request(), &data, CallOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("TypeError"), "{err}");
}
