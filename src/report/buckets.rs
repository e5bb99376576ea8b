//! Timed buckets of decision counts and the windows over them, as the
//! client-metrics seed describes: a bucket is keyed by its stop time, and
//! `lastMinute` / `lastHour` are the sums of the buckets whose stop lies
//! inside the window `(now − width, now]`.
//!
//! [`FleetBuckets`] holds every bucket of the fleet that the store (or a
//! push) delivered in the last hour, each once (by row id). Its reads take
//! `now` as an argument, so tests can place a window exactly.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// app → provider → reason → decisions.
pub type Counts = BTreeMap<String, BTreeMap<String, BTreeMap<String, u64>>>;

/// Milliseconds per minute window.
pub const MINUTE_MS: i64 = 60_000;
/// Milliseconds per hour window (also how long buckets are kept).
pub const HOUR_MS: i64 = 3_600_000;
/// Width of one slot of the per-bucket series.
pub const SLOT_MS: i64 = 10_000;

/// Adds `src` into `dst`.
pub fn add_counts(dst: &mut Counts, src: &Counts) {
    for (app, providers) in src {
        let d = dst.entry(app.clone()).or_default();
        for (provider, reasons) in providers {
            let dp = d.entry(provider.clone()).or_default();
            for (reason, n) in reasons {
                *dp.entry(reason.clone()).or_default() += n;
            }
        }
    }
}

/// Sum of every count.
pub fn total(c: &Counts) -> u64 {
    c.values()
        .flat_map(|p| p.values())
        .flat_map(|r| r.values())
        .sum()
}

/// One slot of a series: (slot stop, provider → n, reason → n).
pub type Slot = (i64, BTreeMap<String, u64>, BTreeMap<String, u64>);

/// One stored bucket of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBucket {
    /// Row id (unique in the store).
    pub id: i64,
    /// Node that counted it.
    pub node: String,
    /// Unix ms.
    pub start: i64,
    /// Unix ms; the bucket's key.
    pub stop: i64,
    /// The counts.
    pub counts: Counts,
}

/// The fleet's buckets of the last hour, in memory.
#[derive(Debug, Default)]
pub struct FleetBuckets {
    /// stop → buckets ending then.
    by_stop: BTreeMap<i64, Vec<StoredBucket>>,
    ids: HashMap<i64, i64>,
}

impl FleetBuckets {
    /// Adds buckets not seen before; returns how many were new.
    pub fn add(&mut self, rows: impl IntoIterator<Item = StoredBucket>) -> usize {
        let mut added = 0;
        for b in rows {
            if self.ids.contains_key(&b.id) {
                continue;
            }
            self.ids.insert(b.id, b.stop);
            self.by_stop.entry(b.stop).or_default().push(b);
            added += 1;
        }
        added
    }

    /// Forgets buckets that stopped at or before `before` (unix ms).
    pub fn prune(&mut self, before: i64) {
        let keep = self.by_stop.split_off(&(before + 1));
        let gone = std::mem::replace(&mut self.by_stop, keep);
        for b in gone.into_values().flatten() {
            self.ids.remove(&b.id);
        }
    }

    fn window(&self, now: i64, width: i64) -> impl Iterator<Item = &StoredBucket> {
        self.by_stop
            .range(now - width + 1..=now)
            .flat_map(|(_, v)| v.iter())
    }

    /// Sum of the buckets with stop in `(now − width, now]`.
    pub fn sum(&self, now: i64, width: i64) -> Counts {
        let mut out = Counts::new();
        for b in self.window(now, width) {
            add_counts(&mut out, &b.counts);
        }
        out
    }

    /// One app's sum over the window (empty when it has no decisions).
    pub fn sum_app(
        &self,
        app: &str,
        now: i64,
        width: i64,
    ) -> BTreeMap<String, BTreeMap<String, u64>> {
        self.sum(now, width).remove(app).unwrap_or_default()
    }

    /// Per-slot series of one app over the hour before `now`: 360 slots of
    /// [`SLOT_MS`], each (slot stop, provider → n, reason → n). A bucket
    /// goes to the slot its stop falls in.
    pub fn series(&self, app: &str, now: i64) -> Vec<Slot> {
        let last = now.div_euclid(SLOT_MS) * SLOT_MS + SLOT_MS;
        let first = last - HOUR_MS;
        let mut slots: Vec<Slot> = (1..=HOUR_MS / SLOT_MS)
            .map(|i| (first + i * SLOT_MS, BTreeMap::new(), BTreeMap::new()))
            .collect();
        for b in self.window(now, HOUR_MS) {
            let Some(providers) = b.counts.get(app) else {
                continue;
            };
            // Slot i ends at first + (i+1)·SLOT_MS and holds stops in
            // (its stop − SLOT_MS, its stop].
            let i = ((b.stop - first - 1).div_euclid(SLOT_MS)).clamp(0, slots.len() as i64 - 1)
                as usize;
            for (provider, reasons) in providers {
                for (reason, n) in reasons {
                    *slots[i].1.entry(provider.clone()).or_default() += n;
                    *slots[i].2.entry(reason.clone()).or_default() += n;
                }
            }
        }
        slots
    }

    /// Every app seen in the hour before `now`, with its providers, reasons
    /// and decision count.
    pub fn seen(&self, now: i64) -> Vec<(String, BTreeSet<String>, BTreeSet<String>, u64)> {
        self.sum(now, HOUR_MS)
            .into_iter()
            .map(|(app, providers)| {
                let reasons: BTreeSet<String> =
                    providers.values().flat_map(|r| r.keys().cloned()).collect();
                let n = providers.values().flat_map(|r| r.values()).sum();
                (app, providers.keys().cloned().collect(), reasons, n)
            })
            .collect()
    }

    /// Latest bucket stop per node.
    pub fn last_push(&self) -> HashMap<String, i64> {
        let mut out: HashMap<String, i64> = HashMap::new();
        for b in self.by_stop.values().flatten() {
            let e = out.entry(b.node.clone()).or_insert(b.stop);
            *e = (*e).max(b.stop);
        }
        out
    }
}

/// The milliseconds covered, at `now` (unix ms), by the buckets of
/// `bucket_secs` that a "last `secs` seconds" sum takes: those whose stop
/// (a multiple of `bucket_secs`) is after `now − secs` in whole seconds,
/// the current one included. They reach back to the start of the oldest,
/// so the span is from `secs` to `secs + bucket_secs`; it is capped by
/// `counting_ms`, how long counting has run (nothing before that was
/// counted). At least 1 ms, so a rate can divide by it.
pub fn recent_span_ms(now: i64, secs: i64, bucket_secs: i64, counting_ms: i64) -> i64 {
    let since = now.div_euclid(1000) - secs;
    let first_stop = (since.div_euclid(bucket_secs) + 1) * bucket_secs;
    let start_ms = (first_stop - bucket_secs) * 1000;
    (now - start_ms).min(counting_ms).max(1)
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Parses a time: an RFC 3339 UTC string (`2016-11-03T07:16:43.572Z`,
/// also with a `±hh:mm` offset) or a number of unix milliseconds.
pub fn parse_time(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64().filter(|n| *n >= 0),
        serde_json::Value::String(s) => parse_rfc3339(s),
        _ => None,
    }
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let f = &frac[..digits];
        let padded = format!("{:0<3}", &f[..digits.min(3)]);
        ms = padded.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let oh: i64 = o[1..3].parse().ok()?;
            let om: i64 = o[4..6].parse().ok()?;
            let v = oh * 60 + om;
            if o.starts_with('-') { -v } else { v }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1000 + ms).filter(|t| *t >= 0)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats unix ms as RFC 3339 UTC with milliseconds.
pub fn format_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bucket(id: i64, stop: i64, app: &str, provider: &str, reason: &str, n: u64) -> StoredBucket {
        let mut counts = Counts::new();
        counts
            .entry(app.into())
            .or_default()
            .entry(provider.into())
            .or_default()
            .insert(reason.into(), n);
        StoredBucket {
            id,
            node: "n".into(),
            start: stop - 10_000,
            stop,
            counts,
        }
    }

    #[test]
    fn times_parse_and_format() {
        assert_eq!(
            parse_time(&json!("2016-11-03T07:16:43.572Z")),
            Some(1_478_157_403_572)
        );
        assert_eq!(
            parse_time(&json!("2016-11-03T08:16:43.572+01:00")),
            Some(1_478_157_403_572)
        );
        assert_eq!(parse_time(&json!("1970-01-01T00:00:00Z")), Some(0));
        assert_eq!(
            parse_time(&json!(1_478_157_403_572_i64)),
            Some(1_478_157_403_572)
        );
        assert_eq!(format_time(1_478_157_403_572), "2016-11-03T07:16:43.572Z");
        for bad in [
            json!("yesterday"),
            json!("2016-13-03T07:16:43Z"),
            json!("2016-11-03T07:16:43"),
            json!(-5),
            json!(true),
            json!(1.5),
        ] {
            assert_eq!(parse_time(&bad), None, "{bad}");
        }
        for ms in [0, 951_782_400_000, 4_102_444_799_999] {
            assert_eq!(parse_time(&json!(format_time(ms))), Some(ms));
        }
    }

    #[test]
    fn recent_spans_cover_sixty_to_seventy_seconds() {
        let day = 20_000 * 86_400_000_i64;
        // On a bucket boundary: exactly the minute.
        assert_eq!(recent_span_ms(day, 60, 10, i64::MAX), 60_000);
        // 5.5 s into a bucket: the oldest one began 65.5 s ago.
        assert_eq!(recent_span_ms(day + 5_500, 60, 10, i64::MAX), 65_500);
        // Just before the next boundary: almost 70 s.
        assert_eq!(recent_span_ms(day + 9_999, 60, 10, i64::MAX), 69_999);
        assert_eq!(recent_span_ms(day + 10_000, 60, 10, i64::MAX), 60_000);
        // A node counting for 12 s so far: 12 s.
        assert_eq!(recent_span_ms(day + 5_500, 60, 10, 12_000), 12_000);
        assert_eq!(recent_span_ms(day, 60, 10, 0), 1);
    }

    #[test]
    fn windows_enter_and_leave_with_an_injected_clock() {
        let now = 1_000_000_000_000;
        let mut f = FleetBuckets::default();
        f.add([
            bucket(1, now - 5_000, "www", "a", "R", 3),
            bucket(2, now - 59_999, "www", "a", "R", 4),
            bucket(3, now - 60_000, "www", "b", "R", 5),
            bucket(4, now - 3_599_999, "www", "b", "F", 6),
            bucket(5, now - 3_600_000, "www", "b", "F", 7),
            bucket(6, now + 1, "www", "a", "R", 8),
        ]);
        assert_eq!(
            f.add([bucket(1, now - 5_000, "www", "a", "R", 3)]),
            0,
            "ids dedupe"
        );
        assert_eq!(total(&f.sum(now, MINUTE_MS)), 7);
        assert_eq!(total(&f.sum(now, HOUR_MS)), 3 + 4 + 5 + 6);
        // One ms later the 59.999 s bucket has left the minute, the future
        // one has entered it.
        assert_eq!(total(&f.sum(now + 1, MINUTE_MS)), 3 + 8);
        assert_eq!(f.sum_app("www", now, HOUR_MS)["b"]["F"], 6);
        let series = f.series("www", now);
        assert_eq!(series.len(), 360);
        let in_series: u64 = series.iter().flat_map(|s| s.1.values()).sum();
        assert_eq!(in_series, 18);
        f.prune(now - 60_000);
        assert_eq!(total(&f.sum(now, HOUR_MS)), 7);
        let seen = f.seen(now);
        assert_eq!(seen[0].0, "www");
        assert_eq!(seen[0].3, 7);
    }
}
