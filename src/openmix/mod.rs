//! The Openmix JavaScript runtime.
//!
//! Apps are ES5 scripts written against the Openmix API (`init`,
//! `onRequest`, `onFusion`). This module runs them on boa and knows nothing
//! of DNS or HTTP: the front ends build a [`Request`], call
//! [`runtime::decide`], and turn the [`Decision`] into their wire format.
//!
//! - [`engine`]: one app in one context, budgeted calls, errors.
//! - [`host`]: the `config`, `request` and `response` objects.
//! - [`runtime`]: the per-thread cache of instances.
//! - [`request`], [`decision`], [`data`]: the plain types crossing the boundary.

pub mod alloc;
pub mod data;
pub mod decision;
pub mod engine;
pub mod host;
pub mod request;
pub mod runtime;

pub use data::{DataSnapshot, ProviderInfo};
pub use decision::{Answer, Decision, ProviderHost};
pub use engine::{AppCode, AppError, AppInstance, Budget, CallOptions, CallOutcome, Phase};
pub use host::{AppMeta, FixtureRequest, RecordedCall};
pub use request::{Location, Request};

use boa_engine::{Context, JsResult, JsValue};

/// Converts fixture JSON to a JS value. `{"$number": "Infinity" | "-Infinity"
/// | "NaN"}` and `{"$undefined": true}` stand for values JSON cannot write,
/// at any depth.
pub fn fixture_value(v: &serde_json::Value, ctx: &mut Context) -> JsResult<JsValue> {
    use serde_json::Value;
    if let Value::Object(map) = v {
        if map.len() == 1 {
            if let Some(Value::String(s)) = map.get("$number") {
                return Ok(JsValue::from(match s.as_str() {
                    "Infinity" => f64::INFINITY,
                    "-Infinity" => f64::NEG_INFINITY,
                    _ => f64::NAN,
                }));
            }
            if map.get("$undefined") == Some(&Value::Bool(true)) {
                return Ok(JsValue::undefined());
            }
        }
        if !needs_special(v) {
            return JsValue::from_json(v, ctx);
        }
        let obj = boa_engine::JsObject::with_object_proto(ctx.intrinsics());
        for (k, val) in map {
            let jv = fixture_value(val, ctx)?;
            obj.create_data_property_or_throw(boa_engine::JsString::from(k.as_str()), jv, ctx)?;
        }
        return Ok(obj.into());
    }
    if let Value::Array(items) = v
        && needs_special(v)
    {
        let mut vals = Vec::with_capacity(items.len());
        for item in items {
            vals.push(fixture_value(item, ctx)?);
        }
        return Ok(boa_engine::object::builtins::JsArray::from_iter(vals, ctx).into());
    }
    JsValue::from_json(v, ctx)
}

fn needs_special(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(m) => {
            m.contains_key("$number")
                || m.contains_key("$undefined")
                || m.values().any(needs_special)
        }
        serde_json::Value::Array(a) => a.iter().any(needs_special),
        _ => false,
    }
}
