//! The matrix stage (Muon's orthogonalization, on cuBLAS or cubek-matmul) against the
//! CPU reference, within a tolerance (the GEMMs sum in their own order), and Muon's
//! step: its momentum bit for bit (it does not read the matrix stage), its master
//! weights close to the CPU's, from the flat buffer, the trainer's buffers and tensor
//! by tensor.

use flashopt::ir::Plan;
use flashopt::ir::interp::{GradBuf, HostTensor};
use flashopt::ir::layout::Shape;
use flashopt::ir::matrix::{MatrixPrecision, NewtonSchulz, cosine, orthogonalize};
use flashopt::optimizers::Muon;
use flashopt::{MasterMode, Optimizer, PlanConfig, TensorId};
use flashopt_cubecl::cubecl::server::Handle;
use flashopt_cubecl::device::matrix::{MatrixBatch, orthogonalize_batch};
use half::bf16;

use crate::common::Rng;
use crate::guards::pair_of;
use crate::{client, report};

/// Wide, tall, square, one row, fewer elements than a group, shapes of no tile
/// multiple (the CPU reference's products take seconds beyond these).
const SHAPES: [Shape; 7] = [
    Shape::matrix(6, 40),
    Shape::matrix(40, 6),
    Shape::matrix(64, 64),
    Shape::matrix(1, 50),
    Shape::matrix(3, 5),
    Shape::matrix(50, 130),
    Shape::matrix(200, 72),
];

/// Three matrices of each shape at unaligned offsets in one poisoned buffer: each
/// comes back within a cosine of 0.995 of the reference, and nothing else changes;
/// with the default (cuBLAS, which must load here), cubek-matmul's TMA routine on
/// matrices padded to 16-byte rows, and `ordered_double_mma` alone.
#[test]
fn the_matrix_stage_follows_the_reference() {
    use flashopt_cubecl::device::{blas, gemm};
    assert!(
        blas::loads(),
        "libcublas.so.13 must be on LD_LIBRARY_PATH for the GPU tests"
    );
    for strategy in ["cublas", "tma_or_ordered", "ordered_double_mma"] {
        assert!(gemm::set_strategy(strategy));
        matrix_stage_follows_the_reference_with(strategy);
    }
    assert!(gemm::set_strategy(gemm::STRATEGIES[0]));
}

fn matrix_stage_follows_the_reference_with(strategy: &str) {
    let client = client();
    let mut rng = Rng::new(91);
    let mut worst = 1.0f64;
    let mut lines = Vec::new();
    for shape in SHAPES {
        let per = shape.len;
        // Matrices at 7, 7 + per + 13, ...: a poisoned gap before and between.
        let offsets: Vec<usize> = (0..3).map(|k| 7 + k * (per + 13)).collect();
        let len = offsets[2] + per + 5;
        let poison = bf16::from_f32(-77.0);
        let mut host = vec![poison; len];
        let mut inputs = Vec::new();
        for &o in &offsets {
            let values: Vec<f32> = rng.normals(per, 0.02);
            for (i, v) in values.iter().enumerate() {
                host[o + i] = bf16::from_f32(*v);
            }
            inputs.push(values);
        }
        let buffer: Handle = client.create_from_slice(bytemuck_bf16(&host));
        let batch = MatrixBatch {
            offsets: offsets.clone(),
            rows: shape.rows(),
            cols: shape.cols(),
        };
        unsafe { orthogonalize_batch(&client, &buffer, len, &batch, &NewtonSchulz::MUON) }.unwrap();
        let bytes = client.read_one_unchecked(buffer);
        let out: Vec<bf16> = bytes
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]))
            .collect();
        let mut cos = 1.0f64;
        for (&o, values) in offsets.iter().zip(&inputs) {
            let expected = orthogonalize(
                values,
                shape.rows(),
                shape.cols(),
                &NewtonSchulz::MUON,
                MatrixPrecision::Bf16,
            );
            let got: Vec<f32> = out[o..o + per].iter().map(|x| x.to_f32()).collect();
            cos = cos.min(cosine(&got, &expected));
        }
        let outside = (0..len)
            .all(|i| offsets.iter().any(|&o| (o..o + per).contains(&i)) || out[i] == poison);
        assert!(outside, "{shape}: the stage wrote outside its matrices");
        worst = worst.min(cos);
        lines.push(format!("{shape} {cos:.6}"));
    }
    report(&format!(
        "| matrix stage, {strategy} | 3 matrices a shape, cosine to the CPU reference (worst per shape) | {} |",
        lines.join(", ")
    ));
    assert!(
        worst > 0.995,
        "the matrix stage is off the reference: {lines:?}"
    );
}

fn bytemuck_bf16(values: &[bf16]) -> &[u8] {
    // SAFETY: bf16 is two plain bytes.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), values.len() * 2) }
}

/// A Muon tensor stepped on the GPU against the CPU's: whether the momentum is the
/// same bits, and the master weights' distance to the CPU's over how far the CPU's
/// moved from `start`.
pub fn against_the_cpu(
    plan: &Plan,
    gpu: &HostTensor,
    cpu: &HostTensor,
    start: &[f32],
) -> (bool, f64) {
    let (gd, cd) = (gpu.decoded(plan), cpu.decoded(plan));
    let same = gd[1]
        .iter()
        .zip(&cd[1])
        .all(|(a, b)| a.to_bits() == b.to_bits());
    let squared = |x: &[f32], y: &[f32]| -> f64 {
        x.iter().zip(y).map(|(a, b)| f64::from(a - b).powi(2)).sum()
    };
    let (moved, apart) = (squared(&cd[0], start), squared(&gd[0], &cd[0]));
    (same, (apart / moved.max(f64::MIN_POSITIVE)).sqrt())
}

/// Muon-24 on the GPU: after each of five steps (three from the flat buffer, one from
/// the trainer's buffers, one tensor by tensor) the momentum equals the CPU's bit for
/// bit, and the master weights' distance to the CPU's is a small part of how far they
/// moved.
#[test]
fn muon_steps_close_to_the_cpu() {
    let client = client();
    let config = PlanConfig::bf16(MasterMode::Int8);
    let spec = Muon {
        lr: 0.02,
        ..Muon::default()
    };
    let (mut cpu, mut gpu, mut rng) = pair_of(&spec, config, &client, &SHAPES, 93);
    let plan = cpu.plan().clone();
    let start: Vec<Vec<f32>> = (0..SHAPES.len())
        .map(|i| cpu.master(TensorId(i)).unwrap())
        .collect();
    let mut momentum_equal = Vec::new();
    let mut worst = 0.0f64;
    for round in 0..5 {
        let g: Vec<Vec<bf16>> = SHAPES
            .iter()
            .map(|s| {
                rng.normals(s.len, 0.02)
                    .into_iter()
                    .map(bf16::from_f32)
                    .collect()
            })
            .collect();
        let bufs: Vec<GradBuf<'_>> = g.iter().map(|g| GradBuf::Bf16(g)).collect();
        cpu.step(&bufs).unwrap();
        match round {
            0..=2 => {
                gpu.write_grads(&bufs).unwrap();
                gpu.step().unwrap();
            }
            3 => {
                let handles: Vec<Handle> = bufs
                    .iter()
                    .map(|b| {
                        client
                            .create_from_slice(&flashopt::runtime::raw::part_le_bytes(b.as_part()))
                    })
                    .collect();
                let refs: Vec<&Handle> = handles.iter().collect();
                gpu.step_with_grads(&refs).unwrap();
            }
            _ => {
                gpu.write_grads(&bufs).unwrap();
                for i in (0..SHAPES.len()).rev() {
                    gpu.step_tensor(TensorId(i)).unwrap();
                }
                gpu.finish_step();
            }
        }
        let down = gpu.download();
        let mut equal = true;
        for (i, (_, t)) in down.iter().enumerate() {
            let (same, apart) =
                against_the_cpu(&plan, t, cpu.tensor(TensorId(i)).unwrap(), &start[i]);
            equal &= same;
            worst = worst.max(apart);
        }
        momentum_equal.push(equal);
    }
    report(&format!(
        "| Muon ({config}) | shapes {} | 3 flat steps, 1 in place, 1 tensor by tensor: momentum bit-equal {momentum_equal:?}; masters' distance to the CPU's over their displacement, worst {worst:.2e} |",
        SHAPES.map(|s| s.to_string()).join(", ")
    ));
    assert!(momentum_equal.iter().all(|&e| e), "{momentum_equal:?}");
    assert!(worst < 0.05, "masters {worst} apart");
}

/// The matrix stage's time per call (host clock around device syncs, one call to
/// warm up, the median of 5) on GPT-2's matrix batches and one 16384 x 16384 matrix,
/// with cuBLAS (the default), cubek-matmul's TMA routine and `ordered_double_mma`
/// (an error where one cannot run a product).
#[test]
fn matrix_stage_times() {
    use flashopt_cubecl::device::gemm;
    let client = client();
    let batches: [(usize, usize, usize); 6] = [
        (12, 768, 2304),
        (12, 768, 768),
        (12, 3072, 768),
        (12, 768, 3072),
        (1, 50257, 768),
        (1, 16384, 16384),
    ];
    for strategy in ["cublas", "tma_or_ordered", "ordered_double_mma"] {
        assert!(gemm::set_strategy(strategy));
        let mut lines = Vec::new();
        for (count, rows, cols) in batches {
            let per = rows * cols;
            let len = count * per;
            let host: Vec<bf16> = (0..len)
                .map(|i| bf16::from_f32(((i % 2003) as f32 - 1001.0) * 1e-3))
                .collect();
            let buffer = client.create_from_slice(bytemuck_bf16(&host));
            let batch = MatrixBatch {
                offsets: (0..count).map(|k| k * per).collect(),
                rows,
                cols,
            };
            let call = || {
                let done = unsafe {
                    orthogonalize_batch(&client, &buffer, len, &batch, &NewtonSchulz::MUON)
                };
                flashopt_cubecl::cubecl::future::block_on(client.sync()).unwrap();
                done
            };
            if let Err(e) = call() {
                lines.push(format!("{count} x {rows}x{cols}: {e}"));
                continue;
            }
            let mut times: Vec<f64> = (0..5)
                .map(|_| {
                    let start = std::time::Instant::now();
                    call().unwrap();
                    start.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            times.sort_by(f64::total_cmp);
            lines.push(format!("{count} x {rows}x{cols}: {:.3} ms", times[2]));
        }
        report(&format!(
            "| matrix stage times, {strategy} | {} |",
            lines.join(", ")
        ));
    }
    assert!(gemm::set_strategy(gemm::STRATEGIES[0]));
}
