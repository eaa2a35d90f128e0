//! Lowering: codec-stage insertion and linearization.
//!
//! The per-element graph becomes an SSA list: a load-and-decode stage for each
//! input the rule reads (master weight from narrow + correction, gradient, each
//! state from codes + group scale), the rule's arithmetic, then an encode-and-store
//! stage for the parameter and every state.

use crate::graph::{Handle, Input, Op};
use crate::plan::{Inst, InstOp, Load, Plan, PlanConfig, Store, ValueId, const_f32};
use crate::types::{FloatDtype, MasterMode, Type};

use super::Hoisted;

/// The storage format does not make sense.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LowerError {
    #[error(
        "f32 parameters are their own master weights: master mode {0}-bit needs bf16 or f16 parameters; use master none"
    )]
    CorrectionOnF32(&'static str),
}

pub fn lower(hoisted: &Hoisted, config: PlanConfig) -> Result<Plan, LowerError> {
    if config.param == FloatDtype::F32 && config.master != MasterMode::None {
        return Err(LowerError::CorrectionOnF32(config.master.bits_label()));
    }
    let rule = &hoisted.rule;
    let g = &rule.graph;
    let live = g.reachable(&rule.outputs());
    let mut body: Vec<Inst> = Vec::new();
    let mut map: Vec<Option<ValueId>> = vec![None; g.len()];
    let push = |body: &mut Vec<Inst>, op: InstOp, ty: Type| {
        body.push(Inst { op, ty });
        ValueId(body.len() as u32 - 1)
    };

    // Loads in a fixed order, so that a kernel issues them all before the arithmetic.
    let mut loads: Vec<(Handle, Load)> = g
        .iter()
        .filter(|(h, _)| live[h.index()])
        .filter_map(|(h, n)| match n.op {
            Op::Input(Input::Param) => Some((h, Load::Param)),
            Op::Input(Input::Grad) => Some((h, Load::Grad)),
            Op::Input(Input::State(i)) => Some((h, Load::State(i))),
            _ => None,
        })
        .collect();
    loads.sort_by_key(|(_, l)| match l {
        Load::Param => 0,
        Load::Grad => 1,
        Load::State(i) => 2 + i,
    });
    for (h, load) in loads {
        map[h.index()] = Some(push(&mut body, InstOp::Load(load), Type::F32));
    }

    for (h, node) in g.iter() {
        if !live[h.index()] || map[h.index()].is_some() {
            continue;
        }
        let m = |o: Handle| map[o.index()].expect("operands precede their users");
        let op = match node.op {
            Op::Const(c) => InstOp::Const(const_f32(c)),
            Op::Input(Input::Scalar(k)) => InstOp::Scalar(k),
            Op::Input(other) => unreachable!("{other:?} should have been hoisted or loaded"),
            Op::Unary(f, a) => InstOp::Unary(f, m(a)),
            Op::Binary(f, a, b) => InstOp::Binary(f, m(a), m(b)),
            Op::Ternary(f, a, b, c) => InstOp::Ternary(f, m(a), m(b), m(c)),
        };
        map[h.index()] = Some(push(&mut body, op, node.ty));
    }

    let out = |h: Handle| map[h.index()].expect("outputs are live");
    let mut stores = vec![Store::Param(out(rule.p_out))];
    stores.extend(
        rule.state_out
            .iter()
            .enumerate()
            .map(|(i, &h)| Store::State(i, out(h))),
    );

    Ok(Plan {
        optimizer: rule.name.clone(),
        config,
        hyper_params: rule.hyper_params.clone(),
        states: rule.states.clone(),
        host: hoisted.host.clone(),
        body,
        stores,
        grad_scale: None,
    })
}
