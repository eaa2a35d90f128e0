//! Soundness of the interval arithmetic: every operation on values drawn from
//! intervals (their bounds, points between, zeros of both signs, NaN where allowed)
//! gives a value inside the interval the analysis computes.

use proptest::prelude::*;

use super::{Decided, Interval, decision};
use crate::graph::{Func1, Func2, Func3};
use crate::program::{InstOp, IntOp, ValueId};
use crate::semantics::{binary_f32, int_op, pow2_bits, round_to, ternary_f32, unary_f32};
use crate::types::FloatDtype;

/// f32 values with the special ones well represented.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        3 => any::<u32>().prop_map(f32::from_bits),
        1 => -4.0f32..4.0,
        1 => prop::sample::select(vec![
            0.0, -0.0, 1.0, -1.0, 0.5, 2.0, f32::INFINITY, f32::NEG_INFINITY, f32::MAX,
            f32::MIN_POSITIVE, 1e-45, -1e-45, 1e-12, 127.0, 255.0,
        ]),
    ]
}

/// An interval (the hull of a few values, NaN allowed if one is NaN) and values in it.
fn interval() -> impl Strategy<Value = (Interval, Vec<f32>)> {
    (
        prop::collection::vec(value(), 1..4),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(values, with_nan, seed)| {
            let finite: Vec<f32> = values.iter().copied().filter(|x| !x.is_nan()).collect();
            if finite.is_empty() {
                return (Interval::ANY, vec![f32::NAN, 0.0, 1.0]);
            }
            let lo = finite.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = finite.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let nan = with_nan || values.iter().any(|x| x.is_nan());
            let mut members = finite.clone();
            // Points between the bounds, and zeros where the interval holds zero.
            let span = f64::from(hi) - f64::from(lo);
            for k in 0..4u64 {
                let w = ((seed >> (16 * k)) & 0xffff) as f64 / 65535.0;
                let x = (f64::from(lo) + w * span) as f32;
                if x.is_finite() && lo <= x && x <= hi {
                    members.push(x);
                }
            }
            if lo <= 0.0 && 0.0 <= hi {
                members.extend([0.0, -0.0]);
            }
            if nan {
                members.push(f32::NAN);
            }
            let range = Interval {
                lo: lo.into(),
                hi: hi.into(),
                nan,
            };
            (range, members)
        })
}

fn check(out: Interval, x: f32, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(out.contains_f32(x), "{what} = {x:?} outside {out}");
    Ok(())
}

const UNARY: [Func1; 10] = [
    Func1::Neg,
    Func1::Not,
    Func1::Abs,
    Func1::Sign,
    Func1::Sqrt,
    Func1::Rsqrt,
    Func1::Exp,
    Func1::Exp2,
    Func1::Ln,
    Func1::ToFloat,
];

const BINARY: [Func2; 14] = [
    Func2::Add,
    Func2::Sub,
    Func2::Mul,
    Func2::Div,
    Func2::Lt,
    Func2::Le,
    Func2::Gt,
    Func2::Ge,
    Func2::Eq,
    Func2::Ne,
    Func2::And,
    Func2::Or,
    Func2::Min,
    Func2::Max,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn unary_results_lie_in_their_range((a, xs) in interval()) {
        for f in UNARY {
            let out = a.unary(f);
            for &x in &xs {
                check(out, unary_f32(f, x), &format!("{}({x:?}) of {a}", f.name()))?;
            }
        }
        for &x in &xs {
            let bits = f64::from(x.to_bits() as i32);
            let range = a.bits();
            prop_assert!(range.lo <= bits && bits <= range.hi, "bits of {:?} outside {}", x, range);
            for n in [1, 2, 3, 7, 40, 1000] {
                let exponents = Interval::closed(1.0, 1000.0);
                check(a.binary(Func2::Powi, exponents), crate::semantics::powi(x, n), "powi")?;
            }
        }
        for dtype in [FloatDtype::Bf16, FloatDtype::F16] {
            for &x in &xs {
                check(a.round_to(dtype), round_to(dtype, x), "round")?;
                check(a.floor(), x.floor(), "floor")?;
            }
        }
    }

    #[test]
    fn binary_results_lie_in_their_range((a, xs) in interval(), (b, ys) in interval()) {
        for f in BINARY {
            let out = a.binary(f, b);
            for &x in &xs {
                for &y in &ys {
                    let what = format!("{}({x:?}, {y:?}) of {a}, {b}", f.name());
                    check(out, binary_f32(f, x, y), &what)?;
                }
            }
        }
    }

    #[test]
    fn ternary_results_lie_in_their_range(
        (a, xs) in interval(),
        (b, ys) in interval(),
        (c, zs) in interval(),
    ) {
        for f in [Func3::Select, Func3::Clamp, Func3::Lerp, Func3::Fma] {
            let out = a.ternary(f, b, c);
            for &x in &xs {
                for &y in &ys {
                    for &z in &zs {
                        let what = format!("{}({x:?}, {y:?}, {z:?}) of {a}, {b}, {c}", f.name());
                        check(out, ternary_f32(f, x, y, z), &what)?;
                    }
                }
            }
        }
    }

    #[test]
    fn integer_results_lie_in_their_range(
        a in -300i32..300, da in 0i32..300, b in -40i32..40, db in 0i32..40, k in 0i32..31,
    ) {
        let ra = Interval::closed(a.into(), (a + da).into());
        let rb = Interval::closed(b.into(), (b + db).into());
        for op in [IntOp::Add, IntOp::Sub, IntOp::Max, IntOp::And] {
            let out = ra.int_op(op, rb);
            for x in [a, a + da / 2, a + da] {
                for y in [b, b + db / 3, b + db] {
                    let r = f64::from(int_op(op, x, y));
                    prop_assert!(out.lo <= r && r <= out.hi, "{} {x} {y} = {r} outside {out}", op.name());
                }
            }
        }
        let shift = ra.int_op(IntOp::Shr, Interval::point(k.into()));
        for x in [a, a + da / 2, a + da] {
            let r = f64::from(x >> k);
            prop_assert!(shift.lo <= r && r <= shift.hi);
        }
        let exponents = Interval::closed(f64::from(b * 3), f64::from(b * 3 + db));
        for x in [b * 3, b * 3 + db] {
            check(exponents.pow2(), pow2_bits(x), "pow2")?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// A decided instruction gives, bit for bit, the constant or operand it is
    /// replaced by, for every value of its operands' ranges.
    #[test]
    fn decided_instructions_give_what_replaces_them(
        (a, xs) in interval(),
        (b, ys) in interval(),
        (c, zs) in interval(),
    ) {
        let ranges = [a, b, c];
        let (x, y, z) = (ValueId(0), ValueId(1), ValueId(2));
        let mut ops: Vec<InstOp> = BINARY.iter().map(|&f| InstOp::Binary(f, x, y)).collect();
        ops.push(InstOp::Ternary(Func3::Select, x, y, z));
        ops.push(InstOp::Ternary(Func3::Clamp, x, y, z));
        for op in ops {
            let own = match op {
                InstOp::Binary(f, ..) => a.binary(f, b),
                InstOp::Ternary(f, ..) => a.ternary(f, b, c),
                _ => unreachable!(),
            };
            let Some(decided) = decision(op, own, &ranges) else { continue };
            for &p in &xs {
                for &q in &ys {
                    for &r in &zs {
                        let got = crate::semantics::lane_op(&op, [p.to_bits(), q.to_bits(), r.to_bits()]).unwrap();
                        let want = match decided {
                            Decided::Constant(k) => k.to_bits(),
                            Decided::Operand(v) => [p, q, r][v.index()].to_bits(),
                        };
                        prop_assert_eq!(got, want, "{:?} on {:?} {:?} {:?} of {} {} {}", op, p, q, r, a, b, c);
                    }
                }
            }
        }
    }
}

#[test]
fn what_the_shipped_codecs_rely_on() {
    let grad = Interval::ANY;
    // `1 + |x|` is positive unless x is NaN.
    let one = Interval::point(1.0);
    assert!((one + grad.abs()).lo >= 1.0);
    assert!(!(one + grad.abs()).is_positive());
    assert!((one + Interval::closed(-3.0, 5.0).abs()).is_positive());
    // A group maximum floored at 1e-12 is positive; dividing 1 by it never gives 0.
    let floor = Interval::point(f64::from(1e-12f32));
    let scale = Interval::closed(f64::NEG_INFINITY, f64::INFINITY).max(floor);
    assert!(scale.is_positive());
    assert!(one.excludes_zero());
    // Codes of an int8 part: decided comparisons.
    let code = Interval::closed(-128.0, 127.0);
    assert_eq!(
        code.binary(Func2::Lt, Interval::point(200.0)),
        Interval::point(1.0)
    );
    assert_eq!(
        code.binary(Func2::Gt, Interval::point(127.0)),
        Interval::point(0.0)
    );
    assert_eq!(
        code.binary(Func2::Gt, Interval::point(126.0)).single(),
        None
    );
}
