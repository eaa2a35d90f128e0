//! Launching the fused step on a cubecl runtime (CUDA, HIP).

use std::marker::PhantomData;
use std::sync::Arc;

use cubecl::ir::{AddressType, DeviceProperties, StorageType};
use cubecl::prelude::*;
use cubecl::server::Handle;
use flashopt_ir::plan::Plan;

use crate::bindings::{Buffer, KernelShape, buffers};
use crate::define::{Scheduling, define};
use crate::emit::{CUBE_DIM, settings};

/// The fused step of one plan, as cubecl compiles and caches it. Kernels are cached by
/// the plan's full text and shape: two plans share a kernel exactly when they print
/// alike and spread over units alike.
pub struct FusedStep<R: Runtime> {
    plan: Arc<Plan>,
    shape: KernelShape,
    key: String,
    settings: KernelSettings,
    device: DeviceProperties,
    scheduling: Scheduling,
    runtime: PhantomData<R>,
}

impl<R: Runtime> Clone for FusedStep<R> {
    fn clone(&self) -> Self {
        FusedStep {
            plan: self.plan.clone(),
            shape: self.shape,
            key: self.key.clone(),
            settings: self.settings.clone(),
            device: self.device.clone(),
            scheduling: self.scheduling,
            runtime: PhantomData,
        }
    }
}

impl<R: Runtime> FusedStep<R> {
    pub fn new(client: &ComputeClient<R>, plan: Arc<Plan>) -> FusedStep<R> {
        FusedStep::with_shape(client, plan, KernelShape::default())
    }

    pub fn with_shape(
        client: &ComputeClient<R>,
        plan: Arc<Plan>,
        shape: KernelShape,
    ) -> FusedStep<R> {
        FusedStep {
            key: format!("{shape:?}\n{plan}"),
            shape,
            settings: settings(&plan),
            device: client.properties().clone(),
            // HIP's wavefronts run in lockstep; anything else is treated as CUDA.
            scheduling: match R::name(client) {
                "hip" => Scheduling::Lockstep,
                _ => Scheduling::Independent,
            },
            plan,
            runtime: PhantomData,
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The buffers to bind, in order.
    pub fn buffers(&self) -> Vec<Buffer> {
        buffers(&self.plan, self.shape)
    }

    pub fn shape(&self) -> KernelShape {
        self.shape
    }
}

impl<R: Runtime> KernelMetadata for FusedStep<R> {
    fn name(&self) -> &'static str {
        "flashopt_fused_step"
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>()
            .cube_dim(self.settings.cube_dim)
            .address_type(AddressType::U32)
            .info(self.key.clone())
    }

    fn address_type(&self) -> StorageType {
        AddressType::U32.unsigned_type()
    }
}

impl<R: Runtime> CubeKernel for FusedStep<R> {
    fn define(&self) -> KernelDefinition {
        define(
            &self.plan,
            self.shape,
            (R::target_properties(), self.scheduling),
            &self.device,
            self.settings.clone(),
        )
    }
}

/// Launch the step over groups `first..first + count`. `handles` holds one buffer per
/// entry of [`FusedStep::buffers`], each with its length in elements.
///
/// # Safety
/// Every buffer must hold at least `(first + count) * 32` elements (scales and group
/// info: `first + count`, scalars: what the group info words index), laid out as
/// [`crate::define`] describes.
pub unsafe fn launch<R: Runtime>(
    client: &ComputeClient<R>,
    kernel: &FusedStep<R>,
    handles: &[(Handle, usize)],
    first: u32,
    count: u32,
) {
    unsafe { launch_with_gradient_at(client, kernel, handles, first, count, 0) }
}

/// As [`launch`], with a gradient binding whose element 0 is group
/// `gradient_first`'s first element (a tensor's gradient where the trainer left it):
/// group `g` reads its gradient at `(g - gradient_first) * 32`.
///
/// # Safety
/// As [`launch`], except that the gradient binding must hold
/// `(first + count - gradient_first) * 32` elements, and `gradient_first <= first`.
pub unsafe fn launch_with_gradient_at<R: Runtime>(
    client: &ComputeClient<R>,
    kernel: &FusedStep<R>,
    handles: &[(Handle, usize)],
    first: u32,
    count: u32,
    gradient_first: u32,
) {
    assert!(
        gradient_first <= first,
        "the gradient binding starts at or before the launch"
    );
    if count == 0 {
        return;
    }
    let layout = kernel.buffers();
    assert_eq!(layout.len(), handles.len(), "one handle per kernel buffer");
    let mut launcher = KernelLauncher::<R>::new(kernel.settings.clone());
    for (buffer, (handle, len)) in layout.iter().zip(handles) {
        launcher.register_array(
            unsafe { ArrayArg::from_raw_parts(handle.clone(), *len) },
            buffer.ty(),
        );
    }
    launcher.register_scalar(count);
    launcher.register_scalar(first);
    // The contraction barrier's operand (`ops::veiled`): always 0.
    launcher.register_scalar(0.0f32);
    launcher.register_scalar(gradient_first);
    let units = count
        .checked_mul(kernel.shape.units_per_group() as u32)
        .expect("fewer than 2^32 units per launch");
    let cubes = units.div_ceil(CUBE_DIM);
    unsafe { launcher.launch_unchecked(CubeCount::Static(cubes, 1, 1), kernel.clone(), client) };
}
