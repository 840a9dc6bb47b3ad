//! CEL device selectors: compiled once per expression, evaluated against one
//! device at a time, with the Kubernetes DRA environment.
//!
//! The input is `device` with `driver`, `attributes` and `capacity` (maps
//! from a domain to the device's attributes or capacities in that domain;
//! unqualified names belong to the driver's domain) and
//! `allowMultipleAllocations`. Version attributes are semantic versions and
//! capacities are quantities, as in Kubernetes: `quantity("1Gi")`,
//! `semver("1.2.3")`, and the methods `compareTo`, `isGreaterThan`,
//! `isLessThan` on both, `asInteger`, `asApproximateFloat`, `sign`,
//! `isInteger` on quantities and `major`, `minor`, `patch` on versions.
//!
//! A selector that does not compile is reported with its text and the
//! parser's message; one that evaluates to anything but a boolean, or fails
//! at run time (a missing attribute), does not select the device, and the
//! first such error is kept for the message of a claim that ends up with no
//! device (Kubernetes aborts the allocation instead; Strata keeps looking at
//! other devices and reports the error if none fit).
//!
//! Every selector is bounded as Kubernetes bounds it (see [`super::cost`]):
//! one longer than 10 Ki characters or whose estimated cost passes
//! 1,000,000 units does not compile, and each evaluation is metered against
//! that limit and against what is left of the pod's cycle [`Budget`].
//! Strata also refuses a selector whose syntax tree is deeper than
//! [`MAX_EXPRESSION_DEPTH`], which the evaluator's recursion could not take.

use super::cost::{
    self, Budget, LIMIT_MARK, MAX_EXPRESSION_COST, MAX_EXPRESSION_DEPTH, MAX_EXPRESSION_LEN,
};
use cel::extractors::This;
use cel::objects::{Map, Opaque, Value};
use cel::{Context, ExecutionError, IdedExpr, Program};
use std::collections::HashMap;
use std::sync::Arc;
use strata_scheduler::resources::Quantity as KQuantity;

/// A Kubernetes quantity in CEL, in milli-units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CelQuantity(pub i128);

impl Opaque for CelQuantity {
    fn runtime_type_name(&self) -> &str {
        "kubernetes.Quantity"
    }
}

/// A semantic version in CEL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CelSemver(pub semver::Version);

impl Opaque for CelSemver {
    fn runtime_type_name(&self) -> &str {
        "kubernetes.Semver"
    }
}

/// Parses a Kubernetes quantity into milli-units.
pub fn quantity_milli(s: &str) -> Option<i128> {
    KQuantity::parse(s).ok().map(|q| q.milli_value() as i128)
}

fn err(msg: impl std::fmt::Display) -> ExecutionError {
    ExecutionError::function_error("dra", msg.to_string())
}

fn quantity_of(v: &Arc<dyn Opaque>) -> Option<i128> {
    v.downcast_ref::<CelQuantity>().map(|q| q.0)
}

fn semver_of(v: &Arc<dyn Opaque>) -> Option<&semver::Version> {
    v.downcast_ref::<CelSemver>().map(|s| &s.0)
}

fn compare(a: &Arc<dyn Opaque>, b: &Arc<dyn Opaque>) -> Result<std::cmp::Ordering, ExecutionError> {
    if let (Some(x), Some(y)) = (quantity_of(a), quantity_of(b)) {
        return Ok(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (semver_of(a), semver_of(b)) {
        return Ok(x.cmp(y));
    }
    Err(err("compareTo needs two quantities or two versions"))
}

/// A compiled selector.
pub struct Selector {
    /// The parsed expression with the run-time meter inserted.
    expr: IdedExpr,
    /// Units charged before evaluating (everything outside loops).
    base: u64,
    /// Worst-case units of one evaluation.
    pub estimate: u64,
    /// The expression as written.
    pub source: String,
}

/// Why a selector did not say whether a device matches.
#[derive(Clone, Debug, PartialEq)]
pub enum MatchError {
    /// It failed, or gave something else than a boolean: the device is not
    /// selected.
    Eval(String),
    /// It ran out of units: this evaluation's (`per_cycle` false) or the
    /// pod's cycle budget.
    Cost {
        /// The limit that was passed.
        limit: u64,
        /// Whether it was what was left of the cycle's budget.
        per_cycle: bool,
    },
}

impl std::fmt::Display for MatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MatchError::Eval(e) => f.write_str(e),
            MatchError::Cost {
                limit,
                per_cycle: false,
            } => write!(
                f,
                "exceeded the {LIMIT_MARK} of {limit} units per evaluation (CELSelectorExpressionMaxCost)"
            ),
            MatchError::Cost {
                limit,
                per_cycle: true,
            } => write!(
                f,
                "exceeded the {LIMIT_MARK} {CYCLE_MARK} ({limit} of {} units left)",
                cost::MAX_CYCLE_COST
            ),
        }
    }
}

/// Text of the message of a selector over the cycle's budget.
pub const CYCLE_MARK: &str = "per scheduling cycle";

/// A selector's text for a message: at most 120 characters.
pub fn shorten(expr: &str) -> String {
    match expr.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &expr[..i]),
        None => expr.to_owned(),
    }
}

/// The evaluation environment: a root context with the DRA functions.
pub struct Env {
    root: Context<'static, 'static>,
    compiled: HashMap<String, Result<Arc<Selector>, String>>,
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

impl Env {
    /// The environment with Kubernetes' quantity and semver functions.
    pub fn new() -> Env {
        let mut root = Context::default();
        let _ = root.add_function(
            "quantity",
            |s: Arc<String>| -> Result<Arc<dyn Opaque>, ExecutionError> {
                quantity_milli(&s)
                    .map(|m| Arc::new(CelQuantity(m)) as Arc<dyn Opaque>)
                    .ok_or_else(|| err(format!("quantity({s:?}): not a valid quantity")))
            },
        );
        let _ = root.add_function(
            "semver",
            |s: Arc<String>| -> Result<Arc<dyn Opaque>, ExecutionError> {
                semver::Version::parse(s.trim_start_matches('v'))
                    .map(|v| Arc::new(CelSemver(v)) as Arc<dyn Opaque>)
                    .map_err(|e| err(format!("semver({s:?}): {e}")))
            },
        );
        let _ = root.add_function(
            "compareTo",
            |This(a): This<Arc<dyn Opaque>>, b: Arc<dyn Opaque>| -> Result<i64, ExecutionError> {
                Ok(compare(&a, &b)? as i64)
            },
        );
        let _ = root.add_function(
            "isGreaterThan",
            |This(a): This<Arc<dyn Opaque>>, b: Arc<dyn Opaque>| -> Result<bool, ExecutionError> {
                Ok(compare(&a, &b)? == std::cmp::Ordering::Greater)
            },
        );
        let _ = root.add_function(
            "isLessThan",
            |This(a): This<Arc<dyn Opaque>>, b: Arc<dyn Opaque>| -> Result<bool, ExecutionError> {
                Ok(compare(&a, &b)? == std::cmp::Ordering::Less)
            },
        );
        let _ = root.add_function(
            "asInteger",
            |This(a): This<Arc<dyn Opaque>>| -> Result<i64, ExecutionError> {
                let m = quantity_of(&a).ok_or_else(|| err("asInteger needs a quantity"))?;
                if m % 1000 != 0 {
                    return Err(err("asInteger: the quantity is not an integer"));
                }
                i64::try_from(m / 1000).map_err(|_| err("asInteger: out of range"))
            },
        );
        let _ = root.add_function(
            "isInteger",
            |This(a): This<Arc<dyn Opaque>>| -> Result<bool, ExecutionError> {
                Ok(quantity_of(&a).ok_or_else(|| err("isInteger needs a quantity"))? % 1000 == 0)
            },
        );
        let _ = root.add_function(
            "asApproximateFloat",
            |This(a): This<Arc<dyn Opaque>>| -> Result<f64, ExecutionError> {
                Ok(
                    quantity_of(&a).ok_or_else(|| err("asApproximateFloat needs a quantity"))?
                        as f64
                        / 1000.0,
                )
            },
        );
        let _ = root.add_function(
            "sign",
            |This(a): This<Arc<dyn Opaque>>| -> Result<i64, ExecutionError> {
                Ok(quantity_of(&a)
                    .ok_or_else(|| err("sign needs a quantity"))?
                    .signum() as i64)
            },
        );
        let _ = root.add_function(cost::TICK, cost::tick);
        let _ = root.add_function(
            "major",
            |This(a): This<Arc<dyn Opaque>>| -> Result<i64, ExecutionError> {
                Ok(semver_of(&a)
                    .ok_or_else(|| err("major needs a version"))?
                    .major as i64)
            },
        );
        let _ = root.add_function(
            "minor",
            |This(a): This<Arc<dyn Opaque>>| -> Result<i64, ExecutionError> {
                Ok(semver_of(&a)
                    .ok_or_else(|| err("minor needs a version"))?
                    .minor as i64)
            },
        );
        let _ = root.add_function(
            "patch",
            |This(a): This<Arc<dyn Opaque>>| -> Result<i64, ExecutionError> {
                Ok(semver_of(&a)
                    .ok_or_else(|| err("patch needs a version"))?
                    .patch as i64)
            },
        );
        Env {
            root,
            compiled: HashMap::new(),
        }
    }

    /// Compiles `expr` once (cached by text). The error names the
    /// expression and what the parser found wrong, or the limit it passes:
    /// its length, or its estimated cost.
    pub fn compile(&mut self, expr: &str) -> Result<Arc<Selector>, String> {
        if let Some(r) = self.compiled.get(expr) {
            return r.clone();
        }
        let r = compile(expr);
        if self.compiled.len() > 4096 {
            self.compiled.clear();
        }
        self.compiled.insert(expr.to_owned(), r.clone());
        r
    }

    /// Evaluates `sel` for `device` (a value built by [`device_value`]),
    /// charging `budget`: at most [`MAX_EXPRESSION_COST`] units, or what is
    /// left of the budget if less.
    pub fn matches(
        &self,
        sel: &Selector,
        device: &Value,
        budget: &mut Budget,
    ) -> Result<bool, MatchError> {
        let limit = MAX_EXPRESSION_COST.min(budget.left());
        let (r, used) = self.evaluate(sel, device, limit);
        budget.charge(used.min(limit));
        if used > limit {
            return Err(MatchError::Cost {
                limit,
                per_cycle: limit < MAX_EXPRESSION_COST,
            });
        }
        match r {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(MatchError::Eval(format!(
                "selector `{}` gave {other:?}, not a boolean",
                shorten(&sel.source)
            ))),
            Err(e) => Err(MatchError::Eval(format!(
                "selector `{}` failed: {e}",
                shorten(&sel.source)
            ))),
        }
    }
}

impl Env {
    /// Evaluates `sel` for `device` with the meter at `limit`: the result
    /// and the units the meter counted (more than `limit` when it ran out;
    /// the evaluation did not start when the part outside loops alone is
    /// over).
    pub fn evaluate(
        &self,
        sel: &Selector,
        device: &Value,
        limit: u64,
    ) -> (cel::ResolveResult, u64) {
        if sel.base > limit {
            return (
                Err(ExecutionError::function_error(cost::TICK, LIMIT_MARK)),
                sel.base,
            );
        }
        let mut ctx = self.root.new_inner_scope();
        ctx.add_variable_from_value("device", device.clone());
        cost::metered(sel.base, limit, || Value::resolve(&sel.expr, &ctx))
    }
}

impl Selector {
    /// A selector from its text and its instrumented tree, with no limit
    /// checked (for tests and measurements; [`Env::compile`] checks them).
    pub fn instrumented(source: &str, inst: cost::Instrumented) -> Selector {
        Selector {
            expr: inst.expr,
            base: inst.base,
            estimate: inst.estimate,
            source: source.to_owned(),
        }
    }
}

/// Stack of the thread a selector is parsed on.
const PARSE_STACK: usize = 16 << 20;

/// Parses, estimates and instruments `expr`, on a thread of its own: the
/// `cel` parser recurses through a dozen grammar rules for each nested
/// call, list, map or parenthesis, up to its own limit of 96 levels, which
/// is more than the engine thread's 2 MiB of stack holds (16 nested
/// `.all()` overflowed it in a debug build). Compiling is once per
/// selector text ([`Env::compile`] caches it), so the thread costs little.
fn compile(expr: &str) -> Result<Arc<Selector>, String> {
    if expr.len() > MAX_EXPRESSION_LEN {
        return Err(format!(
            "CEL selector `{}` does not compile: it is {} characters long, over the limit of {MAX_EXPRESSION_LEN} (CELSelectorExpressionMaxLength)",
            shorten(expr),
            expr.len()
        ));
    }
    std::thread::scope(|s| {
        let parser = std::thread::Builder::new()
            .name("strata-cel-parse".into())
            .stack_size(PARSE_STACK)
            .spawn_scoped(s, || compile_here(expr))
            .map_err(|e| {
                format!(
                    "CEL selector `{}` was not compiled: no thread to parse it on: {e}",
                    shorten(expr)
                )
            })?;
        parser
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// [`compile`] past the length check, on the thread it runs on.
fn compile_here(expr: &str) -> Result<Arc<Selector>, String> {
    let program = Program::compile(expr).map_err(|e| {
        let msg = e.to_string();
        let first = msg.lines().next().unwrap_or("").trim().to_owned();
        format!("CEL selector `{}` does not compile: {first}", shorten(expr))
    })?;
    let depth = cost::depth(program.expression());
    if depth > MAX_EXPRESSION_DEPTH {
        return Err(format!(
            "CEL selector `{}` does not compile: it is nested {depth} deep (chained fields, indexes or operators), over the limit of {MAX_EXPRESSION_DEPTH}",
            shorten(expr)
        ));
    }
    let inst = cost::instrument(program.expression());
    if inst.estimate > MAX_EXPRESSION_COST {
        return Err(format!(
            "CEL selector `{}` has an estimated cost of {} units, over the {LIMIT_MARK} of {MAX_EXPRESSION_COST} (CELSelectorExpressionMaxCost)",
            shorten(expr),
            inst.estimate
        ));
    }
    Ok(Arc::new(Selector::instrumented(expr, inst)))
}

/// A device attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// Integer.
    Int(i64),
    /// Boolean.
    Bool(bool),
    /// String.
    Str(String),
    /// Semantic version.
    Version(semver::Version),
}

impl Attr {
    fn value(&self) -> Value {
        match self {
            Attr::Int(i) => Value::Int(*i),
            Attr::Bool(b) => Value::Bool(*b),
            Attr::Str(s) => Value::String(Arc::new(s.clone())),
            Attr::Version(v) => Value::Opaque(Arc::new(CelSemver(v.clone()))),
        }
    }
}

/// Splits a qualified name into (domain, name); unqualified names belong to
/// `driver`'s domain.
pub fn qualify<'a>(name: &'a str, driver: &'a str) -> (&'a str, &'a str) {
    match name.rsplit_once('/') {
        Some((d, n)) => (d, n),
        None => (driver, name),
    }
}

/// The `device` input for one device.
pub fn device_value(
    driver: &str,
    attributes: &[(String, Attr)],
    capacity: &[(String, i128)],
    allow_multiple: bool,
) -> Value {
    let mut attrs: HashMap<String, HashMap<String, Value>> = HashMap::new();
    attrs.entry(driver.to_owned()).or_default();
    for (k, v) in attributes {
        let (d, n) = qualify(k, driver);
        attrs
            .entry(d.to_owned())
            .or_default()
            .insert(n.to_owned(), v.value());
    }
    let mut caps: HashMap<String, HashMap<String, Value>> = HashMap::new();
    caps.entry(driver.to_owned()).or_default();
    for (k, m) in capacity {
        let (d, n) = qualify(k, driver);
        caps.entry(d.to_owned())
            .or_default()
            .insert(n.to_owned(), Value::Opaque(Arc::new(CelQuantity(*m))));
    }
    let to_map = |m: HashMap<String, HashMap<String, Value>>| -> Value {
        let outer: HashMap<String, Value> = m
            .into_iter()
            .map(|(d, inner)| (d, Value::Map(Map::from(inner))))
            .collect();
        Value::Map(Map::from(outer))
    };
    let mut top: HashMap<String, Value> = HashMap::new();
    top.insert("driver".into(), Value::String(Arc::new(driver.to_owned())));
    top.insert("attributes".into(), to_map(attrs));
    top.insert("capacity".into(), to_map(caps));
    top.insert(
        "allowMultipleAllocations".into(),
        Value::Bool(allow_multiple),
    );
    Value::Map(Map::from(top))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu() -> Value {
        device_value(
            "gpu.example.com",
            &[
                ("model".into(), Attr::Str("A100".into())),
                ("ext.example.com/family".into(), Attr::Str("ampere".into())),
                (
                    "driverVersion".into(),
                    Attr::Version(semver::Version::parse("1.2.3").unwrap()),
                ),
                ("cores".into(), Attr::Int(108)),
                ("nvlink".into(), Attr::Bool(true)),
            ],
            &[("memory".into(), quantity_milli("40Gi").unwrap())],
            false,
        )
    }

    #[test]
    fn kubernetes_examples_evaluate() {
        let mut env = Env::new();
        let d = gpu();
        let cases = [
            (r#"device.driver == "gpu.example.com""#, true),
            (
                r#"device.attributes["gpu.example.com"].model == "A100""#,
                true,
            ),
            (
                r#"device.attributes["ext.example.com"].family == "ampere""#,
                true,
            ),
            (
                r#"device.capacity["gpu.example.com"].memory.compareTo(quantity("32Gi")) >= 0"#,
                true,
            ),
            (
                r#"device.capacity["gpu.example.com"].memory.isGreaterThan(quantity("64Gi"))"#,
                false,
            ),
            (
                r#"device.attributes["gpu.example.com"].driverVersion.isGreaterThan(semver("1.0.0"))"#,
                true,
            ),
            (
                r#"device.attributes["gpu.example.com"].cores > 100 && device.attributes["gpu.example.com"].nvlink"#,
                true,
            ),
            (r#""model" in device.attributes["gpu.example.com"]"#, true),
            (r#"device.allowMultipleAllocations"#, false),
            (
                r#"device.attributes["gpu.example.com"].model.matches("^A1")"#,
                true,
            ),
        ];
        for (expr, want) in cases {
            let sel = env.compile(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert_eq!(
                env.matches(&sel, &d, &mut Budget::per_cycle()),
                Ok(want),
                "{expr}"
            );
        }
    }

    #[test]
    fn bad_selectors_are_named() {
        let mut env = Env::new();
        let e = env.compile(r#"device.driver == "#).err().unwrap();
        assert!(
            e.contains("device.driver ==") && e.contains("does not compile"),
            "{e}"
        );
        let sel = env
            .compile(r#"device.attributes["gpu.example.com"].missing == 1"#)
            .unwrap();
        let e = env
            .matches(&sel, &gpu(), &mut Budget::per_cycle())
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
        let sel = env.compile(r#"device.driver"#).unwrap();
        assert!(
            env.matches(&sel, &gpu(), &mut Budget::per_cycle())
                .unwrap_err()
                .to_string()
                .contains("not a boolean")
        );
    }
}
