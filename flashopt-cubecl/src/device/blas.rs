//! The matrix stage's Newton-Schulz iteration through cuBLAS, on CUDA: cubecl 0.10
//! emits no Hopper warpgroup MMA, and cubek-matmul's best routine reached 261 TFLOP/s on
//! a 16384 x 16384 product on an H200 where cuBLAS (torch's) reached 669 (docs/GPU.md).
//! libcublas is loaded at run time (cudarc 0.19's bindings, the version cubecl-cuda
//! uses): building needs no CUDA, and a process without it runs the iteration on
//! cubek-matmul.
//!
//! Each step is three strided-batched GEMMs and two copies ([`step_calls`]), bf16
//! operands and results, f32 accumulation, each sum rounded once as the cubek path
//! rounds it: `A = X X^T`, `B = c A A + b A` (`A` copied into `B` first, cuBLAS's
//! `beta`), and `X' = B X + a X` (into a second buffer holding a copy of `X`). The
//! tests run those calls through a CPU model of cuBLAS's column-major GEMM against
//! the CPU reference ([`flashopt_ir::matrix::orthogonalize`]).
//!
//! Ordering with cubecl's stream, as the NCCL collectives do it: the iteration first
//! waits for the work queued on the client (the kernels that gathered and normalized
//! `X`), runs on its own stream and waits for that before returning.

use std::sync::{Arc, Mutex, OnceLock};

use cubecl::client::ComputeClient;
use cubecl::cuda::CudaRuntime;
use cubecl::server::Handle;
use cudarc::cublas::result as blas;
use cudarc::cublas::sys::{
    self as blas_sys, cublasComputeType_t, cublasHandle_t, cublasOperation_t, cudaDataType,
};
use cudarc::driver::result::{self as driver, stream};
use cudarc::driver::sys::{CUcontext, CUdevice, CUdeviceptr, CUstream};
use flashopt_ir::matrix::NewtonSchulz;

use crate::device::matrix::Stack;
use crate::device::transfer::{addresses_after_queued_work, pinned::device_of};

/// Names cudarc's run-time loader tries for libcublas (built without a toolkit it
/// takes CUDA 13: these sonames and the plain one): where one of these loads, so do
/// cudarc's bindings. cudarc's own `is_culib_present` exists only in that mode;
/// where another crate has cudarc link against an installed toolkit (candle's CUDA
/// build), the linked library is the one called.
const CUBLAS_NAMES: [&str; 3] = ["libcublas.so.13", "libcublas.so.12", "libcublas.so"];

/// Whether libcublas loads in this process (looked up once).
pub fn loads() -> bool {
    static LOADS: OnceLock<bool> = OnceLock::new();
    *LOADS.get_or_init(|| {
        CUBLAS_NAMES.iter().any(|name| {
            // SAFETY: loading a shared library runs its initializers; libcublas's are
            // sound. The handle is dropped at once (cudarc keeps its own).
            unsafe { libloading::Library::new(name) }.is_ok()
        })
    })
}

/// A cuBLAS handle and the stream it runs on, in the primary context of one device.
struct Lane {
    /// Retained for the process's lifetime: lanes are never freed.
    context: CUcontext,
    handle: cublasHandle_t,
    stream: CUstream,
}

// SAFETY: the handle and stream belong to the device's primary context, which any
// thread may make current; `LANES`' lock gives them one user at a time.
unsafe impl Send for Lane {}

/// One lane per device, kept for the process's lifetime: creating a cuBLAS handle
/// allocates its workspace and costs milliseconds. Each lane has its own lock, so
/// that one process's GPUs (a thread each) run their stages side by side.
static LANES: Mutex<Vec<(CUdevice, Arc<Mutex<Lane>>)>> = Mutex::new(Vec::new());

/// The lane of `device`, made on first use.
fn lane_for(device: CUdevice) -> Result<Arc<Mutex<Lane>>, String> {
    let mut lanes = LANES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, lane)) = lanes.iter().find(|(d, _)| *d == device) {
        return Ok(lane.clone());
    }
    let lane = Arc::new(Mutex::new(Lane::new(device)?));
    lanes.push((device, lane.clone()));
    Ok(lane)
}

fn failed(during: &str) -> impl Fn(String) -> String + '_ {
    move |e| format!("cuBLAS, {during}: {e}")
}

impl Lane {
    /// Make the lane's context current on this thread (cubecl-cuda may run its work
    /// on another).
    fn enter(&self) -> Result<(), String> {
        // SAFETY: the context was retained in `new` and is never released.
        unsafe { driver::ctx::set_current(self.context) }
            .map_err(|e| failed("entering the device's context")(e.to_string()))
    }

    fn new(device: CUdevice) -> Result<Lane, String> {
        // SAFETY: `device` is the ordinal of a live allocation's device; its primary
        // context is retained before it is made current; the stream and handle are
        // created in it and the handle is bound to the stream before any call.
        unsafe {
            let context = driver::primary_ctx::retain(device)
                .map_err(|e| failed("retaining the device's context")(e.to_string()))?;
            let made = (|| {
                driver::ctx::set_current(context)
                    .map_err(|e| failed("entering the device's context")(e.to_string()))?;
                let stream = stream::create(stream::StreamKind::NonBlocking)
                    .map_err(|e| failed("creating a stream")(e.to_string()))?;
                let handle = blas::create_handle()
                    .map_err(|e| failed("creating a handle")(format!("{e:?}")))?;
                blas::set_stream(handle, stream as blas_sys::cudaStream_t)
                    .map_err(|e| failed("binding the stream")(format!("{e:?}")))?;
                Ok((stream, handle))
            })();
            match made {
                Ok((stream, handle)) => Ok(Lane {
                    context,
                    handle,
                    stream,
                }),
                Err(e) => {
                    // Nothing kept: the context is not held for a lane that failed.
                    let _ = driver::primary_ctx::release(device);
                    Err(e)
                }
            }
        }
    }

    /// Run `call` on the lane's stream for `count` matrices, `at` giving each
    /// buffer's device address.
    ///
    /// # Safety
    /// Every buffer must hold `count` matrices of the shapes and strides `call`
    /// names, on this lane's device.
    unsafe fn run(
        &self,
        call: &Call,
        count: usize,
        at: impl Fn(Buffer) -> CUdeviceptr,
    ) -> Result<(), String> {
        let int = |v: usize| i32::try_from(v).map_err(|_| format!("{v} exceeds cuBLAS's int"));
        let long = |v: usize| v as std::ffi::c_longlong;
        let op = |t| match t {
            true => cublasOperation_t::CUBLAS_OP_T,
            false => cublasOperation_t::CUBLAS_OP_N,
        };
        match *call {
            Call::Copy { dst, src, elements } => {
                // SAFETY: the caller's contract; the buffers are distinct allocations.
                unsafe { driver::memcpy_dtod_async(at(dst), at(src), elements * 2, self.stream) }
                    .map_err(|e| failed("a copy")(e.to_string()))
            }
            Call::Gemm {
                transpose,
                mnk: (m, n, k),
                alpha,
                a,
                b,
                beta,
                c,
            } => {
                // SAFETY: the caller's contract; `c` is never `a`'s or `b`'s buffer
                // (`step_calls`); `alpha` and `beta` are host f32s, as the f32 compute
                // type reads them, alive for the call.
                unsafe {
                    blas::gemm_strided_batched_ex(
                        self.handle,
                        op(transpose.0),
                        op(transpose.1),
                        int(m)?,
                        int(n)?,
                        int(k)?,
                        (&alpha as *const f32).cast(),
                        at(a.buffer) as *const _,
                        cudaDataType::CUDA_R_16BF,
                        int(a.ld)?,
                        long(a.stride),
                        at(b.buffer) as *const _,
                        cudaDataType::CUDA_R_16BF,
                        int(b.ld)?,
                        long(b.stride),
                        (&beta as *const f32).cast(),
                        at(c.buffer) as *mut _,
                        cudaDataType::CUDA_R_16BF,
                        int(c.ld)?,
                        long(c.stride),
                        int(count)?,
                        cublasComputeType_t::CUBLAS_COMPUTE_32F,
                        blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                    )
                }
                .map_err(|e| failed("a GEMM")(format!("{e:?}")))
            }
        }
    }
}

/// The iteration's buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buffer {
    /// The matrices, `m x n` row-major each.
    X,
    /// The next step's matrices.
    Next,
    /// `A = X X^T`, `m x m`.
    Gram,
    /// `B = c A A + b A`, `m x m`.
    Polynomial,
}

/// The matrices of a batch in one buffer, as cuBLAS reads them: column-major with
/// leading dimension `ld`, `stride` elements apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Matrices {
    pub buffer: Buffer,
    pub ld: usize,
    pub stride: usize,
}

/// One cuBLAS call, for every matrix of a batch (bf16 values).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Call {
    /// `c = alpha op(a) op(b) + beta c`, column-major, `op` a transpose where
    /// `transpose` says; `op(a)` is `m x k`, `op(b)` `k x n`; f32 accumulation.
    Gemm {
        transpose: (bool, bool),
        mnk: (usize, usize, usize),
        alpha: f32,
        a: Matrices,
        b: Matrices,
        beta: f32,
        c: Matrices,
    },
    /// The first `elements` values of `src` into `dst`.
    Copy {
        dst: Buffer,
        src: Buffer,
        elements: usize,
    },
}

/// One Newton-Schulz step on `count` wide `m x n` matrices (row-major) in
/// [`Buffer::X`], the result in [`Buffer::Next`]. cuBLAS is column-major: a
/// row-major `r x c` buffer is, to it, the `c x r` transpose, so each row-major
/// product `P Q` is asked for as `Q^T P^T`.
pub fn step_calls(count: usize, (m, n): (usize, usize), ns: &NewtonSchulz) -> [Call; 5] {
    let (per, squares) = (m * n, m * m);
    let matrices = |buffer| Matrices {
        buffer,
        ld: n,
        stride: per,
    };
    let square = |buffer| Matrices {
        buffer,
        ld: m,
        stride: squares,
    };
    [
        // A = X X^T: to cuBLAS, X is X^T (n x m); A = (X^T)^T X^T.
        Call::Gemm {
            transpose: (true, false),
            mnk: (m, m, n),
            alpha: 1.0,
            a: matrices(Buffer::X),
            b: matrices(Buffer::X),
            beta: 0.0,
            c: square(Buffer::Gram),
        },
        // B = c A A + b A: (A A)^T = A^T A^T.
        Call::Copy {
            dst: Buffer::Polynomial,
            src: Buffer::Gram,
            elements: count * squares,
        },
        Call::Gemm {
            transpose: (false, false),
            mnk: (m, m, m),
            alpha: ns.c,
            a: square(Buffer::Gram),
            b: square(Buffer::Gram),
            beta: ns.b,
            c: square(Buffer::Polynomial),
        },
        // X' = B X + a X: (B X)^T = X^T B^T.
        Call::Copy {
            dst: Buffer::Next,
            src: Buffer::X,
            elements: count * per,
        },
        Call::Gemm {
            transpose: (false, false),
            mnk: (n, m, m),
            alpha: 1.0,
            a: matrices(Buffer::X),
            b: square(Buffer::Polynomial),
            beta: ns.a,
            c: matrices(Buffer::Next),
        },
    ]
}

/// Every call of `ns.steps` steps on the matrices in [`Buffer::X`], the result left
/// there: even steps go from `X` to `Next`, odd ones back, and an odd count ends
/// with a copy back into `X`.
pub fn iteration(count: usize, shape: (usize, usize), ns: &NewtonSchulz) -> Vec<Call> {
    let swapped = |b| match b {
        Buffer::X => Buffer::Next,
        Buffer::Next => Buffer::X,
        other => other,
    };
    let mut calls = Vec::new();
    for step in 0..ns.steps {
        for call in step_calls(count, shape, ns) {
            calls.push(match step % 2 {
                0 => call,
                _ => call.renamed(swapped),
            });
        }
    }
    if ns.steps % 2 == 1 {
        calls.push(Call::Copy {
            dst: Buffer::X,
            src: Buffer::Next,
            elements: count * shape.0 * shape.1,
        });
    }
    calls
}

impl Call {
    /// The same call on the buffers `rename` maps its own to.
    fn renamed(self, rename: impl Fn(Buffer) -> Buffer) -> Call {
        let matrices = |m: Matrices| Matrices {
            buffer: rename(m.buffer),
            ..m
        };
        match self {
            Call::Gemm {
                transpose,
                mnk,
                alpha,
                a,
                b,
                beta,
                c,
            } => Call::Gemm {
                transpose,
                mnk,
                alpha,
                a: matrices(a),
                b: matrices(b),
                beta,
                c: matrices(c),
            },
            Call::Copy { dst, src, elements } => Call::Copy {
                dst: rename(dst),
                src: rename(src),
                elements,
            },
        }
    }
}

/// [`super::matrix::MatrixStage::newton_schulz`] on cuBLAS, each result back in its
/// stack's `x`: every stack runs between one wait for cubecl's queue and one wait for
/// the lane (two host round trips for the whole stage), in turn, through one set of
/// work buffers sized for the largest.
pub fn newton_schulz(
    client: &ComputeClient<CudaRuntime>,
    stacks: Vec<Stack>,
    ns: &NewtonSchulz,
) -> Result<Vec<Handle>, String> {
    let largest = |size: fn(&Stack) -> usize| stacks.iter().map(size).max().unwrap_or(0);
    if largest(|s| s.count * s.m * s.n) == 0 {
        return Ok(stacks.into_iter().map(|s| s.x).collect());
    }
    // X's next value, A, B: for one stack at a time.
    let work = [
        client.empty(largest(|s| s.count * s.m * s.n) * 2),
        client.empty(largest(|s| s.count * s.m * s.m) * 2),
        client.empty(largest(|s| s.count * s.m * s.m) * 2),
    ];
    let handles: Vec<&Handle> = stacks.iter().map(|s| &s.x).chain(&work).collect();
    let addresses = addresses_after_queued_work(client, &handles)
        .map_err(|e| failed("waiting for the gathered matrices")(e.to_string()))?;
    let (xs, work_at) = addresses.split_at(stacks.len());
    let device = device_of(xs[0]).map_err(|e| failed("finding the device")(e.to_string()))?;
    let lane = lane_for(device)?;
    let lane = lane.lock().unwrap_or_else(|e| e.into_inner());
    lane.enter()?;
    let queue = || -> Result<(), String> {
        for (stack, &x_at) in stacks.iter().zip(xs) {
            // Indexed as `Buffer`'s variants.
            let at = [x_at, work_at[0], work_at[1], work_at[2]];
            for call in &iteration(stack.count, (stack.m, stack.n), ns) {
                // SAFETY: every buffer holds `count` matrices of its shape (the work
                // buffers are sized for the largest stack).
                unsafe { lane.run(call, stack.count, |b| at[b as usize])? };
            }
        }
        Ok(())
    };
    let queued = queue();
    // Always waited for, so that no buffer is released while the lane still uses it,
    // also when a call failed after others were queued. SAFETY: the lane's stream
    // lives for the process.
    let waited = unsafe { stream::synchronize(lane.stream) }
        .map_err(|e| failed("waiting for the iteration")(e.to_string()));
    queued?;
    waited?;
    drop(work);
    Ok(stacks.into_iter().map(|s| s.x).collect())
}

#[cfg(test)]
mod tests {
    use flashopt_ir::matrix::{MatrixPrecision, orthogonalize};
    use half::bf16;

    use super::*;

    fn round(x: f32) -> f32 {
        bf16::from_f32(x).to_f32()
    }

    /// `call` as cuBLAS defines it (column-major; f32 sums; bf16 results), on
    /// `count` matrices held in `buffers` (indexed as [`Buffer`]'s variants).
    fn model(call: &Call, count: usize, buffers: &mut [Vec<f32>; 4]) {
        let index = |b: Buffer| b as usize;
        match *call {
            Call::Copy { dst, src, elements } => {
                let from = buffers[index(src)][..elements].to_vec();
                buffers[index(dst)][..elements].copy_from_slice(&from);
            }
            Call::Gemm {
                transpose: (ta, tb),
                mnk: (m, n, k),
                alpha,
                a,
                b,
                beta,
                c,
            } => {
                assert!(c.buffer != a.buffer && c.buffer != b.buffer, "no aliasing");
                for i in 0..count {
                    let (ab, bb) = (&buffers[index(a.buffer)], &buffers[index(b.buffer)]);
                    let at = |r: usize, q: usize| match ta {
                        false => ab[i * a.stride + r + q * a.ld],
                        true => ab[i * a.stride + q + r * a.ld],
                    };
                    let bt = |r: usize, q: usize| match tb {
                        false => bb[i * b.stride + r + q * b.ld],
                        true => bb[i * b.stride + q + r * b.ld],
                    };
                    let mut out = Vec::with_capacity(m * n);
                    for col in 0..n {
                        for row in 0..m {
                            let sum: f32 = (0..k).map(|q| at(row, q) * bt(q, col)).sum();
                            out.push((row, col, sum));
                        }
                    }
                    let cb = &mut buffers[index(c.buffer)];
                    for (row, col, sum) in out {
                        let slot = &mut cb[i * c.stride + row + col * c.ld];
                        // cuBLAS does not read `c` when `beta` is zero.
                        let kept = if beta == 0.0 { 0.0 } else { beta * *slot };
                        *slot = round(alpha * sum + kept);
                    }
                }
            }
        }
    }

    /// Two matrices of each shape, zero-padded to multiples of 8 as the matrix stage
    /// gathers them, normalized as the reference does: the calls of five steps
    /// ([`iteration`], the result copied back into `X`), run through the model, land
    /// within a cosine of 0.9999 of the CPU reference, and the padding stays zero.
    #[test]
    fn the_calls_follow_the_reference() {
        // Muon's five steps, and four: the result lands in `X` either way.
        for ns in [
            NewtonSchulz::MUON,
            NewtonSchulz {
                steps: 4,
                ..NewtonSchulz::MUON
            },
        ] {
            calls_follow_the_reference(&ns);
        }
    }

    fn calls_follow_the_reference(ns: &NewtonSchulz) {
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.04
        };
        for (rows, cols) in [(6usize, 40usize), (16, 16), (5, 13), (1, 9)] {
            let (m, n) = (rows.next_multiple_of(8), cols.next_multiple_of(8));
            let count = 2;
            let inputs: Vec<Vec<f32>> = (0..count)
                .map(|_| (0..rows * cols).map(|_| round(next())).collect())
                .collect();
            let mut x = vec![0.0f32; count * m * n];
            for (b, values) in inputs.iter().enumerate() {
                let norm = round(
                    values
                        .iter()
                        .map(|v| f64::from(*v).powi(2))
                        .sum::<f64>()
                        .sqrt() as f32,
                );
                let scale = norm.max(round(ns.eps));
                for i in 0..rows {
                    for j in 0..cols {
                        x[b * m * n + i * n + j] = round(values[i * cols + j] / scale);
                    }
                }
            }
            let mut buffers = [
                x,
                vec![f32::NAN; count * m * n],
                vec![f32::NAN; count * m * m],
                vec![f32::NAN; count * m * m],
            ];
            for call in &iteration(count, (m, n), ns) {
                model(call, count, &mut buffers);
            }
            for (b, values) in inputs.iter().enumerate() {
                let expected = orthogonalize(values, rows, cols, ns, MatrixPrecision::Bf16);
                let got = &buffers[Buffer::X as usize][b * m * n..(b + 1) * m * n];
                let mut dot = 0.0f64;
                let (mut nn, mut ee) = (0.0f64, 0.0f64);
                for i in 0..m {
                    for j in 0..n {
                        let g = f64::from(got[i * n + j]);
                        if i < rows && j < cols {
                            let e = f64::from(expected[i * cols + j]);
                            dot += g * e;
                            nn += g * g;
                            ee += e * e;
                        } else {
                            assert_eq!(g, 0.0, "{rows}x{cols}: padding at ({i}, {j})");
                        }
                    }
                }
                let cosine = dot / (nn * ee).sqrt();
                assert!(cosine > 0.9999, "{rows}x{cols} matrix {b}: cosine {cosine}");
            }
        }
    }
}
