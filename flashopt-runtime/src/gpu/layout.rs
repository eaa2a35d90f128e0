//! Where tensors live in the flat device buffers, and the bytes that go in and out.
//!
//! Every kernel buffer of a plan part is one flat device buffer; each tensor occupies a
//! segment padded to whole 32-element groups, so groups never straddle tensors and a
//! per-group part lines up with the per-element ones. A u32 per group gives the kernel
//! the group's real length (padding never enters a group maximum) and its parameter
//! group.

use flashopt_cubecl::bindings::{self, Buffer, Role};
use flashopt_ir::interp::HostTensor;
use flashopt_ir::{Extent, GROUP_SIZE, Plan};

use crate::core::TensorInfo;
use crate::raw;

/// One tensor's place in the flat buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
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
        }
    }

    /// Values of a part of `extent` the segment holds, padding included.
    pub fn padded(&self, extent: Extent) -> usize {
        match extent {
            Extent::Element => self.groups * GROUP_SIZE,
            Extent::Group => self.groups,
        }
    }
}

/// The segments of tensors laid out one after the other.
pub(crate) fn segments(tensors: &[TensorInfo]) -> (Vec<Segment>, usize) {
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

/// The group info words: element count in bits 0..6, parameter group from bit 8.
pub(crate) fn group_info(tensors: &[TensorInfo], segments: &[Segment]) -> Vec<u8> {
    let mut info = Vec::with_capacity(segments.iter().map(|s| s.groups).sum::<usize>() * 4);
    for (t, s) in tensors.iter().zip(segments) {
        for g in 0..s.groups {
            let len = (s.len - g * GROUP_SIZE).min(GROUP_SIZE) as u32;
            let word = len | ((t.param_group as u32) << 8);
            info.extend_from_slice(&word.to_le_bytes());
        }
    }
    info
}

/// The bytes of a part's flat buffer: every tensor's values, each segment padded with
/// `pad` bytes.
pub(crate) fn part_buffer(
    plan: &Plan,
    resident_index: usize,
    tensors: &[&HostTensor],
    segments: &[Segment],
    pad: u8,
) -> Vec<u8> {
    let (_, part) = plan
        .resident_parts()
        .nth(resident_index)
        .expect("a resident part");
    let size = part.storage.size_bytes();
    let mut out = Vec::with_capacity(
        segments
            .iter()
            .map(|s| s.padded(part.extent))
            .sum::<usize>()
            * size,
    );
    for (t, s) in tensors.iter().zip(segments) {
        let start = out.len();
        raw::extend_part(&mut out, t.parts[resident_index].view());
        out.resize(start + s.padded(part.extent) * size, pad);
    }
    out
}

/// Every tensor read back from the buffers' bytes (`bytes[i]` for kernel buffer `i`;
/// only the resident parts' are read).
pub(crate) fn download(
    plan: &Plan,
    layout: &[Buffer],
    bytes: &[Vec<u8>],
    segments: &[Segment],
) -> Vec<HostTensor> {
    segments
        .iter()
        .map(|s| {
            let tensor = raw::assemble(plan, s.len, |id, part, count| {
                let slot = bindings::slot(layout, Role::Part(id.index()));
                let size = part.storage.size_bytes();
                let start = s.start(part.extent) * size;
                Ok::<_, std::convert::Infallible>(&bytes[slot][start..start + count * size])
            });
            let Ok(tensor) = tensor;
            tensor
        })
        .collect()
}
