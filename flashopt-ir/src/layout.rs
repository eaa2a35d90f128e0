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

/// A tensor's element count and row length. Row and column scopes see the tensor as a
/// row-major matrix of `len / row_len` rows: element `i` lies in row `i / row_len` and
/// column `i % row_len`. A vector is one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    pub len: usize,
    pub row_len: usize,
}

impl Shape {
    /// `len` elements in one row.
    pub const fn vector(len: usize) -> Shape {
        Shape { len, row_len: len }
    }

    /// `rows` rows of `cols` elements.
    pub const fn matrix(rows: usize, cols: usize) -> Shape {
        Shape {
            len: rows * cols,
            row_len: cols,
        }
    }

    /// A tensor's dimensions, outermost first, as a matrix: the last dimension is the
    /// row (a scalar or a vector is one row).
    pub fn of_dims(dims: &[usize]) -> Shape {
        let len = dims.iter().product();
        match dims.last() {
            Some(&cols) if dims.len() > 1 => Shape { len, row_len: cols },
            _ => Shape::vector(len),
        }
    }

    pub fn rows(self) -> usize {
        self.len.checked_div(self.row_len).unwrap_or(0)
    }

    pub fn cols(self) -> usize {
        self.row_len
    }

    /// Whether the rows tile the tensor (an empty tensor is one empty row).
    pub fn is_valid(self) -> bool {
        if self.len == 0 {
            self.row_len == 0
        } else {
            self.row_len > 0 && self.len % self.row_len == 0
        }
    }
}

impl From<usize> for Shape {
    fn from(len: usize) -> Shape {
        Shape::vector(len)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} x {}", self.rows(), self.row_len)
    }
}

/// How many values of a part a tensor has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Extent {
    /// One per element.
    Element,
    /// One per group of [`GROUP_SIZE`] elements (a tensor's last group may be short).
    Group,
    /// One per row ([`Shape`]).
    Row,
    /// One per column.
    Column,
}

impl Extent {
    /// Values of this extent in a tensor of `shape`.
    pub fn count(self, shape: Shape) -> usize {
        match self {
            Extent::Element => shape.len,
            Extent::Group => shape.len.div_ceil(GROUP_SIZE),
            Extent::Row => shape.rows(),
            Extent::Column => shape.cols(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Extent::Element => "per element",
            Extent::Group => "per group of 32",
            Extent::Row => "per row",
            Extent::Column => "per column",
        }
    }

    /// One value per row or column, which the step stores once per row or column.
    pub fn is_scoped(self) -> bool {
        matches!(self, Extent::Row | Extent::Column)
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

    /// Values held for a tensor of `shape`.
    pub fn count(&self, shape: Shape) -> usize {
        self.extent.count(shape)
    }

    /// Bytes held for a tensor of `shape`.
    pub fn bytes(&self, shape: Shape) -> usize {
        self.count(shape) * self.storage.size_bytes()
    }

    /// Bytes per parameter, a group's share amortized over a full group; a row's or a
    /// column's share is counted as none (`rows + cols` values beside `rows x cols`).
    pub fn bytes_per_element(&self) -> f64 {
        match self.extent {
            Extent::Element => self.storage.size_bytes() as f64,
            Extent::Group => self.storage.size_bytes() as f64 / GROUP_SIZE as f64,
            Extent::Row | Extent::Column => 0.0,
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
        let v = Shape::vector;
        assert_eq!((codes.count(v(33)), codes.bytes(v(33))), (33, 33));
        assert_eq!((scales.count(v(33)), scales.bytes(v(33))), (2, 4));
        assert_eq!(scales.count(v(0)), 0);
        let rows = Part::new("r", Storage::F32, Extent::Row, Role::State);
        let cols = Part::new("c", Storage::F32, Extent::Column, Role::State);
        let m = Shape::of_dims(&[3, 4, 5]);
        assert_eq!((m.rows(), m.cols(), m.len), (12, 5, 60));
        assert_eq!((rows.count(m), cols.count(m), rows.bytes(m)), (12, 5, 48));
        assert_eq!((rows.count(v(7)), cols.count(v(7))), (1, 7));
        assert!(m.is_valid() && v(0).is_valid() && !Shape { len: 6, row_len: 4 }.is_valid());
        assert_eq!(scales.bytes_per_element(), 2.0 / 32.0);
        assert_eq!(Storage::I16.int_range(), Some((-32768, 32767)));
        assert_eq!(Storage::U8.int_range(), Some((0, 255)));
        assert!(Storage::F16.int_range().is_none());
    }
}
