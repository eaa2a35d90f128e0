//! Lowering: the storage layout and the codecs, as program instructions.
//!
//! The plan's parts are the parameter's (and its correction's), the gradient, then
//! each state's ([`crate::codec`]). The step program decodes each input the rule reads
//! from its parts, runs the rule's arithmetic, and encodes the new parameter and every
//! state into their parts; its loads come first. The decode and init programs reuse
//! the same codec lowerings, so export and initialization compute what a step does.

use crate::codec::{self, CodeRounding, master};
use crate::graph::{Func3, Handle, Input, MatrixFn, Op, Reducer};
use crate::layout::{Extent, Part, PartId, Role, Storage};
use crate::plan::{Plan, PlanConfig, const_f32, dither_phase_slot};
use crate::program::{Builder, InstOp, Program, ValueId, ValueType};
use crate::semantics::HostArithmetic;
use crate::types::{FloatDtype, MasterMode, Rounding, Type};
use crate::validate::State;

use super::Hoisted;

/// The storage format does not make sense.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LowerError {
    #[error(
        "f32 parameters are their own master weights: master mode {0}-bit needs bf16 or f16 parameters; use master none"
    )]
    CorrectionOnF32(&'static str),
}

/// Where each value lives: the part ids of the parameter, the gradient and each state.
struct Layout {
    parts: Vec<Part>,
    param: Vec<PartId>,
    grad: PartId,
    states: Vec<Vec<PartId>>,
}

impl Layout {
    fn new(config: PlanConfig, states: &[State]) -> Layout {
        let mut parts = Vec::new();
        let mut add = |new: Vec<Part>| -> Vec<PartId> {
            let first = parts.len();
            parts.extend(new);
            (first..parts.len()).map(PartId).collect()
        };
        let param = add(master::parts(config));
        let grad = add(vec![Part::new(
            "grad",
            Storage::from(config.grad),
            Extent::Element,
            Role::Gradient,
        )])[0];
        let states = states
            .iter()
            .map(|s| {
                let mut parts = codec::state_codec(s.codec).parts(&s.name);
                if s.extent != Extent::Element {
                    // Validation gives these states f32 storage: one part, re-scoped.
                    parts[0].extent = s.extent;
                }
                add(parts)
            })
            .collect();
        Layout {
            parts,
            param,
            grad,
            states,
        }
    }
}

pub fn lower(hoisted: &Hoisted, config: PlanConfig) -> Result<Plan, LowerError> {
    if config.param == FloatDtype::F32 && config.master != MasterMode::None {
        return Err(LowerError::CorrectionOnF32(config.master.bits_label()));
    }
    let rule = &hoisted.rule;
    let layout = Layout::new(config, &rule.states);
    let StepProgram {
        step,
        reductions,
        matrices,
    } = step_program(hoisted, config, &layout);
    Ok(Plan {
        optimizer: rule.name.clone(),
        config,
        hyper_params: rule.hyper_params.clone(),
        states: rule.states.clone(),
        numerics: rule.numerics.clone(),
        host: hoisted.host.clone(),
        host_arithmetic: HostArithmetic::default(),
        step,
        reductions,
        matrices,
        phases: Vec::new(),
        decode: decode_program(config, &rule.states, &layout),
        init: init_program(config, &layout),
        parts: layout.parts,
        tables: Vec::new(),
    })
}

/// The whole step, reductions and matrix functions included, with the reductions and
/// matrix functions in slot order.
struct StepProgram {
    /// A reduction's term is a `Reduce` effect, its value `Reduced`; a matrix
    /// function's argument a `MatrixArg` effect, its result `MatrixResult`:
    /// [`super::phases`] splits the program into passes over memory.
    step: Program,
    reductions: Vec<Reducer>,
    matrices: Vec<MatrixFn>,
}

fn step_program(hoisted: &Hoisted, config: PlanConfig, layout: &Layout) -> StepProgram {
    let rule = &hoisted.rule;
    let mut reductions = Vec::new();
    let mut matrices = Vec::new();
    let g = &rule.graph;
    let live = g.reachable(&rule.outputs());
    let mut b = Builder::default();
    let mut map: Vec<Option<ValueId>> = vec![None; g.len()];

    // Inputs in a fixed order: the parameter, the gradient, the states.
    let mut inputs: Vec<(Handle, Input)> = g
        .iter()
        .filter(|(h, _)| live[h.index()])
        .filter_map(|(h, n)| match n.op {
            Op::Input(i @ (Input::Param | Input::Grad | Input::State(_))) => Some((h, i)),
            _ => None,
        })
        .collect();
    inputs.sort_by_key(|(_, i)| match i {
        Input::Param => 0,
        Input::Grad => 1,
        Input::State(k) => 2 + k,
        _ => unreachable!("filtered above"),
    });
    for (h, input) in inputs {
        map[h.index()] = Some(match input {
            Input::Param => master::decode(&mut b, config, &layout.param),
            Input::Grad => b.load(layout.grad, ValueType::F32),
            Input::State(k) => {
                let codec = codec::state_codec(rule.states[k].codec);
                codec.decode(&mut b, &layout.states[k])
            }
            _ => unreachable!("filtered above"),
        });
    }

    for (h, node) in g.iter() {
        if !live[h.index()] || map[h.index()].is_some() {
            continue;
        }
        debug_assert_ne!(node.ty, Type::Int, "hoisting leaves no integer per element");
        let m = |o: Handle| map[o.index()].expect("operands precede their users");
        let op = match node.op {
            Op::Const(c) => InstOp::Const(const_f32(c)),
            Op::Input(Input::Scalar(k)) => InstOp::Scalar(k),
            Op::Input(Input::Dim(d)) => InstOp::Dim(d),
            Op::Input(other) => unreachable!("{other:?} should have been hoisted or decoded"),
            Op::Unary(f, a) => InstOp::Unary(f, m(a)),
            Op::Binary(f, a, c) => InstOp::Binary(f, m(a), m(c)),
            // One FMA instruction, whether a rule or a pass asks for it.
            Op::Ternary(Func3::Fma, a, c, d) => InstOp::Fma(m(a), m(c), m(d)),
            Op::Ternary(f, a, c, d) => InstOp::Ternary(f, m(a), m(c), m(d)),
            Op::Reduce(r, a) => {
                let k = reductions.len();
                reductions.push(r);
                b.push(InstOp::Reduce(k, m(a)), ValueType::Unit);
                InstOp::Reduced(k)
            }
            Op::Matrix(f, a) => {
                let slot = matrices.len();
                matrices.push(f);
                b.push(InstOp::MatrixArg(slot, m(a)), ValueType::Unit);
                InstOp::MatrixResult(slot)
            }
        };
        map[h.index()] = Some(b.push(op, ValueType::F32));
    }

    let out = |h: Handle| map[h.index()].expect("outputs are live");
    master::encode(&mut b, config, &layout.param, out(rule.p_out));
    let dither_phase = dither_phase_slot(hoisted.host.scalars.len());
    for (k, &h) in rule.state_out.iter().enumerate() {
        let state = &rule.states[k];
        let rounding = match state.rounding {
            Rounding::Nearest => CodeRounding::Nearest,
            Rounding::Dithered => CodeRounding::Dithered {
                phase: dither_phase,
            },
        };
        codec::state_codec(state.codec).encode(&mut b, &layout.states[k], out(h), rounding);
    }
    StepProgram {
        step: b.finish().loads_first(),
        reductions,
        matrices,
    }
}

fn decode_program(config: PlanConfig, states: &[State], layout: &Layout) -> Program {
    let mut b = Builder::default();
    let master = master::decode(&mut b, config, &layout.param);
    b.push(InstOp::Output(0, master), ValueType::Unit);
    for (k, s) in states.iter().enumerate() {
        let value = codec::state_codec(s.codec).decode(&mut b, &layout.states[k]);
        b.push(InstOp::Output(1 + k, value), ValueType::Unit);
    }
    b.finish().loads_first()
}

fn init_program(config: PlanConfig, layout: &Layout) -> Program {
    let mut b = Builder::default();
    let master = b.push(InstOp::Input(0), ValueType::F32);
    master::encode(&mut b, config, &layout.param, master);
    b.finish()
}
