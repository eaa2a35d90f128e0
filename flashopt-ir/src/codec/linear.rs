//! `int8_linear`: signed states as int8 codes of `x / s`, `s` the group's largest
//! magnitude kept as one f16 per group.

use half::f16;

use super::group::{self, group_scale_f32};
use super::{CodeRounding, StateCodec, to_code};
use crate::layout::{Part, PartId, Storage};
use crate::program::{Builder, ValueId};

const CODE_MAX: f32 = 127.0;

/// Encode one group; returns the f16 scale.
pub fn encode_group(values: &[f32], codes: &mut [i8]) -> f16 {
    debug_assert_eq!(values.len(), codes.len());
    let scale = group_scale_f32(values.iter().map(|v| v.abs()));
    for (code, &v) in codes.iter_mut().zip(values) {
        let y = v / scale;
        *code = to_code((y * CODE_MAX + 0.5).floor(), -128.0, 127.0) as i8;
    }
    f16::from_f32(scale)
}

/// Decode one element: `code / 127 * scale`.
pub fn decode(code: i8, scale: f16) -> f32 {
    f32::from(code) / CODE_MAX * scale.to_f32()
}

pub struct Int8Linear;

impl StateCodec for Int8Linear {
    fn parts(&self, state: &str) -> Vec<Part> {
        group::parts(state, Storage::I8)
    }

    fn decode(&self, b: &mut Builder, parts: &[PartId]) -> ValueId {
        let (y, scale) = group::fraction(b, parts, CODE_MAX);
        b.mul(y, scale)
    }

    fn encode(&self, b: &mut Builder, parts: &[PartId], x: ValueId, rounding: CodeRounding) {
        let magnitude = b.abs(x);
        let (y, scale) = group::normalize(b, x, magnitude);
        group::store(b, parts, y, scale, CODE_MAX, (rounding, x));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_half_up() {
        let mut codes = [0i8; 3];
        encode_group(&[1.0, -0.5, 0.25], &mut codes);
        assert_eq!(codes, [127, -63, 32]); // floor(-63.5 + 0.5) = -63
        let mut codes = [0i8; 3];
        let scale = encode_group(&[f32::NAN, 1.0, -0.5], &mut codes);
        assert_eq!(scale.to_f32(), 1.0);
        assert_eq!(codes, [0, 127, -63]);
        assert_eq!(decode(-127, f16::from_f32(2.0)), -2.0);
    }
}
