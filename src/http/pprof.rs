//! `/debug/pprof/profile` (CPU) and `/debug/pprof/heap` (sampled
//! allocations): profiles in pprof's protobuf format, one at a time.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::vars::rss_bytes;
use super::{HttpResponse, json, json_error, query_pairs, text};

/// One profile at a time: a second request waits for the first, as the
/// seed says.
static PROFILE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The `seconds` of a profile request: 30 unless given, 1 to 300.
#[allow(clippy::result_large_err)] // the error is the response itself, built once
fn profile_seconds(req: &Request<Incoming>) -> Result<u64, HttpResponse> {
    let seconds = query_pairs(req)
        .iter()
        .find(|(k, _)| k == "seconds")
        .map(|(_, v)| v.parse::<u64>())
        .unwrap_or(Ok(30));
    match seconds {
        Ok(s) if (1..=300).contains(&s) => Ok(s),
        _ => Err(json_error(
            StatusCode::BAD_REQUEST,
            "seconds must be a whole number from 1 to 300",
        )),
    }
}

/// The answer of a profile endpoint: the encoded profile, or what failed.
fn profile_response(
    encoded: Result<Result<Vec<u8>, String>, tokio::task::JoinError>,
) -> HttpResponse {
    match encoded {
        Ok(Ok(bytes)) => text(StatusCode::OK, "application/octet-stream", bytes),
        Ok(Err(e)) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("profile failed: {e}"),
        ),
        Err(e) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("profile failed: {e}"),
        ),
    }
}

/// `/debug/pprof/profile?seconds=N`: a CPU profile in pprof's protobuf format.
pub(super) async fn profile(req: &Request<Incoming>) -> HttpResponse {
    let seconds = match profile_seconds(req) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let _one_at_a_time = PROFILE_LOCK.lock().await;
    let guard = match pprof::ProfilerGuardBuilder::default()
        .frequency(99)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
    {
        Ok(g) => g,
        Err(e) => {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot start the profiler: {e}"),
            );
        }
    };
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let encoded = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        use pprof::protos::Message;
        let report = guard.report().build().map_err(|e| e.to_string())?;
        let profile = report.pprof().map_err(|e| e.to_string())?;
        Ok(profile.encode_to_vec())
    })
    .await;
    profile_response(encoded)
}

/// Samples one heap profile keeps at most: 8 GiB allocated at the sampling
/// rate, in 8.6 MB of slots that become resident only as they fill.
const HEAP_PROFILE_SAMPLES: usize = 16_384;

/// `/debug/pprof/heap?seconds=N`: a sampled profile of the allocations made
/// during the next N seconds, in pprof's protobuf format (`go tool pprof`
/// reads it as `alloc_objects` / `alloc_space`). `?format=json` answers the
/// process's memory totals at once instead.
pub(super) async fn heap(req: &Request<Incoming>) -> HttpResponse {
    if query_pairs(req)
        .iter()
        .any(|(k, v)| k == "format" && v == "json")
    {
        return json(StatusCode::OK, &memory_totals());
    }
    let seconds = match profile_seconds(req) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let _one_at_a_time = PROFILE_LOCK.lock().await;
    // Dropped with this future when the client goes away: sampling stops.
    let Some(recording) = crate::openmix::alloc::HeapProfile::start(HEAP_PROFILE_SAMPLES) else {
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "a heap profile is already running",
        );
    };
    let started = SystemTime::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let samples = recording.finish();
    let took = started.elapsed().unwrap_or_default();
    if samples.dropped > 0 {
        tracing::warn!(
            dropped = samples.dropped,
            kept = samples.samples.len(),
            "heap profile buffer full: later samples dropped"
        );
    }
    // Symbolising reads debug info from disk: off the async workers.
    let encoded = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        use pprof::protos::Message;
        Ok(heap_pprof(&samples, started, took).encode_to_vec())
    })
    .await;
    profile_response(encoded)
}

/// The process's memory totals, from `/proc/self/statm`.
fn memory_totals() -> serde_json::Value {
    serde_json::json!({
        "rss_bytes": rss_bytes(),
        "virtual_bytes": std::fs::read_to_string("/proc/self/statm").ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok()).map_or(0, |p| p * 4096),
    })
}

/// The string table of a pprof profile: index 0 is the empty string.
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Strings {
        Strings {
            table: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }

    fn id(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// True for the frames of the allocator and the sampler itself, which
/// start every stack and say nothing about who allocated.
fn sampler_frame(name: &str) -> bool {
    [
        "backtrace::",
        "_Unwind_",
        "__rust_",
        "__rg_",
        "__rdl_",
        "alloc::alloc::",
        "<alloc::alloc::Global",
    ]
    .iter()
    .any(|p| name.starts_with(p))
        || name.contains("openmix::alloc::")
}

/// Builds the pprof profile of heap samples: symbolised stacks with
/// `alloc_objects` and `alloc_space` scaled up from the sampling rate.
fn heap_pprof(
    raw: &crate::openmix::alloc::HeapSamples,
    started: SystemTime,
    took: Duration,
) -> pprof::protos::Profile {
    use pprof::protos::{Function, Line, Location, Profile, Sample, ValueType};
    let rate = crate::openmix::alloc::SAMPLE_RATE as f64;
    // Go's estimator for Poisson sampling: an allocation of s bytes is
    // sampled with probability 1 - e^(-s/rate), so a sample stands for
    // 1 / that many allocations like it.
    let mut stacks: HashMap<&[usize], (f64, f64)> = HashMap::new();
    for s in &raw.samples {
        let size = s.size.max(1) as f64;
        let weight = 1.0 / (1.0 - (-size / rate).exp());
        let e = stacks.entry(s.frames.as_slice()).or_default();
        e.0 += weight;
        e.1 += weight * size;
    }

    let mut strings = Strings::new();
    let mut functions: Vec<Function> = Vec::new();
    let mut function_ids: HashMap<(String, String), u64> = HashMap::new();
    let mut locations: Vec<Location> = Vec::new();
    // Address → (location id, is a sampler frame).
    let mut location_ids: HashMap<usize, (u64, bool)> = HashMap::new();
    let mut samples = Vec::with_capacity(stacks.len());
    for (frames, (objects, bytes)) in stacks {
        let mut ids = Vec::with_capacity(frames.len());
        for &addr in frames {
            let (id, sampler) = *location_ids.entry(addr).or_insert_with(|| {
                let mut lines = Vec::new();
                let mut sampler = false;
                // One symbol per inlined frame, innermost first, as pprof
                // orders a location's lines.
                backtrace::resolve(addr as *mut std::ffi::c_void, |sym| {
                    let name = sym
                        .name()
                        .map_or_else(|| format!("{addr:#x}"), |n| format!("{n:#}"));
                    sampler |= sampler_frame(&name);
                    let file = sym
                        .filename()
                        .map(|f| f.display().to_string())
                        .unwrap_or_default();
                    let key = (name, file);
                    let function_id = match function_ids.get(&key) {
                        Some(&id) => id,
                        None => {
                            let id = functions.len() as u64 + 1;
                            let system_name = sym
                                .name()
                                .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned())
                                .unwrap_or_else(|| key.0.clone());
                            functions.push(Function {
                                id,
                                name: strings.id(&key.0),
                                system_name: strings.id(&system_name),
                                filename: strings.id(&key.1),
                                ..Function::default()
                            });
                            function_ids.insert(key, id);
                            id
                        }
                    };
                    lines.push(Line {
                        function_id,
                        line: sym.lineno().map_or(0, i64::from),
                    });
                });
                let id = locations.len() as u64 + 1;
                locations.push(Location {
                    id,
                    address: addr as u64,
                    line: lines,
                    ..Location::default()
                });
                (id, sampler)
            });
            // The leading run of sampler frames goes; the rest is the caller.
            if !(sampler && ids.is_empty()) {
                ids.push(id);
            }
        }
        samples.push(Sample {
            location_id: ids,
            value: vec![objects.round() as i64, bytes.round() as i64],
            ..Sample::default()
        });
    }

    let value_type = |strings: &mut Strings, ty: &str, unit: &str| ValueType {
        ty: strings.id(ty),
        unit: strings.id(unit),
    };
    let sample_type = vec![
        value_type(&mut strings, "alloc_objects", "count"),
        value_type(&mut strings, "alloc_space", "bytes"),
    ];
    let period_type = value_type(&mut strings, "space", "bytes");
    let default_sample_type = strings.id("alloc_space");
    let mut comment = Vec::new();
    if raw.dropped > 0 {
        comment.push(strings.id(&format!(
            "{} samples dropped: the buffer of {} was full",
            raw.dropped,
            raw.samples.len()
        )));
    }
    Profile {
        sample_type,
        sample: samples,
        location: locations,
        function: functions,
        string_table: strings.table,
        time_nanos: started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64),
        duration_nanos: took.as_nanos() as i64,
        period_type: Some(period_type),
        period: crate::openmix::alloc::SAMPLE_RATE as i64,
        comment,
        default_sample_type,
        ..Profile::default()
    }
}
