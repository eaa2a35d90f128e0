//! Division by a constant as a multiply and an exact correction, where that provably
//! equals IEEE division.
//!
//! For `q = a / d` with a constant `d`, the sequence `r = RN(1 / d)` (at plan time),
//! `q0 = a * r`, `e = fma(-d, q0, a)` (the exact remainder), `q = fma(e, r, q0)`
//! (Markstein's correction) costs three instructions where a GPU's IEEE division
//! takes about ten. It is not correctly rounded for every `a` in general, so the pass
//! applies it only where the dividend is an integer code of a known range (a widened
//! integer load) and checks every value of that range at plan time against `a / d`:
//! the rewrite happens only if all of them agree, so it is exact by exhaustion. Other
//! divisions (by host scalars, by group scales) stay divisions: no such proof covers
//! arbitrary dividends.

use crate::graph::Func2;
use crate::plan::Plan;
use crate::program::{Inst, InstOp, Program, ValueId, ValueType};

pub fn reciprocals(plan: &Plan) -> Plan {
    plan.with_programs(|program| rewrite(program, plan))
}

/// `a / d` by the corrected reciprocal, as the rewritten program computes it.
pub fn corrected_quotient(a: f32, d: f32) -> f32 {
    let r = 1.0 / d;
    let q0 = a * r;
    let e = (-d).mul_add(q0, a);
    e.mul_add(r, q0)
}

/// Whether [`corrected_quotient`] equals IEEE division for every integer in `range`.
pub fn exact_over(range: (i32, i32), d: f32) -> bool {
    (range.0..=range.1)
        .all(|a| corrected_quotient(a as f32, d).to_bits() == (a as f32 / d).to_bits())
}

/// The integer range of a value, if it is a widened integer load.
fn code_range(program: &Program, plan: &Plan, v: ValueId) -> Option<(i32, i32)> {
    let InstOp::ToF32(i) = program.inst(v).op else {
        return None;
    };
    let InstOp::Load(part) = program.inst(i).op else {
        return None;
    };
    plan.part(part).storage.int_range()
}

fn rewrite(program: &Program, plan: &Plan) -> Program {
    let mut insts: Vec<Inst> = Vec::with_capacity(program.len());
    let mut map: Vec<ValueId> = Vec::with_capacity(program.len());
    let f32_inst = |op| Inst {
        op,
        ty: ValueType::F32,
    };
    for inst in &program.insts {
        let op = inst.op.map_operands(|o| map[o.index()]);
        let divisor = match inst.op {
            InstOp::Binary(Func2::Div, a, d) => {
                match (program.inst(d).op, code_range(program, plan, a)) {
                    (InstOp::Const(d), Some(range))
                        if d.is_finite() && d != 0.0 && exact_over(range, d) =>
                    {
                        Some(d)
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        match (divisor, op) {
            (Some(d), InstOp::Binary(_, a, _)) => {
                let mut push = |op| {
                    insts.push(f32_inst(op));
                    ValueId(insts.len() as u32 - 1)
                };
                let r = push(InstOp::Const(1.0 / d));
                let minus_d = push(InstOp::Const(-d));
                let q0 = push(InstOp::Binary(Func2::Mul, a, r));
                let e = push(InstOp::Fma(minus_d, q0, a));
                map.push(push(InstOp::Fma(e, r, q0)));
            }
            _ => {
                insts.push(Inst { op, ty: inst.ty });
                map.push(ValueId(insts.len() as u32 - 1));
            }
        }
    }
    Program { insts }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codecs_divisors_are_exact_over_their_codes() {
        // Every code of every correction and state codec, checked by exhaustion.
        for (range, d) in [
            ((-128, 127), 127.0),
            ((0, 255), 255.0),
            ((-32768, 32767), 32767.0),
            ((-128, 127), 32767.0),
        ] {
            assert!(exact_over(range, d), "{range:?} / {d}");
        }
    }

    #[test]
    fn only_code_quotients_are_rewritten() {
        use crate::def::{OptimizerDef, Range, name};
        use crate::{MasterMode, PlanConfig, StateKind};
        let mut def = OptimizerDef::new("adam_like");
        def.hyper("lr", 0.1, Range::at_least(0.0));
        def.hyper("c", 2.0, Range::at_least(1.0));
        def.state("m", StateKind::Signed);
        def.assign("m", name("m") + name("g"));
        def.assign("p", name("p") - name("lr") * name("m") / name("c"));
        let plan = crate::compile(&def, PlanConfig::bf16(MasterMode::Int16)).unwrap();
        let ops = |p: &Program| -> Vec<InstOp> { p.insts.iter().map(|i| i.op).collect() };
        // The int16 correction's `code / 32767`: a multiply and two FMAs, no division.
        let decode = ops(&plan.decode);
        assert!(decode.iter().any(|op| matches!(op, InstOp::Fma(..))));
        assert!(
            !decode
                .iter()
                .any(|op| matches!(op, InstOp::Binary(Func2::Div, ..)))
        );
        // `m / c` (a host scalar) and the encode's `x / scale` (a group scale) divide.
        let divisions = ops(&plan.step)
            .iter()
            .filter(|op| matches!(op, InstOp::Binary(Func2::Div, ..)))
            .count();
        assert!(divisions >= 2, "{plan}");
    }
}
