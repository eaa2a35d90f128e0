//! `int8_softsign`: signed states (momentum) as int8 codes of `softsign(x / s)`, where
//! `s` is the group's largest magnitude, kept as one f16 per group. Softsign
//! (`2y / (1 + |y|)`) spends more codes near zero, where momentum lives.

use half::f16;

use super::group::{self, group_scale_f32};
use super::{CodeRounding, StateCodec, to_code};
use crate::layout::{Part, PartId, Storage};
use crate::program::{Builder, ValueId};

const CODE_MAX: f32 = 127.0;

/// Encode one group (flashoptim's `_triton_quantize_kernel` with `SOFTSIGN`); returns
/// the f16 scale.
pub fn encode_group(values: &[f32], codes: &mut [i8]) -> f16 {
    encode_group_with(values, codes, |_| 0.5)
}

/// [`encode_group`] with `offset(value)` in place of the 0.5 that rounds to nearest
/// (a dither, [`super::dither::offset`]).
pub fn encode_group_with(values: &[f32], codes: &mut [i8], offset: impl Fn(f32) -> f32) -> f16 {
    debug_assert_eq!(values.len(), codes.len());
    let scale = group_scale_f32(values.iter().map(|v| v.abs()));
    for (code, &v) in codes.iter_mut().zip(values) {
        let y = v / scale;
        let y = (2.0 * y) / (1.0 + y.abs());
        *code = to_code((y * CODE_MAX + offset(v)).floor(), -128.0, 127.0) as i8;
    }
    f16::from_f32(scale)
}

/// Decode one element: `y = code / 127; y / (2 - |y|) * scale`.
pub fn decode(code: i8, scale: f16) -> f32 {
    let y = f32::from(code) / CODE_MAX;
    let y = y / (2.0 - y.abs());
    y * scale.to_f32()
}

pub struct Int8Softsign;

impl StateCodec for Int8Softsign {
    fn parts(&self, state: &str) -> Vec<Part> {
        group::parts(state, Storage::I8)
    }

    fn decode(&self, b: &mut Builder, parts: &[PartId]) -> ValueId {
        let (y, scale) = group::fraction(b, parts, CODE_MAX);
        let two = b.constant(2.0);
        let magnitude = b.abs(y);
        let room = b.sub(two, magnitude);
        let x = b.div(y, room);
        b.mul(x, scale)
    }

    fn encode(&self, b: &mut Builder, parts: &[PartId], x: ValueId, rounding: CodeRounding) {
        let magnitude = b.abs(x);
        let (y, scale) = group::normalize(b, x, magnitude);
        let two = b.constant(2.0);
        let doubled = b.mul(two, y);
        let one = b.constant(1.0);
        let y_magnitude = b.abs(y);
        let denominator = b.add(one, y_magnitude);
        let soft = b.div(doubled, denominator);
        group::store(b, parts, soft, scale, CODE_MAX, (rounding, x));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_maximum_maps_to_the_extreme_code() {
        let values = [0.5f32, -2.0, 1.0, 0.0];
        let mut codes = [0i8; 4];
        let scale = encode_group(&values, &mut codes);
        assert_eq!(scale.to_f32(), 2.0);
        // softsign(-1) = -1 -> -127; softsign(0.25) = 0.4 -> floor(50.8 + 0.5) = 51.
        assert_eq!(codes, [51, -127, 85, 0]);
        assert_eq!(decode(-127, scale), -2.0);
    }

    #[test]
    fn all_zero_group_round_trips_to_zero() {
        let mut codes = [7i8; 32];
        let scale = encode_group(&[0.0; 32], &mut codes);
        assert_eq!(codes, [0; 32]);
        assert_eq!(decode(0, scale), 0.0);
    }

    #[test]
    fn infinity_poisons_its_group() {
        let mut codes = [0i8; 2];
        let scale = encode_group(&[f32::INFINITY, 1.0], &mut codes);
        assert!(scale.to_f32().is_infinite());
        assert_eq!(codes, [0, 0]);
        assert!(decode(codes[1], scale).is_nan());
        // So does a finite maximum beyond f16's range.
        let scale = encode_group(&[1.0e5, 1.0], &mut codes);
        assert!(scale.to_f32().is_infinite());
    }
}
