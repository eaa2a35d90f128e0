//! Views of host memory that a step reads and writes, and an owned container of them.

use half::{bf16, f16};

use crate::codec::master::{decode_master, encode_master, narrow_to_f32, to_narrow_bits};
use crate::codec::state::{decode_signed, decode_sqrt};
use crate::plan::Plan;
use crate::types::{Codec, FloatDtype, GROUP_SIZE, MasterMode};

/// The narrow (or f32) parameters, written in place.
#[derive(Debug)]
pub enum ParamBuf<'a> {
    Bf16(&'a mut [bf16]),
    F16(&'a mut [f16]),
    F32(&'a mut [f32]),
}

/// The correction codes next to narrow parameters.
#[derive(Debug)]
pub enum CorrectionBuf<'a> {
    None,
    Int8(&'a mut [i8]),
    Int16(&'a mut [i16]),
}

/// The gradients, read only.
#[derive(Clone, Copy, Debug)]
pub enum GradBuf<'a> {
    Bf16(&'a [bf16]),
    F16(&'a [f16]),
    F32(&'a [f32]),
}

/// One state's storage, written in place.
#[derive(Debug)]
pub enum StateBuf<'a> {
    /// `int8_softsign` or `int8_linear`.
    Int8 {
        codes: &'a mut [i8],
        scales: &'a mut [f16],
    },
    /// `uint8_sqrt`.
    Uint8 {
        codes: &'a mut [u8],
        scales: &'a mut [f16],
    },
    Bf16(&'a mut [bf16]),
    F32(&'a mut [f32]),
}

/// Everything one step touches.
#[derive(Debug)]
pub struct StepBuffers<'a> {
    pub param: ParamBuf<'a>,
    pub correction: CorrectionBuf<'a>,
    pub grad: GradBuf<'a>,
    /// One per declared state, in declaration order.
    pub states: Vec<StateBuf<'a>>,
}

impl ParamBuf<'_> {
    pub fn dtype(&self) -> FloatDtype {
        match self {
            ParamBuf::Bf16(_) => FloatDtype::Bf16,
            ParamBuf::F16(_) => FloatDtype::F16,
            ParamBuf::F32(_) => FloatDtype::F32,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            ParamBuf::Bf16(s) => s.len(),
            ParamBuf::F16(s) => s.len(),
            ParamBuf::F32(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CorrectionBuf<'_> {
    pub fn mode(&self) -> MasterMode {
        match self {
            CorrectionBuf::None => MasterMode::None,
            CorrectionBuf::Int8(_) => MasterMode::Int8,
            CorrectionBuf::Int16(_) => MasterMode::Int16,
        }
    }

    pub fn code_count(&self) -> Option<usize> {
        match self {
            CorrectionBuf::None => None,
            CorrectionBuf::Int8(s) => Some(s.len()),
            CorrectionBuf::Int16(s) => Some(s.len()),
        }
    }
}

impl GradBuf<'_> {
    pub fn dtype(&self) -> FloatDtype {
        match self {
            GradBuf::Bf16(_) => FloatDtype::Bf16,
            GradBuf::F16(_) => FloatDtype::F16,
            GradBuf::F32(_) => FloatDtype::F32,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            GradBuf::Bf16(s) => s.len(),
            GradBuf::F16(s) => s.len(),
            GradBuf::F32(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl StateBuf<'_> {
    /// Whether this storage can hold `codec`.
    pub fn holds(&self, codec: Codec) -> bool {
        matches!(
            (self, codec),
            (
                StateBuf::Int8 { .. },
                Codec::Int8Softsign | Codec::Int8Linear
            ) | (StateBuf::Uint8 { .. }, Codec::Uint8Sqrt)
                | (StateBuf::Bf16(_), Codec::Bf16)
                | (StateBuf::F32(_), Codec::F32)
        )
    }

    pub fn storage_name(&self) -> &'static str {
        match self {
            StateBuf::Int8 { .. } => "int8 codes + f16 scales",
            StateBuf::Uint8 { .. } => "uint8 codes + f16 scales",
            StateBuf::Bf16(_) => "bf16",
            StateBuf::F32(_) => "f32",
        }
    }

    /// (elements, scales) held.
    pub fn lens(&self) -> (usize, Option<usize>) {
        match self {
            StateBuf::Int8 { codes, scales } => (codes.len(), Some(scales.len())),
            StateBuf::Uint8 { codes, scales } => (codes.len(), Some(scales.len())),
            StateBuf::Bf16(s) => (s.len(), None),
            StateBuf::F32(s) => (s.len(), None),
        }
    }
}

/// Owned storage of one parameter tensor's optimizer side: narrow parameters,
/// corrections and states, laid out as a [`Plan`] expects.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub param: ParamData,
    pub correction: CorrectionData,
    pub states: Vec<StateData>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ParamData {
    Bf16(Vec<bf16>),
    F16(Vec<f16>),
    F32(Vec<f32>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum CorrectionData {
    None,
    Int8(Vec<i8>),
    Int16(Vec<i16>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum StateData {
    Int8 { codes: Vec<i8>, scales: Vec<f16> },
    Uint8 { codes: Vec<u8>, scales: Vec<f16> },
    Bf16(Vec<bf16>),
    F32(Vec<f32>),
}

impl StateData {
    /// A zero state of `n` elements (what flashoptim initializes).
    pub fn zeros(codec: Codec, n: usize) -> StateData {
        let groups = n.div_ceil(GROUP_SIZE);
        match codec {
            Codec::Int8Softsign | Codec::Int8Linear => StateData::Int8 {
                codes: vec![0; n],
                scales: vec![f16::ZERO; groups],
            },
            Codec::Uint8Sqrt => StateData::Uint8 {
                codes: vec![0; n],
                scales: vec![f16::ZERO; groups],
            },
            Codec::Bf16 => StateData::Bf16(vec![bf16::ZERO; n]),
            Codec::F32 => StateData::F32(vec![0.0; n]),
        }
    }

    pub fn view(&mut self) -> StateBuf<'_> {
        match self {
            StateData::Int8 { codes, scales } => StateBuf::Int8 { codes, scales },
            StateData::Uint8 { codes, scales } => StateBuf::Uint8 { codes, scales },
            StateData::Bf16(v) => StateBuf::Bf16(v),
            StateData::F32(v) => StateBuf::F32(v),
        }
    }

    /// Decode to f32 (`codec` says whether int8 codes are softsign or linear).
    pub fn decode(&self, codec: Codec) -> Vec<f32> {
        match self {
            StateData::Int8 { codes, scales } => {
                let softsign = codec == Codec::Int8Softsign;
                codes
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| decode_signed(c, scales[i / GROUP_SIZE], softsign))
                    .collect()
            }
            StateData::Uint8 { codes, scales } => codes
                .iter()
                .enumerate()
                .map(|(i, &c)| decode_sqrt(c, scales[i / GROUP_SIZE]))
                .collect(),
            StateData::Bf16(v) => v.iter().map(|x| x.to_f32()).collect(),
            StateData::F32(v) => v.clone(),
        }
    }
}

impl ParamData {
    /// `values` in `dtype`, rounded to nearest (ties to even) for bf16 and f16.
    pub fn round_from_f32(dtype: FloatDtype, values: &[f32]) -> ParamData {
        match dtype {
            FloatDtype::F32 => ParamData::F32(values.to_vec()),
            narrow => {
                let bits: Vec<u16> = values.iter().map(|&v| to_narrow_bits(v, narrow)).collect();
                narrow_param(narrow, &bits)
            }
        }
    }

    /// The same values read as a gradient of their dtype.
    pub fn as_grad(&self) -> GradBuf<'_> {
        match self {
            ParamData::Bf16(v) => GradBuf::Bf16(v),
            ParamData::F16(v) => GradBuf::F16(v),
            ParamData::F32(v) => GradBuf::F32(v),
        }
    }
}

impl HostTensor {
    /// Storage for a plan, the master weights set from `values` and states zero.
    pub fn from_f32(plan: &Plan, values: &[f32]) -> HostTensor {
        let cfg = plan.config;
        let n = values.len();
        let (param, correction) = match (cfg.param, cfg.master) {
            (FloatDtype::F32, _) | (_, MasterMode::None) => (
                ParamData::round_from_f32(cfg.param, values),
                CorrectionData::None,
            ),
            (dtype, mode) => {
                let (bits, codes): (Vec<u16>, Vec<i32>) = values
                    .iter()
                    .map(|&v| encode_master(v, dtype, mode))
                    .unzip();
                let correction = match mode {
                    MasterMode::Int8 => {
                        CorrectionData::Int8(codes.iter().map(|&c| c as i8).collect())
                    }
                    _ => CorrectionData::Int16(codes.iter().map(|&c| c as i16).collect()),
                };
                (narrow_param(dtype, &bits), correction)
            }
        };
        let states = plan
            .states
            .iter()
            .map(|s| StateData::zeros(s.codec, n))
            .collect();
        HostTensor {
            param,
            correction,
            states,
        }
    }

    pub fn len(&self) -> usize {
        match &self.param {
            ParamData::Bf16(v) => v.len(),
            ParamData::F16(v) => v.len(),
            ParamData::F32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The parameter values the model computes with (the narrow values, widened).
    pub fn param_f32(&self) -> Vec<f32> {
        match &self.param {
            ParamData::Bf16(v) => v.iter().map(|x| x.to_f32()).collect(),
            ParamData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            ParamData::F32(v) => v.clone(),
        }
    }

    /// The f32 master weights (narrow value + correction).
    pub fn master_f32(&self) -> Vec<f32> {
        let narrow = |dtype: FloatDtype, bits: Vec<u16>| -> Vec<f32> {
            match &self.correction {
                CorrectionData::None => bits.iter().map(|&b| narrow_to_f32(b, dtype)).collect(),
                CorrectionData::Int8(c) => bits
                    .iter()
                    .zip(c)
                    .map(|(&b, &c)| decode_master(b, i32::from(c), dtype, MasterMode::Int8))
                    .collect(),
                CorrectionData::Int16(c) => bits
                    .iter()
                    .zip(c)
                    .map(|(&b, &c)| decode_master(b, i32::from(c), dtype, MasterMode::Int16))
                    .collect(),
            }
        };
        match &self.param {
            ParamData::F32(v) => v.clone(),
            ParamData::Bf16(v) => narrow(FloatDtype::Bf16, v.iter().map(|x| x.to_bits()).collect()),
            ParamData::F16(v) => narrow(FloatDtype::F16, v.iter().map(|x| x.to_bits()).collect()),
        }
    }

    /// Views for one step with the given gradient.
    pub fn buffers<'a>(&'a mut self, grad: GradBuf<'a>) -> StepBuffers<'a> {
        StepBuffers {
            param: match &mut self.param {
                ParamData::Bf16(v) => ParamBuf::Bf16(v),
                ParamData::F16(v) => ParamBuf::F16(v),
                ParamData::F32(v) => ParamBuf::F32(v),
            },
            correction: match &mut self.correction {
                CorrectionData::None => CorrectionBuf::None,
                CorrectionData::Int8(v) => CorrectionBuf::Int8(v),
                CorrectionData::Int16(v) => CorrectionBuf::Int16(v),
            },
            grad,
            states: self.states.iter_mut().map(StateData::view).collect(),
        }
    }
}

fn narrow_param(dtype: FloatDtype, bits: &[u16]) -> ParamData {
    match dtype {
        FloatDtype::Bf16 => ParamData::Bf16(bits.iter().map(|&b| bf16::from_bits(b)).collect()),
        FloatDtype::F16 => ParamData::F16(bits.iter().map(|&b| f16::from_bits(b)).collect()),
        FloatDtype::F32 => unreachable!("f32 has no narrow bits"),
    }
}
