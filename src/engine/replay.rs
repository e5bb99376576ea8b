//! Deciding a logged decision again ([`super::decision_log`]): an app
//! (the version that made it, or a candidate) runs on the entry's own
//! request, data snapshot and `Math.random` draws, under the rules the
//! server applies (fallback, TTL), never from the memo.

use std::sync::Arc;

use crate::engine::apps::LoadedApp;
use crate::engine::decision_log::{Entry, LoggedDecision};
use crate::engine::steer;
use crate::engine::steer::How;
use crate::openmix::{CallOptions, DataSnapshot, RandomMode, Request, runtime};

/// A decision made again.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    /// What would be answered.
    pub decision: LoggedDecision,
    /// How (`ran`, or a fallback or failure and its kind).
    pub how: How,
    /// The app drew more random numbers than the entry recorded and got
    /// live ones past the end: a change may come from that alone.
    pub ran_out_of_draws: bool,
}

/// Decides `request` again with `app` on `data`, `Math.random` giving
/// `draws` in order; `default_ttl` is the TTL when the app sets none.
/// The app runs on this thread's instance of it (keyed by name and
/// version: a candidate needs a version number of its own).
pub fn decide_again(
    app: &LoadedApp,
    request: Request,
    data: &Arc<DataSnapshot>,
    draws: Arc<[f64]>,
    default_ttl: u32,
) -> Replayed {
    if app.quarantine.is_some() {
        let s = steer::quarantined(app, default_ttl);
        return replayed(&s, false);
    }
    if let Some(message) = &app.load_error {
        let s = steer::not_loaded(app, message, default_ttl);
        return replayed(&s, false);
    }
    let options = CallOptions {
        random: RandomMode::Replay(draws),
        ..CallOptions::default()
    };
    match runtime::decide(&app.code, request, data, options) {
        Ok(out) => {
            let s = steer::Steered {
                ttl: out.decision.ttl.unwrap_or(default_ttl),
                reason: out.decision.reason.clone().unwrap_or_default(),
                decision: Arc::new(out.decision),
                outcome: steer::Outcome::App,
            };
            replayed(&s, out.ran_out_of_draws)
        }
        Err(err) => replayed(&steer::fallback(app, err, default_ttl), false),
    }
}

/// [`decide_again`] for a logged entry, on its snapshot.
pub fn decide_entry(app: &LoadedApp, entry: &Entry, data: &Arc<DataSnapshot>) -> Replayed {
    decide_again(
        app,
        entry.request.clone(),
        data,
        entry.draws.as_slice().into(),
        entry.default_ttl,
    )
}

fn replayed(s: &steer::Steered, ran_out_of_draws: bool) -> Replayed {
    Replayed {
        decision: LoggedDecision::of(s),
        how: How::of(&s.outcome, false),
        ran_out_of_draws,
    }
}

#[cfg(test)]
mod tests {
    //! Every shipped app's logged decisions, read back from the log file,
    //! decide again to the same answers (the apps that use `Math.random`
    //! too, on their recorded draws).

    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::Arc;

    use crate::config::{Config, LogConfig, Overrides};
    use crate::engine::decision_log::{DecisionLog, Line, Logged};
    use crate::engine::steer;
    use crate::openmix::{DataSnapshot, Location, Request};

    const MARKETS: [&str; 4] = ["EU", "NA", "AS", ""];

    /// Ties in `http_rtt` (best-rtt draws), routes with random strategies
    /// (weighted draws), Fusion and Sonar values (fusion-budget).
    fn snapshot() -> DataSnapshot {
        let mut data = DataSnapshot {
            version: 7,
            ..DataSnapshot::default()
        };
        let rows = |vals: &[(&str, f64)]| {
            vals.iter()
                .map(|(a, v)| (a.to_string(), Some(*v)))
                .collect::<Vec<_>>()
        };
        data.probes.insert(
            "avail".into(),
            rows(&[
                ("cdn_a", 100.0),
                ("cdn_b", 100.0),
                ("cdn_c", 99.0),
                ("origin", 100.0),
            ]),
        );
        data.probes.insert(
            "http_rtt".into(),
            rows(&[
                ("cdn_a", 40.0),
                ("cdn_b", 40.0),
                ("cdn_c", 40.0),
                ("origin", 90.0),
            ]),
        );
        data.fusion = vec![("cdn_a".into(), r#"{"usage": 10, "budget": 100}"#.into())];
        data.sonar = vec![("cdn_b".into(), r#"{"avail":1}"#.into())];
        data.inventory = ["cdn_a", "cdn_b", "cdn_c"]
            .iter()
            .map(|a| {
                (
                    a.to_string(),
                    format!(r#"{{"host":"{a}.example.net","state":"up","load":0}}"#),
                )
            })
            .collect();
        data.weights.insert(
            "weighted".into(),
            vec![
                (
                    "route000".into(),
                    r#"{"weight":60,"strategy":"random","providers":["cdn_a","cdn_b"]}"#.into(),
                ),
                (
                    "route001".into(),
                    r#"{"weight":40,"strategy":"random","providers":["cdn_b","cdn_c"]}"#.into(),
                ),
            ],
        );
        data
    }

    fn request(i: usize, http: bool) -> Request {
        let client = Arc::new(Location {
            market: MARKETS[i % MARKETS.len()].into(),
            country: ["DE", "US", "JP", ""][i % 4].into(),
            asn: (i % 3) as u32,
            ..Location::default()
        });
        Request {
            ip_address: Some(format!("192.0.2.{i}").parse().unwrap()),
            client: client.clone(),
            resolver_ip_address: Some("198.51.100.1".parse().unwrap()),
            resolver: client,
            hostname_prefix: if i.is_multiple_of(2) {
                "www".into()
            } else {
                String::new()
            },
            query_type: if http { String::new() } else { "A".into() },
            ..Request::default()
        }
    }

    #[test]
    fn logged_decisions_decide_again_the_same() {
        let config = Config::load(None, &Overrides::default()).unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        let log = DecisionLog::new(
            &LogConfig {
                decisions_sample: 1.0,
                decisions_file: Some("decisions.jsonl".into()),
                ..LogConfig::default()
            },
            "test-node",
            dir.path(),
        );
        let data = Arc::new(snapshot());
        let mut apps = HashMap::new();
        for file in std::fs::read_dir(root.join("apps")).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_none_or(|e| e != "js") {
                continue;
            }
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            let source = std::fs::read_to_string(&path).unwrap();
            let sidecar = crate::config::read_sidecar(&path).unwrap();
            let mut app = crate::engine::apps::load_app(
                &name,
                &path,
                &source,
                sidecar.as_deref(),
                &config,
                &data,
                1,
            )
            .unwrap();
            // Answers are compared, not speed: a loaded machine must not
            // turn a decision into a timeout.
            app.code.budget.decision = std::time::Duration::from_secs(5);
            for i in 0..24 {
                let req = request(i, name == "http-hosts" && i.is_multiple_of(2));
                let ran = steer::run_traced(&app, req.clone(), &data, 20, true);
                let reads = ran.trace.map(|t| t.reads).unwrap_or_default();
                log.record(Logged {
                    app: &app,
                    request: req,
                    data: &data,
                    steered: &ran.steered,
                    inline: false,
                    reads,
                    draws: ran.draws,
                    default_ttl: 20,
                    took: std::time::Duration::ZERO,
                });
            }
            apps.insert(name, app);
        }
        assert!(apps.len() >= 5, "shipped apps: {:?}", apps.keys());
        drop(log);
        // The writer thread ends once its channel closes; wait for the file.
        let file = dir.path().join("decisions.jsonl");
        let mut text = String::new();
        for _ in 0..200 {
            text = std::fs::read_to_string(&file).unwrap_or_default();
            if text.lines().count() > apps.len() * 24 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        let mut snapshots = HashMap::new();
        let (mut entries, mut with_draws, mut with_reads) = (0, 0, 0);
        for line in text.lines() {
            match serde_json::from_str::<Line>(line).unwrap() {
                Line::Snapshot(s) => {
                    snapshots.insert(s.snapshot.id, s.snapshot.data);
                }
                Line::Entry(e) => {
                    let data = &snapshots[&e.snapshot];
                    let again = super::decide_entry(&apps[&e.app], &e, data);
                    assert_eq!(again.decision, e.decision, "{} {}", e.app, e.id);
                    assert_eq!(again.how, e.how, "{} {}", e.app, e.id);
                    assert!(!again.ran_out_of_draws, "{} {}", e.app, e.id);
                    entries += 1;
                    with_draws += usize::from(!e.draws.is_empty());
                    with_reads += usize::from(!e.reads.is_empty());
                }
            }
        }
        assert_eq!(entries, apps.len() * 24);
        assert_eq!(snapshots.len(), 1);
        assert!(with_draws > 0, "no app drew a random number");
        assert!(with_reads > 0, "no entry recorded its reads");
    }

    #[test]
    fn too_few_draws_are_reported() {
        let config = Config::load(None, &Overrides::default()).unwrap();
        let source = "function onRequest(q, r) { r.respond('a', Math.random() < 0.5 ? '192.0.2.1' : '192.0.2.2'); }";
        let app = crate::engine::apps::load_app(
            "coin",
            Path::new("coin.js"),
            source,
            None,
            &config,
            &Arc::new(DataSnapshot::default()),
            1,
        )
        .unwrap();
        let data = Arc::new(DataSnapshot::default());
        let low = super::decide_again(&app, request(1, false), &data, Arc::from([0.1]), 20);
        let high = super::decide_again(&app, request(1, false), &data, Arc::from([0.9]), 20);
        assert_eq!(
            low.decision.answers,
            vec![crate::openmix::Answer::A([192, 0, 2, 1].into())]
        );
        assert_eq!(
            high.decision.answers,
            vec![crate::openmix::Answer::A([192, 0, 2, 2].into())]
        );
        assert!(!low.ran_out_of_draws);
        let none = super::decide_again(&app, request(1, false), &data, Arc::from([]), 20);
        assert!(none.ran_out_of_draws);
    }
}
