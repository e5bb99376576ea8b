//! `switchyard explain APP`: why a running server gives a client the
//! provider it gives, from `GET /api/apps/{app}/explain`, as a short
//! readable summary or (`--json`) the server's report.

use std::fmt::Write as _;

use anyhow::bail;
use clap::Args;
use serde_json::Value;

use super::api::{Api, ApiArgs};
use super::decide::RequestArgs;

/// `explain` flags.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// App name.
    pub app: String,
    /// The request to explain (the flags of `switchyard decide`).
    #[command(flatten)]
    pub request: RequestArgs,
    /// Print the server's JSON report instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// API location and token.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Runs `switchyard explain`.
pub fn explain(args: &ExplainArgs) -> anyhow::Result<()> {
    if args.app.is_empty() || args.app.contains(['/', '?', '#']) {
        bail!("'{}' is not an app name", args.app);
    }
    let api = Api::new(&args.api)?;
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(args.request.query_pairs())
        .finish();
    let path = format!("/api/apps/{}/explain?{query}", args.app);
    let report = api.call(reqwest::Method::GET, &path, None)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", summary(&report));
    }
    Ok(())
}

/// A value as text: strings bare, anything else as JSON.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// One located address: `198.51.100.7: EU DE AS64500 (network
/// 198.51.100.0/24, override US-R-CA → US-R-WEST)`.
fn located(l: &Value) -> String {
    let g = &l["geo"];
    let mut fields: Vec<String> = ["market", "country", "region", "state"]
        .iter()
        .filter_map(|k| g[k].as_str().filter(|s| !s.is_empty()).map(str::to_string))
        .collect();
    if let Some(asn) = g["asn"].as_u64().filter(|a| *a != 0) {
        fields.push(format!("AS{asn}"));
    }
    if fields.is_empty() {
        fields.push("(not located)".into());
    }
    let mut out = format!(
        "{}: {} (network {}",
        l["ip"].as_str().unwrap_or("-"),
        fields.join(" "),
        l["source"]["network"].as_str().unwrap_or("-")
    );
    for o in l["source"]["overrides"].as_array().into_iter().flatten() {
        let _ = write!(
            out,
            ", override {} → {}",
            o["computed"].as_str().unwrap_or("-"),
            o["replaced_by"].as_str().unwrap_or("-")
        );
    }
    out.push(')');
    out
}

/// The readable summary: a few aligned lines.
fn summary(r: &Value) -> String {
    let mut lines: Vec<(&str, String)> = Vec::new();
    lines.push((
        "app",
        format!(
            "{} (version {})",
            r["app"].as_str().unwrap_or("-"),
            show(&r["version"])
        ),
    ));
    let req = &r["request"];
    let fields = &req["fields"];
    let client = if req["client"].is_object() {
        located(&req["client"])
    } else {
        let f = &fields["client"];
        format!(
            "(no address) market {} country {} asn {}",
            show(&f["market"]),
            show(&f["country"]),
            show(&f["asn"])
        )
    };
    lines.push(("client", client));
    if req["resolver"].is_object() {
        lines.push(("resolver", located(&req["resolver"])));
    }
    lines.push((
        "asked",
        format!(
            "qtype {} hostname prefix {}",
            show(&fields["query_type"]),
            show(&fields["hostname_prefix"])
        ),
    ));
    let reads = r["reads"].as_array().cloned().unwrap_or_default();
    if reads.is_empty() {
        lines.push(("reads", "(none)".into()));
    }
    for (i, read) in reads.iter().enumerate() {
        lines.push((
            if i == 0 { "reads" } else { "" },
            format!(
                "{}. {} = {}",
                i + 1,
                read["source"].as_str().unwrap_or("-"),
                show(&read["value"])
            ),
        ));
    }
    let d = &r["decision"];
    let answers: Vec<String> = d["answers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            format!(
                "{} {}",
                show(&a["type"]).trim_matches('"'),
                show(&a["value"]).trim_matches('"')
            )
        })
        .collect();
    lines.push((
        "decision",
        format!(
            "{} → {} (TTL {}, reason {})",
            d["provider"].as_str().unwrap_or("(none)"),
            if answers.is_empty() {
                "(no records)".into()
            } else {
                answers.join(", ")
            },
            show(&d["ttl"]),
            show(&d["reason"])
        ),
    ));
    let how = &r["how"];
    let mut how_line = how["kind"].as_str().unwrap_or("-").to_string();
    if how_line == "memo" {
        how_line
            .push_str(" (the server answers from the memo; the app ran here to show its reads)");
    }
    if let Some(error) = how["error"].as_str() {
        let _ = write!(
            how_line,
            " ({error}: {})",
            how["message"].as_str().unwrap_or("-")
        );
    }
    lines.push(("how", how_line));
    let memo = &r["memo"];
    let memo_line = match memo["rule"].as_str() {
        None => "yes".to_string(),
        Some(rule) => format!("no: {rule}"),
    };
    lines.push(("memoisable", memo_line));
    lines.push((
        "memo hit",
        if memo["would_hit"] == true {
            "yes"
        } else {
            "no"
        }
        .into(),
    ));
    lines.push((
        "ecs scope",
        r["ecs_scope"]
            .as_u64()
            .map_or("(no client subnet)".into(), |s| format!("/{s}")),
    ));
    let data = &r["data"];
    let mut data_line = format!("snapshot {}", show(&data["snapshot"]));
    for (name, f) in data["feeds"].as_object().into_iter().flatten() {
        let age = f["age_secs"]
            .as_f64()
            .map_or("never".into(), |a| format!("{a:.1} s ago"));
        let stale = if f["stale"] == true { ", stale" } else { "" };
        let _ = write!(data_line, "; {name}: {age}{stale}");
    }
    lines.push(("data", data_line));
    lines.push((
        "time",
        format!("{:.3} ms", r["time_us"].as_f64().unwrap_or(0.0) / 1000.0),
    ));
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    lines
        .into_iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_aligns_its_lines_and_names_the_decision() {
        let r = serde_json::json!({
            "app": "best-rtt", "version": 3,
            "request": {"fields": {"client": {"market": "EU"}, "query_type": "A", "hostname_prefix": ""},
                        "client": {"ip": "198.51.100.7", "geo": {"market": "EU", "country": "DE", "asn": 64500},
                                   "source": {"network": "198.51.100.0/24", "overrides": []}},
                        "resolver": null},
            "reads": [{"source": "request.market", "value": "EU"}],
            "decision": {"provider": "cdn_a", "answers": [{"type": "A", "value": "192.0.2.1"}], "ttl": 20, "reason": ""},
            "how": {"kind": "ran", "ran": true},
            "memo": {"memoisable": true, "rule": null, "would_hit": false},
            "ecs_scope": 24, "data": {"snapshot": 2, "feeds": {}}, "time_us": 1500
        });
        let text = summary(&r);
        assert!(
            text.contains("client      198.51.100.7: EU DE AS64500 (network 198.51.100.0/24)"),
            "{text}"
        );
        assert!(
            text.contains("reads       1. request.market = \"EU\""),
            "{text}"
        );
        assert!(
            text.contains("decision    cdn_a → A 192.0.2.1 (TTL 20"),
            "{text}"
        );
        assert!(text.contains("ecs scope   /24"), "{text}");
        assert!(text.contains("memoisable  yes"), "{text}");
    }
}
