//! What every operation computes. There are two worlds:
//!
//! - **per element** (the kernel and the CPU interpreter): f32, IEEE operations in the
//!   order the rule writes them, no fused multiply-add. Booleans are carried as
//!   1.0 / 0.0 and integers (only ever host scalars) as exact f32 values.
//! - **uniform** (hyper-parameters, `t`, constants; computed on the host once per
//!   step): f64 for floats, i64 for integers, rounded to f32 once where a uniform value
//!   meets per-element code.
//!
//! `+ - * / sqrt` and everything built from them are correctly rounded on the CPU and
//! on CUDA/HIP alike. `exp`, `exp2`, `ln` and `powf` are not: the GPU's library
//! functions may differ from Rust's by an ULP or two.

use crate::def::Value;
use crate::graph::{Func1, Func2, Func3};

/// `x^n` by square-and-multiply, low bits first: the one order both back ends use.
pub fn powi(x: f32, n: i32) -> f32 {
    if n == 0 {
        return 1.0;
    }
    let mut exponent = n.unsigned_abs();
    let mut base = x;
    let mut acc: Option<f32> = None;
    loop {
        if exponent & 1 == 1 {
            acc = Some(acc.map_or(base, |a| a * base));
        }
        exponent >>= 1;
        if exponent == 0 {
            break;
        }
        base *= base;
    }
    let result = acc.expect("a nonzero exponent sets at least one bit");
    if n < 0 { 1.0 / result } else { result }
}

fn from_bool(b: bool) -> f32 {
    if b { 1.0 } else { 0.0 }
}

pub fn unary_f32(f: Func1, a: f32) -> f32 {
    match f {
        Func1::Neg => -a,
        Func1::Not => from_bool(a == 0.0),
        Func1::Abs => a.abs(),
        Func1::Sign => {
            if a > 0.0 {
                1.0
            } else if a < 0.0 {
                -1.0
            } else {
                0.0
            }
        }
        Func1::Sqrt => a.sqrt(),
        Func1::Rsqrt => 1.0 / a.sqrt(),
        Func1::Exp => a.exp(),
        Func1::Exp2 => a.exp2(),
        Func1::Ln => a.ln(),
        Func1::ToFloat => a,
    }
}

pub fn binary_f32(f: Func2, a: f32, b: f32) -> f32 {
    match f {
        Func2::Add => a + b,
        Func2::Sub => a - b,
        Func2::Mul => a * b,
        Func2::Div => a / b,
        Func2::Lt => from_bool(a < b),
        Func2::Le => from_bool(a <= b),
        Func2::Gt => from_bool(a > b),
        Func2::Ge => from_bool(a >= b),
        Func2::Eq => from_bool(a == b),
        Func2::Ne => from_bool(a != b),
        Func2::And => from_bool(a != 0.0 && b != 0.0),
        Func2::Or => from_bool(a != 0.0 || b != 0.0),
        Func2::Min => a.min(b),
        Func2::Max => a.max(b),
        Func2::Powf => a.powf(b),
        Func2::Powi => powi(a, b as i32),
    }
}

pub fn ternary_f32(f: Func3, a: f32, b: f32, c: f32) -> f32 {
    match f {
        Func3::Select => {
            if a != 0.0 {
                b
            } else {
                c
            }
        }
        Func3::Clamp => a.max(b).min(c),
        Func3::Lerp => a + c * (b - a),
    }
}

/// A uniform operation failed on the host (integer division by zero, overflow).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct HostEvalError(pub String);

fn float(v: Value) -> f64 {
    match v {
        Value::Float(x) => x,
        Value::Int(i) => i as f64,
        Value::Bool(b) => f64::from(u8::from(b)),
    }
}

fn int(v: Value) -> i64 {
    match v {
        Value::Int(i) => i,
        Value::Float(x) => x as i64,
        Value::Bool(b) => i64::from(b),
    }
}

fn truth(v: Value) -> bool {
    match v {
        Value::Bool(b) => b,
        Value::Int(i) => i != 0,
        Value::Float(x) => x != 0.0,
    }
}

pub fn unary_host(f: Func1, a: Value) -> Result<Value, HostEvalError> {
    Ok(match (f, a) {
        (Func1::Neg, Value::Int(i)) => Value::Int(
            i.checked_neg()
                .ok_or_else(|| HostEvalError(format!("-({i}) overflows")))?,
        ),
        (Func1::Neg, v) => Value::Float(-float(v)),
        (Func1::Not, v) => Value::Bool(!truth(v)),
        (Func1::Abs, v) => Value::Float(float(v).abs()),
        (Func1::Sign, v) => {
            let x = float(v);
            Value::Float(if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            })
        }
        (Func1::Sqrt, v) => Value::Float(float(v).sqrt()),
        (Func1::Rsqrt, v) => Value::Float(1.0 / float(v).sqrt()),
        (Func1::Exp, v) => Value::Float(float(v).exp()),
        (Func1::Exp2, v) => Value::Float(float(v).exp2()),
        (Func1::Ln, v) => Value::Float(float(v).ln()),
        (Func1::ToFloat, v) => Value::Float(float(v)),
    })
}

pub fn binary_host(f: Func2, a: Value, b: Value) -> Result<Value, HostEvalError> {
    if let (Value::Int(x), Value::Int(y)) = (a, b) {
        let overflow = || HostEvalError(format!("{x} {} {y} overflows", f.symbol().unwrap_or("?")));
        match f {
            Func2::Add => return x.checked_add(y).map(Value::Int).ok_or_else(overflow),
            Func2::Sub => return x.checked_sub(y).map(Value::Int).ok_or_else(overflow),
            Func2::Mul => return x.checked_mul(y).map(Value::Int).ok_or_else(overflow),
            Func2::Div => {
                return x
                    .checked_div(y)
                    .map(Value::Int)
                    .ok_or_else(|| HostEvalError(format!("integer division {x} / {y}")));
            }
            _ => {}
        }
    }
    Ok(match f {
        Func2::Add => Value::Float(float(a) + float(b)),
        Func2::Sub => Value::Float(float(a) - float(b)),
        Func2::Mul => Value::Float(float(a) * float(b)),
        Func2::Div => Value::Float(float(a) / float(b)),
        Func2::Lt => Value::Bool(float(a) < float(b)),
        Func2::Le => Value::Bool(float(a) <= float(b)),
        Func2::Gt => Value::Bool(float(a) > float(b)),
        Func2::Ge => Value::Bool(float(a) >= float(b)),
        Func2::Eq => Value::Bool(float(a) == float(b)),
        Func2::Ne => Value::Bool(float(a) != float(b)),
        Func2::And => Value::Bool(truth(a) && truth(b)),
        Func2::Or => Value::Bool(truth(a) || truth(b)),
        Func2::Min => Value::Float(float(a).min(float(b))),
        Func2::Max => Value::Float(float(a).max(float(b))),
        Func2::Powf => Value::Float(float(a).powf(float(b))),
        Func2::Powi => {
            let n = int(b);
            let n = i32::try_from(n)
                .map_err(|_| HostEvalError(format!("powi exponent {n} does not fit in i32")))?;
            Value::Float(float(a).powi(n))
        }
    })
}

pub fn ternary_host(f: Func3, a: Value, b: Value, c: Value) -> Result<Value, HostEvalError> {
    Ok(match f {
        Func3::Select => {
            if truth(a) {
                b
            } else {
                c
            }
        }
        Func3::Clamp => Value::Float(float(a).max(float(b)).min(float(c))),
        Func3::Lerp => Value::Float(float(a) + float(c) * (float(b) - float(a))),
    })
}

/// A uniform value as the kernel receives it: f32 lanes (bools 1/0, ints exact).
pub fn to_kernel_f32(v: Value) -> f32 {
    match v {
        Value::Float(x) => x as f32,
        Value::Int(i) => i as f32,
        Value::Bool(b) => from_bool(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powi_matches_repeated_multiplication_order() {
        let x = 1.1f32;
        assert_eq!(powi(x, 0), 1.0);
        assert_eq!(powi(x, 1), x);
        assert_eq!(powi(x, 2), x * x);
        assert_eq!(powi(x, 3), x * (x * x));
        assert_eq!(powi(x, -2), 1.0 / (x * x));
        assert_eq!(powi(2.0, 10), 1024.0);
    }

    #[test]
    fn sign_of_nan_is_zero_and_clamp_ignores_nan_bounds_like_fminf() {
        assert_eq!(unary_f32(Func1::Sign, f32::NAN), 0.0);
        assert_eq!(unary_f32(Func1::Sign, -0.0), 0.0);
        assert_eq!(ternary_f32(Func3::Clamp, 5.0, 0.0, 1.0), 1.0);
        assert_eq!(ternary_f32(Func3::Clamp, -5.0, 0.0, 1.0), 0.0);
    }

    #[test]
    fn host_integer_errors_are_reported() {
        assert!(binary_host(Func2::Div, Value::Int(1), Value::Int(0)).is_err());
        assert!(binary_host(Func2::Mul, Value::Int(i64::MAX), Value::Int(2)).is_err());
        assert_eq!(
            binary_host(Func2::Sub, Value::Float(1.0), Value::Float(0.9)).unwrap(),
            Value::Float(1.0 - 0.9)
        );
    }
}
