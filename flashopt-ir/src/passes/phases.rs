//! Splitting a step with reductions or matrix functions into passes over memory.
//!
//! A rule that reads `tensor_norm(u)` needs every element's `u` before any element
//! can be updated. The lowered step holds the whole rule: each reduction's term as a
//! `Reduce(k, x)` effect and its value as `Reduced(k)`. This pass cuts it into the
//! fewest passes: phase 0 computes the reductions whose terms read no reduced value,
//! phase 1 those that read phase 0's, and so on; the step reads them all. Each phase
//! is the step's own instructions for its terms (decodes included, stores and encodes
//! left out), so a term is computed exactly as the step computes the same value: the
//! norm a trust ratio divides by is the norm of the update it scales, bit for bit.
//! The price is reading again what a phase needs (LAMB: the parameter, gradient and
//! states twice); nothing is written between the passes but the per-group partial
//! sums.
//!
//! A matrix function (`orthogonalize(u)`) cuts the same way: its argument is a
//! `MatrixArg(m, x)` effect of the phase that can compute it, its result a
//! `MatrixResult(m)` read by later passes; between them the function runs on each
//! tensor's whole matrix of arguments.

use crate::plan::Plan;
use crate::program::{InstOp, Program};

/// `plan` with its step split into phases and the step proper. A plan without
/// reductions or matrix functions comes back as it is.
pub fn split(plan: &Plan) -> Plan {
    if plan.reductions.is_empty() && plan.matrices.is_empty() {
        return plan.clone();
    }
    let phase = slot_phases(&plan.step, plan.reductions.len(), plan.matrices.len());
    let count = phase
        .reductions
        .iter()
        .chain(&phase.matrices)
        .max()
        .map_or(0, |&p| p + 1);
    let phases = (0..count)
        .map(|p| {
            plan.step.keeping(|op| match *op {
                InstOp::Reduce(k, _) => phase.reductions[k] == p,
                InstOp::MatrixArg(m, _) => phase.matrices[m] == p,
                _ => false,
            })
        })
        .collect();
    Plan {
        step: plan
            .step
            .keeping(|op| !matches!(op, InstOp::Reduce(..) | InstOp::MatrixArg(..))),
        phases,
        ..plan.clone()
    }
}

/// The phase that computes each reduction's terms and each matrix function's
/// argument.
pub struct SlotPhases {
    pub reductions: Vec<usize>,
    pub matrices: Vec<usize>,
}

/// Each slot's phase: one past the latest phase of the reductions and matrix
/// functions its term or argument reads (0 when it reads none).
pub fn slot_phases(program: &Program, reductions: usize, matrices: usize) -> SlotPhases {
    let mut phase = SlotPhases {
        reductions: vec![0; reductions],
        matrices: vec![0; matrices],
    };
    // For each value: 1 + the latest phase it depends on, 0 for none.
    let mut after = vec![0usize; program.len()];
    for (i, inst) in program.insts.iter().enumerate() {
        after[i] = match inst.op {
            InstOp::Reduced(k) => phase.reductions[k] + 1,
            InstOp::MatrixResult(m) => phase.matrices[m] + 1,
            InstOp::Reduce(k, v) => {
                phase.reductions[k] = after[v.index()];
                0
            }
            InstOp::MatrixArg(m, v) => {
                phase.matrices[m] = after[v.index()];
                0
            }
            op => op
                .operands()
                .iter()
                .map(|o| after[o.index()])
                .max()
                .unwrap_or(0),
        };
    }
    phase
}

#[cfg(test)]
mod tests {
    use crate::def::{OptimizerDef, Range, call, name};
    use crate::plan::PlanConfig;
    use crate::program::InstOp;

    fn reductions_of(program: &crate::program::Program) -> Vec<usize> {
        program
            .insts
            .iter()
            .filter_map(|i| match i.op {
                InstOp::Reduce(k, _) => Some(k),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_reduction_of_a_reduced_value_gets_a_phase_of_its_own() {
        let mut def = OptimizerDef::new("two_phases");
        def.hyper("lr", 0.1, Range::at_least(0.0));
        // phase 0: the mean of g; phase 1: the norm of g centred on it.
        def.bind("centred", name("g") - call("tensor_mean", vec![name("g")]));
        def.bind("spread", call("tensor_norm", vec![name("centred")]));
        def.bind("scale", call("tensor_norm", vec![name("p")]));
        def.assign(
            "p",
            name("p") - name("lr") * name("centred") / name("spread") * name("scale"),
        );
        let plan = crate::compile(&def, PlanConfig::f32_params()).unwrap();
        assert_eq!(plan.reductions.len(), 3);
        assert_eq!(plan.phases.len(), 2);
        let first = reductions_of(&plan.phases[0]);
        let second = reductions_of(&plan.phases[1]);
        assert_eq!(first.len(), 2, "the mean and the parameter's norm:\n{plan}");
        assert_eq!(second.len(), 1, "the spread:\n{plan}");
        assert!(reductions_of(&plan.step).is_empty());
        // No phase stores; the step does.
        for phase in &plan.phases {
            assert_eq!(phase.stores().count(), 0);
        }
        assert!(plan.step.stores().count() > 0);
    }

    #[test]
    fn a_matrix_function_cuts_the_step_like_a_reduction() {
        let mut def = OptimizerDef::new("orthogonal_norm");
        def.hyper("lr", 0.1, Range::at_least(0.0));
        // phase 0: the matrix of g; phase 1: the norm of its result; the step.
        def.bind("o", call("orthogonalize", vec![name("g")]));
        def.bind("size", call("tensor_norm", vec![name("o")]));
        def.assign("p", name("p") - name("lr") * name("o") / name("size"));
        let plan = crate::compile(&def, PlanConfig::f32_params()).unwrap();
        assert_eq!((plan.matrices.len(), plan.phases.len()), (1, 2), "{plan}");
        let has = |program: &crate::program::Program, op: fn(&InstOp) -> bool| {
            program.insts.iter().any(|i| op(&i.op))
        };
        assert!(has(&plan.phases[0], |op| matches!(
            op,
            InstOp::MatrixArg(0, _)
        )));
        assert!(!has(&plan.phases[0], |op| matches!(
            op,
            InstOp::MatrixResult(_)
        )));
        assert!(has(&plan.phases[1], |op| matches!(
            op,
            InstOp::MatrixResult(0)
        )));
        assert_eq!(reductions_of(&plan.phases[1]), [0]);
        assert!(!has(&plan.step, |op| matches!(op, InstOp::MatrixArg(..))));
        assert!(has(&plan.step, |op| matches!(op, InstOp::MatrixResult(0))));
        assert_eq!(crate::verify::verify(&plan), Ok(()));
        // The result differs from lane to lane: a back end must not compute what it
        // feeds once per group.
        let uniform = plan.uniform_over_group(&plan.step);
        for (i, inst) in plan.step.insts.iter().enumerate() {
            if matches!(inst.op, InstOp::MatrixResult(_)) {
                assert!(!uniform[i], "{plan}");
            }
        }

        let mut bad = plan.clone();
        bad.phases.remove(0);
        let err = crate::verify::verify(&bad).unwrap_err();
        assert!(
            err.message
                .contains("reads M0, which no earlier phase computes"),
            "{err}"
        );
        let mut bad = plan;
        bad.phases.truncate(1);
        let err = crate::verify::verify(&bad).unwrap_err();
        assert!(
            err.message.contains("no phase computes reduction R0"),
            "{err}"
        );
    }

    #[test]
    fn a_plan_without_reductions_has_no_phases() {
        let mut def = OptimizerDef::new("sgd");
        def.hyper("lr", 0.1, Range::at_least(0.0));
        def.assign("p", name("p") - name("lr") * name("g"));
        let plan = crate::compile(&def, PlanConfig::f32_params()).unwrap();
        assert!(plan.phases.is_empty() && plan.reductions.is_empty());
    }
}
