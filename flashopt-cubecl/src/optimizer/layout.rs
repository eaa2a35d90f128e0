//! Where tensors live in the flat device buffers, and the bytes that go in and out.
//!
//! Every kernel buffer of a plan part is one flat device buffer; each tensor occupies a
//! segment padded to whole 32-element groups, so groups never straddle tensors and a
//! per-group part lines up with the per-element ones. A u32 per group gives the kernel
//! the group's real length (padding never enters a group maximum) and its parameter
//! group.

use flashopt_ir::interp::{HostTensor, PartData, PartRef};
use flashopt_ir::{Extent, GROUP_SIZE, Plan, Storage};
use flashopt_runtime::core::TensorInfo;
use flashopt_runtime::raw;

use crate::codegen::bindings::{self, Binding, Buffer};

pub(crate) use flashopt_runtime::segments::{Segment, segments, total_columns, total_rows};

/// A group's info word: its element count in bits 0..6, its parameter group from
/// bit 8 (what `crate::codegen::ops::group_len` and `scalar_base` read).
pub(crate) fn info_word(len: usize, param_group: usize) -> u32 {
    len as u32 | ((param_group as u32) << 8)
}

/// The group info words of every tensor's groups (see [`info_word`]): each names its
/// parameter group's row of scalars, or with `rows_per_tensor` its tensor's.
pub(crate) fn group_info(
    tensors: &[TensorInfo],
    segments: &[Segment],
    rows_per_tensor: bool,
) -> Vec<u8> {
    let mut info = Vec::with_capacity(segments.iter().map(|s| s.groups).sum::<usize>() * 4);
    for (index, (t, s)) in tensors.iter().zip(segments).enumerate() {
        let row = if rows_per_tensor {
            index
        } else {
            t.param_group
        };
        for g in 0..s.groups {
            let len = (s.len - g * GROUP_SIZE).min(GROUP_SIZE);
            info.extend_from_slice(&info_word(len, row).to_le_bytes());
        }
    }
    info
}

/// A part's flat buffer, written piece by piece where it is needed (straight into
/// the pinned chunks of a transfer, by several threads): every tensor's values in its
/// segment, each segment padded with `pad` bytes.
pub(crate) struct FlatPart<'a> {
    /// Each tensor's bytes and where its segment starts and ends, in bytes.
    segments: Vec<(std::borrow::Cow<'a, [u8]>, usize, usize)>,
    pad: u8,
}

impl<'a> FlatPart<'a> {
    pub fn new(
        values: impl IntoIterator<Item = PartRef<'a>>,
        segments: &[Segment],
        extent: Extent,
        size: usize,
        pad: u8,
    ) -> FlatPart<'a> {
        let segments = values
            .into_iter()
            .zip(segments)
            .map(|(v, s)| {
                let start = s.start(extent) * size;
                (
                    raw::part_le_bytes(v),
                    start,
                    start + s.padded(extent) * size,
                )
            })
            .collect();
        FlatPart { segments, pad }
    }

    /// The part of resident index `resident_index` of `tensors`.
    pub fn of_tensors(
        plan: &Plan,
        resident_index: usize,
        tensors: &'a [&'a HostTensor],
        segments: &[Segment],
        pad: u8,
    ) -> FlatPart<'a> {
        let (_, part) = plan
            .resident_parts()
            .nth(resident_index)
            .expect("a resident part");
        let values = tensors.iter().map(|t| t.parts[resident_index].view());
        FlatPart::new(
            values,
            segments,
            part.extent,
            part.storage.size_bytes(),
            pad,
        )
    }

    pub fn len(&self) -> usize {
        self.segments.last().map_or(0, |s| s.2)
    }

    /// Bytes `offset..offset + out.len()` of the buffer.
    pub fn write(&self, offset: usize, out: &mut [u8]) {
        let mut at = offset;
        let mut i = self.segments.partition_point(|s| s.2 <= offset);
        let mut rest = out;
        while !rest.is_empty() {
            let (values, start, end) = &self.segments[i];
            let n = if at < *start {
                // A gap before the segment: a sharded layout that keeps tensors whole
                // moves one to the start of the next rank's block.
                let n = (start - at).min(rest.len());
                rest[..n].fill(self.pad);
                n
            } else if at - start < values.len() {
                let local = at - start;
                let n = (values.len() - local).min(rest.len());
                rest[..n].copy_from_slice(&values[local..local + n]);
                n
            } else {
                let n = (end - at).min(rest.len());
                rest[..n].fill(self.pad);
                n
            };
            rest = &mut rest[n..];
            at += n;
            if at == *end {
                i += 1;
            }
        }
    }
}

/// Each tensor's values of a flat per-element buffer of `storage`, without the
/// padding: `read(targets)` fills each target slice with the buffer's bytes from
/// the target's byte offset (see `transfer::download_into`).
pub(crate) fn per_tensor(
    storage: Storage,
    segments: &[Segment],
    read: impl FnOnce(Vec<(usize, &mut [u8])>),
) -> Vec<PartData> {
    let size = storage.size_bytes();
    let mut parts: Vec<PartData> = segments
        .iter()
        .map(|s| raw::zeroed_part(storage, s.len))
        .collect();
    read(
        parts
            .iter_mut()
            .zip(segments)
            .map(|(p, s)| (s.elements().start * size, raw::part_bytes_mut(p)))
            .collect(),
    );
    parts.iter_mut().for_each(raw::le_to_native);
    parts
}

/// Every tensor's state, its resident parts read from the kernel buffers:
/// `read(slot, targets)` fills each target slice with the bytes of kernel buffer
/// `slot` from the target's byte offset.
pub(crate) fn download(
    plan: &Plan,
    layout: &[Buffer],
    segments: &[Segment],
    mut read: impl FnMut(usize, Vec<(usize, &mut [u8])>),
) -> Vec<HostTensor> {
    let mut tensors: Vec<Vec<PartData>> = segments
        .iter()
        .map(|s| {
            plan.resident_parts()
                .map(|(_, p)| raw::zeroed_part(p.storage, p.count(s.shape())))
                .collect()
        })
        .collect();
    for (k, (id, part)) in plan.resident_parts().enumerate() {
        let size = part.storage.size_bytes();
        let targets = tensors
            .iter_mut()
            .zip(segments)
            .map(|(parts, s)| {
                (
                    s.start(part.extent) * size,
                    raw::part_bytes_mut(&mut parts[k]),
                )
            })
            .collect();
        read(bindings::slot(layout, Binding::Part(id.index())), targets);
    }
    tensors
        .into_iter()
        .zip(segments)
        .map(|(mut parts, s)| {
            parts.iter_mut().for_each(raw::le_to_native);
            HostTensor::from_parts(s.shape(), parts)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every resident part, per element, per row and per column, goes into the flat
    /// buffers and comes back whole: a matrix's per-row part holds one value per row,
    /// its per-column part one per column (each tensor's padded to 32 in the buffer).
    #[test]
    fn per_row_and_column_parts_upload_and_download_whole() {
        use flashopt_ir::StateKind;
        use flashopt_ir::def::{OptimizerDef, Range, call, name};
        use flashopt_ir::layout::Shape;
        let mut def = OptimizerDef::new("row_scaled");
        def.hyper("lr", 0.1, Range::at_least(0.0));
        def.state("v", StateKind::NonNegative).per(Extent::Row);
        def.state("c", StateKind::NonNegative).per(Extent::Column);
        def.assign("v", call("row_mean", vec![name("g") * name("g")]));
        def.assign("c", call("col_mean", vec![name("g") * name("g")]));
        def.assign(
            "p",
            name("p") - name("lr") * name("g") / (name("v") + name("c") + 1.0),
        );
        let plan = flashopt_ir::compile(&def, flashopt_ir::PlanConfig::f32_params()).unwrap();
        let shapes = [
            Shape::matrix(3, 64),
            Shape::vector(33),
            Shape::matrix(5, 32),
        ];
        let infos: Vec<TensorInfo> = shapes.iter().map(|&s| TensorInfo::new("", 0, s)).collect();
        let (segments, _) = super::segments(&infos);
        let tensors: Vec<HostTensor> = shapes
            .iter()
            .enumerate()
            .map(|(t, &shape)| {
                let mut host = HostTensor::zeros(&plan, shape);
                for (k, part) in host.parts.iter_mut().enumerate() {
                    let values: Vec<f32> = (0..part.len())
                        .map(|i| (t * 1000 + k * 100 + i) as f32)
                        .collect();
                    *part = PartData::F32(values);
                }
                host
            })
            .collect();
        let refs: Vec<&HostTensor> = tensors.iter().collect();
        let layout = bindings::buffers(&plan, Default::default());
        // The flat buffers as `upload` writes them, by binding.
        let flat: Vec<Vec<u8>> = layout
            .iter()
            .map(|b| match b.role {
                Binding::Part(i) => match plan.resident_parts().position(|(id, _)| id.index() == i)
                {
                    Some(k) => {
                        let part = FlatPart::of_tensors(&plan, k, &refs, &segments, 0xFF);
                        let mut bytes = vec![0u8; part.len()];
                        part.write(0, &mut bytes);
                        bytes
                    }
                    None => Vec::new(),
                },
                _ => Vec::new(),
            })
            .collect();
        let back = download(&plan, &layout, &segments, |slot, targets| {
            for (offset, target) in targets {
                let len = target.len();
                target.copy_from_slice(&flat[slot][offset..offset + len]);
            }
        });
        for (got, want) in back.iter().zip(&tensors) {
            assert_eq!(got.shape(), want.shape());
            assert_eq!(got.parts.len(), want.parts.len());
            for (a, b) in got.parts.iter().zip(&want.parts) {
                assert_eq!(raw::part_bytes(a), raw::part_bytes(b));
            }
        }
        let rows = plan.parts.iter().find(|p| p.extent == Extent::Row).unwrap();
        assert_eq!(rows.count(shapes[0]), 3);
        let columns = plan
            .parts
            .iter()
            .find(|p| p.extent == Extent::Column)
            .unwrap();
        assert_eq!(columns.count(shapes[1]), 33);
        let flat_columns = layout.iter().position(
            |b| matches!(b.role, Binding::Part(i) if plan.parts[i].extent == Extent::Column),
        );
        assert_eq!(
            flat[flat_columns.unwrap()].len(),
            (64 + 64 + 32) * 4,
            "each tensor's columns padded to 32"
        );
        assert_eq!(super::total_columns(&segments), 64 + 64 + 32);
    }

    #[test]
    fn a_flat_part_writes_any_piece_as_the_whole_buffer_holds_it() {
        let lens = [1usize, 0, 33, 64, 5];
        let infos: Vec<TensorInfo> = lens
            .iter()
            .map(|&len| TensorInfo::new("", 0, len))
            .collect();
        let (segments, groups) = super::segments(&infos);
        let values: Vec<Vec<i16>> = lens
            .iter()
            .enumerate()
            .map(|(t, &n)| (0..n).map(|i| (t * 1000 + i) as i16).collect())
            .collect();
        let flat = FlatPart::new(
            values.iter().map(|v| PartRef::I16(v)),
            &segments,
            Extent::Element,
            2,
            0xAB,
        );
        // The whole buffer, built as the one-piece layout did.
        let mut whole = Vec::new();
        for (v, s) in values.iter().zip(&segments) {
            let start = whole.len();
            raw::extend_part(&mut whole, PartRef::I16(v));
            whole.resize(start + s.groups * GROUP_SIZE * 2, 0xAB);
        }
        assert_eq!(flat.len(), groups * GROUP_SIZE * 2);
        assert_eq!(flat.len(), whole.len());
        for (offset, len) in [
            (0, whole.len()),
            (1, 7),
            (63, 2),
            (64, 70),
            (130, 200),
            (300, 84),
        ] {
            let mut out = vec![0u8; len];
            flat.write(offset, &mut out);
            assert_eq!(out, whole[offset..offset + len], "{offset}+{len}");
        }
    }

    /// A layout with gaps (a sharded one that keeps tensors whole): the gaps read as
    /// padding, each tensor's bytes at its segment, from any offset and chunk size.
    #[test]
    fn a_flat_part_with_gaps_between_segments_pads_them() {
        use flashopt_runtime::shard::layout::place;
        let infos: Vec<TensorInfo> = [96, 64, 96]
            .iter()
            .map(|&n| TensorInfo::new("", 0, n))
            .collect();
        // Blocks of 3 groups: tensor 2 (3 groups) starts the third block.
        let (segments, layout) = place(&infos, 3, true);
        assert!(segments[1].first_group + segments[1].groups < segments[2].first_group);
        let values: Vec<Vec<u8>> = [96usize, 64, 96]
            .iter()
            .enumerate()
            .map(|(t, &n)| (0..n).map(|i| (t * 100 + i % 97) as u8).collect())
            .collect();
        let parts: Vec<PartData> = values.iter().map(|v| PartData::U8(v.clone())).collect();
        let flat = FlatPart::new(
            parts.iter().map(|p| p.view()),
            &segments,
            Extent::Element,
            1,
            0xEE,
        );
        let total = layout.world() * layout.block_elements();
        let mut expected = vec![0xEEu8; flat.len()];
        for (s, v) in segments.iter().zip(&values) {
            expected[s.elements()].copy_from_slice(v);
        }
        assert!(flat.len() <= total);
        for chunk in [1, 7, 32, 1000] {
            let mut got = vec![0u8; flat.len()];
            for (k, out) in got.chunks_mut(chunk).enumerate() {
                flat.write(k * chunk, out);
            }
            assert_eq!(got, expected, "chunks of {chunk}");
        }
    }
}
