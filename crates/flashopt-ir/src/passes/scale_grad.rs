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
use crate::plan::{Inst, InstOp, Load, Plan, Store, ValueId};
use crate::types::Type;

/// `plan` with its gradient multiplied by a per-step kernel scalar. Idempotent.
pub fn scale_grad(plan: &Plan) -> Plan {
    let mut out = plan.clone();
    if plan.grad_scale.is_some() {
        return out;
    }
    let slot = plan.host.scalars.len();
    out.grad_scale = Some(slot);
    let Some(grad) = plan
        .body
        .iter()
        .position(|inst| inst.op == InstOp::Load(Load::Grad))
    else {
        // A rule that never reads its gradient has nothing to scale.
        return out;
    };
    // After the last load: loads stay together at the top of the body, so a kernel
    // still issues them all before any arithmetic.
    let loads_end = plan
        .body
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
    let mut body = plan.body[..loads_end].to_vec();
    body.push(Inst {
        op: InstOp::Scalar(slot),
        ty: Type::F32,
    });
    body.push(Inst {
        op: InstOp::Binary(Func2::Mul, ValueId(grad as u32), scale),
        ty: Type::F32,
    });
    body.extend(plan.body[loads_end..].iter().map(|inst| Inst {
        op: match inst.op {
            InstOp::Unary(f, a) => InstOp::Unary(f, remap(a)),
            InstOp::Binary(f, a, b) => InstOp::Binary(f, remap(a), remap(b)),
            InstOp::Ternary(f, a, b, c) => InstOp::Ternary(f, remap(a), remap(b), remap(c)),
            leaf => leaf,
        },
        ty: inst.ty,
    }));
    out.body = body;
    out.stores = plan
        .stores
        .iter()
        .map(|store| match *store {
            Store::Param(v) => Store::Param(remap(v)),
            Store::State(s, v) => Store::State(s, remap(v)),
        })
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::def::{OptimizerDef, Range, name};
    use crate::{PlanConfig, compile};

    fn sgd_like() -> Plan {
        // The scaled gradient meets an addition: p - lr * (g + wd * p).
        let mut def = OptimizerDef::new("sgd_wd");
        def.hyper("lr", 1e-3, Range::at_least(0.0));
        def.hyper("wd", 1e-2, Range::at_least(0.0));
        def.assign(
            "p",
            name("p") - name("lr") * (name("g") + name("wd") * name("p")),
        );
        compile(&def, PlanConfig::f32()).unwrap()
    }

    #[test]
    fn every_use_of_the_gradient_reads_the_scaled_value() {
        let plan = sgd_like();
        let scaled = scale_grad(&plan);
        assert_eq!(scaled.grad_scale, Some(plan.host.scalars.len()));
        assert_eq!(scaled.body.len(), plan.body.len() + 2);
        let grad = scaled
            .body
            .iter()
            .position(|i| i.op == InstOp::Load(Load::Grad))
            .unwrap();
        let product = scaled
            .body
            .iter()
            .position(|i| matches!(i.op, InstOp::Binary(Func2::Mul, a, _) if a.index() == grad))
            .unwrap();
        assert_eq!(
            scaled.body[product - 1].op,
            InstOp::Scalar(plan.host.scalars.len())
        );
        let loads = |p: &Plan| {
            p.body
                .iter()
                .filter(|i| matches!(i.op, InstOp::Load(_)))
                .count()
        };
        assert!(
            scaled.body[..loads(&plan)]
                .iter()
                .all(|i| matches!(i.op, InstOp::Load(_))),
            "loads stay first"
        );
        let product = ValueId(product as u32);
        for (i, inst) in scaled.body.iter().enumerate() {
            if i != product.index() {
                assert!(
                    !inst.op.operands().contains(&ValueId(grad as u32)),
                    "%{i} still reads the unscaled gradient"
                );
            }
        }
        assert!(
            scaled
                .body
                .iter()
                .any(|i| i.op.operands().contains(&product))
        );
        assert_eq!(scale_grad(&scaled).body, scaled.body, "idempotent");
    }
}
