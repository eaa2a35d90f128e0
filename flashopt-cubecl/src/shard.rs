//! [`ShardedGpuOptimizer`]: one rank of a ZeRO-1 optimizer on a CUDA GPU, its
//! collectives through NCCL.
//!
//! The rank's pieces are an ordinary [`GpuOptimizer`] whose parameter binding is a
//! view of the rank's block of the whole model's parameter buffer and whose gradient
//! binding is the reduce-scatter's output: the fused kernel and its launch are the
//! single-GPU ones. A step: reduce-scatter the whole gradient buffer (NCCL, in the
//! gradient dtype), the block's sum of squares (the device reduction), one all-reduce
//! of that number (a non-finite sum skips the step on every rank; its square root is
//! the global norm for clipping), the fused launch, an in-place all-gather of the
//! parameters. The ordering with cubecl's stream is [`crate::device::nccl`]'s.

use std::borrow::Cow;
use std::path::Path;

use flashopt_ir::interp::{GradBuf, HostTensor, PartData};
use flashopt_ir::{Extent, GROUP_SIZE, HyperValues, Plan, Role};
use flashopt_runtime::checkpoint::CheckpointError;
use flashopt_runtime::core::{Core, Optimizer, TensorId, TensorInfo, check_tensors};
use flashopt_runtime::error::RuntimeError;
use flashopt_runtime::numerics::{NonFinite, StepOutcome};
use flashopt_runtime::segments::{Segment, segments};
use flashopt_runtime::shard::Reduction;
use flashopt_runtime::shard::checkpoint::{self, CheckpointedRank};
use flashopt_runtime::shard::layout::{self, Piece, ShardLayout};
use flashopt_runtime::step::{self, GradSource, Inspection, Scope, Stepper};

use crate::cubecl::client::ComputeClient;
use crate::cubecl::cuda::CudaRuntime;
use crate::cubecl::server::Handle;
use crate::device::nccl::Communicator;
use crate::device::transfer::{self, HostTransfers};
use crate::optimizer::GpuOptimizer;
use crate::optimizer::layout::FlatPart;

/// One rank of a sharded optimizer on a CUDA device (see the module's documentation).
pub struct ShardedGpuOptimizer {
    pieces_opt: GpuOptimizer<CudaRuntime>,
    comm: Communicator,
    tensors: Vec<TensorInfo>,
    segments: Vec<Segment>,
    layout: ShardLayout,
    pieces: Vec<Piece>,
    /// The whole model's parameters and gradients, padded to `world` equal blocks.
    params: Handle,
    grads: Handle,
    block_grads: Handle,
    reduction: Reduction,
}

impl ShardedGpuOptimizer {
    /// This rank's optimizer for whole tensors (every rank passes the same ones, in the
    /// same order), on the device of `client`, joined to the others through `comm`.
    pub fn from_host(
        client: ComputeClient<CudaRuntime>,
        plan: Plan,
        hyper: HyperValues,
        tensors: Vec<(String, HostTensor)>,
        comm: Communicator,
    ) -> Result<ShardedGpuOptimizer, RuntimeError> {
        // The checks every rank makes, then one meeting: ranks that disagree on the
        // plan or the tensors, or one whose input is refused, fail together here
        // instead of hanging in NCCL or summing mismatched blocks.
        let local = flashopt_ir::verify::verify(&plan)
            .map_err(RuntimeError::from)
            .and_then(|()| check_tensors(&plan, tensors.iter().map(|(n, t)| (n.as_str(), t))));
        let fingerprint = flashopt_runtime::shard::layout_fingerprint(
            &plan,
            tensors.iter().map(|(n, t)| (n.as_str(), t.len())),
        );
        flashopt_runtime::shard::agree(comm.rank(), comm.world(), fingerprint, local, |slots| {
            comm.all_reduce_f64(slots).map_err(collective_error)
        })?;
        let infos: Vec<TensorInfo> = tensors
            .iter()
            .map(|(name, t)| TensorInfo {
                name: name.clone(),
                param_group: 0,
                len: t.len(),
            })
            .collect();
        let (segments, groups) = segments(&infos);
        let layout = ShardLayout::new(groups, comm.world());
        let pieces = layout.pieces(comm.rank(), &segments);
        let cut: Vec<(String, HostTensor)> = pieces
            .iter()
            .map(|p| {
                let (name, whole) = &tensors[p.tensor];
                (
                    format!("{name}@{}", p.elements.start),
                    layout::cut(&plan, whole, p),
                )
            })
            .collect();
        let param_storage = plan.part(plan.part_with_role(Role::Param)).storage;
        let grad_bytes = plan.config.grad.size_bytes();
        let padded = comm.world() * layout.block_elements();
        let params = Self::upload_params(
            &client,
            param_storage,
            tensors.iter().map(|(_, t)| t.param()),
            &segments,
            padded,
        );
        let grads = transfer::filled(&client, padded * grad_bytes, 0);
        let block_grads = transfer::filled(&client, layout.block_elements() * grad_bytes, 0);
        let pieces_opt = GpuOptimizer::from_host(client, plan, hyper, cut)?;
        let mut opt = ShardedGpuOptimizer {
            pieces_opt,
            comm,
            tensors: infos,
            segments,
            layout,
            pieces,
            params,
            grads,
            block_grads,
            reduction: Reduction::Sum,
        };
        opt.bind_views();
        Ok(opt)
    }

    /// Bind the pieces' optimizer to this rank's block of the whole parameter buffer
    /// and to the reduce-scatter's output.
    fn bind_views(&mut self) {
        let size = self.param_storage().size_bytes();
        let block_start = self.layout.block(self.comm.rank()).start * GROUP_SIZE;
        let count = self.layout.block_elements();
        let block_params = self
            .params
            .clone()
            .offset_start((block_start * size) as u64);
        self.pieces_opt.rebind(Role::Param, block_params, count);
        self.pieces_opt
            .rebind(Role::Gradient, self.block_grads.clone(), count);
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
        upload_padded(client, &flat, padded * storage.size_bytes())
    }

    /// Save this rank's pieces into the folder `dir` (every rank calls it with the
    /// same folder): the files of [`flashopt_runtime::shard::checkpoint`], which CPU and GPU
    /// ranks of any world size read. Returns this rank's file size.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<u64, CheckpointError> {
        checkpoint::save(self, dir.as_ref())
    }

    /// Restore a sharded checkpoint of any world size (every rank calls it); on any
    /// rank's error nothing changes on any rank. The parameter buffer is a fresh
    /// one: take [`Self::param_handle`]s again.
    pub fn load(&mut self, dir: impl AsRef<Path>) -> Result<(), CheckpointError> {
        checkpoint::load(self, dir.as_ref())
    }

    pub fn set_reduction(&mut self, reduction: Reduction) {
        self.reduction = reduction;
    }

    /// Clip the global gradient norm (over every rank) of later steps, or stop.
    pub fn set_grad_clipping(&mut self, max_norm: Option<f64>) -> Result<(), RuntimeError> {
        self.pieces_opt.set_grad_clipping(max_norm)
    }

    /// Set the learning rate (the hyper-parameter the definition names) of later
    /// steps; every rank sets the same.
    pub fn set_learning_rate(&mut self, lr: f64) -> Result<(), RuntimeError> {
        self.pieces_opt.set_learning_rate(lr)
    }

    /// The learning rate of the next step.
    pub fn learning_rate(&self) -> Result<f64, RuntimeError> {
        self.pieces_opt.learning_rate(0)
    }

    /// The global gradient norm of the last step (every rank's, combined).
    pub fn last_grad_norm(&self) -> Option<f64> {
        self.pieces_opt.last_grad_norm()
    }

    /// This rank's gradients (one per whole tensor, in order) from the host into the
    /// whole gradient buffer. Trainers whose gradients are on the device write them
    /// through [`Self::grad_handle`] instead.
    pub fn write_grads(&mut self, grads: &[GradBuf<'_>]) -> Result<(), RuntimeError> {
        let plan = self.pieces_opt.plan();
        step::check_host_grads(plan, &self.tensors, grads)?;
        let size = plan.config.grad.size_bytes();
        let flat = FlatPart::new(
            grads.iter().map(|g| g.as_part()),
            &self.segments,
            Extent::Element,
            size,
            0,
        );
        let padded = self.comm.world() * self.layout.block_elements() * size;
        self.grads = upload_padded(self.pieces_opt.client(), &flat, padded);
        Ok(())
    }

    /// A whole tensor's gradient in the buffer the next step reduces (its first
    /// `len` values, in the plan's gradient dtype).
    pub fn grad_handle(&self, id: TensorId) -> Result<Handle, RuntimeError> {
        let size = self.pieces_opt.plan().config.grad.size_bytes();
        let start = self.segment(id)?.elements().start;
        Ok(self.grads.clone().offset_start((start * size) as u64))
    }

    /// A whole tensor's parameters, which every step updates in place (on every rank).
    pub fn param_handle(&self, id: TensorId) -> Result<Handle, RuntimeError> {
        let size = self.param_storage().size_bytes();
        let start = self.segment(id)?.elements().start;
        Ok(self.params.clone().offset_start((start * size) as u64))
    }

    fn segment(&self, id: TensorId) -> Result<&Segment, RuntimeError> {
        self.segments.get(id.0).ok_or(RuntimeError::UnknownTensor {
            id: id.0,
            tensors: self.segments.len(),
        })
    }

    fn param_storage(&self) -> flashopt_ir::Storage {
        let plan = self.pieces_opt.plan();
        plan.part(plan.part_with_role(Role::Param)).storage
    }

    /// One step of every rank (each calls it; see the module's documentation).
    pub fn step(&mut self) -> Result<StepOutcome, RuntimeError> {
        step::step(self, Scope::All, GradSource::Flat)
    }

    /// A non-finite value found in a piece, named by its whole tensor.
    fn in_whole_tensor(&self, found: Option<NonFinite>) -> NonFinite {
        let Some(mut found) = found else {
            return NonFinite {
                // On another rank.
                tensor: String::new(),
                index: 0,
                value: f32::NAN,
                count: 0,
            };
        };
        let piece = (0..self.pieces.len()).find(|&i| {
            self.pieces_opt
                .tensor_info(TensorId(i))
                .is_ok_and(|t| t.name == found.tensor)
        });
        if let Some(p) = piece.map(|i| &self.pieces[i]) {
            found.tensor = self.tensors[p.tensor].name.clone();
            found.index += p.elements.start;
        }
        found
    }

    /// Every whole tensor's parameters, read back.
    pub fn download_params(&self) -> Vec<PartData> {
        crate::optimizer::layout::per_tensor(self.param_storage(), &self.segments, |targets| {
            transfer::download_into(self.pieces_opt.client(), &self.params, targets)
        })
    }

    /// This rank's pieces and their state (parameter and states), read back.
    pub fn download_shard(&self) -> Vec<(Piece, HostTensor)> {
        let tensors = self.pieces_opt.download_tensors();
        self.pieces.iter().cloned().zip(tensors).collect()
    }

    pub fn steps_taken(&self) -> u64 {
        self.pieces_opt.steps_taken()
    }

    pub fn layout(&self) -> &ShardLayout {
        &self.layout
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn rank(&self) -> usize {
        self.comm.rank()
    }
}

impl CheckpointedRank for ShardedGpuOptimizer {
    fn rank(&self) -> usize {
        self.comm.rank()
    }

    fn world(&self) -> usize {
        self.comm.world()
    }

    fn plan(&self) -> &Plan {
        self.pieces_opt.plan()
    }

    fn hyper(&self) -> &[HyperValues] {
        self.pieces_opt.core().hyper()
    }

    fn steps_taken(&self) -> u64 {
        self.pieces_opt.steps_taken()
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    fn shard_state(&self) -> Cow<'_, [HostTensor]> {
        Cow::Owned(self.pieces_opt.download_tensors())
    }

    fn all_reduce(&self, values: &mut [f64]) -> Result<(), CheckpointError> {
        self.comm
            .all_reduce_f64(values)
            .map_err(|e| CheckpointError::Collective {
                message: e.to_string(),
            })
    }

    fn restore(&mut self, whole: Vec<HostTensor>, steps_taken: u64, hyper: Vec<HyperValues>) {
        let plan = self.pieces_opt.plan().clone();
        let cut = self
            .pieces
            .iter()
            .map(|p| layout::cut(&plan, &whole[p.tensor], p));
        self.pieces_opt
            .replace_tensors(cut.collect())
            .expect("pieces cut from checked whole tensors fit the pieces' optimizer");
        let padded = self.comm.world() * self.layout.block_elements();
        let client = self.pieces_opt.client().clone();
        let params = whole.iter().map(|t| t.param());
        self.params = Self::upload_params(
            &client,
            self.param_storage(),
            params,
            &self.segments,
            padded,
        );
        self.bind_views();
        self.pieces_opt.core_mut().restore(hyper, steps_taken);
    }
}

/// A device buffer of `len` bytes: `flat`'s bytes, then zeros.
fn upload_padded(client: &ComputeClient<CudaRuntime>, flat: &FlatPart<'_>, len: usize) -> Handle {
    let filled = flat.len();
    let fill = |offset: usize, out: &mut [u8]| {
        let end = offset + out.len();
        let head = filled.clamp(offset, end) - offset;
        if head > 0 {
            flat.write(offset, &mut out[..head]);
        }
        out[head..].fill(0);
    };
    CudaRuntime::upload(client, len, &fill)
}

fn collective_error(e: crate::device::nccl::NcclError) -> RuntimeError {
    RuntimeError::Collective(e.to_string())
}

/// A rank's side of the step protocol: the whole gradient buffer reduce-scattered to
/// the rank's block, the block's sum of squares all-reduced (a non-finite sum skips the
/// step on every rank), the pieces' fused launch, the parameters all-gathered.
impl Stepper for ShardedGpuOptimizer {
    type Buffer = Handle;
    type Bound<'g> = ();

    fn stepper_core(&self) -> &Core {
        self.pieces_opt.core()
    }

    fn stepper_core_mut(&mut self) -> &mut Core {
        self.pieces_opt.core_mut()
    }

    fn bind<'g>(
        &mut self,
        scope: Scope,
        grads: GradSource<'g, Handle>,
        _scalars: &[Vec<f32>],
    ) -> Result<(), RuntimeError> {
        if scope != Scope::All || !matches!(grads, GradSource::Flat) {
            return Err(grads.unsupported());
        }
        let client = self.pieces_opt.client().clone();
        let count = self.layout.block_elements();
        let grad_storage = flashopt_ir::Storage::from(self.pieces_opt.plan().config.grad);
        // SAFETY: the gradient buffer holds `world` blocks, the block buffer one.
        unsafe {
            self.comm.reduce_scatter(
                &client,
                grad_storage,
                &self.grads,
                &self.block_grads,
                count,
                self.reduction == Reduction::Mean,
            )
        }
        .map_err(collective_error)
    }

    fn inspect(&mut self, _: Scope, _: &mut (), _norm: bool) -> Result<Inspection, RuntimeError> {
        let local = self.pieces_opt.grad_square_sum();
        let mut global = [local];
        self.comm
            .all_reduce_f64(&mut global)
            .map_err(collective_error)?;
        if global[0].is_finite() {
            return Ok(Inspection::Finite {
                square_sum: Some(global[0]),
            });
        }
        let found = match local.is_finite() {
            true => None,
            false => self.pieces_opt.locate_non_finite(),
        };
        Ok(Inspection::NonFinite(self.in_whole_tensor(found)))
    }

    fn apply(&mut self, _: Scope, _: (), scalars: &[Vec<f32>]) -> Result<(), RuntimeError> {
        self.pieces_opt.launch_all(scalars);
        let client = self.pieces_opt.client().clone();
        let count = self.layout.block_elements();
        // SAFETY: the parameter buffer holds `world` blocks.
        unsafe {
            self.comm
                .all_gather_in_place(&client, self.param_storage(), &self.params, count)
        }
        .map_err(collective_error)
    }
}
