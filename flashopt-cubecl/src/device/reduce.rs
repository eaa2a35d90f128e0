//! The gradient reduction pass: the sum of squares of every real gradient element
//! of a step, for global-norm clipping and for finding NaN and infinity in
//! gradients a trainer wrote on the device.
//!
//! Squares are summed in f64: the square of any f32 is exact there, and no sum of
//! finite squares of f32 values overflows, so the sum is finite exactly when every
//! gradient is, and one reduction answers both questions. Each cube writes one
//! partial sum; the host adds the partials in order. The partition and the order of
//! every addition depend only on the element count, so the result is the same on
//! every run.

use cubecl::prelude::*;
use cubecl::server::Handle;
use flashopt_ir::{FloatDtype, GROUP_SIZE};

/// Units per cube of the reduction.
const UNITS: u32 = 256;
/// At most this many cubes (partial sums): enough to keep a large GPU's memory busy.
const MAX_CUBES: u32 = 2048;
/// Gradient elements per load: 16 bytes of bf16 or f16, a quarter of a group.
const VECTOR: usize = 8;

/// Each unit sums the squares of the vectors `ABSOLUTE_POS + k * units` (coalesced
/// across the cube), element by element in order; padding elements (at or past their
/// group's length in `info`) count as zero, whatever they hold. Then a tree over
/// shared memory, in a fixed order.
#[cube(launch_unchecked)]
fn square_sums<F: Float>(
    grad: &Array<Vector<F, Const<8>>>,
    info: &Array<u32>,
    partials: &mut Array<f64>,
    vectors: usize,
    rounds: u32,
) {
    let units = CUBE_COUNT * (CUBE_DIM as usize);
    let mut sum = f64::new(0.0);
    for k in 0..rounds {
        let v = ABSOLUTE_POS + (k as usize) * units;
        if v < vectors {
            let real = (info[v / 4] & 0xff) as usize;
            let first = (v % 4) * 8;
            let x = grad[v];
            #[unroll]
            for i in 0..8usize {
                let y = f64::cast_from(f32::cast_from(x[i]));
                let y = select(first + i < real, y, f64::new(0.0));
                sum += y * y;
            }
        }
    }
    let mut shared = SharedMemory::<f64>::new(256usize);
    let unit = UNIT_POS as usize;
    shared[unit] = sum;
    sync_cube();
    let mut width = 128usize;
    while width > 0 {
        if unit < width {
            shared[unit] = shared[unit] + shared[unit + width];
        }
        sync_cube();
        width /= 2;
    }
    if unit == 0 {
        partials[CUBE_POS] = shared[0];
    }
}

/// How the reduction spreads `groups` groups over cubes: (cubes, rounds per unit).
fn partition(groups: usize) -> (u32, u32) {
    let vectors = groups * (GROUP_SIZE / VECTOR);
    let cubes = vectors
        .div_ceil(UNITS as usize)
        .clamp(1, MAX_CUBES as usize) as u32;
    let units = (cubes * UNITS) as usize;
    let rounds = vectors.div_ceil(units).max(1);
    (
        cubes,
        u32::try_from(rounds).expect("fewer than 2^32 rounds"),
    )
}

/// Launch the reduction of a flat gradient buffer of `groups` 32-element groups
/// (`info`: the fused step's group info words, 0 < `groups`): the partial sums, one
/// f64 per cube, in stream order.
///
/// # Safety
/// `grad` must hold `groups * 32` elements of `dtype` and `info` `groups` words.
pub unsafe fn launch_square_sums<R: Runtime>(
    client: &ComputeClient<R>,
    dtype: FloatDtype,
    grad: &Handle,
    info: &Handle,
    groups: usize,
) -> Handle {
    let partials = client.empty(partial_count(groups) * 8);
    unsafe { launch_square_sums_into(client, dtype, grad, info, groups, &partials, 0) };
    partials
}

/// How many partial sums the reduction of `groups` groups writes.
pub fn partial_count(groups: usize) -> usize {
    partition(groups).0 as usize
}

/// As [`launch_square_sums`], writing the partial sums into `partials` from index
/// `at` on: several buffers' reductions (a gradient per tensor) share one read.
///
/// # Safety
/// As [`launch_square_sums`], and `partials` must hold `at + partial_count(groups)`
/// f64 values.
pub unsafe fn launch_square_sums_into<R: Runtime>(
    client: &ComputeClient<R>,
    dtype: FloatDtype,
    grad: &Handle,
    info: &Handle,
    groups: usize,
    partials: &Handle,
    at: usize,
) {
    let (cubes, rounds) = partition(groups);
    let vectors = groups * (GROUP_SIZE / VECTOR);
    let count = CubeCount::Static(cubes, 1, 1);
    let dim = CubeDim::new_1d(UNITS);
    let partials = partials.clone().offset_start(at as u64 * 8);
    unsafe {
        let g = ArrayArg::from_raw_parts(grad.clone(), vectors * VECTOR);
        let i = ArrayArg::from_raw_parts(info.clone(), groups);
        let p = ArrayArg::from_raw_parts(partials, cubes as usize);
        with_float_type!(dtype, F => square_sums::launch_unchecked::<F, R>(
            client, count, dim, g, i, p, vectors, rounds
        ))
    }
}

/// The sum of squares from the partial sums [`launch_square_sums`] gave, added on the
/// host in order. Blocks until the device has them. Not finite exactly when some real
/// gradient element is not.
pub fn sum_partials<R: Runtime>(client: &ComputeClient<R>, partials: Handle) -> f64 {
    let bytes = client.read_one_unchecked(partials);
    bytes
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_covers_every_element_once() {
        for groups in [1, 7, 8, 9, 1000, 8192, 8193, 1 << 20, (1 << 23) + 5] {
            let (cubes, rounds) = partition(groups);
            let units = cubes as usize * UNITS as usize;
            assert!(cubes <= MAX_CUBES);
            let vectors = groups * GROUP_SIZE / VECTOR;
            assert!(units * rounds as usize >= vectors, "{groups}");
            assert!(
                units * (rounds as usize - 1) < vectors,
                "{groups}: a round too many"
            );
        }
    }
}
