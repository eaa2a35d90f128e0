//! Where each tensor lies in flat buffers of whole 32-element groups: the GPU's
//! buffers and the shards of a sharded optimizer cut the same way, so a group, and
//! the scale it shares, never straddles two tensors or two ranks.

use flashopt_ir::{Extent, GROUP_SIZE};

use crate::core::TensorInfo;

/// Flat buffers hold parts of one value per element, per group, per row (every
/// tensor's rows one after the other) or per column (every tensor's columns one after
/// the other); the sharded optimizers cut flat buffers into pieces of groups and refuse
/// plans with values per row or column first ([`flashopt_ir::Plan::rows_and_columns`]).
pub const NOT_FLAT: &str = "parts of one value per row or column are not cut into shards";

/// One tensor's place in the flat buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub len: usize,
    pub first_group: usize,
    pub groups: usize,
    /// The tensor's first row among every tensor's rows (the index of its first value
    /// in a flat per-row part), and its rows.
    pub first_row: usize,
    pub rows: usize,
    /// Elements per row: the tensor's columns.
    pub row_len: usize,
    /// The tensor's first column among every tensor's columns (the index of its first
    /// value in a flat per-column part, where each tensor's columns are padded to a
    /// multiple of 32: a kernel reads a vector's last group's columns whole).
    pub first_column: usize,
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
            Extent::Row => self.first_row,
            Extent::Column => self.first_column,
        }
    }

    /// The tensor's shape: its elements and its row length.
    pub fn shape(&self) -> flashopt_ir::layout::Shape {
        flashopt_ir::layout::Shape {
            len: self.len,
            row_len: self.row_len,
        }
    }

    /// Whether every row starts a group: its length a multiple of 32, or one row.
    /// Each group then lies in one row.
    pub fn rows_start_groups(&self) -> bool {
        self.rows <= 1 || self.row_len % GROUP_SIZE == 0
    }

    /// Groups per row where [`Self::rows_start_groups`] (a single row's: all of them).
    pub fn groups_per_row(&self) -> usize {
        if self.rows <= 1 {
            self.groups.max(1)
        } else {
            self.row_len / GROUP_SIZE
        }
    }

    /// Values of a part of `extent` the segment holds, padding included.
    pub fn padded(&self, extent: Extent) -> usize {
        match extent {
            Extent::Element => self.groups * GROUP_SIZE,
            Extent::Group => self.groups,
            Extent::Row => self.rows,
            Extent::Column => self.row_len.next_multiple_of(GROUP_SIZE),
        }
    }
}

/// The segments of tensors laid out one after the other, and the groups they take.
pub fn segments(tensors: &[TensorInfo]) -> (Vec<Segment>, usize) {
    let (mut groups, mut rows, mut columns) = (0, 0, 0);
    let segments = tensors
        .iter()
        .map(|t| {
            let g = t.len.div_ceil(GROUP_SIZE);
            let shape = t.shape();
            let s = Segment {
                len: t.len,
                first_group: groups,
                groups: g,
                first_row: rows,
                rows: shape.rows(),
                row_len: shape.row_len,
                first_column: columns,
            };
            groups += g;
            rows += s.rows;
            columns += s.padded(Extent::Column);
            s
        })
        .collect();
    (segments, groups)
}

/// Every tensor's rows: the length of a flat per-row part.
pub fn total_rows(segments: &[Segment]) -> usize {
    segments.last().map_or(0, |s| s.first_row + s.rows)
}

/// Every tensor's columns: the length of a flat per-column part.
pub fn total_columns(segments: &[Segment]) -> usize {
    segments
        .last()
        .map_or(0, |s| s.first_column + s.padded(Extent::Column))
}
