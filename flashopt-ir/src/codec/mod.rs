//! The storage formats, bit-compatible with flashoptim 0.1.4, one file each: the
//! format as flashoptim writes it (plain Rust functions that perform the same f32
//! operations, in the same order, as its Triton kernels `_compute_ecc_bits`,
//! `_apply_error_correction`, `_triton_quantize_kernel`, `_triton_dequantize_kernel`
//! and the fused step kernels), and its lowering into program instructions. Plans
//! contain only the lowering; the tests hold the two to each other.
//!
//! A new state codec is one file here: its parts, its [`StateCodec`] lowering and its
//! reference functions and tests, plus its name in [`crate::Codec`] and a line in
//! [`state_codec`] (docs/DSL.md, "Adding a codec").
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

pub mod dither;
pub mod group;
pub mod linear;
pub mod master;
pub mod plain;
pub mod softsign;
pub mod sqrt;

pub use dither::CodeRounding;
pub use group::{MIN_SCALE, group_scale_f32};
pub use master::{decode_master, encode_master, log_scale};

use crate::layout::{Part, PartId, Storage};
use crate::program::{Builder, ValueId};
use crate::types::Codec;

/// How a state is stored and what computing with it costs: its parts and the
/// instructions that decode and encode one element.
pub trait StateCodec: Sync {
    /// The parts of state `state`, in order; their names start with `<state>::`.
    fn parts(&self, state: &str) -> Vec<Part>;

    /// Instructions that decode this element's value from `parts` (those of
    /// [`Self::parts`], by id, in the same order).
    fn decode(&self, b: &mut Builder, parts: &[PartId]) -> ValueId;

    /// Instructions that store `x` (this element's new value) into `parts`, its code
    /// rounded as `rounding` says.
    fn encode(&self, b: &mut Builder, parts: &[PartId], x: ValueId, rounding: CodeRounding);
}

/// The lowering of a codec.
pub fn state_codec(codec: Codec) -> &'static dyn StateCodec {
    match codec {
        Codec::Int8Softsign => &softsign::Int8Softsign,
        Codec::Int8Linear => &linear::Int8Linear,
        Codec::Uint8Sqrt => &sqrt::Uint8Sqrt,
        Codec::Bf16 => &plain::Plain(Storage::Bf16),
        Codec::F32 => &plain::Plain(Storage::F32),
    }
}

/// `2^k` as an exact f32, for the integral exponents the codecs use.
///
/// flashoptim computes these with `tl.exp2` on integral floats, which is exact; the
/// codecs only ever ask for |k| <= 67, inside f32's normal range.
pub fn pow2(k: i32) -> f32 {
    debug_assert!(
        (-126..=127).contains(&k),
        "2^{k} is outside f32's normal range"
    );
    crate::semantics::pow2_bits(k)
}

pub(crate) use crate::semantics::to_code;
