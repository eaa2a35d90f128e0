//! Optimizer state on a GPU (cubecl's CUDA or HIP runtime) and ONE kernel launch per
//! step for every tensor.
//!
//! Every role (narrow parameters, corrections, gradients, each state's codes and
//! scales) is one flat device buffer; each tensor occupies a segment padded to whole
//! 32-element groups, so groups never straddle tensors and a state's group scales
//! line up with its codes. A u32 per group gives the kernel the group's real length
//! (padding never enters a group maximum) and its parameter group.

use std::path::Path;
use std::sync::Arc;

use flashopt_cubecl::cubecl::Runtime;
use flashopt_cubecl::cubecl::client::ComputeClient;
use flashopt_cubecl::cubecl::server::Handle;
use flashopt_cubecl::define::{Buffer, KernelShape, Role};
use flashopt_cubecl::launch::{FusedStep, launch};
use flashopt_cubecl::{copy, reduce};
use flashopt_ir::def::Value;
use flashopt_ir::interp::{GradBuf, HostTensor, ParamData};
use flashopt_ir::{GROUP_SIZE, HyperValues, Plan};

use crate::checkpoint::{self, CheckpointError, Entry, Expected};
use crate::clip;
use crate::cpu::{RuntimeError, TensorId, lr_of};
use crate::numerics::{self, NonFinite, NumericsWarning, StepOutcome};
use crate::raw::{self, Part};

struct Segment {
    name: String,
    param_group: usize,
    len: usize,
    first_group: usize,
    groups: usize,
}

impl Segment {
    /// The tensor's elements in a flat per-element buffer.
    fn elements(&self) -> std::ops::Range<usize> {
        let start = self.first_group * GROUP_SIZE;
        start..start + self.len
    }

    /// The tensor's bytes in a flat per-element buffer read back to the host.
    fn bytes_in<'b>(&self, buffer: &'b [u8], element_bytes: usize) -> &'b [u8] {
        let r = self.elements();
        &buffer[r.start * element_bytes..r.end * element_bytes]
    }
}

/// An optimizer whose state lives on a cubecl device.
///
/// Trainers that are not burn use the raw buffers: the weights are read in place
/// through [`Self::param_handle`], gradients are copied in on the device with
/// [`Self::copy_grad_from`] (or written straight into [`Self::grad_handle`]), and
/// [`Self::step`] is ONE fused launch:
///
/// ```no_run
/// # fn demo(my_grad: flashopt_cubecl::cubecl::server::Handle) -> Result<(), flashopt_runtime::RuntimeError> {
/// use flashopt_cubecl::cubecl::Runtime;
/// use flashopt_cubecl::cubecl::cuda::{CudaDevice, CudaRuntime};
/// use flashopt_ir::interp::HostTensor;
/// use flashopt_ir::{HyperValues, MasterMode, PlanConfig, def::*};
/// use flashopt_runtime::{GpuOptimizer, TensorId};
///
/// let mut def = OptimizerDef::new("sgd");
/// def.hyper("lr", 0.1, Range::at_least(0.0));
/// def.assign("p", name("p") - name("lr") * name("g"));
/// let plan = flashopt_ir::compile(&def, PlanConfig::bf16(MasterMode::Int8)).unwrap();
/// // The trainer's own client: the optimizer allocates on it and launches in its order.
/// let client = CudaRuntime::client(&CudaDevice::default());
/// let w = HostTensor::from_f32(&plan, &[0.5; 1000]);
/// let hyper = HyperValues::defaults(&plan.hyper_params);
/// let mut opt = GpuOptimizer::from_host(client, plan, hyper, vec![("w".into(), w)])?;
/// // Every step: the forward pass reads the first 1000 bf16 values behind this handle...
/// let weights = opt.param_handle(TensorId(0));
/// // ...the backward pass leaves a bf16 gradient in a buffer of its own...
/// opt.copy_grad_from(TensorId(0), &my_grad)?;
/// // ...and one launch updates the weights in place (skipped on NaN/Inf gradients).
/// let outcome = opt.step()?;
/// # let _ = (weights, outcome); Ok(()) }
/// ```
pub struct GpuOptimizer<R: Runtime> {
    client: ComputeClient<R>,
    kernel: FusedStep<R>,
    plan: Arc<Plan>,
    /// One set of hyper-parameter values per parameter group.
    hyper: Vec<HyperValues>,
    steps_taken: u64,
    segments: Vec<Segment>,
    groups: usize,
    /// The kernel's buffers in binding order, and for each its handle and length in
    /// elements.
    layout: Vec<Buffer>,
    buffers: Vec<(Handle, usize)>,
    pad: u8,
    /// Non-finite values found in the gradients last written from the host.
    pending_non_finite: Option<NonFinite>,
    /// The gradient buffer was written by [`Self::write_grads`] (and scanned there)
    /// since the last step.
    grads_scanned: bool,
    /// Scan gradients written on the device for NaN/infinity before each step.
    check_device_grads: bool,
    max_grad_norm: Option<f64>,
    last_grad_norm: Option<f64>,
}

fn push_le<const N: usize>(out: &mut Vec<u8>, bytes: [u8; N]) {
    out.extend_from_slice(&bytes);
}

/// The part of a tensor's state a buffer role holds.
fn part_of(role: Role) -> Part {
    match role {
        Role::Param => Part::Param,
        Role::Correction => Part::Correction,
        Role::StateCodes(k) => Part::Codes(k),
        Role::StateScales(k) => Part::Scales(k),
        Role::Grad | Role::Scalars | Role::GroupInfo => unreachable!("not tensor state"),
    }
}

/// The buffer role holding a part of a tensor's state.
fn role_of(part: Part) -> Role {
    match part {
        Part::Param => Role::Param,
        Part::Correction => Role::Correction,
        Part::Codes(k) => Role::StateCodes(k),
        Part::Scales(k) => Role::StateScales(k),
    }
}

/// Where a tensor's part starts in its buffer, in elements: scales have one element
/// per group, the other parts one per parameter.
fn part_start(part: Part, first_group: usize) -> usize {
    match part {
        Part::Scales(_) => first_group,
        _ => first_group * GROUP_SIZE,
    }
}

/// A tensor's bytes for one buffer, padded to `groups` groups.
fn role_bytes(t: &HostTensor, buffer: &Buffer, groups: usize, pad: u8) -> Vec<u8> {
    let part = part_of(buffer.role);
    let mut out = raw::part_bytes(t, part);
    out.resize(part_start(part, groups) * buffer.element_bytes(), pad);
    out
}

impl<R: Runtime> GpuOptimizer<R> {
    /// Upload tensors' optimizer state (e.g. [`HostTensor::from_f32`]) to the device.
    pub fn from_host(
        client: ComputeClient<R>,
        plan: Plan,
        hyper: HyperValues,
        tensors: Vec<(String, HostTensor)>,
    ) -> Result<GpuOptimizer<R>, RuntimeError> {
        Self::from_host_padded(client, plan, hyper, tensors, 0)
    }

    /// As [`Self::from_host`], with every padding byte set to `pad`. Correctness tests
    /// poison padding (`0xFF`: NaN parameters and scales) to show it never leaks
    /// into real elements.
    pub fn from_host_padded(
        client: ComputeClient<R>,
        plan: Plan,
        hyper: HyperValues,
        tensors: Vec<(String, HostTensor)>,
        pad: u8,
    ) -> Result<GpuOptimizer<R>, RuntimeError> {
        let tensors = tensors.into_iter().map(|(name, t)| (name, 0, t)).collect();
        Self::from_host_grouped(client, plan, vec![hyper], tensors, pad)
    }

    /// Tensors in parameter groups, each group with its own hyper-parameter values
    /// (`tensors` name their group by index into `groups`). Still ONE launch per step:
    /// every 32-element group carries its parameter group, which selects its scalars.
    pub fn from_host_grouped(
        client: ComputeClient<R>,
        plan: Plan,
        groups_hyper: Vec<HyperValues>,
        tensors: Vec<(String, usize, HostTensor)>,
        pad: u8,
    ) -> Result<GpuOptimizer<R>, RuntimeError> {
        for (name, group, _) in &tensors {
            if *group >= groups_hyper.len() || *group >= 1 << 24 {
                return Err(RuntimeError::ParamGroup {
                    name: name.clone(),
                    group: *group,
                    groups: groups_hyper.len(),
                });
            }
        }
        for values in &groups_hyper {
            values.check_for(&plan.hyper_params)?;
        }
        let hyper = groups_hyper;
        let plan = Arc::new(plan);
        let kernel = FusedStep::<R>::new(&client, plan.clone());
        let mut segments = Vec::new();
        let mut groups = 0;
        for (name, param_group, t) in &tensors {
            let g = t.len().div_ceil(GROUP_SIZE);
            segments.push(Segment {
                name: name.clone(),
                param_group: *param_group,
                len: t.len(),
                first_group: groups,
                groups: g,
            });
            groups += g;
        }
        let mut buffers = Vec::new();
        let layout = kernel.buffers();
        for buffer in &layout {
            let bytes: Vec<u8> = match buffer.role {
                Role::Grad => vec![pad; groups * GROUP_SIZE * buffer.element_bytes()],
                Role::Scalars => vec![0; plan.host.scalars.len().max(1) * hyper.len().max(1) * 4],
                Role::GroupInfo => {
                    let mut info = Vec::with_capacity(groups * 4);
                    for s in &segments {
                        for g in 0..s.groups {
                            let len = (s.len - g * GROUP_SIZE).min(GROUP_SIZE) as u32;
                            let word = len | ((s.param_group as u32) << 8);
                            push_le(&mut info, word.to_le_bytes());
                        }
                    }
                    info
                }
                _ => tensors
                    .iter()
                    .zip(&segments)
                    .flat_map(|((_, _, t), s)| role_bytes(t, buffer, s.groups, pad))
                    .collect(),
            };
            let len = bytes.len() / buffer.element_bytes();
            // cubecl rejects empty allocations; a model without elements binds one element.
            let bytes = if bytes.is_empty() {
                vec![0; buffer.element_bytes() * buffer.vector]
            } else {
                bytes
            };
            buffers.push((client.create_from_slice(&bytes), len));
        }
        Ok(GpuOptimizer {
            client,
            kernel,
            plan,
            hyper,
            steps_taken: 0,
            segments,
            groups,
            layout,
            buffers,
            pad,
            pending_non_finite: None,
            grads_scanned: false,
            check_device_grads: true,
            max_grad_norm: None,
            last_grad_norm: None,
        })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn steps_taken(&self) -> u64 {
        self.steps_taken
    }

    /// Continue from a step count (state loaded from elsewhere).
    pub fn set_steps_taken(&mut self, steps: u64) {
        self.steps_taken = steps;
    }

    /// Change a hyper-parameter of every parameter group.
    pub fn set_hyper(&mut self, name: &str, value: impl Into<Value>) -> Result<(), RuntimeError> {
        let value = value.into();
        // Check against one group first so that an error changes nothing.
        let mut first = self.hyper[0].clone();
        first.set(name, value)?;
        for h in &mut self.hyper {
            h.set(name, value)?;
        }
        Ok(())
    }

    /// Change a hyper-parameter of one parameter group.
    pub fn set_group_hyper(
        &mut self,
        group: usize,
        name: &str,
        value: impl Into<Value>,
    ) -> Result<(), RuntimeError> {
        let groups = self.hyper.len();
        let h = self
            .hyper
            .get_mut(group)
            .ok_or_else(|| RuntimeError::ParamGroup {
                name: name.to_string(),
                group,
                groups,
            })?;
        h.set(name, value)?;
        Ok(())
    }

    fn slot(&self, role: Role) -> usize {
        self.layout
            .iter()
            .position(|b| b.role == role)
            .expect("the plan has this buffer")
    }

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
        let dtype = self.plan.config.grad;
        let mut bytes = Vec::with_capacity(self.groups * GROUP_SIZE * dtype.size_bytes());
        for (s, g) in self.segments.iter().zip(grads) {
            if g.dtype() != dtype || g.len() != s.len {
                return Err(RuntimeError::Tensor {
                    name: s.name.clone(),
                    source: flashopt_ir::interp::InterpError::Length {
                        tensor: format!("gradient ({} of {} elements)", g.dtype(), g.len()),
                        expected: s.len,
                        found: g.len(),
                        extra: "",
                    },
                });
            }
            let start = bytes.len();
            match *g {
                GradBuf::Bf16(v) => raw::extend_le(&mut bytes, v),
                GradBuf::F16(v) => raw::extend_le(&mut bytes, v),
                GradBuf::F32(v) => raw::extend_le(&mut bytes, v),
            }
            bytes.resize(start + s.groups * GROUP_SIZE * dtype.size_bytes(), self.pad);
        }
        let slot = self.slot(Role::Grad);
        if !bytes.is_empty() {
            self.buffers[slot].0 = self.client.create_from_slice(&bytes);
        }
        let named = self.segments.iter().map(|s| s.name.as_str());
        self.pending_non_finite = numerics::scan_step(named.zip(grads.iter().copied()));
        self.grads_scanned = true;
        Ok(())
    }

    /// Clip the global gradient norm of every later step to `max_norm` (torch's
    /// `clip_grad_norm_`; see [`crate::clip`]), or stop clipping with `None`. Each
    /// step then runs one reduction over the gradients (which also finds NaN and
    /// infinity) and reads its result back before the update, which applies the
    /// factor inside the fused kernel.
    pub fn set_grad_clipping(&mut self, max_norm: Option<f64>) -> Result<(), RuntimeError> {
        self.max_grad_norm = max_norm.map(clip::check_max_norm).transpose()?;
        if self.max_grad_norm.is_some() && self.plan.grad_scale.is_none() {
            self.plan = Arc::new(self.plan.with_grad_scale());
            let shape = self.kernel_shape();
            self.set_kernel_shape(shape);
        }
        Ok(())
    }

    pub fn grad_clipping(&self) -> Option<f64> {
        self.max_grad_norm
    }

    /// The global gradient norm of the last step that measured it (clipping on, or
    /// gradients scanned on the device).
    pub fn last_grad_norm(&self) -> Option<f64> {
        self.last_grad_norm
    }

    /// Whether [`Self::step`] scans gradients written on the device (not through
    /// [`Self::write_grads`]) for NaN and infinity: one reduction pass and a read of
    /// its result before each step. On by default; a trainer that checks its
    /// gradients itself can turn it off.
    pub fn set_check_device_grads(&mut self, on: bool) {
        self.check_device_grads = on;
    }

    /// The real gradient elements' sum of squares, on the device.
    fn grad_square_sum(&self) -> f64 {
        let grad = &self.buffers[self.slot(Role::Grad)].0;
        let info = &self.buffers[self.slot(Role::GroupInfo)].0;
        // SAFETY: the gradient buffer holds `groups` groups and the info buffer a word
        // per group (`from_host_grouped`; `write_grads` keeps the size).
        unsafe {
            reduce::grad_square_sum(&self.client, self.plan.config.grad, grad, info, self.groups)
        }
    }

    /// Where the non-finite gradient values are: reads the gradients back (only
    /// after the reduction found some).
    fn locate_non_finite(&self) -> Option<NonFinite> {
        let bytes = self
            .client
            .read_one_unchecked(self.grad_buffer().clone())
            .to_vec();
        let dtype = self.plan.config.grad;
        let size = dtype.size_bytes();
        // Gradients have the parameters' element types: decode them the same way.
        let grads: Vec<(&str, ParamData)> = self
            .segments
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    raw::param_data(dtype, s.bytes_in(&bytes, size)),
                )
            })
            .collect();
        numerics::scan_step(grads.iter().map(|(name, g)| (*name, g.as_grad())))
    }

    /// Before a step: reduce the gradients if clipping or the device scan asks for
    /// it. `Err` holds the non-finite values that skip the step; `Ok` the gradient
    /// scale (1 without clipping).
    /// The host scan of [`Self::write_grads`] answers for the next step only.
    fn check_grads(&mut self) -> Result<f32, NonFinite> {
        let scanned_on_host = std::mem::take(&mut self.grads_scanned);
        if let Some(found) = self.pending_non_finite.take() {
            return Err(found);
        }
        let scan = self.check_device_grads && !scanned_on_host;
        if self.max_grad_norm.is_none() && !scan {
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
        let norm = sum.sqrt();
        self.last_grad_norm = Some(norm);
        Ok(self
            .max_grad_norm
            .map_or(1.0, |max_norm| clip::scale(max_norm, norm)))
    }

    fn upload_scalars(&mut self, step: u64, grad_scale: f32) -> Result<(), RuntimeError> {
        let mut scalars = Vec::new();
        for h in &self.hyper {
            let mut group = self
                .plan
                .kernel_scalars(h, step)
                .map_err(|source| RuntimeError::HostScalars { step, source })?;
            if let Some(slot) = self.plan.grad_scale {
                group[slot] = grad_scale;
            }
            scalars.extend(group);
        }
        if !scalars.is_empty() {
            let bytes: Vec<u8> = scalars.iter().flat_map(|x| x.to_le_bytes()).collect();
            let slot = self.slot(Role::Scalars);
            self.buffers[slot] = (self.client.create_from_slice(&bytes), scalars.len());
        }
        Ok(())
    }

    /// One step of every tensor: ONE kernel launch (after one reduction pass when
    /// clipping is on or device-written gradients are scanned). Skipped, with nothing
    /// changed, when the gradients hold NaN or infinity.
    pub fn step(&mut self) -> Result<StepOutcome, RuntimeError> {
        let grad_scale = match self.check_grads() {
            Ok(scale) => scale,
            Err(found) => return Ok(StepOutcome::Skipped(found)),
        };
        let step = self.steps_taken + 1;
        self.upload_scalars(step, grad_scale)?;
        // SAFETY: every buffer was sized for `self.groups` groups by `from_host`.
        unsafe {
            launch(
                &self.client,
                &self.kernel,
                &self.buffers,
                0,
                self.groups as u32,
            )
        };
        self.steps_taken = step;
        Ok(StepOutcome::Applied)
    }

    /// Step one tensor alone (gradient release). The step counter is shared: call
    /// [`Self::finish_step`] once every tensor of the step is done. Skipped when the
    /// gradients last written by [`Self::write_grads`] hold NaN or infinity; gradients
    /// written on the device are not scanned here (each tensor's update would have to
    /// wait for its own reduction). Clipping needs the whole step: an error.
    pub fn step_tensor(&mut self, id: TensorId) -> Result<StepOutcome, RuntimeError> {
        if self.max_grad_norm.is_some() {
            return Err(RuntimeError::ClipNeedsWholeStep);
        }
        if let Some(found) = &self.pending_non_finite {
            return Ok(StepOutcome::Skipped(found.clone()));
        }
        let step = self.steps_taken + 1;
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

    /// flashoptim's `check_numerics` (see [`crate::CpuOptimizer::check_numerics`]),
    /// with each tensor's parameter group's learning rate. Reads the parameters back.
    pub fn check_numerics(
        &self,
        min_step_relative_to_lr: f64,
    ) -> Result<Vec<NumericsWarning>, RuntimeError> {
        let lrs: Vec<f64> = self
            .hyper
            .iter()
            .map(|h| lr_of(&self.plan, h))
            .collect::<Result<_, _>>()?;
        let bytes = self
            .client
            .read_one_unchecked(self.param_buffer().clone())
            .to_vec();
        let dtype = self.plan.config.param;
        let size = dtype.size_bytes();
        Ok(self
            .segments
            .iter()
            .filter_map(|s| {
                let param = raw::param_data(dtype, s.bytes_in(&bytes, size));
                let max_abs = numerics::max_abs(&param);
                let lr = lrs[s.param_group];
                numerics::check_tensor(
                    &s.name,
                    self.plan.config,
                    lr,
                    min_step_relative_to_lr,
                    max_abs,
                )
            })
            .collect())
    }

    pub fn finish_step(&mut self) {
        self.steps_taken += 1;
    }

    /// Where a tensor lives in the flat device buffers: its element range. Its
    /// parameters are `param_buffer()[range]`, its gradient `grad_buffer()[range]`,
    /// in the plan's dtypes; a trainer on the same cubecl client (burn 0.21 uses
    /// cubecl 0.10 too) reads weights and writes gradients there in place, with no
    /// host copies, and calls [`Self::step`].
    pub fn tensor_range(&self, id: TensorId) -> std::ops::Range<usize> {
        self.segments[id.0].elements()
    }

    /// The flat buffer of narrow (or f32) parameters, every tensor's segment in it.
    pub fn param_buffer(&self) -> &Handle {
        &self.buffers[self.slot(Role::Param)].0
    }

    /// How many tensors the optimizer holds (ids `0..tensor_count()`).
    pub fn tensor_count(&self) -> usize {
        self.segments.len()
    }

    /// A tensor's registered name.
    pub fn tensor_name(&self, id: TensorId) -> &str {
        &self.segments[id.0].name
    }

    /// A handle to [`Self::param_buffer`] from one tensor's first parameter on: the
    /// tensor is its first `tensor_range(id).len()` elements, contiguous, in the
    /// plan's parameter dtype, 64-byte aligned (segments start on whole 32-element
    /// groups). A trainer on the same client reads (never writes) its weights through
    /// it, bounding the read by the tensor's shape; every step updates them in place.
    /// The handle is not cut at the tensor's end: cubecl 0.10 reads such handles
    /// wrongly (burn's element-wise kernels saw zeros in their last 128 elements, a
    /// host read failed; docs/TRAINING.md).
    pub fn param_handle(&self, id: TensorId) -> Handle {
        self.segment_handle(Role::Param, id)
    }

    /// As [`Self::param_handle`], for the tensor's gradient in the gradient buffer the
    /// next step reads: a trainer may write the gradient there itself.
    pub fn grad_handle(&self, id: TensorId) -> Handle {
        self.segment_handle(Role::Grad, id)
    }

    fn segment_handle(&self, role: Role, id: TensorId) -> Handle {
        let slot = self.slot(role);
        let size = self.layout[slot].element_bytes() as u64;
        let start = self.tensor_range(id).start as u64;
        self.buffers[slot].0.clone().offset_start(start * size)
    }

    fn check_id(&self, id: TensorId) -> Result<&Segment, RuntimeError> {
        self.segments.get(id.0).ok_or(RuntimeError::UnknownTensor {
            id: id.0,
            tensors: self.segments.len(),
        })
    }

    /// Copy one tensor's gradient from a device buffer of the same client (for
    /// instance one a trainer's backward pass wrote) into the gradient buffer, on the
    /// device, in stream order. `src` holds the gradient contiguously in the plan's
    /// gradient dtype, from its first byte. The next [`Self::step`] scans it for NaN
    /// and infinity on the device (unless turned off).
    pub fn copy_grad_from(&mut self, id: TensorId, src: &Handle) -> Result<(), RuntimeError> {
        let s = self.check_id(id)?;
        let dtype = self.plan.config.grad;
        let needed = (s.len * dtype.size_bytes()) as u64;
        if src.size_in_used() < needed {
            return Err(RuntimeError::SourceTooSmall {
                name: s.name.clone(),
                bytes: src.size_in_used(),
                needed,
                dtype: dtype.to_string(),
                len: s.len,
            });
        }
        let r = s.elements();
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

    /// Set one tensor's gradient to zero on the device (a parameter the loss did not
    /// reach).
    pub fn zero_grad(&mut self, id: TensorId) -> Result<(), RuntimeError> {
        let s = self.check_id(id)?;
        let r = s.elements();
        // SAFETY: the gradient buffer holds the segment.
        unsafe {
            copy::zero_elements(
                &self.client,
                self.plan.config.grad,
                self.grad_buffer(),
                r.start,
                r.len(),
            );
        }
        self.grads_scanned = false;
        Ok(())
    }

    /// The flat gradient buffer the next step reads.
    pub fn grad_buffer(&self) -> &Handle {
        &self.buffers[self.slot(Role::Grad)].0
    }

    /// Spread each group over units differently (tuning; the default shape is the
    /// measured best, see docs/BENCHMARKS.md). The buffers stay as they are.
    pub fn set_kernel_shape(&mut self, shape: KernelShape) {
        self.kernel = FusedStep::with_shape(&self.client, self.plan.clone(), shape);
        self.layout = self.kernel.buffers();
    }

    pub fn kernel_shape(&self) -> KernelShape {
        self.kernel.shape()
    }

    /// Bytes this optimizer holds on the device: every buffer it allocated (narrow
    /// parameters, corrections, gradients, state codes and scales, group info and
    /// host scalars), padding included.
    pub fn device_bytes(&self) -> usize {
        self.layout
            .iter()
            .zip(&self.buffers)
            .map(|(b, (_, len))| b.element_bytes() * len)
            .sum()
    }

    /// Save the compressed state, step counter and every parameter group's
    /// hyper-parameters (read back from the device; safetensors, written atomically).
    /// The file is the one [`crate::CpuOptimizer::save`] writes for the same state.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<u64, CheckpointError> {
        self.with_entries(|entries| {
            checkpoint::save(
                path.as_ref(),
                &self.plan,
                &self.hyper,
                self.steps_taken,
                entries,
            )
        })
    }

    /// The device state on the host, as checkpoint entries.
    fn with_entries<T>(&self, f: impl FnOnce(&[Entry<'_>]) -> T) -> T {
        let tensors = self.download();
        let entries: Vec<Entry<'_>> = tensors
            .iter()
            .zip(&self.segments)
            .map(|((name, tensor), s)| Entry {
                name,
                param_group: s.param_group,
                tensor,
            })
            .collect();
        f(&entries)
    }

    /// Save f32 master weights and decoded f32 states.
    pub fn export_f32(&self, path: impl AsRef<Path>) -> Result<u64, CheckpointError> {
        self.with_entries(|entries| {
            checkpoint::export_f32(
                path.as_ref(),
                &self.plan,
                &self.hyper,
                self.steps_taken,
                entries,
            )
        })
    }

    /// Restore a checkpoint of this optimizer (same tensors in the same order and
    /// parameter groups). Everything is checked before the device state is replaced:
    /// on error nothing changes.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let expected: Vec<Expected<'_>> = self
            .segments
            .iter()
            .map(|s| Expected {
                name: &s.name,
                len: s.len,
                param_group: s.param_group,
            })
            .collect();
        let restored = checkpoint::load(path.as_ref(), &self.plan, &self.hyper, &expected)?;
        let tensors = self
            .segments
            .iter()
            .zip(restored.tensors)
            .map(|(s, t)| (s.name.clone(), s.param_group, t))
            .collect();
        let shape = self.kernel_shape();
        let mut fresh = GpuOptimizer::from_host_grouped(
            self.client.clone(),
            (*self.plan).clone(),
            restored.hyper,
            tensors,
            self.pad,
        )
        .expect("the checkpoint was checked against this optimizer's tensors and groups");
        fresh.set_kernel_shape(shape);
        fresh.steps_taken = restored.steps_taken;
        fresh.check_device_grads = self.check_device_grads;
        fresh.max_grad_norm = self.max_grad_norm;
        *self = fresh;
        Ok(())
    }

    /// Wait for the device.
    pub fn sync(&self) {
        flashopt_cubecl::cubecl::future::block_on(self.client.sync()).expect("device sync");
    }

    pub fn client(&self) -> &ComputeClient<R> {
        &self.client
    }

    /// Read every tensor's state back to the host.
    pub fn download(&self) -> Vec<(String, HostTensor)> {
        let layout = &self.layout;
        let bytes: Vec<Vec<u8>> = self
            .buffers
            .iter()
            .map(|(h, _)| self.client.read_one_unchecked(h.clone()).to_vec())
            .collect();
        self.segments
            .iter()
            .map(|s| {
                let tensor = raw::assemble(&self.plan, s.len, |part, n| {
                    let i = self.slot(role_of(part));
                    let size = layout[i].element_bytes();
                    let start = part_start(part, s.first_group) * size;
                    Ok::<_, std::convert::Infallible>(&bytes[i][start..start + n * size])
                });
                let Ok(tensor) = tensor;
                (s.name.clone(), tensor)
            })
            .collect()
    }
}
