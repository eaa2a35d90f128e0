//! The passes between a validated [`Rule`](crate::Rule) and a [`Plan`](crate::Plan),
//! each a pure function with its own tests:
//!
//! 1. [`fold`]: evaluate constant subexpressions, drop exact identities.
//! 2. [`hoist`]: move step-invariant scalars (hyper-parameters, `t`, constants) to a
//!    host program evaluated once per step.
//! 3. [`lower`]: lay out the stored parts for a concrete parameter/gradient format
//!    and lower the codecs and the rule into program instructions.
//! 4. [`optimize`]: exact, cheaper forms of the lowered programs, for every back end
//!    at once: [`code_tables`] (8-bit code decodes become lookups), then
//!    [`reciprocals`] (divisions by constants become a multiply and a correction,
//!    where checked exact), then [`ranges::decided`] (comparisons and choices the
//!    value ranges fix), then each computation once (`Program::deduplicated`).
//! 5. [`scale_grad`]: multiply the gradient by a per-step kernel scalar (global-norm
//!    clipping; 1 without), so that the plan stays the same whether clipping is on.
//! 6. [`phases`]: a rule with per-tensor reductions becomes passes over memory,
//!    the reductions' phases, then the step.

pub mod code_tables;
pub mod fold;
pub mod hoist;
pub mod lower;
pub mod phases;
pub mod ranges;
pub mod reciprocals;
pub mod scale_grad;

pub use code_tables::code_tables;
pub use fold::fold;
pub use hoist::{Hoisted, HostProgram, HostScalar, hoist};
pub use lower::lower;
pub use reciprocals::reciprocals;
pub use scale_grad::scale_grad;

/// The exact optimizations of a lowered plan, in order.
pub fn optimize(plan: &crate::Plan) -> crate::Plan {
    let exact = reciprocals(&code_tables(plan));
    ranges::decided(&exact).with_programs(|p| p.deduplicated().without_dead_code())
}

use crate::graph::{Graph, Handle, Op};
use crate::types::Type;

/// Rebuild the part of `graph` reachable from `roots`, node by node in order;
/// `rewrite` receives each node with operands already mapped into the new graph
/// and returns its new handle. Returns the map old handle -> new handle.
pub(crate) fn rebuild<E>(
    graph: &Graph,
    roots: &[Handle],
    new: &mut Graph,
    mut rewrite: impl FnMut(&mut Graph, Handle, Op, Type) -> Result<Handle, E>,
) -> Result<Vec<Option<Handle>>, E> {
    let live = graph.reachable(roots);
    let mut map: Vec<Option<Handle>> = vec![None; graph.len()];
    for (h, node) in graph.iter() {
        if !live[h.index()] {
            continue;
        }
        let op = node
            .op
            .map_operands(|o| map[o.index()].expect("operands precede their users"));
        map[h.index()] = Some(rewrite(new, h, op, node.ty)?);
    }
    Ok(map)
}

/// The rule with only the nodes its outputs depend on.
pub(crate) fn compact(rule: &crate::validate::Rule) -> crate::validate::Rule {
    let mut graph = Graph::new();
    let map = rebuild(&rule.graph, &rule.outputs(), &mut graph, |g, _, op, ty| {
        Ok::<_, std::convert::Infallible>(g.add(op, ty))
    })
    .unwrap_or_else(|never| match never {});
    rule.with_graph(graph, |h| map[h.index()].expect("outputs are live"))
}
