//! Property tests of the storage formats over random and adversarial values.

use flashopt_ir::codec::group_scale_f32;
use flashopt_ir::codec::master::{
    decode_master, encode_master, log_scale, narrow_to_f32, to_narrow_bits,
};
use flashopt_ir::codec::sqrt::{decode as decode_sqrt, encode_group as encode_sqrt_group};
use flashopt_ir::codec::{linear, softsign};
use flashopt_ir::{FloatDtype, MasterMode};
use half::{bf16, f16};
use proptest::prelude::*;

fn encode_signed_group(values: &[f32], softsign: bool, codes: &mut [i8]) -> f16 {
    if softsign {
        softsign::encode_group(values, codes)
    } else {
        linear::encode_group(values, codes)
    }
}

fn decode_signed(code: i8, scale: f16, softsign: bool) -> f32 {
    if softsign {
        softsign::decode(code, scale)
    } else {
        linear::decode(code, scale)
    }
}

const NARROW: [FloatDtype; 2] = [FloatDtype::Bf16, FloatDtype::F16];
const MODES: [MasterMode; 2] = [MasterMode::Int8, MasterMode::Int16];

fn narrow_max(dtype: FloatDtype) -> f32 {
    match dtype {
        FloatDtype::Bf16 => bf16::MAX.to_f32(),
        _ => f16::MAX.to_f32(),
    }
}

/// ULP of an f32 (the gap to the next float away from zero).
fn ulp_f32(x: f32) -> f64 {
    let a = x.abs();
    f64::from(f32::from_bits(a.to_bits() + 1)) - f64::from(a)
}

/// The roundtrip bound: half a code step (2^log_scale / MAX) plus the f32 rounding
/// of the final addition.
fn check_master_roundtrip(
    x: f32,
    dtype: FloatDtype,
    mode: MasterMode,
) -> Result<(), TestCaseError> {
    let (bits, code) = encode_master(x, dtype, mode);
    let max = mode.code_max().unwrap();
    prop_assert!(f64::from(code.abs()) <= f64::from(max));
    let y = decode_master(bits, code, dtype, mode);
    let step = 2f64.powi(log_scale(bits, dtype)) / f64::from(max);
    let err = (f64::from(y) - f64::from(x)).abs();
    let bound = 0.5 * step * (1.0 + 1e-6) + ulp_f32(x.abs().max(y.abs()));
    prop_assert!(
        err <= bound,
        "x={x:e} {dtype} {mode}: |y - x| = {err:e} > {bound:e} (y={y:e}, code={code})"
    );
    // The narrow value is the round-to-nearest-even of x: the model sees exactly that.
    prop_assert_eq!(bits, to_narrow_bits(x, dtype));
    Ok(())
}

/// An independent round-to-nearest-even to bf16, by integer arithmetic on the bits.
fn bf16_rne(x: f32) -> u16 {
    let b = x.to_bits();
    let lsb = (b >> 16) & 1;
    (b.wrapping_add(0x7fff + lsb) >> 16) as u16
}

/// f16 rounding checked by exhaustion of the neighbours: the nearest, ties to even.
fn check_f16_is_nearest(x: f32) -> Result<(), TestCaseError> {
    let y = f16::from_f32(x);
    if !y.is_finite() {
        prop_assert!(x.abs() >= 65520.0, "{x} rounded to {y} in f16");
        return Ok(());
    }
    let d = (f64::from(y.to_f32()) - f64::from(x)).abs();
    for nb in [y.to_bits().wrapping_add(1), y.to_bits().wrapping_sub(1)] {
        let n = f16::from_bits(nb);
        if n.is_finite() && n.to_f32().signum() == y.to_f32().signum() {
            let dn = (f64::from(n.to_f32()) - f64::from(x)).abs();
            prop_assert!(
                d < dn || (d == dn && y.to_bits() & 1 == 0),
                "{x}: {y} vs neighbour {n}"
            );
        }
    }
    Ok(())
}

fn finite_in_range(dtype: FloatDtype) -> impl Strategy<Value = f32> {
    let max = narrow_max(dtype);
    any::<u32>()
        .prop_map(f32::from_bits)
        .prop_filter("finite, inside the narrow range", move |x| {
            x.is_finite() && x.abs() <= max
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn master_roundtrip_random_bits_bf16(x in finite_in_range(FloatDtype::Bf16)) {
        for mode in MODES {
            check_master_roundtrip(x, FloatDtype::Bf16, mode)?;
        }
    }

    #[test]
    fn master_roundtrip_random_bits_f16(x in finite_in_range(FloatDtype::F16)) {
        for mode in MODES {
            check_master_roundtrip(x, FloatDtype::F16, mode)?;
        }
    }

    #[test]
    fn master_roundtrip_weights_scale(x in -1.0e3f32..1.0e3) {
        for dtype in NARROW {
            for mode in MODES {
                check_master_roundtrip(x, dtype, mode)?;
            }
        }
    }

    #[test]
    fn narrow_rounding_is_nearest_even(bits in any::<u32>()) {
        let x = f32::from_bits(bits);
        if x.is_nan() {
            prop_assert!(bf16::from_f32(x).is_nan());
            prop_assert!(f16::from_f32(x).is_nan());
        } else {
            prop_assert_eq!(bf16::from_f32(x).to_bits(), bf16_rne(x));
            check_f16_is_nearest(x)?;
        }
    }

    #[test]
    fn signed_groups_roundtrip(values in prop::collection::vec(-6.0e4f32..6.0e4, 1..=32), softsign: bool, shift in -30i32..=0) {
        let values: Vec<f32> = values.iter().map(|v| v * 2f32.powi(shift)).collect();
        let mut codes = vec![0i8; values.len()];
        let scale = encode_signed_group(&values, softsign, &mut codes);
        let s = group_scale_f32(values.iter().map(|v| v.abs()));
        prop_assert_eq!(scale, f16::from_f32(s));
        // Code error: half a step in the companded domain, which softsign's inverse
        // stretches by at most 2 (its slope at |y| = 1).
        let q_err = if softsign { 1.0 / 127.0 } else { 0.5 / 127.0 };
        let s16 = f64::from(scale.to_f32());
        for (&x, &c) in values.iter().zip(&codes) {
            let y = f64::from(decode_signed(c, scale, softsign));
            let bound = q_err * s16 + (s16 - f64::from(s)).abs() + 8.0 * f64::from(f32::EPSILON) * f64::from(s);
            prop_assert!((y - f64::from(x)).abs() <= bound, "x={x:e} y={y:e} code={c} scale={s:e} bound={bound:e}");
            prop_assert!(c == 0 || (c > 0) == (x > 0.0), "sign of {x} lost in code {c}");
        }
    }

    #[test]
    fn sqrt_groups_roundtrip(values in prop::collection::vec(0.0f32..4.0e9, 1..=32), shift in -40i32..0) {
        let values: Vec<f32> = values.iter().map(|v| v * 2f32.powi(shift)).collect();
        let mut codes = vec![0u8; values.len()];
        let scale = encode_sqrt_group(&values, &mut codes);
        let s = group_scale_f32(values.iter().map(|v| v.sqrt()));
        prop_assert_eq!(scale, f16::from_f32(s));
        let s16 = f64::from(scale.to_f32());
        for (&x, &c) in values.iter().zip(&codes) {
            let y = f64::from(decode_sqrt(c, scale));
            let root_bound = 0.5 / 255.0 * s16 + (s16 - f64::from(s)).abs() + 8.0 * f64::from(f32::EPSILON) * f64::from(s);
            let (rx, ry) = (f64::from(x).sqrt(), y.sqrt());
            prop_assert!((ry - rx).abs() <= root_bound, "x={x:e} y={y:e} code={c}");
        }
    }

    #[test]
    fn padding_never_changes_a_group(values in prop::collection::vec(-100.0f32..100.0, 1..32), softsign: bool) {
        let mut short = vec![0i8; values.len()];
        let short_scale = encode_signed_group(&values, softsign, &mut short);
        let mut padded_values = values.clone();
        padded_values.resize(32, 0.0);
        let mut padded = vec![0i8; 32];
        let padded_scale = encode_signed_group(&padded_values, softsign, &mut padded);
        prop_assert_eq!(short_scale, padded_scale);
        prop_assert_eq!(&short[..], &padded[..values.len()]);
        prop_assert!(padded[values.len()..].iter().all(|&c| c == 0));

        let squares: Vec<f32> = values.iter().map(|v| v * v).collect();
        let mut short = vec![0u8; squares.len()];
        let short_scale = encode_sqrt_group(&squares, &mut short);
        let mut padded_squares = squares.clone();
        padded_squares.resize(32, 0.0);
        let mut padded = vec![0u8; 32];
        prop_assert_eq!(short_scale, encode_sqrt_group(&padded_squares, &mut padded));
        prop_assert_eq!(&short[..], &padded[..squares.len()]);
    }
}

#[test]
fn adversarial_master_values() {
    for dtype in NARROW {
        let max = narrow_max(dtype);
        let smallest_narrow_subnormal = narrow_to_f32(1, dtype);
        let mut cases = vec![
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            -f32::from_bits(1),
            smallest_narrow_subnormal,
            smallest_narrow_subnormal * 0.5,
            smallest_narrow_subnormal * 1.5,
            max,
            -max,
            1.0,
            -1.0,
        ];
        // Exact ties between neighbouring narrow values, and one f32 ULP either side.
        for base in [1.0f32, 3.0, 1000.0, -7.5, smallest_narrow_subnormal * 8.0] {
            let bits = to_narrow_bits(base, dtype);
            let next = narrow_to_f32(bits + 1, dtype);
            let tie = ((f64::from(base) + f64::from(next)) / 2.0) as f32;
            cases.extend([
                tie,
                f32::from_bits(tie.to_bits() + 1),
                f32::from_bits(tie.to_bits() - 1),
            ]);
        }
        for mode in MODES {
            for &x in &cases {
                check_master_roundtrip(x, dtype, mode).unwrap();
                if x.to_bits() == 0 || x == max {
                    let (bits, code) = encode_master(x, dtype, mode);
                    assert_eq!(code, 0);
                    assert_eq!(
                        decode_master(bits, code, dtype, mode).to_bits(),
                        x.to_bits(),
                        "{x} keeps its bits"
                    );
                }
            }
        }
    }
    // A value exactly between two bf16 neighbours encodes the full code and decodes exactly.
    let tie = 1.0 + 2f32.powi(-8);
    let (bits, code) = encode_master(tie, FloatDtype::Bf16, MasterMode::Int8);
    assert_eq!(
        narrow_to_f32(bits, FloatDtype::Bf16),
        1.0,
        "ties go to even"
    );
    assert_eq!(code, 127);
    assert_eq!(
        decode_master(bits, code, FloatDtype::Bf16, MasterMode::Int8),
        tie
    );
}

#[test]
fn values_beyond_the_narrow_range_become_infinite() {
    for (dtype, x) in [
        (FloatDtype::Bf16, f32::MAX),
        (FloatDtype::F16, 70000.0),
        (FloatDtype::F16, -1.0e10),
    ] {
        for mode in MODES {
            let (bits, code) = encode_master(x, dtype, mode);
            let y = decode_master(bits, code, dtype, mode);
            assert!(
                y.is_infinite() && y.signum() == x.signum(),
                "{x} in {dtype} decodes to {y}"
            );
        }
    }
}

/// How often the master codec reconstructs a random f32 bit for bit.
///
/// 24-bit (bf16 + int8) cannot be bit-exact for most values: one bf16 ULP interval
/// holds 2^16 f32 values and the int8 code can land on only 255 of them, so at most
/// ~0.39% are reproduced exactly; what 24 bits guarantee is the error bound tested
/// above. 32-bit (bf16 + int16) reproduces almost all of them; the misses are values
/// just below a power of two, which round up to a narrow value whose lower neighbour
/// sits in the finer binade.
#[test]
fn bit_exact_reconstruction_fraction() {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut uniform = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let n = 400_000;
    let (lo, hi) = (1e-6f64.ln(), 1e3f64.ln());
    let samples: Vec<f32> = (0..n)
        .map(|_| (lo + uniform() * (hi - lo)).exp() as f32)
        .collect();
    let fraction = |dtype, mode| {
        let exact = samples
            .iter()
            .filter(|&&x| {
                let (bits, code) = encode_master(x, dtype, mode);
                decode_master(bits, code, dtype, mode) == x
            })
            .count();
        exact as f64 / n as f64
    };
    let bf16_24 = fraction(FloatDtype::Bf16, MasterMode::Int8);
    let bf16_32 = fraction(FloatDtype::Bf16, MasterMode::Int16);
    let f16_32 = fraction(FloatDtype::F16, MasterMode::Int16);
    println!(
        "bit-exact reconstruction of log-uniform f32 in [1e-6, 1e3], {n} samples: \
         bf16+int8 (24-bit) {:.3}%, bf16+int16 (32-bit) {:.3}%, f16+int16 {:.3}%",
        100.0 * bf16_24,
        100.0 * bf16_32,
        100.0 * f16_32
    );
    let counting_bound = 255.0 / 65536.0;
    assert!(
        bf16_24 <= counting_bound * 1.1,
        "24-bit can't beat the counting bound: {bf16_24}"
    );
    assert!(
        bf16_24 >= counting_bound * 0.9,
        "24-bit should reach its counting bound: {bf16_24}"
    );
    assert!(bf16_32 >= 0.997, "32-bit bf16 reproduces {bf16_32}");
}
