//! What a per-tensor reduction computes, operation by operation: the CPU interpreter
//! runs these functions, the GPU kernels perform the same operations in the same
//! order, so both give the same bits.
//!
//! Every element contributes a *term* in f64 (its value, its exact square for norms).
//! Terms are combined by a fixed tree, chosen to fit the GPU:
//!
//! 1. each 32-element group: a pairwise tree over its lanes (lane `2i` with `2i + 1`,
//!    then those pairs, and so on), padding lanes the identity;
//! 2. each *chunk* of [`CHUNK_GROUPS`] consecutive groups of a tensor (counted from
//!    the tensor's first group): the same pairwise tree over its group values,
//!    groups past the tensor's end the identity;
//! 3. the tensor: [`STRANDS`] strands, strand `j` folding chunks `j, j + STRANDS,
//!    ..` in order starting from the identity, then the pairwise tree over the
//!    strands;
//! 4. the result, rounded once to f32 ([`finish`]).
//!
//! Pairwise trees keep the rounding error of a sum of `n` terms at `O(log n)` ulps,
//! and f64 keeps it far below an f32 ulp for any tensor size.

use crate::graph::Reduction;
use crate::types::GROUP_SIZE;

/// Groups per chunk (level 2).
pub const CHUNK_GROUPS: usize = 32;
/// Strands per tensor (level 3).
pub const STRANDS: usize = 256;

/// One element's term.
pub fn term(r: Reduction, x: f32) -> f64 {
    match r {
        Reduction::Sum | Reduction::Mean => f64::from(x),
        // `+ 0.0` makes -0 +0: the maximum of zeros does not depend on the order. In
        // f64, after the conversion: an f32 `x + 0.0` of a product could be
        // contracted into an FMA on a GPU, which keeps an underflowing product's -0.
        Reduction::Max => f64::from(x) + 0.0,
        // Exact in f64 (24-bit significands), and never overflows.
        Reduction::Norm | Reduction::Rms => f64::from(x) * f64::from(x),
    }
}

/// What a missing term (padding, a group or chunk past the tensor) counts as. The
/// maximum's is -1e300, below every term (an f32 or -inf), a literal a GPU source can
/// hold; where it survives (every value -inf, or none) the result rounds to -inf as the
/// maximum would.
pub fn identity(r: Reduction) -> f64 {
    match r {
        Reduction::Max => -1e300,
        _ => 0.0,
    }
}

/// Two partial results combined. Commutative bit for bit (a GPU's butterfly
/// computes `a + b` on one lane and `b + a` on the other); the maximum is NaN when
/// either is.
pub fn combine(r: Reduction, a: f64, b: f64) -> f64 {
    match r {
        Reduction::Max => {
            if a.is_nan() || b.is_nan() {
                // NaN, as the GPU's `a + b` of a NaN gives.
                a + b
            } else if a > b {
                a
            } else {
                b
            }
        }
        _ => a + b,
    }
}

/// The pairwise tree over `values` (a power of two of them), adjacent pairs first.
/// Overwrites `values`.
pub fn pairwise(r: Reduction, values: &mut [f64]) -> f64 {
    assert!(
        values.len().is_power_of_two(),
        "a pairwise tree over 2^k values"
    );
    let mut len = values.len();
    while len > 1 {
        len /= 2;
        for i in 0..len {
            values[i] = combine(r, values[2 * i], values[2 * i + 1]);
        }
    }
    values[0]
}

/// Level 1: a group's value from its real elements' values (at most 32).
pub fn group_value(r: Reduction, elements: &[f32]) -> f64 {
    let mut terms = [identity(r); GROUP_SIZE];
    for (t, &x) in terms.iter_mut().zip(elements) {
        *t = term(r, x);
    }
    pairwise(r, &mut terms)
}

/// Level 2: each chunk's value from the tensor's group values, in order.
pub fn chunk_values(r: Reduction, groups: &[f64]) -> Vec<f64> {
    groups
        .chunks(CHUNK_GROUPS)
        .map(|chunk| {
            let mut values = [identity(r); CHUNK_GROUPS];
            values[..chunk.len()].copy_from_slice(chunk);
            pairwise(r, &mut values)
        })
        .collect()
}

/// Level 3: the tensor's total from its chunk values.
pub fn total(r: Reduction, chunks: &[f64]) -> f64 {
    let mut strands = [identity(r); STRANDS];
    for (c, &value) in chunks.iter().enumerate() {
        let strand = &mut strands[c % STRANDS];
        *strand = combine(r, *strand, value);
    }
    pairwise(r, &mut strands)
}

/// Level 4: the reduction's value from the total of a tensor of `len` elements.
pub fn finish(r: Reduction, total: f64, len: usize) -> f32 {
    let n = len as f64;
    (match r {
        Reduction::Sum | Reduction::Max => total,
        Reduction::Mean => total / n,
        Reduction::Norm => total.sqrt(),
        Reduction::Rms => (total / n).sqrt(),
    }) as f32
}

/// Levels 2 to 4: the value of a tensor of `len` elements from its group values.
pub fn from_groups(r: Reduction, groups: &[f64], len: usize) -> f32 {
    finish(r, total(r, &chunk_values(r, groups)), len)
}

/// The reduction of a whole tensor's values, through every level.
pub fn reduce(r: Reduction, values: &[f32]) -> f32 {
    let groups: Vec<f64> = values
        .chunks(GROUP_SIZE)
        .map(|g| group_value(r, g))
        .collect();
    from_groups(r, &groups, values.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reduction_is_within_an_ulp_of_the_exact_value() {
        // 100_003 values: a short last group, a short last chunk, strands folding
        // several chunks.
        let n = 100_003 * 40;
        let values: Vec<f32> = (0..n)
            .map(|i| ((i as f32) * 0.618_034).sin() * (1.0 + (i % 7) as f32))
            .collect();
        let exact_sum: f64 = values.iter().map(|&x| f64::from(x)).sum();
        let exact_squares: f64 = values.iter().map(|&x| f64::from(x).powi(2)).sum();
        let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let close = |got: f32, want: f64| {
            assert!(
                (f64::from(got) - want).abs() <= f64::from(f32::EPSILON) * want.abs(),
                "{got} vs {want}"
            )
        };
        close(reduce(Reduction::Sum, &values), exact_sum);
        close(reduce(Reduction::Mean, &values), exact_sum / n as f64);
        close(reduce(Reduction::Norm, &values), exact_squares.sqrt());
        close(
            reduce(Reduction::Rms, &values),
            (exact_squares / n as f64).sqrt(),
        );
        assert_eq!(reduce(Reduction::Max, &values), max);
    }

    #[test]
    fn nan_and_signed_zeros() {
        let mut values = vec![-0.0f32; 70];
        assert_eq!(reduce(Reduction::Max, &values).to_bits(), 0.0f32.to_bits());
        values[65] = f32::NAN;
        assert!(reduce(Reduction::Max, &values).is_nan());
        assert!(reduce(Reduction::Sum, &values).is_nan());
        assert_eq!(reduce(Reduction::Max, &[]), f32::NEG_INFINITY);
        assert_eq!(reduce(Reduction::Sum, &[]), 0.0);
        // Squares in f64: no overflow where f32 squares would.
        let big = [3e30f32; 4];
        assert_eq!(reduce(Reduction::Norm, &big), 6e30);
    }

    #[test]
    fn the_tree_is_pairwise_not_sequential() {
        // 2^53 + 1 rounds back to 2^53 (a tie, to even): added one by one the ones
        // vanish (0), paired first they survive (1).
        let big = 2f32.powi(53);
        let values = [big, 1.0, 1.0, -big];
        let sequential = values.iter().fold(0.0f64, |a, &x| a + f64::from(x));
        assert_eq!(sequential, 0.0);
        assert_eq!(group_value(Reduction::Sum, &values), 1.0);
        // The same across groups (level 2) and across chunks (level 3).
        let groups: Vec<f64> = values.iter().map(|&x| f64::from(x)).collect();
        assert_eq!(chunk_values(Reduction::Sum, &groups), vec![1.0]);
        let mut chunks = vec![0.0; STRANDS * 2];
        chunks[..4].copy_from_slice(&groups);
        assert_eq!(total(Reduction::Sum, &chunks), 1.0);
        // Strands fold in order: chunk j + STRANDS after chunk j.
        let mut folded = vec![0.0; STRANDS * 2];
        (folded[0], folded[STRANDS], folded[1]) = (big.into(), 1.0, (-big).into());
        assert_eq!(total(Reduction::Sum, &folded), 0.0);
    }
}
