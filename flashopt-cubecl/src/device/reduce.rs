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
/// Gradient buffers one launch of [`launch_batched_square_sums`] reduces.
pub const BATCH: usize = 8;
/// Words per buffer in the batched reduction's region table.
const REGION_WORDS: usize = 5;

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
    let sum = unit_square_sum::<F>(grad, info, 0, ABSOLUTE_POS, units, vectors, rounds);
    store_cube_sum(sum, partials, CUBE_POS);
}

/// [`square_sums`] over up to [`BATCH`] buffers in one launch: each buffer (a tensor's
/// gradient where the trainer left it) has its own run of cubes, which reduce it
/// exactly as a launch of [`square_sums`] over it alone would, so that the partial
/// sums (one per cube, in cube order) are the same values in the same order. `regions`
/// holds [`REGION_WORDS`] words per buffer: its first cube, its cubes, its first group
/// in `info`, its vectors and the rounds per unit; a buffer the launch does not use
/// has its first cube at `u32::MAX`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn batched_square_sums<F: Float>(
    g0: &Array<Vector<F, Const<8>>>,
    g1: &Array<Vector<F, Const<8>>>,
    g2: &Array<Vector<F, Const<8>>>,
    g3: &Array<Vector<F, Const<8>>>,
    g4: &Array<Vector<F, Const<8>>>,
    g5: &Array<Vector<F, Const<8>>>,
    g6: &Array<Vector<F, Const<8>>>,
    g7: &Array<Vector<F, Const<8>>>,
    info: &Array<u32>,
    regions: &Array<u32>,
    partials: &mut Array<f64>,
) {
    // The cube's buffer: the last whose first cube is at or before it (the same for
    // every unit of the cube).
    let cube = CUBE_POS as u32;
    let mut r = 0usize;
    #[unroll]
    for k in 1..BATCH {
        if cube >= regions[k * REGION_WORDS] {
            r = k;
        }
    }
    let words = r * REGION_WORDS;
    let first_cube = regions[words];
    let cubes = regions[words + 1] as usize;
    let info_first = regions[words + 2] as usize;
    let vectors = regions[words + 3] as usize;
    let rounds = regions[words + 4];
    let units = cubes * (CUBE_DIM as usize);
    let unit = ((cube - first_cube) as usize) * (CUBE_DIM as usize) + (UNIT_POS as usize);
    let mut sum = f64::new(0.0);
    if r == 0 {
        sum = unit_square_sum::<F>(g0, info, info_first, unit, units, vectors, rounds);
    } else if r == 1 {
        sum = unit_square_sum::<F>(g1, info, info_first, unit, units, vectors, rounds);
    } else if r == 2 {
        sum = unit_square_sum::<F>(g2, info, info_first, unit, units, vectors, rounds);
    } else if r == 3 {
        sum = unit_square_sum::<F>(g3, info, info_first, unit, units, vectors, rounds);
    } else if r == 4 {
        sum = unit_square_sum::<F>(g4, info, info_first, unit, units, vectors, rounds);
    } else if r == 5 {
        sum = unit_square_sum::<F>(g5, info, info_first, unit, units, vectors, rounds);
    } else if r == 6 {
        sum = unit_square_sum::<F>(g6, info, info_first, unit, units, vectors, rounds);
    } else if r == 7 {
        sum = unit_square_sum::<F>(g7, info, info_first, unit, units, vectors, rounds);
    }
    store_cube_sum(sum, partials, CUBE_POS);
}

/// The squares of a unit's vectors `unit + k * units`, `k < rounds`, summed in order;
/// group `g` of `grad` has its info word at `info[info_first + g]`.
#[cube]
fn unit_square_sum<F: Float>(
    grad: &Array<Vector<F, Const<8>>>,
    info: &Array<u32>,
    info_first: usize,
    unit: usize,
    units: usize,
    vectors: usize,
    rounds: u32,
) -> f64 {
    let mut sum = f64::new(0.0);
    for k in 0..rounds {
        let v = unit + (k as usize) * units;
        if v < vectors {
            let real = (info[info_first + v / 4] & 0xff) as usize;
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
    sum
}

/// The cube's units' sums added by a tree over shared memory, in a fixed order, into
/// `partials[index]`.
#[cube]
fn store_cube_sum(sum: f64, partials: &mut Array<f64>, index: usize) {
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
        partials[index] = shared[0];
    }
}

/// The vectors (loads) of `groups` groups.
fn vector_count(groups: usize) -> usize {
    groups * (GROUP_SIZE / VECTOR)
}

/// How the reduction spreads `groups` groups over cubes: (cubes, rounds per unit).
fn partition(groups: usize) -> (u32, u32) {
    let vectors = vector_count(groups);
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
    let vectors = vector_count(groups);
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

/// One gradient buffer of a batched reduction: `groups` whole groups (0 < `groups`),
/// group `g` with its info word at `info_first + g` of the step's group info.
pub struct ReducedBuffer<'a> {
    pub grad: &'a Handle,
    pub info_first: usize,
    pub groups: usize,
}

/// The reductions of many gradient buffers (one per tensor, where the trainer left
/// them), [`BATCH`] per launch, writing their partial sums into `partials` from
/// index `at` on, each buffer's where [`launch_square_sums_into`] would have put them
/// had it reduced the buffers one by one: the same sums in the same order, in an
/// eighth of the launches. Returns the index past the last partial sum.
///
/// # Safety
/// Each buffer must hold its `groups * 32` elements of `dtype`; `info` the step's
/// group info words (at least `info_first + groups` for each); `partials` at least
/// `at` plus every buffer's [`partial_count`] f64 values.
pub unsafe fn launch_batched_square_sums<R: Runtime>(
    client: &ComputeClient<R>,
    dtype: FloatDtype,
    buffers: &[ReducedBuffer<'_>],
    info: &Handle,
    info_words: usize,
    partials: &Handle,
    mut at: usize,
) -> usize {
    if buffers.is_empty() {
        return at;
    }
    let mut table: Vec<u32> =
        Vec::with_capacity(buffers.len().div_ceil(BATCH) * BATCH * REGION_WORDS);
    let mut launches: Vec<(usize, u32)> = Vec::new();
    for batch in buffers.chunks(BATCH) {
        let mut first_cube = 0u32;
        for b in batch {
            let (cubes, rounds) = partition(b.groups);
            let word = |x: usize| u32::try_from(x).expect("fewer than 2^32 groups");
            let vectors = word(vector_count(b.groups));
            table.extend([first_cube, cubes, word(b.info_first), vectors, rounds]);
            first_cube += cubes;
        }
        for _ in batch.len()..BATCH {
            // A slot no cube reaches.
            table.extend([u32::MAX, 0, 0, 0, 0]);
        }
        launches.push((at, first_cube));
        at += first_cube as usize;
    }
    let bytes: Vec<u8> = table.iter().flat_map(|w| w.to_le_bytes()).collect();
    let table = client.create_from_slice(&bytes);
    let dim = CubeDim::new_1d(UNITS);
    for (k, (batch, (start, cubes))) in buffers.chunks(BATCH).zip(launches).enumerate() {
        let grad = |i: usize| {
            let b = batch.get(i).unwrap_or(&batch[0]);
            // SAFETY (of the caller): the buffer holds its groups' vectors.
            unsafe { ArrayArg::from_raw_parts(b.grad.clone(), vector_count(b.groups)) }
        };
        let words = BATCH * REGION_WORDS;
        unsafe {
            let regions =
                ArrayArg::from_raw_parts(table.clone().offset_start((k * words * 4) as u64), words);
            let i = ArrayArg::from_raw_parts(info.clone(), info_words);
            let p = ArrayArg::from_raw_parts(
                partials.clone().offset_start(start as u64 * 8),
                cubes as usize,
            );
            with_float_type!(dtype, F => batched_square_sums::launch_unchecked::<F, R>(
                client,
                CubeCount::Static(cubes, 1, 1),
                dim,
                grad(0), grad(1), grad(2), grad(3), grad(4), grad(5), grad(6), grad(7),
                i,
                regions,
                p
            ))
        }
    }
    at
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
