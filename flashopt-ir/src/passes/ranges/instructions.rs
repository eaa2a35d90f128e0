//! What each instruction computes, over intervals: the transfer functions of the
//! value-range analysis, one per operation of [`crate::semantics`].

use super::interval::{INF, Interval};
use crate::graph::{Func1, Func2, Func3};
use crate::program::IntOp;

impl Interval {
    pub fn unary(self, f: Func1) -> Interval {
        match f {
            Func1::Neg => -self,
            Func1::Abs => self.abs(),
            Func1::Not => Interval::of_truth(self.can_be_false(), self.can_be_true()),
            Func1::Sign => {
                let mut out: Option<Interval> = None;
                let mut add = |x: f64| {
                    let p = Interval::point(x);
                    out = Some(out.map_or(p, |o| o.union(p)));
                };
                if self.hi > 0.0 {
                    add(1.0);
                }
                if self.lo < 0.0 {
                    add(-1.0);
                }
                if self.contains_zero() || self.nan {
                    add(0.0);
                }
                out.unwrap_or(Interval::point(0.0))
            }
            Func1::Sqrt => self.sqrt(),
            Func1::Rsqrt => Interval::point(1.0) / self.sqrt(),
            Func1::Exp => self.monotone(f64::exp, self.nan).at_least_zero(),
            Func1::Exp2 => self.monotone(f64::exp2, self.nan).at_least_zero(),
            Func1::Ln => {
                if self.hi < 0.0 {
                    return Interval::ANY;
                }
                let at_least_zero = Interval {
                    lo: self.lo.max(0.0),
                    ..self
                };
                at_least_zero.monotone(f64::ln, self.nan || self.lo < 0.0)
            }
            Func1::ToFloat | Func1::HostF64 => Interval::rounded(self.lo, self.hi, self.nan),
        }
    }

    pub fn binary(self, f: Func2, b: Interval) -> Interval {
        match f {
            Func2::Add => self + b,
            Func2::Sub => self - b,
            Func2::Mul => self * b,
            Func2::Div => self / b,
            Func2::Lt => self.less(b, false),
            Func2::Le => self.less(b, true),
            Func2::Gt => b.less(self, false),
            Func2::Ge => b.less(self, true),
            Func2::Eq => self.equal(b),
            Func2::Ne => {
                let eq = self.equal(b);
                Interval::of_truth(eq.lo == 0.0, eq.hi == 1.0)
            }
            Func2::And => Interval::of_truth(
                self.can_be_true() && b.can_be_true(),
                self.can_be_false() || b.can_be_false(),
            ),
            Func2::Or => Interval::of_truth(
                self.can_be_true() || b.can_be_true(),
                self.can_be_false() && b.can_be_false(),
            ),
            Func2::Min => self.min(b),
            Func2::Max => self.max(b),
            Func2::Powi => self.powi(b),
            Func2::Powf => Interval::ANY,
        }
    }

    /// `x^n` for integers `n >= 1`: every rounded product of factors in `[0, 1]` stays
    /// in `[0, x]`, of factors at or above 1 at or above `x`; anything else, unbounded.
    fn powi(self, n: Interval) -> Interval {
        if self.nan || n.nan || n.lo < 1.0 {
            return Interval::ANY;
        }
        if self.lo >= 0.0 && self.hi <= 1.0 {
            return Interval::closed(0.0, self.hi);
        }
        if self.lo >= 1.0 {
            return Interval::closed(self.lo, INF);
        }
        Interval::ANY
    }

    pub fn ternary(self, f: Func3, b: Interval, c: Interval) -> Interval {
        match f {
            Func3::Select => self.select(b, c),
            Func3::Clamp => self.max(b).min(c),
            Func3::Lerp => self + c * (b - self),
            Func3::Fma => self.fma(b, c),
        }
    }

    /// The i32 results of `op` (two's complement, wrapping: a bound outside i32
    /// gives the whole range).
    pub fn int_op(self, op: IntOp, b: Interval) -> Interval {
        let (lo, hi) = match op {
            IntOp::Add => (self.lo + b.lo, self.hi + b.hi),
            IntOp::Sub => (self.lo - b.hi, self.hi - b.lo),
            IntOp::Max => (self.lo.max(b.lo), self.hi.max(b.hi)),
            IntOp::Shr => match b.single() {
                Some(k) if (0.0..32.0).contains(&k) => {
                    let shift = |x: f64| f64::from((x as i32) >> (k as u32));
                    (shift(self.lo), shift(self.hi))
                }
                _ => return Interval::int_any(),
            },
            IntOp::And => match (self.lo >= 0.0, b.lo >= 0.0) {
                (true, true) => (0.0, self.hi.min(b.hi)),
                (true, false) => (0.0, self.hi),
                (false, true) => (0.0, b.hi),
                (false, false) => return Interval::int_any(),
            },
        };
        let i32_range = f64::from(i32::MIN)..=f64::from(i32::MAX);
        if i32_range.contains(&lo) && i32_range.contains(&hi) {
            Interval::closed(lo, hi)
        } else {
            Interval::int_any()
        }
    }

    pub fn int_any() -> Interval {
        Interval::closed(f64::from(i32::MIN), f64::from(i32::MAX))
    }

    /// The bits of an f32, as i32: ordered like the values for positive ones.
    pub fn bits(self) -> Interval {
        if self.lo > 0.0 && !self.nan {
            let b = |x: f64| f64::from((x as f32).to_bits() as i32);
            Interval::closed(b(self.lo), b(self.hi))
        } else {
            Interval::int_any()
        }
    }

    /// `2^k` built from its bits, exact for `k` in `-126..=127` (anything outside
    /// builds other bits).
    pub fn pow2(self) -> Interval {
        if self.lo >= -126.0 && self.hi <= 127.0 {
            Interval::closed(self.lo.exp2(), self.hi.exp2())
        } else {
            Interval::ANY
        }
    }
}
