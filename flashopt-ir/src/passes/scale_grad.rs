//! Gradient scaling for global-norm clipping.
//!
//! Clipping needs the norm of every gradient of the step before any tensor is
//! updated, so the norm comes from a separate reduction pass; the update kernel then
//! only multiplies each widened gradient by one per-step factor. This pass gives a
//! lowered plan that factor: one more kernel scalar, after the host program's, which
//! the runtime sets every step (1 when the norm is under the threshold), and a
//! multiply right after the loads that every later use of the gradient reads.
//! The product is in f32 after widening, so a bf16 gradient is not rounded again.

use crate::graph::Func2;
use crate::layout::Role;
use crate::plan::Plan;
use crate::program::{Inst, InstOp, Program, ValueId, ValueType};

/// `plan` (as [`crate::passes::lower`] made it) with its gradient multiplied by its
/// gradient-scale kernel scalar. [`crate::compile`] applies it once, last.
pub fn scale_grad(plan: &Plan) -> Plan {
    let mut out = plan.clone();
    let slot = plan.grad_scale();
    let grad_part = plan.part_with_role(Role::Gradient);
    let body = &plan.step.insts;
    let Some(grad) = body
        .iter()
        .position(|inst| inst.op == InstOp::Load(grad_part))
    else {
        // A rule that never reads its gradient has nothing to scale.
        return out;
    };
    // After the last load: loads stay together at the top of the program, so a kernel
    // still issues them all before any arithmetic.
    let loads_end = body
        .iter()
        .rposition(|inst| matches!(inst.op, InstOp::Load(_)))
        .expect("the gradient load")
        + 1;
    let scale = ValueId(loads_end as u32);
    let scaled = ValueId(loads_end as u32 + 1);
    let remap = |v: ValueId| match v.index() {
        i if i == grad => scaled,
        i if i < loads_end => v,
        _ => ValueId(v.0 + 2),
    };
    let mut insts = body[..loads_end].to_vec();
    insts.push(Inst {
        op: InstOp::Scalar(slot),
        ty: ValueType::F32,
    });
    insts.push(Inst {
        op: InstOp::Binary(Func2::Mul, ValueId(grad as u32), scale),
        ty: ValueType::F32,
    });
    insts.extend(body[loads_end..].iter().map(|inst| Inst {
        op: inst.op.map_operands(remap),
        ty: inst.ty,
    }));
    out.step = Program { insts };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::def::{OptimizerDef, Range, name};
    use crate::{PlanConfig, prepare};

    fn sgd_def() -> OptimizerDef {
        // The scaled gradient meets an addition: p - lr * (g + wd * p).
        let mut def = OptimizerDef::new("sgd_wd");
        def.hyper("lr", 1e-3, Range::at_least(0.0));
        def.hyper("wd", 1e-2, Range::at_least(0.0));
        def.assign(
            "p",
            name("p") - name("lr") * (name("g") + name("wd") * name("p")),
        );
        def
    }

    /// The plan before this pass (`compile` without its last step).
    fn sgd_like() -> Plan {
        let hoisted = prepare(&sgd_def()).unwrap();
        crate::passes::optimize(&crate::passes::lower(&hoisted, PlanConfig::f32_params()).unwrap())
    }

    #[test]
    fn every_use_of_the_gradient_reads_the_scaled_value() {
        let plan = sgd_like();
        let scaled = scale_grad(&plan);
        assert_eq!(scaled.grad_scale(), plan.host.scalars.len());
        assert_eq!(scaled.step.len(), plan.step.len() + 2);
        let grad_part = plan.part_with_role(Role::Gradient);
        let grad = scaled
            .step
            .insts
            .iter()
            .position(|i| i.op == InstOp::Load(grad_part))
            .unwrap();
        let product = scaled
            .step
            .insts
            .iter()
            .position(|i| matches!(i.op, InstOp::Binary(Func2::Mul, a, _) if a.index() == grad))
            .unwrap();
        assert_eq!(
            scaled.step.insts[product - 1].op,
            InstOp::Scalar(plan.host.scalars.len())
        );
        let loads = |p: &Plan| {
            p.step
                .insts
                .iter()
                .filter(|i| matches!(i.op, InstOp::Load(_)))
                .count()
        };
        assert!(
            scaled.step.insts[..loads(&plan)]
                .iter()
                .all(|i| matches!(i.op, InstOp::Load(_))),
            "loads stay first"
        );
        let product = ValueId(product as u32);
        for (i, inst) in scaled.step.insts.iter().enumerate() {
            if i != product.index() {
                assert!(
                    !inst.op.operands().contains(&ValueId(grad as u32)),
                    "%{i} still reads the unscaled gradient"
                );
            }
        }
        assert!(
            scaled
                .step
                .insts
                .iter()
                .any(|i| i.op.operands().contains(&product))
        );
    }

    #[test]
    fn compiled_plans_read_the_gradient_through_its_scale() {
        let plan = crate::compile(&sgd_def(), PlanConfig::f32_params()).unwrap();
        assert_eq!(plan.step, scale_grad(&sgd_like()).step);
        assert_eq!(plan.scalar_count(), plan.host.scalars.len() + 1);
    }
}
