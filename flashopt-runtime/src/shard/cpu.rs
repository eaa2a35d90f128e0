//! [`ShardedCpuOptimizer`]: one rank of a ZeRO-1 optimizer on the CPU reference.

use flashopt_ir::interp::{self, GradBuf, HostTensor, PartData};
use flashopt_ir::{GROUP_SIZE, HyperValues, OptimizerSpec, Plan, PlanConfig};

use super::collective::Collective;
use super::layout::{self, Piece, ShardLayout};
use crate::clip;
use crate::core::{Core, TensorId, TensorInfo};
use crate::error::RuntimeError;
use crate::numerics::{self, NonFinite, StepOutcome};
use crate::raw;
use crate::segments::{Segment, segments};
use crate::step::{self, GradSource, Inspection, Scope, Stepper};

/// How the ranks' gradients combine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// Each rank's gradient is a part of the total: the step uses their sum.
    #[default]
    Sum,
    /// Each rank's gradient is a full estimate: the step uses their mean.
    Mean,
}

/// One rank of a sharded optimizer: every parameter (the narrow values the model
/// computes with), and the corrections, states and scales of this rank's block of
/// groups only. A step reduce-scatters the ranks' gradients, steps the block with the
/// plan's arithmetic, all-gathers the parameters, and decides skipping and clipping
/// from one small all-reduce, so every rank takes the same decision. Every rank calls
/// every method that takes a step or builds the optimizer, in the same order.
#[derive(Debug)]
pub struct ShardedCpuOptimizer<C: Collective> {
    pub(super) core: Core,
    pub(super) collective: C,
    segments: Vec<Segment>,
    layout: ShardLayout,
    reduction: Reduction,
    /// Every tensor's parameter part, on every rank.
    pub(super) params: Vec<PartData>,
    pub(super) pieces: Vec<Piece>,
    /// One per piece: the piece's parameter and states.
    pub(super) shard: Vec<HostTensor>,
}

impl<C: Collective> ShardedCpuOptimizer<C> {
    /// The rank's optimizer for named tensors with their initial f32 master weights
    /// (every rank passes the same tensors, in the same order).
    pub fn for_spec<S: OptimizerSpec>(
        spec: &S,
        config: PlanConfig,
        tensors: &[(&str, &[f32])],
        collective: C,
    ) -> Result<Self, RuntimeError> {
        let hyper = spec.hyper_values()?;
        Self::new(S::plan(config)?, hyper, tensors, collective)
    }

    /// As [`Self::for_spec`], from a plan and its hyper-parameter values.
    pub fn new(
        plan: Plan,
        hyper: HyperValues,
        tensors: &[(&str, &[f32])],
        collective: C,
    ) -> Result<Self, RuntimeError> {
        let (rank, world) = (collective.rank(), collective.world());
        let fingerprint =
            super::layout_fingerprint(&plan, tensors.iter().map(|(n, v)| (*n, v.len())));
        let local = Self::build(plan, hyper, tensors, rank, world);
        let (core, segments, layout, pieces, params, shard) =
            super::agree(rank, world, fingerprint, local, |slots| {
                collective.all_reduce_f64(slots);
                Ok(())
            })?;
        Ok(ShardedCpuOptimizer {
            core,
            collective,
            segments,
            layout,
            reduction: Reduction::Sum,
            params,
            pieces,
            shard,
        })
    }

    /// This rank's state, checked; [`Self::new`] makes the ranks agree on it.
    #[allow(clippy::type_complexity)]
    fn build(
        plan: Plan,
        hyper: HyperValues,
        tensors: &[(&str, &[f32])],
        rank: usize,
        world: usize,
    ) -> Result<
        (
            Core,
            Vec<Segment>,
            ShardLayout,
            Vec<Piece>,
            Vec<PartData>,
            Vec<HostTensor>,
        ),
        RuntimeError,
    > {
        let mut core = Core::new(plan, vec![hyper])?;
        for (name, values) in tensors {
            crate::core::check_initial_values(name, values)?;
            core.add(TensorInfo {
                name: name.to_string(),
                param_group: 0,
                len: values.len(),
            })?;
        }
        let (segments, groups) = segments(&core.tensors);
        let layout = ShardLayout::new(groups, world);
        let pieces = layout.pieces(rank, &segments);
        let mut params = Vec::with_capacity(tensors.len());
        let mut shard = Vec::with_capacity(pieces.len());
        let mut pieces_left = pieces.iter().peekable();
        for (i, (_, values)) in tensors.iter().enumerate() {
            let whole = HostTensor::from_f32(&core.plan, values);
            while let Some(p) = pieces_left.next_if(|p| p.tensor == i) {
                shard.push(layout::cut(&core.plan, &whole, p));
            }
            params.push(whole.parts.into_iter().next().expect("a parameter part"));
        }
        Ok((core, segments, layout, pieces, params, shard))
    }

    pub fn set_reduction(&mut self, reduction: Reduction) {
        self.reduction = reduction;
    }

    /// One step from this rank's gradients (one per tensor, in order). Gradients are
    /// summed (or averaged) across ranks as f32 and rounded to the plan's gradient
    /// dtype. If any rank's gradients do not fit, or the combined gradients hold NaN
    /// or infinity, no rank changes anything: the rank with the bad gradient gets its
    /// error, the others [`RuntimeError::PeerRefused`].
    pub fn step(&mut self, grads: &[GradBuf<'_>]) -> Result<StepOutcome, RuntimeError> {
        step::step(self, Scope::All, GradSource::Host(grads))
    }

    /// This rank's gradients against the tensors, before any collective (a rank that
    /// returned early would leave the others waiting).
    fn check_grads(&self, grads: &[GradBuf<'_>]) -> Result<(), RuntimeError> {
        step::check_host_grads(&self.core.plan, &self.core.tensors, grads)
    }

    /// Every rank's updated parameters, from every rank's block.
    fn gather_params(&mut self) {
        let storage = self.params.first().map(|p| p.storage());
        let Some(storage) = storage else { return };
        let size = storage.size_bytes();
        let mut send = vec![0u8; self.layout.block_elements() * size];
        for (p, t) in self.pieces.iter().zip(&self.shard) {
            let bytes = raw::part_bytes(t.param());
            let at = p.block_group * GROUP_SIZE * size;
            send[at..at + bytes.len()].copy_from_slice(&bytes);
        }
        let mut all = vec![0u8; send.len() * self.layout.world()];
        self.collective.all_gather_bytes(&send, &mut all);
        for (param, s) in self.params.iter_mut().zip(&self.segments) {
            let r = s.elements();
            *param = raw::part_data(storage, &all[r.start * size..r.end * size]);
        }
    }

    /// The parameter values the model computes with (every rank holds them all).
    pub fn param(&self, id: TensorId) -> Result<Vec<f32>, RuntimeError> {
        self.core.tensor(id)?;
        Ok(self.params[id.0]
            .to_f32()
            .expect("the parameter part holds floats"))
    }

    /// This rank's pieces of tensors and their storage (parameter and states).
    pub fn shard(&self) -> impl Iterator<Item = (&Piece, &HostTensor)> {
        self.pieces.iter().zip(&self.shard)
    }

    pub fn rank(&self) -> usize {
        self.collective.rank()
    }

    pub fn world(&self) -> usize {
        self.collective.world()
    }

    pub fn layout(&self) -> &ShardLayout {
        &self.layout
    }

    pub fn plan(&self) -> &Plan {
        &self.core.plan
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.core.tensors
    }

    pub fn steps_taken(&self) -> u64 {
        self.core.steps_taken
    }

    /// Clip the global gradient norm (over every rank's block) of later steps to
    /// `max_norm`, or stop with `None`.
    pub fn set_grad_clipping(&mut self, max_norm: Option<f64>) -> Result<(), RuntimeError> {
        self.core.set_grad_clipping(max_norm)
    }

    /// The global gradient norm of the last step (every rank's, combined).
    pub fn last_grad_norm(&self) -> Option<f64> {
        self.core.last_grad_norm
    }

    /// Set the learning rate (the hyper-parameter the definition names).
    pub fn set_learning_rate(&mut self, lr: f64) -> Result<(), RuntimeError> {
        self.core.set_learning_rate(lr)
    }
}

/// Whole tensors (what one unsharded optimizer holds) from the pieces of every rank
/// (each rank's [`ShardedCpuOptimizer::shard`], chained), which cover every element once.
pub fn assemble<'a>(
    plan: &Plan,
    tensors: &[TensorInfo],
    pieces: impl IntoIterator<Item = (&'a Piece, &'a HostTensor)>,
) -> Vec<HostTensor> {
    let mut whole: Vec<HostTensor> = tensors
        .iter()
        .map(|t| HostTensor::zeros(plan, t.len))
        .collect();
    for (piece, data) in pieces {
        layout::paste(plan, &mut whole[piece.tensor], piece, data);
    }
    whole
}

fn widen(grad: GradBuf<'_>, out: &mut [f32]) {
    match grad {
        GradBuf::Bf16(v) => out.iter_mut().zip(v).for_each(|(o, x)| *o = x.to_f32()),
        GradBuf::F16(v) => out.iter_mut().zip(v).for_each(|(o, x)| *o = x.to_f32()),
        GradBuf::F32(v) => out.copy_from_slice(v),
    }
}

/// A rank's gradients after the reduce-scatter: its own check's result (reported
/// after the collective, so that no rank leaves the others waiting) and its pieces'
/// combined gradients.
pub struct RankGrads {
    own: Result<(), RuntimeError>,
    pieces: Vec<PartData>,
}

/// A rank's side of the step protocol: gradients summed (or averaged) across ranks
/// as f32 and rounded once to the plan's gradient dtype; one all-reduce decides for
/// every rank (bad gradients on a rank, NaN or infinity anywhere, the global norm);
/// the pieces stepped by the interpreter; the parameters all-gathered.
impl<C: Collective> Stepper for ShardedCpuOptimizer<C> {
    type Buffer = std::convert::Infallible;
    type Bound<'g> = RankGrads;

    fn stepper_core(&self) -> &Core {
        &self.core
    }

    fn stepper_core_mut(&mut self) -> &mut Core {
        &mut self.core
    }

    fn bind<'g>(
        &mut self,
        scope: Scope,
        grads: GradSource<'g, Self::Buffer>,
        _scalars: &[Vec<f32>],
    ) -> Result<RankGrads, RuntimeError> {
        let (Scope::All, GradSource::Host(grads)) = (scope, grads) else {
            return Err(grads.unsupported());
        };
        let own = self.check_grads(grads);
        let mut send = vec![0.0f32; self.layout.world() * self.layout.block_elements()];
        if own.is_ok() {
            for (s, g) in self.segments.iter().zip(grads) {
                widen(*g, &mut send[s.elements()]);
            }
        }
        let mut block = vec![0.0f32; self.layout.block_elements()];
        self.collective.reduce_scatter_f32(&send, &mut block);
        if self.reduction == Reduction::Mean {
            let world = self.layout.world() as f32;
            block.iter_mut().for_each(|x| *x /= world);
        }
        let dtype = self.core.plan.config.grad;
        let pieces = self
            .pieces
            .iter()
            .map(|p| {
                let at = p.block_group * GROUP_SIZE;
                PartData::round_from_f32(dtype, &block[at..at + p.elements.len()])
            })
            .collect();
        Ok(RankGrads { own, pieces })
    }

    fn inspect(
        &mut self,
        _: Scope,
        grads: &mut RankGrads,
        _norm: bool,
    ) -> Result<Inspection, RuntimeError> {
        let bufs = piece_grads(grads);
        let found = numerics::scan_step(
            self.pieces
                .iter()
                .zip(&bufs)
                .map(|(p, g)| (self.core.tensors[p.tensor].name.as_str(), *g)),
        );
        // [sum of squares, ranks with bad gradients, non-finite values]
        let mut decision = [
            bufs.iter().map(clip::square_sum).sum::<f64>(),
            f64::from(u8::from(grads.own.is_err())),
            found.as_ref().map_or(0.0, |f| f.count as f64),
        ];
        self.collective.all_reduce_f64(&mut decision);
        std::mem::replace(&mut grads.own, Ok(()))?;
        if decision[1] > 0.0 {
            return Err(RuntimeError::PeerRefused {
                ranks: decision[1] as usize,
            });
        }
        if decision[2] > 0.0 || !decision[0].is_finite() {
            return Ok(Inspection::NonFinite(found.unwrap_or_else(|| NonFinite {
                // Found on another rank.
                tensor: String::new(),
                index: 0,
                value: f32::NAN,
                count: decision[2] as usize,
            })));
        }
        Ok(Inspection::Finite {
            square_sum: Some(decision[0]),
        })
    }

    fn apply(
        &mut self,
        _: Scope,
        grads: RankGrads,
        scalars: &[Vec<f32>],
    ) -> Result<(), RuntimeError> {
        let bufs = piece_grads(&grads);
        for ((p, tensor), g) in self.pieces.iter().zip(&mut self.shard).zip(&bufs) {
            let info = &self.core.tensors[p.tensor];
            interp::run(&self.core.plan, &scalars[info.param_group], tensor, *g)
                .map_err(RuntimeError::in_tensor(&info.name))?;
        }
        self.gather_params();
        Ok(())
    }
}

fn piece_grads(grads: &RankGrads) -> Vec<GradBuf<'_>> {
    grads
        .pieces
        .iter()
        .map(|g| g.as_grad().expect("floats"))
        .collect()
}
