//! Optimizer state on a GPU (cubecl's CUDA or HIP runtime) and ONE kernel launch per
//! step for every tensor.
//!
//! - this file: the optimizer, its construction and what [`Optimizer`] needs;
//! - [`layout`]: the flat, group-aligned buffers and the bytes in and out;
//! - [`step`]: gradients from the host, the device checks, the launches;
//! - [`buffers`]: the raw device buffers, for trainers that read weights and write
//!   gradients on the device;
//! - [`in_place`]: steps reading each gradient where the trainer left it, without
//!   the flat gradient buffer;
//! - [`phases`]: the reduction passes before the step; [`rows`]: values per row.

mod buffers;
mod columns;
mod in_place;
pub(crate) mod layout;
mod phases;
mod rows;
mod step;

use std::sync::Arc;

use flashopt_ir::interp::{HostTensor, PartData};
use flashopt_ir::{HyperValues, Plan};
use flashopt_runtime::core::{CheckedTensors, Core, Optimizer, TensorInfo, check_tensors};
use flashopt_runtime::error::RuntimeError;
use flashopt_runtime::numerics::{self, NonFinite};
use flashopt_runtime::raw;

use crate::codegen::bindings::{self, Binding, Buffer, MAX_GRADIENT_REGIONS, table_values};
use crate::cubecl::client::ComputeClient;
use crate::cubecl::server::Handle;
use crate::device::launch::FusedStep;
use crate::device::transfer;
use layout::Segment;

pub use crate::codegen::bindings::{Arithmetic, KernelShape};
pub use crate::device::DeviceRuntime;
pub use crate::device::transfer::HostTransfers;

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
/// use flashopt_cubecl::GpuOptimizer;
/// use flashopt_runtime::TensorId;
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
/// let weights = opt.param_handle(TensorId(0))?;
/// // ...the backward pass leaves a bf16 gradient in a buffer of its own...
/// opt.copy_grad_from(TensorId(0), &my_grad)?;
/// // ...and one launch updates the weights in place (skipped on NaN/Inf gradients).
/// let outcome = opt.step()?;
/// # let _ = (weights, outcome); Ok(()) }
/// ```
pub struct GpuOptimizer<R: DeviceRuntime> {
    client: ComputeClient<R>,
    kernel: FusedStep<R>,
    /// The same step reading gradients from several buffers per launch (steps that
    /// read each tensor's gradient where the trainer left it).
    regions_kernel: FusedStep<R>,
    /// The kernels and tables of the plan's reduction phases, if it has any.
    phases: Option<phases::Phases<R>>,
    core: Core,
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
    /// The flat gradient buffer is allocated (see [`Self::release_grad_buffer`]).
    flat_grads: bool,
}

impl<R: DeviceRuntime> GpuOptimizer<R> {
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

    /// The state of a CPU optimizer (its tensors moved, not copied) on the device, with
    /// everything it was set up with: every parameter group's hyper-parameters and each
    /// tensor's group, gradient clipping, the step count. How a trainer adapter places
    /// an optimizer configured on the host.
    pub fn from_cpu(
        client: ComputeClient<R>,
        cpu: flashopt_runtime::CpuOptimizer,
    ) -> Result<GpuOptimizer<R>, RuntimeError> {
        let plan = cpu.plan().clone();
        // Refused before the CPU optimizer's tensors are taken.
        rows::refuse_unsupported(&plan, cpu.core().tensors())?;
        let groups = (0..cpu.param_groups())
            .map(|g| cpu.hyper(g).clone())
            .collect();
        let (clipping, steps) = (cpu.grad_clipping(), cpu.steps_taken());
        let infos: Vec<TensorInfo> = cpu.core().tensors().to_vec();
        let tensors = infos
            .into_iter()
            .zip(cpu.into_tensors())
            .map(|(info, t)| (info.name, info.param_group, t))
            .collect();
        let mut gpu = Self::from_host_grouped(client, plan, groups, tensors, 0)?;
        gpu.set_grad_clipping(clipping)?;
        gpu.set_steps_taken(steps);
        Ok(gpu)
    }

    /// Tensors in parameter groups, each group with its own hyper-parameter values
    /// (`tensors` name their group by index into `groups_hyper`). Still ONE launch per
    /// step: every 32-element group carries its parameter group, which selects its
    /// scalars.
    pub fn from_host_grouped(
        client: ComputeClient<R>,
        plan: Plan,
        groups_hyper: Vec<HyperValues>,
        tensors: Vec<(String, usize, HostTensor)>,
        pad: u8,
    ) -> Result<GpuOptimizer<R>, RuntimeError> {
        // The kernel trusts the plan's invariants (operand types, table ranges, what
        // it stores): a plan built by hand is checked here.
        flashopt_ir::verify::verify(&plan)?;
        let mut core = Core::new(plan, groups_hyper)?;
        for (name, group, t) in &tensors {
            core.add(TensorInfo::new(name.clone(), *group, t.shape()))?;
        }
        rows::refuse_unsupported(core.plan(), core.tensors())?;
        check_tensors(
            core.plan(),
            tensors.iter().map(|(name, _, t)| (name.as_str(), t)),
        )?;
        let kernel = FusedStep::<R>::new(&client, core.plan().clone());
        let regions_kernel = regions_kernel(&client, core.plan(), &kernel);
        let layout = kernel.buffers().to_vec();
        let (segments, groups) = layout::segments(core.tensors());
        let phases = phases::Phases::new(&client, core.plan(), kernel.shape(), &segments);
        let mut opt = GpuOptimizer {
            client,
            kernel,
            regions_kernel,
            phases,
            core,
            segments,
            groups,
            layout,
            buffers: Vec::new(),
            pad,
            pending_non_finite: None,
            grads_scanned: false,
            check_device_grads: true,
            flat_grads: true,
        };
        let hosts: Vec<&HostTensor> = tensors.iter().map(|(_, _, t)| t).collect();
        opt.buffers = transfer::long_lived(&opt.client, || opt.upload(&hosts));
        Ok(opt)
    }

    /// Fresh device buffers holding `tensors` (one per registered tensor), the
    /// gradients set to the padding byte.
    fn upload(&self, tensors: &[&HostTensor]) -> Vec<(Handle, usize)> {
        let plan = self.core.plan();
        let resident: Vec<usize> = plan.resident_parts().map(|(id, _)| id.index()).collect();
        self.layout
            .iter()
            .map(|buffer| {
                let size = buffer.element_bytes();
                // A model without elements binds a buffer of zeros (cubecl rejects empty
                // allocations; `transfer` allocates at least one word).
                let bytes: Vec<u8> = match buffer.role {
                    Binding::Part(i) => match resident.iter().position(|&r| r == i) {
                        Some(k) => {
                            // Written straight into the transfer's chunks.
                            let flat = layout::FlatPart::of_tensors(
                                plan,
                                k,
                                tensors,
                                &self.segments,
                                self.pad,
                            );
                            let fill = |offset: usize, out: &mut [u8]| flat.write(offset, out);
                            let handle = R::upload(&self.client, flat.len(), &fill);
                            return (handle, flat.len() / size);
                        }
                        // A released gradient buffer stays released.
                        None if buffer.role == self.part_role(flashopt_ir::Role::Gradient)
                            && !self.flat_grads =>
                        {
                            vec![0; 4]
                        }
                        None => {
                            let len = self.groups * flashopt_ir::GROUP_SIZE;
                            let handle = transfer::filled(&self.client, len * size, self.pad);
                            return (handle, len);
                        }
                    },
                    Binding::Scalars => {
                        vec![0; bindings::scalar_stride(plan) * self.scalar_rows() * 4]
                    }
                    Binding::GroupInfo => layout::group_info(
                        self.core.tensors(),
                        &self.segments,
                        self.rows_per_tensor(),
                    ),
                    Binding::Partials(_) => vec![0; self.groups.max(1) * size],
                    Binding::Tables => raw::le_bytes(&table_values(plan).0),
                    // Overwritten by each step before it is read.
                    Binding::RowWrite(_) => {
                        vec![self.pad; layout::total_rows(&self.segments).max(1) * size]
                    }
                    Binding::RowValues => {
                        let values = layout::total_rows(&self.segments) * plan.reductions.len();
                        vec![0; values.max(1) * size]
                    }
                    Binding::RowTable => raw::le_bytes(&rows::row_table(&self.segments)),
                    Binding::ColumnWrite(_) => {
                        vec![self.pad; layout::total_columns(&self.segments).max(1) * size]
                    }
                    Binding::ColumnValues => {
                        let values = layout::total_columns(&self.segments)
                            * bindings::column_reductions(plan).len();
                        vec![0; values.max(1) * size]
                    }
                    Binding::ColumnPartials(_) => {
                        vec![0; self.column_layout().column_groups.max(1) * size]
                    }
                    Binding::TileTable => raw::le_bytes(&self.column_layout().tile_words),
                    // Held during a step only (`hold_matrices`).
                    Binding::Matrix(_) => vec![0; size],
                    Binding::GradientRegion(_) => {
                        unreachable!("the one-region kernel's layout has no region bindings")
                    }
                };
                (
                    transfer::upload_bytes(&self.client, &bytes),
                    bytes.len() / size,
                )
            })
            .collect()
    }

    /// Where the column partials and tiles lie (a plan with column reductions).
    fn column_layout(&self) -> &columns::ColumnLayout {
        self.phases
            .as_ref()
            .and_then(|p| p.column_layout())
            .expect("a plan with column reductions has their layout")
    }

    fn slot(&self, role: Binding) -> usize {
        bindings::slot(&self.layout, role)
    }

    /// Bind another buffer to the plan's part with `role`: `len` elements of its
    /// storage, at least the groups' (a sharded rank binds views of the whole
    /// model's parameter buffer and its reduce-scatter output).
    pub(crate) fn rebind(&mut self, role: flashopt_ir::Role, handle: Handle, len: usize) {
        assert!(
            len >= self.groups * flashopt_ir::GROUP_SIZE,
            "a buffer for every group"
        );
        let slot = self.part_slot(role);
        self.buffers[slot] = (handle, len);
    }

    /// The kernel buffer role of the plan's part with `role`.
    fn part_role(&self, role: flashopt_ir::Role) -> Binding {
        Binding::Part(self.core.plan().part_with_role(role).index())
    }

    /// The kernel buffer of the plan's part with `role`.
    fn part_slot(&self, role: flashopt_ir::Role) -> usize {
        self.slot(self.part_role(role))
    }

    /// Spread each group over units differently (tuning; the default shape is the
    /// measured best, see docs/BENCHMARKS.md). The buffers stay as they are.
    pub fn set_kernel_shape(&mut self, shape: KernelShape) {
        let shape = shape.with_gradient_regions(1).expect("one region");
        self.kernel = FusedStep::with_shape(&self.client, self.core.plan().clone(), shape);
        self.regions_kernel = regions_kernel(&self.client, self.core.plan(), &self.kernel);
        self.phases = phases::Phases::new(&self.client, self.core.plan(), shape, &self.segments);
        self.layout = self.kernel.buffers().to_vec();
    }

    /// Opt in to approximate divisions and square roots ([`Arithmetic::Approximate`];
    /// flashoptim's Triton kernels approximate them too, with other instructions),
    /// giving up bit-equality with the CPU reference; or back to exact ones (the
    /// default).
    pub fn set_arithmetic(&mut self, arithmetic: Arithmetic) {
        let shape = self.kernel_shape().with_arithmetic(arithmetic);
        self.set_kernel_shape(shape);
    }

    pub fn kernel_shape(&self) -> KernelShape {
        self.kernel.shape()
    }

    /// Read every tensor's state back to the host.
    pub fn download(&self) -> Vec<(String, HostTensor)> {
        let tensors = self.download_tensors();
        self.core
            .tensors()
            .iter()
            .map(|t| t.name.clone())
            .zip(tensors)
            .collect()
    }

    /// Every tensor's state read back, in registration order, with its registered
    /// shape.
    pub(crate) fn download_tensors(&self) -> Vec<HostTensor> {
        // Only the resident parts: not the gradients, scalars, group info or tables.
        let flat = layout::download(
            self.core.plan(),
            &self.layout,
            &self.segments,
            |slot, targets| transfer::download_into(&self.client, &self.buffers[slot].0, targets),
        );
        flat.into_iter()
            .zip(self.core.tensors())
            .map(|(t, info)| HostTensor::from_parts(info.shape(), t.parts))
            .collect()
    }

    /// Each tensor's values in the per-element part with `role`, read back without
    /// the padding.
    fn read_per_tensor(&self, role: flashopt_ir::Role) -> Vec<PartData> {
        let plan = self.core.plan();
        let storage = plan.part(plan.part_with_role(role)).storage;
        let (handle, _) = &self.buffers[self.part_slot(role)];
        layout::per_tensor(storage, &self.segments, |targets| {
            transfer::download_into(&self.client, handle, targets)
        })
    }
}

impl<R: DeviceRuntime> Optimizer for GpuOptimizer<R> {
    fn core(&self) -> &Core {
        &self.core
    }

    fn core_mut(&mut self) -> &mut Core {
        &mut self.core
    }

    fn with_tensors<T>(&self, f: impl FnOnce(&[&HostTensor]) -> T) -> T {
        let tensors = self.download_tensors();
        let refs: Vec<&HostTensor> = tensors.iter().collect();
        f(&refs)
    }

    /// Fresh buffers for the new state: handles taken before (a trainer's views of
    /// the weights) must be taken again.
    fn store_tensors(&mut self, tensors: CheckedTensors) {
        let refs: Vec<&HostTensor> = tensors.as_slice().iter().collect();
        self.buffers = transfer::long_lived(&self.client, || self.upload(&refs));
        self.pending_non_finite = None;
        self.grads_scanned = false;
    }

    fn param_max_abs(&self) -> Vec<f32> {
        self.read_per_tensor(flashopt_ir::Role::Param)
            .iter()
            .map(numerics::max_abs)
            .collect()
    }
}

/// `kernel`'s step with the most gradient regions per launch.
fn regions_kernel<R: DeviceRuntime>(
    client: &ComputeClient<R>,
    plan: &Arc<Plan>,
    kernel: &FusedStep<R>,
) -> FusedStep<R> {
    let shape = kernel
        .shape()
        .with_gradient_regions(MAX_GRADIENT_REGIONS)
        .expect("the most regions a launch binds");
    FusedStep::with_shape(client, plan.clone(), shape)
}
