//! Launching the fused step on a cubecl runtime (CUDA, HIP).

use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;

use cubecl::ir::{AddressType, DeviceProperties, StorageType};
use cubecl::prelude::*;
use cubecl::server::Handle;
use flashopt_ir::Role;
use flashopt_ir::plan::Plan;

use crate::codegen::bindings::{Binding, Buffer, KernelShape, buffers};
use crate::codegen::define::{Scheduling, define};
use crate::codegen::emit::{CUBE_DIM, TargetRuntime, settings};

/// The fused step of one plan, as cubecl compiles and caches it. Kernels are cached by
/// the plan's full text and shape: two plans share a kernel exactly when they print
/// alike and spread over units alike. Every launch clones the kernel and asks its id,
/// so both are cheap: one shared allocation, and a key hashed once.
pub struct FusedStep<R: TargetRuntime> {
    inner: Arc<FusedInner>,
    runtime: PhantomData<R>,
}

struct FusedInner {
    plan: Arc<Plan>,
    /// Which of the plan's passes ([`Plan::passes`]) the kernel runs.
    pass: usize,
    shape: KernelShape,
    key: KernelKey,
    layout: Vec<Buffer>,
    settings: KernelSettings,
    device: DeviceProperties,
    scheduling: Scheduling,
}

/// A kernel's cache key: the plan's text and shape, hashed once when the kernel is
/// made (cubecl hashes and compares the key at every launch).
#[derive(Clone)]
struct KernelKey(Arc<(u64, String)>);

impl KernelKey {
    fn new(text: String) -> KernelKey {
        // `DefaultHasher::new()` has fixed keys: the same text hashes alike in every
        // run (cubecl's persistent kernel cache keys on it).
        let mut hasher = std::hash::DefaultHasher::new();
        text.hash(&mut hasher);
        KernelKey(Arc::new((hasher.finish(), text)))
    }
}

impl Hash for KernelKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.0.hash(state);
    }
}

impl PartialEq for KernelKey {
    fn eq(&self, other: &KernelKey) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl Eq for KernelKey {}

impl std::fmt::Debug for KernelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.1)
    }
}

impl<R: TargetRuntime> Clone for FusedStep<R> {
    fn clone(&self) -> Self {
        FusedStep {
            inner: self.inner.clone(),
            runtime: PhantomData,
        }
    }
}

impl<R: TargetRuntime> FusedStep<R> {
    pub fn new(client: &ComputeClient<R>, plan: Arc<Plan>) -> FusedStep<R> {
        FusedStep::with_shape(client, plan, KernelShape::default())
    }

    pub fn with_shape(
        client: &ComputeClient<R>,
        plan: Arc<Plan>,
        shape: KernelShape,
    ) -> FusedStep<R> {
        let step = plan.phases.len();
        FusedStep::for_pass(client, plan, step, shape)
    }

    /// The kernel of one pass of `plan`: `pass` indexes [`Plan::passes`] (its
    /// reduction phases, then the step). Every pass binds the same buffers.
    pub fn for_pass(
        client: &ComputeClient<R>,
        plan: Arc<Plan>,
        pass: usize,
        shape: KernelShape,
    ) -> FusedStep<R> {
        assert!(pass <= plan.phases.len(), "a pass of the plan");
        let inner = FusedInner {
            key: KernelKey::new(format!("{shape:?} pass {pass}\n{plan}")),
            pass,
            layout: buffers(&plan, shape),
            shape,
            settings: settings(&plan),
            device: client.properties().clone(),
            scheduling: R::TARGET.scheduling(),
            plan,
        };
        FusedStep {
            inner: Arc::new(inner),
            runtime: PhantomData,
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.inner.plan
    }

    /// The buffers to bind, in order.
    pub fn buffers(&self) -> &[Buffer] {
        &self.inner.layout
    }

    pub fn shape(&self) -> KernelShape {
        self.inner.shape
    }
}

impl<R: TargetRuntime> KernelMetadata for FusedStep<R> {
    fn name(&self) -> &'static str {
        "flashopt_fused_step"
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>()
            .cube_dim(self.inner.settings.cube_dim)
            .address_type(AddressType::U32)
            .info(self.inner.key.clone())
    }

    fn address_type(&self) -> StorageType {
        AddressType::U32.unsigned_type()
    }
}

impl<R: TargetRuntime> CubeKernel for FusedStep<R> {
    fn define(&self) -> KernelDefinition {
        let inner = &self.inner;
        define(
            &inner.plan,
            inner.pass,
            inner.shape,
            (R::target_properties(), inner.scheduling),
            &inner.device,
            inner.settings.clone(),
        )
    }
}

/// Launch the step over groups `first..first + count`. `handles` holds one buffer per
/// entry of [`FusedStep::buffers`], each with its length in elements.
///
/// # Safety
/// Every buffer must hold at least `(first + count) * 32` elements (scales and group
/// info: `first + count`, scalars: what the group info words index), laid out as
/// [`crate::codegen::define`] describes.
pub unsafe fn launch<R: TargetRuntime>(
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
pub unsafe fn launch_with_gradient_at<R: TargetRuntime>(
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
    assert_eq!(
        kernel.shape().gradient_regions,
        1,
        "a kernel with several gradient regions launches through `launch_regions`"
    );
    unsafe {
        launch_bound(
            client,
            kernel,
            handles.to_vec(),
            first,
            count,
            &[gradient_first],
        )
    }
}

/// Consecutive groups that read their gradient from one buffer, in a launch of
/// several ([`launch_regions`]).
#[derive(Clone, Debug)]
pub struct GradientRegion {
    /// The gradient buffer and its length in elements.
    pub handle: Handle,
    pub len: usize,
    /// The region's groups: `start..start + groups`.
    pub start: u32,
    pub groups: u32,
    /// The group whose first element is the buffer's element 0 (`<= start`).
    pub gradient_first: u32,
}

/// One launch over consecutive gradient regions (at most the kernel's
/// [`KernelShape::gradient_regions`]), each reading its groups' gradients from its own
/// buffer: tensors whose gradients lie in separate buffers, stepped at once. `handles`
/// as for [`launch`]; its gradient entry is not read.
///
/// # Safety
/// As [`launch`] for every buffer but the gradient's; each region's buffer must hold
/// `(start + groups - gradient_first) * 32` elements.
pub unsafe fn launch_regions<R: TargetRuntime>(
    client: &ComputeClient<R>,
    kernel: &FusedStep<R>,
    handles: &[(Handle, usize)],
    regions: &[GradientRegion],
) {
    let last = &regions[regions.len() - 1];
    let first = regions[0].start;
    let groups = (first, last.start + last.groups - first);
    unsafe { launch_regions_over(client, kernel, handles, regions, groups) }
}

/// As [`launch_regions`], over `(first, count)` groups of the launch, or tile slots of
/// a tiled pass (`bindings::tiled`) whose groups lie in the regions.
///
/// # Safety
/// As [`launch_regions`]; every group the launch steps lies in one of the regions.
pub unsafe fn launch_regions_over<R: TargetRuntime>(
    client: &ComputeClient<R>,
    kernel: &FusedStep<R>,
    handles: &[(Handle, usize)],
    regions: &[GradientRegion],
    (first, count): (u32, u32),
) {
    let most = kernel.shape().gradient_regions;
    assert!(
        !regions.is_empty() && regions.len() <= most,
        "1 to {most} gradient regions per launch, got {}",
        regions.len()
    );
    for pair in regions.windows(2) {
        assert_eq!(
            pair[0].start + pair[0].groups,
            pair[1].start,
            "gradient regions tile the launch's groups"
        );
    }
    for r in regions {
        assert!(
            r.gradient_first <= r.start,
            "a region's binding starts at or before it"
        );
    }
    let layout = kernel.buffers();
    assert_eq!(
        handles.len(),
        layout.len() + 1 - most,
        "one handle per buffer of the one-region kernel"
    );
    let gradient = Binding::Part(kernel.plan().part_with_role(Role::Gradient).index());
    let arrays = layout
        .iter()
        .zip(handles.iter().chain(std::iter::repeat(&handles[0])))
        .map(|(buffer, own)| {
            let region = match buffer.role {
                role if role == gradient => Some(0),
                Binding::GradientRegion(k) => Some(k),
                _ => None,
            };
            match region {
                // Regions a launch does not use bind region 0's buffer; no group reads it.
                Some(k) => {
                    let r = regions.get(k).unwrap_or(&regions[0]);
                    (r.handle.clone(), r.len)
                }
                None => own.clone(),
            }
        })
        .collect();
    let mut scalars = vec![regions[0].gradient_first];
    for k in 1..most {
        scalars.extend(match regions.get(k) {
            Some(r) => [r.start, r.gradient_first],
            // A region no group reaches.
            None => [u32::MAX, 0],
        });
    }
    unsafe { launch_bound(client, kernel, arrays, first, count, &scalars) }
}

/// Register `arrays` (one per kernel buffer) and the scalars, and launch.
unsafe fn launch_bound<R: TargetRuntime>(
    client: &ComputeClient<R>,
    kernel: &FusedStep<R>,
    arrays: Vec<(Handle, usize)>,
    first: u32,
    count: u32,
    gradient_scalars: &[u32],
) {
    if count == 0 {
        return;
    }
    let layout = kernel.buffers();
    assert_eq!(layout.len(), arrays.len(), "one handle per kernel buffer");
    let mut launcher = KernelLauncher::<R>::new(kernel.inner.settings.clone());
    for (buffer, (handle, len)) in layout.iter().zip(arrays) {
        launcher.register_array(
            unsafe { ArrayArg::from_raw_parts(handle, len) },
            buffer.ty(),
        );
    }
    launcher.register_scalar(count);
    launcher.register_scalar(first);
    // The contraction barrier's operand (`ops::veiled`): always 0.
    launcher.register_scalar(0.0f32);
    for &s in gradient_scalars {
        launcher.register_scalar(s);
    }
    let units = count
        .checked_mul(kernel.shape().units_per_group() as u32)
        .expect("fewer than 2^32 units per launch");
    let cubes = units.div_ceil(CUBE_DIM);
    unsafe { launcher.launch_unchecked(CubeCount::Static(cubes, 1, 1), kernel.clone(), client) };
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, RandomState};

    use super::KernelKey;

    #[test]
    fn kernel_keys_are_equal_exactly_when_their_texts_are() {
        let a = KernelKey::new("plan a".into());
        let b = KernelKey::new("plan a".into());
        let c = KernelKey::new("plan b".into());
        let hasher = RandomState::new();
        assert!(a == b && a == a.clone());
        assert_eq!(hasher.hash_one(&a), hasher.hash_one(&b));
        assert!(a != c);
        assert_eq!(format!("{a:?}"), "plan a");
    }
}
