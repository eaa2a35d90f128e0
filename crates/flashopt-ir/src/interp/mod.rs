//! The CPU reference interpreter: runs a [`Plan`] over host memory with exactly the
//! f32 operations, in the order, that the GPU kernels perform. Every GPU test
//! compares against it, and the runtime uses it as its always-available back end.
//!
//! Work is split into blocks of whole 32-element groups and run in parallel
//! (rayon); within a group every instruction runs over 32 lanes at once.

mod buffers;

pub use buffers::{
    CorrectionBuf, CorrectionData, GradBuf, HostTensor, ParamBuf, ParamData, StateBuf, StateData,
    StepBuffers,
};

use half::{bf16, f16};
use rayon::prelude::*;

use crate::codec::master::{decode_master, encode_master};
use crate::codec::state::{decode_signed, decode_sqrt, encode_signed_group, encode_sqrt_group};
use crate::plan::{InstOp, Load, Plan, Store};
use crate::semantics::{binary_f32, ternary_f32, unary_f32};
use crate::types::{Codec, FloatDtype, GROUP_SIZE, MasterMode};

/// Elements per parallel work item (a whole number of groups).
const BLOCK: usize = 64 * GROUP_SIZE;

/// Buffers that do not fit the plan. Nothing is written when this is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterpError {
    #[error("parameter: dtype {found}, but the plan `{optimizer}` was lowered for {expected}")]
    ParamDtype {
        optimizer: String,
        expected: FloatDtype,
        found: FloatDtype,
    },
    #[error("gradient: dtype {found}, but the plan `{optimizer}` was lowered for {expected}")]
    GradDtype {
        optimizer: String,
        expected: FloatDtype,
        found: FloatDtype,
    },
    #[error(
        "correction codes: the plan `{optimizer}` needs {expected} master mode, the buffers give {found}"
    )]
    Correction {
        optimizer: String,
        expected: MasterMode,
        found: MasterMode,
    },
    #[error("{tensor}: {found} elements, expected {expected} (the parameter's length{extra})")]
    Length {
        tensor: String,
        expected: usize,
        found: usize,
        extra: &'static str,
    },
    #[error("states: the plan `{optimizer}` has {expected} state(s), the buffers give {found}")]
    StateCount {
        optimizer: String,
        expected: usize,
        found: usize,
    },
    #[error("state `{state}`: its codec is {codec}, but the buffer holds {found}")]
    StateStorage {
        state: String,
        codec: Codec,
        found: &'static str,
    },
    #[error("host scalars: the plan `{optimizer}` takes {expected}, got {found}")]
    Scalars {
        optimizer: String,
        expected: usize,
        found: usize,
    },
}

/// Check that buffers fit a plan and scalars; returns the element count. [`run`]
/// does this itself; a caller stepping several tensors checks them all first so that
/// a bad one leaves every tensor untouched.
pub fn check(plan: &Plan, scalars: &[f32], b: &StepBuffers<'_>) -> Result<usize, InterpError> {
    let optimizer = || plan.optimizer.clone();
    let cfg = plan.config;
    if b.param.dtype() != cfg.param {
        return Err(InterpError::ParamDtype {
            optimizer: optimizer(),
            expected: cfg.param,
            found: b.param.dtype(),
        });
    }
    if b.grad.dtype() != cfg.grad {
        return Err(InterpError::GradDtype {
            optimizer: optimizer(),
            expected: cfg.grad,
            found: b.grad.dtype(),
        });
    }
    if b.correction.mode() != cfg.master {
        return Err(InterpError::Correction {
            optimizer: optimizer(),
            expected: cfg.master,
            found: b.correction.mode(),
        });
    }
    if scalars.len() != plan.scalar_count() {
        return Err(InterpError::Scalars {
            optimizer: optimizer(),
            expected: plan.scalar_count(),
            found: scalars.len(),
        });
    }
    let n = b.param.len();
    let length = |tensor: String, found: usize, expected: usize, extra| {
        if found == expected {
            Ok(())
        } else {
            Err(InterpError::Length {
                tensor,
                expected,
                found,
                extra,
            })
        }
    };
    length("gradient".into(), b.grad.len(), n, "")?;
    if let Some(len) = b.correction.code_count() {
        length("correction codes".into(), len, n, "")?;
    }
    if b.states.len() != plan.states.len() {
        return Err(InterpError::StateCount {
            optimizer: optimizer(),
            expected: plan.states.len(),
            found: b.states.len(),
        });
    }
    for (state, buf) in plan.states.iter().zip(&b.states) {
        if !buf.holds(state.codec) {
            return Err(InterpError::StateStorage {
                state: state.name.clone(),
                codec: state.codec,
                found: buf.storage_name(),
            });
        }
        let (elements, scales) = buf.lens();
        length(format!("state `{}`", state.name), elements, n, "")?;
        if let Some(scales) = scales {
            length(
                format!("state `{}` scales", state.name),
                scales,
                n.div_ceil(GROUP_SIZE),
                ", in groups of 32",
            )?;
        }
    }
    Ok(n)
}

/// Run one step of `plan` over `buffers` with this step's host scalars
/// ([`Plan::kernel_scalars`]). The buffers are checked first: on error nothing is
/// written.
pub fn run(plan: &Plan, scalars: &[f32], buffers: StepBuffers<'_>) -> Result<(), InterpError> {
    let n = check(plan, scalars, &buffers)?;
    if n == 0 {
        return Ok(());
    }
    let blocks = split_blocks(buffers);
    blocks.into_par_iter().for_each_init(
        || vec![[0.0f32; GROUP_SIZE]; plan.body.len()],
        |regs, mut block| run_block(plan, scalars, &mut block, regs),
    );
    Ok(())
}

fn split_blocks(b: StepBuffers<'_>) -> Vec<StepBuffers<'_>> {
    let params: Vec<ParamBuf<'_>> = match b.param {
        ParamBuf::Bf16(s) => s.chunks_mut(BLOCK).map(ParamBuf::Bf16).collect(),
        ParamBuf::F16(s) => s.chunks_mut(BLOCK).map(ParamBuf::F16).collect(),
        ParamBuf::F32(s) => s.chunks_mut(BLOCK).map(ParamBuf::F32).collect(),
    };
    let blocks = params.len();
    let corrections: Vec<CorrectionBuf<'_>> = match b.correction {
        CorrectionBuf::None => (0..blocks).map(|_| CorrectionBuf::None).collect(),
        CorrectionBuf::Int8(s) => s.chunks_mut(BLOCK).map(CorrectionBuf::Int8).collect(),
        CorrectionBuf::Int16(s) => s.chunks_mut(BLOCK).map(CorrectionBuf::Int16).collect(),
    };
    let grads: Vec<GradBuf<'_>> = match b.grad {
        GradBuf::Bf16(s) => s.chunks(BLOCK).map(GradBuf::Bf16).collect(),
        GradBuf::F16(s) => s.chunks(BLOCK).map(GradBuf::F16).collect(),
        GradBuf::F32(s) => s.chunks(BLOCK).map(GradBuf::F32).collect(),
    };
    const SCALES: usize = BLOCK / GROUP_SIZE;
    let mut states: Vec<std::vec::IntoIter<StateBuf<'_>>> = b
        .states
        .into_iter()
        .map(|s| {
            let chunks: Vec<StateBuf<'_>> = match s {
                StateBuf::Int8 { codes, scales } => codes
                    .chunks_mut(BLOCK)
                    .zip(scales.chunks_mut(SCALES))
                    .map(|(codes, scales)| StateBuf::Int8 { codes, scales })
                    .collect(),
                StateBuf::Uint8 { codes, scales } => codes
                    .chunks_mut(BLOCK)
                    .zip(scales.chunks_mut(SCALES))
                    .map(|(codes, scales)| StateBuf::Uint8 { codes, scales })
                    .collect(),
                StateBuf::Bf16(s) => s.chunks_mut(BLOCK).map(StateBuf::Bf16).collect(),
                StateBuf::F32(s) => s.chunks_mut(BLOCK).map(StateBuf::F32).collect(),
            };
            chunks.into_iter()
        })
        .collect();
    params
        .into_iter()
        .zip(corrections)
        .zip(grads)
        .map(|((param, correction), grad)| StepBuffers {
            param,
            correction,
            grad,
            states: states
                .iter_mut()
                .map(|it| it.next().expect("one chunk per block"))
                .collect(),
        })
        .collect()
}

type Lanes = [f32; GROUP_SIZE];

fn run_block(plan: &Plan, scalars: &[f32], b: &mut StepBuffers<'_>, regs: &mut [Lanes]) {
    let n = b.param.len();
    for start in (0..n).step_by(GROUP_SIZE) {
        let len = GROUP_SIZE.min(n - start);
        let group = start / GROUP_SIZE;
        for (i, inst) in plan.body.iter().enumerate() {
            let mut out = [0.0f32; GROUP_SIZE];
            match inst.op {
                InstOp::Load(Load::Param) => load_param(plan, b, start, &mut out[..len]),
                InstOp::Load(Load::Grad) => load_grad(b.grad, start, &mut out[..len]),
                InstOp::Load(Load::State(s)) => load_state(
                    plan.states[s].codec,
                    &b.states[s],
                    start,
                    group,
                    &mut out[..len],
                ),
                InstOp::Scalar(k) => out = [scalars[k]; GROUP_SIZE],
                InstOp::Const(c) => out = [c; GROUP_SIZE],
                InstOp::Unary(f, a) => {
                    let a = &regs[a.index()];
                    for l in 0..len {
                        out[l] = unary_f32(f, a[l]);
                    }
                }
                InstOp::Binary(f, a, c) => {
                    let (a, c) = (&regs[a.index()], &regs[c.index()]);
                    for l in 0..len {
                        out[l] = binary_f32(f, a[l], c[l]);
                    }
                }
                InstOp::Ternary(f, a, c, d) => {
                    let (a, c, d) = (&regs[a.index()], &regs[c.index()], &regs[d.index()]);
                    for l in 0..len {
                        out[l] = ternary_f32(f, a[l], c[l], d[l]);
                    }
                }
            }
            regs[i] = out;
        }
        for store in &plan.stores {
            match *store {
                Store::Param(v) => store_param(plan, b, start, &regs[v.index()][..len]),
                Store::State(s, v) => store_state(
                    plan.states[s].codec,
                    &mut b.states[s],
                    start,
                    group,
                    &regs[v.index()][..len],
                ),
            }
        }
    }
}

fn load_param(plan: &Plan, b: &StepBuffers<'_>, start: usize, out: &mut [f32]) {
    let mode = plan.config.master;
    let narrow = |i: usize| -> (u16, FloatDtype) {
        match &b.param {
            ParamBuf::Bf16(s) => (s[start + i].to_bits(), FloatDtype::Bf16),
            ParamBuf::F16(s) => (s[start + i].to_bits(), FloatDtype::F16),
            ParamBuf::F32(_) => unreachable!(),
        }
    };
    for (i, o) in out.iter_mut().enumerate() {
        *o = match (&b.param, &b.correction) {
            (ParamBuf::F32(s), _) => s[start + i],
            (ParamBuf::Bf16(s), CorrectionBuf::None) => s[start + i].to_f32(),
            (ParamBuf::F16(s), CorrectionBuf::None) => s[start + i].to_f32(),
            (_, CorrectionBuf::Int8(c)) => {
                let (bits, dtype) = narrow(i);
                decode_master(bits, i32::from(c[start + i]), dtype, mode)
            }
            (_, CorrectionBuf::Int16(c)) => {
                let (bits, dtype) = narrow(i);
                decode_master(bits, i32::from(c[start + i]), dtype, mode)
            }
        };
    }
}

fn store_param(plan: &Plan, b: &mut StepBuffers<'_>, start: usize, values: &[f32]) {
    let mode = plan.config.master;
    for (i, &v) in values.iter().enumerate() {
        let at = start + i;
        match (&mut b.param, &mut b.correction) {
            (ParamBuf::F32(s), _) => s[at] = v,
            (ParamBuf::Bf16(s), CorrectionBuf::None) => s[at] = bf16::from_f32(v),
            (ParamBuf::F16(s), CorrectionBuf::None) => s[at] = f16::from_f32(v),
            (param, correction) => {
                let dtype = plan.config.param;
                let (bits, code) = encode_master(v, dtype, mode);
                match param {
                    ParamBuf::Bf16(s) => s[at] = bf16::from_bits(bits),
                    ParamBuf::F16(s) => s[at] = f16::from_bits(bits),
                    ParamBuf::F32(_) => unreachable!(),
                }
                match correction {
                    CorrectionBuf::Int8(c) => c[at] = code as i8,
                    CorrectionBuf::Int16(c) => c[at] = code as i16,
                    CorrectionBuf::None => unreachable!(),
                }
            }
        }
    }
}

fn load_grad(g: GradBuf<'_>, start: usize, out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = match g {
            GradBuf::Bf16(s) => s[start + i].to_f32(),
            GradBuf::F16(s) => s[start + i].to_f32(),
            GradBuf::F32(s) => s[start + i],
        };
    }
}

fn load_state(codec: Codec, s: &StateBuf<'_>, start: usize, group: usize, out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = match s {
            StateBuf::Int8 { codes, scales } => decode_signed(
                codes[start + i],
                scales[group],
                codec == Codec::Int8Softsign,
            ),
            StateBuf::Uint8 { codes, scales } => decode_sqrt(codes[start + i], scales[group]),
            StateBuf::Bf16(v) => v[start + i].to_f32(),
            StateBuf::F32(v) => v[start + i],
        };
    }
}

fn store_state(codec: Codec, s: &mut StateBuf<'_>, start: usize, group: usize, values: &[f32]) {
    let range = start..start + values.len();
    match s {
        StateBuf::Int8 { codes, scales } => {
            scales[group] =
                encode_signed_group(values, codec == Codec::Int8Softsign, &mut codes[range]);
        }
        StateBuf::Uint8 { codes, scales } => {
            scales[group] = encode_sqrt_group(values, &mut codes[range]);
        }
        StateBuf::Bf16(v) => {
            for (o, &x) in v[range].iter_mut().zip(values) {
                *o = bf16::from_f32(x);
            }
        }
        StateBuf::F32(v) => v[range].copy_from_slice(values),
    }
}
