//! `switchyard test`: app fixtures run on the real runtime.
//!
//! Each test gets a fresh app instance (source, fixture `setup`, `init`),
//! then runs its requests in order on that instance, so apps that keep
//! state are tested as the server runs them. `Math.random` and `Date` can
//! be pinned per test; request fields, probes and feeds are exactly what
//! the fixture lists, and `onFusion` is told of every Fusion value that is
//! new or changed since the previous request. What passes here is what the
//! server does: it is the same engine, host objects, budgets and app
//! settings (`[apps.NAME]` in the config, the sidecar `NAME.toml`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use serde::Deserialize;

use super::ConfigArgs;
use crate::config::{AppSettings, Config, RawAppSettings, read_sidecar};
use crate::geo::GeoDb;
use crate::openmix::engine::TestScripts;
use crate::openmix::host::REQUEST_FIELDS;
use crate::openmix::{
    AppCode, AppError, AppInstance, CallOptions, DataSnapshot, FixtureRequest, RecordedCall,
    Request,
};

/// `test` flags.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Fixture files or directories of them (`*.json`).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Print a machine-readable JSON report instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Decision time budget in ms, overriding the app's (its sidecar's
    /// `budget_ms`, else the config's). Debug builds on a busy machine may
    /// need more than the production 5 ms.
    #[arg(long = "budget-ms")]
    pub budget_ms: Option<u64>,
    /// Configuration flags (GeoIP databases for `geo_ip`, budgets).
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    app: PathBuf,
    setup: Option<String>,
    providers: Option<serde_json::Value>,
    tests: Vec<TestCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    name: String,
    random: Option<Vec<f64>>,
    now_ms: Option<f64>,
    expect_init: Option<ExpectInit>,
    #[serde(default)]
    requests: Vec<TestRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectInit {
    required_providers: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    #[serde(default)]
    request: serde_json::Map<String, serde_json::Value>,
    geo_ip: Option<std::net::IpAddr>,
    #[serde(default)]
    probes: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    data: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    query: BTreeMap<String, String>,
    expect: Expect,
}

/// Either `calls` (the exact sequence of response calls) or some of the
/// decision keys (compared one by one); [`load_fixture`] checks which.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    calls: Option<Vec<Vec<serde_json::Value>>>,
    provider: Option<String>,
    cname: Option<String>,
    ttl: Option<u32>,
    reason: Option<String>,
    status: Option<u16>,
}

/// The result of one test.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestResult {
    /// Fixture file.
    pub file: String,
    /// Test name.
    pub name: String,
    /// Passed?
    pub passed: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// What the fixture gives that the server never would (request fields
    /// the Openmix API does not define): the test runs, with a warning.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Runs `switchyard test`; exit status 1 when anything failed.
pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let decision_budget = args.budget_ms.map(|ms| Duration::from_millis(ms.max(1)));
    let geo = GeoDb::open(&config.geo_paths()).ok();
    let mut files = Vec::new();
    for p in &args.paths {
        collect(p, &mut files)?;
    }
    if files.is_empty() {
        bail!("no fixture files (*.json) found in {:?}", args.paths);
    }
    let mut results = Vec::new();
    for file in &files {
        results.extend(run_file(file, &config, geo.as_ref(), decision_budget));
    }
    let passed = results.iter().filter(|r| r.passed).count();
    let failed = results.len() - passed;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "passed": passed, "failed": failed, "tests": results })
            )?
        );
    } else {
        for r in &results {
            for w in &r.warnings {
                println!("warn {}: {}: {w}", r.file, r.name);
            }
            match &r.failure {
                None => println!("ok   {}: {}", r.file, r.name),
                Some(why) => println!("FAIL {}: {}: {why}", r.file, r.name),
            }
        }
        println!("{passed} passed, {failed} failed");
    }
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn collect(p: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if p.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("{}: cannot read directory", p.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            if e.is_dir() || e.extension().is_some_and(|x| x == "json") {
                collect(&e, out)?;
            }
        }
    } else if p.is_file() {
        out.push(p.to_path_buf());
    } else {
        bail!("{}: no such file or directory", p.display());
    }
    Ok(())
}

/// Runs every test of one fixture file. The app runs with its settings as
/// the server reads them; `decision_budget` (`--budget-ms`) overrides its
/// decision budget. A broken fixture is one failed result naming the file
/// and what is wrong.
pub fn run_file(
    file: &Path,
    config: &Config,
    geo: Option<&GeoDb>,
    decision_budget: Option<Duration>,
) -> Vec<TestResult> {
    let shown = file.display().to_string();
    let broken = |why: String| {
        vec![TestResult {
            file: shown.clone(),
            name: "(fixture)".into(),
            passed: false,
            failure: Some(why),
            warnings: Vec::new(),
        }]
    };
    let fixture = match load_fixture(file) {
        Ok(f) => f,
        Err(e) => return broken(format!("{e:#}")),
    };
    let app_path = if fixture.app.is_absolute() || fixture.app.exists() {
        fixture.app.clone()
    } else {
        file.parent().unwrap_or(Path::new(".")).join(&fixture.app)
    };
    let source = match std::fs::read_to_string(&app_path) {
        Ok(s) => s,
        Err(e) => {
            return broken(format!(
                "key \"app\": cannot read {}: {e}",
                app_path.display()
            ));
        }
    };
    let name = crate::engine::apps::app_name(&app_path).unwrap_or_else(|| {
        app_path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("app")
            .to_string()
    });
    let mut settings = match app_settings(&app_path, &name, config) {
        Ok(s) => s,
        Err(e) => return broken(format!("key \"app\": {e}")),
    };
    if let Some(d) = decision_budget {
        settings.budget.decision = d;
    }
    let app = App {
        fixture: &fixture,
        name,
        path: app_path,
        source: Arc::from(source),
        settings,
        config,
        geo,
    };
    let mut results = Vec::new();
    for (i, test) in fixture.tests.iter().enumerate() {
        let failure = app.run_test(test, i as u64 + 1).err();
        results.push(TestResult {
            file: shown.clone(),
            name: test.name.clone(),
            passed: failure.is_none(),
            failure,
            warnings: unknown_fields(test),
        });
    }
    results
}

/// The app's settings as the server reads them: `[apps.NAME]` in the
/// config, replaced by the sidecar `NAME.toml` next to the app when there
/// is one.
fn app_settings(app: &Path, name: &str, config: &Config) -> Result<AppSettings, String> {
    let Some(text) = read_sidecar(app).map_err(|e| e.to_string())? else {
        return Ok(config.app_settings(name));
    };
    let what = app.with_extension("toml").display().to_string();
    let raw: RawAppSettings =
        toml::from_str(&text).map_err(|e| format!("{what}: {}", e.to_string().trim()))?;
    raw.check(config.budget, &what).map_err(|e| e.to_string())
}

fn load_fixture(file: &Path) -> anyhow::Result<Fixture> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("{}: cannot read", file.display()))?;
    let fixture: Fixture =
        serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    for (i, t) in fixture.tests.iter().enumerate() {
        for (j, r) in t.requests.iter().enumerate() {
            let at = format!("{}: tests[{i}].requests[{j}]", file.display());
            for key in r.probes.keys() {
                if !crate::openmix::data::PROBE_NAMES.contains(&key.as_str()) {
                    bail!("{at}.probes: unknown probe \"{key}\"");
                }
            }
            for key in r.data.keys() {
                if !matches!(key.as_str(), "fusion" | "sonar" | "inventory" | "weights") {
                    bail!(
                        "{at}.data: unknown feed \"{key}\" (known: fusion, sonar, inventory, weights)"
                    );
                }
            }
            for (what, map) in [
                ("request", &r.request),
                ("probes", &r.probes),
                ("data", &r.data),
            ] {
                for (key, v) in map {
                    crate::openmix::needs_special(v)
                        .map_err(|e| anyhow!("{at}.{what}.{key}: {e}"))?;
                }
            }
            check_expect(&r.expect).map_err(|e| anyhow!("{at}.expect: {e}"))?;
        }
        if t.random.as_ref().is_some_and(Vec::is_empty) {
            bail!(
                "{}: tests[{i}].random: must list at least one value",
                file.display()
            );
        }
    }
    Ok(fixture)
}

/// Warnings for the request fields of `test` that the Openmix API does not
/// define: openmixapplib's own tests feed such fields, and the app sees
/// them as plain properties of `request`, but the server never sets them.
fn unknown_fields(test: &TestCase) -> Vec<String> {
    let mut out = Vec::new();
    for (j, r) in test.requests.iter().enumerate() {
        for key in r.request.keys() {
            if !REQUEST_FIELDS.contains(&key.as_str()) {
                out.push(format!(
                    "requests[{j}].request: \"{key}\" is not an Openmix request field (known: {}); the app sees it as a plain property, the server never sets it",
                    REQUEST_FIELDS.join(", ")
                ));
            }
        }
    }
    out
}

/// `expect` gives either `calls` or at least one decision key.
fn check_expect(e: &Expect) -> Result<(), String> {
    let decision_keys: Vec<&str> = [
        ("provider", e.provider.is_some()),
        ("cname", e.cname.is_some()),
        ("ttl", e.ttl.is_some()),
        ("reason", e.reason.is_some()),
        ("status", e.status.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, given)| given.then_some(k))
    .collect();
    match (&e.calls, decision_keys.first()) {
        (Some(_), Some(key)) => Err(format!(
            "\"{key}\" cannot be combined with \"calls\" (give the calls or the decision)"
        )),
        (None, None) => Err(
            "must give \"calls\" or at least one of \"provider\", \"cname\", \"ttl\", \"reason\", \"status\""
                .into(),
        ),
        (Some(calls), None) => {
            for (k, c) in calls.iter().enumerate() {
                if !c.first().is_some_and(serde_json::Value::is_string) {
                    return Err(format!("calls[{k}]: must start with a method name"));
                }
            }
            Ok(())
        }
        (None, Some(_)) => Ok(()),
    }
}

/// True for the fixture form `{"$undefined": true}`.
fn is_undefined(v: &serde_json::Value) -> bool {
    v.as_object().is_some_and(|m| {
        m.len() == 1 && m.get("$undefined") == Some(&serde_json::Value::Bool(true))
    })
}

/// The Fusion values of a request's `data` as the server holds them (alias
/// → string), which `onFusion` is given: strings as they are, other values
/// as their JSON text; `{"$undefined": true}` entries are left out.
fn fusion_entries(data: &serde_json::Map<String, serde_json::Value>) -> Vec<(String, String)> {
    let feed = match data.get("fusion") {
        Some(v) if is_undefined(v) => return Vec::new(),
        Some(serde_json::Value::Object(feed)) => feed,
        _ => return Vec::new(),
    };
    feed.iter()
        .filter(|(_, v)| !is_undefined(v))
        .map(|(alias, v)| {
            let body = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (alias.clone(), body)
        })
        .collect()
}

/// The providers a fixture's `weights` routes name (`{"providers": [...]}`
/// in each route's JSON text or object): the app sees them, as the server
/// shows an app the providers its endpoint's routes name.
fn routed_providers(data: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let Some(serde_json::Value::Object(routes)) = data.get("weights") else {
        return Vec::new();
    };
    let mut out: Vec<String> = routes
        .values()
        .filter_map(|route| match route {
            serde_json::Value::String(text) => serde_json::from_str(text).ok(),
            other => Some(other.clone()),
        })
        .filter_map(|route: serde_json::Value| route.get("providers").cloned())
        .filter_map(|p| p.as_array().cloned())
        .flatten()
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// JS run before the app, as its own script: pins `Math.random` and `Date`
/// for one test.
fn injection(test: &TestCase) -> Option<String> {
    let mut js = String::new();
    if let Some(values) = &test.random {
        let list = serde_json::to_string(values).unwrap_or_else(|_| "[0]".into());
        js.push_str(&format!(
            "(function (values) {{ var i = 0; Math.random = function random() {{ var v = values[Math.min(i, values.length - 1)]; i += 1; return v; }}; }})({list});\n"
        ));
    }
    if let Some(now) = test.now_ms {
        js.push_str(&format!(
            "(function (pinned) {{ var RealDate = Date;
  var FakeDate = function Date(y, m, d, h, mi, s, ms) {{
    var n = arguments.length;
    if (!(this instanceof FakeDate)) {{ return new RealDate(pinned).toString(); }}
    if (n === 0) {{ return new RealDate(pinned); }}
    if (n === 1) {{ return new RealDate(y); }}
    return new RealDate(y, m, n > 2 ? d : 1, n > 3 ? h : 0, n > 4 ? mi : 0, n > 5 ? s : 0, n > 6 ? ms : 0);
  }};
  FakeDate.prototype = RealDate.prototype;
  FakeDate.now = function now() {{ return pinned; }};
  FakeDate.UTC = RealDate.UTC;
  FakeDate.parse = RealDate.parse;
  Date = FakeDate;
}})({now});\n"
        ));
    }
    (!js.is_empty()).then_some(js)
}

/// One fixture's app, ready to be instantiated per test.
struct App<'a> {
    fixture: &'a Fixture,
    name: String,
    path: PathBuf,
    source: Arc<str>,
    settings: AppSettings,
    config: &'a Config,
    geo: Option<&'a GeoDb>,
}

impl App<'_> {
    /// Runs one test on a fresh instance (`version` tells instances apart).
    fn run_test(&self, test: &TestCase, version: u64) -> Result<(), String> {
        let code = AppCode {
            name: self.name.clone(),
            path: self.path.clone(),
            source: self.source.clone(),
            version,
            budget: self.settings.budget,
            setup: Some(TestScripts {
                before: injection(test).map(Arc::from),
                after: self.fixture.setup.as_deref().map(Arc::from),
            }),
            // As the server runs it: a proven-stateless app shares the
            // snapshot's probe objects, frozen.
            shared_data: crate::openmix::purity::analyse(&self.source).is_ok(),
            providers: self.settings.providers.clone().into(),
        };
        let init_data = Arc::new(DataSnapshot {
            providers: self.config.providers.clone(),
            ..DataSnapshot::default()
        });
        let (mut app, meta) = AppInstance::load(&code, &init_data, self.fixture.providers.clone())
            .map_err(|e| describe(&e))?;
        if let Some(want) = test
            .expect_init
            .as_ref()
            .and_then(|e| e.required_providers.as_ref())
            && *want != meta.providers
        {
            return Err(format!(
                "init: required providers: expected {want:?}, got {:?}",
                meta.providers
            ));
        }
        // The snapshot version changes when the Fusion values do, as the
        // server's does, so the engine tells `onFusion` of the new or
        // changed ones before the request.
        let mut fusion_version = 0;
        let mut last_fusion: Option<Vec<(String, String)>> = None;
        for (i, r) in test.requests.iter().enumerate() {
            let fusion = fusion_entries(&r.data);
            if last_fusion.as_ref() != Some(&fusion) {
                fusion_version += 1;
                last_fusion = Some(fusion.clone());
            }
            let data = Arc::new(DataSnapshot {
                version: fusion_version,
                fusion,
                providers: self.config.providers.clone(),
                routed: std::iter::once((self.name.clone(), routed_providers(&r.data))).collect(),
                ..DataSnapshot::default()
            });
            let (request, fixture) = self.request(r, i)?;
            let out = app.decide(
                request,
                &data,
                CallOptions {
                    record: true,
                    fixture: Some(fixture),
                    ..CallOptions::default()
                },
            );
            self.check(&r.expect, out)
                .map_err(|e| format!("request {}: {e}", i + 1))?;
        }
        Ok(())
    }

    /// The request and fixture values of request `i`.
    fn request(&self, r: &TestRequest, i: usize) -> Result<(Request, FixtureRequest), String> {
        let mut fields = serde_json::Map::new();
        if let (Some(ip), Some(geo)) = (r.geo_ip, self.geo) {
            let g = geo.lookup(ip);
            let ip = serde_json::Value::from(ip.to_string());
            for (k, v) in [
                ("asn", serde_json::Value::from(g.asn)),
                ("market", g.market.clone().into()),
                ("country", g.country.clone().into()),
                ("region", g.region.clone().into()),
                ("state", g.state.clone().into()),
                ("ip_address", ip.clone()),
            ] {
                fields.insert(k.to_string(), v.clone());
                fields.insert(format!("resolver_{k}"), v);
            }
        } else if r.geo_ip.is_some() {
            return Err(format!(
                "request {}: geo_ip needs GeoIP databases (see --geo-city, --geo-asn)",
                i + 1
            ));
        }
        fields.extend(r.request.clone());
        let fixture = FixtureRequest {
            fields,
            probes: r.probes.clone(),
            data: r.data.clone(),
        };
        let request = Request {
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            query: r
                .query
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ..Request::default()
        };
        Ok((request, fixture))
    }

    /// Compares what one request did with its `expect`.
    fn check(
        &self,
        want: &Expect,
        out: Result<crate::openmix::CallOutcome, AppError>,
    ) -> Result<(), String> {
        if let Some(calls) = &want.calls {
            let got = match out {
                Ok(o) => o.calls,
                Err(AppError::NoDecision) => Vec::new(),
                Err(e) => return Err(describe(&e)),
            };
            return compare_calls(calls, &got);
        }
        let d = out.map_err(|e| describe(&e))?.decision;
        let cname = d.answers.iter().find_map(|a| match a {
            crate::openmix::Answer::Cname(c) => Some(c.clone()),
            _ => None,
        });
        // The TTL the server answers with: the app's, else its settings',
        // else the zone's.
        let ttl = Some(
            d.ttl
                .or(self.settings.ttl)
                .unwrap_or(self.config.default_ttl()),
        );
        let mut diffs = Vec::new();
        if want.provider.is_some() && want.provider != d.provider {
            diffs.push(format!(
                "provider: expected {:?}, got {:?}",
                want.provider, d.provider
            ));
        }
        if want.cname.is_some() && want.cname != cname {
            diffs.push(format!("cname: expected {:?}, got {:?}", want.cname, cname));
        }
        if want.ttl.is_some() && want.ttl != ttl {
            diffs.push(format!("ttl: expected {:?}, got {ttl:?}", want.ttl));
        }
        if want.reason.is_some() && want.reason != d.reason {
            diffs.push(format!(
                "reason: expected {:?}, got {:?}",
                want.reason, d.reason
            ));
        }
        if want.status.is_some() && want.status != d.status {
            diffs.push(format!(
                "status: expected {:?}, got {:?}",
                want.status, d.status
            ));
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(diffs.join("; "))
        }
    }
}

fn describe(e: &AppError) -> String {
    match e.line() {
        Some(l) => format!("{e} (app line {l})"),
        None => e.to_string(),
    }
}

/// JSON equality with numbers compared by value (20 equals 20.0).
pub fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn show(call: &[serde_json::Value]) -> String {
    serde_json::to_string(call).unwrap_or_default()
}

/// Compares the expected call list with what the app did; the error names
/// the first difference.
fn compare_calls(want: &[Vec<serde_json::Value>], got: &[RecordedCall]) -> Result<(), String> {
    let got: Vec<Vec<serde_json::Value>> = got
        .iter()
        .map(|c| {
            std::iter::once(serde_json::Value::from(c.method))
                .chain(c.args.iter().cloned())
                .collect()
        })
        .collect();
    for i in 0..want.len().max(got.len()) {
        match (want.get(i), got.get(i)) {
            (Some(w), Some(g))
                if w.len() == g.len() && w.iter().zip(g).all(|(a, b)| same(a, b)) => {}
            (Some(w), Some(g)) => {
                return Err(format!(
                    "call {} differs: expected {}, got {}",
                    i + 1,
                    show(w),
                    show(g)
                ));
            }
            (Some(w), None) => {
                return Err(format!(
                    "call {} missing: expected {}, the app made no more calls",
                    i + 1,
                    show(w)
                ));
            }
            (None, Some(g)) => return Err(format!("call {} unexpected: got {}", i + 1, show(g))),
            (None, None) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_entries_are_strings_in_fixture_order() {
        let data = serde_json::json!({"fusion": {"b": "{\"u\":1}", "a": {"u": 2}, "c": {"$undefined": true}}});
        let data = data.as_object().unwrap();
        assert_eq!(
            fusion_entries(data),
            vec![
                ("b".to_string(), "{\"u\":1}".to_string()),
                ("a".to_string(), "{\"u\":2}".to_string())
            ]
        );
        let none = serde_json::json!({"fusion": {"$undefined": true}, "sonar": {"a": "x"}});
        assert!(fusion_entries(none.as_object().unwrap()).is_empty());
    }

    #[test]
    fn special_values_are_checked_everywhere() {
        use crate::openmix::needs_special;
        assert_eq!(
            needs_special(&serde_json::json!({"a": [1, "x"]})),
            Ok(false)
        );
        assert_eq!(
            needs_special(&serde_json::json!({"a": [{"$number": "-Infinity"}]})),
            Ok(true)
        );
        let bad = needs_special(&serde_json::json!([{"$undefined": true}, {"$number": "bogus"}]));
        assert_eq!(
            bad.unwrap_err().to_string(),
            "bad special value {\"$number\":\"bogus\"}: \"$number\" must be \"Infinity\", \"-Infinity\" or \"NaN\""
        );
    }
}
