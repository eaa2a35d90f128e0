//! Values per column on the device: where each column's band values lie, and the
//! tiles a pass that reduces over columns steps its groups in.
//!
//! A column's reduction (`reduction::reduce` over its values, top to bottom) starts
//! with groups of 32 consecutive rows: a *band*. A band of one column lies in 32
//! different groups, so a pass with column reductions runs tiled
//! (`bindings::tiled`): a cube holds whole tiles of 32 rows by 32 columns, puts their
//! terms in shared memory and writes one value per column and band into the column
//! partials, where a column's bands are consecutive. The finishing launches then
//! reduce each column's bands as they reduce a row's groups.

use flashopt_ir::GROUP_SIZE;

use crate::codegen::bindings::TILE_WORDS;
use crate::optimizer::layout::Segment;

/// Where every tensor's column partials and tiles lie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ColumnLayout {
    /// Per tensor: its first column group (its first column's first band), its bands
    /// of 32 rows, its first tile and its tiles.
    pub tensors: Vec<TensorColumns>,
    /// Every tensor's column groups: the length of the column partials (per column
    /// reduction).
    pub column_groups: usize,
    /// [`TILE_WORDS`] per tile, every tensor's tiles in order.
    pub tile_words: Vec<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TensorColumns {
    pub first_column_group: usize,
    pub bands: usize,
    pub first_tile: usize,
    pub tiles: usize,
}

impl TensorColumns {
    /// The tile slots of a tiled launch over the tensor: `(first, count)`.
    pub fn slots(&self) -> (usize, usize) {
        (self.first_tile * GROUP_SIZE, self.tiles * GROUP_SIZE)
    }
}

/// A launch's `(first, count)` slots or groups as its u32 scalars.
///
/// # Panics
/// Past 2^32 (a tiled pass takes 32 slots per tile: a vector's tiles hold one group).
pub(crate) fn launch_range((first, count): (usize, usize)) -> (u32, u32) {
    let word = |x: usize| u32::try_from(x).expect("fewer than 2^32 slots per launch");
    (word(first), word(first + count) - word(first))
}

impl ColumnLayout {
    /// The layout of tensors whose rows start groups (a row length that is a multiple
    /// of 32, or one row). A tensor's tiles go band by band, each band's blocks of 32
    /// columns left to right, so that neighbouring cubes read neighbouring memory.
    pub fn of(segments: &[Segment]) -> ColumnLayout {
        let word = |x: usize| u32::try_from(x).expect("groups and tiles fewer than 2^32");
        let (mut column_groups, mut tiles) = (0, 0);
        let mut tile_words = Vec::new();
        let tensors = segments
            .iter()
            .map(|s| {
                debug_assert!(s.rows_start_groups(), "the GPU refuses other tensors");
                let bands = s.rows.div_ceil(GROUP_SIZE);
                let per_row = s.groups_per_row();
                let blocks = if s.len == 0 { 0 } else { per_row };
                let t = TensorColumns {
                    first_column_group: column_groups,
                    bands,
                    first_tile: tiles,
                    tiles: bands * blocks,
                };
                for band in 0..bands {
                    let rows = (s.rows - band * GROUP_SIZE).min(GROUP_SIZE);
                    for block in 0..blocks {
                        let columns = (s.row_len - block * GROUP_SIZE).min(GROUP_SIZE);
                        tile_words.extend([
                            word(s.first_group + band * GROUP_SIZE * per_row + block),
                            word(per_row),
                            word(rows),
                            word(columns),
                            word(column_groups + block * GROUP_SIZE * bands + band),
                            word(bands),
                        ]);
                    }
                }
                column_groups += s.row_len * bands;
                tiles += t.tiles;
                t
            })
            .collect();
        debug_assert_eq!(tile_words.len(), tiles * TILE_WORDS);
        ColumnLayout {
            tensors,
            column_groups,
            tile_words,
        }
    }

    /// The tile slots of tensors `tensors.0..tensors.1`: `(first, count)`.
    pub fn slots_of(&self, tensors: (usize, usize)) -> (usize, usize) {
        if tensors.1 <= tensors.0 {
            return (0, 0);
        }
        let (first, _) = self.tensors[tensors.0].slots();
        let last = self.tensors[tensors.1 - 1];
        (first, (last.first_tile + last.tiles) * GROUP_SIZE - first)
    }
}

#[cfg(test)]
mod tests {
    use flashopt_ir::layout::Shape;
    use flashopt_runtime::core::TensorInfo;

    use super::*;
    use crate::optimizer::layout::segments;

    /// What a tiled launch computes, performed on the host from the table alone:
    /// each slot's group and whether it is real, each column unit's column group.
    /// Every element of every tensor is in exactly one real slot, at its row of the
    /// tile and its column of the block; each column's bands are consecutive.
    #[test]
    fn the_tiles_cover_every_element_once_and_place_each_columns_bands() {
        let shapes = [
            Shape::matrix(3, 64),
            Shape::vector(100),
            Shape::matrix(70, 96),
            Shape::vector(0),
            Shape::matrix(1, 7),
            Shape::matrix(32, 32),
        ];
        let tensors: Vec<TensorInfo> = shapes
            .iter()
            .enumerate()
            .map(|(i, &s)| TensorInfo::new(format!("t{i}"), 0, s))
            .collect();
        let (segments, groups) = segments(&tensors);
        let layout = ColumnLayout::of(&segments);
        let mut seen = vec![0u32; groups * GROUP_SIZE];
        let mut column_groups = vec![0u32; layout.column_groups];
        for (t, (s, shape)) in segments.iter().zip(&shapes).enumerate() {
            let c = layout.tensors[t];
            assert_eq!(c.bands, shape.rows().div_ceil(32));
            let (first, count) = c.slots();
            for slot in first..first + count {
                let w = &layout.tile_words[(slot / 32) * TILE_WORDS..][..TILE_WORDS];
                let row = slot % 32;
                if row >= w[2] as usize {
                    continue;
                }
                let group = w[0] as usize + row * w[1] as usize;
                assert!(group >= s.first_group && group < s.first_group + s.groups);
                for lane in 0..w[3] as usize {
                    let element = group * 32 + lane - s.first_group * 32;
                    let (r, col) = (element / shape.row_len, element % shape.row_len);
                    // The slot's row and lane are the element's row in the band and
                    // its column in the block.
                    assert_eq!(r % 32, row, "{shape:?}");
                    assert_eq!(col % 32, lane, "{shape:?}");
                    seen[group * 32 + lane] += 1;
                }
                if row == 0 {
                    for column in 0..w[3] as usize {
                        let at = w[4] as usize + column * w[5] as usize;
                        let element = group * 32 + column - s.first_group * 32;
                        let (r, col) = (element / shape.row_len, element % shape.row_len);
                        // The column's band `r / 32`, counted from its first band.
                        let expected = c.first_column_group + col * c.bands + r / 32;
                        assert_eq!(at, expected, "{shape:?}");
                        column_groups[at] += 1;
                    }
                }
            }
            for e in s.elements() {
                assert_eq!(seen[e], 1, "element {e} of {shape:?}");
            }
        }
        assert!(column_groups.iter().all(|&n| n == 1));
        assert_eq!(launch_range((64, 96)), (64, 96));
        assert_eq!(
            layout.slots_of((0, shapes.len())),
            (0, layout.tile_words.len() / 6 * 32)
        );
    }

    #[test]
    #[should_panic(expected = "fewer than 2^32 slots per launch")]
    fn a_launch_past_two_to_the_32_slots_is_refused() {
        launch_range((32, u32::MAX as usize));
    }
}
