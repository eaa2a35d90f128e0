//! What the group-quantized codecs share: one f16 scale per group of 32, the group's
//! largest magnitude (at least [`MIN_SCALE`]) rounded to f16.
//!
//! Encoding normalizes by the f32 group maximum and stores that maximum rounded to
//! f16; decoding multiplies by the f16 value. The two differ by the f16 rounding,
//! exactly as in flashoptim 0.1.4.

use super::CodeRounding;
use crate::layout::{Extent, Part, PartId, Role, Storage};
use crate::program::{Builder, ValueId, ValueType};

/// Smallest group maximum: keeps all-zero groups away from 0/0.
pub const MIN_SCALE: f32 = 1e-12;

/// The f32 divisor of a group: `max(max_i |x_i|, 1e-12)`. NaN elements are ignored
/// (IEEE maxNum, as the GPU's `max` reduction).
pub fn group_scale_f32(magnitudes: impl IntoIterator<Item = f32>) -> f32 {
    magnitudes.into_iter().fold(0.0f32, f32::max).max(MIN_SCALE)
}

/// The parts of a group-quantized state: codes per element, an f16 scale per group.
pub(crate) fn parts(state: &str, codes: Storage) -> Vec<Part> {
    vec![
        Part::new(
            format!("{state}::codes"),
            codes,
            Extent::Element,
            Role::State,
        ),
        Part::new(
            format!("{state}::scales"),
            Storage::F16,
            Extent::Group,
            Role::State,
        ),
    ]
}

/// `code / code_max` for this element's code, and the group's f16 scale, widened.
pub(crate) fn fraction(b: &mut Builder, parts: &[PartId], code_max: f32) -> (ValueId, ValueId) {
    let code = b.load(parts[0], ValueType::I32);
    let code = b.to_f32(code);
    let max = b.constant(code_max);
    let y = b.div(code, max);
    let scale = b.load(parts[1], ValueType::F32);
    (y, scale)
}

/// `x / s` with `s = max(group max of magnitude, 1e-12)`, the f32 scale encoding
/// divides by; returns both.
pub(crate) fn normalize(b: &mut Builder, x: ValueId, magnitude: ValueId) -> (ValueId, ValueId) {
    let max = b.group_max(magnitude);
    let floor = b.constant(MIN_SCALE);
    let scale = b.binary(crate::graph::Func2::Max, max, floor);
    (b.div(x, scale), scale)
}

/// Store `floor(y * code_max + offset)` as this element's code and the group's scale
/// (rounded to f16 by the store); `offset` is 0.5 to round to nearest, or the dither
/// of the value being encoded, `rounded.1` ([`super::dither`]).
pub(crate) fn store(
    b: &mut Builder,
    parts: &[PartId],
    y: ValueId,
    scale: ValueId,
    code_max: f32,
    rounded: (CodeRounding, ValueId),
) {
    let m = b.constant(code_max);
    let scaled = b.mul(y, m);
    let offset = rounded.0.offset(b, rounded.1);
    let shifted = b.add(scaled, offset);
    let code = b.floor(shifted);
    b.store(parts[0], code);
    b.store(parts[1], scale);
}
