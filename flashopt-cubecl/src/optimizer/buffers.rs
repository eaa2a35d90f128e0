//! The raw device buffers, for trainers on the same cubecl client: weights read in
//! place, gradients copied or written into the flat gradient buffer.

use flashopt_ir::Role;
use flashopt_runtime::core::TensorId;
use flashopt_runtime::error::RuntimeError;

use super::GpuOptimizer;
use crate::cubecl::client::ComputeClient;
use crate::cubecl::server::Handle;
use crate::device::DeviceRuntime;
use crate::device::copy;

impl<R: DeviceRuntime> GpuOptimizer<R> {
    /// Where a tensor lives in the flat device buffers: its element range. Its
    /// parameters are `param_buffer()[range]`, its gradient `grad_buffer()[range]`,
    /// in the plan's dtypes; a trainer on the same cubecl client (burn 0.21 uses
    /// cubecl 0.10 too) reads weights and writes gradients there in place, with no
    /// host copies, and calls [`Self::step`].
    pub fn tensor_range(&self, id: TensorId) -> Result<std::ops::Range<usize>, RuntimeError> {
        self.core.tensor(id)?;
        Ok(self.segments[id.0].elements())
    }

    /// The flat buffer of narrow (or f32) parameters, every tensor's segment in it.
    pub fn param_buffer(&self) -> &Handle {
        &self.buffers[self.part_slot(Role::Param)].0
    }

    /// A handle to [`Self::param_buffer`] from one tensor's first parameter on: the
    /// tensor is its first `tensor_range(id).len()` elements, contiguous, in the
    /// plan's parameter dtype, 64-byte aligned (segments start on whole 32-element
    /// groups). A trainer on the same client reads (never writes) its weights through
    /// it, bounding the read by the tensor's shape; every step updates them in place.
    /// The handle is not cut at the tensor's end: cubecl 0.10 reads such handles
    /// wrongly (burn's element-wise kernels saw zeros in their last 128 elements, a
    /// host read failed; docs/TRAINING.md).
    pub fn param_handle(&self, id: TensorId) -> Result<Handle, RuntimeError> {
        self.core.tensor(id)?;
        Ok(self.segment_handle(Role::Param, id))
    }

    /// As [`Self::param_handle`], for the tensor's gradient in the gradient buffer the
    /// next step reads: a trainer may write the gradient there itself. The view stays
    /// the buffer's across steps and [`Self::write_grads`] (which writes in place).
    /// Calls that replace the buffers end it: [`Self::release_grad_buffer`] (this is an
    /// error after it, until something allocates the buffer again), and `load`,
    /// `import_master_f32` and `replace_tensors`, which upload every buffer anew: take
    /// the views again after them.
    pub fn grad_handle(&self, id: TensorId) -> Result<Handle, RuntimeError> {
        self.core.tensor(id)?;
        if !self.flat_grads {
            return Err(RuntimeError::NoGradBuffer);
        }
        Ok(self.segment_handle(Role::Gradient, id))
    }

    fn segment_handle(&self, role: Role, id: TensorId) -> Handle {
        let slot = self.part_slot(role);
        let size = self.layout[slot].element_bytes() as u64;
        let start = self.segments[id.0].elements().start as u64;
        self.buffers[slot].0.clone().offset_start(start * size)
    }

    /// Copy one tensor's gradient from a device buffer of the same client (for
    /// instance one a trainer's backward pass wrote) into the gradient buffer, on the
    /// device, in stream order. `src` holds the gradient contiguously in the plan's
    /// gradient dtype, from its first byte. The next [`Self::step`] scans it for NaN
    /// and infinity on the device (unless turned off).
    pub fn copy_grad_from(&mut self, id: TensorId, src: &Handle) -> Result<(), RuntimeError> {
        self.check_grad_source(id, src)?;
        self.ensure_grad_buffer();
        let dtype = self.core.plan().config.grad;
        let r = self.segments[id.0].elements();
        // SAFETY: `src` holds the tensor's elements (checked), the gradient buffer
        // holds the segment.
        unsafe {
            copy::copy_elements(
                &self.client,
                dtype,
                src,
                self.grad_buffer(),
                r.start,
                r.len(),
            );
        }
        self.grads_scanned = false;
        Ok(())
    }

    /// That `src` can hold tensor `id`'s gradient: its `len` values in the plan's
    /// gradient dtype.
    pub(super) fn check_grad_source(&self, id: TensorId, src: &Handle) -> Result<(), RuntimeError> {
        let name = &self.core.tensor(id)?.name;
        let len = self.segments[id.0].len;
        let dtype = self.core.plan().config.grad;
        let needed = (len * dtype.size_bytes()) as u64;
        if src.size_in_used() < needed {
            return Err(RuntimeError::SourceTooSmall {
                name: name.clone(),
                bytes: src.size_in_used(),
                needed,
                dtype: dtype.to_string(),
                len,
            });
        }
        Ok(())
    }

    /// Set one tensor's gradient to zero on the device (a parameter the loss did not
    /// reach).
    pub fn zero_grad(&mut self, id: TensorId) -> Result<(), RuntimeError> {
        self.core.tensor(id)?;
        self.ensure_grad_buffer();
        let r = self.segments[id.0].elements();
        // SAFETY: the gradient buffer holds the segment.
        unsafe {
            copy::zero_elements(
                &self.client,
                self.core.plan().config.grad,
                self.grad_buffer(),
                r.start,
                r.len(),
            );
        }
        self.grads_scanned = false;
        Ok(())
    }

    /// The flat gradient buffer the next step reads. Panics after
    /// [`Self::release_grad_buffer`] (until something allocates it again).
    pub fn grad_buffer(&self) -> &Handle {
        self.assert_grad_buffer();
        &self.buffers[self.part_slot(Role::Gradient)].0
    }

    /// Bytes this optimizer holds on the device: every buffer it allocated (every part
    /// of the plan, the gradients included, group info, host scalars and code tables),
    /// padding included.
    pub fn device_bytes(&self) -> usize {
        self.layout
            .iter()
            .zip(&self.buffers)
            .map(|(b, (_, len))| b.element_bytes() * len)
            .sum()
    }

    fn assert_grad_buffer(&self) {
        assert!(
            self.flat_grads,
            "the gradient buffer was released (release_grad_buffer): step with step_with_grads, or allocate it again with copy_grad_from, zero_grad or write_grads"
        );
    }

    pub fn client(&self) -> &ComputeClient<R> {
        &self.client
    }
}
