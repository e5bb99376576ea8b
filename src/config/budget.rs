//! `[budget]`: the default time and memory budgets of every app.

use std::time::Duration;

use serde::Deserialize;

use crate::openmix::Budget;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBudget {
    decision_ms: Option<u64>,
    load_ms: Option<u64>,
    memory_mb: Option<u64>,
}

/// `value` when it is 1 to `max`; `key` names the setting in the error.
pub(super) fn bounded(value: u64, max: u64, key: &str) -> Result<u64, String> {
    if value == 0 || value > max {
        return Err(format!("{key} must be 1..={max}, got {value}"));
    }
    Ok(value)
}

pub(super) fn check(raw: &RawBudget) -> Result<Budget, String> {
    let mut budget = Budget::default();
    if let Some(ms) = raw.decision_ms {
        budget.decision = Duration::from_millis(bounded(ms, 10_000, "budget.decision_ms:")?);
    }
    if let Some(ms) = raw.load_ms {
        budget.load = Duration::from_millis(bounded(ms, 60_000, "budget.load_ms:")?);
    }
    if let Some(mb) = raw.memory_mb {
        budget.memory = (bounded(mb, 4096, "budget.memory_mb:")? as usize) << 20;
    }
    Ok(budget)
}
