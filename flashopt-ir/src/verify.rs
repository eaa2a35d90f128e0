//! The plan verifier: what every back end may assume of a plan's programs.
//!
//! Operands are defined before use and have the types their instruction takes; loads
//! have their part's type; nothing stores the gradient; no part is loaded after it is
//! stored (so a back end may load everything first and store everything last); a
//! per-group part is stored a value that is the same on every lane of the group;
//! tables and host scalars exist. Each reduction has its terms (each matrix function
//! its argument) in exactly one phase, phases store nothing, and a program reads only
//! reductions and matrix results of earlier phases.

use crate::layout::{Extent, Role};
use crate::plan::Plan;
use crate::program::{InstOp, Program, ValueType};

/// A broken invariant: which program, which instruction, what.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("plan `{optimizer}`, {program} program, %{inst}: {message}")]
pub struct VerifyError {
    pub optimizer: String,
    pub program: &'static str,
    pub inst: usize,
    pub message: String,
}

pub fn verify(plan: &Plan) -> Result<(), VerifyError> {
    let mut names: Vec<&str> = plan.parts.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    let fail = |program, inst, message: String| VerifyError {
        optimizer: plan.optimizer.clone(),
        program,
        inst,
        message,
    };
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(fail("layout", 0, format!("part names repeat: {names:?}")));
    }
    for role in [Role::Param, Role::Gradient] {
        let count = plan.parts.iter().filter(|p| p.role == role).count();
        if count != 1 {
            return Err(fail("layout", 0, format!("{count} parts of role {role:?}")));
        }
    }
    if plan.parts.first().map(|p| p.role) != Some(Role::Param) {
        return Err(fail(
            "layout",
            0,
            "the parameter must be the first part".into(),
        ));
    }
    // Which slots a program may read: those of the phases before it.
    let mut computed = vec![false; plan.reductions.len() + plan.matrices.len()];
    for phase in &plan.phases {
        let mut available = computed.clone();
        verify_program(plan, phase, Pass::Phase(&mut available))
            .map_err(|(inst, message)| fail("phase", inst, message))?;
        // Now also the reductions this phase computed.
        computed = available;
    }
    if let Some(k) = computed.iter().position(|c| !c) {
        let slot = Slot::at(plan, k);
        return Err(fail(
            "phase",
            0,
            format!("no phase computes {} {slot}", slot.kind()),
        ));
    }
    for (name, program, pass) in [
        ("step", &plan.step, Pass::Step(&computed)),
        ("decode", &plan.decode, Pass::Other),
        ("init", &plan.init, Pass::Other),
    ] {
        verify_program(plan, program, pass).map_err(|(inst, message)| fail(name, inst, message))?;
    }
    Ok(())
}

/// Which program is verified, and what it knows of the slots (the reductions, then
/// the matrix functions).
enum Pass<'a> {
    /// The step: reads every slot (`true` where a phase computes it).
    Step(&'a [bool]),
    /// A phase: reads the slots marked (earlier phases'); marks those it computes,
    /// each once.
    Phase(&'a mut Vec<bool>),
    /// Decode and init: no gradient, no reductions, no matrices.
    Other,
}

/// A reduction's value or a matrix function's result: a value without operands.
fn read_slot(
    plan: &Plan,
    readable: &[bool],
    slot: Slot,
) -> Result<(Vec<ValueType>, ValueType), String> {
    if !slot.index(plan).is_some_and(|k| readable[k]) {
        return Err(format!("reads {slot}, which no earlier phase computes"));
    }
    Ok((vec![], ValueType::F32))
}

/// A reduction's term or a matrix function's argument: an effect of exactly one phase.
fn compute_slot(
    plan: &Plan,
    pass: &mut Pass,
    slot: Slot,
) -> Result<(Vec<ValueType>, ValueType), String> {
    let Pass::Phase(available) = pass else {
        return Err(format!("only a phase computes {} {slot}", slot.kind()));
    };
    match slot.index(plan) {
        None => Err(format!("{} {slot} does not exist", slot.kind())),
        Some(k) if available[k] => Err(format!("{slot} is computed twice")),
        Some(k) => {
            available[k] = true;
            Ok((vec![ValueType::F32], ValueType::Unit))
        }
    }
}

/// A value computed between passes: a reduction or a matrix function.
#[derive(Clone, Copy)]
enum Slot {
    Reduction(usize),
    Matrix(usize),
}

impl Slot {
    /// The slot at `index` of the verifier's list: reductions first.
    fn at(plan: &Plan, index: usize) -> Slot {
        match index.checked_sub(plan.reductions.len()) {
            None => Slot::Reduction(index),
            Some(m) => Slot::Matrix(m),
        }
    }

    /// Its index in the verifier's list, if it exists.
    fn index(self, plan: &Plan) -> Option<usize> {
        match self {
            Slot::Reduction(k) => (k < plan.reductions.len()).then_some(k),
            Slot::Matrix(m) => (m < plan.matrices.len()).then_some(plan.reductions.len() + m),
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Slot::Reduction(_) => "reduction",
            Slot::Matrix(_) => "matrix function",
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Slot::Reduction(k) => write!(f, "R{k}"),
            Slot::Matrix(m) => write!(f, "M{m}"),
        }
    }
}

fn verify_program(plan: &Plan, program: &Program, mut pass: Pass) -> Result<(), (usize, String)> {
    use ValueType::{F32, I32, Unit};
    let is_step = !matches!(pass, Pass::Other);
    let readable: Vec<bool> = match &pass {
        Pass::Step(computed) => computed.to_vec(),
        Pass::Phase(available) => available.to_vec(),
        Pass::Other => Vec::new(),
    };
    let uniform = plan.uniform_over_group(program);
    let mut stored = vec![false; plan.parts.len()];
    for (i, inst) in program.insts.iter().enumerate() {
        let operands = inst.op.operands();
        if let Some(late) = operands.iter().find(|o| o.index() >= i) {
            return Err((i, format!("reads {late}, defined later")));
        }
        let ty = |k: usize| program.insts[operands[k].index()].ty;
        let at = |message: String| (i, message);
        let part = |p: crate::layout::PartId| {
            plan.parts
                .get(p.index())
                .ok_or((i, format!("part {} does not exist", p.index())))
        };
        let (want_operands, result): (Vec<ValueType>, ValueType) = match inst.op {
            InstOp::Load(p) => {
                let part = part(p)?;
                if stored[p.index()] {
                    return Err((i, format!("loads `{}` after storing it", part.name)));
                }
                if !is_step && !part.is_resident() {
                    return Err((i, format!("only a step reads the gradient `{}`", part.name)));
                }
                let ty = if part.storage.is_float() { F32 } else { I32 };
                (vec![], ty)
            }
            InstOp::Store(p, v) => {
                let part = part(p)?;
                if matches!(pass, Pass::Phase(_)) {
                    return Err((i, format!("a reduction phase stores `{}`", part.name)));
                }
                if part.role == Role::Gradient {
                    return Err((i, format!("stores the gradient `{}`", part.name)));
                }
                if part.extent == Extent::Group && !uniform[v.index()] {
                    return Err((
                        i,
                        format!("stores a per-lane value in per-group `{}`", part.name),
                    ));
                }
                stored[p.index()] = true;
                (vec![F32], Unit)
            }
            InstOp::Output(..) | InstOp::Input(_) if is_step => {
                return Err((i, "a step program has no input or output streams".into()));
            }
            InstOp::Output(..) => (vec![F32], Unit),
            InstOp::Input(_) | InstOp::Const(_) => (vec![], F32),
            InstOp::Scalar(k) => {
                if k >= plan.scalar_count() {
                    return Err((i, format!("host scalar ${k} does not exist")));
                }
                (vec![], F32)
            }
            InstOp::IntConst(_) => (vec![], I32),
            InstOp::Reduced(k) => read_slot(plan, &readable, Slot::Reduction(k)).map_err(at)?,
            InstOp::MatrixResult(m) => read_slot(plan, &readable, Slot::Matrix(m)).map_err(at)?,
            InstOp::Reduce(k, _) => {
                compute_slot(plan, &mut pass, Slot::Reduction(k)).map_err(at)?
            }
            InstOp::MatrixArg(m, _) => {
                compute_slot(plan, &mut pass, Slot::Matrix(m)).map_err(at)?
            }
            InstOp::Dim(_) => (vec![], F32),
            InstOp::Unary(..) | InstOp::Floor(_) | InstOp::Round(..) | InstOp::GroupMax(_) => {
                (vec![F32], F32)
            }
            InstOp::Binary(..) => (vec![F32, F32], F32),
            InstOp::Ternary(..) | InstOp::Fma(..) => (vec![F32, F32, F32], F32),
            InstOp::Bits(_) => (vec![F32], I32),
            InstOp::Int(..) => (vec![I32, I32], I32),
            InstOp::ToF32(_) => (vec![I32], F32),
            InstOp::Pow2(_) => (vec![I32], F32),
            InstOp::Table(t, code) => {
                let Some(table) = plan.tables.get(t.index()) else {
                    return Err((i, format!("table {} does not exist", t.index())));
                };
                // The index is a code as loaded, inside the table: no lookup falls outside.
                let range = match program.insts[code.index()].op {
                    InstOp::Load(p) => plan
                        .parts
                        .get(p.index())
                        .and_then(|p| p.storage.int_range()),
                    _ => None,
                };
                match range {
                    Some((lo, hi)) if lo >= table.first && hi <= table.last() => {}
                    _ => {
                        return Err((
                            i,
                            format!(
                                "table T{} is read at {code}, not at a code it covers",
                                t.index()
                            ),
                        ));
                    }
                }
                (vec![I32], F32)
            }
        };
        for (k, want) in want_operands.iter().enumerate() {
            if ty(k) != *want {
                return Err((
                    i,
                    format!("operand {} is {}, expected {want}", operands[k], ty(k)),
                ));
            }
        }
        if inst.ty != result {
            return Err((i, format!("typed {}, computes {result}", inst.ty)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::def::{OptimizerDef, Range, name};
    use crate::program::{Inst, InstOp, ValueId};
    use crate::{MasterMode, PlanConfig, StateKind};

    fn plan() -> Plan {
        let mut def = OptimizerDef::new("momentum");
        def.hyper("lr", 0.1, Range::at_least(0.0));
        def.state("m", StateKind::Signed);
        def.assign("m", name("m") + name("g"));
        def.assign("p", name("p") - name("lr") * name("m"));
        crate::compile(&def, PlanConfig::bf16(MasterMode::Int8)).unwrap()
    }

    #[test]
    fn compiled_plans_verify_and_broken_ones_do_not() {
        let good = plan();
        assert_eq!(verify(&good), Ok(()));

        let scales = good.part_named("m::scales").unwrap();
        let grad = good.part_with_role(Role::Gradient);
        let g = good.step.loads().position(|p| p == grad).unwrap();
        let mut bad = good.clone();
        bad.step.insts.push(Inst {
            op: InstOp::Store(scales, ValueId(g as u32)),
            ty: ValueType::Unit,
        });
        let err = verify(&bad).unwrap_err();
        assert!(err.message.contains("per-lane value"), "{err}");

        let mut bad = good.clone();
        bad.step.insts.push(Inst {
            op: InstOp::Store(grad, ValueId(g as u32)),
            ty: ValueType::Unit,
        });
        assert!(
            verify(&bad)
                .unwrap_err()
                .message
                .contains("stores the gradient")
        );

        let mut bad = good.clone();
        bad.step.insts.push(Inst {
            op: InstOp::Load(scales),
            ty: ValueType::F32,
        });
        assert!(verify(&bad).unwrap_err().message.contains("after storing"));

        let mut bad = good;
        bad.step.insts.push(Inst {
            op: InstOp::ToF32(ValueId(g as u32)),
            ty: ValueType::F32,
        });
        assert!(verify(&bad).unwrap_err().message.contains("expected i32"));
    }

    #[test]
    fn reduction_phases_are_checked() {
        let mut def = OptimizerDef::new("normalized");
        def.hyper("lr", 0.1, Range::at_least(0.0));
        def.assign(
            "p",
            name("p") - name("lr") * name("g") / crate::def::call("tensor_norm", vec![name("g")]),
        );
        let good = crate::compile(&def, PlanConfig::f32_params()).unwrap();
        assert_eq!(verify(&good), Ok(()));
        let message = |plan: &Plan| verify(plan).unwrap_err().message;
        let grad = good.part_with_role(Role::Gradient);
        let g = good.phases[0].loads().position(|p| p == grad).unwrap();
        let unit = |op| Inst {
            op,
            ty: ValueType::Unit,
        };

        let mut bad = good.clone();
        bad.phases[0].insts.push(unit(InstOp::Store(
            crate::layout::PartId(0),
            ValueId(g as u32),
        )));
        assert!(message(&bad).contains("a reduction phase stores `param`"));

        let mut bad = good.clone();
        bad.phases[0]
            .insts
            .push(unit(InstOp::Reduce(0, ValueId(g as u32))));
        assert!(message(&bad).contains("R0 is computed twice"));

        let mut bad = good.clone();
        bad.phases[0].insts.push(Inst {
            op: InstOp::Reduced(0),
            ty: ValueType::F32,
        });
        assert!(message(&bad).contains("reads R0, which no earlier phase computes"));

        let mut bad = good.clone();
        bad.step
            .insts
            .push(unit(InstOp::Reduce(0, ValueId(g as u32))));
        assert!(message(&bad).contains("only a phase computes reduction R0"));

        let mut bad = good;
        bad.phases.clear();
        assert!(message(&bad).contains("no phase computes reduction R0"));
    }
}
