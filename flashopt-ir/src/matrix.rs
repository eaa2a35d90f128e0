//! The CPU reference of a matrix-level function: Muon's orthogonalization (Jordan et
//! al., 2024), the quintic Newton-Schulz iteration that maps a matrix `U S V^T` to about
//! `U V^T` (each singular value to somewhere near 1) with matrix products alone.
//!
//! For a matrix `G` of `rows x cols`, taken wide (transposed when it has more rows than
//! columns, and transposed back at the end):
//!
//! ```text
//! X = G / max(|G|_F, eps)
//! repeat steps:  A = X X^T;  B = b A + c A A;  X = a X + B X
//! ```
//!
//! Two arithmetics ([`MatrixPrecision`]): all in f32, or as a bf16 GEMM library computes
//! it (the reference implementations run the iteration in bf16): every matrix is held in
//! bf16, and each product, with the sum it is part of (`b A + c A A`, `a X + B X`: one
//! GEMM with its epilogue), accumulates in f32 and rounds once to bf16. Products sum
//! their terms in index order; a GPU's GEMM sums them in its own order, so the GPU
//! agrees with this reference within a tolerance, not bit for bit.

use half::bf16;

use crate::graph::MatrixFn;
use crate::layout::Shape;

/// How the iteration rounds (see the module's documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatrixPrecision {
    F32,
    Bf16,
}

impl MatrixPrecision {
    fn round(self, x: f32) -> f32 {
        match self {
            MatrixPrecision::F32 => x,
            MatrixPrecision::Bf16 => bf16::from_f32(x).to_f32(),
        }
    }
}

/// The iteration's polynomial `a x + b x^3 + c x^5`, its steps, and the epsilon of the
/// normalization.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NewtonSchulz {
    pub a: f32,
    pub b: f32,
    pub c: f32,
    pub steps: usize,
    pub eps: f32,
}

impl NewtonSchulz {
    /// Muon's: the coefficients that maximize the slope at zero while keeping every
    /// singular value within about `[0.7, 1.2]` after 5 steps.
    pub const MUON: NewtonSchulz = NewtonSchulz {
        a: 3.4445,
        b: -4.7750,
        c: 2.0315,
        steps: 5,
        eps: 1e-7,
    };

    /// What the iteration does to one singular value of the normalized matrix.
    pub fn singular_value_map(&self, mut s: f64) -> f64 {
        let (a, b, c) = (f64::from(self.a), f64::from(self.b), f64::from(self.c));
        for _ in 0..self.steps {
            let s2 = s * s;
            s = a * s + b * s * s2 + c * s * s2 * s2;
        }
        s
    }
}

/// A matrix of `rows x cols` values, row-major.
struct Matrix {
    rows: usize,
    cols: usize,
    values: Vec<f32>,
}

impl Matrix {
    fn transposed(&self) -> Matrix {
        let mut values = vec![0.0; self.values.len()];
        for r in 0..self.rows {
            for c in 0..self.cols {
                values[c * self.rows + r] = self.values[r * self.cols + c];
            }
        }
        Matrix {
            rows: self.cols,
            cols: self.rows,
            values,
        }
    }

    /// `alpha * self * other^T (+ beta * add)`, accumulated in f32 in index order,
    /// the epilogue in f32, rounded once.
    fn times_transposed(
        &self,
        other: &Matrix,
        alpha: f32,
        add: Option<(f32, &Matrix)>,
        precision: MatrixPrecision,
    ) -> Matrix {
        assert_eq!(self.cols, other.cols, "inner dimensions agree");
        let mut values = Vec::with_capacity(self.rows * other.rows);
        for i in 0..self.rows {
            let row = &self.values[i * self.cols..(i + 1) * self.cols];
            for j in 0..other.rows {
                let col = &other.values[j * other.cols..(j + 1) * other.cols];
                let mut dot = 0.0f32;
                for (x, y) in row.iter().zip(col) {
                    dot = x.mul_add(*y, dot);
                }
                let mut out = alpha * dot;
                if let Some((beta, c)) = add {
                    out += beta * c.values[i * other.rows + j];
                }
                values.push(precision.round(out));
            }
        }
        Matrix {
            rows: self.rows,
            cols: other.rows,
            values,
        }
    }
}

/// Matrix function `f` of a tensor's values of its argument, as the plan's
/// `MatrixFn` defines it: the tensor seen as its `shape`'s row-major matrix.
pub fn apply(f: MatrixFn, argument: &[f32], shape: Shape) -> Vec<f32> {
    match f {
        MatrixFn::Orthogonalize => orthogonalize(
            argument,
            shape.rows(),
            shape.cols(),
            &NewtonSchulz::MUON,
            MatrixPrecision::Bf16,
        ),
    }
}

/// The cosine similarity of two updates' values (in f64; 0 where either is all
/// zeros): how close an orthogonalization, or an update from a compressed momentum,
/// lies to another.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b)).max(f64::MIN_POSITIVE)
}

/// The orthogonalization of the `rows x cols` matrix `values` (row-major), in the same
/// layout.
///
/// # Panics
/// If `values` does not hold `rows * cols` values.
pub fn orthogonalize(
    values: &[f32],
    rows: usize,
    cols: usize,
    ns: &NewtonSchulz,
    precision: MatrixPrecision,
) -> Vec<f32> {
    assert_eq!(values.len(), rows * cols, "a matrix of rows x cols values");
    let given = Matrix {
        rows,
        cols,
        values: values.iter().map(|&x| precision.round(x)).collect(),
    };
    let tall = rows > cols;
    let mut x = if tall { given.transposed() } else { given };
    let squares: f64 = x.values.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    let norm = precision.round(squares.sqrt() as f32);
    // `torch.optim.Muon` clamps the norm (Keller Jordan's reference adds eps).
    let scale = norm.max(precision.round(ns.eps));
    for v in &mut x.values {
        *v = precision.round(*v / scale);
    }
    for _ in 0..ns.steps {
        let a = x.times_transposed(&x, 1.0, None, precision);
        // `A` is symmetric: `A A = A A^T`.
        let b = a.times_transposed(&a, ns.c, Some((ns.b, &a)), precision);
        // `B X = B (X^T)^T`.
        let xt = x.transposed();
        x = b.times_transposed(&xt, 1.0, Some((ns.a, &x)), precision);
    }
    if tall { x.transposed() } else { x }.values
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `count` orthonormal vectors of `len` (f64), from a fixed sequence by Gram-Schmidt.
    fn orthonormal(count: usize, len: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut state = seed;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        };
        let mut out: Vec<Vec<f64>> = Vec::new();
        while out.len() < count {
            let mut v: Vec<f64> = (0..len).map(|_| next()).collect();
            for u in &out {
                let d: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(u).for_each(|(a, b)| *a -= d * b);
            }
            let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            v.iter_mut().for_each(|a| *a /= n);
            out.push(v);
        }
        out
    }

    /// `U diag(s) V^T` (`rows x cols`, `s` one value per row of the wide side), and the
    /// same with each singular value mapped by `map`.
    fn from_svd(
        rows: usize,
        cols: usize,
        s: &[f64],
        map: impl Fn(f64) -> f64,
    ) -> (Vec<f32>, Vec<f64>) {
        let k = rows.min(cols);
        assert_eq!(s.len(), k);
        let u = orthonormal(k, rows, 1);
        let v = orthonormal(k, cols, 2);
        let mut given = vec![0.0f32; rows * cols];
        let mut mapped = vec![0.0f64; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                let (mut x, mut y) = (0.0, 0.0);
                for i in 0..k {
                    x += u[i][r] * s[i] * v[i][c];
                    y += u[i][r] * map(s[i]) * v[i][c];
                }
                given[r * cols + c] = x as f32;
                mapped[r * cols + c] = y;
            }
        }
        (given, mapped)
    }

    /// The iteration keeps the singular vectors and maps each singular value of the
    /// normalized matrix through the polynomial five times: against that map in f64,
    /// the f32 iteration is within 2e-5 of every element. The bf16 one's rounding is
    /// amplified along the small singular values (the slope at 0 is `a`, 3.44 a step):
    /// its cosine similarity with the map is 0.9998 to 0.9999 where the singular values
    /// span 15 to 1, 0.994 to 0.996 where they span 300 to 1 (the bounds below leave
    /// room for another order of summation). On a wide and a tall matrix.
    #[test]
    fn the_iteration_maps_singular_values_and_keeps_singular_vectors() {
        let ns = NewtonSchulz::MUON;
        let spectra: [([f64; 8], f64); 2] = [
            ([3.0, 2.0, 1.1, 0.6, 0.5, 0.4, 0.3, 0.2], 0.9995),
            ([3.0, 2.0, 1.1, 0.6, 0.25, 0.1, 0.03, 0.01], 0.99),
        ];
        for (s, bf16_cosine) in spectra {
            let frobenius = s.iter().map(|x| x * x).sum::<f64>().sqrt();
            for (rows, cols) in [(8, 20), (20, 8)] {
                let map = |x: f64| ns.singular_value_map(x / frobenius);
                let (given, expected) = from_svd(rows, cols, &s, map);
                let f32_result = orthogonalize(&given, rows, cols, &ns, MatrixPrecision::F32);
                let worst = f32_result
                    .iter()
                    .zip(&expected)
                    .map(|(a, b)| (f64::from(*a) - b).abs())
                    .fold(0.0, f64::max);
                assert!(worst < 2e-5, "{rows} x {cols} f32: {worst}");
                let bf16_result = orthogonalize(&given, rows, cols, &ns, MatrixPrecision::Bf16);
                let wide: Vec<f64> = bf16_result.iter().map(|&x| f64::from(x)).collect();
                let cosine = cosine(&wide, &expected);
                assert!(cosine > bf16_cosine, "{rows} x {cols} bf16: {cosine}");
            }
            // Every singular value ends within [0.68, 1.2]: down to 1/300 of the largest.
            for x in s {
                let mapped = ns.singular_value_map(x / frobenius);
                assert!((0.68..1.2).contains(&mapped), "{x}: {mapped}");
            }
        }
    }

    fn cosine(a: &[f64], b: &[f64]) -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        dot / norm(a) / norm(b)
    }

    /// A tall matrix is the transpose of its wide transpose's result, bit for bit; a
    /// zero matrix stays zero.
    #[test]
    fn a_tall_matrix_is_orthogonalized_wide_and_zeros_stay_zero() {
        let ns = NewtonSchulz::MUON;
        let (rows, cols) = (12, 5);
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.1)
            .collect();
        let transpose = |v: &[f32], r: usize, c: usize| -> Vec<f32> {
            (0..r * c).map(|i| v[(i % r) * c + i / r]).collect()
        };
        for precision in [MatrixPrecision::F32, MatrixPrecision::Bf16] {
            let tall = orthogonalize(&values, rows, cols, &ns, precision);
            let wide_input = transpose(&values, rows, cols);
            let wide = orthogonalize(&wide_input, cols, rows, &ns, precision);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&tall),
                bits(&transpose(&wide, cols, rows)),
                "{precision:?}"
            );
            let zeros = orthogonalize(&vec![0.0; rows * cols], rows, cols, &ns, precision);
            assert!(zeros.iter().all(|&x| x == 0.0));
        }
    }
}
