//! Divisions as a multiply by a reciprocal and an exact correction.
//!
//! A GPU's IEEE division is about ten instructions plus an operand check and a
//! branch (NVRTC: a reciprocal, five FMAs, `FCHK`); the quotient `q = a / d` by a
//! correctly rounded reciprocal `r = RN(1 / d)` and Markstein's correction costs three:
//! `q0 = a * r`, `e = fma(q0, d, -a)` (the exact remainder, negated), `q = fma(e, -r,
//! q0)`. Two kinds of division are rewritten:
//!
//! - **By a constant, of an integer code** (`c / 127`): checked at plan time against
//!   IEEE division for every code of the range, rewritten only if all agree.
//! - **By a value common to the group** (a host scalar such as `1 - b1^t`, a group
//!   scale, a normal constant): the reciprocal is computed once (on the host, or once
//!   per unit of a group) and each element pays the three instructions. This equals
//!   IEEE division whenever the dividend, the divisor, its reciprocal and the quotient
//!   are normal numbers and the dividend is at least `2^-102` in magnitude (so the
//!   remainder is exact): verified by exhaustion over every pair of significands
//!   (`scripts/division_check.py`, docs/FORMATS.md); the exponents only scale every
//!   step by powers of two. Zeros keep their sign, except `+0` over a negative divisor
//!   (`+0` where IEEE gives `-0`; group scales and `1 - b^t` are positive). Out of that
//!   range (a zero, infinite or subnormal divisor, an infinite dividend, a subnormal
//!   quotient) the sequence, not IEEE division, defines the result, on the CPU and the
//!   GPU alike: `x / 0` is NaN where IEEE gives an infinity.
//!
//! Divisions whose divisor varies per element stay divisions.

use crate::graph::{Func1, Func2};
use crate::passes::HostScalar;
use crate::plan::Plan;
use crate::program::{Inst, InstOp, Program, ValueId, ValueType};
use crate::types::Type;

pub fn reciprocals(plan: &Plan) -> Plan {
    // The kernel's own scalars (the gradient scale, the dither phase) stay after the
    // host program's, whose count this pass grows: their reads are marked first (by
    // their distance from usize::MAX), then pointed at their new index.
    let first_builtin = plan.grad_scale();
    let mark = |k: usize| usize::MAX - (k - first_builtin);
    let plan = &plan.with_programs(|p| {
        p.map_ops(|op| match op {
            InstOp::Scalar(k) if k >= first_builtin => InstOp::Scalar(mark(k)),
            op => op,
        })
    });
    let mut out = plan.clone();
    out.step = rewrite(&plan.step, plan, &mut out.host);
    out.decode = rewrite(&plan.decode, plan, &mut out.host);
    out.init = rewrite(&plan.init, plan, &mut out.host);
    let first_builtin = out.grad_scale();
    let builtins = plan.scalar_count() - plan.grad_scale();
    out.with_programs(|p| {
        p.map_ops(|op| match op {
            InstOp::Scalar(k) if k > usize::MAX - builtins => {
                InstOp::Scalar(first_builtin + (usize::MAX - k))
            }
            op => op,
        })
    })
}

/// `a / d` by the corrected reciprocal, as the rewritten program computes it.
pub fn corrected_quotient(a: f32, d: f32) -> f32 {
    let r = 1.0 / d;
    let q0 = a * r;
    let e = q0.mul_add(d, -a);
    e.mul_add(-r, q0)
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

/// Where a rewritten division finds its divisor's reciprocal.
#[derive(Clone, Copy)]
enum Reciprocal {
    /// Known at plan time.
    Const(f32),
    /// A host scalar (the index of the reciprocal's own scalar).
    Scalar(usize),
    /// Divided once per unit: the divisor is common to the group.
    PerGroup,
}

/// How `a / d` is rewritten, if it is.
fn reciprocal(
    program: &Program,
    plan: &Plan,
    host: &mut crate::passes::HostProgram,
    uniform: &[bool],
    a: ValueId,
    d: ValueId,
) -> Option<Reciprocal> {
    let normal = |x: f32| x.is_normal() && (1.0 / x).is_normal();
    match program.inst(d).op {
        InstOp::Const(c) => match code_range(program, plan, a) {
            Some(range) => {
                (normal(c) && exact_over(range, c)).then_some(Reciprocal::Const(1.0 / c))
            }
            None => (normal(c) && !uniform[a.index()]).then_some(Reciprocal::Const(1.0 / c)),
        },
        _ if uniform[a.index()] || !uniform[d.index()] => None,
        InstOp::Scalar(k) => {
            let divisor = host.scalars.get(k)?.clone();
            if divisor.reciprocal {
                return None;
            }
            let existing = host
                .scalars
                .iter()
                .position(|s| s.reciprocal && s.value == divisor.value);
            Some(Reciprocal::Scalar(existing.unwrap_or_else(|| {
                host.scalars.push(HostScalar {
                    value: divisor.value,
                    ty: Type::F32,
                    reciprocal: true,
                });
                host.scalars.len() - 1
            })))
        }
        _ => Some(Reciprocal::PerGroup),
    }
}

fn rewrite(program: &Program, plan: &Plan, host: &mut crate::passes::HostProgram) -> Program {
    let uniform = plan.uniform_over_group(program);
    let mut insts: Vec<Inst> = Vec::with_capacity(program.len());
    let mut map: Vec<ValueId> = Vec::with_capacity(program.len());
    for inst in &program.insts {
        let op = inst.op.map_operands(|o| map[o.index()]);
        let how = match inst.op {
            InstOp::Binary(Func2::Div, a, d) => reciprocal(program, plan, host, &uniform, a, d),
            _ => None,
        };
        let mut push = |op, ty| {
            insts.push(Inst { op, ty });
            ValueId(insts.len() as u32 - 1)
        };
        let value = match (how, op) {
            (Some(how), InstOp::Binary(_, a, d)) => {
                let mut f32_op = |op| push(op, ValueType::F32);
                let (r, minus_r) = match how {
                    Reciprocal::Const(r) => (f32_op(InstOp::Const(r)), f32_op(InstOp::Const(-r))),
                    Reciprocal::Scalar(k) => {
                        let r = f32_op(InstOp::Scalar(k));
                        (r, f32_op(InstOp::Unary(Func1::Neg, r)))
                    }
                    Reciprocal::PerGroup => {
                        let one = f32_op(InstOp::Const(1.0));
                        let r = f32_op(InstOp::Binary(Func2::Div, one, d));
                        (r, f32_op(InstOp::Unary(Func1::Neg, r)))
                    }
                };
                let minus_a = f32_op(InstOp::Unary(Func1::Neg, a));
                let q0 = f32_op(InstOp::Binary(Func2::Mul, a, r));
                let e = f32_op(InstOp::Fma(q0, d, minus_a));
                f32_op(InstOp::Fma(e, minus_r, q0))
            }
            (_, op) => push(op, inst.ty),
        };
        map.push(value);
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

    /// Dividends over whole binades of significands, scaled through the exponent
    /// range, against IEEE division, for divisors that stress the reciprocal (1,
    /// all-ones significands, near-midpoint reciprocals) and a few common ones. The
    /// exhaustive check over every pair of significands runs on a GPU
    /// (`scripts/division_check.py`).
    #[test]
    fn the_corrected_quotient_is_ieee_division_in_the_normal_range() {
        let divisors = [
            1.0f32,
            f32::from_bits(0x3fff_ffff),
            f32::from_bits(0x3fff_fffe),
            1.5,
            3.0,
            0.1,
            1e-12,
            0.999,
            1.0 - 0.9f32.powi(3),
            f32::from_bits(0x3f80_0001),
            7.3e-30,
            6.1e24,
        ];
        for d in divisors {
            // Every 61st significand of a binade, so that both binades of the quotient
            // and every residue class of the low bits are visited.
            for m in (0..1u32 << 23).step_by(61) {
                let a = f32::from_bits(0x3f80_0000 | m);
                for scale in [
                    1.0f32,
                    2f32.powi(-100),
                    2f32.powi(-60),
                    2f32.powi(40),
                    2f32.powi(90),
                ] {
                    for a in [a * scale, -a * scale] {
                        let q = a / d;
                        if !q.is_normal() {
                            continue;
                        }
                        assert_eq!(
                            corrected_quotient(a, d).to_bits(),
                            q.to_bits(),
                            "{a:e} / {d:e}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn zeros_keep_their_sign_and_out_of_range_divisors_are_defined_by_the_sequence() {
        for d in [1.0f32, 0.37, 1e-12, 3e20] {
            assert_eq!(corrected_quotient(0.0, d).to_bits(), 0.0f32.to_bits());
            assert_eq!(corrected_quotient(-0.0, d).to_bits(), (-0.0f32).to_bits());
            assert_eq!(corrected_quotient(-0.0, -d).to_bits(), 0.0f32.to_bits());
            // The one zero that loses its sign: +0 over a negative divisor (IEEE: -0).
            assert_eq!(corrected_quotient(0.0, -d).to_bits(), 0.0f32.to_bits());
        }
        // IEEE gives an infinity; the sequence NaN, on every back end alike.
        assert!(corrected_quotient(1.0, 0.0).is_nan());
        assert!(corrected_quotient(f32::NAN, 2.0).is_nan());
    }

    use crate::graph::{Input, Op};

    fn divisions(program: &Program) -> Vec<(ValueId, ValueId)> {
        program
            .insts
            .iter()
            .filter_map(|i| match i.op {
                InstOp::Binary(Func2::Div, a, d) => Some((a, d)),
                _ => None,
            })
            .collect()
    }

    /// Host scalars added here go before the gradient scale, which a plan scaled
    /// first still reads, at its new index.
    #[test]
    fn the_gradient_scale_stays_the_last_scalar() {
        use crate::def::{OptimizerDef, Range, name};
        use crate::{PlanConfig, passes};
        let mut def = OptimizerDef::new("scaled_by_c");
        def.hyper("c", 2.0, Range::at_least(1.0));
        def.assign("p", name("p") - name("g") / name("c"));
        let hoisted = crate::prepare(&def).unwrap();
        let lowered = passes::lower(&hoisted, PlanConfig::f32_params()).unwrap();
        let scaled = passes::scale_grad(&lowered);
        let reads = |p: &Plan| -> Vec<usize> {
            p.step
                .insts
                .iter()
                .filter_map(|i| match i.op {
                    InstOp::Scalar(k) => Some(k),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(reads(&scaled), vec![1, 0], "the gradient scale, then c");
        let out = reciprocals(&scaled);
        assert_eq!(out.grad_scale(), 2, "`1 / c` added before it");
        assert_eq!(
            reads(&out),
            vec![2, 0, 1],
            "the gradient scale, c, `1 / c`: {out}"
        );
    }

    #[test]
    fn divisions_by_values_common_to_the_group_are_rewritten() {
        use crate::def::{OptimizerDef, Range, name};
        use crate::{MasterMode, PlanConfig, StateKind};
        let mut def = OptimizerDef::new("adam_like");
        def.hyper("lr", 0.1, Range::at_least(0.0));
        def.hyper("c", 2.0, Range::at_least(1.0));
        def.state("m", StateKind::Signed);
        def.assign("m", name("m") + name("g"));
        // `/ c` is by a host scalar, `/ (g * g + 1)` by a per-element value.
        def.assign(
            "p",
            name("p") - name("lr") * name("m") / name("c") / (name("g") * name("g") + 1.0),
        );
        let plan = crate::compile(&def, PlanConfig::bf16(MasterMode::Int16)).unwrap();
        // The int16 correction's `code / 32767`: a multiply and two FMAs, no division.
        assert!(divisions(&plan.decode).is_empty(), "{plan}");
        assert!(
            plan.decode
                .insts
                .iter()
                .any(|i| matches!(i.op, InstOp::Fma(..)))
        );
        // `/ c`: the host computes `1 / c` once per step.
        let is_c = |h| plan.host.graph.node(h).op == Op::Input(Input::Hyper(1));
        let c = plan
            .host
            .scalars
            .iter()
            .position(|s| !s.reciprocal && is_c(s.value))
            .unwrap();
        let reciprocal = plan.host.scalars.iter().position(|s| s.reciprocal).unwrap();
        assert_eq!(
            plan.host.scalars[reciprocal].value,
            plan.host.scalars[c].value
        );
        let hyper = crate::hyper::HyperValues::defaults(&plan.hyper_params);
        let scalars = plan.kernel_scalars(&hyper, 1).unwrap();
        assert_eq!(scalars[reciprocal].to_bits(), (1.0 / scalars[c]).to_bits());
        // What divides per element: the per-element divisor and the softsign encode's
        // `2x / (1 + |x|)`; once per group, the scale's reciprocal (`1 / scale`).
        let uniform = plan.uniform_over_group(&plan.step);
        let per_element: Vec<_> = divisions(&plan.step)
            .into_iter()
            .filter(|(a, _)| !uniform[a.index()])
            .collect();
        assert_eq!(per_element.len(), 2, "{plan}");
        assert!(per_element.iter().all(|(_, d)| !uniform[d.index()]));
        assert!(
            divisions(&plan.step)
                .iter()
                .any(|&(a, d)| uniform[a.index()] && uniform[d.index()]),
            "{plan}"
        );
    }
}
