//! Validation: resolves names, checks types and assignments, and builds the typed
//! [`Rule`] graph. Every problem found is reported, each with the span of the
//! offending item, so a front end can show them all at once.

mod scoped;

use std::collections::HashMap;
use std::fmt;

use crate::def::{
    Expr, ExprKind, HyperParamDef, Literal, OptimizerDef, Range, Span, Stmt, UnaryOp, Value,
};
use crate::graph::{
    Const, Dim, Func, Func1, Func2, Func3, Graph, Handle, Input, MatrixFn, Op, Reducer,
};
use crate::layout::Extent;
use crate::types::{Codec, Rounding, StateKind, Type};

/// A declared state, its codec resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    pub name: String,
    pub kind: StateKind,
    pub codec: Codec,
    pub rounding: Rounding,
    /// One value per element, per row or per column.
    pub extent: Extent,
}

/// A validated optimizer: declarations and the typed per-element rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub hyper_params: Vec<HyperParamDef>,
    pub states: Vec<State>,
    pub numerics: Numerics,
    pub graph: Graph,
    /// The new master weight.
    pub p_out: Handle,
    /// The new value of each state, by declaration index.
    pub state_out: Vec<Handle>,
}

impl Rule {
    /// The same declarations over a new graph, each output mapped by `out`.
    pub fn with_graph(&self, graph: Graph, mut out: impl FnMut(Handle) -> Handle) -> Rule {
        Rule {
            name: self.name.clone(),
            hyper_params: self.hyper_params.clone(),
            states: self.states.clone(),
            numerics: self.numerics.clone(),
            p_out: out(self.p_out),
            state_out: self.state_out.iter().map(|&h| out(h)).collect(),
            graph,
        }
    }

    /// The outputs: `p` first, then the states in declaration order.
    pub fn outputs(&self) -> Vec<Handle> {
        std::iter::once(self.p_out)
            .chain(self.state_out.iter().copied())
            .collect()
    }
}

/// What the numerics check needs to know of an optimizer, from its definition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Numerics {
    /// The hyper-parameter that is the learning rate, by declaration index.
    pub learning_rate: Option<usize>,
    /// The smallest step relative to the learning rate.
    pub min_step_relative_to_lr: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub span: Span,
    pub message: String,
}

/// Everything wrong with a definition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    pub optimizer: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "optimizer `{}` is invalid:", self.optimizer)?;
        for d in &self.diagnostics {
            write!(f, "\n  - {}", d.message)?;
        }
        Ok(())
    }
}

const RESERVED: [(&str, &str); 5] = [
    ("p", "the parameter input `p`"),
    ("g", "the gradient input `g`"),
    ("t", "the step input `t`"),
    ("rows", "the tensor's row count `rows`"),
    ("cols", "the tensor's column count `cols`"),
];

/// Validate a definition and build its rule.
pub fn validate(def: &OptimizerDef) -> Result<Rule, ValidationError> {
    let mut v = Validator {
        def,
        graph: Graph::new(),
        diagnostics: Vec::new(),
        lets: HashMap::new(),
        state_now: vec![None; def.states.len()],
        p_now: None,
    };
    let states = v.declarations();
    for stmt in &def.body {
        v.statement(stmt);
    }
    let p_out = match v.p_now {
        Some((h, _)) => h,
        None => {
            v.error(
                def.span,
                "the rule never assigns `p`: an optimizer must update the parameter".into(),
            );
            None
        }
    };
    let numerics = v.numerics();
    let mut state_out = Vec::new();
    for (i, s) in def.states.iter().enumerate() {
        match v.state_now[i] {
            Some((h, _)) => state_out.push(h),
            None => v.error(
                s.span,
                format!(
                    "state `{}` is never updated: assign it in the rule or remove it",
                    s.name
                ),
            ),
        }
    }
    if !v.diagnostics.is_empty() {
        return Err(ValidationError {
            optimizer: def.name.clone(),
            diagnostics: v.diagnostics,
        });
    }
    Ok(Rule {
        name: def.name.clone(),
        hyper_params: def.hyper_params.clone(),
        states,
        numerics,
        graph: v.graph,
        p_out: p_out.expect("no diagnostics means p was assigned a value"),
        state_out: state_out
            .into_iter()
            .map(|h| h.expect("no diagnostics means every state was assigned a value"))
            .collect(),
    })
}

struct Validator<'d> {
    def: &'d OptimizerDef,
    graph: Graph,
    diagnostics: Vec<Diagnostic>,
    /// `None` for a binding whose value had errors: its uses report nothing more.
    lets: HashMap<String, Typed>,
    /// The current value of each state once assigned (`None` inside: the assigned
    /// value had errors) and where.
    state_now: Vec<Option<(Option<Handle>, Span)>>,
    p_now: Option<(Option<Handle>, Span)>,
}

type Typed = Option<(Handle, Type)>;

impl Validator<'_> {
    /// The learning rate must be an f32 hyper-parameter; the minimum step positive.
    fn numerics(&mut self) -> Numerics {
        let def = self.def;
        let learning_rate = def.learning_rate.as_ref().and_then(|(name, span)| {
            let found = def.hyper_params.iter().position(|h| &h.name == name);
            match found {
                Some(i) if def.hyper_params[i].default.ty() == Type::F32 => Some(i),
                Some(_) => {
                    self.error(*span, format!("the learning rate `{name}` must be an f32"));
                    None
                }
                None => {
                    self.error(
                        *span,
                        format!("the learning rate `{name}` is not a declared hyper-parameter"),
                    );
                    None
                }
            }
        });
        let min_step_relative_to_lr = def.min_step_relative_to_lr.and_then(|(v, span)| {
            if v > 0.0 && v.is_finite() {
                Some(v)
            } else {
                self.error(
                    span,
                    format!("min_step must be positive and finite, got {v}"),
                );
                None
            }
        });
        Numerics {
            learning_rate,
            min_step_relative_to_lr,
        }
    }

    fn error(&mut self, span: Span, message: String) {
        self.diagnostics.push(Diagnostic { span, message });
    }

    fn declarations(&mut self) -> Vec<State> {
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for (name, what) in RESERVED {
            seen.insert(name, what);
        }
        for h in &self.def.hyper_params {
            if let Some(prev) = seen.get(h.name.as_str()) {
                self.error(
                    h.span,
                    format!("hyper-parameter `{}` clashes with {prev}", h.name),
                );
            } else {
                seen.insert(&h.name, "a hyper-parameter of that name");
            }
            self.check_hyper(h);
        }
        let mut states = Vec::new();
        for s in &self.def.states {
            if let Some(prev) = seen.get(s.name.as_str()) {
                self.error(s.span, format!("state `{}` clashes with {prev}", s.name));
            } else {
                seen.insert(&s.name, "a state of that name");
            }
            let codec = self.state_codec(s);
            if !codec.fits(s.kind) {
                let fitting: Vec<_> = Codec::ALL
                    .iter()
                    .filter(|c| c.fits(s.kind))
                    .map(|c| c.name())
                    .collect();
                self.error(
                    s.span,
                    format!(
                        "state `{}` is {} but codec {codec} cannot store {} values; use one of: {}",
                        s.name,
                        s.kind,
                        if s.kind == StateKind::NonNegative {
                            "non-negative"
                        } else {
                            "signed"
                        },
                        fitting.join(", ")
                    ),
                );
            }
            if s.rounding != Rounding::Nearest && !codec.quantizes() {
                self.error(
                    s.span,
                    format!(
                        "state `{}` is stored as {codec}, which has no codes to round: {} rounding is for the 8-bit codecs",
                        s.name, s.rounding
                    ),
                );
            }
            states.push(State {
                name: s.name.clone(),
                kind: s.kind,
                codec,
                rounding: s.rounding,
                extent: s.extent,
            });
        }
        states
    }

    fn check_hyper(&mut self, h: &HyperParamDef) {
        if let Some(source) = &h.follows {
            let position = |n: &str| self.def.hyper_params.iter().position(|x| x.name == n);
            match (position(source), position(&h.name)) {
                (Some(i), Some(j)) if i < j => {
                    let src = &self.def.hyper_params[i];
                    if src.default.ty() != h.default.ty() || src.follows.is_some() {
                        self.error(
                            h.span,
                            format!(
                                "hyper-parameter `{}` follows `{source}`, which must be a plain {} hyper-parameter",
                                h.name,
                                h.default.ty()
                            ),
                        );
                    }
                }
                _ => self.error(
                    h.span,
                    format!(
                        "hyper-parameter `{}` follows `{source}`, which is not a hyper-parameter declared before it",
                        h.name
                    ),
                ),
            }
            return;
        }
        match h.default {
            Value::Bool(_) if h.range != Range::ANY => self.error(
                h.span,
                format!(
                    "hyper-parameter `{}` is a bool and cannot have a range",
                    h.name
                ),
            ),
            Value::Bool(_) => {}
            v => {
                let x = v.as_f64().expect("numeric");
                if !h.range.contains(x) {
                    self.error(
                        h.span,
                        format!(
                            "the default of hyper-parameter `{}` is {v}, outside its range {}",
                            h.name, h.range
                        ),
                    );
                }
            }
        }
    }

    fn statement(&mut self, stmt: &Stmt) {
        match stmt {
            Stmt::Let { name, value, span } => {
                let value = self.expr(value);
                if let Some(what) = self.declared_as(name) {
                    self.error(
                        *span,
                        format!("`let {name}` shadows {what}; choose another name for the binding"),
                    );
                } else {
                    self.lets.insert(name.clone(), value);
                }
            }
            Stmt::Assign {
                target,
                value,
                span,
            } => {
                let value = self.expr_as(value, Type::F32);
                self.assign(target, value, *span);
            }
        }
    }

    /// What a name that may not be rebound with `let` already is.
    fn declared_as(&self, name: &str) -> Option<String> {
        if let Some((_, what)) = RESERVED.iter().find(|(n, _)| *n == name) {
            return Some(what.to_string());
        }
        if self.def.states.iter().any(|s| s.name == name) {
            return Some(format!("the state `{name}`"));
        }
        if self.def.hyper_params.iter().any(|h| h.name == name) {
            return Some(format!("the hyper-parameter `{name}`"));
        }
        None
    }

    fn assign(&mut self, target: &str, value: Typed, span: Span) {
        // Which output: `None` for `p`, `Some(i)` for state i.
        let output = if target == "p" {
            None
        } else if let Some(i) = self.def.states.iter().position(|s| s.name == target) {
            Some(i)
        } else {
            let message = match target {
                "g" => "`g` is the gradient, an input of the rule; it cannot be assigned".into(),
                "t" => {
                    "`t` is the step counter, an input of the rule; it cannot be assigned".into()
                }
                "rows" | "cols" => format!(
                    "`{target}` is a dimension of the tensor, an input of the rule; it cannot be assigned"
                ),
                _ if self.def.hyper_params.iter().any(|h| h.name == target) => format!(
                    "`{target}` is a hyper-parameter; hyper-parameters are read-only in the rule"
                ),
                _ if self.lets.contains_key(target) => format!(
                    "`{target}` is a let binding and cannot be reassigned; bind a new name with `let`"
                ),
                _ => format!(
                    "cannot assign to unknown name `{target}`{}: only `p` and declared states can be assigned",
                    self.suggestion(target)
                ),
            };
            self.error(span, message);
            return;
        };
        let value = match value {
            Some((_, ty)) if ty != Type::F32 => {
                self.error(
                    span,
                    format!(
                        "`{target}` holds f32 values but is assigned {}",
                        ty.with_article()
                    ),
                );
                None
            }
            v => v,
        };
        let value = match (output, value) {
            (Some(i), Some((h, ty))) => self.fits_state(i, h, span).then_some((h, ty)),
            (_, v) => v,
        };
        let slot = match output {
            None => &mut self.p_now,
            Some(i) => &mut self.state_now[i],
        };
        if slot.is_some() {
            let what = if target == "p" {
                "the parameter `p`".to_string()
            } else {
                format!("state `{target}`")
            };
            self.error(
                span,
                format!("{what} is assigned twice; each output is assigned once"),
            );
            return;
        }
        *slot = Some((value.map(|(h, _)| h), span));
    }

    fn suggestion(&self, name: &str) -> String {
        let candidates = RESERVED
            .into_iter()
            .map(|(n, _)| n)
            .chain(self.def.hyper_params.iter().map(|h| h.name.as_str()))
            .chain(self.def.states.iter().map(|s| s.name.as_str()))
            .chain(self.lets.keys().map(String::as_str));
        let best = candidates
            .map(|c| (edit_distance(name, c), c))
            .filter(|(d, c)| *d <= 2 && *d < c.len().max(name.len()))
            .min();
        match best {
            Some((_, c)) => format!(" (did you mean `{c}`?)"),
            None => String::new(),
        }
    }

    fn resolve(&mut self, name: &str, span: Span) -> Typed {
        if let Some(&v) = self.lets.get(name) {
            return v;
        }
        if let Some(i) = self.def.states.iter().position(|s| s.name == name) {
            let h = match self.state_now[i] {
                Some((h, _)) => h?,
                None => self.graph.add(Op::Input(Input::State(i)), Type::F32),
            };
            return Some((h, Type::F32));
        }
        let input = match name {
            "p" => match self.p_now {
                Some((h, _)) => return Some((h?, Type::F32)),
                None => Some((Input::Param, Type::F32)),
            },
            "g" => Some((Input::Grad, Type::F32)),
            "t" => Some((Input::Step, Type::Int)),
            "rows" => Some((Input::Dim(Dim::Rows), Type::F32)),
            "cols" => Some((Input::Dim(Dim::Cols), Type::F32)),
            _ => self
                .def
                .hyper_params
                .iter()
                .position(|h| h.name == name)
                .map(|i| (Input::Hyper(i), self.def.hyper_params[i].default.ty())),
        };
        match input {
            Some((input, ty)) => Some((self.graph.add(Op::Input(input), ty), ty)),
            None => {
                let hint = if Func::by_name(name).is_some() {
                    format!(" (`{name}` is a function: call it as `{name}(..)`)")
                } else {
                    self.suggestion(name)
                };
                self.error(span, format!("unknown name `{name}`{hint}"));
                None
            }
        }
    }

    /// Lower an expression where a value of type `want` is expected: integer literals
    /// become floats there.
    fn expr_as(&mut self, e: &Expr, want: Type) -> Typed {
        if want == Type::F32
            && let Some(i) = int_literal(e)
        {
            return Some((
                self.graph.add(Op::Const(Const::Float(i as f64)), Type::F32),
                Type::F32,
            ));
        }
        self.expr(e)
    }

    /// Lower two operands that must share a type, letting an integer literal on one
    /// side take the other side's type.
    fn pair(&mut self, a: &Expr, b: &Expr) -> (Typed, Typed) {
        match (int_literal(a).is_some(), int_literal(b).is_some()) {
            (true, false) => {
                let b = self.expr(b);
                let a = self.expr_as(a, b.map_or(Type::Int, |(_, t)| t));
                (a, b)
            }
            (false, true) => {
                let a = self.expr(a);
                let b = self.expr_as(b, a.map_or(Type::Int, |(_, t)| t));
                (a, b)
            }
            _ => (self.expr(a), self.expr(b)),
        }
    }

    fn expr(&mut self, e: &Expr) -> Typed {
        match &e.kind {
            ExprKind::Lit(lit) => {
                let c = match *lit {
                    Literal::Float(v) => Const::Float(v),
                    Literal::Int(v) => Const::Int(v),
                    Literal::Bool(v) => Const::Bool(v),
                };
                Some((self.graph.add(Op::Const(c), c.ty()), c.ty()))
            }
            ExprKind::Name(n) => self.resolve(n, e.span),
            ExprKind::Unary(op, operand) => {
                let (h, ty) = self.expr(operand)?;
                let (func, ok) = match op {
                    UnaryOp::Neg => (Func1::Neg, matches!(ty, Type::F32 | Type::Int)),
                    UnaryOp::Not => (Func1::Not, ty == Type::Bool),
                };
                if !ok {
                    let sym = if *op == UnaryOp::Neg { "-" } else { "!" };
                    self.error(
                        e.span,
                        format!("type mismatch: unary `{sym}` cannot apply to a {ty}"),
                    );
                    return None;
                }
                Some((self.graph.add(Op::Unary(func, h), ty), ty))
            }
            ExprKind::Binary(func, lhs, rhs) => {
                let Some(result) = operator_class(*func) else {
                    // A function of two arguments built as an operator: checked as its call.
                    let args = [lhs.as_ref().clone(), rhs.as_ref().clone()];
                    return self.call(func.name(), &args, e.span);
                };
                let (l, r) = self.pair(lhs, rhs);
                let ((lh, lt), (rh, rt)) = (l?, r?);
                let ok = lt == rt
                    && match result {
                        BinaryResult::Arithmetic => matches!(lt, Type::F32 | Type::Int),
                        BinaryResult::Order => matches!(lt, Type::F32 | Type::Int),
                        BinaryResult::Equality => true,
                        BinaryResult::Logic => lt == Type::Bool,
                    };
                if !ok {
                    let needs = match result {
                        BinaryResult::Arithmetic | BinaryResult::Order => {
                            "two f32 or two int operands; convert an int with float(..)"
                        }
                        BinaryResult::Equality => "two operands of one type",
                        BinaryResult::Logic => "two bool operands",
                    };
                    self.error(
                        e.span,
                        format!(
                            "type mismatch: `{}` needs {needs}, found {lt} and {rt}",
                            func.symbol().expect("an operator")
                        ),
                    );
                    return None;
                }
                let ty = match result {
                    BinaryResult::Arithmetic => lt,
                    _ => Type::Bool,
                };
                Some((self.graph.add(Op::Binary(*func, lh, rh), ty), ty))
            }
            ExprKind::Call(name, args) => self.call(name, args, e.span),
        }
    }

    fn call(&mut self, name: &str, args: &[Expr], span: Span) -> Typed {
        if let Some(r) = Reducer::by_name(name) {
            return self.reduction(r, args, span);
        }
        if let Some(f) = MatrixFn::by_name(name) {
            return self.matrix_function(f, args, span);
        }
        let Some(func) = Func::by_name(name) else {
            let reductions: Vec<String> = Reducer::all().map(Reducer::name).collect();
            let matrices: Vec<&str> = MatrixFn::ALL.iter().map(|f| f.name()).collect();
            self.error(
                span,
                format!(
                    "unsupported function `{name}`; the built-ins are: {}; the reductions: {}; \
                     the matrix functions: {}",
                    Func::NAMES.join(", "),
                    reductions.join(", "),
                    matrices.join(", ")
                ),
            );
            return None;
        };
        if args.len() != func.arity() {
            self.error(
                span,
                format!(
                    "`{name}` takes {} argument(s), found {}",
                    func.arity(),
                    args.len()
                ),
            );
            return None;
        }
        let mismatch = |v: &mut Self, expected: &str, found: &[Type]| {
            let found: Vec<_> = found.iter().map(Type::to_string).collect();
            v.error(
                span,
                format!(
                    "type mismatch: `{name}` takes ({expected}), found ({})",
                    found.join(", ")
                ),
            );
            None
        };
        match func {
            Func::F1(f) => {
                let want = if f == Func1::ToFloat {
                    Type::Int
                } else {
                    Type::F32
                };
                let (h, t) = self.expr_as(&args[0], want)?;
                if t != want {
                    return mismatch(self, &want.to_string(), &[t]);
                }
                if f == Func1::HostF64 && !self.is_uniform(h) {
                    self.error(
                        span,
                        "`f64(..)` is computed on the host: its argument may use only \
                         hyper-parameters, `t` and constants"
                            .into(),
                    );
                    return None;
                }
                Some((self.graph.add(Op::Unary(f, h), Type::F32), Type::F32))
            }
            Func::F2(f) => {
                let second = if f == Func2::Powi {
                    Type::Int
                } else {
                    Type::F32
                };
                let a = self.expr_as(&args[0], Type::F32);
                let b = self.expr_as(&args[1], second);
                let ((ah, at), (bh, bt)) = (a?, b?);
                if at != Type::F32 || bt != second {
                    return mismatch(self, &format!("f32, {second}"), &[at, bt]);
                }
                Some((self.graph.add(Op::Binary(f, ah, bh), Type::F32), Type::F32))
            }
            Func::F3(Func3::Select) => {
                let c = self.expr(&args[0]);
                let (a, b) = self.pair(&args[1], &args[2]);
                let ((ch, ct), (ah, at), (bh, bt)) = (c?, a?, b?);
                if ct != Type::Bool || at != bt {
                    return mismatch(self, "bool, T, T", &[ct, at, bt]);
                }
                Some((
                    self.graph.add(Op::Ternary(Func3::Select, ch, ah, bh), at),
                    at,
                ))
            }
            Func::F3(f) => {
                let a = self.expr_as(&args[0], Type::F32);
                let b = self.expr_as(&args[1], Type::F32);
                let c = self.expr_as(&args[2], Type::F32);
                let ((ah, at), (bh, bt), (ch, ct)) = (a?, b?, c?);
                if [at, bt, ct] != [Type::F32; 3] {
                    return mismatch(self, "f32, f32, f32", &[at, bt, ct]);
                }
                Some((
                    self.graph.add(Op::Ternary(f, ah, bh, ch), Type::F32),
                    Type::F32,
                ))
            }
        }
    }
}

enum BinaryResult {
    Arithmetic,
    Order,
    Equality,
    Logic,
}

/// How an operator types its operands; `None` for functions that are not operators.
fn operator_class(func: Func2) -> Option<BinaryResult> {
    use BinaryResult::*;
    Some(match func {
        Func2::Add | Func2::Sub | Func2::Mul | Func2::Div => Arithmetic,
        Func2::Lt | Func2::Le | Func2::Gt | Func2::Ge => Order,
        Func2::Eq | Func2::Ne => Equality,
        Func2::And | Func2::Or => Logic,
        Func2::Min | Func2::Max | Func2::Powf | Func2::Powi => return None,
    })
}

/// The value of an integer literal, possibly negated.
fn int_literal(e: &Expr) -> Option<i64> {
    match &e.kind {
        ExprKind::Lit(Literal::Int(v)) => Some(*v),
        ExprKind::Unary(UnaryOp::Neg, inner) => int_literal(inner).and_then(i64::checked_neg),
        _ => None,
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}
