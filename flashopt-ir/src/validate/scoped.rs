//! The checks that concern scopes: what a value varies along (elements, rows,
//! columns, nothing), reductions over a scope, and states per row or per column.

use super::{Typed, Validator};
use crate::def::{Expr, Span, StateDef};
use crate::graph::{Handle, Input, MatrixFn, Op, Reducer, Scope};
use crate::layout::Extent;
use crate::scopes::{self, Varies};
use crate::types::{Codec, Type};

impl Validator<'_> {
    /// What a value varies along: elements, rows, columns or nothing.
    pub(super) fn varies(&self, h: Handle) -> Varies {
        let extents: Vec<Extent> = self.def.states.iter().map(|s| s.extent).collect();
        scopes::varies(&self.graph, &extents, h)
    }

    /// Whether a value depends on hyper-parameters, `t` and constants alone.
    pub(super) fn is_uniform(&self, h: Handle) -> bool {
        let live = self.graph.reachable(&[h]);
        self.graph.iter().all(|(n, node)| {
            !live[n.index()]
                || !matches!(
                    node.op,
                    Op::Input(Input::Param | Input::Grad | Input::State(_) | Input::Dim(_))
                        | Op::Reduce(..)
                        | Op::Matrix(..)
                )
        })
    }

    /// A state's codec: its declared one or its kind's default per element; f32 for a
    /// state per row or per column, which takes no other.
    pub(super) fn state_codec(&mut self, s: &StateDef) -> Codec {
        let codec = match (s.extent, s.codec) {
            (Extent::Element, codec) => codec.unwrap_or_else(|| s.kind.default_codec()),
            (_, None | Some(Codec::F32)) => Codec::F32,
            (extent, Some(other)) => {
                self.error(
                    s.span,
                    format!(
                        "state `{}` holds one value {}, stored in f32: it takes no codec ({other})",
                        s.name,
                        extent.name()
                    ),
                );
                Codec::F32
            }
        };
        if s.extent == Extent::Group {
            self.error(
                s.span,
                format!(
                    "state `{}`: a state holds one value per element, per row or per column",
                    s.name
                ),
            );
        }
        codec
    }

    /// Whether state `i` may hold `h`: a state per row takes a value the same along
    /// its row (per column, down its column).
    pub(super) fn fits_state(&mut self, i: usize, h: Handle, span: Span) -> bool {
        let state = &self.def.states[i];
        let varies = self.varies(h);
        if !varies.fits(state.extent) {
            self.error(
                span,
                format!(
                    "state `{}` holds one value {}, but its new value {}; \
                     reduce it first (`row_mean`, `col_mean`, ...)",
                    state.name,
                    state.extent.name(),
                    varies.describe()
                ),
            );
            return false;
        }
        true
    }

    /// `tensor_sum(x)`, `row_mean(x)` and the other reductions: one f32 argument that
    /// varies over the scope.
    pub(super) fn reduction(&mut self, r: Reducer, args: &[Expr], span: Span) -> Typed {
        let name = r.name();
        if args.len() != 1 {
            self.error(
                span,
                format!("`{name}` takes 1 argument, found {}", args.len()),
            );
            return None;
        }
        let (h, t) = self.expr_as(&args[0], Type::F32)?;
        if t != Type::F32 {
            self.error(
                span,
                format!("type mismatch: `{name}` takes (f32), found ({t})"),
            );
            return None;
        }
        if self.is_uniform(h) {
            self.error(
                span,
                format!(
                    "`{name}` of a value that is the same for every element (it uses only \
                     hyper-parameters, `t` and constants): reduce a value of `p`, `g` or a state"
                ),
            );
            return None;
        }
        let varies = self.varies(h);
        if !varies.reducible_over(r.scope) {
            let along = match r.scope {
                Scope::Tensor => "anywhere in the tensor",
                Scope::Row => "along a row",
                Scope::Column => "down a column",
            };
            self.error(
                span,
                format!(
                    "`{name}` of a value that {}: it does not change {along}, so there is nothing to reduce",
                    varies.describe()
                ),
            );
            return None;
        }
        Some((self.graph.add(Op::Reduce(r, h), Type::F32), Type::F32))
    }

    /// `orthogonalize(x)`: one f32 argument that is not the same for every element
    /// of every tensor.
    pub(super) fn matrix_function(&mut self, f: MatrixFn, args: &[Expr], span: Span) -> Typed {
        let name = f.name();
        if args.len() != 1 {
            self.error(
                span,
                format!("`{name}` takes 1 argument, found {}", args.len()),
            );
            return None;
        }
        let (h, t) = self.expr_as(&args[0], Type::F32)?;
        if t != Type::F32 {
            self.error(
                span,
                format!("type mismatch: `{name}` takes (f32), found ({t})"),
            );
            return None;
        }
        if self.is_uniform(h) {
            self.error(
                span,
                format!(
                    "`{name}` of a value that is the same for every element (it uses only \
                     hyper-parameters, `t` and constants): give it a matrix of `p`, `g` or a state"
                ),
            );
            return None;
        }
        Some((self.graph.add(Op::Matrix(f, h), Type::F32), Type::F32))
    }
}
