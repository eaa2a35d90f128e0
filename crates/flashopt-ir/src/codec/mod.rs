//! The storage formats, bit-compatible with flashoptim 0.1.4.
//!
//! Every function here performs the same f32 operations, in the same order, as
//! flashoptim's Triton kernels (`_compute_ecc_bits`, `_apply_error_correction`,
//! `_triton_quantize_kernel`, `_triton_dequantize_kernel` and the fused step
//! kernels). The GPU back ends emit the same sequence; the CPU interpreter calls
//! these functions directly.
//!
//! # Non-finite values
//!
//! | codec | NaN | ±Inf |
//! | --- | --- | --- |
//! | master (bf16/f16 + correction) | narrow value NaN, code 0: decodes to NaN | narrow ±Inf, code 0: decodes to ±Inf. A finite value beyond the narrow dtype's range rounds to ±Inf and decodes to ±Inf |
//! | int8 softsign / int8 linear | the element's code is 0; the group's absmax ignores it, so the rest of the group round-trips | the group's scale becomes Inf and every element of the group decodes to NaN (0 × Inf), as in flashoptim |
//! | uint8 sqrt | as above; a negative value has a NaN square root and is treated the same way | as above |
//! | bf16 / f32 | kept | kept |
//!
//! A group whose absmax exceeds f16's largest finite value (65504) also gets an
//! Inf scale, as in flashoptim: f16 scales are the format.

pub mod master;
pub mod state;

pub use master::{decode_master, encode_master, log_scale};
pub use state::{
    decode_signed, decode_sqrt, encode_signed_group, encode_sqrt_group, group_scale_f32,
};

/// `2^k` as an exact f32, for the integral exponents the codecs use.
///
/// flashoptim computes these with `tl.exp2` on integral floats, which is exact; the
/// codecs only ever ask for |k| <= 67, inside f32's normal range.
pub fn pow2(k: i32) -> f32 {
    debug_assert!(
        (-126..=127).contains(&k),
        "2^{k} is outside f32's normal range"
    );
    f32::from_bits(((k + 127) as u32) << 23)
}

/// Float to integer code as the GPU converts it: truncation of an already integral
/// value, saturating at the type's range, NaN to 0 (Rust's `as` and PTX `cvt.rzi`
/// agree on all three).
pub(crate) fn to_code(v: f32, min: f32, max: f32) -> i32 {
    if v.is_nan() {
        0
    } else {
        v.clamp(min, max) as i32
    }
}
