//! What can go wrong when building or stepping an optimizer.

use flashopt_ir::interp::InterpError;
use flashopt_ir::{CompileError, HostEvalError, HyperError};

/// [`RuntimeError::RowsAndColumns`] where `plan` keeps or computes values per row or
/// per column, which `place` (a back end, sharding) does not support yet.
pub fn refuse_rows_and_columns(
    plan: &flashopt_ir::Plan,
    place: &'static str,
) -> Result<(), RuntimeError> {
    refuse(plan, place, plan.rows_and_columns())
}

/// [`RuntimeError::MatrixFunctions`] where `plan` sees each tensor as a whole matrix
/// (a matrix function, `rows`, `cols`), which `place` does not support yet.
pub fn refuse_matrix_functions(
    plan: &flashopt_ir::Plan,
    place: &'static str,
) -> Result<(), RuntimeError> {
    match plan.matrix_functions() {
        Some(what) => Err(RuntimeError::MatrixFunctions {
            optimizer: plan.optimizer.clone(),
            what,
            place,
        }),
        None => Ok(()),
    }
}

fn refuse(
    plan: &flashopt_ir::Plan,
    place: &'static str,
    what: Option<String>,
) -> Result<(), RuntimeError> {
    match what {
        Some(what) => Err(RuntimeError::RowsAndColumns {
            optimizer: plan.optimizer.clone(),
            what,
            place,
        }),
        None => Ok(()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Hyper(#[from] HyperError),
    #[error(transparent)]
    Plan(#[from] flashopt_ir::verify::VerifyError),
    #[error("host scalars of step {step}: {source}")]
    HostScalars { step: u64, source: HostEvalError },
    #[error("tensor `{name}`: {source}")]
    Tensor { name: String, source: InterpError },
    #[error("tensor `{name}`: parameter group {group} does not exist ({groups} group(s))")]
    ParamGroup {
        name: String,
        group: usize,
        groups: usize,
    },
    #[error(
        "`{optimizer}` names no learning rate: mark one f32 hyper-parameter `#[flashopt(learning_rate)]` (OptimizerDef::learning_rate)"
    )]
    NoLearningRate { optimizer: String },
    #[error(
        "`{optimizer}` declares no minimum step: give it `#[flashopt(min_step = ..)]` or pass one to check_numerics_with"
    )]
    NoMinStep { optimizer: String },
    #[error("a tensor named `{0}` is already registered")]
    DuplicateName(String),
    #[error("tensor `{0}` is empty: register tensors with at least one element")]
    EmptyTensor(String),
    #[error(
        "tensor `{name}`: dimensions {dims:?} hold {product} elements, but {len} values were given; nothing was registered"
    )]
    ShapeMismatch {
        name: String,
        dims: Vec<usize>,
        product: usize,
        len: usize,
    },
    #[error(
        "`{optimizer}` keeps or computes values per row or per column ({what}), which {place} does not support yet: step it with CpuOptimizer"
    )]
    RowsAndColumns {
        optimizer: String,
        what: String,
        place: &'static str,
    },
    #[error(
        "`{optimizer}` computes with each tensor's whole matrix ({what}), which {place} does not support yet: step it with CpuOptimizer"
    )]
    MatrixFunctions {
        optimizer: String,
        what: String,
        place: &'static str,
    },
    #[error(
        "tensor `{name}`: rows of {row_len} elements, and `{optimizer}` keeps or computes values per row or column, which {place} supports where every row starts a 32-element group (a row length that is a multiple of 32, or a tensor of one row): step it with CpuOptimizer"
    )]
    RowsAcrossGroups {
        name: String,
        row_len: usize,
        optimizer: String,
        place: &'static str,
    },
    #[error(
        "tensor `{name}`: initial value {value} at index {index} is not finite ({count} non-finite value(s)); nothing was registered"
    )]
    NonFiniteInitial {
        name: String,
        index: usize,
        value: f32,
        count: usize,
    },
    #[error(
        "step got {found} gradient(s) for {expected} tensor(s); pass one per tensor, in registration order"
    )]
    GradCount { expected: usize, found: usize },
    #[error(
        "got {found} tensor(s) for {expected} registered; pass one per tensor, in registration order"
    )]
    TensorCount { expected: usize, found: usize },
    #[error("tensor `{name}`: {found} elements, expected {expected} (its registered length)")]
    TensorLength {
        name: String,
        expected: usize,
        found: usize,
    },
    #[error(
        "tensor `{name}`: {found} (rows x row length), expected {expected} (its registered shape): the plan keeps values per row or per column"
    )]
    TensorShape {
        name: String,
        expected: flashopt_ir::layout::Shape,
        found: flashopt_ir::layout::Shape,
    },
    #[error("gradient clipping: max_norm must be positive and finite, got {0}")]
    MaxNorm(f64),
    #[error(
        "gradient clipping needs the norm of the whole step: use step(), not step_tensor() (gradient release)"
    )]
    ClipNeedsWholeStep,
    #[error("a sharded optimizer steps every tensor at once: use step(), not one tensor at a time")]
    ShardedTensorStep,
    #[error(
        "`{optimizer}` reduces over each tensor ({reductions}), which ZeRO-1 sharding on GPU ranks does not support yet (a tensor's pieces lie on several ranks; CPU ranks gather them): use one optimizer per rank"
    )]
    ShardedReductions {
        optimizer: String,
        reductions: String,
    },
    #[error(
        "{ranks} other rank(s) refused their gradients (their errors name the tensor); no rank stepped"
    )]
    PeerRefused { ranks: usize },
    #[error(
        "{ranks} other rank(s) could not build their optimizer (their errors say why); no rank did"
    )]
    PeerFailed { ranks: usize },
    #[error(
        "rank {rank} of {world} shards other tensors or another plan than rank 0: every rank must pass the same plan and the same tensor names and lengths, in the same order"
    )]
    RankDisagreement { rank: usize, world: usize },
    #[error("collective: {0}")]
    Collective(String),
    #[error(
        "step() reads the gradient buffer, which was released (release_grad_buffer): use step_with_grads, or write gradients first (write_grads, copy_grad_from)"
    )]
    NoGradBuffer,
    #[error("this optimizer cannot read a step's gradients from {0}")]
    GradSource(&'static str),
    #[error("parameter group {group} does not exist ({groups} group(s))")]
    UnknownGroup { group: usize, groups: usize },
    #[error("tensor id {id} does not exist ({tensors} tensor(s))")]
    UnknownTensor { id: usize, tensors: usize },
    #[error(
        "tensor `{name}`: the source buffer has {bytes} bytes, the gradient needs {needed} ({len} x {dtype})"
    )]
    SourceTooSmall {
        name: String,
        bytes: u64,
        needed: u64,
        dtype: String,
        len: usize,
    },
}

impl RuntimeError {
    /// For `map_err`: a tensor check's error, naming the tensor.
    pub fn in_tensor(name: &str) -> impl FnOnce(InterpError) -> RuntimeError + '_ {
        move |source| RuntimeError::Tensor {
            name: name.to_string(),
            source,
        }
    }
}
