//! What a plan keeps in memory for one tensor: its stored parts.
//!
//! A plan lists its parts once ([`crate::Plan::parts`]); everything that touches
//! memory reads that list: the CPU interpreter's buffers, the GPU buffers and their
//! binding order, the byte-traffic model, raw byte conversion and checkpoint keys.

use std::fmt;

use crate::types::{FloatDtype, GROUP_SIZE};

/// The element type of a stored part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Storage {
    Bf16,
    F16,
    F32,
    I8,
    I16,
    U8,
}

impl Storage {
    pub fn size_bytes(self) -> usize {
        match self {
            Storage::I8 | Storage::U8 => 1,
            Storage::Bf16 | Storage::F16 | Storage::I16 => 2,
            Storage::F32 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Storage::Bf16 => "bf16",
            Storage::F16 => "f16",
            Storage::F32 => "f32",
            Storage::I8 => "i8",
            Storage::I16 => "i16",
            Storage::U8 => "u8",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Storage::Bf16 | Storage::F16 | Storage::F32)
    }

    /// The range of an integer storage, `None` for floats.
    pub fn int_range(self) -> Option<(i32, i32)> {
        match self {
            Storage::I8 => Some((i8::MIN.into(), i8::MAX.into())),
            Storage::I16 => Some((i16::MIN.into(), i16::MAX.into())),
            Storage::U8 => Some((0, u8::MAX.into())),
            _ => None,
        }
    }
}

impl From<FloatDtype> for Storage {
    fn from(dtype: FloatDtype) -> Storage {
        match dtype {
            FloatDtype::Bf16 => Storage::Bf16,
            FloatDtype::F16 => Storage::F16,
            FloatDtype::F32 => Storage::F32,
        }
    }
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How many values of a part a tensor has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Extent {
    /// One per element.
    Element,
    /// One per group of [`GROUP_SIZE`] elements (a tensor's last group may be short).
    Group,
}

impl Extent {
    /// Values of this extent in a tensor of `len` elements.
    pub fn count(self, len: usize) -> usize {
        match self {
            Extent::Element => len,
            Extent::Group => len.div_ceil(GROUP_SIZE),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Extent::Element => "per element",
            Extent::Group => "per group of 32",
        }
    }
}

/// What a part is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The parameter the model computes with (bf16, f16 or f32).
    Param,
    /// This step's gradient: read, never stored between steps or checkpointed.
    Gradient,
    /// Optimizer state kept between steps (corrections, codes, scales).
    State,
}

/// One stored part of a tensor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Part {
    /// Unique within a plan; a checkpoint stores it under `<tensor>::<name>`.
    pub name: String,
    pub storage: Storage,
    pub extent: Extent,
    pub role: Role,
}

impl Part {
    pub fn new(name: impl Into<String>, storage: Storage, extent: Extent, role: Role) -> Part {
        Part {
            name: name.into(),
            storage,
            extent,
            role,
        }
    }

    /// Values held for a tensor of `len` elements.
    pub fn count(&self, len: usize) -> usize {
        self.extent.count(len)
    }

    /// Bytes held for a tensor of `len` elements.
    pub fn bytes(&self, len: usize) -> usize {
        self.count(len) * self.storage.size_bytes()
    }

    /// Bytes per parameter, a group's share amortized over a full group.
    pub fn bytes_per_element(&self) -> f64 {
        match self.extent {
            Extent::Element => self.storage.size_bytes() as f64,
            Extent::Group => self.storage.size_bytes() as f64 / GROUP_SIZE as f64,
        }
    }

    /// Kept between steps (and checkpointed): everything but the gradient.
    pub fn is_resident(&self) -> bool {
        self.role != Role::Gradient
    }
}

/// A part, by its index in [`crate::Plan::parts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartId(pub usize);

impl PartId {
    pub fn index(self) -> usize {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_bytes_follow_the_extent() {
        let codes = Part::new("m::codes", Storage::I8, Extent::Element, Role::State);
        let scales = Part::new("m::scales", Storage::F16, Extent::Group, Role::State);
        assert_eq!((codes.count(33), codes.bytes(33)), (33, 33));
        assert_eq!((scales.count(33), scales.bytes(33)), (2, 4));
        assert_eq!(scales.count(0), 0);
        assert_eq!(scales.bytes_per_element(), 2.0 / 32.0);
        assert_eq!(Storage::I16.int_range(), Some((-32768, 32767)));
        assert_eq!(Storage::U8.int_range(), Some((0, 255)));
        assert!(Storage::F16.int_range().is_none());
    }
}
