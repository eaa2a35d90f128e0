//! A GPU step: gradients from the host (scanned on the way), the device reduction
//! that finds NaN/Inf and the clipping norm, the host scalars, and the launches.

use flashopt_ir::interp::{GradBuf, PartData};
use flashopt_ir::{Extent, Role};
use flashopt_runtime::core::{Core, TensorId};
use flashopt_runtime::error::RuntimeError;
use flashopt_runtime::numerics::{self, NonFinite, StepOutcome};
use flashopt_runtime::raw;
use flashopt_runtime::step::{self, GradSource, Inspection, Scope, Stepper};

use super::GpuOptimizer;
use super::in_place::Bound;
use super::layout::FlatPart;
use crate::codegen::bindings::{Binding, dim_slot, reads_dims, scalar_stride};
use crate::cubecl::server::Handle;
use crate::device::DeviceRuntime;
use crate::device::launch::launch;
use crate::device::reduce;
use crate::device::transfer;
use flashopt_ir::graph::Dim;
use flashopt_ir::layout::Shape;

impl<R: DeviceRuntime> GpuOptimizer<R> {
    /// Upload this step's gradients (one per tensor, in order) from the host into the
    /// gradient buffer, in place (allocating it first if it was released), so that
    /// [`Self::grad_handle`]'s views see them. Trainers whose gradients are already on
    /// the device write them into [`Self::grad_buffer`] instead (the next
    /// [`Self::step`] scans those on the device). Gradients written here are scanned for NaN and infinity on the way: the
    /// next [`Self::step`] is then skipped.
    pub fn write_grads(&mut self, grads: &[GradBuf<'_>]) -> Result<(), RuntimeError> {
        step::check_host_grads(self.core.plan(), self.core.tensors(), grads)?;
        let dtype = self.core.plan().config.grad;
        let flat = FlatPart::new(
            grads.iter().map(|g| g.as_part()),
            &self.segments,
            Extent::Element,
            dtype.size_bytes(),
            self.pad,
        );
        let slot = self.part_slot(Role::Gradient);
        if flat.len() > 0 {
            // Written straight into the transfer's chunks.
            let fill = |offset: usize, out: &mut [u8]| flat.write(offset, out);
            let elements = flat.len() / dtype.size_bytes();
            if self.flat_grads && self.buffers[slot].1 == elements {
                // Into the buffer itself: views a trainer took (`grad_handle`) stay
                // the gradients the next step reads.
                R::upload_into(&self.client, &self.buffers[slot].0, flat.len(), &fill);
            } else {
                let handle = transfer::long_lived(&self.client, || {
                    R::upload(&self.client, flat.len(), &fill)
                });
                self.buffers[slot] = (handle, elements);
                self.flat_grads = true;
            }
        }
        let named = self.core.tensors().iter().map(|t| t.name.as_str());
        self.pending_non_finite = numerics::scan_step(named.zip(grads.iter().copied()));
        self.grads_scanned = true;
        Ok(())
    }

    /// Whether [`Self::step`] scans gradients written on the device (not through
    /// [`Self::write_grads`]) for NaN and infinity: one reduction pass and a read of
    /// its result before each step. On by default; a trainer that checks its
    /// gradients itself can turn it off.
    pub fn set_check_device_grads(&mut self, on: bool) {
        self.check_device_grads = on;
    }

    /// The real gradient elements' sum of squares, on the device.
    pub(crate) fn grad_square_sum(&self) -> f64 {
        match self.groups {
            0 => 0.0,
            _ => reduce::sum_partials(&self.client, self.launch_grad_reduction()),
        }
    }

    /// Launch the gradient check's reduction pass over the gradient buffer, without
    /// reading its result: its partial sums, one f64 per cube, in stream order (what
    /// a benchmark times). The buffer must hold at least one group.
    pub fn launch_grad_reduction(&self) -> Handle {
        let grad = self.grad_buffer();
        let info = &self.buffers[self.slot(Binding::GroupInfo)].0;
        // SAFETY: the gradient buffer holds `groups` groups and the info buffer a word
        // per group (`upload`; `write_grads` keeps the size).
        unsafe {
            reduce::launch_square_sums(
                &self.client,
                self.core.plan().config.grad,
                grad,
                info,
                self.groups,
            )
        }
    }

    /// Where the non-finite gradient values are: reads the gradients back (only
    /// after the reduction found some).
    pub(crate) fn locate_non_finite(&self) -> Option<NonFinite> {
        self.scan_grads(&self.read_per_tensor(Role::Gradient))
    }

    /// The non-finite values of gradients read back, one per tensor in order.
    pub(super) fn scan_grads(&self, grads: &[PartData]) -> Option<NonFinite> {
        let named = self.core.tensors().iter().map(|t| t.name.as_str());
        let values = grads
            .iter()
            .map(|g| g.as_grad().expect("gradients are floats"));
        numerics::scan_step(named.zip(values))
    }

    /// Before a step from the flat buffer: reduce the gradients if clipping (`norm`)
    /// or the device scan asks for it. `Err` holds the non-finite values that skip the
    /// step; `Ok` the sum of squares where measured. The host scan of
    /// [`Self::write_grads`] answers for the next step only.
    fn check_flat_grads(&mut self, norm: bool) -> Result<Option<f64>, NonFinite> {
        let scanned_on_host = std::mem::take(&mut self.grads_scanned);
        if let Some(found) = self.pending_non_finite.take() {
            return Err(found);
        }
        let scan = self.check_device_grads && !scanned_on_host;
        if !norm && !scan {
            return Ok(None);
        }
        let sum = self.grad_square_sum();
        if !sum.is_finite() {
            return Err(self
                .locate_non_finite()
                .unwrap_or_else(|| changed_since_reduction(sum)));
        }
        Ok(Some(sum))
    }

    /// Every parameter group's kernel scalars, to the device, each group's padded to
    /// the kernel's stride (`bindings::scalar_stride`); with reductions, a row per
    /// tensor (its group's scalars; the reductions' values follow, written on the
    /// device).
    pub(super) fn upload_scalars(&mut self, scalars: &[Vec<f32>]) {
        let plan = self.core.plan();
        let (count, stride) = (plan.scalar_count(), scalar_stride(plan));
        // A row per tensor carries the tensor's dimensions where the plan reads them.
        let rows: Vec<(&Vec<f32>, Option<Shape>)> = if self.rows_per_tensor() {
            let dims = reads_dims(plan);
            self.core
                .tensors()
                .iter()
                .map(|t| (&scalars[t.param_group], dims.then(|| t.shape())))
                .collect()
        } else {
            scalars.iter().map(|s| (s, None)).collect()
        };
        let rows_at = dim_slot(plan, Dim::Rows);
        let scalars: Vec<f32> = rows
            .into_iter()
            .flat_map(|(group, shape)| {
                // The plan's host program gives every group its scalars; the padding
                // below assumes no more.
                assert_eq!(group.len(), count, "one parameter group's kernel scalars");
                let mut row = group.clone();
                row.resize(stride, 0.0);
                if let Some(shape) = shape {
                    row[rows_at] = Dim::Rows.of(shape) as f32;
                    row[dim_slot(plan, Dim::Cols)] = Dim::Cols.of(shape) as f32;
                }
                row
            })
            .collect();
        if !scalars.is_empty() {
            let slot = self.slot(Binding::Scalars);
            self.buffers[slot] = (
                self.client.create_from_slice(&raw::le_bytes(&scalars)),
                scalars.len(),
            );
        }
    }

    /// One step of every tensor: ONE kernel launch (after one reduction pass when
    /// clipping is on or device-written gradients are scanned). Skipped, with nothing
    /// changed, when the gradients hold NaN or infinity.
    pub fn step(&mut self) -> Result<StepOutcome, RuntimeError> {
        step::step(self, Scope::All, GradSource::Flat)
    }

    /// The fused kernel over every group with these scalars (a step checked by the
    /// protocol; not counted here), its matrix functions' buffers held for it.
    pub(crate) fn launch_all(&mut self, scalars: &[Vec<f32>]) {
        self.hold_matrices();
        self.launch_every_group(scalars);
        self.release_matrices();
    }

    /// [`Self::launch_all`] where the matrix buffers are held.
    fn launch_every_group(&mut self, scalars: &[Vec<f32>]) {
        self.upload_scalars(scalars);
        self.run_phases(Scope::All, None);
        // SAFETY: every buffer was sized for `self.groups` groups by `upload` (or
        // rebound to one at least as long, `rebind`), from tensors checked against the
        // registered ones: `from_host_grouped` registers each with its own length and
        // checks its parts against the plan; `store_tensors` takes only
        // `CheckedTensors`, one per registered tensor, of its length.
        unsafe {
            launch(
                &self.client,
                &self.kernel,
                &self.buffers,
                0,
                self.groups as u32,
            )
        };
        self.commit_scoped(self.tensors_in(Scope::All));
    }

    /// The tensors a step of `scope` updates: a range of registration indices.
    pub(super) fn tensors_in(&self, scope: Scope) -> (usize, usize) {
        match scope {
            Scope::All => (0, self.segments.len()),
            Scope::Tensor(id) => (id.0, id.0 + 1),
        }
    }

    /// The values of tensors `tensors.0..tensors.1` in a flat part of one value per
    /// row (per column) of every tensor: a range of indices (empty for no tensors).
    pub(super) fn scoped_range(&self, tensors: (usize, usize), extent: Extent) -> (usize, usize) {
        if tensors.1 <= tensors.0 {
            return (0, 0);
        }
        let last = &self.segments[tensors.1 - 1];
        (
            self.segments[tensors.0].start(extent),
            last.start(extent) + last.padded(extent),
        )
    }

    /// Step one tensor alone (gradient release). The step counter is shared: call
    /// [`Self::finish_step`] once every tensor of the step is done. Skipped when the
    /// gradients last written by [`Self::write_grads`] hold NaN or infinity; gradients
    /// written on the device are not scanned here (each tensor's update would have to
    /// wait for its own reduction). Clipping needs the whole step: an error.
    pub fn step_tensor(&mut self, id: TensorId) -> Result<StepOutcome, RuntimeError> {
        step::step(self, Scope::Tensor(id), GradSource::Flat)
    }

    /// Count a step whose tensors were stepped one by one with [`Self::step_tensor`].
    pub fn finish_step(&mut self) {
        step::finish_step(self);
    }
}

/// What a failed read back reports: the gradients changed between the reduction that
/// found a non-finite sum and the read that looked for it.
pub(super) fn changed_since_reduction(sum: f64) -> NonFinite {
    NonFinite {
        tensor: String::new(),
        index: 0,
        value: sum as f32,
        count: 0,
    }
}

/// A step's gradients as the GPU's launches read them.
pub enum GpuBound<'g> {
    /// The optimizer's flat gradient buffer.
    Flat,
    /// The trainer's buffers, bound in place ([`GpuOptimizer::step_with_grads`]).
    InPlace {
        bound: Bound,
        grads: &'g [&'g Handle],
    },
}

/// The device's side of the step protocol.
impl<R: DeviceRuntime> Stepper for GpuOptimizer<R> {
    type Buffer = Handle;
    type Bound<'g> = GpuBound<'g>;

    fn stepper_core(&self) -> &Core {
        &self.core
    }

    fn stepper_core_mut(&mut self) -> &mut Core {
        &mut self.core
    }

    fn bind<'g>(
        &mut self,
        scope: Scope,
        grads: GradSource<'g, Handle>,
        _scalars: &[Vec<f32>],
    ) -> Result<GpuBound<'g>, RuntimeError> {
        match (grads, scope) {
            (GradSource::Host(host), Scope::All) => {
                self.write_grads(host)?;
                Ok(GpuBound::Flat)
            }
            (GradSource::Host(_), Scope::Tensor(_)) => Err(grads.unsupported()),
            (GradSource::Flat, _) if !self.flat_grads => Err(RuntimeError::NoGradBuffer),
            (GradSource::Flat, _) => Ok(GpuBound::Flat),
            (GradSource::Device(handles), scope) => {
                step::check_count(&self.core, scope, handles.len())?;
                let ids = step::tensor_ids(&self.core, scope);
                let bound = self.bind_grads(ids.zip(handles.iter().copied()))?;
                if scope == Scope::All {
                    self.pending_non_finite = None;
                    self.grads_scanned = false;
                }
                Ok(GpuBound::InPlace {
                    bound,
                    grads: handles,
                })
            }
        }
    }

    fn inspect(
        &mut self,
        scope: Scope,
        bound: &mut GpuBound<'_>,
        norm: bool,
    ) -> Result<Inspection, RuntimeError> {
        Ok(match (bound, scope) {
            (GpuBound::Flat, Scope::All) => match self.check_flat_grads(norm) {
                Ok(square_sum) => Inspection::Finite { square_sum },
                Err(found) => Inspection::NonFinite(found),
            },
            (GpuBound::Flat, Scope::Tensor(_)) => match &self.pending_non_finite {
                Some(found) => Inspection::NonFinite(found.clone()),
                None => Inspection::Finite { square_sum: None },
            },
            (GpuBound::InPlace { bound, grads }, Scope::All) => {
                if !(self.check_device_grads || norm) || self.groups == 0 {
                    return Ok(Inspection::Finite { square_sum: None });
                }
                let sum = self.square_sum_of(bound);
                if sum.is_finite() {
                    Inspection::Finite {
                        square_sum: Some(sum),
                    }
                } else {
                    let found = self.locate_non_finite_in(grads);
                    Inspection::NonFinite(found.unwrap_or_else(|| changed_since_reduction(sum)))
                }
            }
            // A tensor stepped alone from its own buffer is not scanned.
            (GpuBound::InPlace { .. }, Scope::Tensor(_)) => Inspection::Finite { square_sum: None },
        })
    }

    fn apply(
        &mut self,
        scope: Scope,
        bound: GpuBound<'_>,
        scalars: &[Vec<f32>],
    ) -> Result<(), RuntimeError> {
        self.hold_matrices();
        match (bound, scope) {
            (GpuBound::Flat, Scope::All) => self.launch_every_group(scalars),
            (GpuBound::Flat, Scope::Tensor(id)) => {
                self.upload_scalars(scalars);
                self.run_phases(scope, None);
                let s = &self.segments[id.0];
                // SAFETY: the tensor's groups lie inside the buffers.
                unsafe {
                    launch(
                        &self.client,
                        &self.kernel,
                        &self.buffers,
                        s.first_group as u32,
                        s.groups as u32,
                    )
                };
                self.commit_scoped(self.tensors_in(scope));
            }
            (GpuBound::InPlace { bound, .. }, _) => {
                self.upload_scalars(scalars);
                self.run_phases(scope, Some(&bound));
                self.launch_bound(&bound);
                self.commit_scoped(self.tensors_in(scope));
            }
        }
        self.release_matrices();
        Ok(())
    }
}
