//! `ops::code_quotient` replaces IEEE division of integral codes by the codec constants.
//! This mirror of its arithmetic (f32 products, FMAs) must agree with `/` bit for bit on
//! every code the codecs can hold, or the kernels would drift from the CPU reference.

fn code_quotient(code: f32, divisor: f32) -> f32 {
    let reciprocal = 1.0f32 / divisor;
    let q0 = code * reciprocal;
    let remainder = (-divisor).mul_add(q0, code);
    remainder.mul_add(reciprocal, q0)
}

fn check(codes: impl Iterator<Item = i32>, divisor: f32) -> usize {
    let mut checked = 0;
    for c in codes {
        let code = c as f32;
        let expected = code / divisor;
        let got = code_quotient(code, divisor);
        assert_eq!(
            got.to_bits(),
            expected.to_bits(),
            "{code} / {divisor}: {got:e} instead of {expected:e}"
        );
        checked += 1;
    }
    checked
}

#[test]
fn int8_codes_over_127() {
    assert_eq!(check(-128..=127, 127.0), 256);
}

#[test]
fn uint8_codes_over_255() {
    assert_eq!(check(0..=255, 255.0), 256);
}

#[test]
fn int16_corrections_over_32767() {
    assert_eq!(check(-32768..=32767, 32767.0), 65536);
}

#[test]
fn a_plain_product_is_not_enough() {
    // Why the correction step exists: code * (1 / divisor) alone misrounds some codes.
    let wrong = (-32768..=32767)
        .filter(|&c| {
            let code = c as f32;
            (code * (1.0f32 / 32767.0)).to_bits() != (code / 32767.0).to_bits()
        })
        .count();
    assert!(wrong > 0);
}
