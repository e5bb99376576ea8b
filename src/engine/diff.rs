//! What a candidate app version would change: one accumulator fed pairs of
//! (the decision that was made, the candidate's decision for the same
//! request), shared by shadow mode ([`super::shadow`]) and
//! `switchyard replay`, so both report the same diff.
//!
//! Everything kept is bounded whatever the traffic: each table keeps at
//! most [`KEYS`] distinct rows (later new rows count as "other") and shows
//! the [`ROWS`] largest; a few failure ids and examples are kept.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

use serde::{Serialize, Serializer};

use crate::engine::decision_log::LoggedDecision;
use crate::engine::steer::Steered;
use crate::openmix::{Answer, Decision, Request};

/// Distinct rows one table keeps; new rows past it count as "other".
pub const KEYS: usize = 1000;

/// Rows a table shows (the largest), the rest summed as "other".
pub const ROWS: usize = 20;

/// Examples kept by default.
pub const EXAMPLES: usize = 10;

/// Ids kept per distinct failure.
const FAILURE_IDS: usize = 3;

/// One side's answer, as far as the diff compares it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Picked {
    /// Provider alias ("" when none; `fallback` for a fallback answer).
    pub provider: String,
    /// Reason code ("" when none).
    pub reason: String,
    /// Answer values.
    pub answers: Vec<Answer>,
    /// Hosts of `addProviderHost` (HTTP answers).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

impl Picked {
    /// What a front end answered with `steered`.
    pub fn of(steered: &Steered) -> Picked {
        Picked::of_decision(&steered.decision, &steered.reason)
    }

    /// What `decision` answers, with the reason code served.
    pub fn of_decision(decision: &Decision, reason: &str) -> Picked {
        Picked {
            provider: decision.provider.clone().unwrap_or_default(),
            reason: reason.to_string(),
            answers: decision.answers.clone(),
            hosts: decision
                .provider_hosts
                .iter()
                .map(|h| h.host.clone())
                .collect(),
        }
    }

    /// What a logged decision answered.
    pub fn of_logged(d: &LoggedDecision) -> Picked {
        Picked {
            provider: d.provider.clone().unwrap_or_default(),
            reason: d.reason.clone(),
            answers: d.answers.clone(),
            hosts: d.provider_hosts.iter().map(|h| h.host.clone()).collect(),
        }
    }

    /// Whether `other` answers differently (provider, answer values or
    /// hosts; a reason alone is not a change of decision).
    fn differs(&self, other: &Picked) -> bool {
        self.provider != other.provider
            || self.answers != other.answers
            || self.hosts != other.hosts
    }
}

/// Why the candidate failed on one request (its fallback rules then gave
/// its [`Picked`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// [`crate::openmix::AppError::kind`].
    pub kind: String,
    /// The error, with its line.
    pub message: String,
}

/// The request fields an example shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Client address.
    pub ip: Option<IpAddr>,
    /// Resolver address.
    pub resolver_ip: Option<IpAddr>,
    /// Client market.
    pub market: String,
    /// Client country.
    pub country: String,
    /// Client ASN.
    pub asn: u32,
    /// Labels before the app's name.
    pub hostname_prefix: String,
    /// DNS query type ("" for HTTP).
    pub query_type: String,
}

impl Summary {
    /// The summary of `r`.
    pub fn of(r: &Request) -> Summary {
        Summary {
            ip: r.ip_address,
            resolver_ip: r.resolver_ip_address,
            market: r.client.market.clone(),
            country: r.client.country.clone(),
            asn: r.client.asn,
            hostname_prefix: r.hostname_prefix.clone(),
            query_type: r.query_type.clone(),
        }
    }
}

/// A bounded count per key.
#[derive(Debug)]
struct Tally<K> {
    counts: HashMap<K, u64>,
    other: u64,
}

impl<K> Default for Tally<K> {
    fn default() -> Self {
        Tally {
            counts: HashMap::new(),
            other: 0,
        }
    }
}

impl<K: Hash + Eq + Ord + Clone> Tally<K> {
    fn add(&mut self, key: K) {
        if let Some(n) = self.counts.get_mut(&key) {
            *n += 1;
        } else if self.counts.len() < KEYS {
            self.counts.insert(key, 1);
        } else {
            self.other += 1;
        }
    }

    /// The [`ROWS`] largest, largest first (ties by key), and the rest.
    fn top(&self) -> (Vec<(K, u64)>, u64) {
        let mut all: Vec<(K, u64)> = self.counts.iter().map(|(k, n)| (k.clone(), *n)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let rest: u64 = all.iter().skip(ROWS).map(|(_, n)| n).sum();
        all.truncate(ROWS);
        (all, rest + self.other)
    }
}

/// One changed decision shown as an example.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    /// The decision's id (a log entry's id, or the shadow's sequence number).
    pub id: String,
    /// The request.
    pub request: Summary,
    /// What was answered.
    pub from: Picked,
    /// What the candidate answers.
    pub to: Picked,
    /// Why the candidate failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// The accumulator. Serialises as its [`Report`].
#[derive(Debug)]
pub struct Diff {
    total: u64,
    changed: u64,
    failed: u64,
    providers: Tally<(String, String)>,
    markets: Tally<(String, String, String)>,
    countries: Tally<(String, String, String)>,
    reasons: Tally<String>,
    failures: Tally<(String, String)>,
    failure_ids: HashMap<(String, String), Vec<String>>,
    examples: Vec<Example>,
    max_examples: usize,
}

impl Default for Diff {
    fn default() -> Self {
        Diff::new(EXAMPLES)
    }
}

/// One row of a from → to table (by provider; by market or country when
/// `place` is set).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Move {
    /// The market or country, for those tables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
    /// Provider answered.
    pub from: String,
    /// Provider the candidate answers.
    pub to: String,
    /// Decisions.
    pub count: u64,
}

/// A table: its largest rows and the sum of the rest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table<R> {
    /// The largest rows, largest first.
    pub rows: Vec<R>,
    /// Decisions in rows not shown.
    pub other: u64,
}

/// A reason code of the candidate and how often it gave it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReasonCount {
    /// Reason code.
    pub reason: String,
    /// Decisions.
    pub count: u64,
}

/// A distinct failure of the candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureCount {
    /// Error kind.
    pub kind: String,
    /// Error message.
    pub message: String,
    /// Decisions.
    pub count: u64,
    /// The first few decisions' ids.
    pub ids: Vec<String>,
}

/// What the diff says, ready for JSON or a table.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Decisions compared.
    pub total: u64,
    /// Decisions the candidate answers differently.
    pub changed: u64,
    /// `changed / total` (0 when none).
    pub changed_share: f64,
    /// Decisions where the candidate failed.
    pub failed: u64,
    /// From → to by provider, every decision (unchanged ones as p → p).
    pub providers: Table<Move>,
    /// From → to by market, changed decisions only.
    pub markets: Table<Move>,
    /// From → to by country, changed decisions only.
    pub countries: Table<Move>,
    /// The candidate's reason codes.
    pub reasons: Table<ReasonCount>,
    /// The candidate's failures.
    pub failures: Table<FailureCount>,
    /// The first changed decisions.
    pub examples: Vec<Example>,
}

impl Diff {
    /// An empty diff keeping at most `max_examples` examples.
    pub fn new(max_examples: usize) -> Diff {
        Diff {
            total: 0,
            changed: 0,
            failed: 0,
            providers: Tally::default(),
            markets: Tally::default(),
            countries: Tally::default(),
            reasons: Tally::default(),
            failures: Tally::default(),
            failure_ids: HashMap::new(),
            examples: Vec::new(),
            max_examples,
        }
    }

    /// Adds one pair: `from` was answered to `request`, the candidate
    /// answers `to` (its fallback when it failed with `failure`).
    pub fn record(
        &mut self,
        id: &str,
        request: &Summary,
        from: &Picked,
        to: &Picked,
        failure: Option<&Failure>,
    ) {
        self.total += 1;
        let changed = from.differs(to);
        self.providers
            .add((from.provider.clone(), to.provider.clone()));
        self.reasons.add(to.reason.clone());
        if changed {
            self.changed += 1;
            self.markets.add((
                request.market.clone(),
                from.provider.clone(),
                to.provider.clone(),
            ));
            self.countries.add((
                request.country.clone(),
                from.provider.clone(),
                to.provider.clone(),
            ));
        }
        if let Some(f) = failure {
            self.failed += 1;
            let key = (f.kind.clone(), f.message.clone());
            self.failures.add(key.clone());
            // Ids only for failures the tally keeps a row for.
            if self.failures.counts.contains_key(&key) {
                let ids = self.failure_ids.entry(key).or_default();
                if ids.len() < FAILURE_IDS {
                    ids.push(id.to_string());
                }
            }
        }
        if (changed || failure.is_some()) && self.examples.len() < self.max_examples {
            self.examples.push(Example {
                id: id.to_string(),
                request: request.clone(),
                from: from.clone(),
                to: to.clone(),
                failure: failure.cloned(),
            });
        }
    }

    /// The report of what was recorded.
    pub fn report(&self) -> Report {
        let moves = |t: &Tally<(String, String, String)>| {
            let (rows, other) = t.top();
            Table {
                rows: rows
                    .into_iter()
                    .map(|((place, from, to), count)| Move {
                        place: Some(place),
                        from,
                        to,
                        count,
                    })
                    .collect(),
                other,
            }
        };
        let (providers, providers_other) = self.providers.top();
        let (reasons, reasons_other) = self.reasons.top();
        let (failures, failures_other) = self.failures.top();
        Report {
            total: self.total,
            changed: self.changed,
            changed_share: if self.total == 0 {
                0.0
            } else {
                self.changed as f64 / self.total as f64
            },
            failed: self.failed,
            providers: Table {
                rows: providers
                    .into_iter()
                    .map(|((from, to), count)| Move {
                        place: None,
                        from,
                        to,
                        count,
                    })
                    .collect(),
                other: providers_other,
            },
            markets: moves(&self.markets),
            countries: moves(&self.countries),
            reasons: Table {
                rows: reasons
                    .into_iter()
                    .map(|(reason, count)| ReasonCount { reason, count })
                    .collect(),
                other: reasons_other,
            },
            failures: Table {
                rows: failures
                    .into_iter()
                    .map(|((kind, message), count)| FailureCount {
                        ids: self
                            .failure_ids
                            .get(&(kind.clone(), message.clone()))
                            .cloned()
                            .unwrap_or_default(),
                        kind,
                        message,
                        count,
                    })
                    .collect(),
                other: failures_other,
            },
            examples: self.examples.clone(),
        }
    }
}

impl Serialize for Diff {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.report().serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picked(p: &str, reason: &str) -> Picked {
        Picked {
            provider: p.into(),
            reason: reason.into(),
            answers: vec![Answer::Cname(format!("{p}.example.net"))],
            hosts: Vec::new(),
        }
    }

    fn at(market: &str, country: &str) -> Summary {
        Summary {
            market: market.into(),
            country: country.into(),
            ..Summary::default()
        }
    }

    #[test]
    fn counts_changes_by_provider_market_and_country() {
        let mut d = Diff::new(2);
        for i in 0..6 {
            d.record(
                &format!("eu{i}"),
                &at("EU", "DE"),
                &picked("a", "A"),
                &picked("b", "B"),
                None,
            );
        }
        for i in 0..4 {
            d.record(
                &format!("na{i}"),
                &at("NA", "US"),
                &picked("a", "A"),
                &picked("a", "A"),
                None,
            );
        }
        let r = d.report();
        assert_eq!((r.total, r.changed, r.failed), (10, 6, 0));
        assert!((r.changed_share - 0.6).abs() < 1e-9);
        let rows: Vec<(&str, &str, u64)> = r
            .providers
            .rows
            .iter()
            .map(|m| (m.from.as_str(), m.to.as_str(), m.count))
            .collect();
        assert_eq!(rows, [("a", "b", 6), ("a", "a", 4)]);
        assert_eq!(r.markets.rows.len(), 1, "only changes: {:?}", r.markets);
        assert_eq!(r.markets.rows[0].place.as_deref(), Some("EU"));
        assert_eq!(r.countries.rows[0].place.as_deref(), Some("DE"));
        assert_eq!(r.countries.rows[0].count, 6);
        let reasons: Vec<(&str, u64)> = r
            .reasons
            .rows
            .iter()
            .map(|x| (x.reason.as_str(), x.count))
            .collect();
        assert_eq!(reasons, [("B", 6), ("A", 4)]);
        // Bounded examples: the first two changes.
        let ids: Vec<&str> = r.examples.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["eu0", "eu1"]);
        assert_eq!(r.examples[0].request.market, "EU");
    }

    #[test]
    fn a_reason_alone_is_no_change_and_failures_keep_a_few_ids() {
        let mut d = Diff::default();
        d.record(
            "1",
            &at("EU", "DE"),
            &picked("a", "A"),
            &picked("a", "Z"),
            None,
        );
        let boom = Failure {
            kind: "error".into(),
            message: "Error: boom at app.js:3".into(),
        };
        for i in 0..5 {
            d.record(
                &format!("f{i}"),
                &at("AS", "JP"),
                &picked("a", "A"),
                &picked("fallback", "fallback"),
                Some(&boom),
            );
        }
        let r = d.report();
        assert_eq!((r.total, r.changed, r.failed), (6, 5, 5));
        assert_eq!(r.failures.rows.len(), 1);
        let f = &r.failures.rows[0];
        assert_eq!((f.kind.as_str(), f.count), ("error", 5));
        assert_eq!(f.ids, ["f0", "f1", "f2"]);
        assert_eq!(r.examples.len(), 5);
        assert_eq!(r.examples[0].failure.as_ref(), Some(&boom));
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["failures"]["rows"][0]["ids"][0], "f0");
        assert_eq!(json["changed"], 5);
    }

    #[test]
    fn tables_are_bounded_with_the_rest_as_other() {
        let mut d = Diff::new(0);
        // KEYS + 5 distinct countries, each changed once; one more often.
        for i in 0..KEYS + 5 {
            d.record(
                "x",
                &at("EU", &format!("C{i}")),
                &picked("a", ""),
                &picked("b", ""),
                None,
            );
        }
        for _ in 0..3 {
            d.record(
                "y",
                &at("EU", "C7"),
                &picked("a", ""),
                &picked("b", ""),
                None,
            );
        }
        let r = d.report();
        assert_eq!(r.countries.rows.len(), ROWS);
        assert_eq!(r.countries.rows[0].place.as_deref(), Some("C7"));
        assert_eq!(r.countries.rows[0].count, 4);
        let shown: u64 = r.countries.rows.iter().map(|m| m.count).sum();
        assert_eq!(shown + r.countries.other, r.changed);
        assert!(r.examples.is_empty());
    }
}
