//! A GPU step: gradients from the host (scanned on the way), the device reduction
//! that finds NaN/Inf and the clipping norm, the host scalars, and the launches.

use flashopt_cubecl::bindings::Role;
use flashopt_cubecl::cubecl::server::Handle;
use flashopt_cubecl::launch::launch;
use flashopt_cubecl::reduce;
use flashopt_cubecl::transfer::{self, HostTransfers};
use flashopt_ir::interp::{self, GradBuf, PartData};
use flashopt_ir::{Extent, Role as PartRole};

use super::GpuOptimizer;
use super::layout::FlatPart;
use crate::core::TensorId;
use crate::error::RuntimeError;
use crate::numerics::{self, NonFinite, StepOutcome};
use crate::raw;

impl<R: HostTransfers> GpuOptimizer<R> {
    /// Upload this step's gradients (one per tensor, in order) from the host as a new
    /// gradient buffer. Trainers whose gradients are already on the device write them
    /// into [`Self::grad_buffer`] instead (the next [`Self::step`] scans those on the
    /// device). Gradients written here are scanned for NaN and infinity on the way: the
    /// next [`Self::step`] is then skipped.
    pub fn write_grads(&mut self, grads: &[GradBuf<'_>]) -> Result<(), RuntimeError> {
        if grads.len() != self.segments.len() {
            return Err(RuntimeError::GradCount {
                expected: self.segments.len(),
                found: grads.len(),
            });
        }
        let dtype = self.core.plan.config.grad;
        for ((t, s), g) in self.core.tensors.iter().zip(&self.segments).zip(grads) {
            interp::check_grad(&self.core.plan, s.len, *g)
                .map_err(RuntimeError::in_tensor(&t.name))?;
        }
        let flat = FlatPart::new(
            grads.iter().map(|g| g.as_part()),
            &self.segments,
            Extent::Element,
            dtype.size_bytes(),
            self.pad,
        );
        let slot = self.part_slot(PartRole::Gradient);
        if flat.len() > 0 {
            // Written straight into the transfer's chunks.
            let fill = |offset: usize, out: &mut [u8]| flat.write(offset, out);
            let handle =
                transfer::long_lived(&self.client, || R::upload(&self.client, flat.len(), &fill));
            self.buffers[slot] = (handle, flat.len() / dtype.size_bytes());
            self.flat_grads = true;
        }
        let named = self.core.tensors.iter().map(|t| t.name.as_str());
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
        let info = &self.buffers[self.slot(Role::GroupInfo)].0;
        // SAFETY: the gradient buffer holds `groups` groups and the info buffer a word
        // per group (`upload`; `write_grads` keeps the size).
        unsafe {
            reduce::launch_square_sums(
                &self.client,
                self.core.plan.config.grad,
                grad,
                info,
                self.groups,
            )
        }
    }

    /// Where the non-finite gradient values are: reads the gradients back (only
    /// after the reduction found some).
    pub(crate) fn locate_non_finite(&self) -> Option<NonFinite> {
        self.scan_grads(&self.read_per_tensor(PartRole::Gradient))
    }

    /// The non-finite values of gradients read back, one per tensor in order.
    pub(super) fn scan_grads(&self, grads: &[PartData]) -> Option<NonFinite> {
        let named = self.core.tensors.iter().map(|t| t.name.as_str());
        let values = grads
            .iter()
            .map(|g| g.as_grad().expect("gradients are floats"));
        numerics::scan_step(named.zip(values))
    }

    /// Before a step: reduce the gradients if clipping or the device scan asks for
    /// it. `Err` holds the non-finite values that skip the step; `Ok` the gradient
    /// scale (1 without clipping). The host scan of [`Self::write_grads`] answers for
    /// the next step only.
    fn check_grads(&mut self) -> Result<f32, NonFinite> {
        let scanned_on_host = std::mem::take(&mut self.grads_scanned);
        if let Some(found) = self.pending_non_finite.take() {
            return Err(found);
        }
        let scan = self.check_device_grads && !scanned_on_host;
        if self.core.max_grad_norm.is_none() && !scan {
            return Ok(1.0);
        }
        let sum = self.grad_square_sum();
        if !sum.is_finite() {
            return Err(self.locate_non_finite().unwrap_or_else(|| NonFinite {
                // The gradients changed between the reduction and the read back.
                tensor: String::new(),
                index: 0,
                value: sum as f32,
                count: 0,
            }));
        }
        Ok(self.core.clip_factor(sum))
    }

    pub(super) fn upload_scalars(
        &mut self,
        step: u64,
        grad_scale: f32,
    ) -> Result<(), RuntimeError> {
        let scalars: Vec<f32> = self
            .core
            .kernel_scalars(step, grad_scale)?
            .into_iter()
            .flatten()
            .collect();
        if !scalars.is_empty() {
            let slot = self.slot(Role::Scalars);
            self.buffers[slot] = (
                self.client.create_from_slice(&raw::le_bytes(&scalars)),
                scalars.len(),
            );
        }
        Ok(())
    }

    /// One step of every tensor: ONE kernel launch (after one reduction pass when
    /// clipping is on or device-written gradients are scanned). Skipped, with nothing
    /// changed, when the gradients hold NaN or infinity.
    pub fn step(&mut self) -> Result<StepOutcome, RuntimeError> {
        if !self.flat_grads {
            return Err(RuntimeError::NoGradBuffer);
        }
        let grad_scale = match self.check_grads() {
            Ok(scale) => scale,
            Err(found) => return Ok(StepOutcome::Skipped(found)),
        };
        self.apply(grad_scale)?;
        Ok(StepOutcome::Applied)
    }

    /// The step's launch once the gradients are checked: scalars with `grad_scale`,
    /// the fused kernel over every group, the step counted.
    pub(crate) fn apply(&mut self, grad_scale: f32) -> Result<(), RuntimeError> {
        let step = self.core.steps_taken + 1;
        self.upload_scalars(step, grad_scale)?;
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
        self.core.steps_taken = step;
        Ok(())
    }

    /// Step one tensor alone (gradient release). The step counter is shared: call
    /// [`Self::finish_step`] once every tensor of the step is done. Skipped when the
    /// gradients last written by [`Self::write_grads`] hold NaN or infinity; gradients
    /// written on the device are not scanned here (each tensor's update would have to
    /// wait for its own reduction). Clipping needs the whole step: an error.
    pub fn step_tensor(&mut self, id: TensorId) -> Result<StepOutcome, RuntimeError> {
        if self.core.max_grad_norm.is_some() {
            return Err(RuntimeError::ClipNeedsWholeStep);
        }
        if !self.flat_grads {
            return Err(RuntimeError::NoGradBuffer);
        }
        self.core.tensor(id)?;
        if let Some(found) = &self.pending_non_finite {
            return Ok(StepOutcome::Skipped(found.clone()));
        }
        let step = self.core.steps_taken + 1;
        self.upload_scalars(step, 1.0)?;
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
        Ok(StepOutcome::Applied)
    }

    /// Count a step whose tensors were stepped one by one with [`Self::step_tensor`].
    pub fn finish_step(&mut self) {
        self.core.steps_taken += 1;
    }
}
