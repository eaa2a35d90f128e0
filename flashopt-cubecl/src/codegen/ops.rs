//! Per-lane building blocks in cubecl's `#[cube]` language. The kernel definition
//! ([`crate::codegen::define`]) calls their expansions once per lane and instruction. Each one
//! performs what `flashopt_ir::semantics` says its instruction computes.

use cubecl::prelude::*;
use flashopt_ir::graph::{Func1, Func2, Func3, Reduction};
use flashopt_ir::passes::ranges::OperandFacts;
use flashopt_ir::program::IntOp;

/// `x`, behind a barrier the compiler cannot see through: `veil` is a kernel argument
/// that is always 0. NVRTC compiles with its default `--fmad=true` (cubecl 0.10 passes
/// no option to change it) and would fuse `a * b + c` into an FMA, which rounds once
/// where the CPU reference rounds twice. A product passed through here is a select,
/// not a multiply, so it is never fused: the kernel keeps the reference's arithmetic.
#[cube]
pub fn veiled(x: f32, veil: f32) -> f32 {
    select(veil != 0.0, veil, x)
}

/// IEEE `a / b`, with zero dividends kept off NVRTC's slow path. The fast path of
/// CUDA's division checks its operands (`FCHK`) and sends a zero dividend to a slow
/// routine of about 40 instructions; one zero among a plane's lanes stalls the whole
/// plane on it, and zero gradients, moments and codes are common (embedding rows a
/// batch did not touch). A zero over a normal or infinite divisor is `a * (1 / b)`,
/// exactly what IEEE gives (signed zero); other zeros (NaN, zero or subnormal
/// divisors) still divide. What the plan's value ranges prove shortens this: a
/// dividend that is never zero needs no shortcut, and over a divisor that is positive
/// a zero dividend is its own quotient.
/// With `approximate` (`Arithmetic::Approximate`, inside a fast-math scope) a plain
/// `a / b`, which cubecl emits as `__fdividef`.
#[cube]
pub fn div(a: f32, b: f32, #[comptime] approximate: bool, #[comptime] facts: OperandFacts) -> f32 {
    if approximate || facts.nonzero_dividend {
        a / b
    } else if facts.positive_divisor {
        let zero = a == 0.0;
        select(zero, a, select(zero, 1.0, a) / b)
    } else {
        let shortcut = a == 0.0 && f32::abs(b) >= 1.1754944e-38;
        let q = select(shortcut, 1.0, a) / b;
        select(shortcut, a * q, q)
    }
}

/// IEEE square root; zeros (which NVRTC's `sqrt` sends to its slow path) give
/// themselves without it, unless the value ranges prove the operand positive. With
/// `approximate`, `x * rsqrtf(x)` (zeros kept: the ranges hold for IEEE operands, and
/// an approximate quotient may be zero where the exact one is not).
#[cube]
pub fn sqrt(x: f32, #[comptime] approximate: bool, #[comptime] positive: bool) -> f32 {
    if positive && !approximate {
        f32::sqrt(x)
    } else {
        let zero = x == 0.0;
        if approximate {
            select(zero, x, x * f32::inverse_sqrt(x))
        } else {
            let root = f32::sqrt(select(zero, 1.0, x));
            select(zero, x, root)
        }
    }
}

#[cube]
fn rsqrt(x: f32, #[comptime] approximate: bool, #[comptime] positive: bool) -> f32 {
    if approximate {
        f32::inverse_sqrt(x)
    } else {
        1.0 / sqrt(x, false, positive)
    }
}

#[cube]
pub fn unary(
    x: f32,
    #[comptime] op: Func1,
    #[comptime] approximate: bool,
    #[comptime] facts: OperandFacts,
) -> f32 {
    match op {
        Func1::Neg => -x,
        Func1::Not => select(x == 0.0, 1.0, 0.0),
        Func1::Abs => f32::abs(x),
        Func1::Sign => select(x > 0.0, 1.0, select(x < 0.0, -1.0, 0.0)),
        Func1::Sqrt => sqrt(x, approximate, facts.positive_root),
        Func1::Rsqrt => rsqrt(x, approximate, facts.positive_root),
        Func1::Exp => f32::exp(x),
        // cubecl has no exp2; this is one of the operations whose rounding may differ.
        Func1::Exp2 => f32::powf(2.0, x),
        Func1::Ln => f32::ln(x),
        Func1::ToFloat | Func1::HostF64 => x,
    }
}

#[cube]
pub fn binary(
    a: f32,
    b: f32,
    #[comptime] op: Func2,
    #[comptime] approximate: bool,
    #[comptime] facts: OperandFacts,
) -> f32 {
    match op {
        Func2::Add => a + b,
        Func2::Sub => a - b,
        Func2::Mul => a * b,
        Func2::Div => div(a, b, approximate, facts),
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
        Func3::Fma => fma(a, b, c),
    }
}

/// `2^k` for the integral exponents the master codec uses, built from its bits.
#[cube]
pub fn pow2(k: i32) -> f32 {
    f32::reinterpret(u32::cast_from(k + 127) << 23)
}

/// `max(acc, x)` for lanes inside the tensor; padding lanes do not count. The lane
/// is the unit's `lane`-th, at `first_lane + lane` in its group.
#[cube]
pub fn max_step(acc: f32, x: f32, valid: u32, first_lane: usize, #[comptime] lane: usize) -> f32 {
    select(
        first_lane + lane < usize::cast_from(valid),
        max(acc, x),
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
pub fn to_f32<E: Numeric>(x: E) -> f32 {
    f32::cast_from(x)
}

#[cube]
pub fn to_i32<E: Numeric>(x: E) -> i32 {
    i32::cast_from(x)
}

#[cube]
pub fn floor(x: f32) -> f32 {
    f32::floor(x)
}

/// `a * b + c`, rounded once.
#[cube]
pub fn fused_multiply_add(a: f32, b: f32, c: f32) -> f32 {
    fma(a, b, c)
}

/// Round to the narrow float `N` (nearest even) and widen back.
#[cube]
pub fn round_to<N: Float>(x: f32) -> f32 {
    f32::cast_from(N::cast_from(x))
}

/// The f32 with these bits (an infinity or a NaN), made at run time: cubecl would
/// print a literal of it as `inf`, which CUDA and HIP do not know, and reinterpreting
/// a literal's bits is no valid C++ either. `veil` is 0 at launch, so its bits add
/// nothing.
#[cube]
pub fn non_finite(veil: f32, #[comptime] bits: u32) -> f32 {
    f32::reinterpret(u32::reinterpret(veil) + bits)
}

/// The bits of an f32.
#[cube]
pub fn bits(x: f32) -> i32 {
    i32::reinterpret(x)
}

#[cube]
pub fn int_op(a: i32, b: i32, #[comptime] op: IntOp) -> i32 {
    match op {
        IntOp::Add => a + b,
        IntOp::Sub => a - b,
        // Arithmetic: `>>` on a signed integer.
        IntOp::Shr => a >> b,
        IntOp::And => a & b,
        IntOp::Max => max(a, b),
    }
}

/// A code table's entry: the table holds codes `first..first + len` from `start` on.
/// The place is an unsigned offset from the table's first code, so that the address is
/// one multiply-add with `start` folded into the load (a signed `code + offset`
/// sign-extends first); the `min` keeps a code outside the table inside its entries.
#[cube]
pub fn lookup(
    tables: &Array<f32>,
    code: i32,
    #[comptime] first: i32,
    #[comptime] len: u32,
    #[comptime] start: usize,
) -> f32 {
    let place = min(u32::cast_from(code - first), len - 1);
    tables[usize::cast_from(place) + start]
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

/// One lane's term of reduction `op` (`flashopt_ir::reduction::term`), or the
/// identity for a padding lane (at or past the group's `valid` elements).
#[cube]
pub fn reduction_term(
    x: f32,
    valid: u32,
    first_lane: usize,
    #[comptime] lane: usize,
    #[comptime] op: Reduction,
) -> f64 {
    let term = match op {
        Reduction::Sum | Reduction::Mean => f64::cast_from(x),
        // As `reduction::term`: the zero added in f64, where no f32 product can be
        // contracted into it.
        Reduction::Max => f64::cast_from(x) + 0.0f64,
        Reduction::Norm | Reduction::Rms => {
            let wide = f64::cast_from(x);
            wide * wide
        }
    };
    let real = first_lane + lane < usize::cast_from(valid);
    if real { term } else { reduction_identity(op) }
}

/// `flashopt_ir::reduction::identity`.
#[cube]
pub fn reduction_identity(#[comptime] op: Reduction) -> f64 {
    let value = comptime![flashopt_ir::reduction::identity(op)];
    value.runtime()
}

/// `flashopt_ir::reduction::combine`: commutative bit for bit.
#[cube]
pub fn combine(a: f64, b: f64, #[comptime] op: Reduction) -> f64 {
    match op {
        Reduction::Max => {
            let larger = select(a > b, a, b);
            select(a.is_nan() || b.is_nan(), a + b, larger)
        }
        _ => a + b,
    }
}

/// This unit's partial result combined with the unit's `mask` places away: after
/// masks 1, 2, .. every unit holds the pairwise tree over its aligned block.
#[cube]
pub fn plane_combine(x: f64, #[comptime] mask: u32, #[comptime] op: Reduction) -> f64 {
    combine(x, plane_shuffle_xor(x, mask), op)
}

/// A group's value of a reduction, written by its first unit into the reduction's
/// partials.
#[cube]
pub fn store_group_value(partials: &mut Array<f64>, group: usize, sub: usize, value: f64) {
    if sub == 0 {
        partials[group] = value;
    }
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
pub fn unit_group(unit: usize, first: u32, count: u32, #[comptime] units: usize) -> usize {
    let own = unit / units;
    min(own, usize::cast_from(count) - 1) + usize::cast_from(first)
}

/// 1 if `group` lies at or after a gradient region's first group `start`, else 0.
#[cube]
pub fn region_count(group: usize, start: u32) -> u32 {
    select(group >= usize::cast_from(start), 1u32, 0u32)
}

#[cube]
pub fn add_u32(a: u32, b: u32) -> u32 {
    a + b
}

/// Whether the group's region (`index`) is region `k`.
#[cube]
pub fn is_region(index: u32, #[comptime] k: u32) -> bool {
    index == k
}

/// The group's place in the gradient buffer bound to this launch: `gradient_first`
/// groups before the optimizer's (0 for the flat gradient buffer; the tensor's first
/// group for a gradient read where the trainer left it).
#[cube]
pub fn gradient_group(group: usize, gradient_first: u32) -> usize {
    group - usize::cast_from(gradient_first)
}

/// This unit's index in the launch. Steps launch along X alone; `ABSOLUTE_POS` would
/// compute the index from all three axes.
#[cube]
pub fn unit_index() -> usize {
    usize::cast_from(ABSOLUTE_POS_X)
}

/// Which of its group's `units` parts this unit holds.
#[cube]
pub fn unit_part(unit: usize, #[comptime] units: usize) -> usize {
    unit % units
}

#[cube]
pub fn unit_in_range(unit: usize, count: u32, #[comptime] units: usize) -> bool {
    unit < usize::cast_from(count) * units
}

/// Low 6 bits of a group's info word: its element count (32, or fewer at a tensor's end).
#[cube]
pub fn group_len(info: u32) -> u32 {
    info & 63
}

/// Where this group's parameter group's scalars start, in vectors of them.
#[cube]
pub fn scalar_base(info: u32, #[comptime] vectors: usize) -> usize {
    usize::cast_from(info >> 8) * vectors
}

/// The row of every tensor's rows that `group` lies in, from its tensor's words in the
/// row table (`bindings::ROW_TABLE_WORDS`: first group, groups per row, first row;
/// the tensor is the info word's row of scalars, one per tensor in such plans).
#[cube]
pub fn group_row(table: &Array<u32>, info: u32, group: usize) -> usize {
    let words = usize::cast_from(info >> 8) * 4;
    let local = group - usize::cast_from(table[words]);
    usize::cast_from(table[words + 2]) + local / usize::cast_from(table[words + 1])
}

/// Whether this unit holds its row's first element: its group starts the row and the
/// unit holds the group's first lanes. That unit stores the row's values.
#[cube]
pub fn holds_row_start(table: &Array<u32>, info: u32, group: usize, sub: usize) -> bool {
    let words = usize::cast_from(info >> 8) * 4;
    let local = group - usize::cast_from(table[words]);
    local % usize::cast_from(table[words + 1]) == 0 && sub == 0
}

/// The flat column index of this unit's first lane, from its tensor's words in the
/// row table (first group, groups per row, first row, first column): the group's
/// place in its row gives its block of 32 columns (a tensor of one row: every group).
#[cube]
pub fn group_column(
    table: &Array<u32>,
    info: u32,
    group: usize,
    sub: usize,
    #[comptime] lanes: usize,
) -> usize {
    let words = usize::cast_from(info >> 8) * 4;
    let local = group - usize::cast_from(table[words]);
    let block = local % usize::cast_from(table[words + 1]);
    usize::cast_from(table[words + 3]) + block * 32 + sub * lanes
}

/// Whether the group lies in its tensor's first row: its units store the columns'
/// new values.
#[cube]
pub fn in_first_row(table: &Array<u32>, info: u32, group: usize) -> bool {
    let words = usize::cast_from(info >> 8) * 4;
    group - usize::cast_from(table[words]) < usize::cast_from(table[words + 1])
}

/// Whether lane `lane` of a unit whose first lane is `first_lane` in its group holds
/// one of the group's `valid` elements.
#[cube]
pub fn lane_is_real(valid: u32, first_lane: usize, #[comptime] lane: usize) -> bool {
    first_lane + lane < usize::cast_from(valid)
}

#[cube]
pub fn both(a: bool, b: bool) -> bool {
    a && b
}

/// A tiled pass (`bindings::tiled`): the group of the tile slot `slot` (counted over
/// the launch's tiles, 32 slots each), from the tile's words in the tile table (its
/// first group, groups per row, rows). Slots past the tile's rows take its first
/// group again (they join the cube's barriers and store nothing).
#[cube]
pub fn tile_group(table: &Array<u32>, slot: usize) -> usize {
    let words = (slot / 32) * 6;
    let row = slot % 32;
    let real = row < usize::cast_from(table[words + 2]);
    usize::cast_from(table[words]) + select(real, row, 0) * usize::cast_from(table[words + 1])
}

/// Whether tile slot `slot` holds one of its tile's rows.
#[cube]
pub fn tile_row_is_real(table: &Array<u32>, slot: usize) -> bool {
    slot % 32 < usize::cast_from(table[(slot / 32) * 6 + 2])
}

/// The tile this unit reduces columns of, when the cube's `groups_per_cube` slots
/// hold several tiles: the cube's first slot (counted from the launch's `first`, a
/// whole tile) plus the unit's 32-unit block. Units past the cube's tiles take its last
/// one, units past the launch's tiles the launch's last (and store nothing).
#[cube]
pub fn column_tile(
    first: u32,
    count: u32,
    #[comptime] cube_units: usize,
    #[comptime] groups_per_cube: usize,
) -> usize {
    let cube_slot = (usize::cast_from(ABSOLUTE_POS_X) / cube_units) * groups_per_cube;
    let block = min(usize::cast_from(UNIT_POS) / 32, groups_per_cube / 32 - 1);
    let tile = min(cube_slot / 32 + block, usize::cast_from(count) / 32 - 1);
    usize::cast_from(first) / 32 + tile
}

/// Whether this unit reduces a column: its 32-unit block is one of the cube's tiles,
/// the tile inside the launch (of `count` slots), and its column one of the tile's.
#[cube]
pub fn reduces_column(
    table: &Array<u32>,
    count: u32,
    tile: usize,
    #[comptime] cube_units: usize,
    #[comptime] groups_per_cube: usize,
) -> bool {
    let cube_slot = (usize::cast_from(ABSOLUTE_POS_X) / cube_units) * groups_per_cube;
    let own = usize::cast_from(UNIT_POS);
    let inside = own < groups_per_cube && cube_slot + (own / 32) * 32 < usize::cast_from(count);
    inside && own % 32 < usize::cast_from(table[tile * 6 + 3])
}

/// Where this unit's column value goes among the column groups: the tile's first
/// column group, plus the column's bands before it (`column * bands`).
#[cube]
pub fn column_group(table: &Array<u32>, tile: usize) -> usize {
    let words = tile * 6;
    let column = usize::cast_from(UNIT_POS) % 32;
    usize::cast_from(table[words + 4]) + column * usize::cast_from(table[words + 5])
}

/// The tile's rows (1 to 32).
#[cube]
pub fn tile_rows(table: &Array<u32>, tile: usize) -> u32 {
    table[tile * 6 + 2]
}

/// Row `row`'s term for this unit's column of tile slot block `UNIT_POS / 32` in the
/// cube's shared terms (row-major: 32 values per row of a tile).
#[cube]
pub fn shared_term(
    shared: &SharedMemory<f32>,
    rows: u32,
    #[comptime] groups_per_cube: usize,
    #[comptime] row: usize,
    #[comptime] op: Reduction,
) -> f64 {
    let own = usize::cast_from(UNIT_POS);
    let block = min(own / 32, groups_per_cube / 32 - 1);
    let x = shared[(block * 32 + row) * 32 + own % 32];
    reduction_term(x, rows, 0, row, op)
}

#[cube]
pub fn new_shared(#[comptime] size: usize) -> SharedMemory<f32> {
    SharedMemory::<f32>::new(size)
}

/// This unit's lane `lane` of its group's terms, into the cube's shared terms: unit
/// `UNIT_POS` holds elements `UNIT_POS * lanes ..` of the cube's slots, which are
/// rows of 32 of its tiles.
#[cube]
pub fn share_lane(
    shared: &mut SharedMemory<f32>,
    x: f32,
    #[comptime] lanes: usize,
    #[comptime] lane: usize,
) {
    shared[usize::cast_from(UNIT_POS) * lanes + lane] = x;
}

#[cube]
pub fn barrier() {
    sync_cube();
}
