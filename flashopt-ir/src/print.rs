//! Stable text for rules, host programs and plans (what the snapshots record).

use std::fmt::{self, Write};

use crate::def::Value;
use crate::graph::{Const, Func1, Graph, Handle, Input, Op};
use crate::layout::{Extent, Role};
use crate::passes::HostProgram;
use crate::plan::Plan;
use crate::program::{InstOp, Program, ValueType};
use crate::semantics::HostArithmetic;
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
        Op::Reduce(r, a) => format!("{}({})", r.name(), expr_text(g, a, names)),
        Op::Matrix(m, a) => format!("{}({})", m.name(), expr_text(g, a, names)),
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
        Input::Dim(d) => d.name().into(),
    }
}

fn op_text(op: Op, names: &dyn Fn(Input) -> String) -> String {
    match op {
        Op::Const(c) => const_text(c),
        Op::Input(i) => names(i),
        Op::Unary(f, a) => format!("{} {a}", f.name()),
        Op::Binary(f, a, b) => format!("{} {a}, {b}", f.name()),
        Op::Ternary(f, a, b, c) => format!("{} {a}, {b}, {c}", f.name()),
        Op::Reduce(r, a) => format!("{} {a}", r.name()),
        Op::Matrix(m, a) => format!("{} {a}", m.name()),
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
            write!(f, "  state {}: {}, {}", s.name, s.kind, s.codec)?;
            match s.extent {
                Extent::Element => writeln!(f)?,
                extent => writeln!(f, ", {}", extent.name())?,
            }
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
            let expr = expr_text(&self.graph, s.value, &names);
            let _ = if s.reciprocal {
                writeln!(out, "  ${k}: {} = 1 / f32({expr})", s.ty)
            } else {
                writeln!(out, "  ${k}: {} = {expr}", s.ty)
            };
        }
        out
    }
}

pub(crate) fn inst_text(op: InstOp, plan: &Plan) -> String {
    let part = |p: crate::layout::PartId| plan.part(p).name.as_str();
    match op {
        InstOp::Load(p) => format!("load {}", part(p)),
        InstOp::Store(p, v) => format!("store {}, {v}", part(p)),
        InstOp::Input(k) => format!("input {k}"),
        InstOp::Output(k, v) => format!("output {k}, {v}"),
        InstOp::Scalar(k) => format!("${k}"),
        InstOp::Const(c) => format!("{c:?}"),
        InstOp::IntConst(c) => c.to_string(),
        InstOp::Unary(f, a) => format!("{} {a}", f.name()),
        InstOp::Binary(f, a, b) => format!("{} {a}, {b}", f.name()),
        InstOp::Ternary(f, a, b, c) => format!("{} {a}, {b}, {c}", f.name()),
        InstOp::Floor(a) => format!("floor {a}"),
        InstOp::Fma(a, b, c) => format!("fma {a}, {b}, {c}"),
        InstOp::Round(d, a) => format!("round_{d} {a}"),
        InstOp::Bits(a) => format!("bits {a}"),
        InstOp::Int(f, a, b) => format!("{} {a}, {b}", f.name()),
        InstOp::ToF32(a) => format!("to_f32 {a}"),
        InstOp::Pow2(a) => format!("pow2 {a}"),
        InstOp::GroupMax(a) => format!("group_max {a}"),
        InstOp::Table(t, a) => format!("table T{}[{a}]", t.index()),
        InstOp::Reduce(k, a) => format!("reduce R{k}, {a}"),
        InstOp::Reduced(k) => format!("R{k}"),
        InstOp::MatrixArg(m, a) => format!("matrix M{m}, {a}"),
        InstOp::MatrixResult(m) => format!("M{m}"),
        InstOp::Dim(d) => d.name().into(),
    }
}

fn program_text(f: &mut fmt::Formatter<'_>, plan: &Plan, program: &Program) -> fmt::Result {
    for (v, inst) in program.iter() {
        let text = inst_text(inst.op, plan);
        if inst.ty == ValueType::Unit {
            writeln!(f, "  {text}")?;
        } else {
            writeln!(f, "  {v}: {} = {text}", inst.ty)?;
        }
    }
    Ok(())
}

impl Plan {
    /// The decode and init programs, as [`Plan`]'s `Display` writes the step.
    pub fn side_programs_text(&self) -> String {
        struct Side<'a>(&'a Plan);
        impl fmt::Display for Side<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                writeln!(f, "decode (outputs: master, then each state):")?;
                program_text(f, self.0, &self.0.decode)?;
                writeln!(f, "init (input: master):")?;
                program_text(f, self.0, &self.0.init)
            }
        }
        Side(self).to_string()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "plan {}: {}", self.optimizer, self.config)?;
        let arithmetic = match self.host_arithmetic {
            HostArithmetic::F32 => "f32, as flashoptim's kernels",
            HostArithmetic::F64 => "f64, rounded to f32 once",
        };
        writeln!(f, "host scalars ({arithmetic}; once per step):")?;
        f.write_str(&self.host.to_text(&self.hyper_params))?;
        writeln!(
            f,
            "  ${}: f32 = gradient scale (global-norm clipping, set every step; 1 without)",
            self.grad_scale()
        )?;
        if let Some(k) = self.dither_phase() {
            writeln!(
                f,
                "  ${k}: f32 = dither phase frac(t * 0.618..) (rounding of dithered codes)"
            )?;
        }
        writeln!(f, "parts:")?;
        for p in &self.parts {
            let role = match p.role {
                Role::Param => "parameter",
                Role::Gradient => "gradient",
                Role::State => "state",
            };
            writeln!(
                f,
                "  {:<12} {:<4} {:<16} {:>6} B/param  {role}",
                p.name,
                p.storage.name(),
                p.extent.name(),
                p.bytes_per_element()
            )?;
        }
        if !self.tables.is_empty() {
            writeln!(f, "tables:")?;
        }
        for (i, t) in self.tables.iter().enumerate() {
            writeln!(f, "  T{i}: codes {}..={}: {}", t.first, t.last(), t.source)?;
        }
        if !self.reductions.is_empty() {
            writeln!(f, "reductions (f64 pairwise; read as R<k>):")?;
        }
        for (k, r) in self.reductions.iter().enumerate() {
            writeln!(f, "  R{k}: {}", r.name())?;
        }
        if !self.matrices.is_empty() {
            writeln!(
                f,
                "matrix functions (of each tensor's rows x cols matrix; read as M<m>):"
            )?;
        }
        for (m, function) in self.matrices.iter().enumerate() {
            writeln!(f, "  M{m}: {}", function.name())?;
        }
        for (p, phase) in self.phases.iter().enumerate() {
            writeln!(f, "phase {p} (per element; stores nothing):")?;
            program_text(f, self, phase)?;
        }
        writeln!(f, "step (per element):")?;
        program_text(f, self, &self.step)?;
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
