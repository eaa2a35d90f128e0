//! How `world` ranks split the flat buffers: equal blocks of whole 32-element groups.

use std::ops::Range;

use flashopt_ir::interp::{HostTensor, PartData};
use flashopt_ir::{Extent, GROUP_SIZE, Plan};

use crate::core::TensorInfo;
use crate::raw;
use crate::segments::Segment;

/// Rank `r` owns groups `r * groups_per_rank .. (r + 1) * groups_per_rank` of the
/// flat buffers (tensors one after the other, each padded to whole groups). Blocks
/// are equal, as NCCL's reduce-scatter and all-gather want; the last ranks' blocks
/// end in padding (at most `world - 1` groups in all). A group, and so a group
/// scale, lies on one rank; a tensor may be cut between ranks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardLayout {
    world: usize,
    groups: usize,
    groups_per_rank: usize,
}

/// The part of one tensor a rank owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// The tensor's index (registration order).
    pub tensor: usize,
    /// The tensor's groups in the piece, counted from the tensor's start.
    pub groups: Range<usize>,
    /// The tensor's elements in the piece, counted from the tensor's start.
    pub elements: Range<usize>,
    /// Where the piece starts in the rank's block, in groups.
    pub block_group: usize,
}

impl Piece {
    /// The piece's range of a part of `extent`, counted from the tensor's start.
    pub fn range(&self, extent: Extent) -> Range<usize> {
        match extent {
            Extent::Element => self.elements.clone(),
            Extent::Group => self.groups.clone(),
            Extent::Row | Extent::Column => unreachable!("{}", crate::segments::NOT_FLAT),
        }
    }
}

impl ShardLayout {
    /// # Panics
    /// If `world` is zero.
    pub fn new(groups: usize, world: usize) -> ShardLayout {
        assert!(world > 0, "a world of at least one rank");
        ShardLayout {
            world,
            groups,
            groups_per_rank: groups.div_ceil(world).max(1),
        }
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// Real groups in the flat buffers (padding between ranks not counted).
    pub fn groups(&self) -> usize {
        self.groups
    }

    pub fn groups_per_rank(&self) -> usize {
        self.groups_per_rank
    }

    /// Per-element values in one rank's block (what a reduce-scatter hands each rank).
    pub fn block_elements(&self) -> usize {
        self.groups_per_rank * GROUP_SIZE
    }

    /// A rank's block of groups in the padded flat buffers.
    pub fn block(&self, rank: usize) -> Range<usize> {
        rank * self.groups_per_rank..(rank + 1) * self.groups_per_rank
    }

    /// The pieces of tensors inside a rank's block, in tensor order.
    pub fn pieces(&self, rank: usize, segments: &[Segment]) -> Vec<Piece> {
        let block = self.block(rank);
        segments
            .iter()
            .enumerate()
            .filter_map(|(tensor, s)| {
                let start = s.first_group.max(block.start);
                let end = (s.first_group + s.groups).min(block.end);
                (start < end).then(|| {
                    let groups = start - s.first_group..end - s.first_group;
                    Piece {
                        tensor,
                        elements: groups.start * GROUP_SIZE..(groups.end * GROUP_SIZE).min(s.len),
                        groups,
                        block_group: start - block.start,
                    }
                })
            })
            .collect()
    }
}

/// The piece of a whole tensor's storage (every resident part cut to the piece).
pub fn cut(plan: &Plan, tensor: &HostTensor, piece: &Piece) -> HostTensor {
    let parts = plan
        .resident_parts()
        .zip(&tensor.parts)
        .map(|((_, p), data)| slice(data, piece.range(p.extent)))
        .collect();
    HostTensor::from_parts(piece.elements.len(), parts)
}

/// Put a piece back into a whole tensor's storage.
pub fn paste(plan: &Plan, tensor: &mut HostTensor, piece: &Piece, data: &HostTensor) {
    for (((_, p), whole), part) in plan
        .resident_parts()
        .zip(&mut tensor.parts)
        .zip(&data.parts)
    {
        overwrite(whole, piece.range(p.extent).start, part);
    }
}

/// Values `range` of a part.
pub fn slice(data: &PartData, range: Range<usize>) -> PartData {
    let size = data.storage().size_bytes();
    let bytes = raw::part_bytes(data);
    raw::part_data(data.storage(), &bytes[range.start * size..range.end * size])
}

/// Overwrite a part's values from index `at` with `src`'s.
pub fn overwrite(dst: &mut PartData, at: usize, src: &PartData) {
    let size = dst.storage().size_bytes();
    let mut bytes = raw::part_bytes(dst);
    let src = raw::part_bytes(src);
    bytes[at * size..at * size + src.len()].copy_from_slice(&src);
    *dst = raw::part_data(dst.storage(), &bytes);
}

/// Whole tensors (what one unsharded optimizer holds) from the pieces of every rank
/// (each rank's `download_shard`, chained), which cover every element once.
pub fn assemble<'a>(
    plan: &Plan,
    tensors: &[TensorInfo],
    pieces: impl IntoIterator<Item = (&'a Piece, &'a HostTensor)>,
) -> Vec<HostTensor> {
    let mut whole: Vec<HostTensor> = tensors
        .iter()
        .map(|t| HostTensor::zeros(plan, t.len))
        .collect();
    for (piece, data) in pieces {
        paste(plan, &mut whole[piece.tensor], piece, data);
    }
    whole
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::TensorInfo;
    use crate::segments::segments;

    fn tensors(lens: &[usize]) -> Vec<TensorInfo> {
        lens.iter()
            .enumerate()
            .map(|(i, &len)| TensorInfo::new(format!("t{i}"), 0, len))
            .collect()
    }

    #[test]
    fn every_element_lies_on_exactly_one_rank() {
        for lens in [&[1usize][..], &[33, 1, 64, 95], &[7; 11], &[1000, 3]] {
            let (segs, groups) = segments(&tensors(lens));
            for world in [1, 2, 3, 8] {
                let layout = ShardLayout::new(groups, world);
                let mut seen: Vec<Vec<u32>> = lens.iter().map(|&n| vec![0; n]).collect();
                for rank in 0..world {
                    let mut next_block_group = 0;
                    for p in layout.pieces(rank, &segs) {
                        assert!(p.block_group >= next_block_group, "pieces in block order");
                        next_block_group = p.block_group + p.groups.len();
                        assert!(next_block_group <= layout.groups_per_rank());
                        assert_eq!(p.elements.start, p.groups.start * GROUP_SIZE);
                        for e in p.elements.clone() {
                            seen[p.tensor][e] += 1;
                        }
                    }
                }
                assert!(
                    seen.iter().flatten().all(|&n| n == 1),
                    "{lens:?} on {world}"
                );
                assert!(layout.groups_per_rank() * world - groups < world);
            }
        }
    }

    #[test]
    fn a_tensor_is_cut_at_a_group_boundary_between_ranks() {
        let (segs, groups) = segments(&tensors(&[100, 40]));
        assert_eq!(groups, 6);
        let layout = ShardLayout::new(groups, 4);
        assert_eq!(layout.groups_per_rank(), 2);
        let p = layout.pieces(1, &segs);
        assert_eq!(
            p,
            [Piece {
                tensor: 0,
                groups: 2..4,
                elements: 64..100,
                block_group: 0
            }]
        );
        assert_eq!(layout.pieces(2, &segs)[0].elements, 0..40);
        assert!(
            layout.pieces(3, &segs).is_empty(),
            "the last block is padding"
        );
    }
}
