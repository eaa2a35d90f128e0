//! What the interpreter keeps per row and per column: the values of row and column
//! reductions (their terms per element while a phase runs), and the parts of
//! per-row and per-column states. Every element of a step reads such a state's value
//! from before the step; the first element of each row (the first row, for a
//! per-column state) stores its new value, which every element of the row computes
//! alike.

use crate::graph::{MatrixFn, Reducer, Scope};
use crate::layout::{Extent, Shape};
use crate::reduction;
use crate::types::GROUP_SIZE;

/// One reduction's inputs while a phase runs.
pub(super) enum Terms {
    /// Not computed in this phase.
    None,
    /// A tensor reduction: one value per 32-element group.
    Groups(Vec<f64>),
    /// A row or column reduction: every element's term, reduced after the phase; a
    /// matrix function's argument.
    Elements(Vec<f32>),
}

impl Terms {
    pub(super) fn new(r: Reducer, shape: Shape) -> Terms {
        match r.scope {
            Scope::Tensor => Terms::Groups(vec![0.0; shape.len.div_ceil(GROUP_SIZE)]),
            Scope::Row | Scope::Column => Terms::Elements(vec![0.0; shape.len]),
        }
    }

    /// The result of matrix function `f` of these terms, the argument's every element.
    pub(super) fn apply(&self, f: MatrixFn, shape: Shape) -> Vec<f32> {
        match self {
            Terms::Elements(argument) => crate::matrix::apply(f, argument, shape),
            _ => panic!("a matrix function's argument is one term per element"),
        }
    }

    /// The values of the reduction: one for a tensor, one per row or per column, each
    /// in the order of [`reduction::reduce`] over the row's or the column's values.
    pub(super) fn finish(&self, r: Reducer, shape: Shape) -> Vec<f32> {
        match self {
            Terms::None => Vec::new(),
            Terms::Groups(groups) => vec![reduction::from_groups(r.op, groups, shape.len)],
            Terms::Elements(terms) => match r.scope {
                Scope::Row => terms
                    .chunks(shape.row_len.max(1))
                    .map(|row| reduction::reduce(r.op, row))
                    .collect(),
                _ => {
                    let (rows, cols) = (shape.rows(), shape.cols());
                    let mut column = vec![0.0f32; rows];
                    (0..cols)
                        .map(|c| {
                            for (i, x) in column.iter_mut().enumerate() {
                                *x = terms[i * cols + c];
                            }
                            reduction::reduce(r.op, &column)
                        })
                        .collect()
                }
            },
        }
    }
}

/// A block's share of one reduction's terms.
pub(super) enum TermsMut<'a> {
    None,
    Groups(&'a mut [f64]),
    Elements(&'a mut [f32]),
}

/// The index of element `i`'s value in a part or reduction of one value per row or
/// per column (or per tensor: 0).
pub(super) fn index(extent: Extent, shape: Shape, i: usize) -> usize {
    match extent {
        Extent::Row => i / shape.row_len,
        Extent::Column => i % shape.row_len,
        Extent::Element => i,
        Extent::Group => i / GROUP_SIZE,
    }
}

/// Whether element `i` stores its row's (column's) value.
pub(super) fn stores(extent: Extent, shape: Shape, i: usize) -> bool {
    match extent {
        Extent::Row => i % shape.row_len == 0,
        Extent::Column => i < shape.row_len,
        Extent::Element | Extent::Group => true,
    }
}

/// The values of a per-row or per-column part whose storing elements lie in
/// `elements`: a contiguous range of rows (columns).
pub(super) fn stored_range(
    extent: Extent,
    shape: Shape,
    elements: std::ops::Range<usize>,
) -> std::ops::Range<usize> {
    match extent {
        Extent::Row => {
            let rows = shape.rows();
            elements.start.div_ceil(shape.row_len).min(rows)
                ..elements.end.div_ceil(shape.row_len).min(rows)
        }
        _ => elements.start.min(shape.row_len)..elements.end.min(shape.row_len),
    }
}

/// One block's view of a per-row or per-column part.
pub(super) struct ScopedSlot<'a> {
    pub extent: Extent,
    /// Every value as it was before the run.
    pub old: &'a [f32],
    /// The values this block stores and the index of the first (none when
    /// read-only).
    pub new: Option<super::execute::StoredRows<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_row_and_column_is_stored_by_one_element_of_one_block() {
        let shape = Shape::matrix(5, 7);
        for extent in [Extent::Row, Extent::Column] {
            let count = extent.count(shape);
            let mut owner = vec![0usize; count];
            for block in (0..shape.len).step_by(4) {
                let elements = block..(block + 4).min(shape.len);
                let range = stored_range(extent, shape, elements.clone());
                for i in elements.filter(|&i| stores(extent, shape, i)) {
                    assert!(range.contains(&index(extent, shape, i)));
                    owner[index(extent, shape, i)] += 1;
                }
            }
            assert_eq!(owner, vec![1; count], "{extent:?}");
        }
    }

    #[test]
    fn a_row_and_a_column_reduce_in_their_own_order() {
        use crate::graph::Reduction;
        let shape = Shape::matrix(40, 3);
        let terms: Vec<f32> = (0..shape.len).map(|i| (i as f32).sin() * 1e3).collect();
        let sum = |scope| Reducer::new(Reduction::Sum, scope);
        let rows = Terms::Elements(terms.clone()).finish(sum(Scope::Row), shape);
        let cols = Terms::Elements(terms.clone()).finish(sum(Scope::Column), shape);
        assert_eq!(rows.len(), 40);
        assert_eq!(rows[2], reduction::reduce(Reduction::Sum, &terms[6..9]));
        let column1: Vec<f32> = (0..40).map(|r| terms[r * 3 + 1]).collect();
        assert_eq!(cols[1], reduction::reduce(Reduction::Sum, &column1));
    }
}
