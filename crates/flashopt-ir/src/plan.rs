//! A lowered plan: everything a back end needs to emit the fused step for one
//! parameter/gradient format, and the byte-traffic model of that step.

use std::fmt;

use crate::def::{HyperParamDef, Value};
use crate::graph::{Const, Func1, Func2, Func3};
use crate::hyper::HyperValues;
use crate::passes::HostProgram;
use crate::semantics::{HostEvalError, to_kernel_f32};
use crate::types::{Codec, FloatDtype, GROUP_SIZE, MasterMode};
use crate::validate::State;

/// The storage format a plan is lowered for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PlanConfig {
    pub param: FloatDtype,
    pub grad: FloatDtype,
    pub master: MasterMode,
}

impl PlanConfig {
    /// bf16 parameters and gradients with the given master mode.
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

    /// f32 parameters and gradients (no correction).
    pub fn f32() -> PlanConfig {
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

/// An SSA value of the per-element body.
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

/// A load-and-decode stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// Narrow parameter (+ correction code), decoded to the f32 master weight.
    Param,
    /// Gradient, widened to f32.
    Grad,
    /// A state's codes (+ its group's f16 scale), decoded to f32.
    State(usize),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum InstOp {
    Load(Load),
    /// A host scalar (kernel argument), by index.
    Scalar(usize),
    /// A constant, already rounded to f32 (bools 1/0, ints exact).
    Const(f32),
    Unary(Func1, ValueId),
    Binary(Func2, ValueId, ValueId),
    Ternary(Func3, ValueId, ValueId, ValueId),
}

impl InstOp {
    pub fn operands(&self) -> Vec<ValueId> {
        match *self {
            InstOp::Load(_) | InstOp::Scalar(_) | InstOp::Const(_) => vec![],
            InstOp::Unary(_, a) => vec![a],
            InstOp::Binary(_, a, b) => vec![a, b],
            InstOp::Ternary(_, a, b, c) => vec![a, b, c],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Inst {
    pub op: InstOp,
    pub ty: crate::types::Type,
}

/// An encode-and-store stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// Round to the narrow dtype (+ correction code) and store.
    Param(ValueId),
    /// Encode the state (group absmax, companding, rounding, f16 scale) and store.
    State(usize, ValueId),
}

/// One optimizer lowered for one storage format: load stages, the per-element rule
/// in f32, store stages, and the host program that feeds it scalars.
#[derive(Clone, Debug)]
pub struct Plan {
    pub optimizer: String,
    pub config: PlanConfig,
    pub hyper_params: Vec<HyperParamDef>,
    pub states: Vec<State>,
    pub host: HostProgram,
    /// Loads first (param, grad, states in order), then the rule; SSA, in order.
    pub body: Vec<Inst>,
    /// The parameter first, then every state in declaration order.
    pub stores: Vec<Store>,
    /// The kernel scalar that scales the gradient (global-norm clipping), after the
    /// host program's; set by [`crate::passes::scale_grad`].
    pub grad_scale: Option<usize>,
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
    pub fn loads(&self) -> impl Iterator<Item = (ValueId, Load)> + '_ {
        self.body
            .iter()
            .enumerate()
            .filter_map(|(i, inst)| match inst.op {
                InstOp::Load(l) => Some((ValueId(i as u32), l)),
                _ => None,
            })
    }

    fn reads(&self, load: Load) -> bool {
        self.loads().any(|(_, l)| l == load)
    }

    /// Bytes of one element of `codec` plus its share of the group scale.
    fn state_bytes_per_element(codec: Codec) -> f64 {
        codec.element_bytes() as f64 + codec.scale_bytes_per_group() as f64 / GROUP_SIZE as f64
    }

    /// Per-parameter traffic of one step, with scales amortized over full groups.
    /// Only what the rule reads is loaded; every output is stored.
    pub fn traffic(&self) -> Traffic {
        let param = (self.config.param.size_bytes() + self.config.master.correction_bytes()) as f64;
        let mut read = 0.0;
        if self.reads(Load::Param) {
            read += param;
        }
        if self.reads(Load::Grad) {
            read += self.config.grad.size_bytes() as f64;
        }
        let mut write = param;
        for (i, s) in self.states.iter().enumerate() {
            let bytes = Self::state_bytes_per_element(s.codec);
            if self.reads(Load::State(i)) {
                read += bytes;
            }
            write += bytes;
        }
        Traffic { read, write }
    }

    /// Exact bytes (read, written) for a tensor of `n` elements, its last group short.
    pub fn bytes_for(&self, n: usize) -> (u64, u64) {
        let n = n as u64;
        let groups = n.div_ceil(GROUP_SIZE as u64);
        let param =
            n * (self.config.param.size_bytes() + self.config.master.correction_bytes()) as u64;
        let (mut read, mut write) = (0, param);
        if self.reads(Load::Param) {
            read += param;
        }
        if self.reads(Load::Grad) {
            read += n * self.config.grad.size_bytes() as u64;
        }
        for (i, s) in self.states.iter().enumerate() {
            let bytes = n * s.codec.element_bytes() as u64
                + groups * s.codec.scale_bytes_per_group() as u64;
            if self.reads(Load::State(i)) {
                read += bytes;
            }
            write += bytes;
        }
        (read, write)
    }

    /// Device bytes per parameter held between steps (params, corrections, states,
    /// scales), gradients not included.
    pub fn resident_bytes_per_param(&self) -> f64 {
        (self.config.param.size_bytes() + self.config.master.correction_bytes()) as f64
            + self
                .states
                .iter()
                .map(|s| Self::state_bytes_per_element(s.codec))
                .sum::<f64>()
    }

    /// Kernel scalars per parameter group: the host program's, then the gradient
    /// scale if the plan has one.
    pub fn scalar_count(&self) -> usize {
        self.host.scalars.len() + usize::from(self.grad_scale.is_some())
    }

    /// `self` with its gradient multiplied by a per-step scalar
    /// ([`crate::passes::scale_grad`]); [`Self::kernel_scalars`] sets it to 1.
    pub fn with_grad_scale(&self) -> Plan {
        crate::passes::scale_grad(self)
    }

    /// The host scalars of one step, as the kernel receives them (f32 lanes); a
    /// gradient scale, if the plan has one, is 1 (clipping sets it afterwards).
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
            .evaluate(hyper, step)?
            .into_iter()
            .map(to_kernel_f32)
            .collect();
        if self.grad_scale.is_some() {
            scalars.push(1.0);
        }
        Ok(scalars)
    }
}

/// A constant as per-element code sees it.
pub(crate) fn const_f32(c: Const) -> f32 {
    to_kernel_f32(match c {
        Const::Float(v) => Value::Float(v),
        Const::Int(v) => Value::Int(v),
        Const::Bool(v) => Value::Bool(v),
    })
}
