//! Steps reading each gradient where the trainer left it (`step_with_grads`,
//! `step_tensor_with_grad`), with the flat gradient buffer released: bit-equal to the
//! CPU reference, including lengths that are not multiples of 32 and a misaligned
//! gradient view; NaN skips; clipping; gradient release; the bytes the optimizer holds.

use flashopt::ir::interp::GradBuf;
use flashopt::runtime::{RuntimeError, StepOutcome};
use flashopt::{Optimizer, TensorId};
use flashopt_cubecl::cubecl::server::Handle;
use half::bf16;

use crate::guards::{Gpu, grads, pair, same};
use crate::{Client, client, report};

/// Tensors of every tail length kind: more regions than one launch binds (so small
/// tensors share launches, 2^16 whole groups and a tail among them), one large enough
/// to launch alone (2^19 whole groups and a tail) between them, one of 2^20 elements,
/// and more tensors with whole groups than one launch of the gradient check reduces
/// (12: a launch of 8 and one of 4).
const LENS: [usize; 14] = [
    1,
    33,
    95,
    100,
    (1 << 21) + 3,
    (1 << 24) + 5,
    7,
    64,
    257,
    1 << 20,
    32,
    4096,
    96,
    160,
];

/// Each gradient in a buffer of its own, exactly its bytes, as a trainer holds them;
/// tensor 2's behind two leading bytes (a view no 16-byte load may read in place).
fn trainer_buffers(client: &Client, g: &[Vec<bf16>]) -> Vec<Handle> {
    g.iter()
        .enumerate()
        .map(|(i, v)| {
            let mut bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            if i == 2 {
                bytes.splice(0..0, [0xAB, 0xCD]);
                return client.create_from_slice(&bytes).offset_start(2);
            }
            client.create_from_slice(&bytes)
        })
        .collect()
}

fn step_in_place(gpu: &mut Gpu, client: &Client, g: &[Vec<bf16>]) -> StepOutcome {
    let handles = trainer_buffers(client, g);
    let refs: Vec<&Handle> = handles.iter().collect();
    gpu.step_with_grads(&refs).unwrap()
}

#[test]
fn steps_read_gradients_where_the_trainer_left_them() {
    let client = client();
    let (mut cpu, mut gpu, mut rng) = pair(&client, &LENS, 41);
    let before = gpu.device_bytes();
    gpu.release_grad_buffer();
    let after = gpu.device_bytes();
    // What is released is exactly the gradient buffer: every group's 32 bf16 values
    // (`device_bytes` does not count the 4-byte placeholder bound in its place).
    let padded: usize = LENS.iter().map(|n| n.div_ceil(32) * 32).sum();
    let released = before - after == 2 * padded;
    let per_param = after as f64 / LENS.iter().sum::<usize>() as f64;
    assert!(matches!(gpu.step(), Err(RuntimeError::NoGradBuffer)));
    let mut equal = true;
    for _ in 0..3 {
        let g = grads(&mut rng, &LENS);
        let bufs: Vec<GradBuf<'_>> = g.iter().map(|g| GradBuf::Bf16(g)).collect();
        let (c, d) = (
            cpu.step(&bufs).unwrap(),
            step_in_place(&mut gpu, &client, &g),
        );
        equal &= c.applied() && d.applied() && same(&cpu, &gpu);
    }
    // A NaN in one trainer buffer: skipped on the device, named, nothing changed.
    let mut g = grads(&mut rng, &LENS);
    g[8][200] = bf16::NAN;
    let skipped = step_in_place(&mut gpu, &client, &g);
    let named = matches!(&skipped, StepOutcome::Skipped(f) if f.tensor == "t8" && f.index == 200);
    equal &= same(&cpu, &gpu);
    // Clipping from the in-place reduction.
    gpu.set_grad_clipping(Some(0.5)).unwrap();
    cpu.set_grad_clipping(Some(0.5)).unwrap();
    let g = grads(&mut rng, &LENS);
    let bufs: Vec<GradBuf<'_>> = g.iter().map(|g| GradBuf::Bf16(g)).collect();
    cpu.step(&bufs).unwrap();
    step_in_place(&mut gpu, &client, &g);
    let clipped = same(&cpu, &gpu);
    let line = format!(
        "| AdamW-24 in place | {} tensors, lengths {LENS:?} | 3 steps bit-equal: {} | NaN skipped and named: {} | clipped step bit-equal: {} | optimizer bytes {before} -> {after} with the gradient buffer released ({per_param:.3} per parameter, small tensors' padding included): {} |",
        LENS.len(),
        yes(equal),
        yes(named),
        yes(clipped),
        yes(released)
    );
    report(&line);
    assert!(equal && named && clipped && released, "{line}");
}

#[test]
fn gradient_release_in_place_equals_the_whole_step() {
    let client = client();
    let (mut cpu, mut gpu, mut rng) = pair(&client, &LENS, 43);
    gpu.release_grad_buffer();
    let mut equal = true;
    for _ in 0..2 {
        let g = grads(&mut rng, &LENS);
        let bufs: Vec<GradBuf<'_>> = g.iter().map(|g| GradBuf::Bf16(g)).collect();
        cpu.step(&bufs).unwrap();
        // Last layer first, each gradient dropped as soon as its tensor stepped.
        for i in (0..LENS.len()).rev() {
            let handle = trainer_buffers(&client, &g).swap_remove(i);
            let outcome = gpu.step_tensor_with_grad(TensorId(i), &handle).unwrap();
            equal &= outcome.applied();
        }
        gpu.finish_step();
        equal &= same(&cpu, &gpu);
    }
    // A gradient buffer shorter than its tensor is refused, naming it.
    let short = client.create_from_slice(&[0u8; 6]);
    let refused = matches!(
        gpu.step_tensor_with_grad(TensorId(1), &short),
        Err(RuntimeError::SourceTooSmall { name, .. }) if name == "t1"
    );
    let line = format!(
        "| AdamW-24 in place, tensor by tensor | 2 steps, last tensor first | bit-equal to the whole step: {} | a short gradient refused: {} |",
        yes(equal),
        yes(refused)
    );
    report(&line);
    assert!(equal && refused, "{line}");
}

fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "NO" }
}
