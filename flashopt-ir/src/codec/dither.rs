//! Dithered rounding of codes ([`crate::Rounding::Dithered`]): an encoder stores
//! `floor(c + u)` in place of `floor(c + 0.5)`, `c` the value in code units and `u` in
//! `[0, 1)`.
//!
//! Rounding to the nearest code has fixed points: a momentum re-encoded as `beta * m`
//! every step (its gradient stopped) keeps its code once the decay moves it by less
//! than half a code, and the element keeps stepping. Rounding up with a probability
//! equal to `c`'s distance above the lower code is unbiased, so the code decays on
//! average as the f32 value does.
//!
//! `u = frac(mantissa(x) / 2^23 + phase(t))`, where `x` is the f32 value being encoded
//! and `phase(t) = frac(t * (sqrt(5) - 1) / 2)` is a kernel scalar the host computes once
//! per step in f64: the golden-ratio sequence, spread evenly over `[0, 1)` for any run
//! of consecutive steps. A value that repeats from step to step walks that sequence and
//! rounds up with the frequency of its fraction; values of the same step get different
//! offsets from their low mantissa bits. Every operation is exact in f32 (the bits, a
//! mask, an integer to float, a power-of-two scale, an add of two numbers in `[0, 1)`,
//! a floor, a subtraction), so the CPU reference and every back end give the same
//! bits, and no element index enters, so a sharded step encodes as a whole one.

use crate::graph::Func2;
use crate::program::{Builder, InstOp, IntOp, ValueId, ValueType};

/// `(sqrt(5) - 1) / 2`.
const GOLDEN: f64 = 0.618_033_988_749_894_9;
/// The f32 mantissa field.
const MANTISSA: i32 = 0x007f_ffff;
/// `2^-23`: a mantissa field as a fraction of one.
const MANTISSA_UNIT: f32 = 1.0 / 8_388_608.0;
/// The largest offset, `1 - 2^-16`. An offset closer to 1 would round `c + u` up to
/// the next integer in f32 where `c` is the largest code (127 + (1 - 2^-23) is 128.0),
/// a code out of the storage's range; with this cap the largest codes stay themselves.
pub const MAX_OFFSET: f32 = 1.0 - 1.0 / 65_536.0;

/// The step's dither phase, `frac(t * (sqrt(5) - 1) / 2)` in f64, rounded to f32 once.
pub fn phase(step: u64) -> f32 {
    let x = step as f64 * GOLDEN;
    (x - x.floor()) as f32
}

/// The offset added before the floor when `x` is encoded at phase `phase`: in
/// `[0, MAX_OFFSET]`.
pub fn offset(x: f32, phase: f32) -> f32 {
    let fraction = (x.to_bits() as i32 & MANTISSA) as f32 * MANTISSA_UNIT;
    let s = fraction + phase;
    (s - s.floor()).min(MAX_OFFSET)
}

/// How an encoder's lowering rounds: to nearest, or dithered by kernel scalar `phase`
/// (the plan's [`crate::Plan::dither_phase`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeRounding {
    Nearest,
    Dithered { phase: usize },
}

impl CodeRounding {
    /// The offset the encoder of `x` adds before its floor: 0.5, or [`offset`].
    pub(crate) fn offset(self, b: &mut Builder, x: ValueId) -> ValueId {
        match self {
            CodeRounding::Nearest => b.constant(0.5),
            CodeRounding::Dithered { phase } => {
                let bits = b.push(InstOp::Bits(x), ValueType::I32);
                let mask = b.int(MANTISSA);
                let field = b.int_op(IntOp::And, bits, mask);
                let field = b.to_f32(field);
                let unit = b.constant(MANTISSA_UNIT);
                let fraction = b.mul(field, unit);
                let phase = b.push(InstOp::Scalar(phase), ValueType::F32);
                let s = b.add(fraction, phase);
                let whole = b.floor(s);
                let u = b.sub(s, whole);
                let cap = b.constant(MAX_OFFSET);
                b.binary(Func2::Min, u, cap)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_lie_in_the_unit_interval() {
        for step in [1u64, 2, 1000, 1 << 40] {
            let p = phase(step);
            assert!((0.0..=1.0).contains(&p), "phase({step}) = {p}");
            for x in [
                0.0f32,
                -0.0,
                1.0,
                -3.7,
                f32::MIN_POSITIVE,
                f32::MAX,
                1.0e-30,
            ] {
                let u = offset(x, p);
                assert!((0.0..1.0).contains(&u), "offset({x}, {p}) = {u}");
            }
        }
    }

    /// The largest codes (127 signed, 255 unsigned) plus any offset stay below the next
    /// integer: no dithered code leaves its storage's range. Without the cap a mantissa
    /// field of all ones at phase 0 would make 127 + u round to 128.0.
    #[test]
    fn the_largest_codes_stay_in_range() {
        let all_ones = f32::from_bits(0x3fff_ffff); // mantissa field 2^23 - 1
        assert_eq!(
            127.0f32 + (1.0 - MANTISSA_UNIT),
            128.0,
            "the case the cap exists for"
        );
        let mut phases: Vec<f32> = (1..5000u64).map(phase).collect();
        phases.extend([0.0, MANTISSA_UNIT, 0.5, 1.0 - MANTISSA_UNIT, 1.0]);
        for p in phases {
            for x in [all_ones, 1.0, -1.0, 0.3, f32::from_bits(0x0080_0001)] {
                let u = offset(x, p);
                assert!(u <= MAX_OFFSET, "offset({x}, {p}) = {u}");
                assert_eq!((127.0f32 + u).floor(), 127.0, "offset({x}, {p}) = {u}");
                assert_eq!((255.0f32 + u).floor(), 255.0, "offset({x}, {p}) = {u}");
                assert_eq!((-127.0f32 + u).floor(), -127.0, "offset({x}, {p}) = {u}");
            }
        }
    }

    /// Over consecutive steps a fixed value rounds up as often as its fraction says,
    /// to within the golden-ratio sequence's discrepancy.
    #[test]
    fn a_repeated_value_rounds_up_with_the_frequency_of_its_fraction() {
        for (x, fraction) in [(3.25f32, 0.25), (0.6, 0.6), (-1.9, 0.1)] {
            let steps = 1000;
            let up = (1..=steps)
                .filter(|&t| {
                    let code = (x + offset(x, phase(t))).floor();
                    code > x.floor()
                })
                .count();
            let frequency = up as f64 / steps as f64;
            assert!(
                (frequency - fraction).abs() < 0.01,
                "{x}: rounded up {frequency} of the time, expected {fraction}"
            );
        }
    }

    /// The failure nearest rounding has: `0.9 * c` re-encodes to `c` for codes up to 5.
    /// Dithered, every code decays to 0, about as fast as `0.9^t`.
    #[test]
    fn a_decaying_code_reaches_zero() {
        let nearest = |c: f32| (0.9f32 * c + 0.5).floor();
        assert_eq!(nearest(5.0), 5.0, "nearest rounding has a fixed point");
        for start in [5.0f32, 12.0, 127.0] {
            let mut code = start;
            let mut steps = 0u64;
            while code > 0.0 {
                steps += 1;
                let c = 0.9 * code;
                code = (c + offset(c, phase(steps))).floor();
                assert!(steps < 200, "code {start} still {code} after 200 steps");
            }
            // f32 would take ln(start / 0.5) / -ln(0.9) steps to fall under half a code.
            let exact = ((start / 0.5).ln() / -(0.9f32.ln())).ceil() as u64;
            assert!(
                steps <= exact + 25,
                "code {start} took {steps} steps to reach 0 (f32: {exact})"
            );
        }
    }
}
