//! Global gradient-norm clipping, as torch's `clip_grad_norm_(params, max_norm)`:
//! the norm of all of a step's gradients together, and when it exceeds `max_norm`
//! every gradient multiplied by `max_norm / (norm + 1e-6)`.
//!
//! flashopt applies the factor inside the update kernel, to the gradient once widened
//! to f32 ([`flashopt_ir::passes::scale_grad`](mod@flashopt_ir::passes::scale_grad)); torch multiplies the stored gradient
//! and rounds it to its dtype again. The norm is summed in f64.

use flashopt_ir::interp::GradBuf;

use crate::error::RuntimeError;

/// torch's `clip_grad_norm_` adds this to the norm before dividing.
pub const NORM_EPSILON: f64 = 1e-6;

/// A clipping threshold, checked: positive and finite.
pub fn check_max_norm(max_norm: f64) -> Result<f64, RuntimeError> {
    if max_norm.is_finite() && max_norm > 0.0 {
        Ok(max_norm)
    } else {
        Err(RuntimeError::MaxNorm(max_norm))
    }
}

/// The factor a step's gradients are multiplied by: 1 when `norm <= max_norm`
/// (nearly: torch's epsilon included), as the kernel's f32 scalar.
pub fn scale(max_norm: f64, norm: f64) -> f32 {
    (max_norm / (norm + NORM_EPSILON)).min(1.0) as f32
}

/// The sum of squares of a gradient's values, in f64 (each square exact).
pub fn square_sum(grad: &GradBuf<'_>) -> f64 {
    fn go<T: Copy>(v: &[T], f32_of: impl Fn(T) -> f32) -> f64 {
        v.iter()
            .map(|&x| {
                let x = f64::from(f32_of(x));
                x * x
            })
            .sum()
    }
    match *grad {
        GradBuf::Bf16(v) => go(v, |x| x.to_f32()),
        GradBuf::F16(v) => go(v, |x| x.to_f32()),
        GradBuf::F32(v) => go(v, |x| x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_matches_torch_and_never_exceeds_one() {
        assert_eq!(scale(1.0, 0.5), 1.0);
        // At the threshold torch already scales, by 1 / (1 + 1e-6).
        assert_eq!(scale(1.0, 1.0), (1.0 / (1.0 + 1e-6)) as f32);
        assert!(scale(1.0, 1.0) < 1.0);
        assert_eq!(scale(1.0, 4.0), (1.0 / (4.0 + 1e-6)) as f32);
        assert_eq!(scale(2.0, 0.0), 1.0);
    }

    #[test]
    fn thresholds_must_be_positive_and_finite() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = check_max_norm(bad).unwrap_err().to_string();
            assert!(err.contains("max_norm"), "{err}");
        }
        assert_eq!(check_max_norm(1.5).unwrap(), 1.5);
    }

    #[test]
    fn squares_are_summed_exactly_for_small_inputs() {
        let g = [half::bf16::from_f32(3.0), half::bf16::from_f32(-4.0)];
        assert_eq!(square_sum(&GradBuf::Bf16(&g)), 25.0);
        assert!(square_sum(&GradBuf::F32(&[f32::MAX, f32::MAX])).is_finite());
        assert!(square_sum(&GradBuf::F32(&[1.0, f32::NAN])).is_nan());
    }
}
