//! A static proof, from the app's source, that no decision can change
//! state that outlives it: the condition for memoising its decisions
//! (memo.rs).
//!
//! Sticky apps keep caches in globals or closures, and a memoised decision
//! would skip the write a fresh one makes. So an app is memoisable only if
//! every write the code that can run during a decision makes is provably to
//! something created during that decision. The rules are deliberately
//! conservative: an app that fails them is simply run every time.
//!
//! * Code that runs only at load is free to write anything: the top level,
//!   `init` (when nothing else names it), functions only ever called from
//!   top-level code, and functions expressions called in place there.
//! * Everywhere else, an assignment, `++`/`--`, `delete` or `for (x in ..)`
//!   targets a variable declared in the same function, or a property of
//!   such a variable when every value it is ever given is a fresh object
//!   (an object, array or regex literal, `JSON.parse`, `Object.keys`,
//!   `new Array/Object`, or `request.getData/getProbe`, which return a new
//!   object per call). `this.x = ..` counts only in load-only functions.
//! * Native methods that mutate their receiver (`push`, `sort`, `splice`,
//!   `exec`, ...) are called only on such fresh locals; `Object.assign`,
//!   `Object.defineProperty` and their kind only with a fresh first
//!   argument; `call`/`apply`/`bind` only on functions the app declares or
//!   on non-mutating natives; a mutating native is never named other than
//!   as the method called (so it cannot be aliased); a method is never
//!   called through a computed name.
//! * No `eval`, `Function`, `with`, `Proxy`, `Reflect`, `globalThis`,
//!   `arguments.callee`, classes, generators or async functions, and no
//!   `Date` (a decision that reads the clock cannot be reused).
//!   `Math.random` is allowed: a decision that calls it is seen at run time
//!   and not memoised.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;

use boa_engine::ast::declaration::{Binding, Variable};
use boa_engine::ast::expression::access::{
    PropertyAccess, PropertyAccessField, SimplePropertyAccess,
};
use boa_engine::ast::expression::literal::{LiteralKind, ObjectMethodDefinition};
use boa_engine::ast::expression::operator::assign::{AssignOp, AssignTarget};
use boa_engine::ast::expression::operator::binary::{BinaryOp, LogicalOp};
use boa_engine::ast::expression::operator::unary::UnaryOp;
use boa_engine::ast::expression::operator::update::UpdateTarget;
use boa_engine::ast::expression::operator::{Assign, Unary, Update};
use boa_engine::ast::expression::{Call, Expression, Identifier, New, RegExpLiteral, This};
use boa_engine::ast::function::{
    ArrowFunction, AsyncArrowFunction, AsyncFunctionDeclaration, AsyncFunctionExpression,
    AsyncGeneratorDeclaration, AsyncGeneratorExpression, ClassDeclaration, ClassExpression,
    FormalParameterList, FunctionBody, FunctionDeclaration, FunctionExpression,
    GeneratorDeclaration, GeneratorExpression,
};
use boa_engine::ast::property::PropertyName;
use boa_engine::ast::scope::Scope;
use boa_engine::ast::statement::iteration::{ForInLoop, ForOfLoop, IterableLoopInitializer};
use boa_engine::ast::statement::{Catch, With};
use boa_engine::ast::visitor::{VisitWith, Visitor};
use boa_engine::ast::{StatementListItem, operations};
use boa_engine::interner::{Interner, Sym};
use boa_engine::parser::{Parser, Source};

/// Native methods that change the object they are called on.
const MUTATORS: &[&str] = &[
    "push",
    "pop",
    "shift",
    "unshift",
    "splice",
    "sort",
    "reverse",
    "fill",
    "copyWithin",
    "set",
    "add",
    "delete",
    "clear",
    "exec",
    "test",
    "__defineGetter__",
    "__defineSetter__",
];

/// Native functions that change their first argument.
const ARG_MUTATORS: &[&str] = &[
    "assign",
    "defineProperty",
    "defineProperties",
    "setPrototypeOf",
    "freeze",
    "seal",
    "preventExtensions",
];

/// Names whose use anywhere makes an app unprovable.
const BANNED: &[&str] = &[
    "eval",
    "Function",
    "Proxy",
    "Reflect",
    "globalThis",
    "Date",
    "WeakRef",
    "FinalizationRegistry",
    "SharedArrayBuffer",
    "Atomics",
    "Intl",
    "performance",
    "crypto",
];

/// Property names whose use anywhere makes an app unprovable.
const BANNED_PROPERTIES: &[&str] = &[
    "callee",
    "caller",
    "constructor",
    "__lookupGetter__",
    "__lookupSetter__",
];

/// Globals whose `new` or methods the freshness rule trusts; an app that
/// declares one of these names is not analysed further.
const TRUSTED_GLOBALS: &[&str] = &["Object", "Array", "JSON", "RegExp", "Math"];

/// Why an app cannot be proven stateless ([`analyse`]): the first rule it
/// breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PurityError {
    /// The source does not parse.
    #[error("does not parse: {0}")]
    Parse(String),
    /// It declares a global the proof trusts.
    #[error("declares `{0}`, a global the proof relies on")]
    DeclaresTrusted(&'static str),
    /// It assigns to a name its function does not declare.
    #[error(
        "assigns to `{0}`, which is not declared in the function: state kept between decisions"
    )]
    AssignsOuter(String),
    /// It writes a property of an object it did not create.
    #[error(
        "writes a property of an object that may outlive the decision (only properties of \
         objects the function created are provably fresh)"
    )]
    WritesProperty,
    /// It destructures in a loop head.
    #[error("destructuring assignment in a loop head")]
    LoopDestructuring,
    /// It destructures in an assignment.
    #[error("destructuring assignment")]
    Destructuring,
    /// It calls a method by a computed name.
    #[error("calls a method through a computed name")]
    ComputedMethod,
    /// It calls a mutating method on an object it did not create.
    #[error("calls `{0}` on an object that may outlive the decision")]
    Mutates(String),
    /// It calls `call`, `apply` or `bind` on a function not known harmless.
    #[error("calls `{0}` on a function it cannot prove harmless")]
    UnprovenCall(String),
    /// It uses a banned global.
    #[error("uses `{0}`")]
    Uses(String),
    /// It uses a banned property.
    #[error("uses `.{0}`")]
    UsesProperty(String),
    /// It names a mutating method outside a call.
    #[error("names the mutating method `{0}` without calling it")]
    NamesMutator(String),
    /// It uses `Object` or `RegExp` as a value.
    #[error("uses `{0}` as a value")]
    UsesAsValue(String),
    /// It uses `this` as a value.
    #[error("uses `this` as a value")]
    UsesThis,
    /// It reads a computed property of `this` or `Object`.
    #[error("reads a computed property of `this` or `Object`")]
    ComputedRead,
    /// It calls a computed method of `this` or `Object`.
    #[error("calls a computed method of `this` or `Object`")]
    ComputedCall,
    /// It uses a sticky regular expression.
    #[error("uses a sticky regular expression")]
    StickyRegExp,
    /// It makes a `RegExp` whose flags are not a literal.
    #[error("makes a RegExp whose flags it cannot see")]
    HiddenFlags,
    /// It deletes a name.
    #[error("`delete` of a name")]
    DeleteName,
    /// It uses `with`.
    #[error("uses `with`")]
    With,
    /// It declares a class.
    #[error("declares a class")]
    Class,
    /// It declares a generator.
    #[error("declares a generator")]
    Generator,
    /// It declares an async function.
    #[error("declares an async function")]
    Async,
    /// It declares an async generator.
    #[error("declares an async generator")]
    AsyncGenerator,
}

/// Proves that no decision of the app in `source` can change state that
/// outlives it. `Err` says why not (the first rule broken).
pub fn analyse(source: &str) -> Result<(), PurityError> {
    let mut interner = Interner::default();
    let script = Parser::new(Source::from_bytes(source))
        .parse_script(&Scope::new_global(), &mut interner)
        .map_err(|e| PurityError::Parse(e.to_string()))?;
    let program = Program::survey(script.statements().statements(), &interner)?;
    let mut queue: Vec<Unchecked<'_>> = Vec::new();
    // The top level runs at load: free to write, nested functions queued.
    let top = Frame::load_only();
    let mut check = Check::new(&program, &top, &interner, &mut queue);
    for item in script.statements().statements() {
        check.item(item)?;
    }
    while let Some(job) = queue.pop() {
        let frame = Frame::of(job.params, job.body, job.load_only, &program, &interner);
        let mut check = Check::new(&program, &frame, &interner, &mut queue);
        check.params(job.params)?;
        for item in job.body.statements() {
            check.item(item)?;
        }
    }
    Ok(())
}

/// A function waiting to be checked.
struct Unchecked<'a> {
    params: &'a FormalParameterList,
    body: &'a FunctionBody,
    load_only: bool,
}

/// Facts about the whole program, from one pass before the checks.
struct Program {
    /// Addresses of function nodes that run only at load.
    load_only: HashSet<usize>,
    /// Names of every declared function.
    functions: HashSet<Sym>,
    /// Whether `x.getData(..)` and `x.getProbe(..)` can only be the host's.
    host_data_fresh: bool,
}

impl Program {
    fn survey(items: &[StatementListItem], interner: &Interner) -> Result<Program, PurityError> {
        let mut s = Survey {
            interner,
            depth: 0,
            top_calls: HashMap::new(),
            other_refs: HashMap::new(),
            top_functions: Vec::new(),
            load_only_exprs: HashSet::new(),
            functions: HashSet::new(),
            property_names: HashSet::new(),
            declared: HashSet::new(),
        };
        for item in items {
            let _ = item.visit_with(&mut s);
        }
        for name in TRUSTED_GLOBALS {
            if s.declared.contains(*name) {
                return Err(PurityError::DeclaresTrusted(name));
            }
        }
        let mut load_only = s.load_only_exprs;
        for (sym, addr) in &s.top_functions {
            let name = interner.resolve_expect(*sym).to_string();
            if matches!(name.as_str(), "onRequest" | "onFusion") {
                continue;
            }
            let others = s.other_refs.get(sym).copied().unwrap_or(0);
            let calls = s.top_calls.get(sym).copied().unwrap_or(0);
            if others == 0 && (calls > 0 || name == "init") {
                load_only.insert(*addr);
            }
        }
        Ok(Program {
            load_only,
            functions: s.functions,
            host_data_fresh: !s.property_names.contains("getData")
                && !s.property_names.contains("getProbe"),
        })
    }
}

/// The survey pass: who references which function, and from where.
struct Survey<'i> {
    interner: &'i Interner,
    /// Function nesting depth (0: top-level code).
    depth: usize,
    /// Top-level function name → calls of it from top-level code.
    top_calls: HashMap<Sym, usize>,
    /// Name → every other reference.
    other_refs: HashMap<Sym, usize>,
    /// Top-level function declarations: name and node address.
    top_functions: Vec<(Sym, usize)>,
    /// Function expressions called in place in top-level code.
    load_only_exprs: HashSet<usize>,
    functions: HashSet<Sym>,
    /// Property names defined in object literals or assigned anywhere.
    property_names: HashSet<String>,
    /// Every declared name.
    declared: HashSet<String>,
}

impl Survey<'_> {
    fn name(&self, sym: Sym) -> String {
        self.interner.resolve_expect(sym).to_string()
    }

    fn declare(&mut self, sym: Sym) {
        let n = self.name(sym);
        self.declared.insert(n);
    }

    fn nested(&mut self, params: &FormalParameterList, body: &FunctionBody) -> ControlFlow<()> {
        self.depth += 1;
        let r = match params.visit_with(self) {
            ControlFlow::Continue(()) => body.visit_with(self),
            stop => stop,
        };
        self.depth -= 1;
        r
    }

    fn callee(&mut self, callee: &Expression) -> ControlFlow<()> {
        match strip(callee) {
            Expression::Identifier(id) if self.depth == 0 => {
                *self.top_calls.entry(id.sym()).or_default() += 1;
                ControlFlow::Continue(())
            }
            // Anonymous only: a named one could store itself and run later.
            Expression::FunctionExpression(f) if self.depth == 0 && f.name().is_none() => {
                self.load_only_exprs.insert(addr(f));
                callee.visit_with(self)
            }
            _ => callee.visit_with(self),
        }
    }
}

impl<'ast> Visitor<'ast> for Survey<'_> {
    type BreakTy = ();

    fn visit_identifier(&mut self, node: &'ast Identifier) -> ControlFlow<()> {
        *self.other_refs.entry(node.sym()).or_default() += 1;
        ControlFlow::Continue(())
    }

    fn visit_call(&mut self, node: &'ast Call) -> ControlFlow<()> {
        self.callee(node.function())?;
        for a in node.args() {
            a.visit_with(self)?;
        }
        ControlFlow::Continue(())
    }

    fn visit_new(&mut self, node: &'ast New) -> ControlFlow<()> {
        self.callee(node.constructor())?;
        for a in node.arguments() {
            a.visit_with(self)?;
        }
        ControlFlow::Continue(())
    }

    fn visit_function_declaration(&mut self, node: &'ast FunctionDeclaration) -> ControlFlow<()> {
        let sym = node.name().sym();
        self.functions.insert(sym);
        self.declare(sym);
        if self.depth == 0 {
            self.top_functions.push((sym, addr(node)));
        }
        self.nested(node.parameters(), node.body())
    }

    fn visit_function_expression(&mut self, node: &'ast FunctionExpression) -> ControlFlow<()> {
        self.nested(node.parameters(), node.body())
    }

    fn visit_arrow_function(&mut self, node: &'ast ArrowFunction) -> ControlFlow<()> {
        self.nested(node.parameters(), node.body())
    }

    fn visit_object_method_definition(
        &mut self,
        node: &'ast ObjectMethodDefinition,
    ) -> ControlFlow<()> {
        if let PropertyName::Literal(id) = node.name() {
            let n = self.name(id.sym());
            self.property_names.insert(n);
        }
        self.nested(node.parameters(), node.body())
    }

    fn visit_property_name(&mut self, node: &'ast PropertyName) -> ControlFlow<()> {
        if let PropertyName::Literal(id) = node {
            let n = self.name(id.sym());
            self.property_names.insert(n);
            return ControlFlow::Continue(());
        }
        node.visit_with(self)
    }

    fn visit_assign(&mut self, node: &'ast Assign) -> ControlFlow<()> {
        if let AssignTarget::Access(PropertyAccess::Simple(s)) = node.lhs()
            && let Some(n) = field_name(s.field(), self.interner)
        {
            self.property_names.insert(n);
        }
        node.visit_with(self)
    }

    fn visit_variable(&mut self, node: &'ast Variable) -> ControlFlow<()> {
        for sym in operations::bound_names(node) {
            self.declare(sym);
        }
        node.visit_with(self)
    }
}

/// One function's local names, as the checks see them.
struct Frame {
    /// Runs only at load: writes are unrestricted.
    load_only: bool,
    /// Names declared in the function (not in nested ones).
    locals: HashSet<Sym>,
    /// Locals that only ever hold fresh objects (or primitives).
    fresh: HashSet<Sym>,
}

impl Frame {
    fn load_only() -> Frame {
        Frame {
            load_only: true,
            locals: HashSet::new(),
            fresh: HashSet::new(),
        }
    }

    fn of(
        params: &FormalParameterList,
        body: &FunctionBody,
        load_only: bool,
        program: &Program,
        interner: &Interner,
    ) -> Frame {
        let mut c = Collect {
            program,
            interner,
            locals: HashSet::new(),
            stale: HashSet::new(),
        };
        for sym in operations::bound_names(params) {
            c.locals.insert(sym);
            c.stale.insert(sym);
        }
        for item in body.statements() {
            let _ = item.visit_with(&mut c);
        }
        let fresh = c.locals.difference(&c.stale).copied().collect();
        Frame {
            load_only,
            locals: c.locals,
            fresh,
        }
    }
}

/// Collects a function's declarations and which of them may hold a
/// non-fresh value, without entering nested functions.
struct Collect<'p, 'i> {
    program: &'p Program,
    interner: &'i Interner,
    locals: HashSet<Sym>,
    stale: HashSet<Sym>,
}

impl<'ast> Visitor<'ast> for Collect<'_, '_> {
    type BreakTy = ();

    fn visit_variable(&mut self, node: &'ast Variable) -> ControlFlow<()> {
        let names = operations::bound_names(node);
        let fresh = node
            .init()
            .is_none_or(|e| is_fresh(e, self.program, self.interner));
        for sym in names {
            self.locals.insert(sym);
            if !fresh || !matches!(node.binding(), Binding::Identifier(_)) {
                self.stale.insert(sym);
            }
        }
        node.visit_with(self)
    }

    fn visit_assign(&mut self, node: &'ast Assign) -> ControlFlow<()> {
        if let AssignTarget::Identifier(id) = node.lhs()
            && (node.op() != AssignOp::Assign || !is_fresh(node.rhs(), self.program, self.interner))
        {
            self.stale.insert(id.sym());
        }
        node.visit_with(self)
    }

    fn visit_for_in_loop(&mut self, node: &'ast ForInLoop) -> ControlFlow<()> {
        self.loop_var(node.initializer());
        node.visit_with(self)
    }

    fn visit_for_of_loop(&mut self, node: &'ast ForOfLoop) -> ControlFlow<()> {
        self.loop_var(node.initializer());
        node.visit_with(self)
    }

    fn visit_catch(&mut self, node: &'ast Catch) -> ControlFlow<()> {
        if let Some(p) = node.parameter() {
            for sym in operations::bound_names(p) {
                self.locals.insert(sym);
                self.stale.insert(sym);
            }
        }
        node.visit_with(self)
    }

    fn visit_function_declaration(&mut self, node: &'ast FunctionDeclaration) -> ControlFlow<()> {
        self.locals.insert(node.name().sym());
        self.stale.insert(node.name().sym());
        ControlFlow::Continue(())
    }

    fn visit_function_expression(&mut self, _: &'ast FunctionExpression) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }

    fn visit_arrow_function(&mut self, _: &'ast ArrowFunction) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }

    fn visit_object_method_definition(
        &mut self,
        _: &'ast ObjectMethodDefinition,
    ) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}

impl Collect<'_, '_> {
    fn loop_var(&mut self, init: &IterableLoopInitializer) {
        let syms = match init {
            IterableLoopInitializer::Identifier(id) => vec![id.sym()],
            IterableLoopInitializer::Var(v) => operations::bound_names(v),
            IterableLoopInitializer::Let(b) | IterableLoopInitializer::Const(b) => {
                operations::bound_names(b)
            }
            _ => Vec::new(),
        };
        for sym in syms {
            self.stale.insert(sym);
        }
    }
}

/// The checking pass over one function body.
struct Check<'p, 'f, 'i, 'q, 'ast> {
    program: &'p Program,
    frame: &'f Frame,
    interner: &'i Interner,
    queue: &'q mut Vec<Unchecked<'ast>>,
    error: Option<PurityError>,
}

impl<'p, 'f, 'i, 'q, 'ast> Check<'p, 'f, 'i, 'q, 'ast> {
    fn new(
        program: &'p Program,
        frame: &'f Frame,
        interner: &'i Interner,
        queue: &'q mut Vec<Unchecked<'ast>>,
    ) -> Self {
        Check {
            program,
            frame,
            interner,
            queue,
            error: None,
        }
    }

    fn item(&mut self, item: &'ast StatementListItem) -> Result<(), PurityError> {
        let _ = item.visit_with(self);
        self.error.take().map_or(Ok(()), Err)
    }

    fn params(&mut self, params: &'ast FormalParameterList) -> Result<(), PurityError> {
        let _ = params.visit_with(self);
        self.error.take().map_or(Ok(()), Err)
    }

    fn name(&self, sym: Sym) -> String {
        self.interner.resolve_expect(sym).to_string()
    }

    fn fail(&mut self, why: PurityError) -> ControlFlow<()> {
        self.error = Some(why);
        ControlFlow::Break(())
    }

    fn function(
        &mut self,
        params: &'ast FormalParameterList,
        body: &'ast FunctionBody,
        at: usize,
    ) -> ControlFlow<()> {
        self.queue.push(Unchecked {
            params,
            body,
            load_only: self.program.load_only.contains(&at),
        });
        ControlFlow::Continue(())
    }

    /// Whether `e` is a local that only ever holds fresh objects.
    fn fresh_local(&self, e: &Expression) -> bool {
        match strip(e) {
            Expression::Identifier(id) => self.frame.fresh.contains(&id.sym()),
            other => is_fresh(other, self.program, self.interner),
        }
    }

    fn write_identifier(&mut self, id: &Identifier) -> ControlFlow<()> {
        if self.frame.load_only || self.frame.locals.contains(&id.sym()) {
            return ControlFlow::Continue(());
        }
        let n = self.name(id.sym());
        self.fail(PurityError::AssignsOuter(n))
    }

    fn write_access(&mut self, access: &PropertyAccess) -> ControlFlow<()> {
        if self.frame.load_only {
            return ControlFlow::Continue(());
        }
        if let PropertyAccess::Simple(s) = access
            && self.fresh_local(s.target())
        {
            return ControlFlow::Continue(());
        }
        self.fail(PurityError::WritesProperty)
    }

    fn loop_target(&mut self, init: &IterableLoopInitializer) -> ControlFlow<()> {
        match init {
            IterableLoopInitializer::Identifier(id) => self.write_identifier(id),
            IterableLoopInitializer::Access(a) => self.write_access(a),
            IterableLoopInitializer::Pattern(_) => self.fail(PurityError::LoopDestructuring),
            _ => ControlFlow::Continue(()),
        }
    }

    fn check_call(&mut self, node: &Call) -> ControlFlow<()> {
        let Expression::PropertyAccess(PropertyAccess::Simple(s)) = strip(node.function()) else {
            return ControlFlow::Continue(());
        };
        let Some(method) = field_name(s.field(), self.interner) else {
            return self.fail(PurityError::ComputedMethod);
        };
        let receiver = s.target();
        let first_fresh = node.args().first().is_none_or(|a| self.fresh_local(a));
        if MUTATORS.contains(&method.as_str()) {
            if self.frame.load_only || self.fresh_local(receiver) {
                return ControlFlow::Continue(());
            }
            return self.fail(PurityError::Mutates(method));
        }
        if ARG_MUTATORS.contains(&method.as_str()) {
            if self.frame.load_only || first_fresh {
                return ControlFlow::Continue(());
            }
            return self.fail(PurityError::Mutates(method));
        }
        if matches!(method.as_str(), "call" | "apply" | "bind") {
            let ok = match strip(receiver) {
                Expression::Identifier(id) => self.program.functions.contains(&id.sym()),
                Expression::PropertyAccess(PropertyAccess::Simple(inner)) => {
                    match field_name(inner.field(), self.interner) {
                        Some(n) if matches!(n.as_str(), "call" | "apply" | "bind") => false,
                        Some(n) if ARG_MUTATORS.contains(&n.as_str()) => false,
                        Some(n) if MUTATORS.contains(&n.as_str()) => {
                            self.frame.load_only || first_fresh
                        }
                        Some(_) => true,
                        None => false,
                    }
                }
                Expression::FunctionExpression(_) => true,
                _ => false,
            };
            if !ok {
                return self.fail(PurityError::UnprovenCall(method));
            }
        }
        ControlFlow::Continue(())
    }
}

impl<'ast> Visitor<'ast> for Check<'_, '_, '_, '_, 'ast> {
    type BreakTy = ();

    fn visit_identifier(&mut self, node: &'ast Identifier) -> ControlFlow<()> {
        let n = self.name(node.sym());
        if BANNED.contains(&n.as_str()) {
            return self.fail(PurityError::Uses(n));
        }
        if BANNED_PROPERTIES.contains(&n.as_str()) {
            return self.fail(PurityError::UsesProperty(n));
        }
        if MUTATORS.contains(&n.as_str()) || ARG_MUTATORS.contains(&n.as_str()) {
            // Reached only outside a call's method position (see visit_call):
            // an alias of a mutating native could be called on anything.
            return self.fail(PurityError::NamesMutator(n));
        }
        if matches!(n.as_str(), "Object" | "RegExp") {
            // Reached only outside `Object.<name>` and `new RegExp(..)`: an
            // alias of `Object` reaches `assign` and its kind by a computed
            // name; a `RegExp` made elsewhere may be sticky.
            return self.fail(PurityError::UsesAsValue(n));
        }
        ControlFlow::Continue(())
    }

    fn visit_this(&mut self, _: &'ast This) -> ControlFlow<()> {
        // Reached only outside `this.<name>`: `this` can be the global
        // object (a sloppy function called plainly, the top level), and
        // the global object reaches every function by a computed name.
        self.fail(PurityError::UsesThis)
    }

    fn visit_simple_property_access(
        &mut self,
        node: &'ast SimplePropertyAccess,
    ) -> ControlFlow<()> {
        let guarded = match strip(node.target()) {
            Expression::This(_) => true,
            Expression::Identifier(id) => self.name(id.sym()) == "Object",
            _ => false,
        };
        if !guarded {
            return node.visit_with(self);
        }
        match node.field() {
            PropertyAccessField::Const(id) => self.visit_identifier(id),
            PropertyAccessField::Expr(_) => self.fail(PurityError::ComputedRead),
        }
    }

    fn visit_reg_exp_literal(&mut self, node: &'ast RegExpLiteral) -> ControlFlow<()> {
        let flags = self.name(node.flags());
        if flags.contains('y') {
            return self.fail(PurityError::StickyRegExp);
        }
        ControlFlow::Continue(())
    }

    fn visit_new(&mut self, node: &'ast New) -> ControlFlow<()> {
        let Expression::Identifier(id) = strip(node.constructor()) else {
            return node.visit_with(self);
        };
        if self.name(id.sym()) != "RegExp" {
            return node.visit_with(self);
        }
        let args = node.arguments();
        let flags_ok = match args.get(1).map(strip) {
            None => true,
            Some(Expression::Literal(l)) => match l.kind() {
                LiteralKind::String(f) => !self.name(*f).contains('y'),
                _ => false,
            },
            Some(_) => false,
        };
        if args.len() > 2 || !flags_ok {
            return self.fail(PurityError::HiddenFlags);
        }
        for a in args {
            a.visit_with(self)?;
        }
        ControlFlow::Continue(())
    }

    fn visit_property_access_field(&mut self, node: &'ast PropertyAccessField) -> ControlFlow<()> {
        match node {
            PropertyAccessField::Const(id) => self.visit_identifier(id),
            PropertyAccessField::Expr(e) => e.visit_with(self),
        }
    }

    fn visit_call(&mut self, node: &'ast Call) -> ControlFlow<()> {
        self.check_call(node)?;
        // The method name itself is allowed in call position.
        match strip(node.function()) {
            Expression::PropertyAccess(PropertyAccess::Simple(s)) => {
                let guarded = match strip(s.target()) {
                    Expression::This(_) => true,
                    Expression::Identifier(id) => self.name(id.sym()) == "Object",
                    _ => false,
                };
                if !guarded {
                    s.target().visit_with(self)?;
                }
                if let PropertyAccessField::Expr(e) = s.field() {
                    if guarded {
                        return self.fail(PurityError::ComputedCall);
                    }
                    e.visit_with(self)?;
                }
            }
            other => other.visit_with(self)?,
        }
        for a in node.args() {
            a.visit_with(self)?;
        }
        ControlFlow::Continue(())
    }

    fn visit_assign(&mut self, node: &'ast Assign) -> ControlFlow<()> {
        match node.lhs() {
            AssignTarget::Identifier(id) => self.write_identifier(id)?,
            AssignTarget::Access(a) => self.write_access(a)?,
            AssignTarget::Pattern(_) => {
                return self.fail(PurityError::Destructuring);
            }
        }
        node.visit_with(self)
    }

    fn visit_update(&mut self, node: &'ast Update) -> ControlFlow<()> {
        match node.target() {
            UpdateTarget::Identifier(id) => self.write_identifier(id)?,
            UpdateTarget::PropertyAccess(a) => self.write_access(a)?,
        }
        node.visit_with(self)
    }

    fn visit_unary(&mut self, node: &'ast Unary) -> ControlFlow<()> {
        if node.op() == UnaryOp::Delete {
            match strip(node.target()) {
                Expression::PropertyAccess(a) => self.write_access(a)?,
                _ => return self.fail(PurityError::DeleteName),
            }
        }
        node.visit_with(self)
    }

    fn visit_for_in_loop(&mut self, node: &'ast ForInLoop) -> ControlFlow<()> {
        self.loop_target(node.initializer())?;
        node.visit_with(self)
    }

    fn visit_for_of_loop(&mut self, node: &'ast ForOfLoop) -> ControlFlow<()> {
        self.loop_target(node.initializer())?;
        node.visit_with(self)
    }

    fn visit_with(&mut self, _: &'ast With) -> ControlFlow<()> {
        self.fail(PurityError::With)
    }

    fn visit_function_declaration(&mut self, node: &'ast FunctionDeclaration) -> ControlFlow<()> {
        self.function(node.parameters(), node.body(), addr(node))
    }

    fn visit_function_expression(&mut self, node: &'ast FunctionExpression) -> ControlFlow<()> {
        self.function(node.parameters(), node.body(), addr(node))
    }

    fn visit_arrow_function(&mut self, node: &'ast ArrowFunction) -> ControlFlow<()> {
        // Arrows see the enclosing `this`: checked like any other function.
        self.function(node.parameters(), node.body(), usize::MAX)
    }

    fn visit_object_method_definition(
        &mut self,
        node: &'ast ObjectMethodDefinition,
    ) -> ControlFlow<()> {
        self.function(node.parameters(), node.body(), usize::MAX)
    }

    fn visit_class_declaration(&mut self, _: &'ast ClassDeclaration) -> ControlFlow<()> {
        self.fail(PurityError::Class)
    }

    fn visit_class_expression(&mut self, _: &'ast ClassExpression) -> ControlFlow<()> {
        self.fail(PurityError::Class)
    }

    fn visit_generator_declaration(&mut self, _: &'ast GeneratorDeclaration) -> ControlFlow<()> {
        self.fail(PurityError::Generator)
    }

    fn visit_generator_expression(&mut self, _: &'ast GeneratorExpression) -> ControlFlow<()> {
        self.fail(PurityError::Generator)
    }

    fn visit_async_function_declaration(
        &mut self,
        _: &'ast AsyncFunctionDeclaration,
    ) -> ControlFlow<()> {
        self.fail(PurityError::Async)
    }

    fn visit_async_function_expression(
        &mut self,
        _: &'ast AsyncFunctionExpression,
    ) -> ControlFlow<()> {
        self.fail(PurityError::Async)
    }

    fn visit_async_arrow_function(&mut self, _: &'ast AsyncArrowFunction) -> ControlFlow<()> {
        self.fail(PurityError::Async)
    }

    fn visit_async_generator_declaration(
        &mut self,
        _: &'ast AsyncGeneratorDeclaration,
    ) -> ControlFlow<()> {
        self.fail(PurityError::AsyncGenerator)
    }

    fn visit_async_generator_expression(
        &mut self,
        _: &'ast AsyncGeneratorExpression,
    ) -> ControlFlow<()> {
        self.fail(PurityError::AsyncGenerator)
    }
}

/// `e` without parentheses.
fn strip(mut e: &Expression) -> &Expression {
    while let Expression::Parenthesized(p) = e {
        e = p.expression();
    }
    e
}

/// Node identity for the survey's load-only set.
fn addr<T>(node: &T) -> usize {
    std::ptr::from_ref(node) as usize
}

/// A property field's name, when it is a constant.
fn field_name(field: &PropertyAccessField, interner: &Interner) -> Option<String> {
    match field {
        PropertyAccessField::Const(id) => Some(interner.resolve_expect(id.sym()).to_string()),
        PropertyAccessField::Expr(e) => match strip(e) {
            Expression::Literal(l) => match l.kind() {
                LiteralKind::String(s) => Some(interner.resolve_expect(*s).to_string()),
                _ => None,
            },
            _ => None,
        },
    }
}

/// Whether evaluating `e` yields a primitive or an object no one else
/// holds.
fn is_fresh(e: &Expression, program: &Program, interner: &Interner) -> bool {
    let name = |sym: Sym| interner.resolve_expect(sym).to_string();
    match strip(e) {
        Expression::Literal(_)
        | Expression::TemplateLiteral(_)
        | Expression::ArrayLiteral(_)
        | Expression::ObjectLiteral(_)
        | Expression::RegExpLiteral(_)
        | Expression::Update(_) => true,
        Expression::Unary(_) => true,
        Expression::Identifier(id) => {
            matches!(name(id.sym()).as_str(), "undefined" | "NaN" | "Infinity")
        }
        Expression::Binary(b) => match b.op() {
            BinaryOp::Logical(LogicalOp::And | LogicalOp::Or | LogicalOp::Coalesce) => {
                is_fresh(b.lhs(), program, interner) && is_fresh(b.rhs(), program, interner)
            }
            BinaryOp::Comma => is_fresh(b.rhs(), program, interner),
            _ => true,
        },
        Expression::Conditional(c) => {
            is_fresh(c.if_true(), program, interner) && is_fresh(c.if_false(), program, interner)
        }
        Expression::New(n) => match strip(n.constructor()) {
            Expression::Identifier(id) => {
                matches!(name(id.sym()).as_str(), "Array" | "Object" | "RegExp")
            }
            _ => false,
        },
        Expression::Call(c) => match strip(c.function()) {
            Expression::PropertyAccess(PropertyAccess::Simple(s)) => {
                let Some(method) = field_name(s.field(), interner) else {
                    return false;
                };
                match strip(s.target()) {
                    Expression::Identifier(id) => {
                        let target = name(id.sym());
                        matches!(
                            (target.as_str(), method.as_str()),
                            ("JSON", "parse") | ("Object", "keys" | "create")
                        ) || (program.host_data_fresh
                            && matches!(method.as_str(), "getData" | "getProbe"))
                    }
                    _ => {
                        program.host_data_fresh && matches!(method.as_str(), "getData" | "getProbe")
                    }
                }
            }
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::analyse;

    fn pure(src: &str) {
        if let Err(e) = analyse(src) {
            panic!("expected memoisable, got: {e}\n{src}");
        }
    }

    fn impure(src: &str, why: &str) {
        match analyse(src) {
            Ok(()) => panic!("expected not memoisable ({why})\n{src}"),
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains(why), "reason {e:?} lacks {why:?}");
            }
        }
    }

    #[test]
    fn shipped_apps_are_classified() {
        let read = |app: &str| {
            std::fs::read_to_string(format!("{}/apps/{app}.js", env!("CARGO_MANIFEST_DIR")))
                .unwrap()
        };
        for app in ["best-rtt", "geo-map", "http-hosts"] {
            if let Err(e) = analyse(&read(app)) {
                panic!("{app}: {e}");
            }
        }
        // fusion-budget caches parsed Fusion values between decisions.
        let err = analyse(&read("fusion-budget")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "writes a property of an object that may outlive the decision (only properties of \
             objects the function created are provably fresh)"
        );
    }

    #[test]
    fn locals_and_fresh_objects_are_fine() {
        pure(
            "function onRequest(request, response) { var a = [], o = {}, i; for (i = 0; i < 3; i++) { a.push(i); o['k' + i] = i; } delete o.k0; a.sort(); response.addARecord('192.0.2.1'); }",
        );
        pure(
            "var t = {a: 1}; function init(config) { t.b = 2; } function onRequest(r, s) { s.addARecord(t.a + '.0.0.1'); }",
        );
        pure(
            "var h = new App({x: 1}); function App(s) { this.go = function (r, o) { var d = r.getData('fusion'); delete d.x; o.respond('a', 'b'); }; } function onRequest(r, o) { h.go(r, o); }",
        );
        pure(
            "var x = (function () { var c = 0; c++; return c; })(); function onRequest(r, o) { o.respond('a', 'b' + x); }",
        );
        pure(
            "function onRequest(r, o) { if (Object.prototype.hasOwnProperty.call({}, 'a')) {} o.respond('a', 'b' + Math.random()); }",
        );
    }

    #[test]
    fn state_between_decisions_is_found() {
        impure(
            "var n = 0; function onRequest(r, o) { n++; }",
            "assigns to `n`",
        );
        impure(
            "var seen = {}; function onRequest(r, o) { seen[r.market] = 1; }",
            "writes a property",
        );
        impure(
            "var l = []; function onRequest(r, o) { l.push(1); }",
            "calls `push`",
        );
        impure(
            "function make() { var c = 0; return function () { c += 1; return c; }; } var next = make(); function onRequest(r, o) { next(); }",
            "assigns to `c`",
        );
        impure(
            "function onRequest(r, o) { this.x = 1; }",
            "writes a property",
        );
        impure(
            "var c = {}; function onRequest(r, o) { var a = c; a.x = 1; }",
            "writes a property",
        );
        impure(
            "var c = {}; function onRequest(r, o) { Object.assign(c, {x: 1}); }",
            "calls `assign`",
        );
        impure(
            "var c = []; function onRequest(r, o) { var p = Array.prototype.push; p.call(c, 1); }",
            "names the mutating method",
        );
        impure(
            "var c = []; function onRequest(r, o) { Array.prototype.push.call(c, 1); }",
            "calls `call`",
        );
        impure(
            "var c = []; function onRequest(r, o) { c['pu' + 'sh'](1); }",
            "computed name",
        );
        impure(
            "function onRequest(r, o) { o.respond('a', '' + Date.now()); }",
            "uses `Date`",
        );
        impure("function onRequest(r, o) { eval('1'); }", "uses `eval`");
        impure(
            "var re = /a/g; function onRequest(r, o) { re.test(r.market); }",
            "calls `test`",
        );
        impure(
            "var s = 0; function init(c) { s = 1; } function onRequest(r, o) { init(); }",
            "assigns to `s`",
        );
        impure(
            "var f; function g() { f = arguments.callee; } g(); function onRequest(r, o) {}",
            "callee",
        );
        impure(
            "var o2 = { getData: function () { return shared; } }; var shared = {}; function onRequest(r, o) { var d = o2.getData(); d.x = 1; }",
            "writes a property",
        );
        impure(
            "function onRequest(r, o) { undeclared = 1; }",
            "assigns to `undeclared`",
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let alphabet: Vec<char> = "var function(){}[];=.+-*/'\"xyz0123 \nthis new delete push call onRequest init eval,:?!&|<>".chars().collect();
        for _ in 0..2000 {
            let len = (seed % 80) as usize;
            let mut s = String::new();
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let _ = analyse(&s);
        }
    }
}
