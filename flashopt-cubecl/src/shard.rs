//! [`ShardedGpuOptimizer`]: one rank of a ZeRO-1 optimizer on a CUDA GPU, a
//! [`ShardedOptimizer`] (the runtime's rank protocol, checkpoints and agreement) over
//! [`NcclRank`]: device buffers and NCCL.
//!
//! The rank's pieces are an ordinary [`GpuOptimizer`] whose parameter binding is a
//! view of the rank's block of the whole model's parameter buffer and whose gradient
//! binding is the reduce-scatter's output: the fused kernel and its launch are the
//! single-GPU ones. A step: reduce-scatter the whole gradient buffer (NCCL, in f32 as
//! the CPU rank: widened, summed, rounded once), the block's sum of squares (the device reduction), one all-reduce
//! of that number (a non-finite sum skips the step on every rank; its square root is
//! the global norm for clipping), the fused launch, an in-place all-gather of the
//! parameters. The ordering with cubecl's stream is [`crate::device::nccl`]'s.

use std::borrow::Cow;
use std::ops::{Deref, DerefMut};

use flashopt_ir::interp::{GradBuf, HostTensor, PartData};
use flashopt_ir::layout::Shape;
use flashopt_ir::{Extent, GROUP_SIZE, HyperValues, Plan, Role, Storage};
use flashopt_runtime::core::{Optimizer, TensorId, check_tensors};
use flashopt_runtime::error::RuntimeError;
use flashopt_runtime::numerics::{NonFinite, StepOutcome};
use flashopt_runtime::segments::Segment;
use flashopt_runtime::shard::layout;
use flashopt_runtime::shard::{Agreement, RankBackend, Reduction, ShardedOptimizer, Sharding};
use flashopt_runtime::step::{self, GradSource};

use crate::cubecl::client::ComputeClient;
use crate::cubecl::cuda::CudaRuntime;
use crate::cubecl::server::Handle;
use crate::device::copy;
use crate::device::nccl::Communicator;
use crate::device::transfer::{self, HostTransfers};
use crate::optimizer::GpuOptimizer;
use crate::optimizer::layout::FlatPart;

/// One rank of a sharded optimizer on a CUDA device (see the module's documentation).
/// Everything but its device buffers is the runtime's [`ShardedOptimizer`], which it
/// dereferences to (stepping settings, checkpoints, the layout).
pub struct ShardedGpuOptimizer(ShardedOptimizer<NcclRank>);

/// A rank's device buffers and its NCCL communicator.
pub struct NcclRank {
    pieces_opt: GpuOptimizer<CudaRuntime>,
    comm: Communicator,
    sharding: Sharding,
    /// The whole model's parameters and gradients, padded to `world` equal blocks.
    params: Handle,
    grads: Handle,
    block_grads: Handle,
    /// The f32 reduce-scatter's input (one chunk of every rank's block, widened) and
    /// output (the chunk's sum over ranks).
    staging: Handle,
    reduced: Handle,
}

/// Elements of a block reduced per NCCL call: bounds the f32 staging buffers (the
/// input holds `world` chunks) whatever the model's size.
const REDUCE_CHUNK: usize = 1 << 22;

impl Deref for ShardedGpuOptimizer {
    type Target = ShardedOptimizer<NcclRank>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for ShardedGpuOptimizer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Agreement for Communicator {
    fn rank(&self) -> usize {
        Communicator::rank(self)
    }

    fn world(&self) -> usize {
        Communicator::world(self)
    }

    fn all_reduce_f64(&self, values: &mut [f64]) -> Result<(), RuntimeError> {
        Communicator::all_reduce_f64(self, values).map_err(collective_error)
    }
}

impl ShardedGpuOptimizer {
    /// This rank's optimizer for whole tensors (every rank passes the same ones, in the
    /// same order), on the device of `client`, joined to the others through `comm`.
    /// Ranks that disagree on the plan or the tensors, or one whose input is refused,
    /// fail together ([`ShardedOptimizer::build`]).
    pub fn from_host(
        client: ComputeClient<CudaRuntime>,
        plan: Plan,
        hyper: HyperValues,
        tensors: Vec<(String, HostTensor)>,
        comm: Communicator,
    ) -> Result<ShardedGpuOptimizer, RuntimeError> {
        let shapes: Vec<(String, Shape)> = tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.shape()))
            .collect();
        let shapes: Vec<(&str, Shape)> = shapes.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        let check = move |plan: &Plan| {
            flashopt_ir::verify::verify(plan)?;
            check_tensors(plan, tensors.iter().map(|(n, t)| (n.as_str(), t)))?;
            Ok(tensors)
        };
        let pieces_hyper = hyper.clone();
        let make = |plan: &Plan, sharding: &Sharding, tensors, comm| {
            NcclRank::new(client, plan, pieces_hyper, sharding, tensors, comm)
        };
        ShardedOptimizer::build(plan, hyper, &shapes, comm, check, make).map(ShardedGpuOptimizer)
    }

    /// One step of every rank from the whole gradient buffer (each calls it; see the
    /// module's documentation).
    pub fn step(&mut self) -> Result<StepOutcome, RuntimeError> {
        self.0.step_from(GradSource::Flat)
    }

    /// This rank's gradients (one per whole tensor, in order) from the host into the
    /// whole gradient buffer. Trainers whose gradients are on the device write them
    /// through [`Self::grad_handle`] instead.
    pub fn write_grads(&mut self, grads: &[GradBuf<'_>]) -> Result<(), RuntimeError> {
        let tensors = self.0.tensors().to_vec();
        step::check_host_grads(self.0.plan(), &tensors, grads)?;
        self.0.backend_mut().upload_grads(grads);
        Ok(())
    }

    /// A whole tensor's gradient in the buffer the next step reduces (its first
    /// `len` values, in the plan's gradient dtype).
    pub fn grad_handle(&self, id: TensorId) -> Result<Handle, RuntimeError> {
        let rank = self.0.backend();
        let size = self.0.plan().config.grad.size_bytes();
        let start = rank.segment(id)?.elements().start;
        Ok(rank.grads.clone().offset_start((start * size) as u64))
    }

    /// A whole tensor's parameters, which every step updates in place (on every rank).
    pub fn param_handle(&self, id: TensorId) -> Result<Handle, RuntimeError> {
        let rank = self.0.backend();
        let size = rank.param_storage().size_bytes();
        let start = rank.segment(id)?.elements().start;
        Ok(rank.params.clone().offset_start((start * size) as u64))
    }

    /// Every whole tensor's parameters, read back.
    pub fn download_params(&self) -> Vec<PartData> {
        let rank = self.0.backend();
        crate::optimizer::layout::per_tensor(
            rank.param_storage(),
            &rank.sharding.segments,
            |targets| transfer::download_into(rank.pieces_opt.client(), &rank.params, targets),
        )
    }
}

impl NcclRank {
    fn new(
        client: ComputeClient<CudaRuntime>,
        plan: &Plan,
        hyper: HyperValues,
        sharding: &Sharding,
        tensors: Vec<(String, HostTensor)>,
        comm: Communicator,
    ) -> Result<NcclRank, RuntimeError> {
        let cut: Vec<(String, HostTensor)> = sharding
            .pieces
            .iter()
            .map(|p| {
                let (name, whole) = &tensors[p.tensor];
                (p.name(name), layout::cut(plan, whole, p))
            })
            .collect();
        let param_storage = plan.part(plan.part_with_role(Role::Param)).storage;
        let grad_bytes = plan.config.grad.size_bytes();
        let padded = comm.world() * sharding.layout.block_elements();
        let params = upload_params(
            &client,
            param_storage,
            tensors.iter().map(|(_, t)| t.param()),
            &sharding.segments,
            padded,
        );
        let grads = transfer::filled(&client, padded * grad_bytes, 0);
        let block_grads =
            transfer::filled(&client, sharding.layout.block_elements() * grad_bytes, 0);
        let chunk = REDUCE_CHUNK.min(sharding.layout.block_elements());
        let staging = transfer::filled(&client, comm.world() * chunk * 4, 0);
        let reduced = transfer::filled(&client, chunk * 4, 0);
        let pieces_opt = GpuOptimizer::from_host(client, plan.clone(), hyper, cut)?;
        let mut rank = NcclRank {
            pieces_opt,
            comm,
            sharding: sharding.clone(),
            params,
            grads,
            block_grads,
            staging,
            reduced,
        };
        rank.bind_views();
        Ok(rank)
    }

    /// Bind the pieces' optimizer to this rank's block of the whole parameter buffer
    /// and to the reduce-scatter's output.
    fn bind_views(&mut self) {
        let size = self.param_storage().size_bytes();
        let layout = &self.sharding.layout;
        let block_start = layout.block(self.comm.rank()).start * GROUP_SIZE;
        let count = layout.block_elements();
        let block_params = self
            .params
            .clone()
            .offset_start((block_start * size) as u64);
        self.pieces_opt.rebind(Role::Param, block_params, count);
        self.pieces_opt
            .rebind(Role::Gradient, self.block_grads.clone(), count);
    }

    /// The whole gradient buffer from host gradients (one per whole tensor, checked).
    fn upload_grads(&mut self, grads: &[GradBuf<'_>]) {
        let size = self.pieces_opt.plan().config.grad.size_bytes();
        let flat = FlatPart::new(
            grads.iter().map(|g| g.as_part()),
            &self.sharding.segments,
            Extent::Element,
            size,
            0,
        );
        // Into the buffer itself, so that `grad_handle`'s views stay valid.
        CudaRuntime::upload_into(
            self.pieces_opt.client(),
            &self.grads,
            self.whole_grad_elements() * size,
            &then_zeros(&flat),
        );
    }

    /// The elements of the whole gradient buffer: `world` blocks.
    fn whole_grad_elements(&self) -> usize {
        self.comm.world() * self.sharding.layout.block_elements()
    }

    fn segment(&self, id: TensorId) -> Result<&Segment, RuntimeError> {
        let segments = &self.sharding.segments;
        segments.get(id.0).ok_or(RuntimeError::UnknownTensor {
            id: id.0,
            tensors: segments.len(),
        })
    }

    fn param_storage(&self) -> flashopt_ir::Storage {
        let plan = self.pieces_opt.plan();
        plan.part(plan.part_with_role(Role::Param)).storage
    }
}

/// The whole parameter buffer holding `params` (one per whole tensor), padded to
/// `world` blocks.
fn upload_params<'a>(
    client: &ComputeClient<CudaRuntime>,
    storage: flashopt_ir::Storage,
    params: impl IntoIterator<Item = &'a PartData>,
    segments: &[Segment],
    padded: usize,
) -> Handle {
    let parts = params.into_iter().map(|p| p.view());
    let flat = FlatPart::new(parts, segments, Extent::Element, storage.size_bytes(), 0);
    CudaRuntime::upload(client, padded * storage.size_bytes(), &then_zeros(&flat))
}

/// `flat`'s bytes, then zeros: the fill of a buffer longer than `flat`.
fn then_zeros<'a>(flat: &'a FlatPart<'_>) -> impl Fn(usize, &mut [u8]) + Sync + 'a {
    let filled = flat.len();
    move |offset: usize, out: &mut [u8]| {
        let end = offset + out.len();
        let head = filled.clamp(offset, end) - offset;
        if head > 0 {
            flat.write(offset, &mut out[..head]);
        }
        out[head..].fill(0);
    }
}

fn collective_error(e: crate::device::nccl::NcclError) -> RuntimeError {
    RuntimeError::Collective(e.to_string())
}

/// A rank's storage on the device: the whole gradient buffer reduce-scattered to the
/// rank's block by NCCL (in f32, chunk by chunk, rounded once), the block's sum of squares by the
/// device reduction, the pieces' fused launch, the parameters all-gathered in place.
impl RankBackend for NcclRank {
    type Buffer = Handle;
    type Link = Communicator;
    const TENSOR_REDUCTIONS: bool = false;
    // Its pieces' optimizer takes each whole piece with the tensor's shape
    // (`layout::cut`) and runs the matrix stage as one GPU optimizer does. Within a
    // block the pieces lie one after the other from its start (`layout::place` pads
    // only at a block's end), as the pieces' optimizer lays them out.
    const WHOLE_MATRICES: bool = true;

    fn link(&self) -> &Communicator {
        &self.comm
    }

    fn reduce_scatter(
        &mut self,
        grads: Option<GradSource<'_, Handle>>,
        reduction: Reduction,
    ) -> Result<(), RuntimeError> {
        match grads {
            Some(GradSource::Flat) => {}
            Some(GradSource::Host(host)) => self.upload_grads(host),
            Some(other @ GradSource::Device(_)) => return Err(other.unsupported()),
            // Refused: this rank contributes zeros, in the buffer `grad_handle`s view.
            None => {
                let len = self.whole_grad_elements();
                let dtype = self.pieces_opt.plan().config.grad;
                // SAFETY: the gradient buffer holds `world` blocks of `dtype`.
                unsafe { copy::zero_elements(self.pieces_opt.client(), dtype, &self.grads, 0, len) }
            }
        }
        let client = self.pieces_opt.client().clone();
        let dtype = self.pieces_opt.plan().config.grad;
        let (block, world) = (self.sharding.layout.block_elements(), self.comm.world());
        let divisor = match reduction {
            Reduction::Sum => 1.0,
            Reduction::Mean => world as f32,
        };
        // In f32, as the CPU rank: every rank's chunk widened, summed by NCCL in f32,
        // divided for the mean and rounded once to the gradient dtype. NCCL summing
        // bf16 itself would round at every hop of its ring.
        for start in (0..block).step_by(REDUCE_CHUNK) {
            let len = REDUCE_CHUNK.min(block - start);
            // SAFETY: the gradient buffer holds `world` blocks of `block` elements of
            // `dtype`, `start + len <= block`; the staging buffer holds `world` chunks
            // of REDUCE_CHUNK (at least `len`) f32s, `reduced` one, the block buffer
            // `block` elements.
            unsafe {
                copy::widen_chunks_f32(
                    &client,
                    dtype,
                    &self.grads,
                    &self.staging,
                    (block, world),
                    start,
                    len,
                );
                self.comm
                    .reduce_scatter(&client, Storage::F32, &self.staging, &self.reduced, len)
                    .map_err(collective_error)?;
                copy::narrow_from_f32(
                    &client,
                    dtype,
                    &self.reduced,
                    &self.block_grads,
                    start,
                    len,
                    divisor,
                );
            }
        }
        Ok(())
    }

    fn block_square_sum(&mut self) -> Result<f64, RuntimeError> {
        Ok(self.pieces_opt.grad_square_sum())
    }

    fn locate_non_finite(&mut self) -> Option<(usize, NonFinite)> {
        let found = self.pieces_opt.locate_non_finite()?;
        let piece = (0..self.sharding.pieces.len()).find(|&i| {
            self.pieces_opt
                .tensor_info(TensorId(i))
                .is_ok_and(|t| t.name == found.tensor)
        })?;
        Some((piece, found))
    }

    fn apply(&mut self, scalars: &[Vec<f32>]) -> Result<(), RuntimeError> {
        self.pieces_opt.launch_all(scalars);
        let client = self.pieces_opt.client().clone();
        let count = self.sharding.layout.block_elements();
        // SAFETY: the parameter buffer holds `world` blocks.
        unsafe {
            self.comm
                .all_gather_in_place(&client, self.param_storage(), &self.params, count)
        }
        .map_err(collective_error)
    }

    fn shard_state(&self) -> Cow<'_, [HostTensor]> {
        Cow::Owned(self.pieces_opt.download_tensors())
    }

    fn restore(&mut self, plan: &Plan, sharding: &Sharding, whole: &[HostTensor]) {
        let cut = sharding
            .pieces
            .iter()
            .map(|p| layout::cut(plan, &whole[p.tensor], p));
        self.pieces_opt
            .replace_tensors(cut.collect())
            .expect("pieces cut from checked whole tensors fit the pieces' optimizer");
        let padded = self.comm.world() * sharding.layout.block_elements();
        let client = self.pieces_opt.client().clone();
        let params = whole.iter().map(|t| t.param());
        self.params = upload_params(
            &client,
            self.param_storage(),
            params,
            &sharding.segments,
            padded,
        );
        self.bind_views();
    }
}
