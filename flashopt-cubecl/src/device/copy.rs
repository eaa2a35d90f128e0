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

fn cubes(len: usize) -> CubeCount {
    let cubes = u32::try_from(len.div_ceil(UNITS as usize)).expect("fewer than 2^32 cubes");
    CubeCount::Static(cubes, 1, 1)
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
    let (count, dim) = (cubes(len), CubeDim::new_1d(UNITS));
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
    let (count, dim) = (cubes(len), CubeDim::new_1d(UNITS));
    unsafe {
        let d = ArrayArg::from_raw_parts(dst.clone(), offset + len);
        with_float_type!(dtype, F => fill_zero::launch_unchecked::<F, R>(
            client, count, dim, d, offset, len
        ))
    }
}
