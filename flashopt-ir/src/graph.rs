//! The typed expression graph of a validated rule.
//!
//! Nodes live in an arena and refer to earlier nodes by [`Handle`], so the arena order
//! is a topological order. Identical nodes are shared (hash-consing), which makes
//! `let` bindings and repeated subexpressions one node each.

use std::collections::HashMap;
use std::fmt;

use crate::layout::Extent;
use crate::types::Type;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(pub u32);

impl Handle {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A constant. Floats keep their f64 value, as written; the plan's
/// [`HostArithmetic`](crate::HostArithmetic) decides how uniform arithmetic rounds
/// it (f32 by default), and per-element code sees it rounded to f32.
#[derive(Clone, Copy, Debug)]
pub enum Const {
    Float(f64),
    Int(i64),
    Bool(bool),
}

impl PartialEq for Const {
    fn eq(&self, other: &Const) -> bool {
        match (self, other) {
            (Const::Float(a), Const::Float(b)) => a.to_bits() == b.to_bits(),
            (Const::Int(a), Const::Int(b)) => a == b,
            (Const::Bool(a), Const::Bool(b)) => a == b,
            _ => false,
        }
    }
}
impl Eq for Const {}
impl std::hash::Hash for Const {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Const::Float(v) => (0u8, v.to_bits()).hash(state),
            Const::Int(v) => (1u8, *v).hash(state),
            Const::Bool(v) => (2u8, *v).hash(state),
        }
    }
}

impl Const {
    pub fn ty(self) -> Type {
        match self {
            Const::Float(_) => Type::F32,
            Const::Int(_) => Type::Int,
            Const::Bool(_) => Type::Bool,
        }
    }
}

/// Values a rule reads without computing them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// The master weight before this step (f32 semantics).
    Param,
    /// The gradient, as f32.
    Grad,
    /// The 1-based step counter.
    Step,
    /// A hyper-parameter, by declaration index.
    Hyper(usize),
    /// A state's value before this step, by declaration index.
    State(usize),
    /// A host-computed scalar, by index (only after hoisting).
    Scalar(usize),
    /// The number of rows or columns of the element's tensor seen as a matrix, as f32:
    /// the same on every element of a tensor, different between tensors.
    Dim(Dim),
}

/// A dimension of a tensor seen as a row-major matrix ([`crate::layout::Shape`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// `rows`: the element count over the row length.
    Rows,
    /// `cols`: the row length (the last dimension).
    Cols,
}

impl Dim {
    /// The name a rule reads it by.
    pub fn name(self) -> &'static str {
        match self {
            Dim::Rows => "rows",
            Dim::Cols => "cols",
        }
    }

    /// Its value for a tensor of `shape`.
    pub fn of(self, shape: crate::layout::Shape) -> usize {
        match self {
            Dim::Rows => shape.rows(),
            Dim::Cols => shape.cols(),
        }
    }
}

/// Built-in functions of one argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Func1 {
    Neg,
    Not,
    Abs,
    /// -1, 0 or 1; NaN gives 0 (as flashoptim's Lion computes the sign).
    Sign,
    Sqrt,
    /// `1 / sqrt(x)`, both correctly rounded.
    Rsqrt,
    Exp,
    Exp2,
    Ln,
    /// `int` to `f32`.
    ToFloat,
    /// `f64(x)`: a host scalar computed in f64 and rounded to f32 once, whatever the
    /// plan's host arithmetic (where flashoptim computes it in Python before its
    /// kernel sees it). Only on uniform values; per element it is `x`.
    HostF64,
}

/// Built-in functions of two arguments (operators included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Func2 {
    Add,
    Sub,
    Mul,
    Div,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
    Min,
    Max,
    Powf,
    /// `f32` to an `int` power by square-and-multiply (see `semantics::powi`).
    Powi,
}

/// Built-in functions of three arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Func3 {
    /// `select(cond, a, b)`: `a` where `cond` holds, else `b`.
    Select,
    /// `clamp(x, lo, hi) = min(max(x, lo), hi)`.
    Clamp,
    /// `lerp(a, b, w) = a + w * (b - a)`.
    Lerp,
    /// `fma(a, b, c) = a * b + c`, rounded once (what a GPU compiler makes of
    /// `a * b + c` where it contracts; flashoptim's Triton kernels do).
    Fma,
}

impl Func1 {
    pub fn name(self) -> &'static str {
        match self {
            Func1::Neg => "neg",
            Func1::Not => "not",
            Func1::Abs => "abs",
            Func1::Sign => "sign",
            Func1::Sqrt => "sqrt",
            Func1::Rsqrt => "rsqrt",
            Func1::Exp => "exp",
            Func1::Exp2 => "exp2",
            Func1::Ln => "ln",
            Func1::ToFloat => "float",
            Func1::HostF64 => "f64",
        }
    }
}

impl Func2 {
    pub fn name(self) -> &'static str {
        match self {
            Func2::Add => "add",
            Func2::Sub => "sub",
            Func2::Mul => "mul",
            Func2::Div => "div",
            Func2::Lt => "lt",
            Func2::Le => "le",
            Func2::Gt => "gt",
            Func2::Ge => "ge",
            Func2::Eq => "eq",
            Func2::Ne => "ne",
            Func2::And => "and",
            Func2::Or => "or",
            Func2::Min => "min",
            Func2::Max => "max",
            Func2::Powf => "powf",
            Func2::Powi => "powi",
        }
    }

    /// The infix symbol for operators, for printing.
    pub fn symbol(self) -> Option<&'static str> {
        Some(match self {
            Func2::Add => "+",
            Func2::Sub => "-",
            Func2::Mul => "*",
            Func2::Div => "/",
            Func2::Lt => "<",
            Func2::Le => "<=",
            Func2::Gt => ">",
            Func2::Ge => ">=",
            Func2::Eq => "==",
            Func2::Ne => "!=",
            Func2::And => "&&",
            Func2::Or => "||",
            _ => return None,
        })
    }
}

impl Func3 {
    pub fn name(self) -> &'static str {
        match self {
            Func3::Select => "select",
            Func3::Clamp => "clamp",
            Func3::Lerp => "lerp",
            Func3::Fma => "fma",
        }
    }
}

/// A built-in function callable by name in a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    F1(Func1),
    F2(Func2),
    F3(Func3),
}

impl Func {
    /// Resolve a call name. `where` is an alias of `select`.
    pub fn by_name(name: &str) -> Option<Func> {
        Some(match name {
            "abs" => Func::F1(Func1::Abs),
            "sign" => Func::F1(Func1::Sign),
            "sqrt" => Func::F1(Func1::Sqrt),
            "rsqrt" => Func::F1(Func1::Rsqrt),
            "exp" => Func::F1(Func1::Exp),
            "exp2" => Func::F1(Func1::Exp2),
            "ln" => Func::F1(Func1::Ln),
            "float" => Func::F1(Func1::ToFloat),
            "f64" => Func::F1(Func1::HostF64),
            "min" => Func::F2(Func2::Min),
            "max" => Func::F2(Func2::Max),
            "powf" => Func::F2(Func2::Powf),
            "powi" => Func::F2(Func2::Powi),
            "select" | "where" => Func::F3(Func3::Select),
            "clamp" => Func::F3(Func3::Clamp),
            "lerp" => Func::F3(Func3::Lerp),
            "fma" => Func::F3(Func3::Fma),
            _ => return None,
        })
    }

    pub const NAMES: &'static [&'static str] = &[
        "abs", "sign", "sqrt", "rsqrt", "exp", "exp2", "ln", "float", "f64", "min", "max", "powf",
        "powi", "select", "where", "clamp", "lerp", "fma",
    ];

    pub fn arity(self) -> usize {
        match self {
            Func::F1(_) => 1,
            Func::F2(_) => 2,
            Func::F3(_) => 3,
        }
    }
}

/// What a reduction computes over its elements. [`crate::reduction`] fixes the order
/// of its arithmetic, so the CPU reference and the GPU agree bit for bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// `*_sum(x)`.
    Sum,
    /// `*_mean(x)`: the sum over the element count.
    Mean,
    /// `*_max(x)`: the largest value; NaN if any is.
    Max,
    /// `*_norm(x)`: the Euclidean norm, squares summed in f64 (exact squares, no
    /// overflow), the root taken in f64.
    Norm,
    /// `*_rms(x)`: the root of the mean square, as `Norm` over the count.
    Rms,
}

impl Reduction {
    pub const ALL: [Reduction; 5] = [
        Reduction::Sum,
        Reduction::Mean,
        Reduction::Max,
        Reduction::Norm,
        Reduction::Rms,
    ];

    /// The operation's part of the functions' names (`tensor_sum`, `row_sum`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Reduction::Sum => "sum",
            Reduction::Mean => "mean",
            Reduction::Max => "max",
            Reduction::Norm => "norm",
            Reduction::Rms => "rms",
        }
    }
}

/// Which elements one value of a reduction covers. A tensor is seen as a row-major
/// matrix of `rows x cols` elements (`cols`: its row length; a vector is one row):
/// element `i` lies in row `i / cols` and column `i % cols`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One value per tensor.
    Tensor,
    /// One value per row.
    Row,
    /// One value per column.
    Column,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Tensor, Scope::Row, Scope::Column];

    /// The prefix of its reductions' names.
    pub fn prefix(self) -> &'static str {
        match self {
            Scope::Tensor => "tensor",
            Scope::Row => "row",
            Scope::Column => "col",
        }
    }

    /// The extent of the reduction's values: `None` for one per tensor.
    pub fn extent(self) -> Option<Extent> {
        match self {
            Scope::Tensor => None,
            Scope::Row => Some(Extent::Row),
            Scope::Column => Some(Extent::Column),
        }
    }

    /// What a value of this scope is the same along: the phrase for error messages.
    pub fn per(self) -> &'static str {
        match self {
            Scope::Tensor => "per tensor",
            Scope::Row => "per row",
            Scope::Column => "per column",
        }
    }
}

/// A reduction over a scope: `tensor_norm(x)` is `Reducer { op: Norm, scope: Tensor }`,
/// one f32 per tensor and step; `row_mean(x)` one per row. The rule reads the value of
/// its element's tensor, row or column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reducer {
    pub op: Reduction,
    pub scope: Scope,
}

impl Reducer {
    pub const fn new(op: Reduction, scope: Scope) -> Reducer {
        Reducer { op, scope }
    }

    /// Every reduction a rule can call.
    pub fn all() -> impl Iterator<Item = Reducer> {
        Scope::ALL
            .into_iter()
            .flat_map(|scope| Reduction::ALL.map(|op| Reducer { op, scope }))
    }

    /// The function a rule calls.
    pub fn name(self) -> String {
        format!("{}_{}", self.scope.prefix(), self.op.name())
    }

    pub fn by_name(name: &str) -> Option<Reducer> {
        Reducer::all().find(|r| r.name() == name)
    }
}

/// A function of a whole matrix: every element's value of the argument, the tensor
/// seen as a row-major `rows x cols` matrix, gives every element's value of the
/// result. [`crate::matrix`] holds the reference arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatrixFn {
    /// `orthogonalize(x)`: Muon's quintic Newton-Schulz iteration
    /// ([`crate::matrix::NewtonSchulz::MUON`]) in bf16 GEMM arithmetic, as
    /// `torch.optim.Muon` computes it: about `U V^T` for `x = U S V^T`.
    Orthogonalize,
}

impl MatrixFn {
    pub const ALL: [MatrixFn; 1] = [MatrixFn::Orthogonalize];

    /// The function a rule calls.
    pub fn name(self) -> &'static str {
        match self {
            MatrixFn::Orthogonalize => "orthogonalize",
        }
    }

    pub fn by_name(name: &str) -> Option<MatrixFn> {
        MatrixFn::ALL.into_iter().find(|f| f.name() == name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Const(Const),
    Input(Input),
    Unary(Func1, Handle),
    Binary(Func2, Handle, Handle),
    Ternary(Func3, Handle, Handle, Handle),
    /// A reduction of a per-element value over a tensor, its rows or its columns.
    Reduce(Reducer, Handle),
    /// A function of the tensor's matrix of a per-element value.
    Matrix(MatrixFn, Handle),
}

impl Op {
    /// The operands, in order.
    pub fn operands(&self) -> Vec<Handle> {
        match *self {
            Op::Const(_) | Op::Input(_) => vec![],
            Op::Unary(_, a) | Op::Reduce(_, a) | Op::Matrix(_, a) => vec![a],
            Op::Binary(_, a, b) => vec![a, b],
            Op::Ternary(_, a, b, c) => vec![a, b, c],
        }
    }

    /// The same operation over other operands.
    pub fn map_operands(&self, mut f: impl FnMut(Handle) -> Handle) -> Op {
        match *self {
            Op::Const(_) | Op::Input(_) => *self,
            Op::Unary(func, a) => Op::Unary(func, f(a)),
            Op::Reduce(r, a) => Op::Reduce(r, f(a)),
            Op::Matrix(m, a) => Op::Matrix(m, f(a)),
            Op::Binary(func, a, b) => Op::Binary(func, f(a), f(b)),
            Op::Ternary(func, a, b, c) => Op::Ternary(func, f(a), f(b), f(c)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Node {
    pub op: Op,
    pub ty: Type,
}

/// An arena of nodes with sharing of identical nodes.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    nodes: Vec<Node>,
    interned: HashMap<Node, Handle>,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Add a node, or return the handle of an identical one.
    pub fn add(&mut self, op: Op, ty: Type) -> Handle {
        let node = Node { op, ty };
        if let Some(&h) = self.interned.get(&node) {
            return h;
        }
        for operand in op.operands() {
            assert!(
                operand.index() < self.nodes.len(),
                "operand {operand:?} is not in the graph"
            );
        }
        let h = Handle(self.nodes.len() as u32);
        self.nodes.push(node);
        self.interned.insert(node, h);
        h
    }

    pub fn node(&self, h: Handle) -> &Node {
        &self.nodes[h.index()]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Handle, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (Handle(i as u32), n))
    }

    /// Which nodes the given roots depend on (the roots included).
    pub fn reachable(&self, roots: &[Handle]) -> Vec<bool> {
        let mut live = vec![false; self.nodes.len()];
        for r in roots {
            live[r.index()] = true;
        }
        for i in (0..self.nodes.len()).rev() {
            if live[i] {
                for operand in self.nodes[i].op.operands() {
                    live[operand.index()] = true;
                }
            }
        }
        live
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}
