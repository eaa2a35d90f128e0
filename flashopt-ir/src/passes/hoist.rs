//! Hoisting of step-invariant scalars.
//!
//! A subexpression of hyper-parameters, `t` and constants alone has one value per
//! step. Each maximal such subexpression that per-element code uses becomes a *host
//! scalar*: evaluated once per step on the host (in a [`HostArithmetic`]) and passed
//! to the kernel, which therefore never computes `b1^t` per element.

use std::collections::HashMap;

use crate::def::Value;
use crate::graph::{Func1, Graph, Handle, Input, Op};
use crate::hyper::HyperValues;
use crate::semantics::{
    HostArithmetic, HostEvalError, binary_host, binary_host_f32, host_input_f32, ternary_host,
    ternary_host_f32, unary_host, unary_host_f32,
};
use crate::types::Type;
use crate::validate::Rule;

/// One kernel argument computed on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostScalar {
    /// Its expression in [`HostProgram::graph`].
    pub value: Handle,
    pub ty: Type,
    /// The scalar is `1 / x`, divided in f32, where `x` is the expression's value as
    /// the kernel receives it (rounded to f32): the correctly rounded reciprocal of
    /// another kernel scalar, for a division by it ([`crate::passes::reciprocals`]).
    pub reciprocal: bool,
}

/// The uniform part of a rule.
#[derive(Clone, Debug, Default)]
pub struct HostProgram {
    /// Uniform nodes only: constants, `Input::Hyper`, `Input::Step` and operations.
    pub graph: Graph,
    pub scalars: Vec<HostScalar>,
}

impl HostProgram {
    /// Evaluate every scalar for one step (`step` is 1-based).
    pub fn evaluate(
        &self,
        hyper: &HyperValues,
        step: u64,
        arithmetic: HostArithmetic,
    ) -> Result<Vec<Value>, HostEvalError> {
        let values = self.evaluate_all(hyper, step, arithmetic)?;
        Ok(self
            .scalars
            .iter()
            .map(|s| {
                let value = values[s.value.index()];
                if s.reciprocal {
                    Value::Float(f64::from(1.0 / crate::semantics::to_kernel_f32(value)))
                } else {
                    value
                }
            })
            .collect())
    }

    /// The value of every node of the host graph.
    fn evaluate_all(
        &self,
        hyper: &HyperValues,
        step: u64,
        arithmetic: HostArithmetic,
    ) -> Result<Vec<Value>, HostEvalError> {
        let step = i64::try_from(step)
            .map_err(|_| HostEvalError(format!("step {step} does not fit in i64")))?;
        let f32_inputs = |v: Value| match arithmetic {
            HostArithmetic::F32 => host_input_f32(v),
            HostArithmetic::F64 => v,
        };
        // `f64(..)` reads its argument's f64 value, even in f32 arithmetic.
        let needs_f64 = arithmetic == HostArithmetic::F32
            && self
                .graph
                .iter()
                .any(|(_, n)| matches!(n.op, Op::Unary(Func1::HostF64, _)));
        let values_f64 = if needs_f64 {
            self.evaluate_all(hyper, step as u64, HostArithmetic::F64)?
        } else {
            Vec::new()
        };
        let mut values: Vec<Value> = Vec::with_capacity(self.graph.len());
        for (_, node) in self.graph.iter() {
            let v = |h: Handle| values[h.index()];
            let value = match (node.op, arithmetic) {
                (Op::Const(c), _) => f32_inputs(match c {
                    crate::graph::Const::Float(x) => Value::Float(x),
                    crate::graph::Const::Int(x) => Value::Int(x),
                    crate::graph::Const::Bool(x) => Value::Bool(x),
                }),
                (Op::Input(Input::Hyper(i)), _) => f32_inputs(hyper.values()[i]),
                (Op::Input(Input::Step), _) => Value::Int(step),
                (Op::Input(other), _) => unreachable!("{other:?} is not uniform"),
                (Op::Reduce(..) | Op::Matrix(..), _) => {
                    unreachable!("reductions and matrix functions are computed on the device")
                }
                (Op::Unary(f, a), HostArithmetic::F64) => unary_host(f, v(a))?,
                (Op::Binary(f, a, b), HostArithmetic::F64) => binary_host(f, v(a), v(b))?,
                (Op::Ternary(f, a, b, c), HostArithmetic::F64) => {
                    ternary_host(f, v(a), v(b), v(c))?
                }
                (Op::Unary(Func1::HostF64, a), HostArithmetic::F32) => {
                    host_input_f32(values_f64[a.index()])
                }
                (Op::Unary(f, a), HostArithmetic::F32) => unary_host_f32(f, v(a))?,
                (Op::Binary(f, a, b), HostArithmetic::F32) => binary_host_f32(f, v(a), v(b))?,
                (Op::Ternary(f, a, b, c), HostArithmetic::F32) => {
                    ternary_host_f32(f, v(a), v(b), v(c))?
                }
            };
            values.push(value);
        }
        Ok(values)
    }
}

/// A rule split into its per-element part and its host part.
#[derive(Clone, Debug)]
pub struct Hoisted {
    /// The per-element rule: its graph reads host scalars through `Input::Scalar`.
    pub rule: Rule,
    pub host: HostProgram,
}

/// Split a rule into per-element code and host scalars.
pub fn hoist(rule: &Rule) -> Result<Hoisted, HostEvalError> {
    let g = &rule.graph;
    let mut uniform = vec![false; g.len()];
    for (h, node) in g.iter() {
        uniform[h.index()] = match node.op {
            Op::Const(_) | Op::Input(Input::Hyper(_) | Input::Step) => true,
            // One value per tensor, but computed on the device from every element
            // (a tensor's dimensions: not the host program's, which is per group).
            Op::Input(_) | Op::Reduce(..) | Op::Matrix(..) => false,
            op => op.operands().iter().all(|o| uniform[o.index()]),
        };
    }

    let mut host = HostProgram::default();
    let mut host_map: HashMap<Handle, Handle> = HashMap::new();
    let mut scalar_of: HashMap<Handle, usize> = HashMap::new();
    // Copy the uniform subexpression rooted at `h` into the host graph and make it
    // a scalar (or keep a constant as a constant).
    let mut hoisted = |kernel: &mut Graph, h: Handle| -> Handle {
        let node = g.node(h);
        if let Op::Const(_) = node.op {
            return kernel.add(node.op, node.ty);
        }
        let index = *scalar_of.entry(h).or_insert_with(|| {
            let live = g.reachable(&[h]);
            for (n, sub) in g.iter() {
                if live[n.index()] && !host_map.contains_key(&n) {
                    let op = sub.op.map_operands(|o| host_map[&o]);
                    host_map.insert(n, host.graph.add(op, sub.ty));
                }
            }
            host.scalars.push(HostScalar {
                value: host_map[&h],
                ty: node.ty,
                reciprocal: false,
            });
            host.scalars.len() - 1
        });
        kernel.add(Op::Input(Input::Scalar(index)), node.ty)
    };

    let mut kernel = Graph::new();
    let outputs = rule.outputs();
    let mut map: Vec<Option<Handle>> = vec![None; g.len()];
    let live = g.reachable(&outputs);
    for (h, node) in g.iter() {
        if !live[h.index()] || uniform[h.index()] {
            continue;
        }
        if node.ty == Type::Int {
            return Err(HostEvalError(format!(
                "rule `{}` computes an integer per element; integers may only depend on `t`, \
                 hyper-parameters and constants",
                rule.name
            )));
        }
        let op = node.op.map_operands(|o| match map[o.index()] {
            Some(k) => k,
            None => hoisted(&mut kernel, o),
        });
        map[h.index()] = Some(kernel.add(op, node.ty));
    }
    let mut output = |h: Handle| match map[h.index()] {
        Some(k) => k,
        None => hoisted(&mut kernel, h),
    };
    let outputs: Vec<Handle> = rule.outputs().into_iter().map(&mut output).collect();
    let mut outputs = outputs.into_iter();
    Ok(Hoisted {
        rule: rule.with_graph(kernel, |_| outputs.next().expect("one per output")),
        host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::def::*;
    use crate::graph::Func2;
    use crate::validate;

    fn hoisted(def: &OptimizerDef) -> Hoisted {
        hoist(&crate::passes::fold(&validate(def).unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn bias_correction_becomes_one_scalar() {
        let mut def = OptimizerDef::new("t");
        def.hyper("lr", 0.1, Range::ANY)
            .hyper("b1", 0.9, Range::ANY);
        def.assign(
            "p",
            name("p") - name("lr") * name("g") / (1.0 - call("powi", vec![name("b1"), name("t")])),
        );
        let h = hoisted(&def);
        // `lr` and `1 - b1^t`: two scalars, and no pow left per element.
        assert_eq!(h.host.scalars.len(), 2);
        assert!(
            h.rule
                .graph
                .iter()
                .all(|(_, n)| !matches!(n.op, Op::Binary(Func2::Powi, ..)))
        );
        let hv = HyperValues::defaults(&def.hyper_params);
        let values = h.host.evaluate(&hv, 3, HostArithmetic::F64).unwrap();
        assert_eq!(values[1], Value::Float(1.0 - 0.9f64.powi(3)));
        // flashoptim's arithmetic: f32 beta, f32 square-and-multiply, f32 subtraction.
        let values = h.host.evaluate(&hv, 3, HostArithmetic::F32).unwrap();
        let b1 = 0.9f32;
        assert_eq!(values[1], Value::Float(f64::from(1.0 - b1 * (b1 * b1))));
    }

    #[test]
    fn scalars_are_shared_and_integers_per_element_are_refused() {
        let mut def = OptimizerDef::new("t");
        def.hyper("lr", 0.1, Range::ANY);
        def.assign(
            "p",
            name("p") - name("lr") * name("g") - name("lr") * name("p"),
        );
        assert_eq!(hoisted(&def).host.scalars.len(), 1);

        let mut def = OptimizerDef::new("t");
        let int_per_element = call(
            "select",
            vec![binary(Func2::Gt, name("g"), float(0.0)), name("t"), int(1)],
        );
        def.assign("p", name("p") * call("float", vec![int_per_element]));
        assert!(hoist(&validate(&def).unwrap()).is_err());
    }
}
