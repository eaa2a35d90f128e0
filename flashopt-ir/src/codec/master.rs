//! Master weights: a narrow (bf16/f16) parameter plus a signed correction code that
//! recovers most of the f32 value it was rounded from; or the parameter alone (no
//! correction, or f32 parameters, which are their own master weights).
//!
//! The functions at the top are the format as flashoptim 0.1.4 writes it
//! (`_compute_ecc_bits`, `_apply_error_correction`); [`parts`], [`decode`] and
//! [`encode`] lower it into program instructions, which the tests check against them.

use half::{bf16, f16};

use super::{pow2, to_code};
use crate::graph::{Func1, Func2, Func3};
use crate::layout::{Extent, Part, PartId, Role, Storage};
use crate::plan::PlanConfig;
use crate::program::{Builder, InstOp, IntOp, ValueId, ValueType};
use crate::types::{FloatDtype, MasterMode};

/// Round an f32 to the narrow dtype (round to nearest even) and return its bits.
pub fn to_narrow_bits(x: f32, dtype: FloatDtype) -> u16 {
    match dtype {
        FloatDtype::Bf16 => bf16::from_f32(x).to_bits(),
        FloatDtype::F16 => f16::from_f32(x).to_bits(),
        FloatDtype::F32 => panic!("f32 parameters have no narrow form"),
    }
}

/// The f32 value of narrow bits.
pub fn narrow_to_f32(bits: u16, dtype: FloatDtype) -> f32 {
    match dtype {
        FloatDtype::Bf16 => bf16::from_bits(bits).to_f32(),
        FloatDtype::F16 => f16::from_bits(bits).to_f32(),
        FloatDtype::F32 => panic!("f32 parameters have no narrow form"),
    }
}

/// log2 of half a ULP of the narrow value: `(unbiased_exponent - mantissa_bits) - 1`.
/// Zero and subnormals use the smallest normal exponent `1 - bias`.
pub fn log_scale(bits: u16, dtype: FloatDtype) -> i32 {
    let mantissa = dtype.mantissa_bits();
    let exponent_field = i32::from((bits & 0x7fff) >> mantissa);
    let unbiased = if exponent_field == 0 {
        1 - dtype.exponent_bias()
    } else {
        exponent_field - dtype.exponent_bias()
    };
    unbiased - mantissa as i32 - 1
}

/// Encode an f32 master value: the narrow bits and the correction code.
///
/// `mode` must not be [`MasterMode::None`] and `dtype` must be bf16 or f16.
pub fn encode_master(x: f32, dtype: FloatDtype, mode: MasterMode) -> (u16, i32) {
    let max = mode
        .code_max()
        .expect("encode_master needs a correction mode");
    let bits = to_narrow_bits(x, dtype);
    let error = x - narrow_to_f32(bits, dtype);
    let neg_log_scale = -log_scale(bits, dtype);
    // Split 2^-log_scale in two so neither factor overflows (flashoptim does the same).
    let h = neg_log_scale.div_euclid(2);
    let normalized = (error * pow2(h)) * pow2(neg_log_scale - h);
    let scaled = normalized.clamp(-1.0, 1.0) * max;
    let rounded = (scaled.abs() + 0.5).floor().copysign(scaled);
    (bits, to_code(rounded, -max, max))
}

/// Decode narrow bits and a correction code back to the f32 master value.
pub fn decode_master(bits: u16, code: i32, dtype: FloatDtype, mode: MasterMode) -> f32 {
    let max = mode
        .code_max()
        .expect("decode_master needs a correction mode");
    let narrow = narrow_to_f32(bits, dtype);
    let log_scale = log_scale(bits, dtype);
    let h = log_scale.div_euclid(2);
    let fraction = code as f32 / max;
    narrow + fraction * pow2(h) * pow2(log_scale - h)
}

/// The stored parts of a parameter: the parameter itself and, with a master mode on
/// bf16/f16 parameters, the correction codes.
pub fn parts(config: PlanConfig) -> Vec<Part> {
    let mut out = vec![Part::new(
        "param",
        Storage::from(config.param),
        Extent::Element,
        Role::Param,
    )];
    match config.stored_correction() {
        MasterMode::None => {}
        MasterMode::Int8 => out.push(correction_part(Storage::I8)),
        MasterMode::Int16 => out.push(correction_part(Storage::I16)),
    }
    out
}

fn correction_part(storage: Storage) -> Part {
    Part::new("correction", storage, Extent::Element, Role::State)
}

/// `log_scale` of the narrow value `n` (held as f32), as i32.
///
/// Computed from `n`'s f32 exponent field: bf16 and f16 values widen exactly, and an
/// f32 exponent below the narrow dtype's smallest normal one (its subnormals and zero,
/// which are f32 subnormals or normals after widening) is raised to it, which is what
/// [`log_scale`] does with the narrow bits. Infinities and NaN get another (finite)
/// scale than [`log_scale`] gives for f16; they decode to themselves and encode to the
/// same code either way (the error is NaN or infinite).
fn log_scale_of(b: &mut Builder, n: ValueId, dtype: FloatDtype) -> ValueId {
    let bits = b.push(InstOp::Bits(n), ValueType::I32);
    let shift = b.int(23);
    let field = b.int_op(IntOp::Shr, bits, shift);
    let mask = b.int(0xff);
    let field = b.int_op(IntOp::And, field, mask);
    // (max(field - 127, 1 - bias)) - (mantissa + 1), with the constants folded.
    let tail = dtype.mantissa_bits() as i32 + 1;
    let offset = b.int(127 + tail);
    let unbiased = b.int_op(IntOp::Sub, field, offset);
    let smallest = b.int(1 - dtype.exponent_bias() - tail);
    b.int_op(IntOp::Max, unbiased, smallest)
}

/// `x * 2^k`, exactly as `(x * 2^h) * 2^(k - h)` with `h = floor(k / 2)` (flashoptim's
/// split, so that neither power overflows); where `k` stays inside f32's normal
/// exponents (`bounds`), one multiply by `2^k` rounds the same product once.
fn times_pow2(b: &mut Builder, x: ValueId, k: ValueId, bounds: (i32, i32)) -> ValueId {
    if bounds.0 >= -126 && bounds.1 <= 127 {
        let scale = b.pow2(k);
        return b.mul(x, scale);
    }
    let one = b.int(1);
    let h = b.int_op(IntOp::Shr, k, one);
    let rest = b.int_op(IntOp::Sub, k, h);
    let first = b.pow2(h);
    let partial = b.mul(x, first);
    let second = b.pow2(rest);
    b.mul(partial, second)
}

/// The range of `log_scale` over a narrow dtype's values, infinities included.
fn log_scale_bounds(dtype: FloatDtype) -> (i32, i32) {
    let tail = dtype.mantissa_bits() as i32 + 1;
    (1 - dtype.exponent_bias() - tail, 128 - tail)
}

/// Instructions that decode this element's master weight from the parameter parts.
pub fn decode(b: &mut Builder, config: PlanConfig, parts: &[PartId]) -> ValueId {
    let narrow = b.load(parts[0], ValueType::F32);
    let Some(max) = config.stored_correction().code_max() else {
        return narrow;
    };
    let code = b.load(parts[1], ValueType::I32);
    let code = b.to_f32(code);
    let scale = log_scale_of(b, narrow, config.param);
    let max = b.constant(max);
    let fraction = b.div(code, max);
    let correction = times_pow2(b, fraction, scale, log_scale_bounds(config.param));
    b.add(narrow, correction)
}

/// Instructions that store the master weight `x` in the parameter parts.
pub fn encode(b: &mut Builder, config: PlanConfig, parts: &[PartId], x: ValueId) {
    let Some(max) = config.stored_correction().code_max() else {
        b.store(parts[0], x);
        return;
    };
    let dtype = config.param;
    let narrow = b.push(InstOp::Round(dtype, x), ValueType::F32);
    b.store(parts[0], narrow);
    let error = b.sub(x, narrow);
    let scale = log_scale_of(b, narrow, dtype);
    let zero = b.int(0);
    let neg_scale = b.int_op(IntOp::Sub, zero, scale);
    let (lo, hi) = log_scale_bounds(dtype);
    let normalized = times_pow2(b, error, neg_scale, (-hi, -lo));
    // clamp(normalized, -1, 1) with NaN kept (NaN and infinite masters store code 0).
    let (minus_one, one) = (b.constant(-1.0), b.constant(1.0));
    let above = b.binary(Func2::Gt, normalized, one);
    let below = b.binary(Func2::Lt, normalized, minus_one);
    let clamped = b.ternary(Func3::Select, above, one, normalized);
    let clamped = b.ternary(Func3::Select, below, minus_one, clamped);
    let max = b.constant(max);
    let scaled = b.mul(clamped, max);
    // Round half away from zero: floor(|s| + 0.5) with the sign of s.
    let magnitude = b.abs(scaled);
    let half = b.constant(0.5);
    let shifted = b.add(magnitude, half);
    let rounded = b.floor(shifted);
    let negated = b.unary(Func1::Neg, rounded);
    let zero = b.constant(0.0);
    let negative = b.binary(Func2::Lt, scaled, zero);
    let code = b.ternary(Func3::Select, negative, negated, rounded);
    b.store(parts[1], code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_scale_is_half_an_ulp() {
        // bf16 1.0: exponent 0, 7 mantissa bits: ULP 2^-7, half ULP 2^-8.
        assert_eq!(
            log_scale(bf16::from_f32(1.0).to_bits(), FloatDtype::Bf16),
            -8
        );
        assert_eq!(
            log_scale(bf16::from_f32(-1.5).to_bits(), FloatDtype::Bf16),
            -8
        );
        assert_eq!(
            log_scale(f16::from_f32(1.0).to_bits(), FloatDtype::F16),
            -11
        );
        // Zero and subnormals use the smallest normal exponent.
        assert_eq!(log_scale(0, FloatDtype::Bf16), -126 - 7 - 1);
        assert_eq!(log_scale(1, FloatDtype::Bf16), -126 - 7 - 1);
        assert_eq!(log_scale(1, FloatDtype::F16), -14 - 10 - 1);
        // Inf's exponent field is all ones: 128 for bf16.
        assert_eq!(
            log_scale(bf16::INFINITY.to_bits(), FloatDtype::Bf16),
            128 - 8
        );
    }

    #[test]
    fn exactly_representable_values_have_zero_code() {
        for x in [0.0f32, 1.0, -2.5, 2f32.powi(100), 2f32.powi(-130)] {
            let (bits, code) = encode_master(x, FloatDtype::Bf16, MasterMode::Int8);
            assert_eq!(code, 0, "{x}");
            assert_eq!(
                decode_master(bits, code, FloatDtype::Bf16, MasterMode::Int8),
                x
            );
        }
    }

    #[test]
    fn a_quarter_ulp_above_encodes_half_the_range() {
        // 1 + 2^-9 lies a quarter ULP (half of the half-ULP range) above bf16 1.0.
        let x = 1.0 + 2f32.powi(-9);
        let (bits, code) = encode_master(x, FloatDtype::Bf16, MasterMode::Int8);
        assert_eq!(bf16::from_bits(bits).to_f32(), 1.0);
        assert_eq!(code, 64); // floor(0.5 * 127 + 0.5)
        let (_, code16) = encode_master(x, FloatDtype::Bf16, MasterMode::Int16);
        assert_eq!(code16, 16384); // floor(0.5 * 32767 + 0.5)
    }

    #[test]
    fn non_finite_values() {
        for mode in [MasterMode::Int8, MasterMode::Int16] {
            for dtype in [FloatDtype::Bf16, FloatDtype::F16] {
                let (bits, code) = encode_master(f32::NAN, dtype, mode);
                assert_eq!(code, 0);
                assert!(decode_master(bits, code, dtype, mode).is_nan());
                for inf in [f32::INFINITY, f32::NEG_INFINITY] {
                    let (bits, code) = encode_master(inf, dtype, mode);
                    assert_eq!(code, 0);
                    assert_eq!(decode_master(bits, code, dtype, mode), inf);
                }
            }
        }
        // A finite f32 beyond f16's range rounds to Inf and stays Inf.
        let (bits, code) = encode_master(1.0e6, FloatDtype::F16, MasterMode::Int8);
        assert_eq!(code, -127);
        assert_eq!(
            decode_master(bits, code, FloatDtype::F16, MasterMode::Int8),
            f32::INFINITY
        );
    }
}
