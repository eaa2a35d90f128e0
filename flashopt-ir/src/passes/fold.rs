//! Constant folding.
//!
//! A subexpression of constants alone is uniform, so it is evaluated as the host
//! would evaluate it (f64; see [`crate::semantics`]): folding never changes a result.
//! Per-element identities are dropped only where they are exact in IEEE arithmetic
//! (`x * 1`, `1 * x`, `x / 1`, `x - 0`; not `x + 0`, which turns -0 into +0).

use crate::def::Value;
use crate::graph::{Const, Func2, Func3, Graph, Op};
use crate::semantics::{HostEvalError, binary_host, ternary_host, unary_host};
use crate::validate::Rule;

fn as_value(c: Const) -> Value {
    match c {
        Const::Float(v) => Value::Float(v),
        Const::Int(v) => Value::Int(v),
        Const::Bool(v) => Value::Bool(v),
    }
}

fn as_const(v: Value) -> Const {
    match v {
        Value::Float(v) => Const::Float(v),
        Value::Int(v) => Const::Int(v),
        Value::Bool(v) => Const::Bool(v),
    }
}

/// Fold constants in a rule.
pub fn fold(rule: &Rule) -> Result<Rule, HostEvalError> {
    let mut graph = Graph::new();
    let roots = rule.outputs();
    let map = super::rebuild(&rule.graph, &roots, &mut graph, |g, _, op, ty| {
        let constant = |h: crate::graph::Handle| match g.node(h).op {
            Op::Const(c) => Some(c),
            _ => None,
        };
        let is_float = |h, v: f64| matches!(constant(h), Some(Const::Float(x)) if x == v);
        let folded = match op {
            Op::Unary(f, a) => match constant(a) {
                Some(a) => Some(unary_host(f, as_value(a))?),
                None => None,
            },
            Op::Binary(f, a, b) => match (constant(a), constant(b)) {
                (Some(x), Some(y)) => Some(binary_host(f, as_value(x), as_value(y))?),
                _ => {
                    let identity = match f {
                        Func2::Mul if is_float(b, 1.0) => Some(a),
                        Func2::Mul if is_float(a, 1.0) => Some(b),
                        Func2::Div if is_float(b, 1.0) => Some(a),
                        Func2::Sub if matches!(constant(b), Some(Const::Float(x)) if x.to_bits() == 0) => {
                            Some(a)
                        }
                        _ => None,
                    };
                    if let Some(h) = identity {
                        return Ok(h);
                    }
                    None
                }
            },
            Op::Ternary(f, a, b, c) => match (f, constant(a), constant(b), constant(c)) {
                (Func3::Select, Some(cond), _, _) => {
                    return Ok(if as_value(cond) == Value::Bool(true) {
                        b
                    } else {
                        c
                    });
                }
                (_, Some(x), Some(y), Some(z)) => {
                    Some(ternary_host(f, as_value(x), as_value(y), as_value(z))?)
                }
                _ => None,
            },
            Op::Const(_) | Op::Input(_) | Op::Reduce(..) | Op::Matrix(..) => None,
        };
        Ok(match folded {
            Some(v) => g.add(Op::Const(as_const(v)), ty),
            None => g.add(op, ty),
        })
    })?;
    let folded = rule.with_graph(graph, |h| map[h.index()].expect("outputs are live"));
    // A folded `select` leaves its dead branch behind.
    Ok(super::compact(&folded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::def::*;
    use crate::graph::Input;
    use crate::validate;

    fn folded(body: Expr) -> Rule {
        let mut def = OptimizerDef::new("t");
        def.hyper("lr", 0.1, Range::ANY);
        def.assign("p", body);
        fold(&validate(&def).unwrap()).unwrap()
    }

    #[test]
    fn constant_subexpressions_fold_in_f64() {
        let rule = folded(name("p") * (1.0 - float(0.9)));
        let Op::Binary(Func2::Mul, _, c) = rule.graph.node(rule.p_out).op else {
            panic!()
        };
        assert_eq!(rule.graph.node(c).op, Op::Const(Const::Float(1.0 - 0.9)));
    }

    #[test]
    fn exact_identities_are_dropped_and_inexact_ones_kept() {
        let rule = folded(name("p") * 1.0 / 1.0 - 0.0);
        assert_eq!(rule.graph.node(rule.p_out).op, Op::Input(Input::Param));
        let rule = folded(name("p") + 0.0);
        assert!(matches!(
            rule.graph.node(rule.p_out).op,
            Op::Binary(Func2::Add, ..)
        ));
    }

    #[test]
    fn select_on_a_constant_picks_a_branch_and_dead_nodes_go() {
        let rule = folded(call(
            "select",
            vec![boolean(false), name("g"), name("p") * name("lr")],
        ));
        assert!(matches!(
            rule.graph.node(rule.p_out).op,
            Op::Binary(Func2::Mul, ..)
        ));
        assert!(
            rule.graph
                .iter()
                .all(|(_, n)| n.op != Op::Input(Input::Grad))
        );
    }

    #[test]
    fn integer_division_by_zero_is_an_error() {
        let mut def = OptimizerDef::new("t");
        def.assign(
            "p",
            name("p") * call("float", vec![binary(Func2::Div, int(1), int(0))]),
        );
        assert!(fold(&validate(&def).unwrap()).is_err());
    }
}
