//! The CPU reference interpreter: runs a plan's programs over host memory with
//! exactly the operations ([`crate::semantics`]) the GPU kernels perform. Every GPU
//! test compares against it, and the runtime uses it as its always-available back end.
//! It translates instructions one by one; the codecs are instructions like any other.
//!
//! Work is split into blocks of whole 32-element groups and run in parallel
//! (rayon); within a group every instruction runs over 32 lanes at once.

mod buffers;
mod execute;
mod scoped;

pub use buffers::{GradBuf, HostTensor, PartData, PartMut, PartRef};

use buffers::{Element, each_storage};
use execute::execute;
use scoped::Terms;

use crate::layout::{Part, Storage};
use crate::plan::Plan;
use crate::program::InstOp;
use crate::types::FloatDtype;

/// Groups per parallel work item.
const BLOCK_GROUPS: usize = 64;

/// Buffers that do not fit the plan. Nothing is written when this is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterpError {
    #[error("gradient: dtype {found}, but the plan `{optimizer}` was lowered for {expected}")]
    GradDtype {
        optimizer: String,
        expected: FloatDtype,
        found: FloatDtype,
    },
    #[error("gradient: {found} elements, expected {expected} (the parameter's length)")]
    GradLength { expected: usize, found: usize },
    #[error(
        "parts: the plan `{optimizer}` stores {expected} part(s) per tensor ({names}), the tensor has {found}"
    )]
    PartCount {
        optimizer: String,
        expected: usize,
        found: usize,
        names: String,
    },
    #[error("part `{part}`: the plan `{optimizer}` stores {expected}, the tensor holds {found}")]
    PartStorage {
        optimizer: String,
        part: String,
        expected: Storage,
        found: Storage,
    },
    #[error("part `{part}`: {found} values, expected {expected} ({extent} of {len} elements)")]
    PartLength {
        part: String,
        expected: usize,
        found: usize,
        extent: &'static str,
        len: usize,
    },
    #[error("rows of {row_len} elements do not tile the tensor's {len} elements")]
    Shape { len: usize, row_len: usize },
    #[error("host scalars: the plan `{optimizer}` takes {expected}, got {found}")]
    Scalars {
        optimizer: String,
        expected: usize,
        found: usize,
    },
}

/// Check that a tensor fits its plan (its rows tile it; every resident part's storage
/// and length).
pub fn check_tensor(plan: &Plan, tensor: &HostTensor) -> Result<(), InterpError> {
    let shape = tensor.shape();
    if !shape.is_valid() {
        return Err(InterpError::Shape {
            len: shape.len,
            row_len: shape.row_len,
        });
    }
    let resident: Vec<&Part> = plan.resident_parts().map(|(_, p)| p).collect();
    if tensor.parts.len() != resident.len() {
        return Err(InterpError::PartCount {
            optimizer: plan.optimizer.clone(),
            expected: resident.len(),
            found: tensor.parts.len(),
            names: resident
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    for (part, data) in resident.iter().zip(&tensor.parts) {
        if data.storage() != part.storage {
            return Err(InterpError::PartStorage {
                optimizer: plan.optimizer.clone(),
                part: part.name.clone(),
                expected: part.storage,
                found: data.storage(),
            });
        }
        if data.len() != part.count(tensor.shape()) {
            return Err(InterpError::PartLength {
                part: part.name.clone(),
                expected: part.count(tensor.shape()),
                found: data.len(),
                extent: part.extent.name(),
                len: tensor.len(),
            });
        }
    }
    Ok(())
}

/// Check that a gradient fits a step of `plan` on a tensor of `len` elements.
pub fn check_grad(plan: &Plan, len: usize, grad: GradBuf<'_>) -> Result<(), InterpError> {
    if grad.dtype() != plan.config.grad {
        return Err(InterpError::GradDtype {
            optimizer: plan.optimizer.clone(),
            expected: plan.config.grad,
            found: grad.dtype(),
        });
    }
    if grad.len() != len {
        return Err(InterpError::GradLength {
            expected: len,
            found: grad.len(),
        });
    }
    Ok(())
}

/// Check that a tensor, a gradient and scalars fit a step of `plan`. [`run`] does
/// this itself; a caller stepping several tensors checks them all first so that a
/// bad one leaves every tensor untouched.
pub fn check(
    plan: &Plan,
    scalars: &[f32],
    tensor: &HostTensor,
    grad: GradBuf<'_>,
) -> Result<(), InterpError> {
    check_grad(plan, tensor.len(), grad)?;
    if scalars.len() != plan.scalar_count() {
        return Err(InterpError::Scalars {
            optimizer: plan.optimizer.clone(),
            expected: plan.scalar_count(),
            found: scalars.len(),
        });
    }
    check_tensor(plan, tensor)
}

/// Run one step of `plan` on a tensor with this step's host scalars
/// ([`Plan::kernel_scalars`]). Everything is checked first: on error nothing is
/// written.
pub fn run(
    plan: &Plan,
    scalars: &[f32],
    tensor: &mut HostTensor,
    grad: GradBuf<'_>,
) -> Result<(), InterpError> {
    check(plan, scalars, tensor, grad)?;
    let reduced = reductions(plan, scalars, tensor, grad);
    step(plan, scalars, tensor, grad, &reduced);
    Ok(())
}

/// As [`run`], with the plan's reductions' values given (one value per tensor
/// reduction, as [`reductions`] gives them): how a piece of a tensor steps when the
/// values are the whole tensor's (a rank of a sharded optimizer, from every rank's
/// [`phase_group_values`]).
pub fn run_reduced(
    plan: &Plan,
    scalars: &[f32],
    tensor: &mut HostTensor,
    grad: GradBuf<'_>,
    reduced: &[Vec<f32>],
) -> Result<(), InterpError> {
    check(plan, scalars, tensor, grad)?;
    assert!(
        plan.matrices.is_empty(),
        "a piece of a tensor has no whole matrix"
    );
    assert_eq!(
        reduced.len(),
        plan.reductions.len(),
        "a value for every reduction"
    );
    step(plan, scalars, tensor, grad, reduced);
    Ok(())
}

/// The step program over a checked tensor, the reductions' values given.
fn step(
    plan: &Plan,
    scalars: &[f32],
    tensor: &mut HostTensor,
    grad: GradBuf<'_>,
    reduced: &[Vec<f32>],
) {
    let shape = tensor.shape();
    let slots = slots(plan, writable(tensor), Some(grad.as_part()));
    let reductions = Reductions {
        values: reduced,
        terms: Vec::new(),
    };
    execute(
        plan,
        &plan.step,
        scalars,
        slots,
        reductions,
        &[],
        Vec::new(),
        shape,
    );
}

/// The values the plan's phases compute over one tensor for this step: by reduction,
/// one value for a tensor reduction, one per row or per column for the others; then
/// by matrix function (`Plan::matrices`), its result, one value per element. Each
/// phase's terms are summed per group as it runs (per row or column after it), in the
/// order of [`crate::reduction`]; a matrix function runs on its whole argument after
/// the phase ([`crate::matrix`]); a phase reads the values of the phases before it.
pub fn reductions(
    plan: &Plan,
    scalars: &[f32],
    tensor: &HostTensor,
    grad: GradBuf<'_>,
) -> Vec<Vec<f32>> {
    let shape = tensor.shape();
    let reductions = plan.reductions.len();
    let mut values = vec![Vec::new(); reductions + plan.matrices.len()];
    for phase in 0..plan.phases.len() {
        for (k, terms) in phase_terms(plan, phase, scalars, tensor, grad, &values) {
            values[k] = match k.checked_sub(reductions) {
                None => terms.finish(plan.reductions[k], shape),
                Some(m) => terms.apply(plan.matrices[m], shape),
            };
        }
    }
    values
}

/// The group values (level 1 of [`crate::reduction`]) of the tensor reductions that
/// reduction phase `phase` computes, over `tensor`'s groups, reading the values of
/// the earlier phases' reductions from `values` (indexed as [`reductions`] gives
/// them). A piece of whole groups of a tensor gives the tensor's group values for
/// those groups, from which the tensor's value follows
/// ([`crate::reduction::from_groups`]). The plan must have no row or column
/// reductions.
pub fn phase_group_values(
    plan: &Plan,
    phase: usize,
    scalars: &[f32],
    tensor: &HostTensor,
    grad: GradBuf<'_>,
    values: &[Vec<f32>],
) -> Vec<(usize, Vec<f64>)> {
    phase_terms(plan, phase, scalars, tensor, grad, values)
        .into_iter()
        .map(|(k, terms)| match terms {
            Terms::Groups(groups) => (k, groups),
            _ => panic!("group values of tensor reductions only"),
        })
        .collect()
}

/// Run phase `phase` over a tensor: the terms of each reduction it computes and the
/// argument of each matrix function, by slot (reductions, then matrix functions).
fn phase_terms(
    plan: &Plan,
    phase: usize,
    scalars: &[f32],
    tensor: &HostTensor,
    grad: GradBuf<'_>,
    values: &[Vec<f32>],
) -> Vec<(usize, Terms)> {
    let shape = tensor.shape();
    let program = &plan.phases[phase];
    let reductions = plan.reductions.len();
    let computed: Vec<usize> = program
        .insts
        .iter()
        .filter_map(|inst| match inst.op {
            InstOp::Reduce(k, _) => Some(k),
            InstOp::MatrixArg(m, _) => Some(reductions + m),
            _ => None,
        })
        .collect();
    let mut terms: Vec<Terms> = (0..reductions + plan.matrices.len())
        .map(|k| match (computed.contains(&k), plan.reductions.get(k)) {
            (false, _) => Terms::None,
            (true, Some(&r)) => Terms::new(r, shape),
            (true, None) => Terms::Elements(vec![0.0; shape.len]),
        })
        .collect();
    let slots = slots(
        plan,
        tensor.parts.iter().map(|d| Slot::Read(d.view())),
        Some(grad.as_part()),
    );
    let reductions = Reductions {
        values,
        terms: terms.iter_mut().collect(),
    };
    execute(
        plan,
        program,
        scalars,
        slots,
        reductions,
        &[],
        Vec::new(),
        shape,
    );
    terms
        .into_iter()
        .enumerate()
        .filter(|(k, _)| computed.contains(k))
        .collect()
}

/// Set a tensor's parameter parts from f32 master weights (the init program).
pub(crate) fn init(plan: &Plan, tensor: &mut HostTensor, master: &[f32]) {
    let shape = tensor.shape();
    let slots = slots(plan, writable(tensor), None);
    let none = Reductions::none();
    execute(
        plan,
        &plan.init,
        &[],
        slots,
        none,
        &[master],
        Vec::new(),
        shape,
    );
}

/// Decoded values of a tensor: the outputs of the decode program `keep` accepts (the
/// others are not computed and come back empty).
pub(crate) fn decode(
    plan: &Plan,
    tensor: &HostTensor,
    keep: impl Fn(usize) -> bool,
) -> Vec<Vec<f32>> {
    let len = tensor.len();
    let program = plan
        .decode
        .keeping(|op| matches!(*op, InstOp::Output(k, _) if keep(k)));
    let (_, count) = plan.decode.streams();
    let mut out: Vec<Vec<f32>> = (0..count)
        .map(|k| {
            if keep(k) {
                vec![0.0f32; len]
            } else {
                Vec::new()
            }
        })
        .collect();
    let slots = slots(
        plan,
        tensor.parts.iter().map(|d| Slot::Read(d.view())),
        None,
    );
    let outputs = out.iter_mut().map(|v| v.as_mut_slice()).collect();
    let none = Reductions::none();
    execute(
        plan,
        &program,
        &[],
        slots,
        none,
        &[],
        outputs,
        tensor.shape(),
    );
    out
}

/// Where a program's part lives during a run.
enum Slot<'a> {
    Read(PartRef<'a>),
    Write(PartMut<'a>),
    /// Not given (the gradient, outside a step).
    Absent,
}

/// A tensor's resident parts, for writing.
fn writable(tensor: &mut HostTensor) -> impl Iterator<Item = Slot<'_>> {
    tensor.parts.iter_mut().map(|d| Slot::Write(d.view_mut()))
}

/// One slot per plan part: the tensor's resident parts (as `resident` gives them) and
/// the gradient, if a step reads one.
fn slots<'a>(
    plan: &Plan,
    mut resident: impl Iterator<Item = Slot<'a>>,
    grad: Option<PartRef<'a>>,
) -> Vec<Slot<'a>> {
    plan.parts
        .iter()
        .map(|p| match (p.is_resident(), grad) {
            (true, _) => resident.next().expect("one buffer per resident part"),
            (false, Some(g)) => Slot::Read(g),
            (false, None) => Slot::Absent,
        })
        .collect()
}

impl<'a> Slot<'a> {
    /// The slot cut into blocks of `per_block` values.
    fn split(self, per_block: usize) -> Vec<Slot<'a>> {
        match self {
            Slot::Read(r) => each_storage!(PartRef, r, v => v
                .chunks(per_block)
                .map(|c| Slot::Read(c.into()))
                .collect()),
            Slot::Write(w) => each_storage!(PartMut, w, v => v
                .chunks_mut(per_block)
                .map(|c| Slot::Write(c.into()))
                .collect()),
            Slot::Absent => Vec::new(),
        }
    }

    fn get(&self, at: usize) -> u32 {
        match self {
            Slot::Read(r) => each_storage!(PartRef, r, v => v[at].lane_bits()),
            Slot::Write(w) => each_storage!(PartMut, w, v => v[at].lane_bits()),
            Slot::Absent => panic!("the program reads a part the run did not give"),
        }
    }

    fn set(&mut self, at: usize, x: f32) {
        match self {
            Slot::Write(w) => each_storage!(PartMut, w, v => v[at] = Element::from_f32(x)),
            _ => panic!("the program writes a part the run gave read-only"),
        }
    }
}

/// A run's reductions and matrix functions, by slot (the reductions, then the
/// matrix functions): the values it reads (`Reduced`, `MatrixResult`), and for a
/// phase, each slot's terms (`Reduce`, `MatrixArg`; [`Terms::None`] for those of
/// other phases).
struct Reductions<'a> {
    values: &'a [Vec<f32>],
    terms: Vec<&'a mut Terms>,
}

impl Reductions<'_> {
    fn none() -> Reductions<'static> {
        Reductions {
            values: &[],
            terms: Vec::new(),
        }
    }
}
