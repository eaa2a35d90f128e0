//! Master weights: a narrow (bf16/f16) parameter plus a signed correction code that
//! recovers most of the f32 value it was rounded from.

use half::{bf16, f16};

use super::{pow2, to_code};
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
