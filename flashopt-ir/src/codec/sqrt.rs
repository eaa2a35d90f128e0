//! `uint8_sqrt`: non-negative states (second moments) as uint8 codes of `sqrt(x) / s`,
//! `s` the group's largest root kept as one f16 per group. The root halves the
//! dynamic range the 8 bits must cover.

use half::f16;

use super::group::{self, group_scale_f32};
use super::{CodeRounding, StateCodec, to_code};
use crate::graph::Func1;
use crate::layout::{Part, PartId, Storage};
use crate::program::{Builder, ValueId};

const CODE_MAX: f32 = 255.0;

/// Encode one group as codes of its square roots; returns the f16 scale.
pub fn encode_group(values: &[f32], codes: &mut [u8]) -> f16 {
    debug_assert_eq!(values.len(), codes.len());
    let mut roots = [0.0f32; crate::types::GROUP_SIZE];
    let roots = &mut roots[..values.len()];
    for (r, &v) in roots.iter_mut().zip(values) {
        *r = v.sqrt();
    }
    let scale = group_scale_f32(roots.iter().copied());
    for (code, &r) in codes.iter_mut().zip(roots.iter()) {
        *code = to_code(((r / scale) * CODE_MAX + 0.5).floor(), 0.0, 255.0) as u8;
    }
    f16::from_f32(scale)
}

/// Decode one element: `(code / 255 * scale)^2`.
pub fn decode(code: u8, scale: f16) -> f32 {
    let root = (f32::from(code) / CODE_MAX) * scale.to_f32();
    root * root
}

pub struct Uint8Sqrt;

impl StateCodec for Uint8Sqrt {
    fn parts(&self, state: &str) -> Vec<Part> {
        group::parts(state, Storage::U8)
    }

    fn decode(&self, b: &mut Builder, parts: &[PartId]) -> ValueId {
        let (y, scale) = group::fraction(b, parts, CODE_MAX);
        let root = b.mul(y, scale);
        b.mul(root, root)
    }

    fn encode(&self, b: &mut Builder, parts: &[PartId], x: ValueId, rounding: CodeRounding) {
        let root = b.unary(Func1::Sqrt, x);
        let (y, scale) = group::normalize(b, root, root);
        group::store(b, parts, y, scale, CODE_MAX, (rounding, x));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_of_roots() {
        let mut codes = [0u8; 3];
        let scale = encode_group(&[4.0, 1.0, 0.0], &mut codes);
        assert_eq!(scale.to_f32(), 2.0);
        assert_eq!(codes, [255, 128, 0]);
        assert_eq!(decode(255, scale), 4.0);
        // Negative values and NaN have no root: code 0, the group untouched.
        let scale = encode_group(&[-1.0, 4.0, f32::NAN], &mut codes);
        assert_eq!(scale.to_f32(), 2.0);
        assert_eq!(codes, [0, 255, 0]);
        let scale = encode_group(&[0.0; 3], &mut codes);
        assert_eq!((codes, decode(0, scale)), ([0; 3], 0.0));
    }
}
