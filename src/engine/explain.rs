//! Why a client gets the provider it gets: one decision explained as a
//! report. Built here only, from what [`super::steer::explain`] learnt, so
//! `GET /api/apps/{app}/explain`, `switchyard explain` (a client of that
//! endpoint) and `switchyard decide --explain` (offline) show the same
//! thing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::apps::LoadedApp;
use super::decision_log::LoggedDecision;
use super::request::{Built, Located};
use super::steer::{self, Insight, Outcome, Steered};
use crate::data::FeedStatus;
use crate::openmix::{AppError, DataSnapshot, Request, TraceRead};

/// One decision explained.
#[derive(Debug, Serialize)]
pub struct Explanation {
    /// The app.
    pub app: String,
    /// The app version that decided.
    pub version: u64,
    /// The request as located.
    pub request: ExplainedRequest,
    /// Every value the app read, in order (empty when it did not run, or
    /// failed).
    pub reads: Vec<TraceRead>,
    /// The data the app saw.
    pub data: DataReport,
    /// The answer.
    pub decision: LoggedDecision,
    /// How the answer was reached.
    pub how: How,
    /// Whether this decision can be reused from the memo.
    pub memo: MemoReport,
    /// The ECS scope a DNS answer would carry (`null`: the request had no
    /// client subnet, so no option is echoed).
    pub ecs_scope: Option<u8>,
    /// Time taken, queueing for a JS worker included, in microseconds.
    pub time_us: u64,
}

/// The request as the app saw it, and where its location came from.
#[derive(Debug, Serialize)]
pub struct ExplainedRequest {
    /// Every field the app can read.
    pub fields: Request,
    /// How the client address was located (`null`: none given).
    pub client: Option<Located>,
    /// How the resolver address was located, when it is not the client's.
    pub resolver: Option<Located>,
}

/// The data snapshot a decision read.
#[derive(Debug, Serialize)]
pub struct DataReport {
    /// The snapshot's version: its id within this server.
    pub snapshot: u64,
    /// Each feed by name: its age and whether it is stale.
    pub feeds: BTreeMap<String, FeedAge>,
}

/// How fresh one feed is.
#[derive(Debug, Serialize)]
pub struct FeedAge {
    /// Seconds since its last good value (`null`: never).
    pub age_secs: Option<f64>,
    /// No good value within the stale age.
    pub stale: bool,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
}

/// How a decision was reached ([`steer::How`]: `memo` when the server
/// would answer from the memo), and whether the app ran for this report
/// (on a memo hit it runs anyway, to show its reads).
#[derive(Debug, Serialize)]
pub struct How {
    /// How the server reaches this answer.
    #[serde(flatten)]
    pub reached: steer::How,
    /// Whether the app ran for this report.
    pub ran: bool,
}

/// Whether a decision can be memoised.
#[derive(Debug, Serialize)]
pub struct MemoReport {
    /// A decision like this one is stored and reused by the memo.
    pub memoisable: bool,
    /// When not, the rule it breaks.
    pub rule: Option<String>,
    /// The memo holds this decision now: the server answers without
    /// running the app.
    pub would_hit: bool,
}

/// Everything one explained decision is built from.
pub struct Inputs<'a> {
    /// The app version asked about.
    pub app: &'a LoadedApp,
    /// The request, as located.
    pub built: Built,
    /// The snapshot the decision read.
    pub data: &'a DataSnapshot,
    /// The feeds' status (empty offline).
    pub feeds: BTreeMap<String, FeedStatus>,
    /// The answer.
    pub steered: Steered,
    /// What explaining learnt beside it.
    pub insight: Insight,
    /// Time taken.
    pub elapsed: Duration,
}

/// The report of one explained decision.
pub fn explain(inputs: Inputs<'_>) -> Explanation {
    let Inputs {
        app,
        built,
        data,
        feeds,
        steered,
        insight,
        elapsed,
    } = inputs;
    let how = how_reached(&steered.outcome, &insight);
    let memo = memo_report(app, &steered.outcome, &insight);
    let ecs_scope = built.ecs_scope(steered.outcome == Outcome::App);
    Explanation {
        app: app.code.name.clone(),
        version: app.code.version,
        request: ExplainedRequest {
            fields: built.request,
            client: built.client,
            resolver: built.resolver,
        },
        reads: insight.trace.map(|t| t.reads).unwrap_or_default(),
        data: DataReport {
            snapshot: data.version,
            feeds: feeds
                .into_iter()
                .map(|(name, f)| {
                    let age = FeedAge {
                        age_secs: f.age.map(|a| a.as_secs_f64()),
                        stale: f.stale,
                        last_error: f.last_error,
                    };
                    (name, age)
                })
                .collect(),
        },
        decision: LoggedDecision::of(&steered),
        how,
        memo,
        ecs_scope,
        time_us: elapsed.as_micros() as u64,
    }
}

fn how_reached(outcome: &Outcome, insight: &Insight) -> How {
    let ran = match outcome {
        Outcome::App => true,
        Outcome::Quarantined => false,
        Outcome::Fallback(e) | Outcome::Failed(e) => !matches!(
            e,
            AppError::Backoff { .. } | AppError::NotLoaded { .. } | AppError::Overloaded
        ),
    };
    How {
        reached: steer::How::of(outcome, insight.memo_hit),
        ran,
    }
}

fn memo_report(app: &LoadedApp, outcome: &Outcome, insight: &Insight) -> MemoReport {
    let rule = match (&app.memo, &app.memo_off) {
        (None, Some(why)) => Some(why.clone()),
        (None, None) => Some("memoisation is off".to_string()),
        (Some(memo), _) if memo.stats().disabled => Some(
            "a stored decision disagreed with a fresh one: memoisation was turned off for this version"
                .to_string(),
        ),
        (Some(_), _) if *outcome != Outcome::App => {
            Some("only decisions the app made are stored, not fallbacks".to_string())
        }
        (Some(_), _) if insight.impure => Some(
            "this decision called Math.random or console.log: such a decision is never stored"
                .to_string(),
        ),
        (Some(_), _) => None,
    };
    MemoReport {
        memoisable: rule.is_none(),
        rule,
        would_hit: insight.memo_hit,
    }
}
