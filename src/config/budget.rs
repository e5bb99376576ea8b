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

pub(super) fn check(raw: &RawBudget) -> Result<Budget, String> {
    let mut budget = Budget::default();
    if let Some(ms) = raw.decision_ms {
        if ms == 0 || ms > 10_000 {
            return Err(format!("budget.decision_ms: must be 1..=10000, got {ms}"));
        }
        budget.decision = Duration::from_millis(ms);
    }
    if let Some(ms) = raw.load_ms {
        if ms == 0 || ms > 60_000 {
            return Err(format!("budget.load_ms: must be 1..=60000, got {ms}"));
        }
        budget.load = Duration::from_millis(ms);
    }
    if let Some(mb) = raw.memory_mb {
        if mb == 0 || mb > 4096 {
            return Err(format!("budget.memory_mb: must be 1..=4096, got {mb}"));
        }
        budget.memory = (mb as usize) << 20;
    }
    Ok(budget)
}
