//! How `world` ranks split the flat buffers: equal blocks of whole 32-element groups;
//! for a plan with a matrix function, blocks that hold every tensor whole ([`place`]).

use std::ops::Range;

use flashopt_ir::interp::{HostTensor, PartData};
use flashopt_ir::layout::Shape;
use flashopt_ir::{Extent, GROUP_SIZE, Plan};

use crate::core::TensorInfo;
use crate::raw;
use crate::segments::{Segment, segments};

/// Rank `r` owns groups `r * groups_per_rank .. (r + 1) * groups_per_rank` of the
/// flat buffers (tensors one after the other, each padded to whole groups). Blocks
/// are equal, as NCCL's reduce-scatter and all-gather want. A group, and so a group
/// scale, lies on one rank. From [`ShardLayout::new`]: a tensor may be cut between
/// ranks, and the last ranks' blocks end in padding (at most `world - 1` groups in
/// all). From [`place`] with whole tensors: none is cut, and any block may end in
/// padding ([`ShardLayout::padding`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardLayout {
    world: usize,
    groups: usize,
    groups_per_rank: usize,
    whole_tensors: bool,
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
    /// The shape its storage has: the tensor's where the layout keeps tensors whole
    /// (the step sees the matrix, a checkpoint stores its rows), else a vector.
    pub shape: Shape,
}

impl Piece {
    /// The piece's name where it stands alone (a shard file, a rank's optimizer):
    /// its tensor's and where it starts in it.
    pub fn name(&self, tensor: &str) -> String {
        format!("{tensor}@{}", self.elements.start)
    }

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
            whole_tensors: false,
        }
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// Groups in the flat buffers up to the last tensor's end (the padding after the
    /// last tensor not counted).
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

    /// Groups in every rank's blocks together that hold no tensor's group, out of
    /// `world * groups_per_rank`: what equal blocks cost in memory per rank and in
    /// the collectives' traffic, over `real` groups of tensors.
    pub fn padding(&self, real: usize) -> usize {
        self.world * self.groups_per_rank - real
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
                    let elements = groups.start * GROUP_SIZE..(groups.end * GROUP_SIZE).min(s.len);
                    Piece {
                        tensor,
                        shape: match self.whole_tensors {
                            true => s.shape(),
                            false => Shape::vector(elements.len()),
                        },
                        elements,
                        groups,
                        block_group: start - block.start,
                    }
                })
            })
            .collect()
    }
}

/// Where each tensor lies in the flat buffers and how the ranks split them. Without
/// `whole_tensors`, tensors one after the other and [`ShardLayout::new`]'s blocks
/// (a tensor may be cut between ranks). With it (a plan with a matrix function: each
/// tensor's matrix is computed on one rank), no tensor is cut: a tensor that would
/// cross into the next block starts there instead, after padding groups, and the
/// blocks are the smallest size (found by bisection, each size placed greedily in
/// order) that holds every tensor so in `world` blocks. The blocks are at least the
/// largest tensor; [`ShardLayout::padding`] says what that costs.
pub fn place(
    tensors: &[TensorInfo],
    world: usize,
    whole_tensors: bool,
) -> (Vec<Segment>, ShardLayout) {
    let (mut segs, groups) = segments(tensors);
    if !whole_tensors {
        return (segs, ShardLayout::new(groups, world));
    }
    assert!(world > 0, "a world of at least one rank");
    let largest = segs.iter().map(|s| s.groups).max().unwrap_or(0);
    let (mut low, mut high) = (groups.div_ceil(world).max(largest).max(1), groups.max(1));
    while low < high {
        let mid = (low + high) / 2;
        match placed_end(&segs, mid) <= world * mid {
            true => high = mid,
            false => low = mid + 1,
        }
    }
    let per_rank = high;
    let mut cursor = 0;
    for s in &mut segs {
        cursor = next_start(cursor, s.groups, per_rank);
        s.first_group = cursor;
        cursor += s.groups;
    }
    let layout = ShardLayout {
        world,
        groups: cursor,
        groups_per_rank: per_rank,
        whole_tensors: true,
    };
    (segs, layout)
}

/// Where a tensor of `groups` groups starts at `cursor` or later so that it does not
/// cross from one block of `per_rank` groups into the next.
fn next_start(cursor: usize, groups: usize, per_rank: usize) -> usize {
    match cursor % per_rank + groups > per_rank {
        true => cursor.next_multiple_of(per_rank),
        false => cursor,
    }
}

/// The end of the last tensor placed whole in blocks of `per_rank` groups.
fn placed_end(segs: &[Segment], per_rank: usize) -> usize {
    segs.iter().fold(0, |cursor, s| {
        next_start(cursor, s.groups, per_rank) + s.groups
    })
}

/// The piece of a whole tensor's storage (every resident part cut to the piece).
pub fn cut(plan: &Plan, tensor: &HostTensor, piece: &Piece) -> HostTensor {
    let parts = plan
        .resident_parts()
        .zip(&tensor.parts)
        .map(|((_, p), data)| slice(data, piece.range(p.extent)))
        .collect();
    HostTensor::from_parts(piece.shape, parts)
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
        .map(|t| HostTensor::zeros(plan, t.shape()))
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
                block_group: 0,
                shape: Shape::vector(36),
            }]
        );
        assert_eq!(layout.pieces(2, &segs)[0].elements, 0..40);
        assert!(
            layout.pieces(3, &segs).is_empty(),
            "the last block is padding"
        );
    }

    #[test]
    fn whole_tensors_are_never_cut_and_blocks_are_as_small_as_the_placement_allows() {
        let cases: [&[usize]; 5] = [&[1], &[33, 1, 64, 95], &[7; 11], &[1000, 3], &[96, 96, 96]];
        for lens in cases {
            let infos = tensors(lens);
            let (_, groups) = segments(&infos);
            for world in [1, 2, 3, 8] {
                let (segs, layout) = place(&infos, world, true);
                let per = layout.groups_per_rank();
                let largest = segs.iter().map(|s| s.groups).max().unwrap();
                assert!(per >= largest && per * world >= groups);
                let mut end = 0;
                for s in &segs {
                    assert!(s.first_group >= end, "{lens:?} on {world}: in order, apart");
                    end = s.first_group + s.groups;
                    assert_eq!(
                        s.first_group / per,
                        (end - 1) / per,
                        "{lens:?} on {world}: a tensor inside one block"
                    );
                }
                assert!(end <= per * world);
                // One group less per block does not place every tensor whole.
                if per > groups.div_ceil(world).max(largest) {
                    assert!(placed_end(&segs, per - 1) > (per - 1) * world);
                }
                for rank in 0..world {
                    for p in layout.pieces(rank, &segs) {
                        assert_eq!(p.elements, 0..lens[p.tensor], "whole pieces");
                    }
                }
            }
        }
    }

    #[test]
    fn three_tensors_of_three_groups_on_two_ranks_take_blocks_of_six() {
        let infos = tensors(&[96, 96, 96]);
        let (segs, layout) = place(&infos, 2, true);
        assert_eq!(layout.groups_per_rank(), 6);
        let starts: Vec<usize> = segs.iter().map(|s| s.first_group).collect();
        assert_eq!(starts, [0, 3, 6]);
        assert_eq!(layout.padding(9), 3);
        let (cut, _) = place(&infos, 2, false);
        assert_eq!(
            cut,
            segments(&infos).0,
            "without whole tensors: one after the other"
        );
    }

    /// What keeping matrices whole costs on two real models' hidden matrices (the
    /// tensors Muon takes): each rank's block over the even share, which is both the
    /// state each rank holds and the collectives' traffic, over the even split's.
    /// Prints a table (`--nocapture`); asserts a block is at most twice the even share
    /// plus the largest matrix (next-fit placement's bound).
    #[test]
    fn whole_matrix_blocks_of_gpt2_and_llama_8b() {
        let gpt2: Vec<usize> = (0..12)
            .flat_map(|_| [768 * 2304, 768 * 768, 768 * 3072, 3072 * 768])
            .collect();
        let llama: Vec<usize> = (0..32)
            .flat_map(|_| {
                let (d, kv, ff) = (4096, 1024, 14336);
                [d * d, kv * d, kv * d, d * d, ff * d, ff * d, d * ff]
            })
            .collect();
        println!("| model | ranks | largest matrix | even share | block | block / even share |");
        println!("| --- | --- | --- | --- | --- | --- |");
        for (name, lens) in [("GPT-2 124M", gpt2), ("Llama-3.1-8B", llama)] {
            let infos = tensors(&lens);
            let (_, groups) = segments(&infos);
            let largest = lens.iter().max().unwrap();
            for world in [2, 8, 32, 64, 256] {
                let (_, layout) = place(&infos, world, true);
                let even = groups.div_ceil(world) * GROUP_SIZE;
                let block = layout.block_elements();
                let ratio = block as f64 / even as f64;
                println!("| {name} | {world} | {largest} | {even} | {block} | {ratio:.3} |");
                assert!(block <= 2 * even + largest, "{name} on {world}: {ratio}");
            }
        }
    }
}
