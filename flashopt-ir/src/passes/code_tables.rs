//! Code tables: a decode whose only input is an 8-bit code becomes a table lookup.
//!
//! A value computed from one int8/uint8 load and constants alone (`code / 127`,
//! softsign's inverse, ...) takes at most 256 values. This pass evaluates such a
//! computation at plan time for every code, with the same [`crate::semantics`] the
//! interpreter uses, and replaces it by [`InstOp::Table`]: both back ends then read
//! the same f32 values, so they agree by construction, and the kernel does one lookup
//! instead of divisions.

use crate::plan::Plan;
use crate::program::{CodeTable, Inst, InstOp, Program, TableId, ValueId, ValueType};
use crate::semantics::lane_op;

/// The widest code range tabulated: 8-bit codes.
const MAX_ENTRIES: i64 = 256;

/// What a value depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// Constants only.
    Constant,
    /// One narrow integer load (and constants), by the load's value.
    Code(ValueId),
    /// Anything else.
    Other,
}

pub fn code_tables(plan: &Plan) -> Plan {
    let mut tables = plan.tables.clone();
    let out = plan.with_programs(|program| tabulate(program, plan, &mut tables));
    Plan { tables, ..out }
}

fn sources(program: &Program, plan: &Plan) -> Vec<Source> {
    let mut sources: Vec<Source> = Vec::with_capacity(program.len());
    for (v, inst) in program.iter() {
        let source = match inst.op {
            InstOp::Load(part) => match plan.part(part).storage.int_range() {
                Some((lo, hi)) if i64::from(hi) - i64::from(lo) < MAX_ENTRIES => Source::Code(v),
                _ => Source::Other,
            },
            op if lane_op(&op, [0; 3]).is_some() => {
                op.operands().iter().fold(Source::Constant, |acc, o| {
                    match (acc, sources[o.index()]) {
                        (Source::Constant, s) | (s, Source::Constant) => s,
                        (Source::Code(a), Source::Code(b)) if a == b => Source::Code(a),
                        _ => Source::Other,
                    }
                })
            }
            _ => Source::Other,
        };
        sources.push(source);
    }
    sources
}

fn tabulate(program: &Program, plan: &Plan, tables: &mut Vec<CodeTable>) -> Program {
    let sources = sources(program, plan);
    let mut users: Vec<Vec<ValueId>> = vec![Vec::new(); program.len()];
    for (v, inst) in program.iter() {
        for o in inst.op.operands() {
            users[o.index()].push(v);
        }
    }
    let mut insts = program.insts.clone();
    for (v, inst) in program.iter() {
        let Source::Code(code) = sources[v.index()] else {
            continue;
        };
        // The largest such values: read by something that is not a function of the code.
        let is_root = users[v.index()]
            .iter()
            .any(|u| sources[u.index()] != Source::Code(code));
        let worth_it = !matches!(inst.op, InstOp::Load(_) | InstOp::ToF32(_));
        if !is_root || !worth_it || inst.ty != ValueType::F32 {
            continue;
        }
        let InstOp::Load(part) = program.inst(code).op else {
            unreachable!("a code source is a load")
        };
        let (first, last) = plan
            .part(part)
            .storage
            .int_range()
            .expect("an integer part");
        let values = (first..=last)
            .map(|c| f32::from_bits(evaluate(program, v, code, c as u32)))
            .collect();
        let table = CodeTable {
            first,
            values,
            source: text(program, v, code),
        };
        let id = match tables.iter().position(|t| *t == table) {
            Some(i) => TableId(i),
            None => {
                tables.push(table);
                TableId(tables.len() - 1)
            }
        };
        insts[v.index()] = Inst {
            op: InstOp::Table(id, code),
            ty: ValueType::F32,
        };
    }
    Program { insts }.without_dead_code()
}

/// The bits of `v` when the load `code` reads `c`.
fn evaluate(program: &Program, v: ValueId, code: ValueId, c: u32) -> u32 {
    if v == code {
        return c;
    }
    let op = program.inst(v).op;
    let mut args = [0u32; 3];
    for (slot, o) in op.operands().into_iter().enumerate() {
        args[slot] = evaluate(program, o, code, c);
    }
    lane_op(&op, args).expect("only lane operations depend on a code alone")
}

/// The computation a table replaces, over the code `c`, for plan dumps.
fn text(program: &Program, v: ValueId, code: ValueId) -> String {
    if v == code {
        return "c".into();
    }
    let operand = |o: ValueId| {
        let t = text(program, o, code);
        match program.inst(o).op {
            InstOp::Binary(f, ..) if f.symbol().is_some() => format!("({t})"),
            _ => t,
        }
    };
    match program.inst(v).op {
        InstOp::Const(c) => format!("{c:?}"),
        InstOp::IntConst(c) => c.to_string(),
        InstOp::ToF32(a) => text(program, a, code),
        InstOp::Unary(f, a) => format!("{}({})", f.name(), text(program, a, code)),
        InstOp::Binary(f, a, b) => match f.symbol() {
            Some(sym) => format!("{} {sym} {}", operand(a), operand(b)),
            None => format!(
                "{}({}, {})",
                f.name(),
                text(program, a, code),
                text(program, b, code)
            ),
        },
        op => {
            let args: Vec<String> = op
                .operands()
                .into_iter()
                .map(|o| text(program, o, code))
                .collect();
            format!("{op:?}({})", args.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::def::{OptimizerDef, Range, float, name};
    use crate::{MasterMode, PlanConfig, StateKind};

    fn momentum(config: PlanConfig) -> Plan {
        let mut def = OptimizerDef::new("momentum");
        def.hyper("lr", 0.1, Range::at_least(0.0));
        def.state("m", StateKind::Signed);
        def.assign("m", name("m") * float(0.9) + name("g"));
        def.assign("p", name("p") - name("lr") * name("m"));
        crate::passes::lower(&crate::prepare(&def).unwrap(), config).unwrap()
    }

    #[test]
    fn softsign_and_correction_decodes_become_lookups() {
        let plan = code_tables(&momentum(PlanConfig::bf16(MasterMode::Int8)));
        // The int8 correction's `c / 127` and softsign's inverse: two tables.
        assert_eq!(plan.tables.len(), 2, "{:?}", plan.tables);
        let softsign = plan
            .tables
            .iter()
            .find(|t| t.source.contains("abs"))
            .unwrap();
        assert_eq!((softsign.first, softsign.values.len()), (-128, 256));
        for c in -128i32..=127 {
            let y = c as f32 / 127.0;
            let want = y / (2.0 - y.abs());
            assert_eq!(
                softsign.values[(c + 128) as usize].to_bits(),
                want.to_bits()
            );
        }
        let lookups = plan
            .step
            .insts
            .iter()
            .filter(|i| matches!(i.op, InstOp::Table(..)))
            .count();
        assert_eq!(lookups, 2);
        assert!(
            !plan
                .step
                .insts
                .iter()
                .any(|i| matches!(i.op, InstOp::ToF32(_))),
            "no code is widened any more"
        );
    }

    #[test]
    fn wide_codes_are_left_alone() {
        let plan = code_tables(&momentum(PlanConfig::bf16(MasterMode::Int16)));
        // Only the int8 momentum codes: the int16 correction has 65536 values.
        assert_eq!(plan.tables.len(), 1);
        assert!(plan.tables[0].source.contains("abs"));
    }
}
