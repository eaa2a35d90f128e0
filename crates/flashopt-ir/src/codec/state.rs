//! Optimizer states in groups of 32 with one f16 scale per group.
//!
//! Encoding normalizes by the f32 group maximum and stores that maximum rounded to
//! f16; decoding multiplies by the f16 value. The two differ by the f16 rounding,
//! exactly as in flashoptim 0.1.4.

use half::f16;

use super::to_code;

/// Smallest group maximum: keeps all-zero groups away from 0/0.
pub const MIN_SCALE: f32 = 1e-12;
const SIGNED_MAX: f32 = 127.0;
const UNSIGNED_MAX: f32 = 255.0;

/// The f32 divisor of a group: `max(max_i |x_i|, 1e-12)`. NaN elements are ignored
/// (IEEE maxNum, as the GPU's `max` reduction).
pub fn group_scale_f32(magnitudes: impl IntoIterator<Item = f32>) -> f32 {
    magnitudes.into_iter().fold(0.0f32, f32::max).max(MIN_SCALE)
}

/// Encode one group of a signed state (softsign or linear); returns the f16 scale.
pub fn encode_signed_group(values: &[f32], softsign: bool, codes: &mut [i8]) -> f16 {
    debug_assert_eq!(values.len(), codes.len());
    let scale = group_scale_f32(values.iter().map(|v| v.abs()));
    for (code, &v) in codes.iter_mut().zip(values) {
        let mut y = v / scale;
        if softsign {
            y = (2.0 * y) / (1.0 + y.abs());
        }
        *code = to_code((y * SIGNED_MAX + 0.5).floor(), -128.0, 127.0) as i8;
    }
    f16::from_f32(scale)
}

/// Decode one element of a signed state.
pub fn decode_signed(code: i8, scale: f16, softsign: bool) -> f32 {
    let mut y = f32::from(code) / SIGNED_MAX;
    if softsign {
        y /= 2.0 - y.abs();
    }
    y * scale.to_f32()
}

/// Encode one group of a non-negative state as codes of its square root.
pub fn encode_sqrt_group(values: &[f32], codes: &mut [u8]) -> f16 {
    debug_assert_eq!(values.len(), codes.len());
    let mut roots = [0.0f32; crate::types::GROUP_SIZE];
    let roots = &mut roots[..values.len()];
    for (r, &v) in roots.iter_mut().zip(values) {
        *r = v.sqrt();
    }
    let scale = group_scale_f32(roots.iter().copied());
    for (code, &r) in codes.iter_mut().zip(roots.iter()) {
        *code = to_code(((r / scale) * UNSIGNED_MAX + 0.5).floor(), 0.0, 255.0) as u8;
    }
    f16::from_f32(scale)
}

/// Decode one element of a non-negative (sqrt) state.
pub fn decode_sqrt(code: u8, scale: f16) -> f32 {
    let root = (f32::from(code) / UNSIGNED_MAX) * scale.to_f32();
    root * root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_maximum_maps_to_the_extreme_code() {
        let values = [0.5f32, -2.0, 1.0, 0.0];
        let mut codes = [0i8; 4];
        let scale = encode_signed_group(&values, true, &mut codes);
        assert_eq!(scale.to_f32(), 2.0);
        // softsign(-1) = -1 -> -127; softsign(0.25) = 0.4 -> floor(50.8 + 0.5) = 51.
        assert_eq!(codes, [51, -127, 85, 0]);
        assert_eq!(decode_signed(-127, scale, true), -2.0);
    }

    #[test]
    fn linear_and_sqrt_codes() {
        let mut codes = [0i8; 3];
        encode_signed_group(&[1.0, -0.5, 0.25], false, &mut codes);
        assert_eq!(codes, [127, -63, 32]); // floor(-63.5 + 0.5) = -63
        let mut ucodes = [0u8; 3];
        let scale = encode_sqrt_group(&[4.0, 1.0, 0.0], &mut ucodes);
        assert_eq!(scale.to_f32(), 2.0);
        assert_eq!(ucodes, [255, 128, 0]);
        assert_eq!(decode_sqrt(255, scale), 4.0);
    }

    #[test]
    fn all_zero_group_round_trips_to_zero() {
        let mut codes = [7i8; 32];
        let scale = encode_signed_group(&[0.0; 32], true, &mut codes);
        assert_eq!(codes, [0; 32]);
        assert_eq!(decode_signed(0, scale, true), 0.0);
        let mut ucodes = [7u8; 5];
        let scale = encode_sqrt_group(&[0.0; 5], &mut ucodes);
        assert_eq!(ucodes, [0; 5]);
        assert_eq!(decode_sqrt(0, scale), 0.0);
    }

    #[test]
    fn nan_is_code_zero_and_does_not_touch_the_group() {
        let mut codes = [0i8; 3];
        let scale = encode_signed_group(&[f32::NAN, 1.0, -0.5], false, &mut codes);
        assert_eq!(scale.to_f32(), 1.0);
        assert_eq!(codes, [0, 127, -63]);
        let mut ucodes = [0u8; 3];
        let scale = encode_sqrt_group(&[-1.0, 4.0, f32::NAN], &mut ucodes);
        assert_eq!(scale.to_f32(), 2.0);
        assert_eq!(ucodes, [0, 255, 0]);
    }

    #[test]
    fn infinity_poisons_its_group() {
        let mut codes = [0i8; 2];
        let scale = encode_signed_group(&[f32::INFINITY, 1.0], true, &mut codes);
        assert!(scale.to_f32().is_infinite());
        assert_eq!(codes, [0, 0]);
        assert!(decode_signed(codes[1], scale, true).is_nan());
        // So does a finite maximum beyond f16's range.
        let scale = encode_signed_group(&[1.0e5, 1.0], true, &mut codes);
        assert!(scale.to_f32().is_infinite());
    }
}
