//! The step protocol, written once for every optimizer (CPU, GPU, sharded ranks):
//!
//! 1. clipping needs the whole step's norm: a tensor stepped alone refuses it;
//! 2. the next step's host scalars (a value out of range fails here, before anything);
//! 3. [`Stepper::bind`]: the back end checks the gradients against the tensors it
//!    steps, and readies them (an error changes nothing);
//! 4. [`Stepper::inspect`]: NaN or infinity in the gradients, and their sum of squares
//!    when clipping asks for it (a sharded rank agrees with the others here);
//! 5. non-finite gradients skip the step: nothing changes, the step counter included;
//! 6. the clipping factor goes into the plan's gradient-scale scalar;
//! 7. [`Stepper::apply`]: every tensor of the step updated;
//! 8. a whole step is counted; tensors stepped alone are counted by `finish_step`.
//!
//! A back end implements the three hooks; [`step`] is the only place that orders them.

use flashopt_ir::Plan;
use flashopt_ir::interp::{self, GradBuf};

use crate::core::{Core, TensorId, TensorInfo};
use crate::error::RuntimeError;
use crate::numerics::{NonFinite, StepOutcome};

/// Where a step reads its gradients.
#[derive(Debug)]
pub enum GradSource<'g, B> {
    /// Host slices, one per tensor of the step, in registration order.
    Host(&'g [GradBuf<'g>]),
    /// The optimizer's own flat gradient buffer, as written since the last step.
    Flat,
    /// Device buffers where the trainer left them, one per tensor of the step.
    Device(&'g [&'g B]),
}

// Copy whatever the buffer type: the source holds only references.
impl<B> Clone for GradSource<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B> Copy for GradSource<'_, B> {}

impl<B> GradSource<'_, B> {
    /// The error for a back end that cannot read this source.
    pub fn unsupported(&self) -> RuntimeError {
        RuntimeError::GradSource(match self {
            GradSource::Host(_) => "host slices",
            GradSource::Flat => "a flat gradient buffer",
            GradSource::Device(_) => "device buffers",
        })
    }
}

/// The tensors a step updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every registered tensor: a whole step, counted.
    All,
    /// One tensor alone (gradient release): not counted until `finish_step`.
    Tensor(TensorId),
}

/// What [`Stepper::inspect`] found in a step's gradients.
#[derive(Clone, Debug, PartialEq)]
pub enum Inspection {
    /// No NaN or infinity; the sum of squares of every gradient element where it was
    /// measured (clipping asked for it, or the back end's scan computes it anyway).
    Finite { square_sum: Option<f64> },
    /// The first non-finite value found (the step is skipped).
    NonFinite(NonFinite),
}

/// What a back end does for the step protocol; [`step`] calls these in order.
pub trait Stepper {
    /// The device buffer type of [`GradSource::Device`].
    type Buffer;
    /// Gradients checked and readied for [`Self::apply`].
    type Bound<'g>;

    fn stepper_core(&self) -> &Core;

    fn stepper_core_mut(&mut self) -> &mut Core;

    /// Check `grads` against the tensors of `scope` and ready them; `scalars` are the
    /// step's kernel scalars (gradient scale 1) per parameter group. On error nothing
    /// has changed.
    fn bind<'g>(
        &mut self,
        scope: Scope,
        grads: GradSource<'g, Self::Buffer>,
        scalars: &[Vec<f32>],
    ) -> Result<Self::Bound<'g>, RuntimeError>;

    /// NaN or infinity in the bound gradients; their sum of squares when `norm` is set
    /// (clipping). A whole step only asks for the norm.
    fn inspect(
        &mut self,
        scope: Scope,
        bound: &mut Self::Bound<'_>,
        norm: bool,
    ) -> Result<Inspection, RuntimeError>;

    /// Update every tensor of `scope` with these scalars (the gradient scale set).
    fn apply(
        &mut self,
        scope: Scope,
        bound: Self::Bound<'_>,
        scalars: &[Vec<f32>],
    ) -> Result<(), RuntimeError>;
}

/// One step of `scope`'s tensors from `grads`: the protocol of the module's
/// documentation.
pub fn step<S: Stepper + ?Sized>(
    stepper: &mut S,
    scope: Scope,
    grads: GradSource<'_, S::Buffer>,
) -> Result<StepOutcome, RuntimeError> {
    let core = stepper.stepper_core();
    let clipping = core.max_grad_norm.is_some();
    if let Scope::Tensor(id) = scope {
        if clipping {
            return Err(RuntimeError::ClipNeedsWholeStep);
        }
        core.tensor(id)?;
    }
    let next = core.steps_taken + 1;
    let mut scalars = core.kernel_scalars(next, 1.0)?;
    let mut bound = stepper.bind(scope, grads, &scalars)?;
    let square_sum = match stepper.inspect(scope, &mut bound, clipping)? {
        Inspection::NonFinite(found) => return Ok(StepOutcome::Skipped(found)),
        Inspection::Finite { square_sum } => square_sum,
    };
    let core = stepper.stepper_core_mut();
    if let Some(sum) = square_sum {
        let factor = core.clip_factor(sum);
        let slot = core.plan.grad_scale();
        scalars.iter_mut().for_each(|group| group[slot] = factor);
    }
    stepper.apply(scope, bound, &scalars)?;
    if scope == Scope::All {
        stepper.stepper_core_mut().steps_taken = next;
    }
    Ok(StepOutcome::Applied)
}

/// Count a step whose tensors were stepped one by one ([`Scope::Tensor`]).
pub fn finish_step<S: Stepper + ?Sized>(stepper: &mut S) {
    stepper.stepper_core_mut().steps_taken += 1;
}

/// `found` gradients for the tensors of `scope`: one per tensor.
pub fn check_count(core: &Core, scope: Scope, found: usize) -> Result<(), RuntimeError> {
    let expected = match scope {
        Scope::All => core.tensors.len(),
        Scope::Tensor(_) => 1,
    };
    count_is(expected, found)
}

fn count_is(expected: usize, found: usize) -> Result<(), RuntimeError> {
    if found == expected {
        Ok(())
    } else {
        Err(RuntimeError::GradCount { expected, found })
    }
}

/// Host gradients against whole tensors: one per tensor, in order, each of its
/// tensor's length and in the plan's gradient dtype; an error names the tensor.
pub fn check_host_grads(
    plan: &Plan,
    tensors: &[TensorInfo],
    grads: &[GradBuf<'_>],
) -> Result<(), RuntimeError> {
    count_is(tensors.len(), grads.len())?;
    for (t, g) in tensors.iter().zip(grads) {
        interp::check_grad(plan, t.len, *g).map_err(RuntimeError::in_tensor(&t.name))?;
    }
    Ok(())
}

/// The ids of the tensors of `scope`, in order.
pub fn tensor_ids(core: &Core, scope: Scope) -> impl Iterator<Item = TensorId> + use<> {
    let ids = match scope {
        Scope::All => 0..core.tensors.len(),
        Scope::Tensor(id) => id.0..id.0 + 1,
    };
    ids.map(TensorId)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::TensorInfo;
    use flashopt_ir::def::{OptimizerDef, Range, name};
    use flashopt_ir::{HyperValues, PlanConfig};

    /// A back end that records what the protocol asks of it.
    struct Recorder {
        core: Core,
        calls: Vec<String>,
        refuse: bool,
        found: Option<NonFinite>,
        square_sum: f64,
    }

    fn recorder() -> Recorder {
        let mut def = OptimizerDef::new("sgd");
        def.hyper("lr", 0.5, Range::at_least(0.0));
        def.assign("p", name("p") - name("lr") * name("g"));
        let plan = flashopt_ir::compile(&def, PlanConfig::f32_params()).unwrap();
        let hyper = HyperValues::defaults(&plan.hyper_params);
        let mut core = Core::new(plan, vec![hyper]).unwrap();
        for name in ["a", "b"] {
            let info = TensorInfo::new(name, 0, 3);
            core.add(info).unwrap();
        }
        Recorder {
            core,
            calls: Vec::new(),
            refuse: false,
            found: None,
            square_sum: 16.0,
        }
    }

    impl Stepper for Recorder {
        type Buffer = ();
        type Bound<'g> = ();

        fn stepper_core(&self) -> &Core {
            &self.core
        }

        fn stepper_core_mut(&mut self) -> &mut Core {
            &mut self.core
        }

        fn bind<'g>(
            &mut self,
            scope: Scope,
            _: GradSource<'g, ()>,
            _: &[Vec<f32>],
        ) -> Result<(), RuntimeError> {
            self.calls.push(format!("bind {scope:?}"));
            if self.refuse {
                return Err(RuntimeError::NoGradBuffer);
            }
            Ok(())
        }

        fn inspect(
            &mut self,
            _: Scope,
            _: &mut (),
            norm: bool,
        ) -> Result<Inspection, RuntimeError> {
            self.calls.push(format!("inspect norm={norm}"));
            Ok(match self.found.clone() {
                Some(found) => Inspection::NonFinite(found),
                None => Inspection::Finite {
                    square_sum: norm.then_some(self.square_sum),
                },
            })
        }

        fn apply(&mut self, _: Scope, _: (), scalars: &[Vec<f32>]) -> Result<(), RuntimeError> {
            let scale = scalars[0][self.core.plan.grad_scale()];
            self.calls.push(format!("apply scale={scale}"));
            Ok(())
        }
    }

    #[test]
    fn a_whole_step_binds_inspects_applies_and_counts() {
        let mut r = recorder();
        let outcome = step(&mut r, Scope::All, GradSource::Flat).unwrap();
        assert_eq!(outcome, StepOutcome::Applied);
        assert_eq!(r.calls, ["bind All", "inspect norm=false", "apply scale=1"]);
        assert_eq!((r.core.steps_taken, r.core.last_grad_norm), (1, None));
    }

    #[test]
    fn clipping_scales_the_gradient_by_the_norm_it_asked_for() {
        let mut r = recorder();
        r.core.set_grad_clipping(Some(2.0)).unwrap();
        step(&mut r, Scope::All, GradSource::Flat).unwrap();
        // norm 4 against a threshold of 2: torch's factor 2 / (4 + 1e-6).
        let factor = crate::clip::scale(2.0, 4.0);
        let applied = format!("apply scale={factor}");
        assert_eq!(r.calls, ["bind All", "inspect norm=true", applied.as_str()]);
        assert_eq!(r.core.last_grad_norm, Some(4.0));
    }

    #[test]
    fn non_finite_gradients_skip_without_applying_or_counting() {
        let mut r = recorder();
        let found = NonFinite {
            tensor: "b".into(),
            index: 2,
            value: f32::INFINITY,
            count: 1,
        };
        r.found = Some(found.clone());
        let outcome = step(&mut r, Scope::All, GradSource::Flat).unwrap();
        assert_eq!(outcome, StepOutcome::Skipped(found));
        assert_eq!(r.calls, ["bind All", "inspect norm=false"]);
        assert_eq!(r.core.steps_taken, 0);
    }

    #[test]
    fn a_refused_bind_changes_nothing() {
        let mut r = recorder();
        r.refuse = true;
        r.core.set_grad_clipping(Some(1.0)).unwrap();
        assert!(step(&mut r, Scope::All, GradSource::Flat).is_err());
        assert_eq!(r.calls, ["bind All"]);
        assert_eq!((r.core.steps_taken, r.core.last_grad_norm), (0, None));
    }

    #[test]
    fn tensors_stepped_alone_wait_for_finish_step_and_refuse_clipping() {
        let mut r = recorder();
        for id in [TensorId(0), TensorId(1)] {
            step(&mut r, Scope::Tensor(id), GradSource::Flat).unwrap();
        }
        assert_eq!(r.core.steps_taken, 0);
        finish_step(&mut r);
        assert_eq!(r.core.steps_taken, 1);
        let unknown = step(&mut r, Scope::Tensor(TensorId(2)), GradSource::Flat);
        assert!(matches!(
            unknown,
            Err(RuntimeError::UnknownTensor { id: 2, .. })
        ));
        r.core.set_grad_clipping(Some(1.0)).unwrap();
        r.calls.clear();
        let clipped = step(&mut r, Scope::Tensor(TensorId(0)), GradSource::Flat);
        assert!(matches!(clipped, Err(RuntimeError::ClipNeedsWholeStep)));
        assert!(r.calls.is_empty(), "{:?}", r.calls);
    }
}
