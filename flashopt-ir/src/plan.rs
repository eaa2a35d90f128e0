//! A lowered plan: one optimizer for one storage format. It owns all the arithmetic
//! (the step program, codecs lowered in) and the storage layout (its parts); back
//! ends, buffers and checkpoints translate what it says.

use std::fmt;

use crate::def::{HyperParamDef, Value};
use crate::graph::{Const, Dim, MatrixFn, Reducer};
use crate::hyper::HyperValues;
use crate::layout::{Extent, Part, PartId, Role, Shape};
use crate::passes::HostProgram;
use crate::program::{CodeTable, InstOp, Program};
use crate::semantics::{HostArithmetic, HostEvalError, to_kernel_f32};
use crate::types::{FloatDtype, MasterMode, Rounding};
use crate::validate::{Numerics, State};

/// The storage format a plan is lowered for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PlanConfig {
    pub param: FloatDtype,
    pub grad: FloatDtype,
    pub master: MasterMode,
}

impl PlanConfig {
    /// bf16 parameters and gradients with the given master mode (the states keep the
    /// codecs their definition declares).
    pub fn bf16(master: MasterMode) -> PlanConfig {
        PlanConfig {
            param: FloatDtype::Bf16,
            grad: FloatDtype::Bf16,
            master,
        }
    }

    /// The correction actually stored: f32 parameters are their own master weights,
    /// so they carry none whatever `master` says.
    pub fn stored_correction(self) -> MasterMode {
        match self.param {
            FloatDtype::F32 => MasterMode::None,
            _ => self.master,
        }
    }

    /// f32 parameters and gradients (no correction). The states keep the codecs their
    /// definition declares (8-bit for the shipped optimizers); `F32States` stores
    /// them as f32 too.
    pub fn f32_params() -> PlanConfig {
        PlanConfig {
            param: FloatDtype::F32,
            grad: FloatDtype::F32,
            master: MasterMode::None,
        }
    }
}

impl fmt::Display for PlanConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.master {
            MasterMode::None => write!(f, "param {}", self.param)?,
            m => write!(
                f,
                "param {} + int{} correction ({}-bit master)",
                self.param,
                m.correction_bytes() * 8,
                m.bits_label()
            )?,
        }
        write!(f, ", grad {}", self.grad)
    }
}

/// One optimizer lowered for one storage format.
#[derive(Clone, Debug)]
pub struct Plan {
    pub optimizer: String,
    pub config: PlanConfig,
    pub hyper_params: Vec<HyperParamDef>,
    pub states: Vec<State>,
    pub numerics: Numerics,
    /// The uniform part of the rule: host scalars from hyper-parameters and `t`.
    pub host: HostProgram,
    pub host_arithmetic: HostArithmetic,
    /// What a tensor stores, in binding order: the parameter (and its correction), the
    /// gradient, then each state's parts in declaration order.
    pub parts: Vec<Part>,
    /// Code tables the programs look up ([`crate::passes::code_tables`]).
    pub tables: Vec<CodeTable>,
    /// One step of one element: loads, decodes, the rule, encodes, stores. With
    /// reductions, it reads their values (`InstOp::Reduced`) and runs after
    /// [`Plan::phases`].
    pub step: Program,
    /// The rule's reductions (over a tensor, its rows or its columns), by slot
    /// (`InstOp::Reduce(k, ..)`).
    pub reductions: Vec<Reducer>,
    /// The rule's matrix functions, by slot (`InstOp::MatrixArg(m, ..)`): each maps
    /// a tensor's matrix of its argument to the matrix of its result, between the
    /// phase that writes the argument and the passes that read the result.
    pub matrices: Vec<MatrixFn>,
    /// Passes over each tensor before the step, in order ([`crate::passes::phases`]):
    /// each computes the terms of its reductions (`InstOp::Reduce`) and the
    /// arguments of its matrix functions (`InstOp::MatrixArg`) and stores nothing; a
    /// phase reads the values of earlier phases' reductions and matrix functions.
    /// Empty without either.
    pub phases: Vec<Program>,
    /// Reads the resident parts; output 0 is the f32 master weight, output `1 + k`
    /// state `k`'s f32 value.
    pub decode: Program,
    /// Input 0 is an f32 master weight; stores the parameter parts. States start as
    /// zero bytes, every codec's zero.
    pub init: Program,
}

/// Bytes moved through device memory per parameter by one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Traffic {
    pub read: f64,
    pub write: f64,
}

impl Traffic {
    pub fn total(&self) -> f64 {
        self.read + self.write
    }
}

impl Plan {
    pub fn part(&self, id: PartId) -> &Part {
        &self.parts[id.index()]
    }

    pub fn part_ids(&self) -> impl Iterator<Item = (PartId, &Part)> {
        self.parts.iter().enumerate().map(|(i, p)| (PartId(i), p))
    }

    /// The part a name refers to.
    pub fn part_named(&self, name: &str) -> Option<PartId> {
        self.parts.iter().position(|p| p.name == name).map(PartId)
    }

    /// The parts kept between steps (everything but the gradient), in order.
    pub fn resident_parts(&self) -> impl Iterator<Item = (PartId, &Part)> {
        self.part_ids().filter(|(_, p)| p.is_resident())
    }

    /// The first part with a role (the parameter, the gradient).
    pub fn part_with_role(&self, role: Role) -> PartId {
        self.part_ids()
            .find(|(_, p)| p.role == role)
            .map(|(id, _)| id)
            .expect("every plan has a parameter and a gradient part")
    }

    /// Which values of `program` are the same on every lane of a group: loads of
    /// per-group parts, group maxima, host scalars, constants, tensor reductions, a
    /// tensor's `rows` and `cols`, and anything computed from those alone. A back end computes them once per group (or unit).
    pub fn uniform_over_group(&self, program: &Program) -> Vec<bool> {
        self.uniform_over_group_where(program, false)
    }

    /// As [`Self::uniform_over_group`], where with `rows_start_groups` every row of
    /// every tensor starts a group (a back end that steps only such tensors): values
    /// per row are then the same on every lane of a group too.
    pub fn uniform_over_group_where(
        &self,
        program: &Program,
        rows_start_groups: bool,
    ) -> Vec<bool> {
        let per_group = |extent: Extent| {
            extent == Extent::Group || (rows_start_groups && extent == Extent::Row)
        };
        let mut uniform = Vec::with_capacity(program.len());
        for inst in &program.insts {
            let u = match inst.op {
                InstOp::Load(p) => per_group(self.part(p).extent),
                InstOp::Reduced(k) => match self.reductions[k].scope.extent() {
                    None => true,
                    Some(extent) => per_group(extent),
                },
                InstOp::GroupMax(_)
                | InstOp::Scalar(_)
                | InstOp::Const(_)
                | InstOp::IntConst(_) => true,
                // A matrix function's result differs from element to element, though
                // it reads no operand.
                InstOp::Input(_)
                | InstOp::Store(..)
                | InstOp::Output(..)
                | InstOp::MatrixResult(_) => false,
                op => op.operands().iter().all(|o| uniform[o.index()]),
            };
            uniform.push(u);
        }
        uniform
    }

    /// What in the plan holds or computes one value per row or per column: its
    /// states and reductions of those scopes, named for a message; `None` if nothing
    /// does. Such a plan needs each tensor's row length ([`crate::layout::Shape`]).
    pub fn rows_and_columns(&self) -> Option<String> {
        self.scoped(|extent| extent.is_scoped())
    }

    /// As [`Self::rows_and_columns`], what holds or computes one value per column.
    pub fn columns(&self) -> Option<String> {
        self.scoped(|extent| extent == Extent::Column)
    }

    /// What in the plan sees each tensor as a whole matrix: its matrix functions and
    /// its reads of `rows` and `cols`, named for a message; `None` if nothing does.
    pub fn matrix_functions(&self) -> Option<String> {
        let mut names: Vec<String> = self
            .matrices
            .iter()
            .map(|f| format!("`{}`", f.name()))
            .collect();
        for dim in [Dim::Rows, Dim::Cols] {
            let reads = self.passes().any(|p| {
                p.insts
                    .iter()
                    .any(|i| matches!(i.op, InstOp::Dim(d) if d == dim))
            });
            if reads {
                names.push(format!("`{}`", dim.name()));
            }
        }
        (!names.is_empty()).then(|| names.join(", "))
    }

    /// Whether a step computes with each tensor's rows and columns: values per row or
    /// column, matrix functions, or `rows` and `cols` read. A tensor's shape is then
    /// part of its identity (a checkpoint or a replacement must keep it).
    pub fn depends_on_shape(&self) -> bool {
        self.rows_and_columns().is_some() || self.matrix_functions().is_some()
    }

    /// The states and reductions whose extent passes `keep`, named for a message.
    fn scoped(&self, keep: impl Fn(Extent) -> bool) -> Option<String> {
        let states = self
            .states
            .iter()
            .filter(|s| keep(s.extent))
            .map(|s| format!("state `{}` ({})", s.name, s.extent.name()));
        let reductions = self
            .reductions
            .iter()
            .filter(|r| r.scope.extent().is_some_and(&keep))
            .map(|r| format!("`{}`", r.name()));
        let what: Vec<String> = states.chain(reductions).collect();
        (!what.is_empty()).then(|| what.join(", "))
    }

    /// The passes over memory of one step, in order: the reduction phases, then
    /// the step.
    pub fn passes(&self) -> impl Iterator<Item = &Program> {
        self.phases.iter().chain(std::iter::once(&self.step))
    }

    /// Per-parameter traffic of one step, group parts amortized over full groups:
    /// what its passes load and store (a reduction phase reads again what it needs;
    /// its per-group partial sums, 8 bytes per 32 elements and reduction, are not
    /// counted).
    pub fn traffic(&self) -> Traffic {
        let mut t = Traffic {
            read: 0.0,
            write: 0.0,
        };
        for program in self.passes() {
            for (id, part) in self.part_ids() {
                if program.reads(id) {
                    t.read += part.bytes_per_element();
                }
                if program.writes(id) {
                    t.write += part.bytes_per_element();
                }
            }
        }
        t
    }

    /// Exact bytes (read, written) by one step of a tensor of `shape` (as
    /// [`Plan::traffic`] counts them).
    pub fn bytes_for(&self, shape: Shape) -> (u64, u64) {
        let (mut read, mut write) = (0, 0);
        for program in self.passes() {
            for (id, part) in self.part_ids() {
                let bytes = part.bytes(shape) as u64;
                if program.reads(id) {
                    read += bytes;
                }
                if program.writes(id) {
                    write += bytes;
                }
            }
        }
        (read, write)
    }

    /// Device bytes per parameter held between steps (the resident parts), gradients
    /// not included.
    pub fn resident_bytes_per_param(&self) -> f64 {
        self.resident_parts()
            .map(|(_, p)| p.bytes_per_element())
            .sum()
    }

    /// Kernel scalars per parameter group: the host program's, the gradient scale, and
    /// the dither phase where a state is dithered.
    pub fn scalar_count(&self) -> usize {
        self.host.scalars.len() + 1 + usize::from(self.dither_phase().is_some())
    }

    /// The kernel scalar that dithers the rounding of codes ([`crate::codec::dither`]),
    /// after the gradient scale, if a state's rounding is [`Rounding::Dithered`]: the
    /// host sets it every step from the step counter alone.
    pub fn dither_phase(&self) -> Option<usize> {
        self.states
            .iter()
            .any(|s| s.rounding == Rounding::Dithered)
            .then(|| dither_phase_slot(self.host.scalars.len()))
    }

    /// The kernel scalar every use of the gradient is multiplied by
    /// ([`crate::passes::scale_grad`]), after the host program's: the runtime sets
    /// it every step (global-norm clipping; 1 without). Every plan has it, so a plan
    /// never changes after compile.
    pub fn grad_scale(&self) -> usize {
        self.host.scalars.len()
    }

    /// `self` with host scalars computed in another arithmetic.
    pub fn with_host_arithmetic(&self, arithmetic: HostArithmetic) -> Plan {
        Plan {
            host_arithmetic: arithmetic,
            ..self.clone()
        }
    }

    /// `self` with each of its programs (step, decode, init) replaced by `f` of it.
    pub fn with_programs(&self, mut f: impl FnMut(&Program) -> Program) -> Plan {
        Plan {
            step: f(&self.step),
            phases: self.phases.iter().map(&mut f).collect(),
            decode: f(&self.decode),
            init: f(&self.init),
            ..self.clone()
        }
    }

    /// The learning rate's value in `hyper`, if the definition names one.
    pub fn learning_rate(&self, hyper: &HyperValues) -> Option<f64> {
        let i = self.numerics.learning_rate?;
        hyper.values().get(i).and_then(|v| v.as_f64())
    }

    /// The host scalars of one step, as the kernel receives them (f32 lanes), then the
    /// gradient scale, 1 (clipping sets it afterwards), and the dither phase if any.
    pub fn kernel_scalars(
        &self,
        hyper: &HyperValues,
        step: u64,
    ) -> Result<Vec<f32>, HostEvalError> {
        if step == 0 {
            return Err(HostEvalError(
                "the step counter `t` is 1-based; got step 0".into(),
            ));
        }
        hyper
            .check_for(&self.hyper_params)
            .map_err(|e| HostEvalError(e.to_string()))?;
        let mut scalars: Vec<f32> = self
            .host
            .evaluate(hyper, step, self.host_arithmetic)?
            .into_iter()
            .map(to_kernel_f32)
            .collect();
        scalars.push(1.0);
        if self.dither_phase().is_some() {
            scalars.push(crate::codec::dither::phase(step));
        }
        Ok(scalars)
    }
}

/// Where the dither phase sits among the kernel scalars of a plan whose host program
/// has `host_scalars`: after them and the gradient scale. Lowering places it here
/// before the plan exists; [`Plan::dither_phase`] reads it back.
pub(crate) fn dither_phase_slot(host_scalars: usize) -> usize {
    host_scalars + 1
}

/// A constant as per-element code sees it.
pub(crate) fn const_f32(c: Const) -> f32 {
    to_kernel_f32(match c {
        Const::Float(v) => Value::Float(v),
        Const::Int(v) => Value::Int(v),
        Const::Bool(v) => Value::Bool(v),
    })
}
