//! The cost of a CEL device selector: estimated from its syntax tree when it
//! is compiled, and counted while it runs.
//!
//! A selector is written by whoever may create a ResourceClaim, and is
//! evaluated on the scheduling thread against every device. Nested
//! comprehensions multiply (three `.all()` over 80-element lists are half a
//! million iterations), so an unbounded selector lets one tenant hold every
//! other pod's scheduling. Kubernetes bounds a selector twice
//! (`k8s.io/api/resource/v1`, `types.go`): `CELSelectorExpressionMaxLength`
//! (10 Ki characters) and `CELSelectorExpressionMaxCost` (1,000,000 cost
//! units), the latter checked on the estimate when the object is created
//! and on the actual cost each time kube-scheduler evaluates it. Strata does
//! the same with its own cost model (below) and adds what Kubernetes does
//! not have, a budget for all the selector evaluations of one pod's cycle.
//!
//! ## Units
//!
//! One unit per syntax node evaluated, plus, for operations whose work grows
//! with their operands (equality and ordering, `in`, `+`, string searches),
//! one per list or map element and one per ten characters they may traverse.
//! `matches` compiles its pattern each call (the `cel` crate does not cache
//! regexes): it costs the text plus ten units per pattern character,
//! multiplied by the counted repetitions (`{n}`) of a literal pattern, or by
//! a thousand for a pattern computed at run time. A comprehension costs its
//! range, its start and its result once and its body once per element. The
//! sizes are upper bounds: a literal's are known, a device's come from
//! `resource.k8s.io`'s validation (32 attributes and capacities per device,
//! string attributes of 64 characters, names of 63), and `map`/`filter`
//! results are as long as their range. The units are not cel-go's, but of
//! the same order: one per node, one per element or ten characters.
//!
//! ## At run time
//!
//! The `cel` crate counts nothing while it evaluates, so [`instrument`]
//! rewrites each comprehension to call [`TICK`] once per iteration, before
//! the body, with the units that iteration may spend outside nested
//! comprehensions (which tick for themselves). The tick adds them to a
//! per-thread meter and fails once the meter passes its limit; the failure
//! stops the loop at once (a loop condition's error is not deferred), and
//! every later tick fails too, so the enclosing loops stop after at most one
//! more iteration each. Where the rewrite goes keeps the crate's fast paths:
//! `all`/`exists` keep their loop step (errors deferred as cel-go defers
//! them) and `map`/`filter` keep their literal loop condition (in-place
//! append). A selector that passed the estimate never spends more at run
//! time than its estimate, so the run-time limit binds only on the pod's
//! budget across devices, or where a device breaks the API's bounds.

use cel::ExecutionError;
use cel::common::ast::{
    CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, ListExpr, LiteralValue, operators,
};
use cel::common::types::CelInt;
use std::cell::Cell;

/// Longest selector, in bytes (`CELSelectorExpressionMaxLength`).
pub const MAX_EXPRESSION_LEN: usize = 10 * 1024;

/// Deepest syntax tree a selector may have (`device.a.b` is 3 deep).
///
/// The `cel` parser bounds nesting through parentheses, lists and calls (at
/// 96), but builds chains of field selections, indexes and binary operators
/// (`device.a.a.a…`, `x[0][0]…`, `1 + 1 + 1…`) into trees as deep as the
/// chain is long without counting them. The estimate, the instrumentation
/// and the `cel` crate's evaluator all recurse over the tree, one frame or
/// more per level, on the engine's thread (2 MiB of stack): a 10 Ki chain
/// overflowed it and aborted the process (an input written for `fuzz/`'s
/// `dra_cel` target).
/// 32 is deeper than selectors written by hand (`&&` and `||` chains are
/// balanced by the parser: 8 alternatives are 4 deep), and fits that stack
/// even in a debug build, whose frames are the largest (tested on a 2 MiB
/// thread, where an index chain 62 deep did not fit).
pub const MAX_EXPRESSION_DEPTH: usize = 32;

/// Most units one evaluation of one selector may cost, estimated or actual
/// (`CELSelectorExpressionMaxCost`).
pub const MAX_EXPRESSION_COST: u64 = 1_000_000;

/// Most units all the selector evaluations of one pod's scheduling cycle may
/// cost together (Strata's; Kubernetes has no overall budget). A unit took
/// 30–60 ns on the shared 2-core machine (release build, `cargo run
/// --release -p strata-plugins --example cel_cost`): a cycle spends at most
/// about 60–120 ms on selectors, and 10,000 devices still afford 200 units
/// each (an ordinary selector costs 5–20).
pub const MAX_CYCLE_COST: u64 = 2_000_000;

/// Text every cost-limit message carries.
pub const LIMIT_MARK: &str = "CEL cost limit";

/// The metering function [`instrument`] inserts. `#` cannot start an
/// identifier, so no selector can call or shadow it.
pub const TICK: &str = "#cost";

// Upper bounds from resource.k8s.io validation.
const DEVICE_ENTRIES: u64 = 32; // ResourceSliceMaxAttributesAndCapacitiesPerDevice
const VALUE_LEN: u64 = 64; // DeviceAttributeMaxValueLength
const NAME_LEN: u64 = 63; // driver and domain names
const ID_LEN: u64 = 32; // DeviceMaxIDLength
/// Factor for a regex known only at run time.
const UNKNOWN_REGEX: u64 = 1000;

/// What a value may hold at most.
#[derive(Clone, Debug, PartialEq)]
enum Shape {
    /// A number, boolean, null, quantity or version.
    Scalar,
    /// A string or bytes of at most this many bytes.
    Str(u64),
    /// At most this many elements of this shape.
    List(u64, Box<Shape>),
    /// At most this many entries: key and value shapes.
    Map(u64, Box<Shape>, Box<Shape>),
    /// The `device` input.
    Device,
}

fn device_field(name: &str) -> Shape {
    let domains = |v: Shape| {
        Shape::Map(
            DEVICE_ENTRIES,
            Box::new(Shape::Str(NAME_LEN)),
            Box::new(Shape::Map(
                DEVICE_ENTRIES,
                Box::new(Shape::Str(ID_LEN)),
                Box::new(v),
            )),
        )
    };
    match name {
        "driver" => Shape::Str(NAME_LEN),
        "attributes" => domains(Shape::Str(VALUE_LEN)),
        "capacity" => domains(Shape::Scalar),
        _ => Shape::Scalar,
    }
}

const DEVICE_FIELDS: [&str; 4] = [
    "driver",
    "attributes",
    "capacity",
    "allowMultipleAllocations",
];

impl Shape {
    /// Units to traverse a value of this shape.
    fn units(&self) -> u64 {
        match self {
            Shape::Scalar => 1,
            Shape::Str(n) => 1 + n / 10,
            Shape::List(n, e) => 1u64.saturating_add(n.saturating_mul(e.units())),
            Shape::Map(n, k, v) => {
                1u64.saturating_add(n.saturating_mul(k.units().saturating_add(v.units())))
            }
            Shape::Device => DEVICE_FIELDS
                .iter()
                .map(|f| device_field(f).units())
                .fold(1, u64::saturating_add),
        }
    }

    /// Least upper bound of two shapes.
    fn join(self, other: Shape) -> Shape {
        match (self, other) {
            (Shape::Scalar, o) | (o, Shape::Scalar) => o,
            (Shape::Str(a), Shape::Str(b)) => Shape::Str(a.max(b)),
            (Shape::List(a, e), Shape::List(b, f)) => Shape::List(a.max(b), Box::new(e.join(*f))),
            (Shape::Map(a, k, v), Shape::Map(b, l, w)) => {
                Shape::Map(a.max(b), Box::new(k.join(*l)), Box::new(v.join(*w)))
            }
            (Shape::Device, Shape::Device) => Shape::Device,
            // Different kinds (a conditional's two branches): whatever
            // either may hold. A list and a map join as a map whose keys
            // and values each cover the list's elements, so a loop over it
            // counts the longer; a string beside a container is kept as the
            // container's elements.
            (Shape::Device, o) | (o, Shape::Device) => Shape::Device.as_map().join(o),
            (Shape::List(a, e), Shape::Map(b, k, v)) | (Shape::Map(b, k, v), Shape::List(a, e)) => {
                Shape::Map(
                    a.max(b),
                    Box::new(k.join((*e).clone())),
                    Box::new(v.join(*e)),
                )
            }
            (Shape::Str(s), Shape::List(a, e)) | (Shape::List(a, e), Shape::Str(s)) => {
                Shape::List(a.max(s), Box::new(e.join(Shape::Str(s))))
            }
            (Shape::Str(s), Shape::Map(a, k, v)) | (Shape::Map(a, k, v), Shape::Str(s)) => {
                Shape::Map(a.max(s), Box::new(k.join(Shape::Str(s))), v)
            }
        }
    }

    /// The device input as the map it is.
    fn as_map(&self) -> Shape {
        match self {
            Shape::Device => {
                let (n, k, v) = self.iteration();
                Shape::Map(n, Box::new(k), Box::new(v))
            }
            other => other.clone(),
        }
    }

    /// Iterations over a value of this shape, and what the first and second
    /// loop variables hold.
    fn iteration(&self) -> (u64, Shape, Shape) {
        match self {
            Shape::List(n, e) => (*n, Shape::Scalar, (**e).clone()),
            Shape::Map(n, k, v) => (*n, (**k).clone(), (**v).clone()),
            Shape::Device => (
                DEVICE_FIELDS.len() as u64,
                Shape::Str(ID_LEN),
                DEVICE_FIELDS
                    .iter()
                    .map(|f| device_field(f))
                    .fold(Shape::Scalar, Shape::join),
            ),
            _ => (0, Shape::Scalar, Shape::Scalar),
        }
    }

    /// The shape of one element or value.
    fn element(&self) -> Shape {
        match self {
            Shape::List(_, e) | Shape::Map(_, _, e) => (**e).clone(),
            Shape::Device => self.iteration().2,
            _ => Shape::Scalar,
        }
    }

    fn str_len(&self) -> u64 {
        match self {
            Shape::Str(n) => *n,
            _ => 0,
        }
    }
}

/// The estimate for one node: its worst-case cost, the part of it a
/// runtime meter charges outside nested comprehensions' iterations, and
/// what its value may hold.
struct Est {
    cost: u64,
    local: u64,
    shape: Shape,
}

impl Est {
    fn leaf(shape: Shape) -> Est {
        Est {
            cost: 1,
            local: 1,
            shape,
        }
    }
}

/// A selector's estimate and its instrumented syntax tree.
pub struct Instrumented {
    /// Worst-case units of one evaluation.
    pub estimate: u64,
    /// Units charged before the evaluation starts: everything outside
    /// comprehension iterations.
    pub base: u64,
    /// The tree with a [`TICK`] call in every comprehension.
    pub expr: IdedExpr,
}

/// How deep `expr`'s syntax tree is (a leaf is 1). Walks the tree with a
/// stack of its own, so any depth is safe to measure.
pub fn depth(expr: &IdedExpr) -> usize {
    let mut deepest = 0;
    let mut todo: Vec<(&IdedExpr, usize)> = vec![(expr, 1)];
    while let Some((e, d)) = todo.pop() {
        deepest = deepest.max(d);
        let d = d + 1;
        match &e.expr {
            Expr::Select(s) => todo.push((&s.operand, d)),
            Expr::List(l) => todo.extend(l.elements.iter().map(|x| (x, d))),
            Expr::Map(m) => {
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        todo.push((&me.key, d));
                        todo.push((&me.value, d));
                    }
                }
            }
            Expr::Struct(st) => {
                for entry in &st.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        todo.push((&f.value, d));
                    }
                }
            }
            Expr::Call(c) => {
                todo.extend(c.target.as_deref().map(|t| (t, d)));
                todo.extend(c.args.iter().map(|a| (a, d)));
            }
            Expr::Comprehension(c) => {
                for x in [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ] {
                    todo.push((x, d));
                }
            }
            Expr::Literal(_) | Expr::Ident(_) | Expr::Unspecified => {}
        }
    }
    deepest
}

/// Estimates `expr` and inserts the run-time meter.
pub fn instrument(expr: &IdedExpr) -> Instrumented {
    let mut w = Walker { scope: Vec::new() };
    let (est, expr) = w.walk(expr);
    Instrumented {
        estimate: est.cost,
        base: est.local,
        expr,
    }
}

struct Walker {
    /// Loop variables in scope, innermost last.
    scope: Vec<(String, Shape)>,
}

fn node(expr: Expr) -> IdedExpr {
    IdedExpr { id: 0, expr }
}

fn call(name: &str, args: Vec<IdedExpr>) -> IdedExpr {
    node(Expr::Call(CallExpr {
        func_name: name.to_owned(),
        target: None,
        args,
    }))
}

/// `#cost(units) ? then : otherwise`: the tick runs first, and its failure
/// is the conditional's.
fn ticked(units: u64, then: IdedExpr, otherwise: LiteralValue) -> IdedExpr {
    let units = i64::try_from(units.max(1)).unwrap_or(i64::MAX);
    let tick = call(
        TICK,
        vec![node(Expr::Literal(LiteralValue::Int(CelInt::from(units))))],
    );
    call(
        operators::CONDITIONAL,
        vec![tick, then, node(Expr::Literal(otherwise))],
    )
}

/// The parts of a `map`/`filter` loop step, `accu + [item]` or
/// `guard ? accu + [item] : accu`, the shape the `cel` crate appends in
/// place: (guard, the list literal).
fn append_step<'e>(c: &'e ComprehensionExpr) -> Option<(Option<&'e IdedExpr>, &'e ListExpr)> {
    let is_accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(n) if *n == c.accu_var);
    let items = |e: &'e IdedExpr| match &e.expr {
        Expr::Call(k) if k.func_name == operators::ADD && k.target.is_none() => {
            match k.args.as_slice() {
                [l, r] if is_accu(l) => match &r.expr {
                    Expr::List(list) if !list.elements.is_empty() => Some(list),
                    _ => None,
                },
                _ => None,
            }
        }
        _ => None,
    };
    if !is_accu(&c.result) || !matches!(c.loop_cond.expr, Expr::Literal(_)) {
        return None;
    }
    match &c.loop_step.expr {
        Expr::Call(k) if k.func_name == operators::CONDITIONAL && k.target.is_none() => {
            match k.args.as_slice() {
                [g, step, otherwise] if is_accu(otherwise) => Some((Some(g), items(step)?)),
                _ => None,
            }
        }
        _ => Some((None, items(&c.loop_step)?)),
    }
}

/// Counted repetitions of a regex: the product of the `{n}`, `{m,n}`
/// bounds it writes (capped).
fn repetitions(pattern: &str) -> u64 {
    let mut product: u64 = 1;
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find('}') else { break };
        let inner = &rest[..close];
        let bound = inner
            .split(',')
            .filter_map(|p| p.trim().parse::<u64>().ok())
            .max()
            .unwrap_or(1);
        product = product.saturating_mul(bound.max(1));
        rest = &rest[close + 1..];
    }
    product
}

impl Walker {
    fn var(&self, name: &str) -> Option<Shape> {
        self.scope
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
    }

    fn walk(&mut self, e: &IdedExpr) -> (Est, IdedExpr) {
        let id = e.id;
        let (est, expr) = match &e.expr {
            Expr::Literal(l) => {
                let shape = match l {
                    LiteralValue::String(s) => Shape::Str(s.inner().len() as u64),
                    LiteralValue::Bytes(b) => Shape::Str(b.inner().len() as u64),
                    _ => Shape::Scalar,
                };
                (Est::leaf(shape), e.expr.clone())
            }
            Expr::Ident(name) => {
                let shape = match self.var(name) {
                    Some(s) => s,
                    None if name == "device" => Shape::Device,
                    None => Shape::Scalar,
                };
                (Est::leaf(shape), e.expr.clone())
            }
            Expr::Select(s) => {
                let (op, operand) = self.walk(&s.operand);
                let shape = if s.test {
                    Shape::Scalar
                } else {
                    match &op.shape {
                        Shape::Device => device_field(&s.field),
                        other => other.element(),
                    }
                };
                let mut sel = s.clone();
                sel.operand = Box::new(operand);
                (
                    Est {
                        cost: op.cost.saturating_add(1),
                        local: op.local.saturating_add(1),
                        shape,
                    },
                    Expr::Select(sel),
                )
            }
            Expr::List(list) => {
                let mut est = Est::leaf(Shape::Scalar);
                let mut elem = Shape::Scalar;
                let mut elements = Vec::with_capacity(list.elements.len());
                for x in &list.elements {
                    let (ex, rx) = self.walk(x);
                    est.cost = est.cost.saturating_add(ex.cost).saturating_add(1);
                    est.local = est.local.saturating_add(ex.local).saturating_add(1);
                    elem = elem.join(ex.shape);
                    elements.push(rx);
                }
                est.shape = Shape::List(list.elements.len() as u64, Box::new(elem));
                let mut out = list.clone();
                out.elements = elements;
                (est, Expr::List(out))
            }
            Expr::Map(map) => {
                let mut est = Est::leaf(Shape::Scalar);
                let (mut key, mut value) = (Shape::Scalar, Shape::Scalar);
                let mut out = map.clone();
                for entry in &mut out.entries {
                    if let EntryExpr::MapEntry(m) = &mut entry.expr {
                        let (ek, rk) = self.walk(&m.key);
                        let (ev, rv) = self.walk(&m.value);
                        est.cost = est.cost.saturating_add(ek.cost + ev.cost + 1);
                        est.local = est.local.saturating_add(ek.local + ev.local + 1);
                        key = key.join(ek.shape);
                        value = value.join(ev.shape);
                        m.key = rk;
                        m.value = rv;
                    }
                }
                est.shape = Shape::Map(map.entries.len() as u64, Box::new(key), Box::new(value));
                (est, Expr::Map(out))
            }
            Expr::Struct(st) => {
                let mut est = Est::leaf(Shape::Scalar);
                let mut out = st.clone();
                for entry in &mut out.entries {
                    if let EntryExpr::StructField(f) = &mut entry.expr {
                        let (ev, rv) = self.walk(&f.value);
                        est.cost = est.cost.saturating_add(ev.cost + 1);
                        est.local = est.local.saturating_add(ev.local + 1);
                        f.value = rv;
                    }
                }
                (est, Expr::Struct(out))
            }
            Expr::Call(c) => self.call(c),
            Expr::Comprehension(c) => self.comprehension(c),
            Expr::Unspecified => (Est::leaf(Shape::Scalar), Expr::Unspecified),
        };
        (est, IdedExpr { id, expr })
    }

    fn call(&mut self, c: &CallExpr) -> (Est, Expr) {
        let mut out = c.clone();
        let mut ops: Vec<Est> = Vec::with_capacity(c.args.len() + 1);
        if let Some(t) = &c.target {
            let (et, rt) = self.walk(t);
            ops.push(et);
            out.target = Some(Box::new(rt));
        }
        out.args.clear();
        let mut literal_pattern = None;
        for a in &c.args {
            if let Expr::Literal(LiteralValue::String(s)) = &a.expr {
                literal_pattern = Some(repetitions(s.inner()));
            }
            let (ea, ra) = self.walk(a);
            ops.push(ea);
            out.args.push(ra);
        }
        let cost = ops.iter().map(|o| o.cost).fold(1, u64::saturating_add);
        let local = ops.iter().map(|o| o.local).fold(1, u64::saturating_add);
        let units = |i: usize| ops.get(i).map_or(0, |o| o.shape.units());
        let shape = |i: usize| ops.get(i).map_or(Shape::Scalar, |o| o.shape.clone());
        let (extra, result) = match c.func_name.as_str() {
            operators::LOGICAL_AND
            | operators::LOGICAL_OR
            | operators::LOGICAL_NOT
            | operators::NOT_STRICTLY_FALSE
            | "size"
            | operators::HAS => (0, Shape::Scalar),
            operators::CONDITIONAL => (0, shape(1).join(shape(2))),
            operators::INDEX | operators::OPT_INDEX => (0, shape(0).element()),
            operators::EQUALS
            | operators::NOT_EQUALS
            | operators::LESS
            | operators::LESS_EQUALS
            | operators::GREATER
            | operators::GREATER_EQUALS
            | "compareTo"
            | "isGreaterThan"
            | "isLessThan" => (units(0).min(units(1)), Shape::Scalar),
            operators::IN => (units(1), Shape::Scalar),
            operators::ADD => {
                let shape = match (shape(0), shape(1)) {
                    (Shape::Str(a), Shape::Str(b)) => Shape::Str(a.saturating_add(b)),
                    (Shape::List(a, e), Shape::List(b, f)) => {
                        Shape::List(a.saturating_add(b), Box::new(e.join(*f)))
                    }
                    _ => Shape::Scalar,
                };
                (units(0).saturating_add(units(1)), shape)
            }
            "matches" => {
                let pattern = ops.last().map_or(0, |o| o.shape.str_len());
                let factor = literal_pattern.unwrap_or(UNKNOWN_REGEX);
                let compile = pattern.saturating_mul(10).saturating_mul(factor);
                (units(0).saturating_add(compile), Shape::Scalar)
            }
            _ => {
                let all = (0..ops.len()).map(units).fold(0, u64::saturating_add);
                let text: u64 = ops.iter().map(|o| o.shape.str_len()).sum();
                (
                    all,
                    if text > 0 {
                        Shape::Str(text)
                    } else {
                        Shape::Scalar
                    },
                )
            }
        };
        (
            Est {
                cost: cost.saturating_add(extra),
                local: local.saturating_add(extra),
                shape: result,
            },
            Expr::Call(out),
        )
    }

    fn comprehension(&mut self, c: &ComprehensionExpr) -> (Est, Expr) {
        let (range, range_expr) = self.walk(&c.iter_range);
        let (init, init_expr) = self.walk(&c.accu_init);
        let (n, first, second) = range.shape.iteration();
        let depth = self.scope.len();
        match &c.iter_var2 {
            Some(v2) => {
                self.scope.push((c.iter_var.clone(), first));
                self.scope.push((v2.clone(), second));
            }
            None => {
                let only = if matches!(range.shape, Shape::List(..)) {
                    second
                } else {
                    first
                };
                self.scope.push((c.iter_var.clone(), only));
            }
        }
        let mut out = c.clone();
        out.iter_range = range_expr;
        out.accu_init = init_expr;
        let (per_cost, accu) = match append_step(c) {
            Some((guard, list)) => {
                // Appended in place: the guard, the items and one unit each
                // for the `+` and the list.
                let mut cost: u64 = 2;
                let mut local: u64 = 2;
                let mut new_guard = None;
                if let Some(g) = guard {
                    let (eg, rg) = self.walk(g);
                    cost = cost.saturating_add(eg.cost);
                    local = local.saturating_add(eg.local);
                    new_guard = Some(rg);
                }
                let mut elem = Shape::Scalar;
                let mut elements = Vec::with_capacity(list.elements.len());
                for x in &list.elements {
                    let (ex, rx) = self.walk(x);
                    cost = cost.saturating_add(ex.cost);
                    local = local.saturating_add(ex.local);
                    elem = elem.join(ex.shape);
                    elements.push(rx);
                }
                // The tick goes before the first item: its failure fails
                // the step, which map and filter do not defer.
                let first = elements.remove(0);
                elements.insert(0, ticked(local, first, LiteralValue::Null));
                let items = node(Expr::List(ListExpr {
                    elements,
                    optional_indices: list.optional_indices.clone(),
                }));
                let append = call(
                    operators::ADD,
                    vec![node(Expr::Ident(c.accu_var.clone())), items],
                );
                out.loop_step = match new_guard {
                    Some(g) => call(
                        operators::CONDITIONAL,
                        vec![g, append, node(Expr::Ident(c.accu_var.clone()))],
                    ),
                    None => append,
                };
                let accu =
                    Shape::List(n.saturating_mul(list.elements.len() as u64), Box::new(elem));
                (cost, accu)
            }
            None => {
                self.scope.push((c.accu_var.clone(), init.shape.clone()));
                let (cond, cond_expr) = self.walk(&c.loop_cond);
                let (step, step_expr) = self.walk(&c.loop_step);
                self.scope.pop();
                let local = cond.local.saturating_add(step.local);
                // The tick guards the loop condition: a failing condition
                // ends the loop with its error.
                out.loop_cond = ticked(local, cond_expr, LiteralValue::Boolean(false.into()));
                out.loop_step = step_expr;
                (
                    cond.cost.saturating_add(step.cost),
                    init.shape.clone().join(step.shape),
                )
            }
        };
        self.scope.push((c.accu_var.clone(), accu));
        let (result, result_expr) = self.walk(&c.result);
        out.result = result_expr;
        self.scope.truncate(depth);
        let fixed = range
            .cost
            .saturating_add(init.cost)
            .saturating_add(result.cost)
            .saturating_add(1);
        let fixed_local = range
            .local
            .saturating_add(init.local)
            .saturating_add(result.local)
            .saturating_add(1);
        (
            Est {
                cost: fixed.saturating_add(n.saturating_mul(per_cost)),
                local: fixed_local,
                shape: result.shape,
            },
            Expr::Comprehension(Box::new(out)),
        )
    }
}

thread_local! {
    /// (units used, limit) of the evaluation running on this thread.
    static METER: Cell<(u64, u64)> = const { Cell::new((0, u64::MAX)) };
}

/// The [`TICK`] function: charges `units`, failing once over the limit.
pub fn tick(units: i64) -> Result<bool, ExecutionError> {
    METER.with(|m| {
        let (used, limit) = m.get();
        if used > limit {
            // Already out: every later tick fails without counting.
            return Err(ExecutionError::function_error(
                TICK,
                format!("{LIMIT_MARK} of {limit} exceeded"),
            ));
        }
        let used = used.saturating_add(units.max(0) as u64);
        m.set((used, limit));
        if used > limit {
            Err(ExecutionError::function_error(
                TICK,
                format!("{LIMIT_MARK} of {limit} exceeded"),
            ))
        } else {
            Ok(true)
        }
    })
}

/// Runs `f` with this thread's meter at `start` units of `limit`; returns
/// its result and the units used (more than `limit` when it ran out).
pub fn metered<R>(start: u64, limit: u64, f: impl FnOnce() -> R) -> (R, u64) {
    let saved = METER.with(|m| m.replace((start, limit)));
    let r = f();
    let (used, _) = METER.with(|m| m.replace(saved));
    (r, used)
}

/// The units left for one pod's cycle.
#[derive(Clone, Debug)]
pub struct Budget {
    left: u64,
    total: u64,
}

impl Budget {
    /// A cycle's budget, [`MAX_CYCLE_COST`].
    pub fn per_cycle() -> Budget {
        Budget::new(MAX_CYCLE_COST)
    }

    /// A budget of `units`.
    pub fn new(units: u64) -> Budget {
        Budget {
            left: units,
            total: units,
        }
    }

    /// Units left.
    pub fn left(&self) -> u64 {
        self.left
    }

    /// Units spent so far.
    pub fn spent(&self) -> u64 {
        self.total - self.left
    }

    /// Whether nothing was spent yet.
    pub fn is_full(&self) -> bool {
        self.left == self.total
    }

    pub(crate) fn charge(&mut self, units: u64) {
        self.left = self.left.saturating_sub(units);
    }

    /// The cycle's total.
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accelerators::dra::cel::{Attr, Env, MatchError, Selector, device_value};
    use cel::Program;
    use proptest::prelude::*;

    fn list(n: usize) -> String {
        let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        format!("[{}]", items.join(", "))
    }

    /// The issue's selector: three nested `.all()` over `n`-element lists.
    fn nested_all(n: usize) -> String {
        let l = list(n);
        format!("{l}.all(a, {l}.all(b, {l}.all(c, a + b + c >= 0)))")
    }

    fn gpu() -> cel::Value {
        device_value(
            "gpu.example.com",
            &[
                ("model".into(), Attr::Str("A100".into())),
                ("numa".into(), Attr::Int(1)),
            ],
            &[],
            false,
        )
    }

    /// Instruments `expr` without the compile-time limits, to test the
    /// run-time meter alone.
    fn unchecked(expr: &str) -> Selector {
        let p = Program::compile(expr).unwrap();
        Selector::instrumented(expr, instrument(p.expression()))
    }

    /// Runs `sel` against `limit` units; (result, units used).
    fn run(env: &Env, sel: &Selector, limit: u64) -> (Result<bool, MatchError>, u64) {
        let mut b = Budget::new(limit);
        let r = env.matches(sel, &gpu(), &mut b);
        (r, b.spent())
    }

    #[test]
    fn the_issues_selectors_do_not_compile() {
        let mut env = Env::new();
        for n in [80, 300] {
            let expr = nested_all(n);
            assert!(expr.len() <= MAX_EXPRESSION_LEN, "{}", expr.len());
            let est = instrument(Program::compile(&expr).unwrap().expression()).estimate;
            // n³ innermost iterations of several units each.
            assert!(est > (n as u64).pow(3), "{n}: {est}");
            let e = env.compile(&expr).err().unwrap();
            assert!(
                e.contains(LIMIT_MARK) && e.contains(&est.to_string()),
                "{e}"
            );
        }
        // Smaller lists fit: 20³ iterations.
        let sel = env.compile(&nested_all(20)).unwrap();
        assert!(sel.estimate < MAX_EXPRESSION_COST, "{}", sel.estimate);
        assert_eq!(run(&env, &sel, MAX_EXPRESSION_COST).0, Ok(true));
    }

    /// A kind of chain, and the chain of that kind `n` long.
    type Chain = (&'static str, fn(usize) -> String);

    /// Chains the parser does not count as nesting (fields, indexes,
    /// operators) and nested loops: up to the depth limit they compile and
    /// evaluate on a 2 MiB stack, the engine thread's, in a debug build;
    /// past it, up to the longest selector, they are refused by name. The
    /// field chain at 4,000 deep overflowed the stack (fuzz/'s dra_cel).
    #[test]
    fn deep_selectors_are_refused_before_they_overflow_the_stack() {
        let kinds: [Chain; 4] = [
            ("fields", |n| format!("device{}", ".a".repeat(n))),
            ("indexes", |n| {
                format!("device.attributes{}", "[\"x\"]".repeat(n))
            }),
            ("sums", |n| format!("1{}", " + 1".repeat(n))),
            ("loops", |n| {
                format!("{}true{}", "[1].all(x, ".repeat(n), ")".repeat(n))
            }),
        ];
        // Of each kind, the longest chain that the parser takes and the
        // limit allows, and the next one (measured on a large stack: the
        // parser's own recursion is not under test here).
        let longest = move || {
            kinds.map(|(kind, chain)| {
                let fits = |n: usize| {
                    Program::compile(&chain(n))
                        .is_ok_and(|p| depth(p.expression()) <= MAX_EXPRESSION_DEPTH)
                };
                let mut n = 1;
                while n < 4 * MAX_EXPRESSION_DEPTH && fits(n + 1) {
                    n += 1;
                }
                (kind, chain(n), chain(n + 1))
            })
        };
        let cases = std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(longest)
            .unwrap()
            .join()
            .unwrap();
        let n = MAX_EXPRESSION_LEN;
        let longest_text = [
            format!("device{}", ".a".repeat((n - 6) / 2)),
            format!("device.attributes{}", "[\"x\"]".repeat((n - 17) / 5)),
            format!("1{}", "+1".repeat((n - 1) / 2)),
            format!("{}true{}", "[1].all(x, ".repeat(800), ")".repeat(800)),
        ];
        let check = move || {
            let mut env = Env::new();
            let limit = format!("limit of {MAX_EXPRESSION_DEPTH}");
            for (kind, ok, over) in &cases {
                let sel = env.compile(ok).unwrap_or_else(|e| panic!("{kind}: {e}"));
                let _ = env.matches(&sel, &gpu(), &mut Budget::per_cycle());
                let e = env.compile(over).err().unwrap();
                assert!(
                    e.contains(&limit) || e.contains("Recursion limit"),
                    "{kind}: {e}"
                );
            }
            for expr in &longest_text {
                assert!(expr.len() <= MAX_EXPRESSION_LEN);
                let e = env.compile(expr).err().unwrap();
                assert!(e.contains(&limit) || e.contains("Recursion limit"), "{e}");
            }
        };
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(check)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn too_long_is_refused() {
        let expr = format!("device.driver == \"{}\"", "x".repeat(MAX_EXPRESSION_LEN));
        let e = Env::new().compile(&expr).err().unwrap();
        assert!(e.contains("characters long") && e.len() < 400, "{e}");
    }

    #[test]
    fn the_meter_stops_the_issues_selector() {
        // Past the compile-time check (as a selector whose estimate was
        // wrong would be), the run-time meter stops it just past the limit.
        let env = Env::new();
        for n in [80, 300] {
            let sel = unchecked(&nested_all(n));
            let (r, used) = run(&env, &sel, MAX_EXPRESSION_COST);
            assert_eq!(
                r,
                Err(MatchError::Cost {
                    limit: MAX_EXPRESSION_COST,
                    per_cycle: false
                })
            );
            assert_eq!(used, MAX_EXPRESSION_COST);
            // The meter's own count passes the limit by one iteration's
            // units at most (here an inner list literal and its loop).
            let (r, counted) = env.evaluate(&sel, &gpu(), MAX_EXPRESSION_COST);
            assert!(r.is_err());
            assert!(
                counted > MAX_EXPRESSION_COST && counted <= MAX_EXPRESSION_COST + 2 * n as u64,
                "{n}: {counted}"
            );
        }
    }

    #[test]
    fn ordinary_selectors_are_cheap() {
        let mut env = Env::new();
        for expr in [
            r#"device.driver == "gpu.example.com""#,
            r#"device.attributes["gpu.example.com"].model == "A100""#,
            r#"device.attributes["gpu.example.com"].numa >= 1 && "model" in device.attributes["gpu.example.com"]"#,
            r#"device.attributes["gpu.example.com"].model.matches("^A1[0-9]{2}$")"#,
            r#"device.attributes.exists(d, d == "gpu.example.com")"#,
            r#"["A100", "H100"].exists(m, device.attributes["gpu.example.com"].model == m)"#,
        ] {
            let sel = env.compile(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert!(sel.estimate < 5_000, "{expr}: {}", sel.estimate);
            let (r, used) = run(&env, &sel, MAX_EXPRESSION_COST);
            assert_eq!(r, Ok(true), "{expr}");
            assert!(used <= sel.estimate, "{expr}: {used} > {}", sel.estimate);
        }
    }

    #[test]
    fn map_and_filter_are_metered() {
        let env = Env::new();
        let sel = unchecked(&format!(
            "{l}.map(a, {l}.filter(b, b > a)).all(x, size(x) >= 0)",
            l = list(50)
        ));
        let (r, used) = run(&env, &sel, MAX_EXPRESSION_COST);
        assert_eq!(r, Ok(true));
        assert!(
            used > 2_500 && used <= sel.estimate,
            "{used} {}",
            sel.estimate
        );
        let (r, used) = run(&env, &sel, 1_000);
        assert!(matches!(r, Err(MatchError::Cost { .. })), "{r:?}");
        assert_eq!(used, 1_000);
    }

    #[test]
    fn errors_inside_loops_keep_their_meaning() {
        // cel-go's rules: an error beside a deciding operand is absorbed.
        let mut env = Env::new();
        for (expr, want) in [
            ("[1, 0].all(x, 1 / x > 5)", Ok(false)),
            ("[1, 0].exists(x, 1 / x == 1)", Ok(true)),
            ("[2, 3].exists_one(x, x == 3)", Ok(true)),
            ("[1, 2, 3].filter(x, x > 1) == [2, 3]", Ok(true)),
        ] {
            let sel = env.compile(expr).unwrap();
            assert_eq!(run(&env, &sel, MAX_EXPRESSION_COST).0, want, "{expr}");
        }
        let sel = env.compile("[0].all(x, 1 / x > 5)").unwrap();
        assert!(matches!(
            run(&env, &sel, MAX_EXPRESSION_COST).0,
            Err(MatchError::Eval(_))
        ));
    }

    /// Random selectors over lists, loops, comparisons and the device.
    fn expr_strategy() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            (0i64..100).prop_map(|i| i.to_string()),
            Just("device.driver".to_owned()),
            Just(r#"device.attributes["gpu.example.com"].model"#.to_owned()),
            Just(r#"device.attributes["gpu.example.com"].numa"#.to_owned()),
            Just(r#""A100""#.to_owned()),
            (0usize..60).prop_map(list),
            Just("true".to_owned()),
        ];
        leaf.prop_recursive(5, 64, 3, |inner| {
            let var = prop_oneof![Just("a"), Just("b"), Just("c")];
            prop_oneof![
                (
                    inner.clone(),
                    prop_oneof![
                        Just("all"),
                        Just("exists"),
                        Just("exists_one"),
                        Just("map"),
                        Just("filter")
                    ],
                    var.clone(),
                    inner.clone()
                )
                    .prop_map(|(r, m, v, b)| format!("({r}).{m}({v}, {b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) == ({b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) && ({b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) || ({b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) + ({b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) in ({b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) < ({b})")),
                inner.clone().prop_map(|a| format!("size({a})")),
                (inner.clone(), var).prop_map(|(a, v)| format!("({a}).all({v}, {v} == {v})")),
                Just("a".to_owned()),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// No selector panics; an accepted one never costs more at run time
        /// than its estimate; none runs past the meter's limit.
        #[test]
        fn random_selectors_stay_within_budget(expr in expr_strategy()) {
            let mut env = Env::new();
            let accepted = env.compile(&expr);
            let p = match Program::compile(&expr) {
                Ok(p) => p,
                Err(_) => return Ok(()),
            };
            let sel = Selector::instrumented(&expr, instrument(p.expression()));
            if let Ok(accepted) = &accepted {
                let (_, used) = run(&env, accepted, MAX_EXPRESSION_COST);
                prop_assert!(used <= accepted.estimate, "{} > {}", used, accepted.estimate);
            }
            for limit in [200, 5_000] {
                let (_, used) = run(&env, &sel, limit);
                prop_assert!(used <= limit);
                // The meter passes the limit by the one tick that crossed
                // it, at most one iteration's estimate.
                let (_, counted) = env.evaluate(&sel, &gpu(), limit);
                prop_assert!(
                    counted <= limit.saturating_add(sel.estimate),
                    "{} {}", counted, limit
                );
            }
        }
    }
}
