//! What every operation computes. There are two worlds:
//!
//! - **per element** (the kernel and the CPU interpreter): f32, IEEE operations in the
//!   order the rule writes them, no fused multiply-add but where a program says
//!   [`InstOp::Fma`]. Booleans are carried as 1.0 / 0.0 and integers (host scalars) as
//!   exact f32 values; program-internal integers (bits, exponents, codes) are i32.
//! - **uniform** (hyper-parameters, `t`, constants; computed on the host once per
//!   step), in one of two [`HostArithmetic`]s: by default as flashoptim's kernels
//!   compute them (f32 hyper-parameters, each operation in f32, `powi` by f32
//!   square-and-multiply, which is what libdevice's `__nv_powif` does), or in f64
//!   rounded to f32 once where a uniform value meets per-element code. Integers are
//!   i64 in both.
//!
//! `+ - * / sqrt` and everything built from them are correctly rounded on the CPU and
//! on CUDA/HIP alike. `exp`, `exp2`, `ln` and `powf` are not: the GPU's library
//! functions may differ from Rust's by an ULP or two.

use half::{bf16, f16};

use crate::def::Value;
use crate::graph::{Func1, Func2, Func3};
use crate::program::{InstOp, IntOp};
use crate::types::FloatDtype;

/// How host scalars are computed from hyper-parameters and `t`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HostArithmetic {
    /// As flashoptim 0.1.4's kernels: float hyper-parameters and constants rounded to
    /// f32, every float operation in f32 (`powi` by square-and-multiply, low bits
    /// first). A state imported from flashoptim continues on flashoptim's trajectory.
    #[default]
    F32,
    /// Floats in f64, rounded to f32 once per scalar.
    F64,
}

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
        Func1::ToFloat | Func1::HostF64 => a,
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
        Func3::Fma => a.mul_add(b, c),
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
        (Func1::ToFloat | Func1::HostF64, v) => Value::Float(float(v)),
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
        Func3::Fma => Value::Float(float(a).mul_add(float(b), float(c))),
    })
}

/// A uniform value in f32 arithmetic: floats rounded to f32, kept as exact f64.
fn to_f32_value(v: Value) -> Value {
    match v {
        Value::Float(x) => Value::Float(f64::from(x as f32)),
        other => other,
    }
}

fn lane(v: Value) -> f32 {
    match v {
        Value::Float(x) => x as f32,
        Value::Int(i) => i as f32,
        Value::Bool(b) => from_bool(b),
    }
}

/// A hyper-parameter or constant as [`HostArithmetic::F32`] sees it.
pub fn host_input_f32(v: Value) -> Value {
    to_f32_value(v)
}

/// [`unary_host`] in f32 arithmetic.
pub fn unary_host_f32(f: Func1, a: Value) -> Result<Value, HostEvalError> {
    Ok(match (f, a) {
        (Func1::Neg, Value::Int(_)) | (Func1::Not, _) => unary_host(f, a)?,
        (Func1::ToFloat, v) => Value::Float(f64::from(lane(v))),
        (f, v) => Value::Float(f64::from(unary_f32(f, lane(v)))),
    })
}

/// [`binary_host`] in f32 arithmetic: integer operations stay i64.
pub fn binary_host_f32(f: Func2, a: Value, b: Value) -> Result<Value, HostEvalError> {
    let ints = matches!((a, b), (Value::Int(_), Value::Int(_)));
    Ok(match f {
        Func2::Add | Func2::Sub | Func2::Mul | Func2::Div if ints => binary_host(f, a, b)?,
        Func2::Lt
        | Func2::Le
        | Func2::Gt
        | Func2::Ge
        | Func2::Eq
        | Func2::Ne
        | Func2::And
        | Func2::Or => Value::Bool(binary_f32(f, lane(a), lane(b)) != 0.0),
        Func2::Powi => {
            let n = int(b);
            let n = i32::try_from(n)
                .map_err(|_| HostEvalError(format!("powi exponent {n} does not fit in i32")))?;
            Value::Float(f64::from(powi(lane(a), n)))
        }
        f => Value::Float(f64::from(binary_f32(f, lane(a), lane(b)))),
    })
}

/// [`ternary_host`] in f32 arithmetic.
pub fn ternary_host_f32(f: Func3, a: Value, b: Value, c: Value) -> Result<Value, HostEvalError> {
    Ok(match f {
        Func3::Select => ternary_host(f, a, b, c)?,
        f => Value::Float(f64::from(ternary_f32(f, lane(a), lane(b), lane(c)))),
    })
}

/// `2^k` built from its bits, as the kernel builds it: exact for `k` in `-126..=127`.
pub fn pow2_bits(k: i32) -> f32 {
    f32::from_bits((k.wrapping_add(127) as u32) << 23)
}

/// Float to integer as a store converts it (and the GPU's `cvt.rzi.sat`): truncation
/// of an (already integral) value, saturating at `min..=max`, NaN to 0.
pub fn to_code(v: f32, min: f32, max: f32) -> i32 {
    if v.is_nan() {
        0
    } else {
        v.clamp(min, max) as i32
    }
}

/// Round an f32 to a narrow dtype (nearest even) and widen it back.
pub fn round_to(dtype: FloatDtype, x: f32) -> f32 {
    match dtype {
        FloatDtype::Bf16 => bf16::from_f32(x).to_f32(),
        FloatDtype::F16 => f16::from_f32(x).to_f32(),
        FloatDtype::F32 => x,
    }
}

pub fn int_op(op: IntOp, a: i32, b: i32) -> i32 {
    match op {
        IntOp::Add => a.wrapping_add(b),
        IntOp::Sub => a.wrapping_sub(b),
        IntOp::Shr => a >> (b & 31),
        IntOp::And => a & b,
        IntOp::Max => a.max(b),
    }
}

/// What an instruction that reads only its operands computes, on one lane. Values are
/// their 32 bits (f32 or i32 by the instruction's types). `None` for instructions
/// that read memory, host scalars, tables or the whole group.
pub fn lane_op(op: &InstOp, args: [u32; 3]) -> Option<u32> {
    let f = |k: usize| f32::from_bits(args[k]);
    let i = |k: usize| args[k] as i32;
    Some(match *op {
        InstOp::Const(c) => c.to_bits(),
        InstOp::IntConst(c) => c as u32,
        InstOp::Unary(g, _) => unary_f32(g, f(0)).to_bits(),
        InstOp::Binary(g, ..) => binary_f32(g, f(0), f(1)).to_bits(),
        InstOp::Ternary(g, ..) => ternary_f32(g, f(0), f(1), f(2)).to_bits(),
        InstOp::Floor(_) => f(0).floor().to_bits(),
        InstOp::Fma(..) => f(0).mul_add(f(1), f(2)).to_bits(),
        InstOp::Round(dtype, _) => round_to(dtype, f(0)).to_bits(),
        InstOp::Bits(_) => args[0],
        InstOp::Int(g, ..) => int_op(g, i(0), i(1)) as u32,
        InstOp::ToF32(_) => (i(0) as f32).to_bits(),
        InstOp::Pow2(_) => pow2_bits(i(0)).to_bits(),
        InstOp::Load(_)
        | InstOp::Store(..)
        | InstOp::Input(_)
        | InstOp::Output(..)
        | InstOp::Scalar(_)
        | InstOp::GroupMax(_)
        | InstOp::Reduce(..)
        | InstOp::Reduced(_)
        | InstOp::MatrixArg(..)
        | InstOp::MatrixResult(_)
        | InstOp::Dim(_)
        | InstOp::Table(..) => return None,
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
