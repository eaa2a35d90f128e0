//! Which elements share a value. A rule's values vary from element to element
//! (`p`, `g`, a per-element state), from row to row (a per-row state, `row_mean(..)`),
//! from column to column, or not at all within a tensor (hyper-parameters, `t`,
//! `tensor_norm(..)`). Validation uses it to check that a per-row state is assigned a
//! value that is the same along its row, and that a row reduction reduces something
//! that changes along the row.

use crate::graph::{Graph, Handle, Input, Op, Scope};
use crate::layout::Extent;

/// Whether a value changes between rows and between columns of a tensor (a tensor
/// being the row-major matrix of [`crate::layout::Shape`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Varies {
    pub across_rows: bool,
    pub across_cols: bool,
}

impl Varies {
    pub const NOT: Varies = Varies {
        across_rows: false,
        across_cols: false,
    };
    pub const ELEMENT: Varies = Varies {
        across_rows: true,
        across_cols: true,
    };

    /// What a value with one value per `extent` varies along.
    pub fn of_extent(extent: Extent) -> Varies {
        match extent {
            Extent::Element | Extent::Group => Varies::ELEMENT,
            Extent::Row => Varies {
                across_rows: true,
                across_cols: false,
            },
            Extent::Column => Varies {
                across_rows: false,
                across_cols: true,
            },
        }
    }

    /// What the value of a reduction over `scope` varies along.
    pub fn of_scope(scope: Scope) -> Varies {
        scope.extent().map_or(Varies::NOT, Varies::of_extent)
    }

    fn join(self, other: Varies) -> Varies {
        Varies {
            across_rows: self.across_rows || other.across_rows,
            across_cols: self.across_cols || other.across_cols,
        }
    }

    /// Whether a value that varies like this may be stored in a part of `extent`
    /// (one value per row must not change along the row).
    pub fn fits(self, extent: Extent) -> bool {
        let room = Varies::of_extent(extent);
        (!self.across_rows || room.across_rows) && (!self.across_cols || room.across_cols)
    }

    /// Whether a reduction over `scope` of a value that varies like this reduces
    /// anything: a row reduction needs a value that changes along the row.
    pub fn reducible_over(self, scope: Scope) -> bool {
        match scope {
            Scope::Tensor => self.across_rows || self.across_cols,
            Scope::Row => self.across_cols,
            Scope::Column => self.across_rows,
        }
    }

    /// The phrase for an error message.
    pub fn describe(self) -> &'static str {
        match (self.across_rows, self.across_cols) {
            (true, true) => "varies from element to element",
            (true, false) => "is the same along each row",
            (false, true) => "is the same down each column",
            (false, false) => "is the same for every element of the tensor",
        }
    }
}

/// What `h` varies along, given each state's extent by declaration index.
pub fn varies(graph: &Graph, state_extents: &[Extent], h: Handle) -> Varies {
    let mut of = vec![Varies::NOT; h.index() + 1];
    for (n, node) in graph.iter().take(h.index() + 1) {
        of[n.index()] = match node.op {
            Op::Input(Input::Param | Input::Grad) | Op::Matrix(..) => Varies::ELEMENT,
            Op::Input(Input::State(i)) => Varies::of_extent(state_extents[i]),
            Op::Input(_) | Op::Const(_) => Varies::NOT,
            Op::Reduce(r, _) => Varies::of_scope(r.scope),
            op => op
                .operands()
                .into_iter()
                .fold(Varies::NOT, |v, a| v.join(of[a.index()])),
        };
    }
    of[h.index()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Func2, Reducer, Reduction};
    use crate::types::Type;

    #[test]
    fn values_vary_along_what_they_read() {
        let mut g = Graph::new();
        let grad = g.add(Op::Input(Input::Grad), Type::F32);
        let lr = g.add(Op::Input(Input::Hyper(0)), Type::F32);
        let r = g.add(Op::Input(Input::State(0)), Type::F32);
        let c = g.add(Op::Input(Input::State(1)), Type::F32);
        let sq = g.add(Op::Binary(Func2::Mul, grad, grad), Type::F32);
        let row_mean = Reducer::new(Reduction::Mean, Scope::Row);
        let means = g.add(Op::Reduce(row_mean, sq), Type::F32);
        let new_r = g.add(Op::Binary(Func2::Add, r, means), Type::F32);
        let rc = g.add(Op::Binary(Func2::Mul, new_r, c), Type::F32);
        let scaled = g.add(Op::Binary(Func2::Mul, lr, grad), Type::F32);
        let extents = [Extent::Row, Extent::Column];
        let v = |h| varies(&g, &extents, h);
        assert_eq!(v(lr), Varies::NOT);
        assert_eq!(v(new_r), Varies::of_extent(Extent::Row));
        assert!(v(new_r).fits(Extent::Row) && !v(new_r).fits(Extent::Column));
        assert_eq!(v(rc), Varies::ELEMENT);
        assert_eq!(v(scaled), Varies::ELEMENT);
        assert!(v(sq).reducible_over(Scope::Row));
        assert!(!v(new_r).reducible_over(Scope::Row) && v(new_r).reducible_over(Scope::Column));
        assert!(!v(lr).reducible_over(Scope::Tensor) && v(new_r).reducible_over(Scope::Tensor));
    }
}
