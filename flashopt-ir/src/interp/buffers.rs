//! Host memory a program reads and writes: one typed buffer per part, and a tensor's
//! resident parts together.

use half::{bf16, f16};

use crate::layout::{Shape, Storage};
use crate::plan::Plan;
use crate::semantics::to_code;
use crate::types::FloatDtype;

/// Runs `$body` with `$v` bound to the typed vector or slice inside any of the
/// storage enums below (their variants share names).
macro_rules! each_storage {
    ($enum:ident, $value:expr, $v:ident => $body:expr) => {
        match $value {
            $enum::Bf16($v) => $body,
            $enum::F16($v) => $body,
            $enum::F32($v) => $body,
            $enum::I8($v) => $body,
            $enum::I16($v) => $body,
            $enum::U8($v) => $body,
        }
    };
}
pub(crate) use each_storage;

/// One part of one tensor, owned.
#[derive(Clone, Debug, PartialEq)]
pub enum PartData {
    Bf16(Vec<bf16>),
    F16(Vec<f16>),
    F32(Vec<f32>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    U8(Vec<u8>),
}

/// One part of one tensor, borrowed for writing.
#[derive(Debug)]
pub enum PartMut<'a> {
    Bf16(&'a mut [bf16]),
    F16(&'a mut [f16]),
    F32(&'a mut [f32]),
    I8(&'a mut [i8]),
    I16(&'a mut [i16]),
    U8(&'a mut [u8]),
}

/// One part of one tensor, borrowed for reading.
#[derive(Clone, Copy, Debug)]
pub enum PartRef<'a> {
    Bf16(&'a [bf16]),
    F16(&'a [f16]),
    F32(&'a [f32]),
    I8(&'a [i8]),
    I16(&'a [i16]),
    U8(&'a [u8]),
}

macro_rules! slice_into_part {
    ($t:ty, $variant:ident) => {
        impl<'a> From<&'a [$t]> for PartRef<'a> {
            fn from(v: &'a [$t]) -> Self {
                PartRef::$variant(v)
            }
        }
        impl<'a> From<&'a mut [$t]> for PartMut<'a> {
            fn from(v: &'a mut [$t]) -> Self {
                PartMut::$variant(v)
            }
        }
    };
}
slice_into_part!(half::bf16, Bf16);
slice_into_part!(half::f16, F16);
slice_into_part!(f32, F32);
slice_into_part!(i8, I8);
slice_into_part!(i16, I16);
slice_into_part!(u8, U8);

/// The gradients, read only.
#[derive(Clone, Copy, Debug)]
pub enum GradBuf<'a> {
    Bf16(&'a [bf16]),
    F16(&'a [f16]),
    F32(&'a [f32]),
}

/// A value's 32 bits as a program sees it: floats widened to f32, integers as i32.
pub(crate) trait Element: Copy {
    fn lane_bits(self) -> u32;
    /// The storage's conversion of an f32 (see [`crate::program::InstOp::Store`]).
    fn from_f32(x: f32) -> Self;
}

macro_rules! float_element {
    ($t:ty, $widen:expr, $narrow:expr) => {
        impl Element for $t {
            fn lane_bits(self) -> u32 {
                let widen: fn($t) -> f32 = $widen;
                widen(self).to_bits()
            }
            fn from_f32(x: f32) -> Self {
                let narrow: fn(f32) -> $t = $narrow;
                narrow(x)
            }
        }
    };
}
float_element!(bf16, |x| x.to_f32(), bf16::from_f32);
float_element!(f16, |x| x.to_f32(), f16::from_f32);
float_element!(f32, |x| x, |x| x);

macro_rules! int_element {
    ($t:ty) => {
        impl Element for $t {
            fn lane_bits(self) -> u32 {
                i32::from(self) as u32
            }
            fn from_f32(x: f32) -> Self {
                let (min, max) = (<$t>::MIN as f32, <$t>::MAX as f32);
                // The GPU back ends convert as their hardware does (CUDA wraps 128.0
                // to -128 in an int8): a program that needs this saturation computes
                // other bits there. Tests run with this check.
                debug_assert!(
                    x.is_nan() || (min..=max).contains(&x),
                    "a program stored {x} in a {} part: out of the storage's range",
                    stringify!($t)
                );
                to_code(x, min, max) as $t
            }
        }
    };
}
int_element!(i8);
int_element!(i16);
int_element!(u8);

impl PartData {
    /// `count` zero values (every codec's zero: zero codes with zero scales).
    pub fn zeros(storage: Storage, count: usize) -> PartData {
        match storage {
            Storage::Bf16 => PartData::Bf16(vec![bf16::ZERO; count]),
            Storage::F16 => PartData::F16(vec![f16::ZERO; count]),
            Storage::F32 => PartData::F32(vec![0.0; count]),
            Storage::I8 => PartData::I8(vec![0; count]),
            Storage::I16 => PartData::I16(vec![0; count]),
            Storage::U8 => PartData::U8(vec![0; count]),
        }
    }

    pub fn storage(&self) -> Storage {
        match self {
            PartData::Bf16(_) => Storage::Bf16,
            PartData::F16(_) => Storage::F16,
            PartData::F32(_) => Storage::F32,
            PartData::I8(_) => Storage::I8,
            PartData::I16(_) => Storage::I16,
            PartData::U8(_) => Storage::U8,
        }
    }

    pub fn len(&self) -> usize {
        each_storage!(PartData, self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn view_mut(&mut self) -> PartMut<'_> {
        each_storage!(PartData, self, v => v.as_mut_slice().into())
    }

    pub fn view(&self) -> PartRef<'_> {
        each_storage!(PartData, self, v => v.as_slice().into())
    }

    /// Float values widened to f32 (`None` for integer codes).
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        match self {
            PartData::Bf16(v) => Some(v.iter().map(|x| x.to_f32()).collect()),
            PartData::F16(v) => Some(v.iter().map(|x| x.to_f32()).collect()),
            PartData::F32(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// `values` in a float `dtype`, rounded to nearest (ties to even).
    pub fn round_from_f32(dtype: FloatDtype, values: &[f32]) -> PartData {
        match dtype {
            FloatDtype::Bf16 => PartData::Bf16(values.iter().map(|&x| bf16::from_f32(x)).collect()),
            FloatDtype::F16 => PartData::F16(values.iter().map(|&x| f16::from_f32(x)).collect()),
            FloatDtype::F32 => PartData::F32(values.to_vec()),
        }
    }

    /// The same float values read as a gradient (`None` for integer codes).
    pub fn as_grad(&self) -> Option<GradBuf<'_>> {
        match self {
            PartData::Bf16(v) => Some(GradBuf::Bf16(v)),
            PartData::F16(v) => Some(GradBuf::F16(v)),
            PartData::F32(v) => Some(GradBuf::F32(v)),
            _ => None,
        }
    }
}

impl<'a> GradBuf<'a> {
    /// The gradient as a part to read.
    pub fn as_part(self) -> PartRef<'a> {
        match self {
            GradBuf::Bf16(v) => PartRef::Bf16(v),
            GradBuf::F16(v) => PartRef::F16(v),
            GradBuf::F32(v) => PartRef::F32(v),
        }
    }

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

/// Owned storage of one tensor's optimizer side: its resident parts (the plan's parts
/// but the gradient), in the plan's order, the parameter first.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    shape: Shape,
    pub parts: Vec<PartData>,
}

impl HostTensor {
    /// Storage for a plan, every part zero: a vector of `len` elements, or a
    /// [`Shape`] (a tensor with per-row or per-column states needs its row length).
    ///
    /// # Panics
    /// If the rows of `shape` do not tile it ([`Shape::is_valid`]).
    pub fn zeros(plan: &Plan, shape: impl Into<Shape>) -> HostTensor {
        let shape = shape.into();
        assert!(
            shape.is_valid(),
            "rows of {} elements do not tile {} elements",
            shape.row_len,
            shape.len
        );
        HostTensor {
            shape,
            parts: plan
                .resident_parts()
                .map(|(_, p)| PartData::zeros(p.storage, p.count(shape)))
                .collect(),
        }
    }

    /// Storage for a plan, the master weights set from `values` (the plan's init
    /// program) and states zero: a vector.
    pub fn from_f32(plan: &Plan, values: &[f32]) -> HostTensor {
        HostTensor::from_f32_shaped(plan, values, values.len())
    }

    /// As [`Self::from_f32`], for a tensor of `shape`.
    ///
    /// # Panics
    /// If `values` does not hold `shape`'s elements, or its rows do not tile it.
    pub fn from_f32_shaped(plan: &Plan, values: &[f32], shape: impl Into<Shape>) -> HostTensor {
        let shape = shape.into();
        assert_eq!(values.len(), shape.len, "one value per element of {shape}");
        let mut t = HostTensor::zeros(plan, shape);
        super::init(plan, &mut t, values);
        t
    }

    /// Set the parameter parts from f32 master weights (the plan's init program, which
    /// writes nothing else): the states stay.
    ///
    /// # Panics
    /// If `values` is not as long as the tensor.
    pub fn set_master(&mut self, plan: &Plan, values: &[f32]) {
        assert_eq!(values.len(), self.len(), "one master weight per element");
        super::init(plan, self, values);
    }

    /// A tensor from its parts, unchecked (see [`super::check`]).
    pub fn from_parts(shape: impl Into<Shape>, parts: Vec<PartData>) -> HostTensor {
        HostTensor {
            shape: shape.into(),
            parts,
        }
    }

    pub fn len(&self) -> usize {
        self.shape.len
    }

    /// Its element count and row length.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    pub fn is_empty(&self) -> bool {
        self.shape.len == 0
    }

    /// The parameter part: what the model computes with.
    pub fn param(&self) -> &PartData {
        &self.parts[0]
    }

    /// The parameter values the model computes with (the narrow values, widened).
    pub fn param_f32(&self) -> Vec<f32> {
        self.param()
            .to_f32()
            .expect("the parameter part holds floats")
    }

    /// A resident part by name.
    pub fn part<'a>(&'a self, plan: &Plan, name: &str) -> Option<&'a PartData> {
        plan.resident_parts()
            .position(|(_, p)| p.name == name)
            .map(|i| &self.parts[i])
    }

    /// Every decoded value (the plan's decode program): the f32 master weights, then
    /// each state's f32 values.
    pub fn decoded(&self, plan: &Plan) -> Vec<Vec<f32>> {
        super::decode(plan, self, |_| true)
    }

    /// The f32 master weights (narrow value + correction, decoded), the states left
    /// alone.
    pub fn master_f32(&self, plan: &Plan) -> Vec<f32> {
        super::decode(plan, self, |k| k == 0).swap_remove(0)
    }
}
