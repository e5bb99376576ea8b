//! The Openmix JavaScript runtime.
//!
//! Apps are ES5 scripts written against the Openmix API (`init`,
//! `onRequest`, `onFusion`). This module runs them on boa and knows nothing
//! of DNS or HTTP: the front ends build a [`Request`], call
//! [`runtime::decide`], and turn the [`Decision`] into their wire format.
//!
//! - [`engine`]: one app in one context, budgeted calls, errors.
//! - [`guards`]: the prelude and host hooks that refuse one-step
//!   allocations and stack overflows before they start.
//! - [`fusion_skip`]: Fusion values whose `onFusion` ran away, skipped by
//!   every instance from then on.
//! - [`host`]: the `config`, `request` and `response` objects.
//! - [`runtime`]: the per-thread cache of instances.
//! - [`purity`]: the proof from an app's source that it keeps no state
//!   between decisions; [`memo`]: reusing its decisions exactly.
//! - [`request`], [`decision`], [`data`]: the plain types crossing the boundary.

pub mod alloc;
pub mod budget;
pub mod data;
pub mod decision;
pub mod engine;
pub mod fusion_skip;
pub mod guards;
pub mod host;
pub mod memo;
pub mod purity;
pub mod reads;
pub mod request;
pub mod runtime;

pub use budget::Budget;
pub use data::{DataSnapshot, ProviderInfo, ProviderScope};
pub use decision::{Answer, Decision, ProviderHost};
pub use engine::{AppCode, AppError, AppInstance, CallOptions, CallOutcome, Phase, RandomMode};
pub use host::{AppMeta, FixtureRequest, RecordedCall};
pub use request::{Location, Request};

use boa_engine::{Context, JsResult, JsValue};

/// Converts fixture JSON to a JS value. `{"$number": "Infinity" | "-Infinity"
/// | "NaN"}` and `{"$undefined": true}` stand for values JSON cannot write,
/// at any depth; any other object with a `$number` or `$undefined` key is a
/// `TypeError` naming it (see [`needs_special`]).
pub fn fixture_value(v: &serde_json::Value, ctx: &mut Context) -> JsResult<JsValue> {
    use serde_json::Value;
    let special = needs_special(v)
        .map_err(|e| boa_engine::JsNativeError::typ().with_message(e.to_string()))?;
    match v {
        Value::Object(map) if special => {
            match map.get("$number").and_then(Value::as_str) {
                Some("Infinity") => return Ok(JsValue::from(f64::INFINITY)),
                Some("-Infinity") => return Ok(JsValue::from(f64::NEG_INFINITY)),
                Some(_) => return Ok(JsValue::from(f64::NAN)),
                None if map.contains_key("$undefined") => return Ok(JsValue::undefined()),
                None => {}
            }
            let obj = boa_engine::JsObject::with_object_proto(ctx.intrinsics());
            for (k, val) in map {
                let jv = fixture_value(val, ctx)?;
                obj.create_data_property_or_throw(boa_engine::JsString::from(k.as_str()), jv, ctx)?;
            }
            Ok(obj.into())
        }
        Value::Array(items) if special => {
            let mut vals = Vec::with_capacity(items.len());
            for item in items {
                vals.push(fixture_value(item, ctx)?);
            }
            Ok(boa_engine::object::builtins::JsArray::from_iter(vals, ctx).into())
        }
        _ => JsValue::from_json(v, ctx),
    }
}

/// A fixture object with a `$number` or `$undefined` key that is not one of
/// the special values ([`needs_special`]); the message shows the object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecialValueError {
    /// The object has keys besides `$number` or `$undefined`.
    #[error("bad special value {0}: a \"$number\" or \"$undefined\" object has no other keys")]
    OtherKeys(serde_json::Value),
    /// `$number` is not `"Infinity"`, `"-Infinity"` or `"NaN"`.
    #[error("bad special value {0}: \"$number\" must be \"Infinity\", \"-Infinity\" or \"NaN\"")]
    Number(serde_json::Value),
    /// `$undefined` is not `true`.
    #[error("bad special value {0}: \"$undefined\" must be true")]
    Undefined(serde_json::Value),
}

/// Whether fixture JSON holds a special value (`{"$number": ...}`,
/// `{"$undefined": true}`) at any depth. An object with a `$number` or
/// `$undefined` key that is not exactly one of those forms is an error
/// naming the value.
pub fn needs_special(v: &serde_json::Value) -> Result<bool, SpecialValueError> {
    use serde_json::Value;
    match v {
        Value::Object(m) if m.contains_key("$number") || m.contains_key("$undefined") => {
            if m.len() != 1 {
                return Err(SpecialValueError::OtherKeys(v.clone()));
            }
            match (m.get("$number"), m.get("$undefined")) {
                (Some(Value::String(s)), _)
                    if matches!(s.as_str(), "Infinity" | "-Infinity" | "NaN") =>
                {
                    Ok(true)
                }
                (Some(_), _) => Err(SpecialValueError::Number(v.clone())),
                (_, Some(Value::Bool(true))) => Ok(true),
                _ => Err(SpecialValueError::Undefined(v.clone())),
            }
        }
        // Every value is checked, so a bad one after a good one is found too.
        Value::Object(m) => m
            .values()
            .try_fold(false, |any, val| Ok(needs_special(val)? || any)),
        Value::Array(a) => a
            .iter()
            .try_fold(false, |any, val| Ok(needs_special(val)? || any)),
        _ => Ok(false),
    }
}
