//! Stable text for rules, host programs and plans (what the snapshots record).

use std::fmt::{self, Write};

use crate::def::Value;
use crate::graph::{Const, Func1, Graph, Handle, Input, Op};
use crate::passes::HostProgram;
use crate::plan::{InstOp, Load, Plan, Store};
use crate::types::{Codec, FloatDtype, MasterMode};
use crate::validate::Rule;

fn const_text(c: Const) -> String {
    match c {
        Const::Float(v) => format!("{v:?}"),
        Const::Int(v) => v.to_string(),
        Const::Bool(v) => v.to_string(),
    }
}

/// An infix rendering of the expression at `h`; `names` names the inputs.
fn expr_text(g: &Graph, h: Handle, names: &dyn Fn(Input) -> String) -> String {
    match g.node(h).op {
        Op::Const(c) => const_text(c),
        Op::Input(i) => names(i),
        Op::Unary(Func1::Neg, a) => format!("-{}", operand_text(g, a, names)),
        Op::Unary(Func1::Not, a) => format!("!{}", operand_text(g, a, names)),
        Op::Unary(f, a) => format!("{}({})", f.name(), expr_text(g, a, names)),
        Op::Binary(f, a, b) => match f.symbol() {
            Some(sym) => format!(
                "{} {sym} {}",
                operand_text(g, a, names),
                operand_text(g, b, names)
            ),
            None => format!(
                "{}({}, {})",
                f.name(),
                expr_text(g, a, names),
                expr_text(g, b, names)
            ),
        },
        Op::Ternary(f, a, b, c) => format!(
            "{}({}, {}, {})",
            f.name(),
            expr_text(g, a, names),
            expr_text(g, b, names),
            expr_text(g, c, names)
        ),
    }
}

/// An operand: parenthesized when it is itself an infix operation.
fn operand_text(g: &Graph, h: Handle, names: &dyn Fn(Input) -> String) -> String {
    let text = expr_text(g, h, names);
    match g.node(h).op {
        Op::Binary(f, ..) if f.symbol().is_some() => format!("({text})"),
        Op::Const(Const::Float(v)) if v < 0.0 => format!("({text})"),
        _ => text,
    }
}

fn input_name(rule_hypers: &[crate::def::HyperParamDef], states: &[String], i: Input) -> String {
    match i {
        Input::Param => "p".into(),
        Input::Grad => "g".into(),
        Input::Step => "t".into(),
        Input::Hyper(k) => rule_hypers[k].name.clone(),
        Input::State(k) => states[k].clone(),
        Input::Scalar(k) => format!("${k}"),
    }
}

fn op_text(op: Op, names: &dyn Fn(Input) -> String) -> String {
    match op {
        Op::Const(c) => const_text(c),
        Op::Input(i) => names(i),
        Op::Unary(f, a) => format!("{} {a}", f.name()),
        Op::Binary(f, a, b) => format!("{} {a}, {b}", f.name()),
        Op::Ternary(f, a, b, c) => format!("{} {a}, {b}, {c}", f.name()),
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "optimizer {}", self.name)?;
        for h in &self.hyper_params {
            if let Some(source) = &h.follows {
                writeln!(
                    f,
                    "  hyper {}: {} = {source} (when built) in {}",
                    h.name,
                    h.default.ty(),
                    h.range
                )?;
                continue;
            }
            match h.default {
                Value::Bool(_) => {
                    writeln!(f, "  hyper {}: {} = {}", h.name, h.default.ty(), h.default)?
                }
                _ => writeln!(
                    f,
                    "  hyper {}: {} = {} in {}",
                    h.name,
                    h.default.ty(),
                    h.default,
                    h.range
                )?,
            }
        }
        for s in &self.states {
            writeln!(f, "  state {}: {}, {}", s.name, s.kind, s.codec)?;
        }
        let states: Vec<String> = self.states.iter().map(|s| s.name.clone()).collect();
        let names = |i: Input| input_name(&self.hyper_params, &states, i);
        let live = self.graph.reachable(&self.outputs());
        writeln!(f, "  rule:")?;
        for (h, node) in self.graph.iter().filter(|(h, _)| live[h.index()]) {
            writeln!(f, "    {h}: {} = {}", node.ty, op_text(node.op, &names))?;
        }
        writeln!(f, "    p <- {}", self.p_out)?;
        for (s, h) in self.states.iter().zip(&self.state_out) {
            writeln!(f, "    {} <- {h}", s.name)?;
        }
        Ok(())
    }
}

impl HostProgram {
    /// The scalars as expressions over hyper-parameter names and `t`.
    pub fn to_text(&self, hypers: &[crate::def::HyperParamDef]) -> String {
        let names = |i: Input| input_name(hypers, &[], i);
        let mut out = String::new();
        for (k, s) in self.scalars.iter().enumerate() {
            let _ = writeln!(
                out,
                "  ${k}: {} = {}",
                s.ty,
                expr_text(&self.graph, s.value, &names)
            );
        }
        out
    }
}

fn param_load_text(param: FloatDtype, master: MasterMode) -> String {
    match (param, master) {
        (FloatDtype::F32, _) => "f32".into(),
        (p, MasterMode::None) => format!("{p} -> f32"),
        (p, m) => format!(
            "{p} + int{} correction: n + code / {} * 2^log_scale(n)",
            m.correction_bytes() * 8,
            m.code_max().expect("correction")
        ),
    }
}

fn param_store_text(param: FloatDtype, master: MasterMode) -> String {
    match (param, master) {
        (FloatDtype::F32, _) => "f32".into(),
        (p, MasterMode::None) => format!("round to {p}"),
        (p, m) => format!(
            "round to {p}, correction code round(clamp((x - n) / 2^log_scale(n), -1, 1) * {})",
            m.code_max().expect("correction")
        ),
    }
}

fn state_load_text(codec: Codec) -> &'static str {
    match codec {
        Codec::Int8Softsign => "int8_softsign: y = code / 127; y / (2 - |y|) * f16 scale",
        Codec::Int8Linear => "int8_linear: code / 127 * f16 scale",
        Codec::Uint8Sqrt => "uint8_sqrt: (code / 255 * f16 scale)^2",
        Codec::Bf16 => "bf16 -> f32",
        Codec::F32 => "f32",
    }
}

fn state_store_text(codec: Codec) -> &'static str {
    match codec {
        Codec::Int8Softsign => {
            "int8_softsign: s = max(absmax(group), 1e-12); y = x / s; floor(2y / (1 + |y|) * 127 + 0.5); f16 scale"
        }
        Codec::Int8Linear => {
            "int8_linear: s = max(absmax(group), 1e-12); floor(x / s * 127 + 0.5); f16 scale"
        }
        Codec::Uint8Sqrt => {
            "uint8_sqrt: r = sqrt(x); s = max(max(group r), 1e-12); floor(r / s * 255 + 0.5); f16 scale"
        }
        Codec::Bf16 => "round to bf16",
        Codec::F32 => "f32",
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "plan {}: {}", self.optimizer, self.config)?;
        writeln!(
            f,
            "host scalars (f64 on the host, rounded to f32 once per step):"
        )?;
        f.write_str(&self.host.to_text(&self.hyper_params))?;
        if let Some(k) = self.grad_scale {
            writeln!(
                f,
                "  ${k}: f32 = gradient scale (global-norm clipping, set every step)"
            )?;
        }
        writeln!(f, "per element (f32):")?;
        let cfg = self.config;
        for (i, inst) in self.body.iter().enumerate() {
            let text = match inst.op {
                InstOp::Load(Load::Param) => {
                    format!("load p  [{}]", param_load_text(cfg.param, cfg.master))
                }
                InstOp::Load(Load::Grad) => format!("load g  [{} -> f32]", cfg.grad),
                InstOp::Load(Load::State(s)) => {
                    format!(
                        "load {}  [{}]",
                        self.states[s].name,
                        state_load_text(self.states[s].codec)
                    )
                }
                InstOp::Scalar(k) => format!("${k}"),
                InstOp::Const(c) => format!("{c:?}"),
                InstOp::Unary(func, a) => format!("{} {a}", func.name()),
                InstOp::Binary(func, a, b) => format!("{} {a}, {b}", func.name()),
                InstOp::Ternary(func, a, b, c) => format!("{} {a}, {b}, {c}", func.name()),
            };
            writeln!(f, "  %{i}: {} = {text}", inst.ty)?;
        }
        writeln!(f, "stores:")?;
        for store in &self.stores {
            match *store {
                Store::Param(v) => writeln!(
                    f,
                    "  p <- {v}  [{}]",
                    param_store_text(cfg.param, cfg.master)
                )?,
                Store::State(s, v) => writeln!(
                    f,
                    "  {} <- {v}  [{}]",
                    self.states[s].name,
                    state_store_text(self.states[s].codec)
                )?,
            }
        }
        let t = self.traffic();
        writeln!(
            f,
            "traffic per parameter: read {} B, write {} B, total {} B",
            t.read,
            t.write,
            t.total()
        )
    }
}
