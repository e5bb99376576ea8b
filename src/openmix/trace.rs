//! Every value one decision read, in order and in Openmix terms, for
//! explaining the decision to an operator (and logging it). The memo's
//! read log ([`super::reads`]) keeps only what can differ between requests
//! and compares table identities; a trace keeps the values themselves, so
//! it is recorded only when asked for ([`super::CallOptions::trace`]).

use serde::{Deserialize, Serialize};

/// What one decision read, in the order it read it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// The reads, first first.
    pub reads: Vec<TraceRead>,
}

/// One value the app read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceRead {
    /// What was read, as the app wrote it: `request.market`,
    /// `request.getProbe(avail)`, `request.getData(fusion)`,
    /// `request.getHeader(name)`, `request.getQueryString(name)`.
    pub source: String,
    /// The value the app got: a field's value, probe rows as an object of
    /// provider → value (`null`: no value), a feed as provider → text, a
    /// header or query value; `null` for nothing.
    pub value: serde_json::Value,
}

impl Trace {
    /// Adds one read.
    pub fn push(&mut self, source: String, value: serde_json::Value) {
        self.reads.push(TraceRead { source, value });
    }
}

/// Probe rows as the trace shows them: provider → value, `null` where the
/// provider has none.
pub fn rows_json(rows: &[(String, Option<f64>)]) -> serde_json::Value {
    serde_json::Value::Object(
        rows.iter()
            .map(|(alias, v)| (alias.clone(), v.map_or(serde_json::Value::Null, f64_json)))
            .collect(),
    )
}

/// A number as JSON: whole numbers as integers (`99`, not `99.0`), and
/// non-finite ones (which JSON cannot write) as `null`.
fn f64_json(v: f64) -> serde_json::Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        serde_json::Value::from(v as i64)
    } else {
        serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::openmix::{AppCode, Budget, CallOptions, DataSnapshot, Request, runtime};

    const APP: &str = "function init(config) {\n  config.requireProvider('cdn_a');\n}\nfunction onRequest(request, response) {\n  var a = request.getProbe('avail');\n  var f = request.getData('fusion');\n  response.respond(request.market === 'EU' ? 'cdn_a' : 'cdn_b', 'x.example');\n}\n";

    fn code() -> AppCode {
        AppCode {
            name: "traced".into(),
            path: "traced.js".into(),
            source: APP.into(),
            version: 1,
            // Generous: a loaded test machine must not turn this into a timeout.
            budget: Budget {
                decision: Duration::from_secs(2),
                load: Duration::from_secs(5),
                ..Budget::default()
            },
            setup: None,
            shared_data: false,
            providers: Arc::from([]),
        }
    }

    fn data() -> Arc<DataSnapshot> {
        let mut data = DataSnapshot {
            version: 1,
            ..DataSnapshot::default()
        };
        data.probes
            .insert("avail".into(), vec![("cdn_a".into(), Some(99.0))]);
        data.fusion = vec![("cdn_a".into(), "{\"load\": 1}".into())];
        Arc::new(data)
    }

    #[test]
    fn a_trace_is_recorded_only_when_asked_for() {
        let data = data();
        let off = runtime::decide(&code(), Request::default(), &data, CallOptions::default())
            .expect("decides");
        assert!(off.trace.is_none(), "{:?}", off.trace);

        let options = CallOptions {
            trace: true,
            ..CallOptions::default()
        };
        let on = runtime::decide(&code(), Request::default(), &data, options).expect("decides");
        let trace = on.trace.expect("a trace when asked for");
        let sources: Vec<&str> = trace.reads.iter().map(|r| r.source.as_str()).collect();
        assert_eq!(
            sources,
            [
                "request.getProbe(avail)",
                "request.getData(fusion)",
                "request.market"
            ]
        );
        assert_eq!(trace.reads[0].value, serde_json::json!({"cdn_a": 99}));
        assert_eq!(
            trace.reads[1].value,
            serde_json::json!({"cdn_a": "{\"load\": 1}"})
        );
        assert_eq!(trace.reads[2].value, "");
        assert_eq!(on.decision.provider.as_deref(), Some("cdn_b"));
    }

    #[test]
    fn rows_keep_order_and_missing_values() {
        let rows = vec![
            ("cdn_b".to_string(), Some(99.0)),
            ("cdn_a".to_string(), None),
            ("cdn_c".to_string(), Some(12.5)),
        ];
        let v = rows_json(&rows);
        assert_eq!(v.to_string(), r#"{"cdn_b":99,"cdn_a":null,"cdn_c":12.5}"#);
    }
}
