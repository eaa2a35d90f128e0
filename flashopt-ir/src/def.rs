//! An optimizer definition as a front end writes it: names are unresolved and every
//! node carries a [`Span`] so validation errors can point back at the source.
//!
//! Build one with the DSL (`flashopt-macros`) or by hand:
//!
//! ```
//! use flashopt_ir::def::*;
//! use flashopt_ir::types::StateKind;
//!
//! let mut sgd = OptimizerDef::new("momentum_sgd");
//! sgd.hyper("lr", 1e-2, Range::at_least(0.0));
//! sgd.hyper("mu", 0.9, Range::closed_open(0.0, 1.0));
//! sgd.state("buf", StateKind::Signed);
//! sgd.assign("buf", name("mu") * name("buf") + name("g"));
//! sgd.assign("p", name("p") - name("lr") * name("buf"));
//! let rule = flashopt_ir::validate(&sgd).unwrap();
//! assert_eq!(rule.states.len(), 1);
//! ```

use std::fmt;

pub use crate::graph::Func2;
use crate::layout::Extent;
use crate::types::{Codec, Rounding, StateKind, Type};

/// Where a node came from, as an index the front end hands out (a token number,
/// for the proc macro). `Span::NONE` for definitions built in code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span(pub u32);

impl Span {
    pub const NONE: Span = Span(u32::MAX);
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Literal {
    Float(f64),
    /// An integer literal: usable as `int`, and as `f32` wherever a float is expected.
    Int(i64),
    Bool(bool),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Not,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Lit(Literal),
    Name(String),
    Unary(UnaryOp, Box<Expr>),
    /// An operator: a [`Func2`] with an infix [`symbol`](Func2::symbol) (`+`, `<`,
    /// `&&`, ..). A named function of two arguments (`min`, `powi`) is a [`call`].
    Binary(Func2, Box<Expr>, Box<Expr>),
    /// A built-in function by name; validation resolves it (see [`crate::graph::Func`]).
    Call(String, Vec<Expr>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

impl Expr {
    pub fn new(kind: ExprKind, span: Span) -> Expr {
        Expr { kind, span }
    }

    pub fn with_span(mut self, span: Span) -> Expr {
        self.span = span;
        self
    }
}

/// A name: an input (`p`, `g`, `t`), hyper-parameter, state or let binding.
pub fn name(n: &str) -> Expr {
    Expr::new(ExprKind::Name(n.to_string()), Span::NONE)
}

pub fn float(v: f64) -> Expr {
    Expr::new(ExprKind::Lit(Literal::Float(v)), Span::NONE)
}

pub fn int(v: i64) -> Expr {
    Expr::new(ExprKind::Lit(Literal::Int(v)), Span::NONE)
}

pub fn boolean(v: bool) -> Expr {
    Expr::new(ExprKind::Lit(Literal::Bool(v)), Span::NONE)
}

/// A call of a built-in function by name.
pub fn call(func: &str, args: Vec<Expr>) -> Expr {
    Expr::new(ExprKind::Call(func.to_string(), args), Span::NONE)
}

pub fn unary(op: UnaryOp, operand: Expr) -> Expr {
    Expr::new(ExprKind::Unary(op, Box::new(operand)), Span::NONE)
}

/// An operator (`Func2::Add`, `Func2::Lt`, ..) applied to two expressions.
pub fn binary(op: Func2, lhs: Expr, rhs: Expr) -> Expr {
    Expr::new(
        ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
        Span::NONE,
    )
}

macro_rules! impl_operator {
    ($trait:ident, $method:ident, $op:ident) => {
        impl std::ops::$trait for Expr {
            type Output = Expr;
            fn $method(self, rhs: Expr) -> Expr {
                binary(Func2::$op, self, rhs)
            }
        }
        impl std::ops::$trait<f64> for Expr {
            type Output = Expr;
            fn $method(self, rhs: f64) -> Expr {
                binary(Func2::$op, self, float(rhs))
            }
        }
        impl std::ops::$trait<Expr> for f64 {
            type Output = Expr;
            fn $method(self, rhs: Expr) -> Expr {
                binary(Func2::$op, float(self), rhs)
            }
        }
    };
}
impl_operator!(Add, add, Add);
impl_operator!(Sub, sub, Sub);
impl_operator!(Mul, mul, Mul);
impl_operator!(Div, div, Div);

impl std::ops::Neg for Expr {
    type Output = Expr;
    fn neg(self) -> Expr {
        unary(UnaryOp::Neg, self)
    }
}

/// One end of a hyper-parameter's valid range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    Unbounded,
    Inclusive(f64),
    Exclusive(f64),
}

/// The values a hyper-parameter may take, checked for the default and for every
/// value set at run time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    pub lo: Bound,
    pub hi: Bound,
}

impl Range {
    pub const ANY: Range = Range {
        lo: Bound::Unbounded,
        hi: Bound::Unbounded,
    };

    /// `[lo, inf)`
    pub fn at_least(lo: f64) -> Range {
        Range {
            lo: Bound::Inclusive(lo),
            hi: Bound::Unbounded,
        }
    }

    /// `[lo, hi]`
    pub fn closed(lo: f64, hi: f64) -> Range {
        Range {
            lo: Bound::Inclusive(lo),
            hi: Bound::Inclusive(hi),
        }
    }

    /// `[lo, hi)`
    pub fn closed_open(lo: f64, hi: f64) -> Range {
        Range {
            lo: Bound::Inclusive(lo),
            hi: Bound::Exclusive(hi),
        }
    }

    /// `(lo, hi)`
    pub fn open(lo: f64, hi: f64) -> Range {
        Range {
            lo: Bound::Exclusive(lo),
            hi: Bound::Exclusive(hi),
        }
    }

    pub fn contains(&self, v: f64) -> bool {
        let lo_ok = match self.lo {
            Bound::Unbounded => true,
            Bound::Inclusive(lo) => v >= lo,
            Bound::Exclusive(lo) => v > lo,
        };
        let hi_ok = match self.hi {
            Bound::Unbounded => true,
            Bound::Inclusive(hi) => v <= hi,
            Bound::Exclusive(hi) => v < hi,
        };
        lo_ok && hi_ok && !v.is_nan()
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lo {
            Bound::Unbounded => f.write_str("(-inf, ")?,
            Bound::Inclusive(v) => write!(f, "[{v:?}, ")?,
            Bound::Exclusive(v) => write!(f, "({v:?}, ")?,
        }
        match self.hi {
            Bound::Unbounded => f.write_str("inf)"),
            Bound::Inclusive(v) => write!(f, "{v:?}]"),
            Bound::Exclusive(v) => write!(f, "{v:?})"),
        }
    }
}

/// A hyper-parameter value; `f32` hyper-parameters hold the f64 the user gave, and the
/// plan's [`HostArithmetic`](crate::HostArithmetic) rounds it (to f32 by default) when
/// host scalars are computed (see [`crate::passes::hoist`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Float(f64),
    Int(i64),
    Bool(bool),
}

impl Value {
    pub fn ty(self) -> Type {
        match self {
            Value::Float(_) => Type::F32,
            Value::Int(_) => Type::Int,
            Value::Bool(_) => Type::Bool,
        }
    }

    /// The value as a number for range checks (bools have no range).
    pub fn as_f64(self) -> Option<f64> {
        match self {
            Value::Float(v) => Some(v),
            Value::Int(v) => Some(v as f64),
            Value::Bool(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Float(v) => write!(f, "{v:?}"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct HyperParamDef {
    pub name: String,
    pub default: Value,
    pub range: Range,
    /// When set, the default is the value this other (earlier) hyper-parameter has
    /// when the optimizer is built: flashoptim's `initial_lr` follows `lr` this way.
    pub follows: Option<String>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StateDef {
    pub name: String,
    pub kind: StateKind,
    /// `None`: the kind's default codec.
    pub codec: Option<Codec>,
    /// How its encoder rounds to a code (8-bit codecs only).
    pub rounding: Rounding,
    /// How many values it holds: one per element (the default), per row or per column
    /// (`state r: nonneg per row;`, stored in f32).
    pub extent: Extent,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    Let {
        name: String,
        value: Expr,
        span: Span,
    },
    Assign {
        target: String,
        value: Expr,
        span: Span,
    },
}

/// A whole optimizer: hyper-parameters, states and the per-element rule, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerDef {
    pub name: String,
    pub hyper_params: Vec<HyperParamDef>,
    pub states: Vec<StateDef>,
    pub body: Vec<Stmt>,
    pub span: Span,
    /// The hyper-parameter that is the learning rate (`#[flashopt(learning_rate)]`).
    pub learning_rate: Option<(String, Span)>,
    /// The smallest step the rule is expected to take, relative to the learning rate
    /// (`#[flashopt(min_step = ..)]`; flashoptim's `_min_step_size_relative_to_lr`):
    /// what the numerics check compares with the master weights' resolution.
    pub min_step_relative_to_lr: Option<(f64, Span)>,
}

impl OptimizerDef {
    pub fn new(name: &str) -> OptimizerDef {
        OptimizerDef {
            name: name.to_string(),
            hyper_params: Vec::new(),
            states: Vec::new(),
            body: Vec::new(),
            span: Span::NONE,
            learning_rate: None,
            min_step_relative_to_lr: None,
        }
    }

    /// Name the hyper-parameter that is the learning rate.
    pub fn learning_rate(&mut self, hyper: &str) -> &mut Self {
        self.learning_rate = Some((hyper.to_string(), Span::NONE));
        self
    }

    /// The smallest step the rule takes relative to the learning rate (1 for sign and
    /// SGD updates, 0.1 for Adam's `m / sqrt(v)`).
    pub fn min_step_relative_to_lr(&mut self, relative: f64) -> &mut Self {
        self.min_step_relative_to_lr = Some((relative, Span::NONE));
        self
    }

    /// Declare an `f32` hyper-parameter.
    pub fn hyper(&mut self, name: &str, default: f64, range: Range) -> &mut Self {
        self.hyper_value(name, Value::Float(default), range)
    }

    /// Declare a hyper-parameter of any type.
    pub fn hyper_value(&mut self, name: &str, default: Value, range: Range) -> &mut Self {
        self.hyper_params.push(HyperParamDef {
            name: name.to_string(),
            default,
            range,
            follows: None,
            span: Span::NONE,
        });
        self
    }

    /// Declare an `f32` hyper-parameter whose default is another's value at build time.
    pub fn hyper_following(&mut self, name: &str, follows: &str, range: Range) -> &mut Self {
        let default = self
            .hyper_params
            .iter()
            .find(|h| h.name == follows)
            .map_or(Value::Float(f64::NAN), |h| h.default);
        self.hyper_value(name, default, range);
        self.hyper_params.last_mut().expect("just pushed").follows = Some(follows.to_string());
        self
    }

    /// Declare a state with its kind's default codec.
    pub fn state(&mut self, name: &str, kind: StateKind) -> &mut Self {
        self.state_rounded(name, kind, None, Rounding::Nearest)
    }

    /// Declare a state with an explicit codec.
    pub fn state_with(&mut self, name: &str, kind: StateKind, codec: Codec) -> &mut Self {
        self.state_rounded(name, kind, Some(codec), Rounding::Nearest)
    }

    /// Declare a state with a codec (`None`: the kind's default) and the rounding of its
    /// codes ([`Rounding::Dithered`] is for the 8-bit codecs; validation reports it on
    /// any other).
    pub fn state_rounded(
        &mut self,
        name: &str,
        kind: StateKind,
        codec: Option<Codec>,
        rounding: Rounding,
    ) -> &mut Self {
        self.states.push(StateDef {
            name: name.to_string(),
            kind,
            codec,
            rounding,
            extent: Extent::Element,
            span: Span::NONE,
        });
        self
    }

    /// Make the state declared last hold one value per row or per column
    /// ([`Extent::Row`], [`Extent::Column`]), stored in f32:
    /// `def.state("r", StateKind::NonNegative).per(Extent::Row)`.
    ///
    /// # Panics
    /// If no state is declared yet.
    pub fn per(&mut self, extent: Extent) -> &mut Self {
        self.states
            .last_mut()
            .expect("`per` follows a state")
            .extent = extent;
        self
    }

    pub fn bind(&mut self, name: &str, value: Expr) -> &mut Self {
        self.body.push(Stmt::Let {
            name: name.to_string(),
            value,
            span: Span::NONE,
        });
        self
    }

    pub fn assign(&mut self, target: &str, value: Expr) -> &mut Self {
        self.body.push(Stmt::Assign {
            target: target.to_string(),
            value,
            span: Span::NONE,
        });
        self
    }
}
