//! The optimizers that reduce over each tensor (LAMB, Cautious AdamW), each row
//! (Adam-mini) or each row and column (Adafactor, with and without momentum): their
//! phase kernels (tiled where they reduce over columns), the per-tensor, per-row and
//! per-column sums, the per-row and per-column states and the step against the CPU
//! reference, bit for bit, from the flat gradient buffer, from the trainer's buffers,
//! and tensor by tensor.

use flashopt::ir::interp::GradBuf;
use flashopt::ir::interp::HostTensor;
use flashopt::ir::layout::Shape;
use flashopt::optimizers::{Adafactor, AdafactorMomentum, AdamMini, CautiousAdamW, Lamb};
use flashopt::runtime::{CpuOptimizer, RuntimeError};
use flashopt::{GpuOptimizer, MasterMode, OptimizerSpec, PlanConfig, TensorId};
use flashopt_cubecl::cubecl::server::Handle;
use half::bf16;

use crate::common::Rng;
use crate::guards::{pair_of, same};
use crate::{Client, client, report};

/// A tensor of one element, short last groups and chunks, one with more chunks than
/// strands (600001 elements: 587 chunks of 32 groups), one of 2^20 (1024 rows of one
/// chunk; columns of 32 bands, one chunk); rows of two groups, and of 33 groups (two
/// chunks a row); columns of 1100 rows (35 bands, the last of 12 rows: two chunks a
/// column).
const SHAPES: [Shape; 9] = [
    Shape::vector(1),
    Shape::vector(33),
    Shape::vector(4099),
    Shape::vector(600_001),
    Shape::matrix(1024, 1024),
    Shape::vector(95),
    Shape::matrix(3, 64),
    Shape::matrix(5, 1056),
    Shape::matrix(1100, 64),
];

fn grads(rng: &mut Rng) -> Vec<Vec<f32>> {
    SHAPES.iter().map(|s| rng.normals(s.len, 0.02)).collect()
}

/// Three steps from the flat buffer, one from the trainer's buffers, one tensor by
/// tensor: after each, the GPU state equals the CPU reference's bit for bit.
fn steps_bit_equal<S: OptimizerSpec>(
    name: &str,
    spec: &S,
    config: PlanConfig,
    client: &Client,
) -> bool {
    let (mut cpu, mut gpu, mut rng) = pair_of(spec, config, client, &SHAPES, 71);
    let bf16_grads = config.grad == flashopt::FloatDtype::Bf16;
    let mut results = Vec::new();
    for round in 0..5 {
        let g32 = grads(&mut rng);
        let g16: Vec<Vec<bf16>> = g32
            .iter()
            .map(|g| g.iter().copied().map(bf16::from_f32).collect())
            .collect();
        let bufs: Vec<GradBuf<'_>> = if bf16_grads {
            g16.iter().map(|g| GradBuf::Bf16(g)).collect()
        } else {
            g32.iter().map(|g| GradBuf::F32(g)).collect()
        };
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
        results.push(same(&cpu, &gpu));
    }
    let ok = results.iter().all(|&r| r);
    report(&format!(
        "| {name} ({config}) | shapes {shapes} | 3 flat steps, 1 in place, 1 tensor by tensor, bit-equal after each: {results:?} |",
        shapes = SHAPES.map(|s| s.to_string()).join(", ")
    ));
    ok
}

#[test]
fn reducing_optimizers_step_bit_equal_to_the_cpu() {
    let client = client();
    let mut ok = true;
    for config in [PlanConfig::bf16(MasterMode::Int8), PlanConfig::f32_params()] {
        ok &= steps_bit_equal("Lamb", &Lamb::default(), config, &client);
        ok &= steps_bit_equal("CautiousAdamW", &CautiousAdamW::default(), config, &client);
        ok &= steps_bit_equal("AdamMini", &AdamMini::default(), config, &client);
        ok &= steps_bit_equal("Adafactor", &Adafactor::default(), config, &client);
        ok &= steps_bit_equal(
            "AdafactorMomentum",
            &AdafactorMomentum::default(),
            config,
            &client,
        );
    }
    assert!(
        ok,
        "a reducing optimizer's GPU step differs from the CPU reference"
    );
}

/// What the kernels cannot step is refused by name before anything is uploaded: values
/// per row or column of a tensor whose rows do not start 32-element groups; from host
/// tensors and from a CPU optimizer.
#[test]
fn rows_and_columns_across_groups_are_refused() {
    let client = client();
    let config = PlanConfig::bf16(MasterMode::Int8);
    let mini = AdamMini::plan(config).unwrap();
    let hyper = AdamMini::default().hyper_values().unwrap();
    let across = HostTensor::from_f32_shaped(&mini, &[0.5; 6 * 40], Shape::matrix(6, 40));
    let err = GpuOptimizer::from_host(client.clone(), mini, hyper, vec![("w".into(), across)])
        .err()
        .expect("rows of 40 elements are refused");
    assert!(
        matches!(&err, RuntimeError::RowsAcrossGroups { name, row_len: 40, .. } if name == "w"),
        "{err}"
    );
    let mut cpu = CpuOptimizer::for_spec(&Adafactor::default(), config).unwrap();
    cpu.add_shaped("fine", &[4, 64], &[0.5; 256]).unwrap();
    cpu.add_shaped("w", &[6, 40], &[0.5; 240]).unwrap();
    let err = GpuOptimizer::from_cpu(client, cpu)
        .err()
        .expect("columns of rows of 40 elements are refused");
    assert!(
        matches!(&err, RuntimeError::RowsAcrossGroups { name, row_len: 40, .. } if name == "w"),
        "{err}"
    );
    report(&format!("- refused: {err}"));
}
