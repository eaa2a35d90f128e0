//! Device copies into one tensor's segment of a flat buffer: how a trainer whose
//! gradients live in its own device buffers (burn's, say) hands them to the fused
//! step without a trip through the host.

use cubecl::prelude::*;
use cubecl::server::Handle;
use flashopt_ir::FloatDtype;

const UNITS: u32 = 256;

#[cube(launch_unchecked)]
fn copy_into<F: Float>(src: &Array<F>, dst: &mut Array<F>, offset: usize, len: usize) {
    if ABSOLUTE_POS < len {
        dst[offset + ABSOLUTE_POS] = src[ABSOLUTE_POS];
    }
}

#[cube(launch_unchecked)]
fn fill_zero<F: Float>(dst: &mut Array<F>, offset: usize, len: usize) {
    if ABSOLUTE_POS < len {
        dst[offset + ABSOLUTE_POS] = F::new(0.0);
    }
}

/// `dst[r * len + i] = src[r * block + start + i]` widened to f32, for every rank `r`
/// of `world` and `i < len`: one chunk of every rank's block, side by side.
#[cube(launch_unchecked)]
fn widen_chunks<F: Float>(
    src: &Array<F>,
    dst: &mut Array<f32>,
    block: usize,
    start: usize,
    len: usize,
    world: usize,
) {
    if ABSOLUTE_POS < world * len {
        let rank = ABSOLUTE_POS / len;
        let i = ABSOLUTE_POS % len;
        dst[ABSOLUTE_POS] = f32::cast_from(src[rank * block + start + i]);
    }
}

/// `dst[offset + i] = src[i] / divisor`, rounded once to `F` (to nearest, ties to even).
#[cube(launch_unchecked)]
fn narrow_into<F: Float>(
    src: &Array<f32>,
    dst: &mut Array<F>,
    offset: usize,
    len: usize,
    divisor: f32,
) {
    if ABSOLUTE_POS < len {
        dst[offset + ABSOLUTE_POS] = F::cast_from(src[ABSOLUTE_POS] / divisor);
    }
}

/// One unit per element of `len`, in cubes of UNITS.
fn grid(len: usize) -> (CubeCount, CubeDim) {
    let cubes = u32::try_from(len.div_ceil(UNITS as usize)).expect("fewer than 2^32 cubes");
    (CubeCount::Static(cubes, 1, 1), CubeDim::new_1d(UNITS))
}

/// `dst[offset..offset + len] = src[..len]`, elements of `dtype`, in stream order.
///
/// # Safety
/// `src` must hold `len` elements and `dst` `offset + len`.
pub unsafe fn copy_elements<R: Runtime>(
    client: &ComputeClient<R>,
    dtype: FloatDtype,
    src: &Handle,
    dst: &Handle,
    offset: usize,
    len: usize,
) {
    if len == 0 {
        return;
    }
    let (count, dim) = grid(len);
    unsafe {
        let s = ArrayArg::from_raw_parts(src.clone(), len);
        let d = ArrayArg::from_raw_parts(dst.clone(), offset + len);
        with_float_type!(dtype, F => copy_into::launch_unchecked::<F, R>(
            client, count, dim, s, d, offset, len
        ))
    }
}

/// `dst[offset..offset + len] = 0`.
///
/// # Safety
/// `dst` must hold `offset + len` elements of `dtype`.
pub unsafe fn zero_elements<R: Runtime>(
    client: &ComputeClient<R>,
    dtype: FloatDtype,
    dst: &Handle,
    offset: usize,
    len: usize,
) {
    if len == 0 {
        return;
    }
    let (count, dim) = grid(len);
    unsafe {
        let d = ArrayArg::from_raw_parts(dst.clone(), offset + len);
        with_float_type!(dtype, F => fill_zero::launch_unchecked::<F, R>(
            client, count, dim, d, offset, len
        ))
    }
}

/// Chunk `start..start + len` of each of `world` blocks of `block` elements of `src`
/// (elements of `dtype`), widened to f32 into `dst`, rank after rank (`world * len`
/// values): the input of an f32 reduce-scatter of that chunk.
///
/// # Safety
/// `src` must hold `world * block` elements of `dtype`, `start + len <= block`, and
/// `dst` must hold `world * len` f32 values.
pub unsafe fn widen_chunks_f32<R: Runtime>(
    client: &ComputeClient<R>,
    dtype: FloatDtype,
    src: &Handle,
    dst: &Handle,
    (block, world): (usize, usize),
    start: usize,
    len: usize,
) {
    if len == 0 {
        return;
    }
    let (count, dim) = grid(world * len);
    unsafe {
        let s = ArrayArg::from_raw_parts(src.clone(), world * block);
        let d = ArrayArg::from_raw_parts(dst.clone(), world * len);
        with_float_type!(dtype, F => widen_chunks::launch_unchecked::<F, R>(
            client, count, dim, s, d, block, start, len, world
        ))
    }
}

/// `dst[offset..offset + len]` (elements of `dtype`) = `src[..len] / divisor`, each
/// f32 divided and rounded once.
///
/// # Safety
/// `src` must hold `len` f32 values and `dst` `offset + len` elements of `dtype`.
pub unsafe fn narrow_from_f32<R: Runtime>(
    client: &ComputeClient<R>,
    dtype: FloatDtype,
    src: &Handle,
    dst: &Handle,
    offset: usize,
    len: usize,
    divisor: f32,
) {
    if len == 0 {
        return;
    }
    let (count, dim) = grid(len);
    unsafe {
        let s = ArrayArg::from_raw_parts(src.clone(), len);
        let d = ArrayArg::from_raw_parts(dst.clone(), offset + len);
        with_float_type!(dtype, F => narrow_into::launch_unchecked::<F, R>(
            client, count, dim, s, d, offset, len, divisor
        ))
    }
}
