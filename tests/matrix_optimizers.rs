//! Muon, the optimizer with a matrix function: its element passes against the
//! rule the macro compiles to Rust, bit for bit, around the orthogonalization's
//! reference ([`flashopt::ir::matrix`]); its storage; what a shape means to it; its
//! training on a problem it should solve; and the refusals where it cannot run.

mod common;

use common::Rng;
use flashopt::ir::graph::Func3;
use flashopt::ir::interp::GradBuf;
use flashopt::ir::matrix::{MatrixPrecision, NewtonSchulz, cosine, orthogonalize};
use flashopt::ir::semantics::ternary_f32;
use flashopt::optimizers::Muon;
use flashopt::runtime::{RuntimeError, TensorId};
use flashopt::{CpuOptimizer, F32States, MasterMode, Optimizer, OptimizerSpec, PlanConfig};
use half::bf16;

/// Wide, tall, square, one row, one column, fewer elements than a group, and a
/// matrix over several of the interpreter's parallel blocks of 2048 elements.
const SHAPES: [&[usize]; 7] = [
    &[6, 40],
    &[40, 6],
    &[16, 16],
    &[1, 50],
    &[9, 1],
    &[3, 5],
    &[48, 100],
];

fn rows_cols(dims: &[usize]) -> (usize, usize) {
    let cols = *dims.last().unwrap();
    (dims.iter().product::<usize>() / cols, cols)
}

/// Muon with f32 parameters and momentum steps every element as its compiled rule
/// does, given the reference orthogonalization of the update that rule computes:
/// the master weights and momenta bit for bit over 5 steps, with and without
/// Nesterov.
#[test]
fn muon_steps_as_its_rule_around_the_reference_orthogonalization() {
    for nesterov in [true, false] {
        let spec = F32States(Muon {
            lr: 0.02,
            nesterov,
            ..Muon::default()
        });
        let config = PlanConfig::f32_params();
        let mut opt = CpuOptimizer::for_spec(&spec, config).unwrap();
        let mut rng = Rng::new(31);
        let mut params: Vec<Vec<f32>> = Vec::new();
        let mut momenta: Vec<Vec<f32>> = Vec::new();
        for (k, dims) in SHAPES.iter().enumerate() {
            let init = rng.normals(dims.iter().product(), 0.1);
            opt.add_shaped(&format!("w{k}"), dims, &init).unwrap();
            momenta.push(vec![0.0; init.len()]);
            params.push(init);
        }
        let plan = opt.plan().clone();
        for t in 1..=5u64 {
            let grads: Vec<Vec<f32>> = params.iter().map(|p| rng.normals(p.len(), 0.01)).collect();
            let scalars = plan.kernel_scalars(opt.hyper(0), t).unwrap();
            let bufs: Vec<GradBuf> = grads.iter().map(|g| GradBuf::F32(g)).collect();
            assert!(opt.step(&bufs).unwrap().applied());
            for (k, dims) in SHAPES.iter().enumerate() {
                let (rows, cols) = rows_cols(dims);
                let (p, m, g) = (&mut params[k], &mut momenta[k], &grads[k]);
                // The update the rule orthogonalizes, in its order of arithmetic.
                let decay = scalars[0];
                let update: Vec<f32> = m
                    .iter()
                    .zip(g)
                    .map(|(&m, &g)| {
                        let m = ternary_f32(Func3::Lerp, m, g, decay);
                        if nesterov { m - (m - g) * decay } else { m }
                    })
                    .collect();
                let o = orthogonalize(
                    &update,
                    rows,
                    cols,
                    &NewtonSchulz::MUON,
                    MatrixPrecision::Bf16,
                );
                for i in 0..p.len() {
                    let mut extra = scalars[..Muon::SCALARS].to_vec();
                    extra.extend([rows as f32, cols as f32, o[i]]);
                    let (w, [mom]) = Muon::element_rule(p[i], g[i], [m[i]], &extra);
                    (p[i], m[i]) = (w, mom);
                }
                let tensor = opt.tensor(TensorId(k)).unwrap();
                let decoded = tensor.decoded(&plan);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&decoded[0]), bits(p), "master of {dims:?}, step {t}");
                assert_eq!(bits(&decoded[1]), bits(m), "momentum of {dims:?}, step {t}");
            }
        }
    }
}

/// A weight kept `[in, out]` (burn's `Linear`) with `rows_are_inputs` steps exactly as
/// its `[out, in]` transpose does without it: the same orthogonalization (each is
/// taken wide) and the same scale by outputs over inputs, bit for bit, for a wide and
/// a tall weight.
#[test]
fn an_in_by_out_weight_steps_as_its_transpose() {
    let transpose = |v: &[f32], rows: usize, cols: usize| -> Vec<f32> {
        (0..rows * cols)
            .map(|i| v[(i % rows) * cols + i / rows])
            .collect()
    };
    for (outs, ins) in [(24usize, 40usize), (40, 24)] {
        let make = |rows_are_inputs| {
            let spec = F32States(Muon {
                lr: 0.02,
                rows_are_inputs,
                ..Muon::default()
            });
            CpuOptimizer::for_spec(&spec, PlanConfig::f32_params()).unwrap()
        };
        let (mut out_in, mut in_out) = (make(false), make(true));
        let mut rng = Rng::new(47);
        let w = rng.normals(outs * ins, 0.1);
        let a = out_in.add_shaped("w", &[outs, ins], &w).unwrap();
        let b = in_out
            .add_shaped("w", &[ins, outs], &transpose(&w, outs, ins))
            .unwrap();
        for _ in 0..3 {
            let g = rng.normals(outs * ins, 0.01);
            out_in.step(&[GradBuf::F32(&g)]).unwrap();
            in_out
                .step(&[GradBuf::F32(&transpose(&g, outs, ins))])
                .unwrap();
        }
        let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(in_out.master(b).unwrap()),
            bits(transpose(&out_in.master(a).unwrap(), outs, ins)),
            "[{outs}, {ins}]"
        );
    }
}

/// The orthogonalized step has about the same size whatever the gradient's scale:
/// each singular value of the update maps near 1, so a step of a square matrix moves
/// it by about `lr` per singular direction (RMS `lr / sqrt(n)` per element).
#[test]
fn the_step_size_does_not_follow_the_gradient_scale() {
    let n = 32;
    let mut rms = Vec::new();
    for scale in [1e-4f64, 1.0, 1e3] {
        let spec = F32States(Muon {
            lr: 0.01,
            weight_decay: 0.0,
            ..Muon::default()
        });
        let mut opt = CpuOptimizer::for_spec(&spec, PlanConfig::f32_params()).unwrap();
        let id = opt.add_shaped("w", &[n, n], &vec![0.0; n * n]).unwrap();
        let grad = Rng::new(5).normals(n * n, scale);
        opt.step(&[GradBuf::F32(&grad)]).unwrap();
        let w = opt.master(id).unwrap();
        rms.push((w.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / w.len() as f64).sqrt());
    }
    let expected = 0.01 / (n as f64).sqrt();
    for r in &rms {
        assert!(
            (r / expected - 1.0).abs() < 0.35,
            "step RMS {rms:?}, expected about {expected}"
        );
    }
    assert!((rms[0] / rms[2] - 1.0).abs() < 0.02, "{rms:?}");
}

/// Muon-24 with its 8-bit momentum holds 4.0625 bytes per parameter, 6.0625 with the
/// bf16 gradient.
#[test]
fn muon_holds_its_momentum_in_8_bits() {
    let plan = Muon::plan(PlanConfig::bf16(MasterMode::Int8)).unwrap();
    assert_eq!(plan.resident_bytes_per_param(), 4.0625);
    assert_eq!(
        plan.matrix_functions().as_deref(),
        Some("`orthogonalize`, `rows`, `cols`")
    );
    assert_eq!(plan.phases.len(), 1, "{plan}");
}

/// A matrix's shape decides its orthogonalization: the same values as `[8, 12]` and
/// as `[12, 8]` step differently, as a vector and as `[1, 96]` identically. A
/// replacement must keep each tensor's shape.
#[test]
fn the_shape_decides_the_matrix() {
    let config = PlanConfig::bf16(MasterMode::Int8);
    let values = Rng::new(3).normals(96, 0.1);
    let grad: Vec<bf16> = Rng::new(4)
        .normals(96, 0.01)
        .into_iter()
        .map(bf16::from_f32)
        .collect();
    let stepped = |dims: &[usize]| {
        let mut opt = CpuOptimizer::for_spec(&Muon::default(), config).unwrap();
        let id = opt.add_shaped("w", dims, &values).unwrap();
        opt.step(&[GradBuf::Bf16(&grad)]).unwrap();
        opt.master(id).unwrap()
    };
    let wide = stepped(&[8, 12]);
    assert_ne!(wide, stepped(&[12, 8]));
    assert_eq!(stepped(&[96]), stepped(&[1, 96]));

    let mut opt = CpuOptimizer::for_spec(&Muon::default(), config).unwrap();
    opt.add_shaped("w", &[8, 12], &values).unwrap();
    let plan = opt.plan().clone();
    let other = flashopt::HostTensor::from_f32_shaped(
        &plan,
        &values,
        flashopt::ir::layout::Shape::matrix(12, 8),
    );
    match opt.replace_tensors(vec![other]) {
        Err(RuntimeError::TensorShape { name, .. }) => assert_eq!(name, "w"),
        other => panic!("a replacement of another shape must be refused: {other:?}"),
    }
}

/// A checkpoint of Muon's compressed momentum resumes the same trajectory bit for bit;
/// a tensor of other dimensions (the same length) refuses it, naming the tensor.
#[test]
fn a_checkpoint_resumes_muon_and_keeps_its_shape() {
    let config = PlanConfig::bf16(MasterMode::Int8);
    let mut rng = Rng::new(8);
    let init = rng.normals(96, 0.1);
    let grads: Vec<Vec<bf16>> = (0..4)
        .map(|_| {
            rng.normals(96, 1e-2)
                .into_iter()
                .map(bf16::from_f32)
                .collect()
        })
        .collect();
    let fresh = |dims: &[usize]| {
        let mut opt = CpuOptimizer::for_spec(&Muon::default(), config).unwrap();
        opt.add_shaped("w", dims, &init).unwrap();
        opt
    };
    let step = |opt: &mut CpuOptimizer, g: &[bf16]| {
        assert!(opt.step(&[GradBuf::Bf16(g)]).unwrap().applied());
    };
    let mut straight = fresh(&[12, 8]);
    grads.iter().for_each(|g| step(&mut straight, g));
    let dir = std::env::temp_dir().join(format!("flashopt-muon-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("muon.safetensors");
    let mut first = fresh(&[12, 8]);
    step(&mut first, &grads[0]);
    step(&mut first, &grads[1]);
    first.save(&path).unwrap();
    let mut resumed = fresh(&[12, 8]);
    resumed.load(&path).unwrap();
    step(&mut resumed, &grads[2]);
    step(&mut resumed, &grads[3]);
    assert_eq!(
        resumed.tensor(TensorId(0)).unwrap(),
        straight.tensor(TensorId(0)).unwrap()
    );
    let mut other = fresh(&[8, 12]);
    let err = other.load(&path).unwrap_err().to_string();
    assert!(err.contains("`w`"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// torch 2.11 on an H100 (scripts/muon_fixtures.py; `tests/fixtures/muon/`).
const TORCH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/muon/torch.safetensors"
);

fn torch_tensor(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(TORCH).expect("the torch fixture");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor(name)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// The reference orthogonalization against torch's own (`_zeropower_via_newtonschulz`:
/// bf16 GEMMs in cuBLAS with the sums fused by `addmm`): the same matrix within a
/// cosine of 0.99 for every shape, wide and tall (measured: 0.99927, 0.99140, 1, 1,
/// 0.99997 in this order; why the tall 40 x 6 one is furthest is not known).
#[test]
fn the_orthogonalization_follows_torch() {
    let shapes = [(6, 40), (40, 6), (16, 16), (3, 5), (50, 130)];
    for (k, (rows, cols)) in shapes.into_iter().enumerate() {
        let input = torch_tensor(&format!("ns.input.{k}"));
        let expected = torch_tensor(&format!("ns.torch.{k}"));
        let got = orthogonalize(
            &input,
            rows,
            cols,
            &NewtonSchulz::MUON,
            MatrixPrecision::Bf16,
        );
        let c = cosine(&got, &expected);
        assert!(c > 0.99, "{rows}x{cols}: cosine {c}");
    }
}

/// Muon with f32 parameters and momentum follows `torch.optim.Muon(lr=0.02)` over
/// three steps of one 32 x 48 matrix: the parameters' distance to torch's is under 2%
/// of how far they moved.
#[test]
fn muon_follows_torch_muon() {
    let spec = F32States(Muon {
        lr: 0.02,
        ..Muon::default()
    });
    let mut opt = CpuOptimizer::for_spec(&spec, PlanConfig::f32_params()).unwrap();
    let start = torch_tensor("muon.param.0");
    let id = opt.add_shaped("w", &[32, 48], &start).unwrap();
    for t in 1..=3 {
        let grad = torch_tensor(&format!("muon.grad.{t}"));
        opt.step(&[GradBuf::F32(&grad)]).unwrap();
        let expected = torch_tensor(&format!("muon.param.{t}"));
        let got = opt.master(id).unwrap();
        let moved: f64 = expected
            .iter()
            .zip(&start)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        let apart: f64 = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        let ratio = (apart / moved).sqrt();
        assert!(ratio < 0.02, "step {t}: {ratio} of the displacement apart");
    }
}
