//! Interval arithmetic over f32 (and i32) values with IEEE semantics: every bound is a
//! value the operation can round to or beyond, and NaN is tracked apart from the
//! bounds, because one NaN operand in a kernel must give the same bits as on the CPU.

use std::fmt;

use crate::semantics::round_to;
use crate::types::FloatDtype;

/// Every value an instruction can produce lies in `[lo, hi]` (bounds over the reals,
/// infinities included; `-0.0` and `0.0` are not told apart), or is NaN where `nan`.
/// i32 values use the same type with integral bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
    pub nan: bool,
}

pub(super) const INF: f64 = f64::INFINITY;

/// How far (in ulps) a library function's result may lie from the exact one.
const LIBM_ULPS: usize = 4;

/// The largest f32 at or below `x` (`-inf` for NaN, which only a bound computed
/// from opposite infinities is).
fn f32_down(x: f64) -> f64 {
    if x.is_nan() {
        return -INF;
    }
    let f = x as f32;
    f64::from(if f64::from(f) > x { -next_up(-f) } else { f })
}

/// The smallest f32 at or above `x` (`inf` for NaN).
fn f32_up(x: f64) -> f64 {
    if x.is_nan() {
        return INF;
    }
    let f = x as f32;
    f64::from(if f64::from(f) < x { next_up(f) } else { f })
}

/// The next f32 above a non-NaN `f` below infinity (`f32::next_up`, stable only
/// after this crate's minimum Rust).
pub(super) fn next_up(f: f32) -> f32 {
    if f == 0.0 {
        f32::from_bits(1)
    } else if f > 0.0 {
        f32::from_bits(f.to_bits() + 1)
    } else {
        f32::from_bits(f.to_bits() - 1)
    }
}

impl Interval {
    /// Any value, NaN included: what a load of a float part or an input may be.
    pub const ANY: Interval = Interval {
        lo: -INF,
        hi: INF,
        nan: true,
    };

    /// The booleans 0 and 1 (a comparison's result).
    const BOOL: Interval = Interval {
        lo: 0.0,
        hi: 1.0,
        nan: false,
    };

    /// One value (a NaN constant: anything, conservatively).
    pub fn point(x: f64) -> Interval {
        if x.is_nan() {
            Interval::ANY
        } else {
            Interval::closed(x, x)
        }
    }

    pub fn closed(lo: f64, hi: f64) -> Interval {
        Interval { lo, hi, nan: false }
    }

    /// The results of an f32 operation whose exact results lie in `[lo, hi]` (each
    /// bound computed in f64 from f32 operands: any f64 rounding is far below an f32
    /// half ulp, so the f32 neighbours outward still bound the rounded results).
    pub(super) fn rounded(lo: f64, hi: f64, nan: bool) -> Interval {
        Interval {
            lo: f32_down(lo),
            hi: f32_up(hi),
            nan,
        }
    }

    /// The hull of candidate bounds (NaN candidates, from `0 * inf` or `inf / inf`,
    /// skipped: `nan` records them), rounded to f32.
    fn hull(candidates: &[f64], nan: bool) -> Interval {
        let exact = Interval::exact_hull(candidates.iter().copied(), nan);
        Interval::rounded(exact.lo, exact.hi, exact.nan)
    }

    /// The smallest interval holding every non-NaN candidate (anything, if none is).
    pub(super) fn exact_hull(candidates: impl Iterator<Item = f64> + Clone, nan: bool) -> Interval {
        let finite = candidates.filter(|x| !x.is_nan());
        let lo = finite.clone().fold(INF, f64::min);
        let hi = finite.fold(-INF, f64::max);
        if lo > hi {
            Interval::ANY
        } else {
            Interval { lo, hi, nan }
        }
    }

    pub fn union(self, other: Interval) -> Interval {
        Interval {
            lo: self.lo.min(other.lo),
            hi: self.hi.max(other.hi),
            nan: self.nan || other.nan,
        }
    }

    /// Greater than zero and never NaN.
    pub fn is_positive(self) -> bool {
        !self.nan && self.lo > 0.0
    }

    /// Never zero (of either sign) and never NaN.
    pub fn excludes_zero(self) -> bool {
        !self.nan && (self.lo > 0.0 || self.hi < 0.0)
    }

    /// Whether `x` (an f32 value's bits read as `ty` says) lies in the interval.
    pub fn contains_f32(self, x: f32) -> bool {
        if x.is_nan() {
            self.nan
        } else {
            self.lo <= f64::from(x) && f64::from(x) <= self.hi
        }
    }

    pub(super) fn contains_zero(self) -> bool {
        self.lo <= 0.0 && 0.0 <= self.hi
    }

    fn has_infinity(self) -> bool {
        self.lo == -INF || self.hi == INF
    }

    /// A value other than zero is possible (NaN counts: `select` takes it as true).
    pub(super) fn can_be_true(self) -> bool {
        self.nan || self.lo != 0.0 || self.hi != 0.0
    }

    pub(super) fn can_be_false(self) -> bool {
        self.contains_zero()
    }

    /// No bound below zero (an exponential's results).
    pub(super) fn at_least_zero(self) -> Interval {
        Interval {
            lo: self.lo.max(0.0),
            ..self
        }
    }

    /// The one non-NaN value, if the interval holds only it.
    pub(super) fn single(self) -> Option<f64> {
        (self.lo == self.hi && !self.nan).then_some(self.lo)
    }

    pub(super) fn of_truth(can_true: bool, can_false: bool) -> Interval {
        match (can_true, can_false) {
            (true, false) => Interval::point(1.0),
            (false, true) => Interval::point(0.0),
            _ => Interval::BOOL,
        }
    }

    pub fn abs(self) -> Interval {
        let (lo, hi) = if self.lo >= 0.0 {
            (self.lo, self.hi)
        } else if self.hi <= 0.0 {
            (-self.hi, -self.lo)
        } else {
            (0.0, self.hi.max(-self.lo))
        };
        Interval {
            lo,
            hi,
            nan: self.nan,
        }
    }

    fn add_exact(self, b: Interval) -> (f64, f64, bool) {
        let nan = self.nan
            || b.nan
            || (self.hi == INF && b.lo == -INF)
            || (self.lo == -INF && b.hi == INF);
        (self.lo + b.lo, self.hi + b.hi, nan)
    }

    /// The unrounded products' hull (exact in f64 for f32 bounds), for `mul` and `fma`.
    fn products(self, b: Interval) -> Interval {
        let nan = self.nan
            || b.nan
            || (self.contains_zero() && b.has_infinity())
            || (b.contains_zero() && self.has_infinity());
        let c = [
            self.lo * b.lo,
            self.lo * b.hi,
            self.hi * b.lo,
            self.hi * b.hi,
        ];
        Interval::exact_hull(c.into_iter(), nan)
    }

    /// `a * b + c`, rounded once.
    pub fn fma(self, b: Interval, c: Interval) -> Interval {
        let p = self.products(b);
        let (lo, hi, nan) = p.add_exact(c);
        Interval::rounded(lo, hi, nan)
    }

    pub fn sqrt(self) -> Interval {
        if self.hi < 0.0 {
            return Interval::ANY;
        }
        Interval::rounded(
            self.lo.max(0.0).sqrt(),
            self.hi.sqrt(),
            self.nan || self.lo < 0.0,
        )
    }

    /// A function that never decreases, applied to both bounds (NaN where `nan`).
    /// `exp`, `exp2` and `ln` are not correctly rounded (the GPU's may differ from
    /// the CPU's by an ulp or two): their bounds are widened by [`LIBM_ULPS`].
    pub(super) fn monotone(self, f: impl Fn(f64) -> f64, nan: bool) -> Interval {
        let exact = Interval::rounded(f(self.lo), f(self.hi), nan);
        let (mut lo, mut hi) = (exact.lo as f32, exact.hi as f32);
        for _ in 0..LIBM_ULPS {
            if lo > f32::NEG_INFINITY {
                lo = -next_up(-lo);
            }
            if hi < f32::INFINITY {
                hi = next_up(hi);
            }
        }
        Interval {
            lo: lo.into(),
            hi: hi.into(),
            nan,
        }
    }

    /// `f32::min` / `f32::max`: a NaN operand gives the other one.
    pub(super) fn min_max(self, b: Interval, pick: fn(f64, f64) -> f64) -> Interval {
        let both = Interval {
            lo: pick(self.lo, b.lo),
            hi: pick(self.hi, b.hi),
            nan: self.nan && b.nan,
        };
        let mut out = both;
        if self.nan {
            out = out.union(b);
        }
        if b.nan {
            out = out.union(self);
        }
        Interval {
            nan: self.nan && b.nan,
            ..out
        }
    }

    pub fn max(self, b: Interval) -> Interval {
        self.min_max(b, f64::max)
    }

    pub fn min(self, b: Interval) -> Interval {
        self.min_max(b, f64::min)
    }

    /// `a < b` (false for NaN), as 0 or 1.
    pub(super) fn less(self, b: Interval, or_equal: bool) -> Interval {
        let can_true = if or_equal {
            self.lo <= b.hi
        } else {
            self.lo < b.hi
        };
        let can_false = self.nan
            || b.nan
            || if or_equal {
                self.hi > b.lo
            } else {
                self.hi >= b.lo
            };
        Interval::of_truth(can_true, can_false)
    }

    pub(super) fn equal(self, b: Interval) -> Interval {
        let overlap = self.lo <= b.hi && b.lo <= self.hi;
        let same_point = matches!((self.single(), b.single()), (Some(x), Some(y)) if x == y);
        Interval::of_truth(overlap, !same_point || self.nan || b.nan)
    }

    pub fn select(self, a: Interval, b: Interval) -> Interval {
        match (self.can_be_true(), self.can_be_false()) {
            (true, false) => a,
            (false, true) => b,
            _ => a.union(b),
        }
    }

    pub fn floor(self) -> Interval {
        Interval {
            lo: self.lo.floor(),
            hi: self.hi.floor(),
            nan: self.nan,
        }
    }

    pub fn round_to(self, dtype: FloatDtype) -> Interval {
        let r = |x: f64| f64::from(round_to(dtype, x as f32));
        Interval {
            lo: r(self.lo),
            hi: r(self.hi),
            nan: self.nan,
        }
    }
}

impl std::ops::Neg for Interval {
    type Output = Interval;

    fn neg(self) -> Interval {
        Interval {
            lo: -self.hi,
            hi: -self.lo,
            nan: self.nan,
        }
    }
}

impl std::ops::Add for Interval {
    type Output = Interval;

    fn add(self, b: Interval) -> Interval {
        let (lo, hi, nan) = self.add_exact(b);
        Interval::rounded(lo, hi, nan)
    }
}

impl std::ops::Sub for Interval {
    type Output = Interval;

    fn sub(self, b: Interval) -> Interval {
        self + -b
    }
}

impl std::ops::Mul for Interval {
    type Output = Interval;

    fn mul(self, b: Interval) -> Interval {
        let p = self.products(b);
        Interval::rounded(p.lo, p.hi, p.nan)
    }
}

impl std::ops::Div for Interval {
    type Output = Interval;

    fn div(self, b: Interval) -> Interval {
        if b.contains_zero() {
            return Interval::ANY;
        }
        let nan = self.nan || b.nan || (self.has_infinity() && b.has_infinity());
        Interval::hull(
            &[
                self.lo / b.lo,
                self.lo / b.hi,
                self.hi / b.lo,
                self.hi / b.hi,
            ],
            nan,
        )
    }
}

fn bound_text(x: f64) -> String {
    if x == INF {
        "inf".into()
    } else if x == -INF {
        "-inf".into()
    } else {
        format!("{:?}", x as f32)
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", bound_text(self.lo), bound_text(self.hi))?;
        if self.nan {
            f.write_str(" or NaN")?;
        }
        Ok(())
    }
}
