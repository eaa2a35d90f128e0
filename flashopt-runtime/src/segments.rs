//! Where each tensor lies in flat buffers of whole 32-element groups: the GPU's
//! buffers and the shards of a sharded optimizer cut the same way, so a group, and
//! the scale it shares, never straddles two tensors or two ranks.

use flashopt_ir::{Extent, GROUP_SIZE};

use crate::core::TensorInfo;

/// Flat buffers hold parts of one value per element or per group: the GPU and the
/// sharded optimizers refuse plans with parts per row or per column first
/// ([`flashopt_ir::Plan::rows_and_columns`]).
pub const NOT_FLAT: &str =
    "parts of one value per row or per column are not laid out in flat buffers";

/// One tensor's place in the flat buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub len: usize,
    pub first_group: usize,
    pub groups: usize,
}

impl Segment {
    /// The tensor's elements in a flat per-element buffer.
    pub fn elements(&self) -> std::ops::Range<usize> {
        let start = self.first_group * GROUP_SIZE;
        start..start + self.len
    }

    /// Where the tensor's values of a part of `extent` start in its buffer.
    pub fn start(&self, extent: Extent) -> usize {
        match extent {
            Extent::Element => self.first_group * GROUP_SIZE,
            Extent::Group => self.first_group,
            Extent::Row | Extent::Column => unreachable!("{}", NOT_FLAT),
        }
    }

    /// Values of a part of `extent` the segment holds, padding included.
    pub fn padded(&self, extent: Extent) -> usize {
        match extent {
            Extent::Element => self.groups * GROUP_SIZE,
            Extent::Group => self.groups,
            Extent::Row | Extent::Column => unreachable!("{}", NOT_FLAT),
        }
    }
}

/// The segments of tensors laid out one after the other.
pub fn segments(tensors: &[TensorInfo]) -> (Vec<Segment>, usize) {
    let mut groups = 0;
    let segments = tensors
        .iter()
        .map(|t| {
            let g = t.len.div_ceil(GROUP_SIZE);
            let s = Segment {
                len: t.len,
                first_group: groups,
                groups: g,
            };
            groups += g;
            s
        })
        .collect();
    (segments, groups)
}
