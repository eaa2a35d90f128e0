//! The matrix stage on the device: Muon's orthogonalization
//! ([`flashopt_ir::matrix`]) of every tensor's matrix in a flat bf16 buffer, in
//! batches of one shape. Each batch is gathered into one contiguous
//! `batch x m x n` buffer, wide (`m <= n`; a tall matrix is gathered transposed, as
//! the reference takes it), normalized, iterated ([`MatrixStage`]: on CUDA with
//! cuBLAS where it loads, else with cubek-matmul's GEMMs; bf16 operands, f32
//! accumulation, the sums the reference rounds once, `b A + c A A` and `a X + B X`,
//! rounded once), and scattered back. The products sum in the library's order, not the
//! reference's: the results agree within a tolerance, not bit for bit.

use cubecl::prelude::*;
use cubecl::server::Handle;
use flashopt_ir::matrix::NewtonSchulz;
use half::bf16;

use super::blas;
use super::gemm::{self, Operand, Out};
use crate::codegen::emit::TargetRuntime;

/// Units per cube of the element kernels.
const UNITS: u32 = 256;
/// At most this many cubes sum one matrix's squares.
const MAX_NORM_CUBES: usize = 64;

/// Between the flat buffer and a stack of padded wide matrices. Slot `b` of `stack`
/// (`mp x np`) holds the wide matrix `m x n` of the matrix at `flat[offsets[b]..]`:
/// row-major `m x n` as it is, or, `transposed`, the `n x m` matrix it is the
/// transpose of. `gather` fills every slot, zeros around the matrix (zero rows and
/// columns stay zero through the iteration and change no other entry of it); else
/// each slot's `m x n` part goes back in place.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn move_matrices<F: Float>(
    flat: &mut Array<F>,
    stack: &mut Array<F>,
    offsets: &Array<u32>,
    m: usize,
    n: usize,
    mp: usize,
    np: usize,
    transposed: u32,
    len: usize,
    #[comptime] gather: bool,
) {
    if ABSOLUTE_POS < len {
        let per = mp * np;
        let b = ABSOLUTE_POS / per;
        let r = ABSOLUTE_POS % per;
        let (i, j) = (r / np, r % np);
        let inside = i < m && j < n;
        let at = offsets[b] as usize + select(transposed == 1, j * m + i, i * n + j);
        if gather {
            stack[ABSOLUTE_POS] = select(inside, flat[select(inside, at, 0usize)], F::new(0.0));
        } else if inside {
            flat[at] = stack[ABSOLUTE_POS];
        }
    }
}

/// Cube `(c, b)` sums the squares of its share of matrix `b` (`per` elements) in
/// f32, its units' sums added by a tree over shared memory, into
/// `partials[b * CUBE_COUNT_X + c]`.
#[cube(launch_unchecked)]
fn square_sums<F: Float>(x: &Array<F>, partials: &mut Array<f32>, per: usize) {
    let cubes = CUBE_COUNT_X as usize;
    let b = CUBE_POS_Y as usize;
    let unit = UNIT_POS as usize;
    let stride = cubes * 256usize;
    let mut sum = 0.0f32;
    let mut k = CUBE_POS_X as usize * 256usize + unit;
    while k < per {
        let v = f32::cast_from(x[b * per + k]);
        sum += v * v;
        k += stride;
    }
    let mut shared = SharedMemory::<f32>::new(256usize);
    shared[unit] = sum;
    sync_cube();
    let mut width = 128usize;
    while width > 0 {
        if unit < width {
            shared[unit] = shared[unit] + shared[unit + width];
        }
        sync_cube();
        width /= 2;
    }
    if unit == 0 {
        partials[b * cubes + CUBE_POS_X as usize] = shared[0];
    }
}

/// Each matrix's divisor: its Frobenius norm from its partial sums (in order),
/// rounded to `F` as torch's norm of a bf16 matrix is, clamped at `eps` (in `F`).
#[cube(launch_unchecked)]
fn divisors<F: Float>(
    partials: &Array<f32>,
    divisor: &mut Array<f32>,
    cubes: usize,
    batch: usize,
    eps: f32,
) {
    if ABSOLUTE_POS < batch {
        let mut sum = 0.0f32;
        for c in 0..cubes {
            sum += partials[ABSOLUTE_POS * cubes + c];
        }
        let norm = f32::cast_from(F::cast_from(f32::sqrt(sum)));
        let floor = f32::cast_from(F::cast_from(eps));
        divisor[ABSOLUTE_POS] = f32::max(norm, floor);
    }
}

/// `x = x / divisor` of its matrix, rounded to `F`.
#[cube(launch_unchecked)]
fn normalize<F: Float>(x: &mut Array<F>, divisor: &Array<f32>, per: usize, len: usize) {
    if ABSOLUTE_POS < len {
        let d = divisor[ABSOLUTE_POS / per];
        x[ABSOLUTE_POS] = F::cast_from(f32::cast_from(x[ABSOLUTE_POS]) / d);
    }
}

/// `out = scale * product + keep * kept`, in f32, rounded once to `F`: the epilogue
/// of a GEMM whose product came out in f32.
#[cube(launch_unchecked)]
fn combine<F: Float>(
    product: &Array<f32>,
    kept: &Array<F>,
    out: &mut Array<F>,
    scale: f32,
    keep: f32,
    len: usize,
) {
    if ABSOLUTE_POS < len {
        let sum = scale * product[ABSOLUTE_POS] + keep * f32::cast_from(kept[ABSOLUTE_POS]);
        out[ABSOLUTE_POS] = F::cast_from(sum);
    }
}

/// One unit per element of `len`, in cubes of [`UNITS`].
fn grid(len: usize) -> (CubeCount, CubeDim) {
    let cubes = u32::try_from(len.div_ceil(UNITS as usize)).expect("fewer than 2^32 cubes");
    (CubeCount::Static(cubes, 1, 1), CubeDim::new_1d(UNITS))
}

/// Matrices of one shape in a flat buffer: where each starts (in elements) and the
/// shape, `rows x cols` row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatrixBatch {
    pub offsets: Vec<usize>,
    pub rows: usize,
    pub cols: usize,
}

/// The iteration's matrices have dimensions of a multiple of this (8 bf16 values, 16
/// bytes): the strides TMA's loads take.
const PAD_TO: usize = 8;

impl MatrixBatch {
    /// The bytes of its matrices gathered and padded.
    fn gathered_bytes(&self) -> usize {
        let (m, n, _) = self.wide();
        self.offsets.len() * m.next_multiple_of(PAD_TO) * n.next_multiple_of(PAD_TO) * 2
    }

    /// The shape the iteration takes, `m x n` with `m <= n`, and whether that is the
    /// transpose of the stored one.
    fn wide(&self) -> (usize, usize, bool) {
        if self.rows > self.cols {
            (self.cols, self.rows, true)
        } else {
            (self.rows, self.cols, false)
        }
    }
}

/// `count` wide `m x n` matrices (`m <= n`, both multiples of 8) in `x`: bf16,
/// row-major, one after the other.
pub struct Stack {
    pub x: Handle,
    pub count: usize,
    pub m: usize,
    pub n: usize,
}

/// How a runtime runs the matrix stage's Newton-Schulz iteration: on cubek-matmul's
/// GEMMs ([`iterate_on_cubek`]) unless it has a faster library.
pub trait MatrixStage: TargetRuntime {
    /// Iterate `ns` on every stack (its matrices normalized); returns, per stack, the
    /// buffer holding the result (its `x` or another). An error is a product the
    /// library could not run.
    fn newton_schulz(
        client: &ComputeClient<Self>,
        stacks: Vec<Stack>,
        ns: &NewtonSchulz,
    ) -> Result<Vec<Handle>, String> {
        iterate_all_on_cubek(client, stacks, ns)
    }
}

/// Every stack through [`iterate_on_cubek`], in turn.
fn iterate_all_on_cubek<R: Runtime>(
    client: &ComputeClient<R>,
    stacks: Vec<Stack>,
    ns: &NewtonSchulz,
) -> Result<Vec<Handle>, String> {
    stacks
        .into_iter()
        .map(|s| iterate_on_cubek(client, s, ns))
        .collect()
}

impl MatrixStage for cubecl::hip::HipRuntime {}

impl MatrixStage for cubecl::cuda::CudaRuntime {
    fn newton_schulz(
        client: &ComputeClient<Self>,
        stacks: Vec<Stack>,
        ns: &NewtonSchulz,
    ) -> Result<Vec<Handle>, String> {
        if gemm::prefers_cublas() {
            if blas::loads() {
                return blas::newton_schulz(client, stacks, ns);
            }
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                eprintln!(
                    "flashopt: libcublas did not load (no libcublas.so.13 on LD_LIBRARY_PATH?); \
                     the matrix stage runs on cubek-matmul, slower on large matrices"
                )
            });
        }
        iterate_all_on_cubek(client, stacks, ns)
    }
}

/// Orthogonalize every matrix of `batch` in `buffer` (bf16, `len` elements) in place.
///
/// # Safety
/// As [`orthogonalize_batches`].
pub unsafe fn orthogonalize_batch<R: MatrixStage>(
    client: &ComputeClient<R>,
    buffer: &Handle,
    len: usize,
    batch: &MatrixBatch,
    ns: &NewtonSchulz,
) -> Result<(), String> {
    // SAFETY: the caller's contract.
    unsafe { orthogonalize_batches(client, buffer, len, std::slice::from_ref(batch), ns) }
}

/// At most this many bytes of gathered matrices at once (always at least one batch):
/// iterating batches together saves host round trips, gathering all of a large
/// model's would double its matrices' memory.
const GATHERED_BYTES: usize = 512 << 20;

/// Orthogonalize every matrix of every batch in `buffer` (bf16, `len` elements) in
/// place: batches gathered and normalized, iterated together ([`MatrixStage`]) and
/// scattered back, as many at once as fit [`GATHERED_BYTES`]. An error is a GEMM the
/// runtime's library cannot run on this device.
///
/// # Safety
/// Every matrix of every batch must lie inside `buffer`'s `len` elements, no two
/// overlap, and every offset must be below 2^32.
pub unsafe fn orthogonalize_batches<R: MatrixStage>(
    client: &ComputeClient<R>,
    buffer: &Handle,
    len: usize,
    batches: &[MatrixBatch],
    ns: &NewtonSchulz,
) -> Result<(), String> {
    let mut start = 0;
    while start < batches.len() {
        let mut end = start + 1;
        let mut bytes = batches[start].gathered_bytes();
        while end < batches.len() && bytes + batches[end].gathered_bytes() <= GATHERED_BYTES {
            bytes += batches[end].gathered_bytes();
            end += 1;
        }
        // SAFETY: the caller's contract, for a part of the batches.
        unsafe { orthogonalize_together(client, buffer, len, &batches[start..end], ns)? };
        start = end;
    }
    Ok(())
}

/// Where one batch's matrices lie in the flat buffer and in their padded stack.
struct Placement {
    offsets: Handle,
    count: usize,
    /// The wide shape (`rows <= cols`), and whether it is the stored one's transpose.
    rows: usize,
    cols: usize,
    transposed: bool,
    /// The padded wide shape.
    m: usize,
    n: usize,
}

impl Placement {
    fn new<R: Runtime>(client: &ComputeClient<R>, batch: &MatrixBatch) -> Option<Placement> {
        let count = batch.offsets.len();
        let (rows, cols, transposed) = batch.wide();
        if count == 0 || rows * cols == 0 {
            return None;
        }
        let words: Vec<u32> = batch
            .offsets
            .iter()
            .map(|&o| u32::try_from(o).expect("matrices start below 2^32 elements"))
            .collect();
        Some(Placement {
            offsets: client.create_from_slice(u32::as_bytes(&words)),
            count,
            rows,
            cols,
            transposed,
            m: rows.next_multiple_of(PAD_TO),
            n: cols.next_multiple_of(PAD_TO),
        })
    }

    fn stack_len(&self) -> usize {
        self.count * self.m * self.n
    }

    /// The batch's matrices from `buffer` (`len` elements) into `stack`, or back.
    ///
    /// # Safety
    /// `stack` holds [`Self::stack_len`] values; every matrix lies inside `buffer`.
    unsafe fn launch<R: Runtime>(
        &self,
        client: &ComputeClient<R>,
        buffer: &Handle,
        len: usize,
        stack: &Handle,
        gather: bool,
    ) {
        let array = |h: &Handle, len: usize| unsafe { ArrayArg::from_raw_parts(h.clone(), len) };
        let total = self.stack_len();
        let (cubes, dim) = grid(total);
        // SAFETY: the caller's contract.
        unsafe {
            move_matrices::launch_unchecked::<bf16, R>(
                client,
                cubes,
                dim,
                array(buffer, len),
                array(stack, total),
                array(&self.offsets, self.count),
                self.rows,
                self.cols,
                self.m,
                self.n,
                u32::from(self.transposed),
                total,
                gather,
            );
        }
    }
}

/// [`orthogonalize_batches`] of batches iterated in one call.
///
/// # Safety
/// As [`orthogonalize_batches`].
unsafe fn orthogonalize_together<R: MatrixStage>(
    client: &ComputeClient<R>,
    buffer: &Handle,
    len: usize,
    batches: &[MatrixBatch],
    ns: &NewtonSchulz,
) -> Result<(), String> {
    let placements: Vec<Placement> = batches
        .iter()
        .filter_map(|b| Placement::new(client, b))
        .collect();
    let mut stacks = Vec::with_capacity(placements.len());
    for p in &placements {
        let x = client.empty(p.stack_len() * 2);
        // SAFETY: `x` holds the stack; the caller's contract for `buffer`.
        unsafe { p.launch(client, buffer, len, &x, true) };
        normalize_batch(client, &x, p.count, p.m * p.n, ns.eps);
        let (count, m, n) = (p.count, p.m, p.n);
        stacks.push(Stack { x, count, m, n });
    }
    let results = R::newton_schulz(client, stacks, ns)?;
    for (p, x) in placements.iter().zip(results) {
        // SAFETY: as the gather.
        unsafe { p.launch(client, buffer, len, &x, false) };
    }
    Ok(())
}

/// The iteration on cubek-matmul's GEMMs, with element kernels for the sums the
/// reference rounds once (`b A + c A A`, `a X + B X`); in place in `x`.
pub fn iterate_on_cubek<R: Runtime>(
    client: &ComputeClient<R>,
    Stack { x, count, m, n }: Stack,
    ns: &NewtonSchulz,
) -> Result<Handle, String> {
    let total = count * m * n;
    let gram = client.empty(count * m * m * 2);
    let gram_squared = client.empty(count * m * m * 4);
    let polynomial = client.empty(count * m * m * 2);
    let product = client.empty(total * 4);
    let squares = count * m * m;
    let (cubes, dim) = grid(total);
    let (square_cubes, _) = grid(squares);
    let array = |h: &Handle, len: usize| unsafe { ArrayArg::from_raw_parts(h.clone(), len) };
    let matrix = Operand::new(&x, m, n);
    let square = |h| Operand::new(h, m, m);
    for _ in 0..ns.steps {
        // A = X X^T; A A; B = b A + c A A; B X; X = a X + B X. SAFETY: each buffer
        // holds `count` matrices of its shape; no product writes an operand.
        unsafe {
            gemm::product(client, matrix, matrix.t(), &gram, count, Out::Bf16)?;
            gemm::product(
                client,
                square(&gram),
                square(&gram),
                &gram_squared,
                count,
                Out::F32,
            )?;
            combine::launch_unchecked::<bf16, R>(
                client,
                square_cubes.clone(),
                dim,
                array(&gram_squared, squares),
                array(&gram, squares),
                array(&polynomial, squares),
                ns.c,
                ns.b,
                squares,
            );
            gemm::product(
                client,
                square(&polynomial),
                matrix,
                &product,
                count,
                Out::F32,
            )?;
            combine::launch_unchecked::<bf16, R>(
                client,
                cubes.clone(),
                dim,
                array(&product, total),
                array(&x, total),
                array(&x, total),
                1.0,
                ns.a,
                total,
            );
        }
    }
    Ok(x)
}

/// `x /= max(|x|_F, eps)` per matrix, as the reference normalizes.
fn normalize_batch<R: Runtime>(
    client: &ComputeClient<R>,
    x: &Handle,
    count: usize,
    per: usize,
    eps: f32,
) {
    let total = count * per;
    let cubes = per.div_ceil(UNITS as usize * 16).clamp(1, MAX_NORM_CUBES);
    let partials = client.empty(count * cubes * 4);
    let divisor = client.empty(count * 4);
    let dim = CubeDim::new_1d(UNITS);
    let batch_cubes = u32::try_from(count).expect("fewer than 2^32 matrices");
    // SAFETY: `x` holds `count` matrices of `per` elements; the partials one per cube.
    unsafe {
        square_sums::launch_unchecked::<bf16, R>(
            client,
            CubeCount::Static(cubes as u32, batch_cubes, 1),
            dim,
            ArrayArg::from_raw_parts(x.clone(), total),
            ArrayArg::from_raw_parts(partials.clone(), count * cubes),
            per,
        );
        let (one_per_matrix, _) = grid(count);
        divisors::launch_unchecked::<bf16, R>(
            client,
            one_per_matrix,
            dim,
            ArrayArg::from_raw_parts(partials, count * cubes),
            ArrayArg::from_raw_parts(divisor.clone(), count),
            cubes,
            count,
            eps,
        );
        let (each, _) = grid(total);
        normalize::launch_unchecked::<bf16, R>(
            client,
            each,
            dim,
            ArrayArg::from_raw_parts(x.clone(), total),
            ArrayArg::from_raw_parts(divisor, count),
            per,
            total,
        );
    }
}
