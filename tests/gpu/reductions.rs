//! The optimizers that reduce over each tensor (LAMB, Cautious AdamW): their phase
//! kernels, the per-tensor sums and the step against the CPU reference, bit for bit,
//! from the flat gradient buffer, from the trainer's buffers, and tensor by tensor.

use flashopt::ir::interp::GradBuf;
use flashopt::optimizers::{CautiousAdamW, Lamb};
use flashopt::{MasterMode, OptimizerSpec, PlanConfig, TensorId};
use flashopt_cubecl::cubecl::server::Handle;
use half::bf16;

use crate::common::Rng;
use crate::guards::{pair_of, same};
use crate::{Client, client, report};

/// A tensor of one element, short last groups and chunks, one with more chunks than
/// strands (600001 elements: 587 chunks of 32 groups), one of 2^20.
const LENS: [usize; 6] = [1, 33, 4099, 600_001, 1 << 20, 95];

fn grads(rng: &mut Rng) -> Vec<Vec<f32>> {
    LENS.iter().map(|&n| rng.normals(n, 0.02)).collect()
}

/// Three steps from the flat buffer, one from the trainer's buffers, one tensor by
/// tensor: after each, the GPU state equals the CPU reference's bit for bit.
fn steps_bit_equal<S: OptimizerSpec>(
    name: &str,
    spec: &S,
    config: PlanConfig,
    client: &Client,
) -> bool {
    let (mut cpu, mut gpu, mut rng) = pair_of(spec, config, client, &LENS, 71);
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
                for i in (0..LENS.len()).rev() {
                    gpu.step_tensor(TensorId(i)).unwrap();
                }
                gpu.finish_step();
            }
        }
        results.push(same(&cpu, &gpu));
    }
    let ok = results.iter().all(|&r| r);
    report(&format!(
        "| {name} ({config}) | lengths {LENS:?} | 3 flat steps, 1 in place, 1 tensor by tensor, bit-equal after each: {results:?} |"
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
    }
    assert!(
        ok,
        "a reducing optimizer's GPU step differs from the CPU reference"
    );
}
