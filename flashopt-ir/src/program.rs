//! Lowered programs: the per-element instructions of a step (and of the decode and
//! init programs), codec arithmetic included.
//!
//! A program is SSA: each instruction defines at most one value, in order, and reads
//! only earlier values. It runs once per element of a 32-element group, all lanes of a
//! group in step; two instructions see the whole group (`GroupMax`, and loads and
//! stores of per-group parts, whose value is the same on every lane). Values are f32
//! (booleans are 1.0 / 0.0) or i32 (bits, exponents, codes). [`crate::semantics`] says
//! what every instruction computes; the CPU interpreter and the GPU back end translate
//! instructions one by one and know nothing of codecs.

use std::fmt;

use crate::graph::{Dim, Func1, Func2, Func3};
use crate::layout::PartId;
use crate::types::FloatDtype;

/// A value of a program, by the index of the instruction that defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// The type of an instruction's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    F32,
    I32,
    /// Effects (stores, outputs) define no value.
    Unit,
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueType::F32 => "f32",
            ValueType::I32 => "i32",
            ValueType::Unit => "()",
        })
    }
}

/// Integer operations on i32 values (two's complement, wrapping).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IntOp {
    Add,
    Sub,
    /// Arithmetic shift right: `floor(a / 2^b)`.
    Shr,
    And,
    Max,
}

impl IntOp {
    pub fn name(self) -> &'static str {
        match self {
            IntOp::Add => "iadd",
            IntOp::Sub => "isub",
            IntOp::Shr => "ishr",
            IntOp::And => "iand",
            IntOp::Max => "imax",
        }
    }
}

/// A code table built at plan time ([`crate::passes::code_tables`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId(pub usize);

impl TableId {
    pub fn index(self) -> usize {
        self.0
    }
}

/// The values of an f32 function of an integer code, for every code of its range:
/// `values[c - first]` for `c` in `first..first + values.len()`.
#[derive(Clone, Debug, PartialEq)]
pub struct CodeTable {
    pub first: i32,
    pub values: Vec<f32>,
    /// The computation it replaces, over the code `c` (for plan dumps).
    pub source: String,
}

impl CodeTable {
    pub fn last(&self) -> i32 {
        self.first + self.values.len() as i32 - 1
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum InstOp {
    /// A part's value for this element (its group's, for a per-group part): f32 for
    /// float storages, widened exactly; i32 for integer storages.
    Load(PartId),
    /// Write an f32 to a part, converted to its storage: rounded to nearest even for
    /// float storages; for integer storages an integral value inside the storage's
    /// range (the codecs only store such values; NaN becomes 0). The CPU reference
    /// saturates a value out of range (and panics on one in debug builds, so tests
    /// find it), a GPU back end converts it as its hardware does (CUDA wraps 128.0 to
    /// -128 in an int8), so a program must not produce one.
    /// A per-group part's value must be the same on every lane of the group.
    Store(PartId, ValueId),
    /// Element of the `k`-th f32 input stream (decode and init programs).
    Input(usize),
    /// Write the `k`-th f32 output stream.
    Output(usize, ValueId),
    /// A host scalar of this element's parameter group.
    Scalar(usize),
    Const(f32),
    IntConst(i32),
    Unary(Func1, ValueId),
    Binary(Func2, ValueId, ValueId),
    Ternary(Func3, ValueId, ValueId, ValueId),
    Floor(ValueId),
    /// `a * b + c` with one rounding.
    Fma(ValueId, ValueId, ValueId),
    /// Round an f32 to a narrow dtype (nearest even) and widen it back, exactly.
    Round(FloatDtype, ValueId),
    /// The bits of an f32, as i32.
    Bits(ValueId),
    Int(IntOp, ValueId, ValueId),
    /// i32 to f32 (exact for the codes and exponents programs use).
    ToF32(ValueId),
    /// `2^k` for an i32 `k` in `-126..=127`, built from its bits.
    Pow2(ValueId),
    /// The largest value over the group's elements (its padding excluded), NaN ignored,
    /// `-inf` if every element is NaN.
    GroupMax(ValueId),
    /// `table.values[c - table.first]` for an i32 code `c`.
    Table(TableId, ValueId),
    /// This element's term of the plan's reduction `k` (`Plan::reductions`): an
    /// effect of a reduction phase (`Plan::phases`), summed over the tensor in the
    /// order [`crate::semantics::reduction`] fixes.
    Reduce(usize, ValueId),
    /// The value of reduction `k` for this element's tensor, computed by an earlier
    /// phase: the same on every element of the tensor.
    Reduced(usize),
    /// This element's entry of the argument of the plan's matrix function `m`
    /// (`Plan::matrices`): an effect of a phase, like a reduction's term.
    MatrixArg(usize, ValueId),
    /// This element's entry of matrix function `m`'s result, computed between an
    /// earlier phase and this program.
    MatrixResult(usize),
    /// The rows or columns of this element's tensor, as f32.
    Dim(Dim),
}

impl InstOp {
    pub fn operands(&self) -> Vec<ValueId> {
        use InstOp::*;
        match *self {
            Load(_) | Input(_) | Scalar(_) | Const(_) | IntConst(_) | Reduced(_)
            | MatrixResult(_) | Dim(_) => vec![],
            Store(_, a)
            | Reduce(_, a)
            | MatrixArg(_, a)
            | Output(_, a)
            | Unary(_, a)
            | Floor(a)
            | Round(_, a)
            | Bits(a)
            | ToF32(a)
            | Pow2(a)
            | GroupMax(a)
            | Table(_, a) => vec![a],
            Binary(_, a, b) | Int(_, a, b) => vec![a, b],
            Ternary(_, a, b, c) | Fma(a, b, c) => vec![a, b, c],
        }
    }

    /// The same operation over other operands (`f` maps each operand).
    pub fn map_operands(&self, mut f: impl FnMut(ValueId) -> ValueId) -> InstOp {
        use InstOp::*;
        match *self {
            op @ (Load(_) | Input(_) | Scalar(_) | Const(_) | IntConst(_) | Reduced(_)
            | MatrixResult(_) | Dim(_)) => op,
            Store(p, a) => Store(p, f(a)),
            Reduce(k, a) => Reduce(k, f(a)),
            MatrixArg(m, a) => MatrixArg(m, f(a)),
            Output(k, a) => Output(k, f(a)),
            Unary(g, a) => Unary(g, f(a)),
            Floor(a) => Floor(f(a)),
            Round(d, a) => Round(d, f(a)),
            Bits(a) => Bits(f(a)),
            ToF32(a) => ToF32(f(a)),
            Pow2(a) => Pow2(f(a)),
            GroupMax(a) => GroupMax(f(a)),
            Table(t, a) => Table(t, f(a)),
            Binary(g, a, b) => Binary(g, f(a), f(b)),
            Int(g, a, b) => Int(g, f(a), f(b)),
            Ternary(g, a, b, c) => Ternary(g, f(a), f(b), f(c)),
            Fma(a, b, c) => Fma(f(a), f(b), f(c)),
        }
    }

    /// Stores, outputs, reduction terms and matrix arguments: kept whether or not
    /// anything reads them.
    pub fn is_effect(&self) -> bool {
        matches!(
            self,
            InstOp::Store(..) | InstOp::Output(..) | InstOp::Reduce(..) | InstOp::MatrixArg(..)
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Inst {
    pub op: InstOp,
    pub ty: ValueType,
}

/// An SSA list of instructions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Program {
    pub insts: Vec<Inst>,
}

impl Program {
    pub fn len(&self) -> usize {
        self.insts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.insts.is_empty()
    }

    pub fn inst(&self, v: ValueId) -> &Inst {
        &self.insts[v.index()]
    }

    pub fn iter(&self) -> impl Iterator<Item = (ValueId, &Inst)> {
        self.insts
            .iter()
            .enumerate()
            .map(|(i, inst)| (ValueId(i as u32), inst))
    }

    /// The same program with each instruction's operation replaced by `f` of it
    /// (types and order kept).
    pub fn map_ops(&self, mut f: impl FnMut(InstOp) -> InstOp) -> Program {
        let insts = self.insts.iter().map(|inst| Inst {
            op: f(inst.op),
            ty: inst.ty,
        });
        Program {
            insts: insts.collect(),
        }
    }

    /// The parts the program reads.
    pub fn loads(&self) -> impl Iterator<Item = PartId> + '_ {
        self.insts.iter().filter_map(|i| match i.op {
            InstOp::Load(p) => Some(p),
            _ => None,
        })
    }

    /// The parts the program writes.
    pub fn stores(&self) -> impl Iterator<Item = PartId> + '_ {
        self.insts.iter().filter_map(|i| match i.op {
            InstOp::Store(p, _) => Some(p),
            _ => None,
        })
    }

    pub fn reads(&self, part: PartId) -> bool {
        self.loads().any(|p| p == part)
    }

    pub fn writes(&self, part: PartId) -> bool {
        self.stores().any(|p| p == part)
    }

    /// The number of input and output streams the program uses.
    pub fn streams(&self) -> (usize, usize) {
        let (mut inputs, mut outputs) = (0, 0);
        for inst in &self.insts {
            match inst.op {
                InstOp::Input(k) => inputs = inputs.max(k + 1),
                InstOp::Output(k, _) => outputs = outputs.max(k + 1),
                _ => {}
            }
        }
        (inputs, outputs)
    }

    /// The same program with every load moved to the front, in order (loads read no
    /// values), so that a kernel issues all its memory reads before any arithmetic.
    pub fn loads_first(&self) -> Program {
        let is_load = |inst: &Inst| matches!(inst.op, InstOp::Load(_));
        let order: Vec<usize> = (0..self.insts.len())
            .filter(|&i| is_load(&self.insts[i]))
            .chain((0..self.insts.len()).filter(|&i| !is_load(&self.insts[i])))
            .collect();
        self.reordered(&order)
    }

    /// The instructions in `order` (a permutation that keeps operands before users).
    fn reordered(&self, order: &[usize]) -> Program {
        let mut map = vec![ValueId(0); self.insts.len()];
        for (new, &old) in order.iter().enumerate() {
            map[old] = ValueId(new as u32);
        }
        Program {
            insts: order
                .iter()
                .map(|&old| {
                    let inst = self.insts[old];
                    Inst {
                        op: inst.op.map_operands(|o| map[o.index()]),
                        ty: inst.ty,
                    }
                })
                .collect(),
        }
    }

    /// Each computation once: an instruction that repeats an earlier one (same
    /// operation on the same operands; effects and loads excepted) is dropped and its
    /// users read the earlier value. Exact: every such instruction is a function of
    /// its operands.
    pub fn deduplicated(&self) -> Program {
        let mut seen: std::collections::HashMap<String, ValueId> = std::collections::HashMap::new();
        let mut map: Vec<ValueId> = Vec::with_capacity(self.insts.len());
        let mut out = Program::default();
        for inst in &self.insts {
            let op = inst.op.map_operands(|o| map[o.index()]);
            let pure = !op.is_effect() && !matches!(op, InstOp::Load(_) | InstOp::Input(_));
            // Constants by their bits: `-0.0` and `0.0`, or two NaNs, are not the same.
            let key = match op {
                InstOp::Const(c) => format!("Const({:#010x})", c.to_bits()),
                op => format!("{op:?}"),
            };
            if pure && let Some(&v) = seen.get(&key) {
                map.push(v);
                continue;
            }
            let v = ValueId(out.insts.len() as u32);
            out.insts.push(Inst { op, ty: inst.ty });
            if pure {
                seen.insert(key, v);
            }
            map.push(v);
        }
        out
    }

    /// Remove instructions no effect depends on, renumbering the rest in order.
    pub fn without_dead_code(&self) -> Program {
        self.keeping(|_| true)
    }

    /// Only the effects `keep` accepts and what they depend on, renumbered in order
    /// (e.g. one output stream of a decode program).
    pub fn keeping(&self, keep: impl Fn(&InstOp) -> bool) -> Program {
        let mut live = vec![false; self.insts.len()];
        for (i, inst) in self.insts.iter().enumerate().rev() {
            if inst.op.is_effect() && keep(&inst.op) {
                live[i] = true;
            }
            if live[i] {
                for o in inst.op.operands() {
                    live[o.index()] = true;
                }
            }
        }
        let mut map = vec![None; self.insts.len()];
        let mut out = Program::default();
        for (i, inst) in self.insts.iter().enumerate() {
            if !live[i] {
                continue;
            }
            let op = inst
                .op
                .map_operands(|o| map[o.index()].expect("operands are live and earlier"));
            map[i] = Some(ValueId(out.insts.len() as u32));
            out.insts.push(Inst { op, ty: inst.ty });
        }
        out
    }
}

/// Appends instructions; what the lowering and the codecs write programs with.
#[derive(Default)]
pub struct Builder {
    pub program: Program,
}

impl Builder {
    pub fn push(&mut self, op: InstOp, ty: ValueType) -> ValueId {
        self.program.insts.push(Inst { op, ty });
        ValueId(self.program.insts.len() as u32 - 1)
    }

    pub fn load(&mut self, part: PartId, ty: ValueType) -> ValueId {
        self.push(InstOp::Load(part), ty)
    }

    pub fn store(&mut self, part: PartId, v: ValueId) {
        self.push(InstOp::Store(part, v), ValueType::Unit);
    }

    pub fn constant(&mut self, c: f32) -> ValueId {
        self.push(InstOp::Const(c), ValueType::F32)
    }

    pub fn int(&mut self, c: i32) -> ValueId {
        self.push(InstOp::IntConst(c), ValueType::I32)
    }

    pub fn unary(&mut self, f: Func1, a: ValueId) -> ValueId {
        self.push(InstOp::Unary(f, a), ValueType::F32)
    }

    pub fn binary(&mut self, f: Func2, a: ValueId, b: ValueId) -> ValueId {
        self.push(InstOp::Binary(f, a, b), ValueType::F32)
    }

    pub fn ternary(&mut self, f: Func3, a: ValueId, b: ValueId, c: ValueId) -> ValueId {
        self.push(InstOp::Ternary(f, a, b, c), ValueType::F32)
    }

    pub fn add(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(Func2::Add, a, b)
    }

    pub fn sub(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(Func2::Sub, a, b)
    }

    pub fn mul(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(Func2::Mul, a, b)
    }

    pub fn div(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.binary(Func2::Div, a, b)
    }

    pub fn abs(&mut self, a: ValueId) -> ValueId {
        self.unary(Func1::Abs, a)
    }

    pub fn floor(&mut self, a: ValueId) -> ValueId {
        self.push(InstOp::Floor(a), ValueType::F32)
    }

    pub fn int_op(&mut self, op: IntOp, a: ValueId, b: ValueId) -> ValueId {
        self.push(InstOp::Int(op, a, b), ValueType::I32)
    }

    pub fn to_f32(&mut self, a: ValueId) -> ValueId {
        self.push(InstOp::ToF32(a), ValueType::F32)
    }

    pub fn pow2(&mut self, k: ValueId) -> ValueId {
        self.push(InstOp::Pow2(k), ValueType::F32)
    }

    pub fn group_max(&mut self, a: ValueId) -> ValueId {
        self.push(InstOp::GroupMax(a), ValueType::F32)
    }

    pub fn finish(self) -> Program {
        self.program
    }
}
