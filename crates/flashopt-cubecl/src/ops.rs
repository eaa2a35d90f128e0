//! Per-lane building blocks in cubecl's `#[cube]` language. The kernel definition
//! ([`crate::define`]) calls their expansions once per lane and instruction. Each one
//! performs the f32 operations of `flashopt_ir::semantics` or `flashopt_ir::codec`,
//! in the same order.

use cubecl::prelude::*;
use flashopt_ir::graph::{Func1, Func2, Func3};

/// `x`, behind a barrier the compiler cannot see through: `veil` is a kernel argument
/// that is always 0. NVRTC compiles with its default `--fmad=true` (cubecl 0.10 passes
/// no option to change it) and would fuse `a * b + c` into an FMA, which rounds once
/// where the CPU reference rounds twice. A product passed through here is a select,
/// not a multiply, so it is never fused: the kernel keeps the reference's arithmetic.
#[cube]
pub fn veiled(x: f32, veil: f32) -> f32 {
    select(veil != 0.0, veil, x)
}

/// `code / divisor`, correctly rounded like IEEE division, for the integral codes of
/// the codecs (|code| <= 32768, divisor 127, 255 or 32767): `q0 = code * (1 / divisor)`
/// is within an ulp of the quotient and one Markstein correction with the exact
/// remainder `code - divisor * q0` (an FMA) rounds it correctly. Three instructions
/// where NVRTC's IEEE division takes about twelve. Every code of every codec is checked
/// against `/` in `tests/code_quotient.rs`, which mirrors this function.
#[cube]
pub fn code_quotient(code: f32, #[comptime] divisor: f32) -> f32 {
    let reciprocal = comptime!(1.0f32 / divisor);
    let q0 = code * reciprocal;
    let remainder = fma(-divisor, q0, code);
    fma(remainder, reciprocal, q0)
}

/// IEEE `a / b`, with zero dividends kept off NVRTC's slow path. The fast path of
/// CUDA's division checks its operands (`FCHK`) and sends a zero dividend to a slow
/// routine of about 40 instructions; one zero among a plane's lanes stalls the whole
/// plane on it, and zero gradients, moments and codes are common (embedding rows a
/// batch did not touch). A zero over a normal or infinite divisor is `a * (1 / b)`,
/// exactly what IEEE gives (signed zero); other zeros (NaN, zero or subnormal
/// divisors) still divide.
#[cube]
pub fn div(a: f32, b: f32) -> f32 {
    let shortcut = a == 0.0 && f32::abs(b) >= 1.1754944e-38;
    let q = select(shortcut, 1.0, a) / b;
    select(shortcut, a * q, q)
}

/// `a / b` for a divisor known to be positive (or NaN only when `a` is NaN too): a
/// zero dividend gives itself, as IEEE does, without dividing (see [`div`]).
#[cube]
pub fn div_by_positive(a: f32, b: f32) -> f32 {
    let zero = a == 0.0;
    let q = select(zero, 1.0, a) / b;
    select(zero, a, q)
}

/// IEEE square root; zeros (which NVRTC's `sqrt` sends to its slow path) give
/// themselves without it.
#[cube]
pub fn sqrt(x: f32) -> f32 {
    let zero = x == 0.0;
    let root = f32::sqrt(select(zero, 1.0, x));
    select(zero, x, root)
}

#[cube]
pub fn unary(x: f32, #[comptime] op: Func1) -> f32 {
    match op {
        Func1::Neg => -x,
        Func1::Not => select(x == 0.0, 1.0, 0.0),
        Func1::Abs => f32::abs(x),
        Func1::Sign => select(x > 0.0, 1.0, select(x < 0.0, -1.0, 0.0)),
        Func1::Sqrt => sqrt(x),
        Func1::Rsqrt => 1.0 / sqrt(x),
        Func1::Exp => f32::exp(x),
        // cubecl has no exp2; this is one of the operations whose rounding may differ.
        Func1::Exp2 => f32::powf(2.0, x),
        Func1::Ln => f32::ln(x),
        Func1::ToFloat => x,
    }
}

#[cube]
pub fn binary(a: f32, b: f32, #[comptime] op: Func2) -> f32 {
    match op {
        Func2::Add => a + b,
        Func2::Sub => a - b,
        Func2::Mul => a * b,
        Func2::Div => div(a, b),
        Func2::Lt => select(a < b, 1.0, 0.0),
        Func2::Le => select(a <= b, 1.0, 0.0),
        Func2::Gt => select(a > b, 1.0, 0.0),
        Func2::Ge => select(a >= b, 1.0, 0.0),
        Func2::Eq => select(a == b, 1.0, 0.0),
        Func2::Ne => select(a != b, 1.0, 0.0),
        Func2::And => select(a != 0.0, select(b != 0.0, 1.0, 0.0), 0.0),
        Func2::Or => select(a != 0.0, 1.0, select(b != 0.0, 1.0, 0.0)),
        Func2::Min => min(a, b),
        Func2::Max => max(a, b),
        Func2::Powf => f32::powf(a, b),
        Func2::Powi => powi(a, b),
    }
}

/// `x^n` by square-and-multiply, low bits first, as `semantics::powi` (starting from
/// 1.0 is exact: 1 * x == x for every x).
#[cube]
pub fn powi(x: f32, n: f32) -> f32 {
    let mut exponent = u32::cast_from(f32::abs(n));
    let mut base = x;
    let mut acc = 1.0f32;
    loop {
        if exponent & 1 == 1 {
            acc *= base;
        }
        exponent >>= 1;
        if exponent == 0 {
            break;
        }
        base *= base;
    }
    select(n < 0.0, 1.0 / acc, acc)
}

#[cube]
pub fn ternary(a: f32, b: f32, c: f32, veil: f32, #[comptime] op: Func3) -> f32 {
    match op {
        Func3::Select => select(a != 0.0, b, c),
        Func3::Clamp => min(max(a, b), c),
        Func3::Lerp => a + veiled(c * (b - a), veil),
    }
}

/// `2^k` for the integral exponents the master codec uses, built from its bits.
#[cube]
pub fn pow2(k: i32) -> f32 {
    f32::reinterpret(u32::cast_from(k + 127) << 23)
}

/// log2 of half an ULP of a narrow value with these bits.
#[cube]
pub fn log_scale(bits: u32, #[comptime] mantissa: u32, #[comptime] bias: i32) -> i32 {
    let field = i32::cast_from((bits & 0x7fff) >> mantissa);
    let unbiased = select(field == 0, 1 - bias, field - bias);
    unbiased - i32::cast_from(mantissa) - 1
}

/// The f32 master weight from a narrow value and its correction code (as f32).
#[cube]
pub fn decode_master<N: Float>(
    n: N,
    code: f32,
    #[comptime] mantissa: u32,
    #[comptime] bias: i32,
    #[comptime] code_max: f32,
    veil: f32,
) -> f32 {
    let bits = u32::cast_from(u16::reinterpret(n));
    let scale = log_scale(bits, mantissa, bias);
    // Arithmetic shift: floor(scale / 2).
    let h = scale >> 1;
    let fraction = code_quotient(code, code_max);
    f32::cast_from(n) + veiled(fraction * pow2(h) * pow2(scale - h), veil)
}

/// The correction code (as an integral f32) of `x` stored as the narrow value `n`.
#[cube]
pub fn correction_code<N: Float>(
    x: f32,
    n: N,
    #[comptime] mantissa: u32,
    #[comptime] bias: i32,
    #[comptime] code_max: f32,
) -> f32 {
    let bits = u32::cast_from(u16::reinterpret(n));
    let error = x - f32::cast_from(n);
    let neg_scale = 0 - log_scale(bits, mantissa, bias);
    let h = neg_scale >> 1;
    let normalized = (error * pow2(h)) * pow2(neg_scale - h);
    // Written with selects so that NaN stays NaN (code 0), as `f32::clamp` does.
    let clamped = select(
        normalized < -1.0,
        -1.0,
        select(normalized > 1.0, 1.0, normalized),
    );
    let scaled = clamped * code_max;
    let rounded = f32::floor(f32::abs(scaled) + 0.5);
    select(scaled < 0.0, -rounded, rounded)
}

#[cube]
pub fn decode_signed(code: f32, scale: f32, veil: f32, #[comptime] softsign: bool) -> f32 {
    let mut y = code_quotient(code, 127.0);
    if softsign {
        y = div_by_positive(y, 2.0 - f32::abs(y));
    }
    veiled(y * scale, veil)
}

#[cube]
pub fn decode_sqrt(code: f32, scale: f32, veil: f32) -> f32 {
    let root = code_quotient(code, 255.0) * scale;
    veiled(root * root, veil)
}

#[cube]
pub fn encode_signed(x: f32, scale: f32, veil: f32, #[comptime] softsign: bool) -> f32 {
    let mut y = div_by_positive(x, scale);
    if softsign {
        y = div_by_positive(2.0 * y, 1.0 + f32::abs(y));
    }
    f32::floor(veiled(y * 127.0, veil) + 0.5)
}

#[cube]
pub fn encode_sqrt(root: f32, scale: f32, veil: f32) -> f32 {
    f32::floor(veiled(div_by_positive(root, scale) * 255.0, veil) + 0.5)
}

/// `max(acc, |x|)` for lanes inside the tensor; padding lanes do not count. The lane
/// is the unit's `lane`-th, at `first_lane + lane` in its group.
#[cube]
pub fn absmax_step(
    acc: f32,
    x: f32,
    valid: u32,
    first_lane: usize,
    #[comptime] lane: usize,
) -> f32 {
    select(
        first_lane + lane < usize::cast_from(valid),
        max(acc, f32::abs(x)),
        acc,
    )
}

/// The larger of this unit's value and that of the unit `mask` places away in the
/// plane (a butterfly step: after masks 1, 2, .. every unit of a group holds its max).
#[cube]
pub fn plane_max(x: f32, #[comptime] mask: u32) -> f32 {
    max(x, plane_shuffle_xor(x, mask))
}

#[cube]
pub fn finish_scale(absmax: f32) -> f32 {
    max(absmax, 1e-12)
}

#[cube]
pub fn sqrt_lane(x: f32) -> f32 {
    sqrt(x)
}

#[cube]
pub fn to_f32<E: Numeric>(x: E) -> f32 {
    f32::cast_from(x)
}

#[cube]
pub fn from_f32<E: Numeric>(x: f32) -> E {
    E::cast_from(x)
}

#[cube]
pub fn lane<E: Numeric, N: Size>(v: Vector<E, N>, #[comptime] k: usize) -> E {
    v[k]
}

#[cube]
pub fn empty_vector<E: Numeric, N: Size>() -> Vector<E, N> {
    Vector::empty()
}

#[cube]
pub fn set_lane<E: Numeric, N: Size>(v: &mut Vector<E, N>, #[comptime] k: usize, x: E) {
    v[k] = x;
}

#[cube]
pub fn load_vector<E: Numeric, N: Size>(array: &Array<Vector<E, N>>, index: usize) -> Vector<E, N> {
    array[index]
}

#[cube]
pub fn store_vector<E: Numeric, N: Size>(
    array: &mut Array<Vector<E, N>>,
    index: usize,
    v: Vector<E, N>,
) {
    array[index] = v;
}

#[cube]
pub fn load_scalar<E: Numeric>(array: &Array<E>, index: usize) -> E {
    array[index]
}

#[cube]
pub fn store_scalar<E: Numeric>(array: &mut Array<E>, index: usize, x: E) {
    array[index] = x;
}

/// Element `offset` of the `per`-element block number `block`.
#[cube]
pub fn block_index(block: usize, #[comptime] per: usize, #[comptime] offset: usize) -> usize {
    block * per + offset
}

/// Vector `c` of the unit holding part `sub` of `group`.
#[cube]
pub fn vector_index(
    group: usize,
    sub: usize,
    #[comptime] per_group: usize,
    #[comptime] per_unit: usize,
    #[comptime] c: usize,
) -> usize {
    group * per_group + sub * per_unit + c
}

/// A value kept once per group, written by the group's first unit.
#[cube]
pub fn store_group_scalar<E: Numeric>(array: &mut Array<E>, group: usize, sub: usize, x: E) {
    if sub == 0 {
        array[group] = x;
    }
}

/// The group this unit steps: launches may start past group 0 (one tensor's groups,
/// for gradient release). Units past the launch's last group take that group again
/// (they join its plane shuffles and store nothing).
#[cube]
pub fn unit_group(first: u32, count: u32, #[comptime] units: usize) -> usize {
    let own = ABSOLUTE_POS / units;
    min(own, usize::cast_from(count) - 1) + usize::cast_from(first)
}

/// Which of its group's `units` parts this unit holds.
#[cube]
pub fn unit_part(#[comptime] units: usize) -> usize {
    ABSOLUTE_POS % units
}

#[cube]
pub fn unit_in_range(count: u32, #[comptime] units: usize) -> bool {
    ABSOLUTE_POS < usize::cast_from(count) * units
}

/// Low 6 bits of a group's info word: its element count (32, or fewer at a tensor's end).
#[cube]
pub fn group_len(info: u32) -> u32 {
    info & 63
}

/// Where this group's parameter group's scalars start.
#[cube]
pub fn scalar_base(info: u32, #[comptime] scalars: usize) -> usize {
    usize::cast_from(info >> 8) * scalars
}
