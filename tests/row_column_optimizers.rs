//! The optimizers with states per row and per column (Adafactor, Adam-mini) against
//! independent f64 implementations of their references, and what the row and column
//! scopes mean through the CPU optimizer: shapes, storage, checkpoints.

mod common;

use common::Rng;
use flashopt::ir::interp::GradBuf;
use flashopt::optimizers::{Adafactor, AdafactorMomentum, AdamMini};
use flashopt::runtime::{RuntimeError, TensorId};
use flashopt::{CpuOptimizer, F32States, MasterMode, Optimizer, OptimizerSpec, PlanConfig};
use half::bf16;

fn rms(x: &[f64]) -> f64 {
    (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64).sqrt()
}

/// `torch.optim.Adafactor`'s step on one `rows x cols` tensor (a vector: one row), in
/// f64, factored as torch factors a matrix.
struct AdafactorF64 {
    rows: usize,
    cols: usize,
    r: Vec<f64>,
    c: Vec<f64>,
    /// The paper's first moment of the clipped update, with its decay (`None`:
    /// torch's Adafactor, which has none).
    momentum: Option<(f64, Vec<f64>)>,
}

impl AdafactorF64 {
    fn new(rows: usize, cols: usize) -> AdafactorF64 {
        AdafactorF64 {
            rows,
            cols,
            r: vec![0.0; rows],
            c: vec![0.0; cols],
            momentum: None,
        }
    }

    fn step(&mut self, p: &mut [f64], grad: &[f32], t: i32, (lr, wd): (f64, f64)) {
        let (eps1, eps2, d) = (f64::from(f32::EPSILON), 1e-3, 1.0);
        let (rows, cols) = (self.rows, self.cols);
        let g = |i: usize, j: usize| f64::from(grad[i * cols + j]);
        let decay = f64::from(t).powf(-0.8);
        let alpha = rms(p).max(eps2) * lr.min(1.0 / f64::from(t).sqrt());
        for i in 0..rows {
            let mean = (0..cols).map(|j| g(i, j) * g(i, j)).sum::<f64>() / cols as f64;
            self.r[i] += decay * (mean - self.r[i]);
        }
        for j in 0..cols {
            let mean = (0..rows).map(|i| g(i, j) * g(i, j)).sum::<f64>() / rows as f64;
            self.c[j] += decay * (mean - self.c[j]);
        }
        let mean_r = (self.r.iter().sum::<f64>() / rows as f64).max(eps1);
        let u: Vec<f64> = (0..rows * cols)
            .map(|k| {
                let v = self.c[k % cols] * (self.r[k / cols] / mean_r);
                g(k / cols, k % cols) / v.max(eps1 * eps1).sqrt()
            })
            .collect();
        let clip = (rms(&u) / d).max(1.0);
        match &mut self.momentum {
            None => {
                for (w, u) in p.iter_mut().zip(&u) {
                    *w = *w * (1.0 - lr * wd) - alpha / clip * u;
                }
            }
            Some((b1, m)) => {
                for ((w, u), m) in p.iter_mut().zip(&u).zip(m.iter_mut()) {
                    *m = *b1 * *m + (1.0 - *b1) * (u / clip);
                    *w = *w * (1.0 - lr * wd) - alpha * *m;
                }
            }
        }
    }
}

/// Adam-mini's step in f64: one second moment per row.
struct AdamMiniF64 {
    cols: usize,
    m: Vec<f64>,
    v: Vec<f64>,
}

impl AdamMiniF64 {
    fn step(&mut self, p: &mut [f64], grad: &[f32], t: i32, (lr, wd): (f64, f64)) {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        let (bias1, bias2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for (i, row) in grad.chunks(self.cols).enumerate() {
            let mean = row.iter().map(|&g| f64::from(g).powi(2)).sum::<f64>() / self.cols as f64;
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * mean;
        }
        for (k, w) in p.iter_mut().enumerate() {
            self.m[k] = b1 * self.m[k] + (1.0 - b1) * f64::from(grad[k]);
            let denom = (self.v[k / self.cols] / bias2).sqrt() + eps;
            *w = *w * (1.0 - lr * wd) - lr * (self.m[k] / bias1) / denom;
        }
    }
}

/// Tensors of several shapes: a matrix, a vector (one row), a 3-D tensor (6 rows of
/// 9), rows of one element, fewer elements than a group, and tensors over several of
/// the interpreter's parallel blocks of 2048 elements: rows that cross a block's end
/// and are no multiple of 32, rows of a block's size, one row over three blocks.
const SHAPES: [&[usize]; 8] = [
    &[6, 40],
    &[50],
    &[3, 2, 9],
    &[9, 1],
    &[5],
    &[70, 50],
    &[3, 1000],
    &[1, 5000],
];

fn rows_cols(dims: &[usize]) -> (usize, usize) {
    let cols = *dims.last().unwrap();
    (dims.iter().product::<usize>() / cols, cols)
}

/// Steps tensor `k`'s f64 parameters with its gradient at step `t`.
type Reference<'a> = dyn FnMut(usize, &mut [f64], &[f32], i32) + 'a;

/// The worst relative distance over `steps` steps between the CPU optimizer's f32
/// master weights and an f64 reference stepping the same gradients.
fn worst_distance(opt: &mut CpuOptimizer, reference: &mut Reference, steps: i32, seed: u64) -> f64 {
    let mut rng = Rng::new(seed);
    let mut params: Vec<Vec<f64>> = (0..SHAPES.len())
        .map(|k| {
            let init = rng.normals(SHAPES[k].iter().product(), 0.05);
            opt.add_shaped(&format!("w{k}"), SHAPES[k], &init).unwrap();
            init.iter().map(|&x| f64::from(x)).collect()
        })
        .collect();
    let mut worst = 0.0f64;
    for t in 1..=steps {
        let grads: Vec<Vec<f32>> = params
            .iter()
            .enumerate()
            // Rows of different scales, so that factoring matters.
            .map(|(k, p)| {
                let cols = rows_cols(SHAPES[k]).1;
                let noise = rng.normals(p.len(), 0.01);
                noise
                    .iter()
                    .enumerate()
                    .map(|(i, g)| g * (1.0 + (i / cols) as f32))
                    .collect()
            })
            .collect();
        let bufs: Vec<GradBuf> = grads.iter().map(|g| GradBuf::F32(g)).collect();
        assert!(opt.step(&bufs).unwrap().applied());
        for (k, p) in params.iter_mut().enumerate() {
            reference(k, p, &grads[k], t);
            let got = opt.master(TensorId(k)).unwrap();
            let diff: Vec<f64> = got
                .iter()
                .zip(p.iter())
                .map(|(&a, b)| f64::from(a) - b)
                .collect();
            worst = worst.max(rms(&diff) / rms(p));
        }
    }
    worst
}

/// Adafactor in f32 follows its arithmetic in f64 within 1e-5 over 30 steps: torch's
/// for a matrix, and a vector or a 3-D tensor factored as flashopt factors them (one
/// row; 6 rows of 9), docs/OPTIMIZERS.md.
#[test]
fn adafactor_follows_its_reference_in_f64() {
    let (lr, wd) = (1e-2, 0.1);
    let spec = F32States(Adafactor {
        weight_decay: wd,
        ..Adafactor::default()
    });
    let mut opt = CpuOptimizer::for_spec(&spec, PlanConfig::f32_params()).unwrap();
    let mut refs: Vec<AdafactorF64> = SHAPES
        .iter()
        .map(|d| {
            let (rows, cols) = rows_cols(d);
            AdafactorF64::new(rows, cols)
        })
        .collect();
    let mut reference = |k: usize, p: &mut [f64], g: &[f32], t| refs[k].step(p, g, t, (lr, wd));
    let worst = worst_distance(&mut opt, &mut reference, 30, 21);
    assert!(worst < 1e-5, "Adafactor drifted {worst:e} from f64");
}

/// Adafactor with the paper's first moment, in f32, follows its arithmetic in f64
/// within 1e-5 over 30 steps.
#[test]
fn adafactor_with_momentum_follows_its_reference_in_f64() {
    let (lr, wd) = (1e-2, 0.1);
    let spec = F32States(AdafactorMomentum {
        weight_decay: wd,
        ..AdafactorMomentum::default()
    });
    let mut opt = CpuOptimizer::for_spec(&spec, PlanConfig::f32_params()).unwrap();
    let mut refs: Vec<AdafactorF64> = SHAPES
        .iter()
        .map(|d| {
            let (rows, cols) = rows_cols(d);
            AdafactorF64 {
                momentum: Some((0.9, vec![0.0; rows * cols])),
                ..AdafactorF64::new(rows, cols)
            }
        })
        .collect();
    let mut reference = |k: usize, p: &mut [f64], g: &[f32], t| refs[k].step(p, g, t, (lr, wd));
    let worst = worst_distance(&mut opt, &mut reference, 30, 23);
    assert!(
        worst < 1e-5,
        "Adafactor with momentum drifted {worst:e} from f64"
    );
}

/// Adam-mini with an f32 momentum follows the paper in f64 within 1e-5 over 40 steps.
#[test]
fn adam_mini_follows_the_paper_in_f64() {
    let (lr, wd) = (1e-3, 0.1);
    let spec = F32States(AdamMini::default());
    let mut opt = CpuOptimizer::for_spec(&spec, PlanConfig::f32_params()).unwrap();
    let mut refs: Vec<AdamMiniF64> = SHAPES
        .iter()
        .map(|d| {
            let (rows, cols) = rows_cols(d);
            AdamMiniF64 {
                cols,
                m: vec![0.0; rows * cols],
                v: vec![0.0; rows],
            }
        })
        .collect();
    let mut reference = |k: usize, p: &mut [f64], g: &[f32], t| refs[k].step(p, g, t, (lr, wd));
    let worst = worst_distance(&mut opt, &mut reference, 40, 22);
    assert!(worst < 1e-5, "Adam-mini drifted {worst:e} from f64");
}

/// A state per row holds one f32 per row, per column one per column: Adafactor-24
/// holds 3 bytes per parameter of a matrix besides them, Adafactor with its 8-bit
/// momentum and Adam-mini-24 4.0625.
#[test]
fn row_and_column_states_hold_one_value_per_row_and_column() {
    let config = PlanConfig::bf16(MasterMode::Int8);
    let plan = Adafactor::plan(config).unwrap();
    assert_eq!(plan.resident_bytes_per_param(), 3.0);
    assert_eq!(
        AdamMini::plan(config).unwrap().resident_bytes_per_param(),
        4.0625
    );
    assert_eq!(
        AdafactorMomentum::plan(config)
            .unwrap()
            .resident_bytes_per_param(),
        4.0625
    );
    let mut opt = CpuOptimizer::for_spec(&Adafactor::default(), config).unwrap();
    let id = opt.add_shaped("w", &[3, 4, 5], &[0.25; 60]).unwrap();
    let tensor = opt.tensor(id).unwrap();
    let count = |name: &str| tensor.part(&plan, name).unwrap().len();
    assert_eq!((count("r::codes"), count("c::codes")), (12, 5));
    assert_eq!(
        tensor.parts.iter().map(|p| p.len()).sum::<usize>(),
        60 + 60 + 12 + 5
    );
}

/// The shape decides the factors: the same values as one row or as a matrix step
/// differently; as a vector or as `[1, n]` (one row both) identically. Dimensions
/// that do not hold the values are refused, and nothing is registered.
#[test]
fn the_shape_decides_rows_and_columns() {
    let config = PlanConfig::bf16(MasterMode::Int8);
    let mut rng = Rng::new(5);
    let init = rng.normals(64, 0.1);
    let grad: Vec<bf16> = (0..64)
        // Squares that no product of a row's and a column's factor gives exactly.
        .map(|i| bf16::from_f32(0.01 * (1.0 + (i / 8) as f32) * (1.0 + (i % 5) as f32)))
        .collect();
    let stepped = |dims: &[usize]| {
        let mut opt = CpuOptimizer::for_spec(&Adafactor::default(), config).unwrap();
        let id = opt.add_shaped("w", dims, &init).unwrap();
        opt.step(&[GradBuf::Bf16(&grad)]).unwrap();
        opt.master(id).unwrap()
    };
    assert_eq!(stepped(&[64]), stepped(&[1, 64]));
    assert_ne!(stepped(&[64]), stepped(&[8, 8]));
    let mut opt = CpuOptimizer::for_spec(&Adafactor::default(), config).unwrap();
    let err = opt.add_shaped("w", &[5, 8], &init).unwrap_err();
    assert!(matches!(err, RuntimeError::ShapeMismatch { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "tensor `w`: dimensions [5, 8] hold 40 elements, but 64 values were given; nothing was registered"
    );
    assert!(opt.add_shaped("w", &[8, 8], &init).is_ok());
}

/// Each tensor's rows and columns are its own: stepped together or alone, a tensor
/// ends bit for bit the same.
#[test]
fn rows_and_columns_are_per_tensor() {
    let config = PlanConfig::bf16(MasterMode::Int8);
    let mut rng = Rng::new(6);
    let dims: [&[usize]; 2] = [&[7, 33], &[129]];
    let inits: Vec<Vec<f32>> = dims
        .iter()
        .map(|d| rng.normals(d.iter().product(), 0.1))
        .collect();
    let grads: Vec<Vec<bf16>> = inits
        .iter()
        .map(|i| {
            rng.normals(i.len(), 1e-2)
                .into_iter()
                .map(bf16::from_f32)
                .collect()
        })
        .collect();
    let mut together = CpuOptimizer::for_spec(&AdamMini::default(), config).unwrap();
    for (k, d) in dims.iter().enumerate() {
        together.add_shaped(&format!("w{k}"), d, &inits[k]).unwrap();
    }
    let bufs: Vec<GradBuf> = grads.iter().map(|g| GradBuf::Bf16(g)).collect();
    for _ in 0..3 {
        together.step(&bufs).unwrap();
    }
    for (k, d) in dims.iter().enumerate() {
        let mut alone = CpuOptimizer::for_spec(&AdamMini::default(), config).unwrap();
        alone.add_shaped("w", d, &inits[k]).unwrap();
        for _ in 0..3 {
            alone.step(&[GradBuf::Bf16(&grads[k])]).unwrap();
        }
        assert_eq!(
            alone.tensor(TensorId(0)).unwrap(),
            together.tensor(TensorId(k)).unwrap()
        );
    }
}

/// The f32 export holds a state per row as one value per row, per column as one per
/// column; a tensor whose rows differ from the registered ones is refused, and one
/// whose rows do not tile it is refused by the interpreter's check.
#[test]
fn exports_and_replacements_keep_rows_and_columns() {
    let config = PlanConfig::bf16(MasterMode::Int8);
    let mut rng = Rng::new(4);
    let init = rng.normals(24, 0.1);
    let mut opt = CpuOptimizer::for_spec(&Adafactor::default(), config).unwrap();
    let id = opt.add_shaped("w", &[4, 6], &init).unwrap();
    let grad: Vec<bf16> = rng
        .normals(24, 1e-2)
        .into_iter()
        .map(bf16::from_f32)
        .collect();
    opt.step(&[GradBuf::Bf16(&grad)]).unwrap();
    let dir = std::env::temp_dir().join(format!("flashopt-rows-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("adafactor-f32.safetensors");
    opt.export_f32(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let plan = opt.plan().clone();
    let tensor = opt.tensor(id).unwrap().clone();
    for (key, part, count) in [("w::r", "r::codes", 4), ("w::c", "c::codes", 6)] {
        let view = file.tensor(key).unwrap();
        assert_eq!(view.shape(), [count], "{key}");
        let stored = tensor.part(&plan, part).unwrap().to_f32().unwrap();
        let exported: Vec<f32> = view
            .data()
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(exported, stored, "{key}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let as_vector = flashopt::ir::interp::HostTensor::from_parts(24, tensor.parts.clone());
    let err = opt
        .replace_tensors(vec![as_vector])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "tensor `w`: 1 x 24 (rows x row length), expected 4 x 6 (its registered shape): the plan keeps values per row or per column"
    );
    let untiled = flashopt::ir::layout::Shape {
        len: 24,
        row_len: 5,
    };
    let untiled = flashopt::ir::interp::HostTensor::from_parts(untiled, tensor.parts.clone());
    let err = flashopt::ir::interp::check_tensor(&plan, &untiled).unwrap_err();
    assert_eq!(
        err.to_string(),
        "rows of 5 elements do not tile the tensor's 24 elements"
    );
    opt.replace_tensors(vec![tensor.clone()]).unwrap();
    assert_eq!(opt.tensor(id).unwrap(), &tensor);
}

/// A checkpoint holds the row and column states: saved mid-run and loaded into a
/// fresh optimizer with the same shapes, the next steps are the uninterrupted run's;
/// loaded into one whose tensor has other rows, it is refused.
#[test]
fn an_adafactor_checkpoint_resumes_the_same_trajectory() {
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
        let mut opt = CpuOptimizer::for_spec(&Adafactor::default(), config).unwrap();
        opt.add_shaped("w", dims, &init).unwrap();
        opt
    };
    let step = |opt: &mut CpuOptimizer, g: &[bf16]| {
        assert!(opt.step(&[GradBuf::Bf16(g)]).unwrap().applied());
    };
    let mut straight = fresh(&[12, 8]);
    grads.iter().for_each(|g| step(&mut straight, g));
    let dir = std::env::temp_dir().join(format!("flashopt-adafactor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("adafactor.safetensors");
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
    assert!(
        err.contains("row length of tensor `w` is `8`, this optimizer has `12`"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
