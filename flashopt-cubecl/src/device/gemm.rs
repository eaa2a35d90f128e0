//! Batched matrix products through cubek-matmul: bf16 operands, f32 accumulation,
//! bf16 or f32 results. An operand is a row-major buffer read as it is or as its
//! transpose (through strides, no copy).

use cubecl::ir::{ElemType, FloatKind, StorageType};
use cubecl::prelude::*;
use cubecl::server::Handle;
use cubecl::zspace::{Shape, Strides};
use cubek_matmul::definition::{MatmulElems, MatmulGlobalElems};
use cubek_matmul::launch::{Strategy, launch_ref};
use cubek_std::InputBinding;

/// The routines the matrix stage's products can run on, by name. The default,
/// `cublas`: the whole iteration on cuBLAS where the runtime is CUDA and libcublas
/// loads ([`super::blas`]; 2.5 times cubek's best on one 16384 x 16384 matrix, 2.4
/// times on GPT-2's, docs/GPU.md), else as `tma_or_ordered`. `tma_or_ordered`:
/// cubek-matmul's `specialized_tma_mma` (its fastest measured on an H100 and an
/// H200), or where it cannot set a product up (TMA needs 16-byte strides; no TMA
/// before Hopper, none on ROCm) `ordered_double_mma`. The others are cubek's
/// routines alone.
pub const STRATEGIES: [&str; 8] = [
    "cublas",
    "tma_or_ordered",
    "simple_cmma",
    "simple_mma",
    "double_cyclic_mma",
    "ordered_double_mma",
    "specialized_tma_mma",
    "double_tma_mma",
];

/// Which of [`STRATEGIES`] the matrix stage runs (process-wide).
static STRATEGY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Make the matrix stage run routine `name` of [`STRATEGIES`]; `false` for another name.
pub fn set_strategy(name: &str) -> bool {
    match STRATEGIES.iter().position(|&s| s == name) {
        Some(i) => {
            STRATEGY.store(i, std::sync::atomic::Ordering::Relaxed);
            true
        }
        None => false,
    }
}

/// Whether the chosen routine is cuBLAS (where the runtime has it).
pub fn prefers_cublas() -> bool {
    STRATEGY.load(std::sync::atomic::Ordering::Relaxed) == 0
}

/// The cubek-matmul routines to try, in order, until one sets the product up.
fn strategies() -> Vec<Strategy> {
    match STRATEGY.load(std::sync::atomic::Ordering::Relaxed) {
        0 | 1 => vec![
            Strategy::SpecializedTmaMma(Default::default()),
            Strategy::OrderedDoubleMma(Default::default()),
        ],
        2 => vec![Strategy::SimpleCyclicCmma(Default::default())],
        3 => vec![Strategy::SimpleCyclicMma(Default::default())],
        4 => vec![Strategy::DoubleCyclicMma(Default::default())],
        5 => vec![Strategy::OrderedDoubleMma(Default::default())],
        6 => vec![Strategy::SpecializedTmaMma(Default::default())],
        _ => vec![Strategy::DoubleTmaMma(Default::default())],
    }
}

const BF16: StorageType = StorageType::Scalar(ElemType::Float(FloatKind::BF16));
const F32: StorageType = StorageType::Scalar(ElemType::Float(FloatKind::F32));

/// The element type of a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Out {
    Bf16,
    F32,
}

/// One operand of every product of a batch: `count` matrices of `rows x cols`, one
/// after the other in `handle`, each stored row-major or (`transposed`) as the
/// row-major `cols x rows` matrix it is the transpose of.
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    pub handle: &'a Handle,
    pub rows: usize,
    pub cols: usize,
    pub transposed: bool,
}

impl<'a> Operand<'a> {
    pub fn new(handle: &'a Handle, rows: usize, cols: usize) -> Operand<'a> {
        Operand {
            handle,
            rows,
            cols,
            transposed: false,
        }
    }

    /// The transpose of `self`, read from the same buffer.
    pub fn t(self) -> Operand<'a> {
        Operand {
            rows: self.cols,
            cols: self.rows,
            transposed: !self.transposed,
            ..self
        }
    }

    fn binding<R: Runtime>(self, count: usize) -> TensorBinding<R> {
        let per = self.rows * self.cols;
        let strides = match self.transposed {
            false => [per, self.cols, 1],
            true => [per, 1, self.rows],
        };
        // SAFETY (of `product`'s caller): the buffer holds `count` such matrices.
        unsafe {
            TensorBinding::from_raw_parts(
                self.handle.clone(),
                Strides::new(&strides),
                Shape::new([count, self.rows, self.cols]),
            )
        }
    }
}

/// `out[b] = lhs[b] rhs[b]` for `b < count`: `out` row-major, of `out_type`.
///
/// # Safety
/// Each buffer must hold `count` of its matrices; `out` must not overlap an operand.
pub unsafe fn product<R: Runtime>(
    client: &ComputeClient<R>,
    lhs: Operand,
    rhs: Operand,
    out: &Handle,
    count: usize,
    out_type: Out,
) -> Result<(), String> {
    assert_eq!(lhs.cols, rhs.rows, "inner dimensions agree");
    let out_binding = Operand::new(out, lhs.rows, rhs.cols).binding::<R>(count);
    let out_type = match out_type {
        Out::Bf16 => BF16,
        Out::F32 => F32,
    };
    let mut refusals = Vec::new();
    for strategy in strategies() {
        let mut types = MatmulElems::from_globals(&MatmulGlobalElems {
            lhs: BF16,
            rhs: BF16,
            out: out_type,
        });
        // A refusal is a setup error: nothing was launched.
        match launch_ref(
            &strategy,
            client,
            InputBinding::new(lhs.binding::<R>(count), BF16),
            InputBinding::new(rhs.binding::<R>(count), BF16),
            out_binding.clone(),
            &mut types,
        ) {
            Ok(()) => return Ok(()),
            Err(e) => refusals.push(format!("{e:?}")),
        }
    }
    Err(format!(
        "a {} x {} x {} GEMM: {}",
        lhs.rows,
        lhs.cols,
        rhs.cols,
        refusals.join("; ")
    ))
}
