//! AdamW built through the IR against independent implementations.

mod common;

use common::{Rng, powif};
use flashopt::ir::codec::master::{decode_master, encode_master};
use flashopt::ir::codec::{softsign, sqrt};
use flashopt::ir::interp::{self, GradBuf, HostTensor, PartData};
use flashopt::ir::{HyperValues, compile};
use flashopt::optimizers::AdamW;
use flashopt::{Codec, FloatDtype, MasterMode, OptimizerSpec, PlanConfig};
use half::{bf16, f16};

/// The f32-master trajectory (f32 params, f32 states) stays within 1e-5 relative of
/// AdamW computed in f64, at every one of 100 steps.
#[test]
#[allow(clippy::needless_range_loop)] // p, m, v and g indexed together
fn f32_master_trajectory_tracks_f64_adamw() {
    let mut def = AdamW::definition();
    for s in &mut def.states {
        s.codec = Some(Codec::F32);
    }
    let plan = compile(&def, PlanConfig::f32_params()).unwrap();
    let mut hyper = HyperValues::defaults(&plan.hyper_params);
    hyper
        .set("lr", 1e-2)
        .unwrap()
        .set("weight_decay", 0.1)
        .unwrap();
    let (lr, b1, b2, eps, wd) = (1e-2f64, 0.9f64, 0.999f64, 1e-8f64, 0.1f64);

    let n = 5000;
    let mut rng = Rng::new(7);
    let init = rng.normals(n, 1.0);
    let mut tensor = HostTensor::from_f32(&plan, &init);
    let mut p64: Vec<f64> = init.iter().map(|&x| f64::from(x)).collect();
    let (mut m64, mut v64) = (vec![0.0f64; n], vec![0.0f64; n]);

    let mut worst = 0.0f64;
    for t in 1..=100u64 {
        let grad = rng.normals(n, 0.1);
        let scalars = plan.kernel_scalars(&hyper, t).unwrap();
        interp::run(&plan, &scalars, &mut tensor, GradBuf::F32(&grad)).unwrap();
        let bias1 = 1.0 - b1.powi(t as i32);
        let bias2 = 1.0 - b2.powi(t as i32);
        for i in 0..n {
            let g = f64::from(grad[i]);
            m64[i] = b1 * m64[i] + (1.0 - b1) * g;
            v64[i] = b2 * v64[i] + (1.0 - b2) * g * g;
            p64[i] =
                p64[i] * (1.0 - lr * wd) - lr * (m64[i] / bias1) / ((v64[i] / bias2).sqrt() + eps);
        }
        let p32 = tensor.master_f32(&plan);
        let diff: f64 = p32
            .iter()
            .zip(&p64)
            .map(|(&a, &b)| (f64::from(a) - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm: f64 = p64.iter().map(|b| b * b).sum::<f64>().sqrt();
        let relative = diff / norm;
        worst = worst.max(relative);
        assert!(relative <= 1e-5, "step {t}: relative error {relative:e}");
    }
    println!("f32 AdamW vs f64 over 100 steps: worst relative error {worst:.3e}");
    // The trajectory moved: the comparison is not of two frozen vectors.
    let moved: f64 = tensor
        .master_f32(&plan)
        .iter()
        .zip(&init)
        .map(|(&a, &b)| f64::from(a - b).abs())
        .sum::<f64>()
        / n as f64;
    assert!(moved > 0.1, "mean |p - p0| = {moved}");
}

struct Compressed {
    param: Vec<u16>,
    correction: Vec<i8>,
    m: Vec<i8>,
    m_scales: Vec<f16>,
    v: Vec<u8>,
    v_scales: Vec<f16>,
}

/// flashoptim 0.1.4's fused AdamW kernel (bf16 params, int8 correction, quantized
/// states), transcribed statement by statement from its Triton source as its compiler
/// contracts it, independent of the IR, the passes and the interpreter. `s` holds the host scalars
/// `[1 - b1, 1 - b2, 1 - lr*wd, 1 - b1^t, 1 - b2^t]` and `lr, b1, b2, eps`.
#[allow(clippy::needless_range_loop)] // indexes six arrays by element, as the kernel does
fn flashoptim_adamw_step(
    c: &mut Compressed,
    grad: &[bf16],
    lr: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    s: [f32; 5],
) {
    let [one_minus_b1, one_minus_b2, decay, bias1, bias2] = s;
    let n = grad.len();
    for start in (0..n).step_by(32) {
        let end = (start + 32).min(n);
        let group = start / 32;
        let mut m_new = Vec::new();
        let mut v_new = Vec::new();
        for i in start..end {
            let g = grad[i].to_f32();
            let mut p = decode_master(
                c.param[i],
                i32::from(c.correction[i]),
                FloatDtype::Bf16,
                MasterMode::Int8,
            );
            let y = f32::from(c.m[i]) / 127.0;
            let m = (y / (2.0 - y.abs())) * c.m_scales[group].to_f32();
            let r = (f32::from(c.v[i]) / 255.0) * c.v_scales[group].to_f32();
            let v = r * r;
            // LLVM contracts `m * b1 + g * (1 - b1)` into fma(m, b1, ..), and
            // `p * decay - x` into fma(p, decay, -x).
            let m = m.mul_add(b1, g * one_minus_b1);
            let v = v.mul_add(b2, g * g * one_minus_b2);
            let corrected_m = m / bias1;
            let corrected_v = v / bias2;
            let denom = corrected_v.sqrt() + eps;
            p = p.mul_add(decay, -(lr * corrected_m / denom));
            let (bits, code) = encode_master(p, FloatDtype::Bf16, MasterMode::Int8);
            c.param[i] = bits;
            c.correction[i] = code as i8;
            m_new.push(m);
            v_new.push(v);
        }
        c.m_scales[group] = softsign::encode_group(&m_new, &mut c.m[start..end]);
        c.v_scales[group] = sqrt::encode_group(&v_new, &mut c.v[start..end]);
    }
    // Keep the decoders honest too: every code decodes to a finite value.
    assert!(
        c.m.iter()
            .enumerate()
            .all(|(i, &q)| softsign::decode(q, c.m_scales[i / 32]).is_finite())
    );
    assert!(
        c.v.iter()
            .enumerate()
            .all(|(i, &q)| sqrt::decode(q, c.v_scales[i / 32]).is_finite())
    );
}

/// The plan, run by the interpreter, equals the transcription bit for bit: params,
/// corrections, codes and scales, at lengths around the group size and across the
/// interpreter's parallel block boundary.
#[test]
fn interpreter_matches_the_flashoptim_kernel_bit_for_bit() {
    let plan = compile(&AdamW::definition(), PlanConfig::bf16(MasterMode::Int8)).unwrap();
    let mut hyper = HyperValues::defaults(&plan.hyper_params);
    hyper.set("lr", 3e-3).unwrap();
    // flashoptim's arithmetic: no momentum bound.
    hyper.set("bound_momentum", false).unwrap();
    let (lr, b1, b2, eps, wd) = (3e-3f64, 0.9f64, 0.999f64, 1e-8f64, 1e-2f64);
    for n in [1usize, 31, 32, 33, 4099, 2048 * 3 + 5] {
        let mut rng = Rng::new(n as u64);
        let init = rng.normals(n, 0.5);
        let mut tensor = HostTensor::from_f32(&plan, &init);
        let (bits, correction): (Vec<u16>, Vec<i8>) = init
            .iter()
            .map(|&x| {
                let (b, c) = encode_master(x, FloatDtype::Bf16, MasterMode::Int8);
                (b, c as i8)
            })
            .unzip();
        let groups = n.div_ceil(32);
        let mut reference = Compressed {
            param: bits,
            correction,
            m: vec![0; n],
            m_scales: vec![f16::ZERO; groups],
            v: vec![0; n],
            v_scales: vec![f16::ZERO; groups],
        };
        for t in 1..=5u64 {
            let grad: Vec<bf16> = rng
                .normals(n, 0.01)
                .into_iter()
                .map(bf16::from_f32)
                .collect();
            let scalars = plan.kernel_scalars(&hyper, t).unwrap();
            interp::run(&plan, &scalars, &mut tensor, GradBuf::Bf16(&grad)).unwrap();
            // As flashoptim computes them: f32 arguments, f32 arithmetic in the
            // kernel, the decay product in Python (f64).
            let (b1f, b2f) = (b1 as f32, b2 as f32);
            let host = [
                1.0 - b1f,
                1.0 - b2f,
                1.0 - (lr * wd) as f32,
                1.0 - powif(b1f, t),
                1.0 - powif(b2f, t),
            ];
            flashoptim_adamw_step(
                &mut reference,
                &grad,
                lr as f32,
                b1 as f32,
                b2 as f32,
                eps as f32,
                host,
            );

            let PartData::Bf16(param) = &tensor.parts[0] else {
                panic!()
            };
            let param: Vec<u16> = param.iter().map(|x| x.to_bits()).collect();
            assert_eq!(param, reference.param, "n={n} t={t}: params");
            // The plan's parts, in order: param, correction, m codes and scales, v codes
            // and scales.
            let want = [
                PartData::I8(reference.correction.clone()),
                PartData::I8(reference.m.clone()),
                PartData::F16(reference.m_scales.clone()),
                PartData::U8(reference.v.clone()),
                PartData::F16(reference.v_scales.clone()),
            ];
            assert_eq!(tensor.parts[1..], want, "n={n} t={t}");
        }
        // Steps happened: the codes are not all zero.
        assert!(reference.m.iter().any(|&q| q != 0), "n={n}");
    }
}
