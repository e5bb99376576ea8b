//! The PostgreSQL stats read: a trigger keeps hourly sums per orchestrator
//! and region (`stats_hourly`, migration 0002), and aggregated reads add
//! the sums of the whole hours in the window to the events of its partial
//! edge hours: the same plain means, from ~3× fewer rows.

use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use crate::stats::store::MeanRow;
use crate::stats::{Filter, Window};

/// Seconds per `stats_hourly` bucket.
const HOUR: f64 = 3600.0;

/// The bucket of `ts`: the h with h·3600 ≤ ts < (h+1)·3600, computed
/// exactly as the trigger in `0002_stats_hourly.sql` does.
fn hour_of(ts: f64) -> i64 {
    let h = (ts / HOUR).floor();
    (if h * HOUR > ts { h - 1.0 } else { h }) as i64
}

/// The first bucket starting at or after `since`.
fn first_full_hour(since: f64) -> i64 {
    let h = hour_of(since);
    if (h as f64) * HOUR >= since { h } else { h + 1 }
}

/// A window cut into the whole hours it holds, read from `stats_hourly`,
/// and the partial hours at its edges, read from the events. The three
/// parts are disjoint and together cover the window exactly.
#[derive(Debug, PartialEq)]
struct Split {
    /// Buckets `[first, end)`; `first` is `None` when the window has no start.
    hours: Option<(Option<i64>, i64)>,
    /// Events with `since <= ts < first·3600`.
    head: Option<(f64, f64)>,
    /// Events with `start <= ts <= until` (`start` = end·3600, or the
    /// window's own start when it holds no whole hour).
    tail: (Option<f64>, f64),
}

fn split(window: &Window) -> Split {
    // Bucket h is whole when h·3600 >= since and (h+1)·3600 <= until.
    // hour_of(until)·3600 <= until, so every bucket below it ends in time.
    let end = hour_of(window.until);
    let first = window.since.map(first_full_hour);
    match (window.since, first) {
        (Some(since), Some(first)) if first < end => Split {
            hours: Some((Some(first), end)),
            head: Some((since, first as f64 * HOUR)),
            tail: (Some(end as f64 * HOUR), window.until),
        },
        (Some(since), _) => Split {
            hours: None,
            head: None,
            tail: (Some(since), window.until),
        },
        (None, _) => Split {
            hours: Some((None, end)),
            head: None,
            tail: (Some(end as f64 * HOUR), window.until),
        },
    }
}

fn push_pair_filter(qb: &mut QueryBuilder<Postgres>, filter: &Filter) {
    if let Some(o) = &filter.orchestrator {
        qb.push(" AND orchestrator = ").push_bind(o.clone());
    }
    if let Some(r) = &filter.region {
        qb.push(" AND region = ").push_bind(r.clone());
    }
}

/// The means per orchestrator and region within `filter`.
pub(super) async fn means(pool: &PgPool, filter: &Filter) -> sqlx::Result<Vec<MeanRow>> {
    // Whole hours come from `stats_hourly`, the partial hours at the
    // edges from the events; the sums of both are added per pair.
    // The three parts cover the window exactly once (see `split`).
    let parts = split(&filter.window);
    let mut qb = QueryBuilder::<Postgres>::new(
        "SELECT orchestrator, region, SUM(n)::float8, SUM(sr), SUM(seg), SUM(rtt) FROM (",
    );
    let mut union = false;
    if let Some((first, end)) = parts.hours {
        qb.push(
            "SELECT orchestrator, region, n, sum_success_rate AS sr, sum_seg_duration AS seg, \
             sum_round_trip_time AS rtt FROM stats_hourly WHERE hour < ",
        )
        .push_bind(end);
        if let Some(first) = first {
            qb.push(" AND hour >= ").push_bind(first);
        }
        push_pair_filter(&mut qb, filter);
        union = true;
    }
    let mut events = |qb: &mut QueryBuilder<Postgres>,
                      lo: Option<f64>,
                      hi: f64,
                      hi_inclusive: bool| {
        if union {
            qb.push(" UNION ALL ");
        }
        union = true;
        qb.push(
            "SELECT orchestrator, region, 1::bigint AS n, success_rate AS sr, seg_duration AS seg, round_trip_time AS rtt \
             FROM stats_events WHERE ts ",
        )
        .push(if hi_inclusive { "<= " } else { "< " })
        .push_bind(hi);
        if let Some(lo) = lo {
            qb.push(" AND ts >= ").push_bind(lo);
        }
        push_pair_filter(qb, filter);
    };
    if let Some((lo, hi)) = parts.head {
        events(&mut qb, Some(lo), hi, false);
    }
    events(&mut qb, parts.tail.0, parts.tail.1, true);
    qb.push(") t GROUP BY orchestrator, region");
    qb.build()
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| {
            let n: f64 = row.try_get(2)?;
            let mean = |i| row.try_get::<f64, _>(i).map(|sum| sum / n);
            Ok((
                row.try_get(0)?,
                row.try_get(1)?,
                mean(3)?,
                mean(4)?,
                mean(5)?,
            ))
        })
        .collect()
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_match_their_definition() {
        for ts in [
            0.0,
            3599.999,
            3600.0,
            7_199.5,
            1_700_000_000.0,
            1_700_002_800.0,
            -1.0,
            -3600.0,
        ] {
            let h = hour_of(ts) as f64;
            assert!(h * HOUR <= ts && ts < (h + 1.0) * HOUR, "{ts}");
        }
        // One ulp below an hour boundary: floor(ts / 3600) rounds up; the bucket must not.
        let b = 472_222.0 * HOUR;
        let below = f64::from_bits(b.to_bits() - 1);
        assert_eq!(hour_of(below), 472_221);
        assert_eq!(hour_of(b), 472_222);
        assert_eq!(first_full_hour(b), 472_222);
        assert_eq!(first_full_hour(below), 472_222);
        assert_eq!(first_full_hour(b + 0.5), 472_223);
    }

    #[test]
    fn splits_cover_the_window_once() {
        let h = |n: f64| n * HOUR;
        // A day, not aligned: 23 whole hours and two partial ones.
        let w = Window {
            since: Some(h(10.0) + 1800.0),
            until: h(34.0) + 1800.0,
        };
        assert_eq!(
            split(&w),
            Split {
                hours: Some((Some(11), 34)),
                head: Some((h(10.0) + 1800.0, h(11.0))),
                tail: (Some(h(34.0)), w.until)
            }
        );
        // Aligned: no head events, the tail is just `until` itself.
        let w = Window {
            since: Some(h(10.0)),
            until: h(12.0),
        };
        assert_eq!(
            split(&w),
            Split {
                hours: Some((Some(10), 12)),
                head: Some((h(10.0), h(10.0))),
                tail: (Some(h(12.0)), h(12.0))
            }
        );
        // Under an hour: events only.
        let w = Window {
            since: Some(h(10.0) + 1.0),
            until: h(11.0) + 1.0,
        };
        assert_eq!(
            split(&w),
            Split {
                hours: None,
                head: None,
                tail: (w.since, w.until)
            }
        );
        // No start: every bucket before until's.
        let w = Window {
            since: None,
            until: h(5.0) + 7.0,
        };
        assert_eq!(
            split(&w),
            Split {
                hours: Some((None, 5)),
                head: None,
                tail: (Some(h(5.0)), w.until)
            }
        );
        // since > until: nothing anywhere.
        let w = Window {
            since: Some(h(9.0)),
            until: h(2.0),
        };
        assert_eq!(
            split(&w),
            Split {
                hours: None,
                head: None,
                tail: (w.since, w.until)
            }
        );
    }
}
