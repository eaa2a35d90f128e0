//! [`ShardedCpuOptimizer`]: one rank of a ZeRO-1 optimizer on the CPU reference, a
//! [`ShardedOptimizer`] over [`HostRank`]: host memory and any [`Collective`].

use std::borrow::Cow;

use flashopt_ir::interp::{self, GradBuf, HostTensor, PartData};
use flashopt_ir::layout::Shape;
use flashopt_ir::{GROUP_SIZE, HyperValues, OptimizerSpec, Plan, PlanConfig, reduction};

use super::collective::Collective;
use super::layout;
use super::rank::{RankBackend, Reduction, ShardedOptimizer, Sharding};
use crate::core::TensorId;
use crate::error::RuntimeError;
use crate::numerics::{self, NonFinite};
use crate::raw;
use crate::step::GradSource;

/// A rank on the CPU reference: gradients summed (or averaged) across ranks in f32
/// and rounded once to the plan's gradient dtype; the pieces stepped by the
/// interpreter; the parameters all-gathered as bytes.
pub type ShardedCpuOptimizer<C> = ShardedOptimizer<HostRank<C>>;

/// A rank's storage on the host and its collective.
#[derive(Debug)]
pub struct HostRank<C> {
    collective: C,
    plan: std::sync::Arc<Plan>,
    sharding: Sharding,
    /// Every tensor's parameter part, on every rank.
    params: Vec<PartData>,
    /// One per piece: the piece's parameter and states.
    shard: Vec<HostTensor>,
    /// One per piece: its combined gradient of the step being taken.
    block_grads: Vec<PartData>,
}

impl<C: Collective> ShardedOptimizer<HostRank<C>> {
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
        let shaped: Vec<(&str, [usize; 1], &[f32])> = tensors
            .iter()
            .map(|&(name, values)| (name, [values.len()], values))
            .collect();
        let shaped: Vec<(&str, &[usize], &[f32])> =
            shaped.iter().map(|(n, d, v)| (*n, &d[..], *v)).collect();
        Self::new_shaped(plan, hyper, &shaped, collective)
    }

    /// As [`Self::new`], each tensor with its dimensions (outermost first, as
    /// `CpuOptimizer::add_shaped` takes them): a plan that sees tensors as matrices
    /// (Muon's) needs them, and each rank then holds every tensor's state whole or
    /// not at all ([`super::layout::place`]). Dimensions that do not hold a tensor's
    /// values are refused.
    pub fn new_shaped(
        plan: Plan,
        hyper: HyperValues,
        tensors: &[(&str, &[usize], &[f32])],
        collective: C,
    ) -> Result<Self, RuntimeError> {
        let shapes: Vec<(&str, Shape)> = tensors
            .iter()
            .map(|&(n, dims, _)| (n, Shape::of_dims(dims)))
            .collect();
        let check = |_: &Plan| {
            tensors.iter().try_for_each(|&(name, dims, values)| {
                let product = Shape::of_dims(dims).len;
                if product != values.len() {
                    return Err(RuntimeError::ShapeMismatch {
                        name: name.to_string(),
                        dims: dims.to_vec(),
                        product,
                        len: values.len(),
                    });
                }
                crate::core::check_initial_values(name, values)
            })
        };
        let make = |plan: &Plan, sharding: &Sharding, (), collective| {
            let wholes = shapes
                .iter()
                .zip(tensors)
                .map(|(&(_, shape), &(_, _, v))| HostTensor::from_f32_shaped(plan, v, shape));
            Ok(HostRank::new(plan, sharding, wholes.collect(), collective))
        };
        Self::build(plan, hyper, &shapes, collective, check, make)
    }

    /// One step from this rank's gradients (one per tensor, in order); see
    /// [`ShardedOptimizer::step_from`].
    pub fn step(
        &mut self,
        grads: &[GradBuf<'_>],
    ) -> Result<crate::numerics::StepOutcome, RuntimeError> {
        self.step_from(GradSource::Host(grads))
    }

    /// This rank's pieces of tensors and their storage (parameter and states).
    pub fn shard(&self) -> impl Iterator<Item = (&super::Piece, &HostTensor)> {
        self.sharding().pieces.iter().zip(&self.backend().shard)
    }

    /// The parameter values the model computes with (every rank holds them all).
    pub fn param(&self, id: TensorId) -> Result<Vec<f32>, RuntimeError> {
        let params = &self.backend().params;
        let param = params.get(id.0).ok_or(RuntimeError::UnknownTensor {
            id: id.0,
            tensors: params.len(),
        })?;
        Ok(param.to_f32().expect("the parameter part holds floats"))
    }
}

impl<C: Collective> HostRank<C> {
    fn new(plan: &Plan, sharding: &Sharding, wholes: Vec<HostTensor>, collective: C) -> Self {
        let mut shard = Vec::with_capacity(sharding.pieces.len());
        let mut params = Vec::with_capacity(wholes.len());
        let mut pieces = sharding.pieces.iter().peekable();
        for (i, whole) in wholes.into_iter().enumerate() {
            while let Some(p) = pieces.next_if(|p| p.tensor == i) {
                shard.push(layout::cut(plan, &whole, p));
            }
            params.push(whole.parts.into_iter().next().expect("a parameter part"));
        }
        HostRank {
            collective,
            plan: std::sync::Arc::new(plan.clone()),
            sharding: sharding.clone(),
            params,
            shard,
            block_grads: Vec::new(),
        }
    }

    fn piece_grads(&self) -> Vec<GradBuf<'_>> {
        self.block_grads
            .iter()
            .map(|g| g.as_grad().expect("floats"))
            .collect()
    }

    /// Every rank's updated parameters, from every rank's block.
    fn gather_params(&mut self) {
        let Some(storage) = self.params.first().map(|p| p.storage()) else {
            return;
        };
        let size = storage.size_bytes();
        let layout = &self.sharding.layout;
        let mut send = vec![0u8; layout.block_elements() * size];
        for (p, t) in self.sharding.pieces.iter().zip(&self.shard) {
            let bytes = raw::part_bytes(t.param());
            let at = p.block_group * GROUP_SIZE * size;
            send[at..at + bytes.len()].copy_from_slice(&bytes);
        }
        let mut all = vec![0u8; send.len() * layout.world()];
        self.collective.all_gather_bytes(&send, &mut all);
        for (param, s) in self.params.iter_mut().zip(&self.sharding.segments) {
            let r = s.elements();
            *param = raw::part_data(storage, &all[r.start * size..r.end * size]);
        }
    }
}

impl<C: Collective> HostRank<C> {
    /// Each piece's values of the plan's reductions over its whole tensor (one per
    /// reduction, as `interp::reductions` gives a whole tensor's), phase by phase:
    /// every rank computes its pieces' group values, all-gathers every rank's (a
    /// block's groups are the flat buffers' groups of that rank, in order), and
    /// finishes each tensor's value from its groups in the reference's order. One
    /// all-gather of `block groups * reductions` f64 per phase.
    fn tensor_reductions(&self, scalars: &[Vec<f32>]) -> Vec<Vec<Vec<f32>>> {
        let plan = &self.plan;
        let count = plan.reductions.len();
        let pieces = &self.sharding.pieces;
        let mut reduced = vec![vec![Vec::new(); count]; pieces.len()];
        let block_groups = self.sharding.layout.block_elements() / GROUP_SIZE;
        for phase in 0..plan.phases.len() {
            let mut send = vec![0.0f64; block_groups * count];
            let mut computed = Vec::new();
            for (i, (piece, tensor)) in pieces.iter().zip(&self.shard).enumerate() {
                let info = &self.sharding.tensors[piece.tensor];
                let grad = self.block_grads[i].as_grad().expect("floats");
                let groups = interp::phase_group_values(
                    plan,
                    phase,
                    &scalars[info.param_group],
                    tensor,
                    grad,
                    &reduced[i],
                );
                for (k, values) in groups {
                    for (g, v) in values.into_iter().enumerate() {
                        send[(piece.block_group + g) * count + k] = v;
                    }
                    computed.push(k);
                }
            }
            let mut all = vec![0u8; send.len() * 8 * self.sharding.layout.world()];
            self.collective
                .all_gather_bytes(&raw::le_bytes(&send), &mut all);
            let all: Vec<f64> = all
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect();
            computed.sort_unstable();
            computed.dedup();
            for (i, piece) in pieces.iter().enumerate() {
                let s = &self.sharding.segments[piece.tensor];
                for &k in &computed {
                    let groups: Vec<f64> = (s.first_group..s.first_group + s.groups)
                        .map(|g| all[g * count + k])
                        .collect();
                    let op = plan.reductions[k].op;
                    reduced[i][k] = vec![reduction::from_groups(op, &groups, s.len)];
                }
            }
        }
        reduced
    }
}

fn widen(grad: GradBuf<'_>, out: &mut [f32]) {
    match grad {
        GradBuf::Bf16(v) => out.iter_mut().zip(v).for_each(|(o, x)| *o = x.to_f32()),
        GradBuf::F16(v) => out.iter_mut().zip(v).for_each(|(o, x)| *o = x.to_f32()),
        GradBuf::F32(v) => out.copy_from_slice(v),
    }
}

impl<C: Collective> RankBackend for HostRank<C> {
    type Buffer = std::convert::Infallible;
    type Link = C;
    const TENSOR_REDUCTIONS: bool = true;
    const WHOLE_MATRICES: bool = true;

    fn link(&self) -> &C {
        &self.collective
    }

    fn reduce_scatter(
        &mut self,
        grads: Option<GradSource<'_, Self::Buffer>>,
        reduction: Reduction,
    ) -> Result<(), RuntimeError> {
        let layout = &self.sharding.layout;
        let mut send = vec![0.0f32; layout.world() * layout.block_elements()];
        match grads {
            Some(GradSource::Host(grads)) => {
                for (s, g) in self.sharding.segments.iter().zip(grads) {
                    widen(*g, &mut send[s.elements()]);
                }
            }
            Some(other) => return Err(other.unsupported()),
            None => {}
        }
        let mut block = vec![0.0f32; layout.block_elements()];
        self.collective.reduce_scatter_f32(&send, &mut block);
        if reduction == Reduction::Mean {
            let world = layout.world() as f32;
            block.iter_mut().for_each(|x| *x /= world);
        }
        let dtype = self.plan.config.grad;
        self.block_grads = self
            .sharding
            .pieces
            .iter()
            .map(|p| {
                let at = p.block_group * GROUP_SIZE;
                PartData::round_from_f32(dtype, &block[at..at + p.elements.len()])
            })
            .collect();
        Ok(())
    }

    fn block_square_sum(&mut self) -> Result<f64, RuntimeError> {
        Ok(self.piece_grads().iter().map(crate::clip::square_sum).sum())
    }

    fn locate_non_finite(&mut self) -> Option<(usize, NonFinite)> {
        let (mut first, mut count) = (None, 0);
        for (piece, grad) in self.piece_grads().iter().enumerate() {
            if let Some((index, value, n)) = numerics::scan(grad) {
                first.get_or_insert((piece, index, value));
                count += n;
            }
        }
        let (piece, index, value) = first?;
        let found = NonFinite {
            // The wrapper names the whole tensor.
            tensor: String::new(),
            index,
            value,
            count,
        };
        Some((piece, found))
    }

    fn apply(&mut self, scalars: &[Vec<f32>]) -> Result<(), RuntimeError> {
        let whole = self.plan.matrix_functions().is_some();
        let reduced = match whole {
            // Each piece is a whole tensor: it computes its own reductions.
            true => Vec::new(),
            false => self.tensor_reductions(scalars),
        };
        let grads = std::mem::take(&mut self.block_grads);
        for (i, (tensor, g)) in self.shard.iter_mut().zip(&grads).enumerate() {
            let info = &self.sharding.tensors[self.sharding.pieces[i].tensor];
            let g = g.as_grad().expect("floats");
            let stepped = match whole {
                // The piece has the tensor's shape (`layout::cut`).
                true => interp::run(&self.plan, &scalars[info.param_group], tensor, g),
                false => interp::run_reduced(
                    &self.plan,
                    &scalars[info.param_group],
                    tensor,
                    g,
                    &reduced[i],
                ),
            };
            stepped.map_err(RuntimeError::in_tensor(&info.name))?;
        }
        self.gather_params();
        Ok(())
    }

    fn shard_state(&self) -> Cow<'_, [HostTensor]> {
        Cow::Borrowed(&self.shard)
    }

    fn restore(&mut self, plan: &Plan, sharding: &Sharding, whole: &[HostTensor]) {
        for (s, p) in self.shard.iter_mut().zip(&sharding.pieces) {
            *s = layout::cut(plan, &whole[p.tensor], p);
        }
        for (param, t) in self.params.iter_mut().zip(whole) {
            *param = t.param().clone();
        }
    }
}
