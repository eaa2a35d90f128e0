//! Steps that read each tensor's gradient where the trainer left it: no
//! optimizer-owned gradient buffer, no copy. The fused kernel's variant with several
//! gradient bindings ([`launch_regions`]) steps up to [`MAX_GRADIENT_REGIONS`]
//! consecutive regions of groups per launch, each region reading the trainer's buffer
//! of one tensor. A tensor whose length is not a multiple of 32 has its last, partial
//! group's few gradient values copied into a small staging buffer (a region of its
//! own), because the kernel reads whole groups and the trainer's buffer ends at the
//! tensor's last element. The NaN/infinity check and clipping's norm reduce each
//! tensor's buffer into one array of partial sums, read once.

use flashopt_ir::interp::PartData;
use flashopt_ir::{GROUP_SIZE, Role};
use flashopt_runtime::core::TensorId;
use flashopt_runtime::error::RuntimeError;
use flashopt_runtime::numerics::{NonFinite, StepOutcome};
use flashopt_runtime::raw;
use flashopt_runtime::step::{self, GradSource, Scope};

use super::GpuOptimizer;
use super::columns::{ColumnLayout, launch_range};
use super::layout::info_word;
use crate::codegen::bindings::Binding;
use crate::codegen::bindings::MAX_GRADIENT_REGIONS;
use crate::cubecl::server::Handle;
use crate::device::DeviceRuntime;
use crate::device::copy;
use crate::device::launch::{
    FusedStep, GradientRegion, launch_regions, launch_regions_over, launch_with_gradient_at,
};
use crate::device::reduce;
use crate::device::transfer;

/// The byte alignment the kernel's widest gradient loads need.
const ALIGNMENT: u64 = 16;

/// Regions of at least this many groups (16M elements) launch alone with the
/// one-binding kernel, which spends fewer instructions per element (the kernel with
/// several bindings chooses the binding: 213 against 180 SASS instructions per
/// element for AdamW-24); smaller ones share launches. Measured on an H100 (GPT-2's
/// 148 tensors, AdamW-24): from 2M elements up (62 launches a step) the in-place step
/// took 1.24 ms, from 16M up (20 launches) 1.08 ms; the host spends about 6 us per
/// launch, and a launch of a 2M-element tensor's step is short enough that the GPU
/// idles between them.
const ALONE_GROUPS: u32 = 1 << 19;

/// One step's gradients, as the launches bind them.
pub struct Bound {
    /// Per tensor of the step: its id, and the buffer holding its whole groups'
    /// gradients from the first (`None`: the tensor is one partial group).
    whole: Vec<(TensorId, Option<Handle>)>,
    /// The partial last groups, one group each, and their group info words.
    tails: Option<(Handle, Handle)>,
    /// Per tensor of the step: its slot in `tails`.
    tail_slots: Vec<Option<usize>>,
}

impl<R: DeviceRuntime> GpuOptimizer<R> {
    /// Free the flat gradient buffer (2 bytes per parameter for bf16 gradients): for
    /// trainers that step with [`Self::step_with_grads`] or
    /// [`Self::step_tensor_with_grad`] only. [`Self::write_grads`],
    /// [`Self::copy_grad_from`] and [`Self::zero_grad`] allocate it again;
    /// [`Self::step`] without it is an error.
    pub fn release_grad_buffer(&mut self) {
        let slot = self.part_slot(Role::Gradient);
        self.buffers[slot] = (transfer::upload_bytes(&self.client, &[0; 4]), 0);
        self.flat_grads = false;
        self.pending_non_finite = None;
        self.grads_scanned = false;
    }

    /// Whether the flat gradient buffer is allocated (see
    /// [`Self::release_grad_buffer`]).
    pub fn has_grad_buffer(&self) -> bool {
        self.flat_grads
    }

    /// The flat gradient buffer again, zeroed, if it was released.
    pub(super) fn ensure_grad_buffer(&mut self) {
        if self.flat_grads {
            return;
        }
        let size = self.core.plan().config.grad.size_bytes();
        let len = self.groups * GROUP_SIZE;
        let slot = self.part_slot(Role::Gradient);
        let buffer = transfer::long_lived(&self.client, || {
            transfer::filled(&self.client, len * size, self.pad)
        });
        self.buffers[slot] = (buffer, len);
        self.flat_grads = true;
    }

    /// One step of every tensor, each reading its gradient in `grads` (one per tensor,
    /// in order) where it lies: each handle holds the tensor's gradient contiguously
    /// from its first byte, in the plan's gradient dtype, on this optimizer's client.
    /// Nothing is copied (but a partial last group's values) and the trainer may drop
    /// each gradient once this returns. One launch per [`MAX_GRADIENT_REGIONS`] gradient
    /// buffers (a partial last group counts as one more). NaN or infinity skips the
    /// step (scanned on the device
    /// unless [`Self::set_check_device_grads`] turned it off); clipping applies.
    pub fn step_with_grads(&mut self, grads: &[&Handle]) -> Result<StepOutcome, RuntimeError> {
        step::step(self, Scope::All, GradSource::Device(grads))
    }

    /// Step one tensor alone from its gradient where it lies (gradient release
    /// without a gradient buffer: the trainer drops the gradient once this returns).
    /// As [`Self::step_tensor`]: call [`Self::finish_step`] once every tensor of the
    /// step is done; the gradient is not scanned; clipping is an error.
    pub fn step_tensor_with_grad(
        &mut self,
        id: TensorId,
        grad: &Handle,
    ) -> Result<StepOutcome, RuntimeError> {
        step::step(self, Scope::Tensor(id), GradSource::Device(&[grad]))
    }

    /// Check every gradient against its tensor before anything is queued, then copy
    /// the partial groups' values (and any misaligned gradient) where the kernel
    /// reads them.
    pub(super) fn bind_grads<'a>(
        &self,
        grads: impl IntoIterator<Item = (TensorId, &'a Handle)>,
    ) -> Result<Bound, RuntimeError> {
        let grads: Vec<(TensorId, &Handle)> = grads.into_iter().collect();
        let dtype = self.core.plan().config.grad;
        let size = dtype.size_bytes();
        for &(id, src) in &grads {
            self.check_grad_source(id, src)?;
        }
        let tails: Vec<usize> = grads
            .iter()
            .map(|(id, _)| id.0)
            .filter(|&t| self.segments[t].len % GROUP_SIZE != 0)
            .collect();
        let staging = (!tails.is_empty()).then(|| {
            let words: Vec<u32> = tails
                .iter()
                .map(|&t| {
                    let group = self.core.tensors()[t].param_group;
                    info_word(self.segments[t].len % GROUP_SIZE, group)
                })
                .collect();
            let info = transfer::upload_bytes(&self.client, &raw::le_bytes(&words));
            (self.client.empty(tails.len() * GROUP_SIZE * size), info)
        });
        let mut whole = Vec::with_capacity(grads.len());
        let mut tail_slots = Vec::with_capacity(grads.len());
        for (id, src) in grads {
            let s = &self.segments[id.0];
            let full = s.len / GROUP_SIZE;
            let slot = tails.iter().position(|&t| t == id.0);
            if let (Some(k), Some((buffer, _))) = (slot, &staging) {
                let from = src.clone().offset_start((full * GROUP_SIZE * size) as u64);
                // SAFETY: `src` holds the tensor's `len` elements (checked above), the
                // staging buffer a group per partial group.
                unsafe {
                    copy::copy_elements(
                        &self.client,
                        dtype,
                        &from,
                        buffer,
                        k * GROUP_SIZE,
                        s.len % GROUP_SIZE,
                    )
                };
            }
            let aligned = src.offset_start.unwrap_or(0) % ALIGNMENT == 0;
            let source = match (full, aligned) {
                (0, _) => None,
                (_, true) => Some(src.clone()),
                (_, false) => {
                    let copy = self.client.empty(full * GROUP_SIZE * size);
                    // SAFETY: as above; the copy holds the whole groups.
                    unsafe {
                        copy::copy_elements(&self.client, dtype, src, &copy, 0, full * GROUP_SIZE)
                    };
                    Some(copy)
                }
            };
            whole.push((id, source));
            tail_slots.push(slot);
        }
        Ok(Bound {
            whole,
            tails: staging,
            tail_slots,
        })
    }

    /// The sum of squares of the bound gradients' real elements, on the device: the
    /// tensors' buffers [`reduce::BATCH`] per launch, the partial last groups in one
    /// more, and one read of every partial sum.
    pub(super) fn square_sum_of(&self, bound: &Bound) -> f64 {
        let (info, info_words) = &self.buffers[self.slot(Binding::GroupInfo)];
        let dtype = self.core.plan().config.grad;
        let mut whole: Vec<reduce::ReducedBuffer<'_>> = Vec::new();
        for (id, source) in &bound.whole {
            let s = &self.segments[id.0];
            if let Some(grad) = source {
                whole.push(reduce::ReducedBuffer {
                    grad,
                    info_first: s.first_group,
                    groups: s.len / GROUP_SIZE,
                });
            }
        }
        let tails = bound.tails.as_ref().map(|(buffer, words)| {
            let count = bound.tail_slots.iter().flatten().count();
            (buffer, words, count)
        });
        let total: usize = whole
            .iter()
            .map(|b| reduce::partial_count(b.groups))
            .chain(tails.iter().map(|t| reduce::partial_count(t.2)))
            .sum();
        let partials = self.client.empty(total.max(1) * 8);
        // SAFETY: each buffer holds its tensor's whole groups (`bind_grads`), the info
        // buffer a word per group of the optimizer, the partials buffer every sum.
        let at = unsafe {
            reduce::launch_batched_square_sums(
                &self.client,
                dtype,
                &whole,
                info,
                *info_words,
                &partials,
                0,
            )
        };
        if let Some((buffer, words, count)) = tails {
            // SAFETY: the staging buffer holds a group per partial group, `words` their
            // info words, and the partials buffer their sums after the others'.
            unsafe {
                reduce::launch_square_sums_into(
                    &self.client,
                    dtype,
                    buffer,
                    words,
                    count,
                    &partials,
                    at,
                )
            };
        }
        reduce::sum_partials(&self.client, partials)
    }

    /// The fused step of every bound tensor: its whole groups from its buffer, its
    /// partial group from the staging buffer; consecutive regions of groups share a
    /// launch, up to [`MAX_GRADIENT_REGIONS`] buffers each.
    pub(super) fn launch_bound(&self, bound: &Bound) {
        self.launch_bound_with(bound, (&self.kernel, &self.regions_kernel));
    }

    /// As [`Self::launch_bound`], with another pass's kernels (a reduction phase's):
    /// the one-binding kernel and the one with the most gradient regions.
    pub(super) fn launch_bound_with(&self, bound: &Bound, kernels: (&FusedStep<R>, &FusedStep<R>)) {
        let regions: Vec<GradientRegion> = (0..bound.whole.len())
            .flat_map(|i| self.regions_of(bound, i))
            .collect();
        let mut batch: Vec<GradientRegion> = Vec::with_capacity(MAX_GRADIENT_REGIONS);
        for region in regions {
            let alone = region.groups >= ALONE_GROUPS;
            let joins = !alone
                && batch.len() < MAX_GRADIENT_REGIONS
                && batch
                    .last()
                    .is_some_and(|last| last.start + last.groups == region.start);
            if !joins && !batch.is_empty() {
                self.launch_regions(kernels.1, &batch);
                batch.clear();
            }
            if alone {
                self.launch_alone(kernels.0, &region);
            } else {
                batch.push(region);
            }
        }
        if !batch.is_empty() {
            self.launch_regions(kernels.1, &batch);
        }
    }

    /// The gradient regions of the `i`-th tensor of `bound`: its whole groups from its
    /// buffer, its partial last group from the staging buffer (one or both).
    fn regions_of(&self, bound: &Bound, i: usize) -> Vec<GradientRegion> {
        let (id, source) = &bound.whole[i];
        let s = &self.segments[id.0];
        let full = s.len / GROUP_SIZE;
        let first = s.first_group as u32;
        let mut regions = Vec::with_capacity(2);
        if let Some(grad) = source {
            regions.push(GradientRegion {
                handle: grad.clone(),
                len: full * GROUP_SIZE,
                start: first,
                groups: full as u32,
                gradient_first: first,
            });
        }
        if let (Some(k), Some((staging, _))) = (bound.tail_slots[i], &bound.tails) {
            // Slot `k` of the staging buffer is group `group` when the binding
            // starts `k` groups before it (`k <= group`: one slot per tensor before).
            let group = (s.first_group + full) as u32;
            regions.push(GradientRegion {
                handle: staging.clone(),
                len: (k + 1) * GROUP_SIZE,
                start: group,
                groups: 1,
                gradient_first: group - k as u32,
            });
        }
        regions
    }

    /// A tiled pass (`bindings::tiled`) of every bound tensor: one launch of the
    /// kernel with several gradient bindings per tensor, over its tile slots, its
    /// regions bound (a tile's groups are a tensor's, in tile order, so a launch
    /// holds whole tensors).
    pub(super) fn launch_bound_tiled(
        &self,
        bound: &Bound,
        kernel: &FusedStep<R>,
        columns: &ColumnLayout,
    ) {
        for i in 0..bound.whole.len() {
            let regions = self.regions_of(bound, i);
            let (first, count) = columns.tensors[bound.whole[i].0.0].slots();
            if regions.is_empty() || count == 0 {
                continue;
            }
            // SAFETY: as `launch_regions`; the tensor's slots name only its groups,
            // which its regions hold.
            unsafe {
                launch_regions_over(
                    &self.client,
                    kernel,
                    &self.buffers,
                    &regions,
                    launch_range((first, count)),
                )
            };
        }
    }

    /// A large region with the one-binding kernel, which costs fewer instructions
    /// per element; its launch overlaps the work queued before it.
    fn launch_alone(&self, kernel: &FusedStep<R>, region: &GradientRegion) {
        let mut buffers = self.buffers.clone();
        buffers[self.part_slot(Role::Gradient)] = (region.handle.clone(), region.len);
        // SAFETY: the region's buffer holds its groups from `gradient_first`; every
        // other buffer holds every group.
        unsafe {
            launch_with_gradient_at(
                &self.client,
                kernel,
                &buffers,
                region.start,
                region.groups,
                region.gradient_first,
            )
        };
    }

    fn launch_regions(&self, kernel: &FusedStep<R>, regions: &[GradientRegion]) {
        // SAFETY: each region's buffer holds its whole groups (or, for the staging
        // buffer, slot `k` at the region's group); every other buffer every group.
        unsafe { launch_regions(&self.client, kernel, &self.buffers, regions) };
    }

    /// Where the non-finite values of gradients a step found some in are: each is
    /// copied into a fresh buffer and read back.
    pub(super) fn locate_non_finite_in(&self, grads: &[&Handle]) -> Option<NonFinite> {
        let dtype = self.core.plan().config.grad;
        let size = dtype.size_bytes();
        let values: Vec<PartData> = grads
            .iter()
            .zip(&self.segments)
            .map(|(src, s)| {
                let copy = self.client.empty(transfer::padded_len(s.len * size));
                // SAFETY: `src` holds the tensor's elements (`bind_grads` checked).
                unsafe { copy::copy_elements(&self.client, dtype, src, &copy, 0, s.len) };
                let bytes = transfer::download(&self.client, &copy, s.len * size);
                raw::part_data(dtype.into(), &bytes)
            })
            .collect();
        self.scan_grads(&values)
    }
}
