//! [`ShardedOptimizer`]: one rank of a ZeRO-1 optimizer over any [`RankBackend`], the
//! part every rank shares however it stores and communicates: the whole tensors'
//! layout and pieces, the agreement of the ranks at construction, the step protocol's
//! rank side (a refused gradient still contributes, so no rank waits alone; one
//! all-reduce decides skipping and clipping for every rank), the counters and
//! hyper-parameters, checkpoints. The CPU rank ([`super::cpu::HostRank`]) and the
//! NCCL rank (`flashopt_cubecl::shard`) are back ends of it.

use std::borrow::Cow;
use std::path::Path;

use flashopt_ir::interp::HostTensor;
use flashopt_ir::layout::Shape;
use flashopt_ir::{HyperValues, Plan};

use super::checkpoint::{self, CheckpointedRank};
use super::collective::Collective;
use super::layout::{Piece, ShardLayout};
use crate::checkpoint::CheckpointError;
use crate::core::{Core, TensorInfo};
use crate::error::RuntimeError;
use crate::numerics::{NonFinite, StepOutcome};
use crate::segments::Segment;
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

/// The whole model as the ranks shard it: its tensors, their segments of the flat
/// buffers, the blocks, and this rank's pieces.
#[derive(Clone, Debug)]
pub struct Sharding {
    pub tensors: Vec<TensorInfo>,
    pub segments: Vec<Segment>,
    pub layout: ShardLayout,
    pub rank: usize,
    pub pieces: Vec<Piece>,
}

impl Sharding {
    /// The sharding of `tensors` (names and shapes, one parameter group) for `rank`
    /// of `world`; with `whole_tensors`, no tensor is cut between ranks
    /// ([`super::layout::place`]).
    pub fn new(
        tensors: &[(&str, Shape)],
        rank: usize,
        world: usize,
        whole_tensors: bool,
    ) -> Sharding {
        let tensors: Vec<TensorInfo> = tensors
            .iter()
            .map(|&(name, shape)| TensorInfo::new(name, 0, shape))
            .collect();
        let (segments, layout) = super::layout::place(&tensors, world, whole_tensors);
        let pieces = layout.pieces(rank, &segments);
        Sharding {
            tensors,
            segments,
            layout,
            rank,
            pieces,
        }
    }
}

/// The collective the ranks agree through: at construction, before their back ends
/// exist, and at every step's decision and checkpoint.
pub trait Agreement {
    fn rank(&self) -> usize;

    fn world(&self) -> usize;

    /// The element-wise sum over ranks, in place.
    fn all_reduce_f64(&self, values: &mut [f64]) -> Result<(), RuntimeError>;
}

impl<C: Collective> Agreement for C {
    fn rank(&self) -> usize {
        Collective::rank(self)
    }

    fn world(&self) -> usize {
        Collective::world(self)
    }

    fn all_reduce_f64(&self, values: &mut [f64]) -> Result<(), RuntimeError> {
        Collective::all_reduce_f64(self, values);
        Ok(())
    }
}

/// What a rank's storage and collectives do in a sharded step; [`ShardedOptimizer`]
/// orders them. Every rank calls the collective methods in the same order.
pub trait RankBackend {
    /// The trainer's gradient buffers ([`GradSource::Device`]).
    type Buffer;
    /// How the ranks agree.
    type Link: Agreement;

    /// Whether its ranks combine reductions over tensors (each rank's group values of
    /// its pieces gathered by every rank, which then finishes every tensor's value
    /// in the reference's order).
    const TENSOR_REDUCTIONS: bool;

    /// Whether it steps plans that see each tensor as a whole matrix (a matrix
    /// function, `rows`, `cols`): every piece is then a whole tensor
    /// ([`super::layout::place`]), which the rank steps as the unsharded optimizer
    /// would.
    const WHOLE_MATRICES: bool;

    fn link(&self) -> &Self::Link;

    /// Every rank's gradients of the whole model combined into this rank's block
    /// (summed, or averaged for [`Reduction::Mean`]). `grads` is `None` when this
    /// rank's were refused: it contributes zeros, so that the others do not wait for
    /// it. A source the back end cannot read is an error before any collective.
    fn reduce_scatter(
        &mut self,
        grads: Option<GradSource<'_, Self::Buffer>>,
        reduction: Reduction,
    ) -> Result<(), RuntimeError>;

    /// The sum of squares of the block's gradients, in f64: NaN or infinite exactly
    /// when a gradient value is.
    fn block_square_sum(&mut self) -> Result<f64, RuntimeError>;

    /// The block's first non-finite gradient: the piece it is in (an index into the
    /// pieces) and, in the returned value, its index within the piece.
    fn locate_non_finite(&mut self) -> Option<(usize, NonFinite)>;

    /// Step every piece with `scalars` (per parameter group), then gather every
    /// rank's parameters.
    fn apply(&mut self, scalars: &[Vec<f32>]) -> Result<(), RuntimeError>;

    /// One per piece: its parameter and states, read where they live.
    fn shard_state(&self) -> Cow<'_, [HostTensor]>;

    /// Take the whole tensors' values: every parameter, and this rank's pieces'
    /// states.
    fn restore(&mut self, plan: &Plan, sharding: &Sharding, whole: &[HostTensor]);
}

/// One rank of a sharded optimizer: every parameter (the narrow values the model
/// computes with), and the corrections, states and scales of this rank's block of
/// groups only (see the module's documentation). Every rank calls every method that
/// takes a step, saves, loads or builds the optimizer, in the same order.
#[derive(Debug)]
pub struct ShardedOptimizer<B> {
    core: Core,
    sharding: Sharding,
    reduction: Reduction,
    backend: B,
}

/// Rows and columns are cut by the pieces (a row's values would come from several
/// ranks' elements): refused. Matrices are not cut (no tensor is), but back ends
/// without [`RankBackend::WHOLE_MATRICES`] do not step them: refused there. A
/// reduction over a tensor needs every rank's group values of it, which back ends
/// without [`RankBackend::TENSOR_REDUCTIONS`] do not gather: refused there (unless
/// every tensor is whole on one rank).
fn refuse_reductions<B: RankBackend>(plan: &Plan) -> Result<(), RuntimeError> {
    crate::error::refuse_rows_and_columns(plan, "ZeRO-1 sharding")?;
    if !B::WHOLE_MATRICES {
        crate::error::refuse_matrix_functions(plan, "ZeRO-1 sharding on this back end")?;
    }
    let whole = B::WHOLE_MATRICES && plan.matrix_functions().is_some();
    if plan.reductions.is_empty() || B::TENSOR_REDUCTIONS || whole {
        return Ok(());
    }
    let names: Vec<String> = plan.reductions.iter().map(|r| r.name()).collect();
    Err(RuntimeError::ShardedReductions {
        optimizer: plan.optimizer.clone(),
        reductions: names.join(", "),
    })
}

impl<B: RankBackend> ShardedOptimizer<B> {
    /// Every rank's checks of its input (`check`: the tensors' values, say), then one
    /// meeting of the ranks through `link`: ranks that disagree on the plan or the
    /// tensors (names and shapes, in order), or one whose input is refused, fail
    /// together here instead of hanging in a later collective or summing blocks that
    /// do not match. `make` builds the back end from the checked input, this rank's
    /// sharding and the link.
    pub fn build<T>(
        plan: Plan,
        hyper: HyperValues,
        tensors: &[(&str, Shape)],
        link: B::Link,
        check: impl FnOnce(&Plan) -> Result<T, RuntimeError>,
        make: impl FnOnce(&Plan, &Sharding, T, B::Link) -> Result<B, RuntimeError>,
    ) -> Result<Self, RuntimeError> {
        let (rank, world) = (link.rank(), link.world());
        let fingerprint = super::layout_fingerprint(&plan, tensors);
        let local = refuse_reductions::<B>(&plan)
            .and_then(|()| check(&plan))
            .and_then(|checked| {
                let mut core = Core::new(plan, vec![hyper])?;
                for &(name, shape) in tensors {
                    core.add(TensorInfo::new(name, 0, shape))?;
                }
                Ok((core, checked))
            });
        let (core, checked) = super::agree(rank, world, fingerprint, local, |slots| {
            link.all_reduce_f64(slots)
        })?;
        let whole = core.plan.matrix_functions().is_some();
        let sharding = Sharding::new(tensors, rank, world, whole);
        let backend = make(&core.plan, &sharding, checked, link)?;
        Ok(ShardedOptimizer {
            core,
            sharding,
            reduction: Reduction::Sum,
            backend,
        })
    }

    /// One step of every rank from `grads` (each rank calls it with its own). If any
    /// rank's gradients do not fit, or the combined gradients hold NaN or infinity,
    /// no rank changes anything: the rank with the bad gradient gets its error, the
    /// others [`RuntimeError::PeerRefused`].
    pub fn step_from(
        &mut self,
        grads: GradSource<'_, B::Buffer>,
    ) -> Result<StepOutcome, RuntimeError> {
        step::step(self, Scope::All, grads)
    }

    pub fn set_reduction(&mut self, reduction: Reduction) {
        self.reduction = reduction;
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

    /// Set the learning rate (the hyper-parameter the definition names) of later
    /// steps; every rank sets the same.
    pub fn set_learning_rate(&mut self, lr: f64) -> Result<(), RuntimeError> {
        self.core.set_learning_rate(lr)
    }

    /// The learning rate of the next step.
    pub fn learning_rate(&self) -> Result<f64, RuntimeError> {
        let plan = &self.core.plan;
        plan.learning_rate(&self.core.hyper[0])
            .ok_or_else(|| RuntimeError::NoLearningRate {
                optimizer: plan.optimizer.clone(),
            })
    }

    /// Save this rank's pieces into the folder `dir` (created if missing); every rank
    /// calls it with the same folder (a file system all ranks share). Returns this
    /// rank's file size. Shard files of other world sizes left in the folder by older
    /// saves are removed once this save is in place. CPU and GPU ranks of any world
    /// size read them ([`super::checkpoint`]).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<u64, CheckpointError> {
        checkpoint::save(self, dir.as_ref())
    }

    /// Restore a checkpoint saved by any number of ranks, CPU or GPU, into this rank
    /// (every rank calls it). Everything is read and checked, and every rank agrees
    /// it succeeded, before anything changes.
    pub fn load(&mut self, dir: impl AsRef<Path>) -> Result<(), CheckpointError> {
        checkpoint::load(self, dir.as_ref())
    }

    /// This rank's pieces of tensors and their storage (parameter and states), read
    /// where they live.
    pub fn download_shard(&self) -> Vec<(Piece, HostTensor)> {
        let state = self.backend.shard_state();
        self.sharding
            .pieces
            .iter()
            .cloned()
            .zip(state.iter().cloned())
            .collect()
    }

    pub fn rank(&self) -> usize {
        self.sharding.rank
    }

    pub fn world(&self) -> usize {
        self.sharding.layout.world()
    }

    pub fn layout(&self) -> &ShardLayout {
        &self.sharding.layout
    }

    pub fn sharding(&self) -> &Sharding {
        &self.sharding
    }

    pub fn plan(&self) -> &Plan {
        &self.core.plan
    }

    /// The whole tensors, in order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.sharding.tensors
    }

    pub fn steps_taken(&self) -> u64 {
        self.core.steps_taken
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// A non-finite value the back end found in piece `piece`, named by its whole
    /// tensor; found on another rank when `None`.
    fn in_whole_tensor(&self, found: Option<(usize, NonFinite)>) -> NonFinite {
        match found {
            Some((piece, mut found)) => {
                let p = &self.sharding.pieces[piece];
                found.tensor = self.sharding.tensors[p.tensor].name.clone();
                found.index += p.elements.start;
                found
            }
            None => NonFinite {
                tensor: String::new(),
                index: 0,
                value: f32::NAN,
                count: 0,
            },
        }
    }
}

/// The rank side of the step protocol: this rank's gradients checked (host slices)
/// and combined into its block, refused or not; one all-reduce of the block's sum of
/// squares and of the refusals decides for every rank; the pieces stepped and the
/// parameters gathered.
impl<B: RankBackend> Stepper for ShardedOptimizer<B> {
    type Buffer = B::Buffer;
    /// This rank's own check of its gradients, reported after the decision.
    type Bound<'g> = Result<(), RuntimeError>;

    fn stepper_core(&self) -> &Core {
        &self.core
    }

    fn stepper_core_mut(&mut self) -> &mut Core {
        &mut self.core
    }

    fn bind<'g>(
        &mut self,
        scope: Scope,
        grads: GradSource<'g, B::Buffer>,
        _scalars: &[Vec<f32>],
    ) -> Result<Self::Bound<'g>, RuntimeError> {
        if scope != Scope::All {
            return Err(RuntimeError::ShardedTensorStep);
        }
        let own = match grads {
            GradSource::Host(host) => {
                step::check_host_grads(&self.core.plan, &self.sharding.tensors, host)
            }
            GradSource::Flat | GradSource::Device(_) => Ok(()),
        };
        let contribution = own.is_ok().then_some(grads);
        self.backend.reduce_scatter(contribution, self.reduction)?;
        Ok(own)
    }

    fn inspect(
        &mut self,
        _: Scope,
        own: &mut Result<(), RuntimeError>,
        _norm: bool,
    ) -> Result<Inspection, RuntimeError> {
        let local = self.backend.block_square_sum()?;
        // [sum of squares, ranks whose gradients were refused]
        let mut decision = [local, f64::from(u8::from(own.is_err()))];
        self.backend.link().all_reduce_f64(&mut decision)?;
        std::mem::replace(own, Ok(()))?;
        if decision[1] > 0.0 {
            return Err(RuntimeError::PeerRefused {
                ranks: decision[1] as usize,
            });
        }
        if decision[0].is_finite() {
            return Ok(Inspection::Finite {
                square_sum: Some(decision[0]),
            });
        }
        let found = match local.is_finite() {
            true => None,
            false => self.backend.locate_non_finite(),
        };
        Ok(Inspection::NonFinite(self.in_whole_tensor(found)))
    }

    fn apply(
        &mut self,
        _: Scope,
        _: Result<(), RuntimeError>,
        scalars: &[Vec<f32>],
    ) -> Result<(), RuntimeError> {
        self.backend.apply(scalars)
    }
}

impl<B: RankBackend> CheckpointedRank for ShardedOptimizer<B> {
    fn rank(&self) -> usize {
        self.sharding.rank
    }

    fn world(&self) -> usize {
        self.sharding.layout.world()
    }

    fn plan(&self) -> &Plan {
        &self.core.plan
    }

    fn hyper(&self) -> &[HyperValues] {
        self.core.hyper()
    }

    fn steps_taken(&self) -> u64 {
        self.core.steps_taken
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.sharding.tensors
    }

    fn pieces(&self) -> &[Piece] {
        &self.sharding.pieces
    }

    fn shard_state(&self) -> Cow<'_, [HostTensor]> {
        self.backend.shard_state()
    }

    fn all_reduce(&self, values: &mut [f64]) -> Result<(), CheckpointError> {
        self.backend
            .link()
            .all_reduce_f64(values)
            .map_err(|e| CheckpointError::Collective {
                message: e.to_string(),
            })
    }

    fn restore(&mut self, whole: Vec<HostTensor>, steps_taken: u64, hyper: Vec<HyperValues>) {
        self.backend
            .restore(&self.core.plan, &self.sharding, &whole);
        self.core.restore(hyper, steps_taken);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashopt_ir::PlanConfig;
    use flashopt_ir::def::{OptimizerDef, Range, name};
    use flashopt_ir::interp::GradBuf;

    /// One rank of a world of one whose back end records what the wrapper asks of it.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
        square_sum: f64,
        found: Option<(usize, NonFinite)>,
    }

    struct Alone;

    impl Agreement for Alone {
        fn rank(&self) -> usize {
            0
        }

        fn world(&self) -> usize {
            1
        }

        fn all_reduce_f64(&self, _: &mut [f64]) -> Result<(), RuntimeError> {
            Ok(())
        }
    }

    impl RankBackend for Recorder {
        type Buffer = ();
        type Link = Alone;
        const TENSOR_REDUCTIONS: bool = false;
        const WHOLE_MATRICES: bool = false;

        fn link(&self) -> &Alone {
            &Alone
        }

        fn reduce_scatter(
            &mut self,
            grads: Option<GradSource<'_, ()>>,
            reduction: Reduction,
        ) -> Result<(), RuntimeError> {
            let source = match grads {
                None => "zeros",
                Some(GradSource::Host(_)) => "host",
                Some(_) => "other",
            };
            self.calls
                .push(format!("reduce-scatter {source} {reduction:?}"));
            Ok(())
        }

        fn block_square_sum(&mut self) -> Result<f64, RuntimeError> {
            self.calls.push("square sum".into());
            Ok(self.square_sum)
        }

        fn locate_non_finite(&mut self) -> Option<(usize, NonFinite)> {
            self.calls.push("locate".into());
            self.found.clone()
        }

        fn apply(&mut self, scalars: &[Vec<f32>]) -> Result<(), RuntimeError> {
            self.calls.push(format!("apply {}", scalars.len()));
            Ok(())
        }

        fn shard_state(&self) -> Cow<'_, [HostTensor]> {
            Cow::Owned(Vec::new())
        }

        fn restore(&mut self, _: &Plan, _: &Sharding, _: &[HostTensor]) {}
    }

    /// Tensors `a` (40 elements: groups 0 and 1) and `b` (3), one rank.
    fn rank(backend: Recorder) -> ShardedOptimizer<Recorder> {
        let mut def = OptimizerDef::new("sgd");
        def.hyper("lr", 0.5, Range::at_least(0.0));
        def.assign("p", name("p") - name("lr") * name("g"));
        let plan = flashopt_ir::compile(&def, PlanConfig::f32_params()).unwrap();
        let hyper = HyperValues::defaults(&plan.hyper_params);
        let make = |_: &Plan, _: &Sharding, (), _| Ok(backend);
        let tensors = [("a", Shape::from(40)), ("b", Shape::from(3))];
        ShardedOptimizer::build(plan, hyper, &tensors, Alone, |_| Ok(()), make).unwrap()
    }

    #[test]
    fn a_finite_step_reduces_decides_and_applies_once() {
        let mut r = rank(Recorder::default());
        r.set_reduction(Reduction::Mean);
        let (a, b) = (vec![0.0f32; 40], vec![0.0f32; 3]);
        let grads = [GradBuf::F32(&a), GradBuf::F32(&b)];
        assert_eq!(
            r.step_from(GradSource::Host(&grads)).unwrap(),
            StepOutcome::Applied
        );
        let calls = &r.backend().calls;
        assert_eq!(
            calls,
            &["reduce-scatter host Mean", "square sum", "apply 1"]
        );
        assert_eq!(r.steps_taken(), 1);
    }

    #[test]
    fn refused_gradients_still_contribute_zeros_and_change_nothing() {
        let mut r = rank(Recorder::default());
        let short = vec![0.0f32; 39];
        let b = vec![0.0f32; 3];
        let grads = [GradBuf::F32(&short), GradBuf::F32(&b)];
        let refused = r.step_from(GradSource::Host(&grads));
        assert!(
            matches!(&refused, Err(RuntimeError::Tensor { name, .. }) if name == "a"),
            "{refused:?}"
        );
        assert_eq!(
            r.backend().calls,
            ["reduce-scatter zeros Sum", "square sum"]
        );
        assert_eq!(r.steps_taken(), 0);
    }

    #[test]
    fn a_non_finite_block_is_located_and_named_by_its_whole_tensor() {
        let found = NonFinite {
            tensor: String::new(),
            index: 1,
            value: f32::NAN,
            count: 2,
        };
        let recorder = Recorder {
            square_sum: f64::NAN,
            // The only rank holds both tensors whole: piece 1 is `b`.
            found: Some((1, found)),
            ..Recorder::default()
        };
        let mut r = rank(recorder);
        let outcome = r.step_from(GradSource::Flat).unwrap();
        let StepOutcome::Skipped(named) = outcome else {
            panic!("applied a non-finite step")
        };
        assert_eq!(
            (named.tensor.as_str(), named.index, named.count),
            ("b", 1, 2)
        );
        assert_eq!(
            r.backend().calls,
            ["reduce-scatter other Sum", "square sum", "locate"]
        );
        assert_eq!(r.steps_taken(), 0);
    }

    #[test]
    fn a_sharded_rank_does_not_step_one_tensor_alone() {
        let mut r = rank(Recorder::default());
        let alone = step::step(&mut r, Scope::Tensor(crate::TensorId(0)), GradSource::Flat);
        assert!(matches!(alone, Err(RuntimeError::ShardedTensorStep)));
        assert!(r.backend().calls.is_empty());
    }
}
