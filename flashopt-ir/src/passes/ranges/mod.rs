//! Value ranges: what a plan proves about each of its values, for every input.
//!
//! Loads of float parts and the gradient may hold anything (NaN and infinities
//! included: the step must give the CPU reference's bits whatever it reads); integer
//! parts hold their storage's codes; host scalars lie where their hyper-parameters'
//! declared ranges and `t >= 1` put them. From these, [`value_ranges`] propagates an
//! [`Interval`] (and whether NaN is possible) through every instruction, rounding
//! each bound outward to f32. Two things use it:
//!
//! - [`decided`], a pass: comparisons whose outcome the ranges fix become constants,
//!   and `select`, `min`, `max` and `clamp` whose choice they fix become the chosen
//!   operand (bit for bit what the instruction computes, on every back end);
//! - back ends, for sequences that skip a check where the operands cannot need it
//!   (a division whose dividend is never zero, by a divisor that is positive, a
//!   square root of a positive value).

mod instructions;
mod interval;
#[cfg(test)]
mod tests;

pub use interval::Interval;

use crate::def::{Bound, HyperParamDef};
use crate::graph::{Const, Func1, Func2, Func3, Input, Op};
use crate::plan::Plan;
use crate::program::{Inst, InstOp, IntOp, Program, ValueId, ValueType};
use crate::types::Type;

/// The largest step counter (`t` is an i64 on the host).
const MAX_STEP: f64 = i64::MAX as f64;

/// The values a hyper-parameter may take (its checked range; never NaN). One whose
/// default follows another's takes that one's value unchecked when built with
/// defaults: its range joins the other's.
fn hyper_interval(defs: &[HyperParamDef], i: usize) -> Interval {
    let def = &defs[i];
    let own = declared_interval(def);
    match &def.follows {
        Some(source) => match defs[..i].iter().position(|d| &d.name == source) {
            Some(j) => own.union(hyper_interval(defs, j)),
            None => Interval::ANY,
        },
        None => own,
    }
}

fn declared_interval(def: &HyperParamDef) -> Interval {
    if def.default.ty() == Type::Bool {
        return Interval::closed(0.0, 1.0);
    }
    let bound = |b: Bound, unbounded: f64| match b {
        Bound::Unbounded => unbounded,
        Bound::Inclusive(x) | Bound::Exclusive(x) => x,
    };
    let lo = bound(def.range.lo, f64::NEG_INFINITY);
    let hi = bound(def.range.hi, f64::INFINITY);
    // An f32 host arithmetic reads the value rounded to f32: the outward f32
    // neighbours bound both.
    Interval::closed(lo, hi).unary(Func1::ToFloat)
}

fn const_range(c: Const) -> Interval {
    match c {
        Const::Float(x) => Interval::point(x).unary(Func1::ToFloat),
        // Beyond 2^53 an i64 is not an f64: no bound claimed.
        Const::Int(x) if x.unsigned_abs() > 1 << 53 => Interval::ANY,
        Const::Int(x) => Interval::point(x as f64),
        Const::Bool(x) => Interval::point(f64::from(u8::from(x))),
    }
}

/// The range of every kernel scalar of `plan`, in [`Plan::kernel_scalars`]' order:
/// the host program's, the gradient scale (anything: the runtime sets it), and the
/// dither phase in `[0, 1]`.
pub fn scalar_ranges(plan: &Plan) -> Vec<Interval> {
    let graph = &plan.host.graph;
    let mut nodes: Vec<Interval> = Vec::with_capacity(graph.len());
    for (_, node) in graph.iter() {
        let v = |h: crate::graph::Handle| nodes[h.index()];
        let range = match node.op {
            Op::Const(c) => const_range(c),
            Op::Input(Input::Hyper(i)) => hyper_interval(&plan.hyper_params, i),
            Op::Input(Input::Step) => Interval::closed(1.0, MAX_STEP),
            Op::Input(_) | Op::Reduce(..) | Op::Matrix(..) => Interval::ANY,
            // Integer division truncates: not the real quotient's range.
            Op::Binary(Func2::Div, ..) if node.ty == Type::Int => Interval::ANY,
            Op::Unary(f, a) => v(a).unary(f),
            Op::Binary(f, a, b) => v(a).binary(f, v(b)),
            Op::Ternary(f, a, b, c) => v(a).ternary(f, v(b), v(c)),
        };
        nodes.push(range);
    }
    let mut scalars: Vec<Interval> = plan
        .host
        .scalars
        .iter()
        .map(|s| {
            let value = nodes[s.value.index()].unary(Func1::ToFloat);
            if s.reciprocal {
                Interval::point(1.0) / value
            } else {
                value
            }
        })
        .collect();
    scalars.push(Interval::ANY);
    if plan.dither_phase().is_some() {
        scalars.push(Interval::closed(0.0, 1.0));
    }
    scalars
}

/// The range of every value of `program` (one of `plan`'s), by instruction.
pub fn value_ranges(plan: &Plan, program: &Program) -> Vec<Interval> {
    let scalars = scalar_ranges(plan);
    let mut ranges: Vec<Interval> = Vec::with_capacity(program.len());
    for inst in &program.insts {
        let v = |x: ValueId| ranges[x.index()];
        let range = match inst.op {
            InstOp::Load(p) => match plan.part(p).storage.int_range() {
                Some((lo, hi)) => Interval::closed(lo.into(), hi.into()),
                None => Interval::ANY,
            },
            InstOp::Input(_)
            | InstOp::Store(..)
            | InstOp::Output(..)
            | InstOp::Reduce(..)
            | InstOp::Reduced(_)
            | InstOp::MatrixArg(..)
            | InstOp::MatrixResult(_) => Interval::ANY,
            // A tensor's rows or columns: a count of elements.
            InstOp::Dim(_) => Interval::closed(0.0, f64::from(u32::MAX)),
            InstOp::Scalar(k) => scalars[k],
            InstOp::Const(c) => Interval::point(c.into()),
            InstOp::IntConst(c) => Interval::point(c.into()),
            InstOp::Unary(f, a) => v(a).unary(f),
            InstOp::Binary(f, a, b) => v(a).binary(f, v(b)),
            InstOp::Ternary(f, a, b, c) => v(a).ternary(f, v(b), v(c)),
            InstOp::Floor(a) => v(a).floor(),
            InstOp::Fma(a, b, c) => v(a).fma(v(b), v(c)),
            InstOp::Round(dtype, a) => v(a).round_to(dtype),
            InstOp::Bits(a) => v(a).bits(),
            InstOp::Int(op, a, b) => match (op, halved(program, a, b)) {
                // `a - (a >> k)` never decreases with `a`: its bounds are the ends'.
                (IntOp::Sub, Some(k)) => {
                    let f = |x: f64| x - f64::from((x as i32) >> k);
                    Interval::closed(f(v(a).lo), f(v(a).hi))
                }
                _ => v(a).int_op(op, v(b)),
            },
            InstOp::ToF32(a) => v(a).unary(Func1::ToFloat),
            InstOp::Pow2(a) => v(a).pow2(),
            // NaN lanes are skipped; a group of NaN gives -inf.
            InstOp::GroupMax(a) => Interval {
                lo: if v(a).nan { f64::NEG_INFINITY } else { v(a).lo },
                hi: v(a).hi,
                nan: false,
            },
            InstOp::Table(t, code) => table_range(plan, t, v(code)),
        };
        ranges.push(range);
    }
    ranges
}

/// `k` where `b` is `a >> k` for a constant `k` in `1..32`.
fn halved(program: &Program, a: ValueId, b: ValueId) -> Option<u32> {
    let InstOp::Int(IntOp::Shr, x, k) = program.inst(b).op else {
        return None;
    };
    match program.inst(k).op {
        InstOp::IntConst(k) if x == a && (1..32).contains(&k) => Some(k as u32),
        _ => None,
    }
}

/// What the ranges prove about one instruction's operands that an IEEE division or
/// square root would otherwise test at run time (a back end may skip the test).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OperandFacts {
    /// A division's dividend is never zero and never NaN.
    pub nonzero_dividend: bool,
    /// A division's divisor is positive (and never NaN).
    pub positive_divisor: bool,
    /// A square root's operand is positive (and never NaN).
    pub positive_root: bool,
}

/// [`OperandFacts`] of every instruction of `program`.
pub fn operand_facts(plan: &Plan, program: &Program) -> Vec<OperandFacts> {
    let ranges = value_ranges(plan, program);
    let r = |v: ValueId| ranges[v.index()];
    program
        .insts
        .iter()
        .map(|inst| match inst.op {
            InstOp::Binary(Func2::Div, a, b) => OperandFacts {
                nonzero_dividend: r(a).excludes_zero(),
                positive_divisor: r(b).is_positive(),
                ..OperandFacts::default()
            },
            InstOp::Unary(Func1::Sqrt | Func1::Rsqrt, x) => OperandFacts {
                positive_root: r(x).is_positive(),
                ..OperandFacts::default()
            },
            _ => OperandFacts::default(),
        })
        .collect()
}

/// The entries a code in `codes` reads (a code outside the table reads its last
/// entry on the GPU, which clamps).
fn table_range(plan: &Plan, t: crate::program::TableId, codes: Interval) -> Interval {
    let table = &plan.tables[t.index()];
    let (first, last) = (f64::from(table.first), f64::from(table.last()));
    let mut read: Vec<f32> = table
        .values
        .iter()
        .enumerate()
        .filter(|&(i, _)| (codes.lo..=codes.hi).contains(&(first + i as f64)))
        .map(|(_, &x)| x)
        .collect();
    if codes.lo < first || codes.hi > last {
        read.extend(table.values.last());
    }
    let nan = read.iter().any(|x| x.is_nan());
    Interval::exact_hull(read.iter().map(|&x| f64::from(x)), nan)
}

/// `a` is above `b` for every pair of values, and equal values (if any) are not
/// zeros, whose signs `min`/`max` may pick either of.
fn above(a: Interval, b: Interval) -> bool {
    a.lo > b.hi || (a.lo == b.hi && a.lo != 0.0)
}

/// The value `op` always gives, if the ranges fix it: a constant or one operand.
fn decision(op: InstOp, own: Interval, r: &[Interval]) -> Option<Decided> {
    let range = |v: ValueId| r[v.index()];
    // `a` is what `max(a, b)` (`min(a, b)`) always gives.
    let kept = |a: ValueId, b: ValueId| !range(a).nan && above(range(a), range(b));
    let kept_below = |a: ValueId, b: ValueId| !range(a).nan && above(range(b), range(a));
    match op {
        InstOp::Binary(
            Func2::Lt | Func2::Le | Func2::Gt | Func2::Ge | Func2::Eq | Func2::Ne,
            ..,
        ) => own.single().map(|x| Decided::Constant(x as f32)),
        InstOp::Binary(Func2::Max, a, b) if kept(a, b) => Some(Decided::Operand(a)),
        InstOp::Binary(Func2::Max, a, b) if kept(b, a) => Some(Decided::Operand(b)),
        InstOp::Binary(Func2::Min, a, b) if kept_below(a, b) => Some(Decided::Operand(a)),
        InstOp::Binary(Func2::Min, a, b) if kept_below(b, a) => Some(Decided::Operand(b)),
        InstOp::Ternary(Func3::Select, c, a, b) => {
            match (range(c).can_be_true(), range(c).can_be_false()) {
                (true, false) => Some(Decided::Operand(a)),
                (false, true) => Some(Decided::Operand(b)),
                _ => None,
            }
        }
        InstOp::Ternary(Func3::Clamp, x, lo, hi)
            if !range(x).nan && above(range(x), range(lo)) && above(range(hi), range(x)) =>
        {
            Some(Decided::Operand(x))
        }
        _ => None,
    }
}

enum Decided {
    Constant(f32),
    Operand(ValueId),
}

/// `program` with every comparison, `select`, `min`, `max` and `clamp` the ranges
/// decide replaced by its value (dead code stays; [`super::optimize`] removes it).
fn decide(plan: &Plan, program: &Program) -> Program {
    let ranges = value_ranges(plan, program);
    let mut map: Vec<ValueId> = Vec::with_capacity(program.len());
    let mut out = Program::default();
    for (i, inst) in program.insts.iter().enumerate() {
        let decided = decision(inst.op, ranges[i], &ranges);
        let op = match decided {
            Some(Decided::Operand(v)) => {
                map.push(map[v.index()]);
                continue;
            }
            Some(Decided::Constant(c)) => InstOp::Const(c),
            None => inst.op.map_operands(|o| map[o.index()]),
        };
        map.push(ValueId(out.insts.len() as u32));
        out.insts.push(Inst { op, ty: inst.ty });
    }
    out
}

/// The plan with what its value ranges decide folded away, in every program.
pub fn decided(plan: &Plan) -> Plan {
    plan.with_programs(|program| decide(plan, program))
}

/// The step program with each value's range, for review (plan snapshots).
pub fn ranges_text(plan: &Plan) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "kernel scalars:");
    for (k, r) in scalar_ranges(plan).iter().enumerate() {
        let _ = writeln!(out, "  ${k} in {r}");
    }
    let _ = writeln!(out, "step (per element):");
    let ranges = value_ranges(plan, &plan.step);
    for (v, inst) in plan.step.iter() {
        let text = crate::print::inst_text(inst.op, plan);
        let _ = match inst.ty {
            ValueType::Unit => writeln!(out, "  {text}"),
            ValueType::I32 => writeln!(
                out,
                "  {v}: i32 = {text}  in {}",
                int_text(ranges[v.index()])
            ),
            ValueType::F32 => writeln!(out, "  {v}: f32 = {text}  in {}", ranges[v.index()]),
        };
    }
    out
}

fn int_text(r: Interval) -> String {
    if r == Interval::int_any() {
        "i32".into()
    } else {
        format!("[{}, {}]", r.lo, r.hi)
    }
}

/// Whether `v` (the bits of a value of type `ty`) lies in `range`: what the tests
/// check every interpreted value against.
pub fn holds(range: Interval, ty: ValueType, bits: u32) -> bool {
    match ty {
        ValueType::F32 => range.contains_f32(f32::from_bits(bits)),
        ValueType::I32 => {
            let x = f64::from(bits as i32);
            range.lo <= x && x <= range.hi
        }
        ValueType::Unit => true,
    }
}
