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

/// The cubek-matmul routines [`product`] can launch, by name: cubek's default
/// (`simple_cmma`) first.
pub const STRATEGIES: [&str; 6] = [
    "simple_cmma",
    "simple_mma",
    "double_cyclic_mma",
    "ordered_double_mma",
    "specialized_tma_mma",
    "double_tma_mma",
];

/// Which of [`STRATEGIES`] [`product`] launches (process-wide; for measuring them).
static STRATEGY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Make [`product`] launch routine `name` of [`STRATEGIES`]; `false` for another name.
pub fn set_strategy(name: &str) -> bool {
    match STRATEGIES.iter().position(|&s| s == name) {
        Some(i) => {
            STRATEGY.store(i, std::sync::atomic::Ordering::Relaxed);
            true
        }
        None => false,
    }
}

fn strategy() -> Strategy {
    match STRATEGY.load(std::sync::atomic::Ordering::Relaxed) {
        1 => Strategy::SimpleCyclicMma(Default::default()),
        2 => Strategy::DoubleCyclicMma(Default::default()),
        3 => Strategy::OrderedDoubleMma(Default::default()),
        4 => Strategy::SpecializedTmaMma(Default::default()),
        5 => Strategy::DoubleTmaMma(Default::default()),
        _ => Strategy::SimpleCyclicCmma(Default::default()),
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
    let mut types = MatmulElems::from_globals(&MatmulGlobalElems {
        lhs: BF16,
        rhs: BF16,
        out: out_type,
    });
    launch_ref(
        &strategy(),
        client,
        InputBinding::new(lhs.binding::<R>(count), BF16),
        InputBinding::new(rhs.binding::<R>(count), BF16),
        out_binding,
        &mut types,
    )
    .map_err(|e| format!("a {} x {} x {} GEMM: {e:?}", lhs.rows, lhs.cols, rhs.cols))
}
