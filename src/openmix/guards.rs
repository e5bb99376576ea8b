//! Guards against the native operations an app could use to allocate
//! without bound, or to overflow the thread's stack, in one step.
//!
//! The per-poll budget checks (in engine.rs) run between slices of
//! bytecode; a native function (boa's `String.prototype.repeat`,
//! `Array.prototype.sort`, `JSON.stringify`, the parser behind `eval`) runs
//! whole inside one slice, and some of them size an allocation from a value
//! the app controls (`'x'.repeat(2 ** 29)` asks for 12 GiB at once; `sort`
//! of an array whose `length` is 2³²−1 asks for 64 GiB): Rust aborts the
//! whole process when that fails. Three layers stop them before they start:
//!
//! - `prelude.js`, run in every context before the app, wraps the native
//!   methods whose allocation an argument or a `length` decides, and throws
//!   a `RangeError` naming the budget instead. It captures every function it
//!   uses while the context is still pristine and converts each argument
//!   once, passing the converted value on, so an app that replaces
//!   `Function.prototype.apply`, `Number` or `String`, or whose `valueOf` or
//!   `length` getter answers small and then huge, cannot get past it.
//! - the native helpers below, which the prelude calls: classifying a value
//!   without running app code, copying an array-like whose length was read
//!   once, joining with a size limit, and checking how much stack is left.
//! - [`SandboxHooks`], boa's host hooks: `eval` and `new Function` refuse a
//!   source whose parse could overflow the stack left (boa's parser recurses
//!   once per nesting level, ~30 KiB per parenthesis in a release build, and
//!   has no limit of its own), and an `ArrayBuffer` may not exceed the
//!   memory budget.
//!
//! What no guard can see (a native loop that allocates a little per step
//! for a long time, a regex that backtracks forever) is left to the
//! watchdog, the memory cap and the quarantine.

use std::cell::Cell;
use std::rc::Rc;

use boa_engine::context::{ContextBuilder, HostHooks};
use boa_engine::object::FunctionObjectBuilder;
use boa_engine::object::builtins::JsArray;
use boa_engine::realm::Realm;
use boa_engine::{
    Context, JsArgs, JsNativeError, JsObject, JsResult, JsString, JsValue, NativeFunction, Source,
};

use super::budget::{Budget, MAX_REGEX_INPUT};

/// Stack size of every thread that runs apps (JS workers, loaders): boa's
/// parser and several builtins recurse on the native stack, ~30 KiB per
/// nested parenthesis; with the default 2 MiB a 70-deep expression would
/// overflow and abort the process.
pub const JS_STACK_SIZE: usize = 16 << 20;

/// Most characters a guarded string operation may produce, whatever the
/// app's memory budget (UTF-16: 64 MiB).
pub const MAX_CHARS: usize = 1 << 25;
/// Most elements a guarded array operation may touch, whatever the app's
/// memory budget (boa keeps 16 bytes per element, and a sort or a join two
/// lists of them: 64 MiB).
pub const MAX_ELEMENTS: usize = 1 << 21;
/// Most repetitions of `String.prototype.repeat`: boa allocates 16 bytes
/// per repetition before it starts, and its loop limit (1M) stops it after.
pub const MAX_REPEAT: usize = 1_000_000;
/// Stack a guarded recursion must leave free.
const STACK_MARGIN: usize = 256 << 10;
/// Stack one level of `Array.prototype.flat` may use (measured ~300 B).
const FLAT_LEVEL_BYTES: usize = 1 << 10;
/// Largest `ArrayBuffer` (and so typed array), whatever the budget.
const MAX_BUFFER: u64 = 1 << 30;

/// Stack boa's parser may use per open `(` or `[` (measured ~29 KiB in a
/// release build), per open `{` (~4 KiB), and per character of an
/// unbroken chain of operators or keywords (`!!!x`, `a = b = c`, `typeof
/// typeof x`: at most ~2.5 KiB per character).
const PAREN_BYTES: usize = 40 << 10;
const BRACE_BYTES: usize = 8 << 10;
const OPERATOR_BYTES: usize = 3 << 10;
const LETTER_BYTES: usize = 512;

/// The limits of one app's guards, from its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Characters a string operation may produce.
    pub chars: usize,
    /// Elements an array operation may touch.
    pub elements: usize,
    /// Repetitions of `String.prototype.repeat`.
    pub repeat: usize,
    /// Bytes of one `ArrayBuffer`.
    pub buffer: u64,
}

impl Limits {
    /// A quarter of the memory budget in characters (two bytes each, and
    /// room for a copy), a thirty-second in elements (16 bytes each, twice),
    /// each capped absolutely: a big budget must not let one step allocate
    /// gigabytes.
    pub fn for_budget(budget: &Budget) -> Limits {
        Limits {
            chars: (budget.memory / 4).clamp(1, MAX_CHARS),
            elements: (budget.memory / 32).clamp(1, MAX_ELEMENTS),
            repeat: (budget.memory / 16).clamp(1, MAX_REPEAT),
            buffer: (budget.memory as u64).min(MAX_BUFFER),
        }
    }
}

/// A new context for an app with `budget`: boa's defaults plus
/// [`SandboxHooks`].
pub fn new_context(budget: &Budget) -> Context {
    let hooks = SandboxHooks {
        max_buffer: Limits::for_budget(budget).buffer,
    };
    ContextBuilder::new()
        .host_hooks(Rc::new(hooks))
        .build()
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot build a guarded context; using boa's defaults");
            Context::default()
        })
}

/// boa's host hooks for app contexts.
#[derive(Debug)]
pub struct SandboxHooks {
    max_buffer: u64,
}

impl HostHooks for SandboxHooks {
    fn ensure_can_compile_strings(
        &self,
        _realm: Realm,
        parameters: &[JsString],
        body: &JsString,
        _direct: bool,
        _context: &mut Context,
    ) -> JsResult<()> {
        let need = parameters
            .iter()
            .chain(std::iter::once(body))
            .map(|s| parse_stack_need(s.iter(), true))
            .sum::<usize>();
        let left = stack_remaining().saturating_sub(STACK_MARGIN);
        if need > left {
            return Err(JsNativeError::range()
                .with_message(format!(
                    "eval: a source nested this deeply could need {} KiB of stack to parse, \
                     more than the stack budget ({} KiB left)",
                    need >> 10,
                    left >> 10
                ))
                .into());
        }
        Ok(())
    }

    fn max_buffer_size(&self, _context: &mut Context) -> u64 {
        self.max_buffer
    }
}

/// Refuses an app source whose nesting could overflow this thread's stack
/// while it is parsed (brackets only: the app's own file, not a hostile
/// string built at run time).
pub fn check_source(source: &str) -> Result<(), NestingError> {
    let need = parse_stack_need(source.encode_utf16(), false);
    let left = stack_remaining().saturating_sub(STACK_MARGIN);
    if need > left {
        return Err(NestingError { need, left });
    }
    Ok(())
}

/// An app source nested so deeply that parsing it could overflow the stack
/// ([`check_source`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the source nests brackets so deeply that parsing it could need {} KiB of stack, \
     more than the stack budget ({} KiB left)",
    .need >> 10,
    .left >> 10
)]
pub struct NestingError {
    /// Stack the parser could need, in bytes.
    pub need: usize,
    /// Stack left for it, in bytes.
    pub left: usize,
}

/// An upper estimate of the stack boa's parser needs for `src`: the
/// deepest point of the open brackets, each weighted by what a level costs,
/// plus (with `chains`) the unbroken chains of operators and words at each
/// open level (reset at `;` and `,`). Brackets in strings and comments
/// count too: the estimate only errs high.
pub fn parse_stack_need(src: impl Iterator<Item = u16>, chains: bool) -> usize {
    // Open levels: (bracket cost, chain cost at that level).
    let mut levels: Vec<(usize, usize)> = vec![(0, 0)];
    let (mut open, mut chain, mut most) = (0usize, 0usize, 0usize);
    for unit in src {
        let c = char::from_u32(u32::from(unit)).unwrap_or('x');
        let opened = match c {
            '(' | '[' => Some(PAREN_BYTES),
            '{' => Some(BRACE_BYTES),
            _ => None,
        };
        if let Some(cost) = opened {
            levels.push((cost, 0));
            open += cost;
        } else if matches!(c, ')' | ']' | '}') {
            if levels.len() > 1
                && let Some((cost, ch)) = levels.pop()
            {
                open -= cost;
                chain -= ch;
            }
        } else if chains {
            let add = match c {
                ';' | ',' => {
                    if let Some(top) = levels.last_mut() {
                        chain -= top.1;
                        top.1 = 0;
                    }
                    0
                }
                '!' | '~' | '+' | '-' | '*' | '/' | '%' | '=' | '<' | '>' | '&' | '|' | '^'
                | '?' | ':' => OPERATOR_BYTES,
                c if c.is_alphanumeric() || c == '_' || c == '$' => LETTER_BYTES,
                _ => 0,
            };
            if let Some(top) = levels.last_mut() {
                top.1 += add;
            }
            chain += add;
        }
        most = most.max(open + chain);
    }
    most
}

thread_local! {
    /// The lowest address of this thread's stack; 0 until looked up,
    /// `usize::MAX` when it cannot be.
    static STACK_LOW: Cell<usize> = const { Cell::new(0) };
}

/// Bytes of stack left below the caller's frame on this thread
/// (`usize::MAX` when the stack's bounds are unknown).
pub fn stack_remaining() -> usize {
    let low = STACK_LOW.with(|c| {
        if c.get() == 0 {
            c.set(stack_low().unwrap_or(usize::MAX));
        }
        c.get()
    });
    if low == usize::MAX {
        return usize::MAX;
    }
    let here = 0u8;
    (std::ptr::addr_of!(here) as usize).saturating_sub(low)
}

/// The lowest usable address of this thread's stack.
fn stack_low() -> Option<usize> {
    // SAFETY: the attribute object is initialised by pthread_getattr_np
    // before it is read and destroyed once; the out-pointers are valid.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let mut guard: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_getguardsize(&attr, &mut guard);
        libc::pthread_attr_destroy(&mut attr);
        (rc == 0 && !addr.is_null()).then(|| addr as usize + guard)
    }
}

/// Runs the prelude in `ctx` with the limits of `budget`. Must run before
/// any app code, so that what the prelude captures is boa's own.
pub fn install(ctx: &mut Context, budget: &Budget) {
    let limits = Limits::for_budget(budget);
    let prelude = match ctx.eval(Source::from_bytes(include_str!("prelude.js").as_bytes())) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "prelude failed to evaluate");
            return;
        }
    };
    let natives = natives(ctx, limits);
    let Some(prelude) = prelude.as_callable() else {
        tracing::error!("prelude is not a function");
        return;
    };
    let args = [
        JsValue::from(limits.chars as f64),
        JsValue::from(limits.elements as f64),
        JsValue::from(limits.repeat as f64),
        JsValue::from(MAX_REGEX_INPUT as f64),
        natives.into(),
    ];
    if let Err(e) = prelude.call(&JsValue::undefined(), &args, ctx) {
        tracing::error!(error = %e, "prelude failed");
    }
}

/// The native helpers the prelude captures, as one object.
fn natives(ctx: &mut Context, limits: Limits) -> JsObject {
    let obj = JsObject::with_null_proto();
    let global = ctx.global_object();
    let _ = obj.set(JsString::from("global"), global, false, ctx);
    let elements = limits.elements;
    let chars = limits.chars;
    let fns: [(&str, usize, NativeFunction); 6] = [
        (
            "sortWith",
            5,
            NativeFunction::from_copy_closure(move |_, args, ctx| sort_with(args, elements, ctx)),
        ),
        ("classify", 1, NativeFunction::from_fn_ptr(classify)),
        (
            "copyList",
            2,
            NativeFunction::from_copy_closure(move |_, args, ctx| copy_list(args, elements, ctx)),
        ),
        ("checkStack", 1, NativeFunction::from_fn_ptr(check_stack)),
        ("flatDepth", 0, NativeFunction::from_fn_ptr(flat_depth)),
        (
            "join",
            6,
            NativeFunction::from_copy_closure(move |this, args, ctx| {
                join_checked(this, args, chars, ctx)
            }),
        ),
    ];
    for (name, length, f) in fns {
        let f = FunctionObjectBuilder::new(ctx.realm(), f)
            .name(JsString::from(name))
            .length(length)
            .build();
        let _ = obj.define_property_or_throw(
            JsString::from(name),
            boa_engine::property::PropertyDescriptor::builder()
                .value(f)
                .writable(false)
                .enumerable(false)
                .configurable(false)
                .build(),
            ctx,
        );
    }
    obj
}

/// `classify(v)`: 1 for an Array (its `length` is a data property no app
/// code runs to read; a Proxy is not one), 2 for a `String` or `Number`
/// wrapper object, 3 for another wrapper (`Boolean`, `BigInt`, `Symbol`),
/// 0 for anything else. Runs no app code.
fn classify(_: &JsValue, args: &[JsValue], _: &mut Context) -> JsResult<JsValue> {
    let Some(o) = args.get_or_undefined(0).as_object() else {
        return Ok(0.into());
    };
    let kind = if o.is_array() {
        1
    } else if o.is::<JsString>() || o.is::<f64>() {
        2
    } else if o.is::<bool>() || o.is::<boa_engine::JsBigInt>() || o.is::<boa_engine::JsSymbol>() {
        3
    } else {
        0
    };
    Ok(kind.into())
}

/// `copyList(o, len)`: a new Array of `o[0]` .. `o[len - 1]`, each read
/// once (as `CreateListFromArrayLike` reads them).
fn copy_list(args: &[JsValue], elements: usize, ctx: &mut Context) -> JsResult<JsValue> {
    let o = args.get_or_undefined(0).to_object(ctx)?;
    let len = args.get_or_undefined(1).to_length(ctx)?;
    if len > elements as u64 {
        return Err(too_big("a list", len, elements as u64, "elements"));
    }
    let mut values = Vec::with_capacity(len as usize);
    for i in 0..len {
        values.push(o.get(i, ctx)?);
    }
    Ok(JsArray::from_iter(values, ctx).into())
}

/// `checkStack(what)`: throws a `RangeError` naming `what` when this
/// thread has less than the margin of stack left.
fn check_stack(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let left = stack_remaining();
    if left < STACK_MARGIN {
        let what = args.get_or_undefined(0).to_string(ctx)?;
        return Err(JsNativeError::range()
            .with_message(format!(
                "{}: nested too deeply for the stack budget ({} KiB left)",
                what.to_std_string_escaped(),
                left >> 10
            ))
            .into());
    }
    Ok(JsValue::undefined())
}

/// `flatDepth()`: how many levels `Array.prototype.flat` may recurse with
/// the stack left.
fn flat_depth(_: &JsValue, _: &[JsValue], _: &mut Context) -> JsResult<JsValue> {
    let levels = stack_remaining().saturating_sub(STACK_MARGIN) / FLAT_LEVEL_BYTES;
    Ok((levels.min(1 << 30) as f64).into())
}

/// `join(o, len, sep, locale, locales, options)`: `Array.prototype.join`
/// (or, with `locale`, `toLocaleString`) of `o` with its `length` read once
/// by the caller, refusing a result longer than `chars` before building
/// it. An element that is the array itself joins as the empty string, as
/// boa's own join does.
fn join_checked(
    _: &JsValue,
    args: &[JsValue],
    chars: usize,
    ctx: &mut Context,
) -> JsResult<JsValue> {
    let this = args.get_or_undefined(0).clone();
    let o = this.to_object(ctx)?;
    let len = args.get_or_undefined(1).to_length(ctx)?;
    let sep = args.get_or_undefined(2).to_string(ctx)?;
    let locale = args.get_or_undefined(3).to_boolean();
    let (locales, options) = (args.get_or_undefined(4), args.get_or_undefined(5));
    let what = if locale { "toLocaleString" } else { "join" };
    let mut parts: Vec<JsString> = Vec::new();
    let mut total = 0usize;
    for k in 0..len {
        let el = o.get(k, ctx)?;
        let s = if el.is_null_or_undefined() || el == this {
            JsString::default()
        } else if locale {
            let f = el
                .to_object(ctx)?
                .get(JsString::from("toLocaleString"), ctx)?;
            let f = f.as_callable().ok_or_else(|| {
                JsNativeError::typ().with_message("toLocaleString is not a function")
            })?;
            f.call(&el, &[locales.clone(), options.clone()], ctx)?
                .to_string(ctx)?
        } else {
            el.to_string(ctx)?
        };
        total = total
            .saturating_add(s.len())
            .saturating_add(if k > 0 { sep.len() } else { 0 });
        if total > chars {
            return Err(too_big(
                &format!("Array.prototype.{what}"),
                total as u64,
                chars as u64,
                "characters",
            ));
        }
        if k > 0 {
            parts.push(sep.clone());
        }
        parts.push(s);
    }
    let strs: Vec<_> = parts.iter().map(JsString::as_str).collect();
    Ok(JsString::concat_array(&strs).into())
}

/// `sortWith(src, len, comparefn, mode, dst)`: sorts `src[0 .. len)` with
/// the app's comparator by a merge sort of our own. boa sorts with Rust's
/// `sort_by`, which panics when a comparator is not a total order, and a
/// comparator that answers at random (`sort(() => Math.random() - 0.5)`,
/// the usual JS shuffle) or carelessly (`return a > b`) is not one; a merge
/// sort never panics, and is stable as the spec asks. `mode` 0:
/// `Array.prototype.sort` (holes skipped, the sorted items written back,
/// the rest deleted); 1: `toSorted` (every index read; a new Array
/// returned); 2: every index read, the sorted items written to `dst` (a
/// typed array's `sort`, or `toSorted` into a copy).
fn sort_with(args: &[JsValue], elements: usize, ctx: &mut Context) -> JsResult<JsValue> {
    let src = args.get_or_undefined(0).to_object(ctx)?;
    let len = args.get_or_undefined(1).to_length(ctx)?;
    let comparefn = args.get_or_undefined(2).as_callable().ok_or_else(|| {
        JsNativeError::typ().with_message("The comparison function must be a function")
    })?;
    let mode = args.get_or_undefined(3).to_u32(ctx)?;
    if len > elements as u64 {
        return Err(too_big(
            "Array.prototype.sort",
            len,
            elements as u64,
            "elements",
        ));
    }
    let mut items = Vec::with_capacity(len as usize);
    for k in 0..len {
        if mode == 0 && !src.has_property(k, ctx)? {
            continue;
        }
        items.push(src.get(k, ctx)?);
    }
    let mut compare = |x: &JsValue, y: &JsValue, ctx: &mut Context| -> JsResult<bool> {
        // CompareArrayElements: undefined sorts last, uncompared. The result
        // is whether y must go before x.
        match (x.is_undefined(), y.is_undefined()) {
            (_, true) => return Ok(false),
            (true, false) => return Ok(true),
            _ => {}
        }
        let v = comparefn
            .call(&JsValue::undefined(), &[x.clone(), y.clone()], ctx)?
            .to_number(ctx)?;
        Ok(v > 0.0)
    };
    merge_sort(&mut items, &mut compare, ctx)?;
    match mode {
        0 => {
            let n = items.len() as u64;
            for (j, item) in items.into_iter().enumerate() {
                src.set(j as u64, item, true, ctx)?;
            }
            for j in n..len {
                src.delete_property_or_throw(j, ctx)?;
            }
            Ok(src.into())
        }
        1 => Ok(JsArray::from_iter(items, ctx).into()),
        _ => {
            let dst = args.get_or_undefined(4).to_object(ctx)?;
            for (j, item) in items.into_iter().enumerate() {
                dst.set(j as u64, item, true, ctx)?;
            }
            Ok(dst.into())
        }
    }
}

/// A stable bottom-up merge sort; `after(x, y)` tells whether y must go
/// before x. Any answers make a permutation: nothing is lost or repeated.
fn merge_sort(
    items: &mut Vec<JsValue>,
    after: &mut dyn FnMut(&JsValue, &JsValue, &mut Context) -> JsResult<bool>,
    ctx: &mut Context,
) -> JsResult<()> {
    let n = items.len();
    let mut other = items.clone();
    let mut width = 1;
    while width < n {
        let mut start = 0;
        while start < n {
            let mid = (start + width).min(n);
            let end = (start + 2 * width).min(n);
            let (mut i, mut j) = (start, mid);
            for slot in other.iter_mut().take(end).skip(start) {
                let take_right = i >= mid || (j < end && after(&items[i], &items[j], ctx)?);
                if take_right {
                    *slot = items[j].clone();
                    j += 1;
                } else {
                    *slot = items[i].clone();
                    i += 1;
                }
            }
            start = end;
        }
        std::mem::swap(items, &mut other);
        width *= 2;
    }
    Ok(())
}

fn too_big(what: &str, size: u64, limit: u64, unit: &str) -> boa_engine::JsError {
    JsNativeError::range()
        .with_message(format!(
            "{what}: a result of {size} {unit} exceeds the memory budget ({limit} {unit})"
        ))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(s: &str, chains: bool) -> usize {
        parse_stack_need(s.encode_utf16(), chains)
    }

    #[test]
    fn estimates_grow_with_nesting_not_with_length() {
        let flat = "var a = 1; var b = 2; function f(x) { return x + 1; }\n".repeat(500);
        assert!(need(&flat, true) < 200 << 10, "{}", need(&flat, true));
        assert!(need(&flat, false) < 100 << 10);
        assert!(need(&"(".repeat(1000), false) >= 1000 * PAREN_BYTES);
        assert!(need(&"!\n".repeat(10_000), true) >= 10_000 * OPERATOR_BYTES);
        assert_eq!(need(&"!\n".repeat(10_000), false), 0);
    }

    #[test]
    fn limits_are_capped_whatever_the_budget() {
        let huge = Budget {
            memory: 4096 << 20,
            ..Budget::default()
        };
        let l = Limits::for_budget(&huge);
        assert_eq!(l.chars, MAX_CHARS);
        assert_eq!(l.elements, MAX_ELEMENTS);
        assert_eq!(l.repeat, MAX_REPEAT);
        assert!(
            (1usize << 29) > l.chars,
            "'x'.repeat(2**29) must be refused"
        );
        let small = Limits::for_budget(&Budget::default());
        assert_eq!(small.chars, 16 << 20);
        assert_eq!(small.elements, 2 << 20);
    }

    #[test]
    fn a_thread_knows_its_stack() {
        let left = std::thread::Builder::new()
            .stack_size(JS_STACK_SIZE)
            .spawn(stack_remaining)
            .unwrap()
            .join()
            .unwrap();
        assert!(left > JS_STACK_SIZE / 2 && left <= JS_STACK_SIZE, "{left}");
    }
}
