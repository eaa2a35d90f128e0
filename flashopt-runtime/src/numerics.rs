//! Guards a long run needs: steps with non-finite gradients are skipped (as torch's
//! GradScaler does), and flashoptim's `check_numerics` tells when the learning rate is
//! too small to move the largest weights at the storage precision.

use flashopt_ir::interp::{GradBuf, PartData};
use flashopt_ir::{FloatDtype, Plan};

/// What a step did.
#[derive(Clone, Debug, PartialEq)]
pub enum StepOutcome {
    Applied,
    /// A gradient held NaN or infinity: parameters, states and the step counter are
    /// untouched.
    Skipped(NonFinite),
}

impl StepOutcome {
    pub fn applied(&self) -> bool {
        matches!(self, StepOutcome::Applied)
    }
}

/// `applied`, or `skipped: ` and the first non-finite gradient value.
impl std::fmt::Display for StepOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepOutcome::Applied => write!(f, "applied"),
            StepOutcome::Skipped(why) => write!(f, "skipped: {why}"),
        }
    }
}

/// The non-finite gradient values of a skipped step.
#[derive(Clone, Debug, PartialEq)]
pub struct NonFinite {
    /// The first tensor (in registration order) with one, its element index and value.
    pub tensor: String,
    pub index: usize,
    pub value: f32,
    /// How many gradient values of the step were NaN or infinite.
    pub count: usize,
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "step skipped: {} non-finite gradient value(s), the first {} at `{}`[{}]",
            self.count, self.value, self.tensor, self.index
        )
    }
}

/// The first non-finite value of a gradient and how many there are. A value is NaN
/// or infinite exactly when its exponent bits are all ones, so the count is one
/// vectorizable pass over the bits (on rayon's pool for large gradients); the
/// first one is looked for only when there is one.
pub fn scan(grad: &GradBuf<'_>) -> Option<(usize, f32, usize)> {
    fn go<T: Copy + Sync>(
        v: &[T],
        non_finite: impl Fn(T) -> bool + Sync,
        f32_of: impl Fn(T) -> f32,
    ) -> Option<(usize, f32, usize)> {
        let count_in = |part: &[T]| part.iter().filter(|&&x| non_finite(x)).count();
        const PIECE: usize = 1 << 22;
        let count = if v.len() < 2 * PIECE {
            count_in(v)
        } else {
            use rayon::prelude::*;
            v.par_chunks(PIECE).map(count_in).sum()
        };
        if count == 0 {
            return None;
        }
        let i = v.iter().position(|&x| non_finite(x)).expect("counted");
        Some((i, f32_of(v[i]), count))
    }
    match *grad {
        GradBuf::Bf16(v) => go(v, |x| x.to_bits() & 0x7f80 == 0x7f80, |x| x.to_f32()),
        GradBuf::F16(v) => go(v, |x| x.to_bits() & 0x7c00 == 0x7c00, |x| x.to_f32()),
        GradBuf::F32(v) => go(v, |x| x.to_bits() & 0x7f80_0000 == 0x7f80_0000, |x| x),
    }
}

/// Scan every gradient of a step (named, in order).
pub fn scan_step<'a>(grads: impl IntoIterator<Item = (&'a str, GradBuf<'a>)>) -> Option<NonFinite> {
    let mut found: Option<NonFinite> = None;
    for (name, g) in grads {
        if let Some((index, value, count)) = scan(&g) {
            match &mut found {
                Some(f) => f.count += count,
                None => {
                    found = Some(NonFinite {
                        tensor: name.to_string(),
                        index,
                        value,
                        count,
                    })
                }
            }
        }
    }
    found
}

/// The largest `|w|` of a tensor's parameters (NaN ignored, as `f32::max` does).
pub fn max_abs(param: &PartData) -> f32 {
    fn fold<T: Copy>(v: &[T], f32_of: impl Fn(T) -> f32) -> f32 {
        v.iter().fold(0.0f32, |m, &x| m.max(f32_of(x).abs()))
    }
    match param {
        PartData::Bf16(v) => fold(v, |x| x.to_f32()),
        PartData::F16(v) => fold(v, |x| x.to_f32()),
        PartData::F32(v) => fold(v, |x| x),
        other => panic!("a parameter holds floats, not {}", other.storage()),
    }
}

/// A tensor whose largest weight the learning rate cannot move.
#[derive(Clone, Debug, PartialEq)]
pub struct NumericsWarning {
    pub tensor: String,
    pub lr: f64,
    pub max_abs: f32,
    /// Bits of the master weight: the narrow dtype's width, or 24 / 32 with a correction.
    pub master_bits: u32,
    /// log2 of the smallest step that still changes a weight of `max_abs`.
    pub log2_resolution: f64,
    /// log2 of the smallest step the optimizer is expected to take.
    pub log2_min_step: f64,
}

impl std::fmt::Display for NumericsWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tensor `{}`: learning rate {:.3e} gives steps that may be too small to change its \
             largest weights (max |w| = {}, {}-bit master): smallest expected step {:.5e} < \
             resolution {:.5e}; raise the learning rate, shrink the weights or use more master bits",
            self.tensor,
            self.lr,
            self.max_abs,
            self.master_bits,
            self.log2_min_step.exp2(),
            self.log2_resolution.exp2()
        )
    }
}

fn exponent_bits(dtype: FloatDtype) -> u32 {
    match dtype {
        FloatDtype::F16 => 5,
        FloatDtype::Bf16 | FloatDtype::F32 => 8,
    }
}

/// The bits a plan keeps of each master weight: every part its init program writes
/// (the parameter, and its correction if it has one).
pub fn master_bits(plan: &Plan) -> u32 {
    plan.part_ids()
        .filter(|(id, _)| plan.init.writes(*id))
        .map(|(_, p)| p.storage.size_bytes() as u32 * 8)
        .sum()
}

/// flashoptim 0.1.4's check: the step `lr * min_step_relative` must exceed 0.49 of
/// the resolution of a master weight of `master_bits` over a `param` parameter at
/// `max_abs`.
pub fn check_tensor(
    tensor: &str,
    (param, master_bits): (FloatDtype, u32),
    lr: f64,
    min_step_relative: f64,
    max_abs: f32,
) -> Option<NumericsWarning> {
    // Zero learning rates are dummy steps; zero or non-finite weights have no scale.
    if lr == 0.0 || max_abs <= 0.0 || !max_abs.is_finite() {
        return None;
    }
    let mantissa = (master_bits - 1 - exponent_bits(param)) as f64 + 0.49f64.log2();
    let log2_resolution = (max_abs as f64).log2().floor() - mantissa;
    let log2_min_step = (lr * min_step_relative).log2();
    (log2_resolution > log2_min_step).then(|| NumericsWarning {
        tensor: tensor.to_string(),
        lr,
        max_abs,
        master_bits,
        log2_resolution,
        log2_min_step,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashopt_ir::def::{OptimizerDef, Range, name};
    use flashopt_ir::{MasterMode, PlanConfig};
    use half::bf16;

    /// What `check_tensor` is given for a storage format: the parameter dtype and the
    /// master bits its plan stores.
    fn format(config: PlanConfig) -> (FloatDtype, u32) {
        let mut def = OptimizerDef::new("sgd");
        def.hyper("lr", 0.1, Range::at_least(0.0));
        def.assign("p", name("p") - name("lr") * name("g"));
        let plan = flashopt_ir::compile(&def, config).unwrap();
        (config.param, master_bits(&plan))
    }

    #[test]
    fn master_bits_come_from_the_stored_parts() {
        assert_eq!(format(PlanConfig::bf16(MasterMode::None)).1, 16);
        assert_eq!(format(PlanConfig::bf16(MasterMode::Int8)).1, 24);
        assert_eq!(format(PlanConfig::bf16(MasterMode::Int16)).1, 32);
        assert_eq!(format(PlanConfig::f32_params()).1, 32);
    }

    #[test]
    fn bf16_without_correction_cannot_take_small_steps_on_unit_weights() {
        let bf16_only = format(PlanConfig::bf16(MasterMode::None));
        // 7 mantissa bits: at |w| = 1 a step must reach 0.49 * 2^-7, about 0.016.
        let w = check_tensor("w", bf16_only, 1e-2, 1.0, 1.0).expect("too small");
        assert_eq!(w.master_bits, 16);
        assert!((w.log2_resolution - (-(7.0 + 0.49f64.log2()))).abs() < 1e-12);
        assert!(check_tensor("w", bf16_only, 0.02, 1.0, 1.0).is_none());
        // 24-bit master weights: 15 mantissa bits (about 6.2e-5 at |w| = 1).
        let master24 = format(PlanConfig::bf16(MasterMode::Int8));
        assert!(check_tensor("w", master24, 1e-3, 1.0, 1.0).is_none());
        assert!(check_tensor("w", master24, 1e-6, 1.0, 1.0).is_some());
        // Adam's expected step is a tenth of lr.
        assert!(check_tensor("w", master24, 1e-3, 0.1, 1.0).is_none());
        assert!(check_tensor("w", master24, 3e-4, 0.1, 1.0).is_some());
        // Larger weights need larger steps: |w| = 8 moves the resolution up 3 binades.
        let big = check_tensor("w", master24, 1e-6, 1.0, 8.0).unwrap();
        assert!((big.log2_resolution - w.log2_resolution - 3.0 - (7.0 - 15.0)).abs() < 1e-12);
        // f16 has 5 exponent bits, so 3 more mantissa bits than bf16 at the same width.
        let f16_only = format(PlanConfig {
            param: FloatDtype::F16,
            grad: FloatDtype::F16,
            master: MasterMode::None,
        });
        assert!(check_tensor("w", f16_only, 0.005, 1.0, 1.0).is_none());
        // Nothing to say about zero weights, zero lr or infinities.
        assert!(check_tensor("w", bf16_only, 1e-9, 1.0, 0.0).is_none());
        assert!(check_tensor("w", bf16_only, 0.0, 1.0, 1.0).is_none());
        assert!(check_tensor("w", bf16_only, 1e-9, 1.0, f32::INFINITY).is_none());
    }

    #[test]
    fn a_large_scan_counts_across_its_threads_and_finds_the_first_value() {
        // Over 2^23 elements: counted on several threads.
        let mut g = vec![half::f16::from_f32(0.5); (1 << 23) + 77];
        for (i, x) in [(5_000_000, half::f16::NEG_INFINITY), (70, half::f16::NAN)] {
            g[i] = x;
        }
        g[(1 << 23) + 76] = half::f16::INFINITY;
        // The largest finite f16 and subnormals are finite.
        g[3] = half::f16::MAX;
        g[4] = half::f16::from_bits(1);
        let (index, value, count) = scan(&GradBuf::F16(&g)).unwrap();
        assert_eq!((index, count), (70, 3));
        assert!(value.is_nan());
        let finite = vec![f32::MAX; 1 << 23];
        assert_eq!(scan(&GradBuf::F32(&finite)), None);
    }

    #[test]
    fn a_step_scan_counts_every_non_finite_value_and_names_the_first() {
        let a = [bf16::from_f32(1.0), bf16::NAN, bf16::INFINITY];
        let b = [0.0f32, f32::NEG_INFINITY];
        let c = [bf16::from_f32(2.0)];
        let found = scan_step([
            ("c", GradBuf::Bf16(&c)),
            ("a", GradBuf::Bf16(&a)),
            ("b", GradBuf::F32(&b)),
        ])
        .unwrap();
        assert_eq!(
            (found.tensor.as_str(), found.index, found.count),
            ("a", 1, 3)
        );
        assert!(found.value.is_nan());
        assert_eq!(
            found.to_string(),
            "step skipped: 3 non-finite gradient value(s), the first NaN at `a`[1]"
        );
        assert!(scan_step([("c", GradBuf::Bf16(&c))]).is_none());
    }

    /// Past 8M values the count runs on rayon's pool, piece by piece: every
    /// non-finite value is counted once, the first is found.
    #[test]
    fn a_large_gradient_is_counted_in_pieces() {
        let mut g = vec![0.5f32; (1 << 23) + 5];
        for i in [3, 1 << 22, (1 << 22) + 1, (1 << 23) + 4] {
            g[i] = f32::INFINITY;
        }
        g[(1 << 22) + 7] = f32::NAN;
        let (first, value, count) = scan(&GradBuf::F32(&g)).unwrap();
        assert_eq!((first, value, count), (3, f32::INFINITY, 5));
    }
}
