//! `[log]`: the sampled decision log (`engine::decision_log`).

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    decisions_sample: Option<f64>,
    decisions_ring: Option<usize>,
    decisions_file: Option<PathBuf>,
    decisions_file_max_mb: Option<toml::Value>,
    decisions_file_keep: Option<usize>,
    snapshots_kept: Option<usize>,
}

/// `[log]`: which decisions are logged and where they are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Share of the app's own decisions logged, from 0 (none) to 1 (all).
    /// Fallbacks, failures, quarantined answers and backoffs are logged
    /// whatever it says: they are what an operator comes looking for.
    pub decisions_sample: f64,
    /// Entries kept in memory (`GET /api/decisions/log`); 0 keeps none.
    /// The default is 1,000: an entry of an app that ran carries its whole
    /// read trace (a few KB in many small allocations), and 10,000 of them
    /// cost the every-query path a quarter of its QPS on a 2-core machine
    /// (BENCHMARKS.md, "Decision log"); the file keeps the longer history.
    pub decisions_ring: usize,
    /// JSON-lines file the entries are also appended to (relative paths
    /// are under the data directory), when set.
    pub decisions_file: Option<PathBuf>,
    /// Size at which the file is rotated, in bytes.
    pub decisions_file_max_bytes: u64,
    /// Files kept: the file and its rotations `file.1` … `file.N-1`.
    pub decisions_file_keep: usize,
    /// Data snapshots kept for the entries in memory (the oldest used is
    /// dropped first).
    pub snapshots_kept: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            decisions_sample: 0.01,
            decisions_ring: 1_000,
            decisions_file: None,
            decisions_file_max_bytes: 64 << 20,
            decisions_file_keep: 5,
            snapshots_kept: 64,
        }
    }
}

pub(super) fn check(raw: RawLog) -> Result<LogConfig, String> {
    let d = LogConfig::default();
    let sample = raw.decisions_sample.unwrap_or(d.decisions_sample);
    if !(0.0..=1.0).contains(&sample) {
        return Err(format!(
            "log.decisions_sample: {sample} must be from 0 to 1"
        ));
    }
    let ring = raw.decisions_ring.unwrap_or(d.decisions_ring);
    if ring > 10_000_000 {
        return Err(format!(
            "log.decisions_ring: {ring} must be at most 10000000"
        ));
    }
    let max_mb = match raw.decisions_file_max_mb {
        None => 64.0,
        Some(toml::Value::Integer(n)) => n as f64,
        Some(toml::Value::Float(f)) => f,
        Some(other) => {
            return Err(format!(
                "log.decisions_file_max_mb: {other} is not a number"
            ));
        }
    };
    // A fraction of a megabyte is allowed (tests rotate at a few kB).
    if !(max_mb > 0.0 && max_mb <= 1_048_576.0) {
        return Err(format!(
            "log.decisions_file_max_mb: {max_mb} must be above 0 and at most 1048576"
        ));
    }
    let keep = raw.decisions_file_keep.unwrap_or(d.decisions_file_keep);
    if !(1..=1000).contains(&keep) {
        return Err(format!(
            "log.decisions_file_keep: {keep} must be from 1 to 1000"
        ));
    }
    let kept = raw.snapshots_kept.unwrap_or(d.snapshots_kept);
    if !(1..=100_000).contains(&kept) {
        return Err(format!(
            "log.snapshots_kept: {kept} must be from 1 to 100000"
        ));
    }
    Ok(LogConfig {
        decisions_sample: sample,
        decisions_ring: ring,
        decisions_file: raw.decisions_file.filter(|p| !p.as_os_str().is_empty()),
        decisions_file_max_bytes: (max_mb * 1_048_576.0) as u64,
        decisions_file_keep: keep,
        snapshots_kept: kept,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LogConfig, String> {
        check(toml::from_str(text).map_err(|e| e.to_string())?)
    }

    #[test]
    fn defaults_and_limits() {
        assert_eq!(parse("").unwrap(), LogConfig::default());
        let c = parse(
            "decisions_sample = 1.0\ndecisions_file_max_mb = 0.01\ndecisions_file = \"d.jsonl\"",
        )
        .unwrap();
        assert_eq!(c.decisions_sample, 1.0);
        assert_eq!(c.decisions_file_max_bytes, 10_485);
        assert_eq!(c.decisions_file, Some(PathBuf::from("d.jsonl")));
        assert_eq!(
            parse("decisions_file_max_mb = 2")
                .unwrap()
                .decisions_file_max_bytes,
            2 << 20
        );
        assert!(
            parse("decisions_sample = 1.5")
                .unwrap_err()
                .starts_with("log.decisions_sample")
        );
        assert!(parse("decisions_file_max_mb = 0").is_err());
        assert!(parse("decisions_file_max_mb = \"x\"").is_err());
        assert!(parse("decisions_file_keep = 0").is_err());
        assert!(parse("snapshots_kept = 0").is_err());
    }
}
