//! The Openmix host objects: `config`, `request` and `response`.
//!
//! Each JS context gets these three objects once, when it is built; they are
//! reused for every call (the notes in `shared/notes/js-host.md` measured
//! reused objects with native getters as the fastest host design). The
//! objects hold no data themselves: their native functions read and write the
//! thread's current [`CallState`] (or [`InitState`] while `init` runs). One
//! thread runs one call at a time, so a thread-local slot is all the plumbing
//! needed, and nothing is allocated per call except what the app asks for.
//!
//! Discipline: a native function never holds the slot borrowed while it runs
//! anything that can call back into JS (`to_string`, `to_json` on app values),
//! so an app cannot re-enter a borrowed slot.

use std::cell::RefCell;
use std::sync::Arc;

use boa_engine::object::FunctionObjectBuilder;
use boa_engine::object::ObjectInitializer;
use boa_engine::property::Attribute;
use boa_engine::{
    Context, JsError, JsNativeError, JsObject, JsResult, JsString, JsValue, NativeFunction,
    js_string,
};

use super::data::{DataSnapshot, ProviderScope, distance_km};
use super::decision::{
    Answer, Decision, MAX_ADDRESS_RECORDS, ProviderHost, check_hostname, classify_host,
};
use super::reads::{ReadKey, ReadLog, ReadValue, ValueRef, declared_id, rows_value};
use super::request::Request;

/// What `init(config)` declared.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct AppMeta {
    /// Aliases passed to `config.requireProvider`, in call order.
    pub providers: Vec<String>,
    /// Hosts passed to `config.enableCors` (comma list or `*`).
    pub cors: Option<String>,
    /// Whether `config.enableProximityData` was called with a true flag.
    pub proximity: bool,
}

/// One response method call, recorded for `switchyard test`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedCall {
    /// Method name, e.g. `respond`.
    pub method: &'static str,
    /// Arguments as JSON.
    pub args: Vec<serde_json::Value>,
}

/// Replaces what `request` fields and data return, for fixtures: a field
/// absent from `fields` is `undefined`, as is a probe or feed not listed.
#[derive(Debug, Clone, Default)]
pub struct FixtureRequest {
    /// Request field name → value.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Probe name → value `getProbe` returns.
    pub probes: serde_json::Map<String, serde_json::Value>,
    /// Feed name → value `getData` returns.
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// The state of the `onRequest` call running on this thread.
pub struct CallState {
    /// The request being decided.
    pub request: Request,
    /// The app deciding (its endpoint's routes are its `getData('weights')`).
    pub app: Arc<str>,
    /// Data snapshot the app reads.
    pub data: Arc<DataSnapshot>,
    /// What the app has decided so far.
    pub decision: Decision,
    /// Whether the app enabled proximity data.
    pub proximity: bool,
    /// Providers the app declared (`config.requireProvider` and its
    /// settings' `providers`): with its endpoint's routed providers, all
    /// the app sees of provider data ([`ProviderScope`]); each gets `{}`
    /// from `getProbe` when the probe has data but none for it.
    pub declared: Arc<[String]>,
    /// Response calls, when recording for tests.
    pub calls: Option<Vec<RecordedCall>>,
    /// Fixture values that replace the request's, for tests.
    pub fixture: Option<FixtureRequest>,
    /// What the app read, when the decision may be memoised.
    pub reads: Option<ReadLog>,
    /// Shared `getProbe` inner objects, when the app may share them
    /// ([`super::AppCode::shared_data`]).
    pub probes: Option<ProbeCache>,
    /// `Math.random` draws recorded or given back (`None`: live draws, the
    /// common case, which then costs nothing more).
    pub random: Option<RandomState>,
}

/// The `Math.random` draws of one call, when they are recorded or given
/// back ([`super::RandomMode`]).
#[derive(Debug)]
pub struct RandomState {
    /// Draws made (recording) or to give back (replaying).
    draws: Vec<f64>,
    /// Replaying: the next draw to give back. Recording: `None`.
    next: Option<usize>,
    /// Replaying ran past the end and drew live.
    ran_out: bool,
}

impl RandomState {
    /// The state for `mode`; `None` for live draws.
    pub fn new(mode: super::RandomMode) -> Option<RandomState> {
        match mode {
            super::RandomMode::Live => None,
            super::RandomMode::Record => Some(RandomState {
                draws: Vec::new(),
                next: None,
                ran_out: false,
            }),
            super::RandomMode::Replay(draws) => Some(RandomState {
                draws: draws.to_vec(),
                next: Some(0),
                ran_out: false,
            }),
        }
    }

    /// The recorded draws (empty when replaying) and whether a replay ran
    /// out of draws.
    pub fn finish(self) -> (Vec<f64>, bool) {
        match self.next {
            None => (self.draws, false),
            Some(_) => (Vec::new(), self.ran_out),
        }
    }
}

/// The inner objects of `getProbe` results (`{avail: 99}` per provider),
/// built once per data snapshot and shared, frozen, by the decisions of one
/// app instance that is proven never to write to them. Each call still gets
/// a fresh outer object, which such an app may change.
#[derive(Default)]
pub struct ProbeCache {
    /// Snapshot (version and address) the objects were built from.
    snapshot: (u64, usize),
    /// (probe name, table identity) → (alias, inner object), in row order.
    tables: hashbrown::HashMap<(Box<str>, usize), SharedRows>,
}

/// Tables one instance keeps shared objects for before it starts over (an
/// app may name probes from request data).
const PROBE_CACHE_TABLES: usize = 64;

/// A [`ProbeCache`] key, borrowed: looked up without allocating. Hashes
/// as the owned tuple does (its fields in order).
#[derive(Hash)]
struct TableKey<'a>(&'a str, usize);

impl hashbrown::Equivalent<(Box<str>, usize)> for TableKey<'_> {
    fn equivalent(&self, key: &(Box<str>, usize)) -> bool {
        *key.0 == *self.0 && key.1 == self.1
    }
}

/// One probe table's rows as shared JS objects: alias and inner object.
type SharedRows = Vec<(JsString, JsObject)>;

/// The state of the `init` call running on this thread.
pub struct InitState {
    /// What the app declared so far.
    pub meta: AppMeta,
    /// Configured providers, for `config.getProviders()`.
    pub data: Arc<DataSnapshot>,
    /// The providers the app's settings give it (sidecar `providers`):
    /// when any, `config.getProviders()` lists only those.
    pub assigned: Arc<[String]>,
    /// Overrides `getProviders()` for tests.
    pub providers_override: Option<serde_json::Value>,
}

thread_local! {
    static CALL: RefCell<Option<CallState>> = const { RefCell::new(None) };
    static INIT: RefCell<Option<InitState>> = const { RefCell::new(None) };
    /// Set when `Math.random` runs outside a decision (top level, `init`).
    static RANDOM_AT_LOAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Notes that the app called `Math.random`: the current decision is not
/// stored; outside a decision, the app version is not memoised at all.
/// When the call replays logged draws, the next one is returned: `None`
/// asks for a live draw (then given to [`record_draw`]).
pub fn mark_random() -> Option<f64> {
    let (in_call, replayed) = CALL.with_borrow_mut(|c| match c.as_mut() {
        Some(state) => {
            if let Some(r) = state.reads.as_mut() {
                r.impure = true;
            }
            let replayed = state.random.as_mut().and_then(|r| {
                let i = r.next?;
                match r.draws.get(i) {
                    Some(v) => {
                        r.next = Some(i + 1);
                        Some(*v)
                    }
                    None => {
                        r.ran_out = true;
                        None
                    }
                }
            });
            (true, replayed)
        }
        None => (false, None),
    });
    if !in_call {
        RANDOM_AT_LOAD.set(true);
    }
    replayed
}

/// Keeps a live `Math.random` draw of the current call, when its draws
/// are recorded.
pub fn record_draw(v: f64) {
    CALL.with_borrow_mut(|c| {
        if let Some(r) = c.as_mut().and_then(|s| s.random.as_mut())
            && r.next.is_none()
        {
            r.draws.push(v);
        }
    });
}

/// Notes that the current decision logged: a memoised answer would not.
fn mark_logged() {
    CALL.with_borrow_mut(|c| {
        if let Some(r) = c.as_mut().and_then(|s| s.reads.as_mut()) {
            r.impure = true;
        }
    });
}

/// Whether `Math.random` ran outside a decision on this thread since the
/// last call; clears the flag.
pub fn take_random_at_load() -> bool {
    RANDOM_AT_LOAD.replace(false)
}

/// Records one read of the current decision, when it is being logged.
fn log_read(key: impl FnOnce() -> ReadKey, value: impl FnOnce() -> ReadValue) {
    CALL.with_borrow_mut(|c| {
        if let Some(r) = c.as_mut().and_then(|s| s.reads.as_mut()) {
            r.reads.push((key(), value()));
        }
    });
}

/// Makes `state` the current call on this thread.
pub fn begin_call(state: CallState) {
    CALL.with_borrow_mut(|c| *c = Some(state));
}

/// Ends the current call and returns its state.
pub fn end_call() -> Option<CallState> {
    CALL.with_borrow_mut(Option::take)
}

/// Makes `state` the current `init` on this thread.
pub fn begin_init(state: InitState) {
    INIT.with_borrow_mut(|c| *c = Some(state));
}

/// Ends the current `init` and returns its state.
pub fn end_init() -> Option<InitState> {
    INIT.with_borrow_mut(Option::take)
}

/// The global names the host objects are bound to in every context.
pub const REQUEST_GLOBAL: &str = "__switchyard_request";
/// See [`REQUEST_GLOBAL`].
pub const RESPONSE_GLOBAL: &str = "__switchyard_response";
/// See [`REQUEST_GLOBAL`].
pub const CONFIG_GLOBAL: &str = "__switchyard_config";

fn type_error(msg: impl Into<String>) -> JsError {
    JsNativeError::typ().with_message(msg.into()).into()
}

/// A JS number, stored as an integer when it is one, so that it prints
/// and serialises as `38`, not `38.0`.
fn number(v: f64) -> JsValue {
    if v.fract() == 0.0 && v.abs() < 2_147_483_648.0 {
        JsValue::from(v as i32)
    } else {
        JsValue::from(v)
    }
}

/// JSON with integral floats written as integers (boa's `to_json` keeps
/// every number as a float).
pub fn tidy_json(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(a) => Value::Array(a.into_iter().map(tidy_json).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, tidy_json(v))).collect()),
        other => other,
    }
}

/// A writable, enumerable, configurable data property: what a plain
/// assignment creates.
fn data_property(value: impl Into<JsValue>) -> boa_engine::property::PropertyDescriptor {
    boa_engine::property::PropertyDescriptor::builder()
        .value(value)
        .writable(true)
        .enumerable(true)
        .configurable(true)
        .build()
}

fn js_str(s: &str) -> JsValue {
    JsValue::from(JsString::from(s))
}

fn arg(args: &[JsValue], i: usize) -> JsValue {
    args.get(i).cloned().unwrap_or_default()
}

/// A string argument, or a `TypeError` naming the method and parameter.
fn string_arg(args: &[JsValue], i: usize, method: &str, param: &str) -> JsResult<String> {
    match args.get(i).and_then(JsValue::as_string) {
        Some(s) => Ok(s.to_std_string_escaped()),
        None => Err(type_error(format!(
            "{method}: {param} must be a string, got {}",
            args.get(i)
                .map_or("undefined".to_string(), |v| v.type_of().to_string())
        ))),
    }
}

fn with_call<R>(method: &str, f: impl FnOnce(&mut CallState) -> JsResult<R>) -> JsResult<R> {
    CALL.with(|c| match c.try_borrow_mut() {
        Ok(mut guard) => match guard.as_mut() {
            Some(state) => f(state),
            None => Err(type_error(format!(
                "{method} can only be called while a request is decided"
            ))),
        },
        Err(_) => Err(type_error(format!("{method} called re-entrantly"))),
    })
}

fn record(state: &mut CallState, method: &'static str, args: Vec<serde_json::Value>) {
    if let Some(calls) = state.calls.as_mut() {
        calls.push(RecordedCall { method, args });
    }
}

fn function(ctx: &mut Context, f: NativeFunction, name: &str, len: usize) -> JsValue {
    FunctionObjectBuilder::new(ctx.realm(), f)
        .name(JsString::from(name))
        .length(len)
        .build()
        .into()
}

// ---------------------------------------------------------------- request

/// `request` properties, in the Openmix API's order.
/// The request fields of the Openmix API, in its order.
pub const REQUEST_FIELDS: [&str; 14] = [
    "asn",
    "market",
    "country",
    "region",
    "state",
    "ip_address",
    "resolver_asn",
    "resolver_market",
    "resolver_country",
    "resolver_region",
    "resolver_state",
    "resolver_ip_address",
    "hostname_prefix",
    "query_type",
];

/// The value of request field `index` (see `REQUEST_FIELDS`) for `r`: what
/// the getter returns and what the memo compares.
pub fn field_ref(index: usize, r: &Request) -> ValueRef<'_> {
    match index {
        0 => ValueRef::Num(r.client.asn),
        1 => ValueRef::Str(&r.client.market),
        2 => ValueRef::Str(&r.client.country),
        3 => ValueRef::Str(&r.client.region),
        4 => ValueRef::Str(&r.client.state),
        5 => ValueRef::Ip(r.ip_address),
        6 => ValueRef::Num(r.resolver.asn),
        7 => ValueRef::Str(&r.resolver.market),
        8 => ValueRef::Str(&r.resolver.country),
        9 => ValueRef::Str(&r.resolver.region),
        10 => ValueRef::Str(&r.resolver.state),
        11 => ValueRef::Ip(r.resolver_ip_address),
        12 => ValueRef::Str(&r.hostname_prefix),
        _ => ValueRef::Str(&r.query_type),
    }
}

/// [`field_ref`], owned.
pub fn field_value(index: usize, r: &Request) -> ReadValue {
    field_ref(index, r).into_owned()
}

fn request_field(index: usize, ctx: &mut Context) -> JsResult<JsValue> {
    enum Out {
        Value(ReadValue),
        Json(serde_json::Value),
        Undefined,
    }
    let out = CALL.with_borrow_mut(|c| {
        let Some(state) = c.as_mut() else {
            return Out::Undefined;
        };
        if let Some(fx) = &state.fixture {
            return match fx.fields.get(REQUEST_FIELDS[index]) {
                Some(v) => Out::Json(v.clone()),
                None => Out::Undefined,
            };
        }
        let v = field_value(index, &state.request);
        if let Some(r) = state.reads.as_mut() {
            r.reads.push((ReadKey::Field(index as u8), v.clone()));
        }
        Out::Value(v)
    });
    Ok(match out {
        Out::Value(ReadValue::Str(s)) => js_str(&s),
        Out::Value(ReadValue::Num(n)) => number(f64::from(n)),
        Out::Value(ReadValue::Ip(ip)) => js_str(&ip.map(|i| i.to_string()).unwrap_or_default()),
        Out::Value(_) => JsValue::undefined(),
        Out::Json(v) => super::fixture_value(&v, ctx)?,
        Out::Undefined => JsValue::undefined(),
    })
}

/// The rows `getProbe(name)` returns for `request`: what the host builds
/// its object from and what the memo compares.
pub fn probe_rows_for(
    name: &str,
    request: &Request,
    data: &DataSnapshot,
    scope: ProviderScope<'_>,
    proximity: bool,
) -> Vec<(String, Option<f64>)> {
    let mut rows = Vec::new();
    each_probe_row(name, request, data, scope, proximity, |a, v| {
        rows.push((a.to_string(), v));
    });
    rows
}

/// Calls `f` with each row `getProbe(name)` returns for `request`, in
/// order, without copying the snapshot's table: the rows of providers in
/// the app's `scope` only.
pub fn each_probe_row(
    name: &str,
    request: &Request,
    data: &DataSnapshot,
    scope: ProviderScope<'_>,
    proximity: bool,
    mut f: impl FnMut(&str, Option<f64>),
) {
    let computed;
    let rows: &[(String, Option<f64>)] = if name == "proximity_dist" {
        computed = proximity_rows(request, data, proximity);
        &computed
    } else {
        data.probe_rows(name, &request.client)
            .map_or(&[], Vec::as_slice)
    };
    for (alias, value) in rows {
        if scope.sees(alias) {
            f(alias, *value);
        }
    }
    // The Openmix API: "If a provider does not have the specified
    // value, an empty object will be returned for the provider." Only
    // when the probe has data at all, so "no data" stays `{}`.
    if !rows.is_empty() {
        for alias in scope.declared {
            if !rows.iter().any(|(a, _)| a == alias) {
                f(alias, None);
            }
        }
    }
}

/// What the memo compares for `getProbe(name)`: the identity of the
/// snapshot's table the rows come from and of the declared providers they
/// are cut to and padded with (the routed part of the scope is fixed by the
/// snapshot, and a memo holds one snapshot), or, for `proximity_dist`, the
/// rows computed for this client.
pub fn probe_read(
    name: &str,
    request: &Request,
    data: &DataSnapshot,
    scope: ProviderScope<'_>,
    proximity: bool,
) -> ReadValue {
    if name == "proximity_dist" {
        return rows_value(&probe_rows_for(name, request, data, scope, proximity));
    }
    ReadValue::Table(data_table(name, request, data), declared_id(scope.declared))
}

fn get_probe(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let name = string_arg(args, 0, "getProbe", "probe_name")?;
    let fixture = CALL.with_borrow(|c| {
        c.as_ref().and_then(|s| {
            let fx = s.fixture.as_ref()?;
            Some((
                fx.probes.get(&name).map(|v| scoped_fixture(v, s)),
                s.probes.is_some(),
            ))
        })
    });
    if let Some((v, shared)) = fixture {
        let Some(v) = v else {
            return Ok(JsValue::undefined());
        };
        let value = super::fixture_value(&v, ctx)?;
        // As the server would hand it to an app that shares the snapshot's
        // objects: the inner objects frozen, so `switchyard test` shows a
        // write to them as the server would.
        if shared && let Some(outer) = value.as_object() {
            for key in outer.own_property_keys(ctx)? {
                if let Some(inner) = outer.get(key, ctx)?.as_object() {
                    inner.set_integrity_level(boa_engine::object::IntegrityLevel::Frozen, ctx)?;
                }
            }
        }
        return Ok(value);
    }
    // Building the objects runs no app code, so the slot may stay borrowed
    // meanwhile (and the snapshot's rows need no copy).
    CALL.with_borrow_mut(|c| {
        // Fresh, ordinary objects: inserting the properties directly is
        // what CreateDataProperty amounts to on them, without its generic
        // checks.
        let out = JsObject::with_object_proto(ctx.intrinsics());
        let Some(state) = c.as_mut() else {
            return Ok(out.into());
        };
        let scope = state.data.scope(&state.app, &state.declared);
        if let Some(r) = state.reads.as_mut() {
            let value = probe_read(&name, &state.request, &state.data, scope, state.proximity);
            r.reads.push((ReadKey::Probe(name.as_str().into()), value));
        }
        let table = data_table(&name, &state.request, &state.data);
        if table == 0 && name != "proximity_dist" {
            // No such table: no rows, and so no padding either.
            return Ok(out.into());
        }
        if name != "proximity_dist"
            && let Some(mut cache) = state.probes.take()
        {
            let filled = cache.rows(&name, table, state, ctx).map(|rows| {
                for (alias, inner) in rows {
                    out.insert_property(alias.clone(), data_property(inner.clone()));
                }
            });
            state.probes = Some(cache);
            filled?;
            return Ok(out.into());
        }
        let key = JsString::from(name.as_str());
        each_probe_row(
            &name,
            &state.request,
            &state.data,
            scope,
            state.proximity,
            |alias, value| {
                let inner = JsObject::with_object_proto(ctx.intrinsics());
                if let Some(v) = value {
                    inner.insert_property(key.clone(), data_property(number(v)));
                }
                out.insert_property(JsString::from(alias), data_property(inner));
            },
        );
        Ok(out.into())
    })
}

/// A fixture's probe or feed value as the app sees it: an object keyed by
/// provider is cut to the app's scope, as the server cuts the snapshot's
/// rows; any other value (a bare string for a broken feed) is given as is.
fn scoped_fixture(v: &serde_json::Value, state: &CallState) -> serde_json::Value {
    match v {
        // (`{"$undefined": true}` and `{"$number": ...}` stand for one value.)
        serde_json::Value::Object(rows)
            if !rows.contains_key("$undefined") && !rows.contains_key("$number") =>
        {
            let scope = state.data.scope(&state.app, &state.declared);
            serde_json::Value::Object(
                rows.iter()
                    .filter(|(alias, _)| scope.sees(alias))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )
        }
        other => other.clone(),
    }
}

/// The identity of the snapshot table `getProbe(name)` reads for this
/// request (0: none).
fn data_table(name: &str, request: &Request, data: &DataSnapshot) -> usize {
    data.probe_rows(name, &request.client)
        .map_or(0, |rows| rows as *const Vec<(String, Option<f64>)> as usize)
}

impl ProbeCache {
    /// The shared rows of probe `name` from `table`, built on first use
    /// for this snapshot.
    fn rows(
        &mut self,
        name: &str,
        table: usize,
        state: &CallState,
        ctx: &mut Context,
    ) -> JsResult<&[(JsString, JsObject)]> {
        let snapshot = (
            state.data.version,
            &*state.data as *const DataSnapshot as usize,
        );
        if self.snapshot != snapshot || self.tables.len() >= PROBE_CACHE_TABLES {
            self.tables.clear();
            self.snapshot = snapshot;
        }
        if !self.tables.contains_key(&TableKey(name, table)) {
            let prop = JsString::from(name);
            let mut rows = Vec::new();
            let mut built = Ok(());
            each_probe_row(
                name,
                &state.request,
                &state.data,
                state.data.scope(&state.app, &state.declared),
                state.proximity,
                |alias, value| {
                    let inner = JsObject::with_object_proto(ctx.intrinsics());
                    if let Some(v) = value {
                        inner.insert_property(prop.clone(), data_property(number(v)));
                    }
                    if let Err(e) =
                        inner.set_integrity_level(boa_engine::object::IntegrityLevel::Frozen, ctx)
                    {
                        built = Err(e);
                    }
                    rows.push((JsString::from(alias), inner));
                },
            );
            built?;
            self.tables.insert((name.into(), table), rows);
        }
        Ok(self
            .tables
            .get(&TableKey(name, table))
            .map_or(&[], Vec::as_slice))
    }
}

/// Distances from the client to every provider with a configured location,
/// when the app enabled proximity data and the client has coordinates.
fn proximity_rows(
    request: &Request,
    data: &DataSnapshot,
    proximity: bool,
) -> Vec<(String, Option<f64>)> {
    let loc = &request.client;
    let (Some(lat), Some(lon)) = (loc.latitude, loc.longitude) else {
        return Vec::new();
    };
    if !proximity {
        return Vec::new();
    }
    data.providers
        .iter()
        .filter_map(|(alias, p)| {
            let d = distance_km((lat, lon), (p.latitude?, p.longitude?));
            Some((alias.clone(), Some(d.round())))
        })
        .collect()
}

fn get_data(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let name = string_arg(args, 0, "getData", "feed_name")?;
    let fixture = CALL.with_borrow(|c| {
        c.as_ref().and_then(|s| {
            let fx = s.fixture.as_ref()?;
            Some(fx.data.get(&name).map(|v| match name.as_str() {
                "weights" => v.clone(),
                _ => scoped_fixture(v, s),
            }))
        })
    });
    if let Some(v) = fixture {
        return match v {
            Some(v) => super::fixture_value(&v, ctx),
            None => Ok(JsValue::undefined()),
        };
    }
    // As in getProbe: building the object runs no app code. A fresh,
    // mutable object per call: apps parse values in place and delete the
    // ones that fail (the seed's parseFusionData does).
    CALL.with_borrow(|c| {
        let Some(state) = c.as_ref() else {
            return Ok(JsValue::undefined());
        };
        let rows: &[(String, String)] = match name.as_str() {
            "fusion" => &state.data.fusion,
            "sonar" => &state.data.sonar,
            // Switchyard additions: the provider inventory, and the
            // weighted routes of this app's endpoint.
            "inventory" => &state.data.inventory,
            "weights" => state
                .data
                .weights
                .get(&*state.app)
                .map_or(&[], Vec::as_slice),
            _ => return Ok(JsValue::undefined()),
        };
        // Provider feeds are cut to the app's scope; its own routes
        // (`weights`, keyed by route id) are all its own.
        let scope = (name != "weights").then(|| state.data.scope(&state.app, &state.declared));
        let out = JsObject::with_object_proto(ctx.intrinsics());
        for (alias, body) in rows {
            if scope.is_none_or(|s| s.sees(alias)) {
                out.insert_property(JsString::from(alias.as_str()), data_property(js_str(body)));
            }
        }
        Ok(out.into())
    })
}

fn get_header(_: &JsValue, args: &[JsValue], _: &mut Context) -> JsResult<JsValue> {
    let name = string_arg(args, 0, "getHeader", "header_name")?;
    let value = CALL.with_borrow(|c| {
        c.as_ref()
            .and_then(|s| s.request.header(&name).map(str::to_string))
    });
    let out = value.as_deref().map_or(JsValue::null(), js_str);
    log_read(
        || ReadKey::Header(name.as_str().into()),
        || ReadValue::Opt(value),
    );
    Ok(out)
}

fn get_query_string(_: &JsValue, args: &[JsValue], _: &mut Context) -> JsResult<JsValue> {
    let name = string_arg(args, 0, "getQueryString", "query_name")?;
    let value = CALL.with_borrow(|c| {
        c.as_ref()
            .and_then(|s| s.request.query_value(&name).map(str::to_string))
    });
    let out = value.as_deref().map_or(JsValue::null(), js_str);
    log_read(
        || ReadKey::Query(name.as_str().into()),
        || ReadValue::Opt(value),
    );
    Ok(out)
}

/// Builds the reusable `request` object: native getters for the fields and
/// the four methods.
pub fn build_request(ctx: &mut Context) -> JsObject {
    let mut getters = Vec::with_capacity(REQUEST_FIELDS.len());
    for (i, name) in REQUEST_FIELDS.iter().enumerate() {
        let f = NativeFunction::from_copy_closure(move |_, _, ctx| request_field(i, ctx));
        let getter = FunctionObjectBuilder::new(ctx.realm(), f)
            .name(JsString::from(format!("get {name}").as_str()))
            .build();
        getters.push((*name, getter));
    }
    let mut init = ObjectInitializer::new(ctx);
    for (name, getter) in getters {
        init.accessor(
            JsString::from(name),
            Some(getter),
            None,
            Attribute::ENUMERABLE,
        );
    }
    init.function(
        NativeFunction::from_fn_ptr(get_probe),
        js_string!("getProbe"),
        1,
    )
    .function(
        NativeFunction::from_fn_ptr(get_data),
        js_string!("getData"),
        1,
    )
    .function(
        NativeFunction::from_fn_ptr(get_header),
        js_string!("getHeader"),
        1,
    )
    .function(
        NativeFunction::from_fn_ptr(get_query_string),
        js_string!("getQueryString"),
        1,
    )
    .build()
}

// ---------------------------------------------------------------- response

fn respond(_: &JsValue, args: &[JsValue], _: &mut Context) -> JsResult<JsValue> {
    let provider = string_arg(args, 0, "respond", "provider_name")?;
    let host = string_arg(args, 1, "respond", "ip_or_host")?;
    let answer = classify_host(&host).map_err(|e| type_error(format!("respond: {e}")))?;
    with_call("respond", |s| {
        record(s, "respond", vec![provider.clone().into(), host.into()]);
        s.decision.provider = Some(provider);
        s.decision.answers = vec![answer];
        s.decision.empty = false;
        Ok(JsValue::undefined())
    })
}

fn respond_empty(_: &JsValue, _: &[JsValue], _: &mut Context) -> JsResult<JsValue> {
    with_call("respondEmpty", |s| {
        record(s, "respondEmpty", vec![]);
        s.decision.answers.clear();
        s.decision.empty = true;
        Ok(JsValue::undefined())
    })
}

fn add_cname(_: &JsValue, args: &[JsValue], _: &mut Context) -> JsResult<JsValue> {
    let name = string_arg(args, 0, "addCName", "cname")?;
    check_hostname(&name).map_err(|e| type_error(format!("addCName: {e}")))?;
    with_call("addCName", |s| {
        record(s, "addCName", vec![name.clone().into()]);
        s.decision
            .answers
            .push(Answer::Cname(name.trim_end_matches('.').to_string()));
        s.decision.empty = false;
        Ok(JsValue::undefined())
    })
}

fn add_a_record(_: &JsValue, args: &[JsValue], _: &mut Context) -> JsResult<JsValue> {
    let ip = string_arg(args, 0, "addARecord", "ip_address")?;
    let addr =
        super::decision::parse_ipv4(&ip).map_err(|e| type_error(format!("addARecord: {e}")))?;
    with_call("addARecord", |s| {
        if s.decision.count_a() >= MAX_ADDRESS_RECORDS {
            return Err(type_error(format!(
                "addARecord: at most {MAX_ADDRESS_RECORDS} A records per response"
            )));
        }
        record(s, "addARecord", vec![ip.clone().into()]);
        s.decision.answers.push(Answer::A(addr));
        s.decision.empty = false;
        Ok(JsValue::undefined())
    })
}

fn add_aaaa_record(_: &JsValue, args: &[JsValue], _: &mut Context) -> JsResult<JsValue> {
    let ip = string_arg(args, 0, "addAAAARecord", "ipv6_address")?;
    let addr = ip
        .parse::<std::net::Ipv6Addr>()
        .map_err(|_| type_error(format!("addAAAARecord: malformed IPv6 address '{ip}'")))?;
    with_call("addAAAARecord", |s| {
        if s.decision.count_aaaa() >= MAX_ADDRESS_RECORDS {
            return Err(type_error(format!(
                "addAAAARecord: at most {MAX_ADDRESS_RECORDS} AAAA records per response"
            )));
        }
        record(s, "addAAAARecord", vec![ip.clone().into()]);
        s.decision.answers.push(Answer::Aaaa(addr));
        s.decision.empty = false;
        Ok(JsValue::undefined())
    })
}

fn add_provider_host(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let provider = string_arg(args, 0, "addProviderHost", "provider_name")?;
    let host = string_arg(args, 1, "addProviderHost", "ip_or_hostname")?;
    // Converting custom data can run app code (toJSON, getters): do it before
    // taking the call slot.
    let custom = match args.get(2) {
        None => None,
        Some(v) if v.is_undefined() => None,
        Some(v) => Some(tidy_json(
            v.to_json(ctx)?.unwrap_or(serde_json::Value::Null),
        )),
    };
    with_call("addProviderHost", |s| {
        let mut rec = vec![provider.clone().into(), host.clone().into()];
        if let Some(c) = &custom {
            rec.push(c.clone());
        }
        record(s, "addProviderHost", rec);
        s.decision.provider_hosts.push(ProviderHost {
            provider,
            host,
            custom,
        });
        Ok(JsValue::undefined())
    })
}

fn set_provider(_: &JsValue, args: &[JsValue], _: &mut Context) -> JsResult<JsValue> {
    let provider = string_arg(args, 0, "setProvider", "provider_name")?;
    with_call("setProvider", |s| {
        record(s, "setProvider", vec![provider.clone().into()]);
        s.decision.provider = Some(provider);
        Ok(JsValue::undefined())
    })
}

fn set_reason_code(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let v = arg(args, 0);
    if v.is_undefined() || v.is_null() || v.is_object() {
        return Err(type_error("setReasonCode: reason must be a string"));
    }
    let reason = v.to_string(ctx)?.to_std_string_escaped();
    with_call("setReasonCode", |s| {
        record(s, "setReasonCode", vec![json_of(&v, &reason)]);
        s.decision.reason = Some(reason);
        Ok(JsValue::undefined())
    })
}

/// The JSON form of a primitive argument for the call record.
fn json_of(v: &JsValue, as_string: &str) -> serde_json::Value {
    match v.as_number() {
        Some(n) => {
            tidy_json(serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, Into::into))
        }
        None => as_string.into(),
    }
}

/// A whole number from a number or a numeric string, within `range`.
fn integer_arg(v: &JsValue, method: &str, range: std::ops::RangeInclusive<f64>) -> JsResult<f64> {
    let n = if let Some(n) = v.as_number() {
        n
    } else if let Some(s) = v.as_string() {
        s.to_std_string_escaped()
            .trim()
            .parse::<f64>()
            .unwrap_or(f64::NAN)
    } else {
        f64::NAN
    };
    if !n.is_finite() || n.fract() != 0.0 || !range.contains(&n) {
        return Err(type_error(format!(
            "{method}: expected a whole number from {} to {}, got {}",
            range.start(),
            range.end(),
            v.display()
        )));
    }
    Ok(n)
}

fn set_ttl(_: &JsValue, args: &[JsValue], _: &mut Context) -> JsResult<JsValue> {
    let v = arg(args, 0);
    let ttl = integer_arg(&v, "setTTL", 0.0..=2_147_483_647.0)?;
    with_call("setTTL", |s| {
        record(s, "setTTL", vec![json_of(&v, &ttl.to_string())]);
        s.decision.ttl = Some(ttl as u32);
        Ok(JsValue::undefined())
    })
}

fn set_status(_: &JsValue, args: &[JsValue], _: &mut Context) -> JsResult<JsValue> {
    let v = arg(args, 0);
    let status = integer_arg(&v, "setStatus", 100.0..=599.0)?;
    let shown = v
        .as_string()
        .map(|s| s.to_std_string_escaped())
        .unwrap_or_else(|| status.to_string());
    with_call("setStatus", |s| {
        record(s, "setStatus", vec![json_of(&v, &shown)]);
        s.decision.status = Some(status as u16);
        Ok(JsValue::undefined())
    })
}

fn set_header(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let name = string_arg(args, 0, "setHeader", "header_name")?;
    let value = arg(args, 1);
    if value.is_undefined() || value.is_null() || value.is_object() {
        return Err(type_error("setHeader: header_value must be a string"));
    }
    let value = value.to_string(ctx)?.to_std_string_escaped();
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid_name || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(type_error(format!("setHeader: invalid header '{name}'")));
    }
    with_call("setHeader", |s| {
        record(
            s,
            "setHeader",
            vec![name.clone().into(), value.clone().into()],
        );
        s.decision.headers.push((name, value));
        Ok(JsValue::undefined())
    })
}

/// Builds the reusable `response` object.
pub fn build_response(ctx: &mut Context) -> JsObject {
    type Method = fn(&JsValue, &[JsValue], &mut Context) -> JsResult<JsValue>;
    let methods: [(&str, Method, usize); 11] = [
        ("respond", respond, 2),
        ("respondEmpty", respond_empty, 0),
        ("addCName", add_cname, 1),
        ("addARecord", add_a_record, 1),
        ("addAAAARecord", add_aaaa_record, 1),
        ("addProviderHost", add_provider_host, 3),
        ("setProvider", set_provider, 1),
        ("setReasonCode", set_reason_code, 1),
        ("setTTL", set_ttl, 1),
        ("setStatus", set_status, 1),
        ("setHeader", set_header, 2),
    ];
    let mut init = ObjectInitializer::new(ctx);
    for (name, f, len) in methods {
        init.function(NativeFunction::from_fn_ptr(f), JsString::from(name), len);
    }
    init.build()
}

// ---------------------------------------------------------------- config

fn with_init<R>(method: &str, f: impl FnOnce(&mut InitState) -> R) -> JsResult<R> {
    INIT.with(|c| match c.try_borrow_mut() {
        Ok(mut guard) => match guard.as_mut() {
            Some(state) => Ok(f(state)),
            None => Err(type_error(format!(
                "config.{method} can only be called during init"
            ))),
        },
        Err(_) => Err(type_error(format!("config.{method} called re-entrantly"))),
    })
}

fn require_provider(_: &JsValue, args: &[JsValue], _: &mut Context) -> JsResult<JsValue> {
    let alias = string_arg(args, 0, "requireProvider", "alias")?;
    with_init("requireProvider", |s| {
        if !s.meta.providers.contains(&alias) {
            s.meta.providers.push(alias);
        }
    })?;
    Ok(JsValue::undefined())
}

fn enable_cors(_: &JsValue, args: &[JsValue], _: &mut Context) -> JsResult<JsValue> {
    let hosts = string_arg(args, 0, "enableCors", "hosts")?;
    with_init("enableCors", |s| s.meta.cors = Some(hosts))?;
    Ok(JsValue::undefined())
}

fn enable_proximity(_: &JsValue, args: &[JsValue], _: &mut Context) -> JsResult<JsValue> {
    let flag = match args.first() {
        None => true,
        Some(v) if v.is_undefined() => true,
        Some(v) => v.to_boolean(),
    };
    with_init("enableProximityData", |s| s.meta.proximity = flag)?;
    Ok(JsValue::undefined())
}

fn get_providers(_: &JsValue, _: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let json = with_init("getProviders", |s| {
        if let Some(v) = &s.providers_override {
            return v.clone();
        }
        // The platforms assigned to the app, as on Openmix: its settings'
        // `providers` when it has any, else every configured provider.
        let mut map = serde_json::Map::new();
        for (alias, info) in &s.data.providers {
            if !s.assigned.is_empty() && !s.assigned.contains(alias) {
                continue;
            }
            map.insert(
                alias.clone(),
                serde_json::to_value(info).unwrap_or_default(),
            );
        }
        serde_json::Value::Object(map)
    })?;
    JsValue::from_json(&json, ctx)
}

/// Builds the reusable `config` object passed to `init`.
pub fn build_config(ctx: &mut Context) -> JsObject {
    ObjectInitializer::new(ctx)
        .function(
            NativeFunction::from_fn_ptr(require_provider),
            js_string!("requireProvider"),
            1,
        )
        .function(
            NativeFunction::from_fn_ptr(enable_cors),
            js_string!("enableCors"),
            1,
        )
        .function(
            NativeFunction::from_fn_ptr(enable_proximity),
            js_string!("enableProximityData"),
            1,
        )
        .function(
            NativeFunction::from_fn_ptr(get_providers),
            js_string!("getProviders"),
            0,
        )
        .build()
}

// ---------------------------------------------------------------- console

fn console_log(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let mut parts = Vec::with_capacity(args.len());
    for a in args {
        parts.push(a.to_string(ctx)?.to_std_string_escaped());
    }
    tracing::debug!(target: "switchyard::app", "console: {}", parts.join(" "));
    mark_logged();
    Ok(JsValue::undefined())
}

/// Builds a `console` whose methods log at debug level.
pub fn build_console(ctx: &mut Context) -> JsObject {
    let mut init = ObjectInitializer::new(ctx);
    for name in ["log", "info", "warn", "error", "debug"] {
        init.function(
            NativeFunction::from_fn_ptr(console_log),
            JsString::from(name),
            0,
        );
    }
    init.build()
}

/// Registers a global non-enumerable, read-only binding.
pub fn register_global(ctx: &mut Context, name: &str, value: impl Into<JsValue>) -> JsResult<()> {
    ctx.register_global_property(JsString::from(name), value, Attribute::empty())
}

/// Creates a function value in `ctx`.
pub fn make_function(ctx: &mut Context, f: NativeFunction, name: &str, len: usize) -> JsValue {
    function(ctx, f, name, len)
}
