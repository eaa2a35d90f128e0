//! What the value-range analysis proves about the shipped plans (reviewed snapshots),
//! and that it holds: every value of every shipped plan's step, run on arbitrary
//! stored bytes and gradients (NaN and infinities included), lies in its range.

use flashopt::ir::interp;
use flashopt::ir::passes::ranges::{self, Interval};
use flashopt::ir::program::{InstOp, ValueType};
use flashopt::ir::semantics::lane_op;
use flashopt::ir::{Extent, HyperValues, OptimizerDef, Plan, Storage, compile};
use flashopt::optimizers::{Adam, AdamW, Lion, Sgd, SgdW};
use flashopt::{FloatDtype, MasterMode, OptimizerSpec, PlanConfig};

const GROUP: usize = flashopt::ir::GROUP_SIZE;

fn shipped() -> Vec<OptimizerDef> {
    vec![
        AdamW::definition(),
        Adam::definition(),
        Lion::definition(),
        Sgd::definition(),
        SgdW::definition(),
    ]
}

fn configs() -> Vec<PlanConfig> {
    vec![
        PlanConfig::bf16(MasterMode::Int8),
        PlanConfig::bf16(MasterMode::Int16),
        PlanConfig::bf16(MasterMode::None),
        PlanConfig {
            param: FloatDtype::F16,
            grad: FloatDtype::F32,
            master: MasterMode::Int8,
        },
        PlanConfig::f32_params(),
    ]
}

#[test]
fn shipped_ranges() {
    for def in [AdamW::definition(), Lion::definition()] {
        let plan = compile(&def, PlanConfig::bf16(MasterMode::Int8)).unwrap();
        insta::assert_snapshot!(
            format!("{}_ranges_bf16_24", def.name),
            ranges::ranges_text(&plan)
        );
    }
}

/// xorshift64*: reproducible inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Stored bits of one value: random, often a special value.
    fn stored(&mut self, storage: Storage) -> u32 {
        let r = self.next();
        let special = [
            0.0f32,
            -0.0,
            1.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1e-40,
        ];
        let float = |x: f32| match storage {
            Storage::Bf16 => flashopt::ir::semantics::round_to(FloatDtype::Bf16, x),
            Storage::F16 => flashopt::ir::semantics::round_to(FloatDtype::F16, x),
            _ => x,
        };
        if let Some((lo, hi)) = storage.int_range() {
            let span = (i64::from(hi) - i64::from(lo) + 1) as u64;
            return (lo + (r % span) as i32) as u32;
        }
        let x = match r % 8 {
            0 => special[(r >> 8) as usize % special.len()],
            1 => ((r >> 8) as u32 as f32 / u32::MAX as f32 - 0.5) * 1e-3,
            _ => f32::from_bits((r >> 16) as u32),
        };
        float(x).to_bits()
    }
}

/// Every value of `plan`'s step over one group of random stored bytes, checked
/// against its range; returns how many values were checked.
fn check_group(plan: &Plan, scalars: &[f32], ranges: &[Interval], rng: &mut Rng) -> usize {
    let program = &plan.step;
    let mut regs: Vec<[u32; GROUP]> = Vec::with_capacity(program.len());
    let mut checked = 0;
    for (v, inst) in program.iter() {
        let mut out = [0u32; GROUP];
        match inst.op {
            InstOp::Load(p) => {
                let part = plan.part(p);
                match part.extent {
                    // A row's or a column's values vary across a group like an element's.
                    Extent::Element | Extent::Row | Extent::Column => {
                        out.iter_mut().for_each(|o| *o = rng.stored(part.storage))
                    }
                    Extent::Group => out = [rng.stored(part.storage); GROUP],
                }
            }
            InstOp::Store(..) | InstOp::Output(..) => {}
            InstOp::Scalar(k) => out = [scalars[k].to_bits(); GROUP],
            InstOp::GroupMax(a) => {
                let max = regs[a.index()]
                    .iter()
                    .fold(f32::NEG_INFINITY, |m, &x| m.max(f32::from_bits(x)));
                out = [max.to_bits(); GROUP];
            }
            InstOp::Table(t, code) => {
                let table = &plan.tables[t.index()];
                for (o, &c) in out.iter_mut().zip(&regs[code.index()]) {
                    *o = table.values[(c as i32 - table.first) as usize].to_bits();
                }
            }
            op => {
                let operands = op.operands();
                for (l, o) in out.iter_mut().enumerate() {
                    let mut args = [0u32; 3];
                    for (k, a) in operands.iter().enumerate() {
                        args[k] = regs[a.index()][l];
                    }
                    *o = lane_op(&op, args).expect("a lane operation");
                }
            }
        }
        if inst.ty != ValueType::Unit {
            for &bits in &out {
                assert!(
                    ranges::holds(ranges[v.index()], inst.ty, bits),
                    "{}: {v} = {:?} ({bits:#010x}) outside {}",
                    plan.optimizer,
                    f32::from_bits(bits),
                    ranges[v.index()]
                );
                checked += 1;
            }
        }
        regs.push(out);
    }
    checked
}

#[test]
fn every_value_lies_in_its_range() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut checked = 0;
    for def in shipped() {
        for config in configs() {
            let plan = compile(&def, config).unwrap();
            let ranges = ranges::value_ranges(&plan, &plan.step);
            let hyper = HyperValues::defaults(&plan.hyper_params);
            for step in [1, 2, 10, 1000, 1 << 20] {
                let mut scalars = plan.kernel_scalars(&hyper, step).unwrap();
                scalars[plan.grad_scale()] = [1.0, 0.25, 1e-30][step as usize % 3];
                for _ in 0..60 {
                    checked += check_group(&plan, &scalars, &ranges, &mut rng);
                }
            }
        }
    }
    assert!(checked > 20_000_000, "{checked} values checked");
}

/// A choice the ranges fix leaves the plan: `sign` lies in [-1, 1], so clamping it
/// there is the value itself, and the CPU reference steps as without the clamp.
#[test]
fn a_decided_clamp_leaves_the_plan() {
    use flashopt::ir::def::*;
    let sign_step = |clamped: bool| {
        let mut def = OptimizerDef::new("sign_descent");
        def.hyper("lr", 0.01, Range::at_least(0.0));
        let sign = call("sign", vec![name("g")]);
        let update = if clamped {
            call("clamp", vec![sign, float(-1.0), float(1.0)])
        } else {
            sign
        };
        def.assign("p", name("p") - name("lr") * update);
        compile(&def, PlanConfig::bf16(MasterMode::Int8)).unwrap()
    };
    let (clamped, plain) = (sign_step(true), sign_step(false));
    let clamps = |plan: &Plan| {
        plan.step
            .insts
            .iter()
            .filter(|i| matches!(i.op, InstOp::Ternary(flashopt::ir::graph::Func3::Clamp, ..)))
            .count()
    };
    assert_eq!(clamps(&clamped), 0);
    assert_eq!(clamped.step.len(), plain.step.len());

    let grads: Vec<half::bf16> = [1.5f32, -0.0, f32::NAN, -3.0]
        .iter()
        .map(|&x| half::bf16::from_f32(x))
        .collect();
    let stepped = |plan: &Plan| {
        let mut tensor = interp::HostTensor::from_f32(plan, &[1.0, 2.0, 3.0, 4.0]);
        let hyper = HyperValues::defaults(&plan.hyper_params);
        let scalars = plan.kernel_scalars(&hyper, 1).unwrap();
        interp::run(plan, &scalars, &mut tensor, interp::GradBuf::Bf16(&grads)).unwrap();
        tensor.master_f32(plan)
    };
    let p = stepped(&clamped);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&p), bits(&stepped(&plain)));
    assert_eq!(p[1], 2.0);
    assert!(
        (p[0] - 0.99).abs() < 1e-5 && (p[3] - 4.01).abs() < 1e-4,
        "{p:?}"
    );
}
