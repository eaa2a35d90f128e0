//! The reduction phases of a plan with per-tensor reductions (LAMB's norms, Cautious
//! AdamW's mask mean): before the step, each phase's kernel runs over the same groups
//! as the step and writes every group's value of its reductions; two small launches per
//! reduction ([`reductions::launch_tensor_values`]) sum those over each tensor and
//! write the results into the tensor's row of kernel scalars, which the next passes
//! read. With reductions, every tensor has its own row (its parameter group's
//! scalars, then its reductions' values) and its groups' info words name that row.

use std::sync::Arc;

use flashopt_ir::Plan;
use flashopt_ir::graph::Reduction;
use flashopt_ir::program::InstOp;
use flashopt_ir::reduction::CHUNK_GROUPS;
use flashopt_runtime::raw;
use flashopt_runtime::step::Scope;

use super::GpuOptimizer;
use super::in_place::Bound;
use super::layout::Segment;
use crate::codegen::bindings::{Binding, KernelShape, MAX_GRADIENT_REGIONS, scalar_stride};
use crate::cubecl::client::ComputeClient;
use crate::device::launch::{FusedStep, launch};
use crate::device::reductions::{CHUNK_WORDS, ReductionTables, TENSOR_WORDS, launch_tensor_values};
use crate::device::transfer::{self, HostTransfers};

/// One reduction phase: its kernels (one gradient binding, and the most regions for
/// gradients where the trainer left them) and the reductions it computes.
pub(super) struct PhaseKernels<R: HostTransfers> {
    alone: FusedStep<R>,
    regions: FusedStep<R>,
    reductions: Vec<(usize, Reduction)>,
}

/// Everything a plan's reductions need on the device.
pub(super) struct Phases<R: HostTransfers> {
    kernels: Vec<PhaseKernels<R>>,
    tables: ReductionTables,
    /// Each tensor's chunks: its first and how many.
    tensor_chunks: Vec<(usize, usize)>,
}

impl<R: HostTransfers> Phases<R> {
    /// `None` for a plan without reductions.
    pub fn new(
        client: &ComputeClient<R>,
        plan: &Arc<Plan>,
        shape: KernelShape,
        segments: &[Segment],
    ) -> Option<Phases<R>> {
        if plan.reductions.is_empty() {
            return None;
        }
        let kernels = plan
            .phases
            .iter()
            .enumerate()
            .map(|(pass, program)| {
                let regions = shape
                    .with_gradient_regions(MAX_GRADIENT_REGIONS)
                    .expect("the most regions a launch binds");
                PhaseKernels {
                    alone: FusedStep::for_pass(client, plan.clone(), pass, shape),
                    regions: FusedStep::for_pass(client, plan.clone(), pass, regions),
                    reductions: program
                        .insts
                        .iter()
                        .filter_map(|i| match i.op {
                            InstOp::Reduce(k, _) => Some((k, plan.reductions[k].op)),
                            _ => None,
                        })
                        .collect(),
                }
            })
            .collect();
        let ReductionLayout {
            chunk_words,
            tensor_words,
            tensor_chunks,
        } = ReductionLayout::of(segments);
        let chunks = tensor_chunks.last().map_or(0, |&(f, c)| f + c);
        let upload = |words: &[u32]| {
            let handle = transfer::upload_bytes(client, &raw::le_bytes(words));
            (handle, words.len().max(1))
        };
        let reductions = plan.reductions.len();
        let values = (chunks * reductions).max(1);
        let tables = ReductionTables {
            chunks: upload(&chunk_words),
            tensors: upload(&tensor_words),
            chunk_values: (transfer::filled(client, values * 8, 0), values),
            reductions,
        };
        debug_assert_eq!(tensor_words.len(), segments.len() * TENSOR_WORDS);
        Some(Phases {
            kernels,
            tables,
            tensor_chunks,
        })
    }
}

/// Where each tensor's chunks lie ([`CHUNK_GROUPS`] groups from the tensor's first,
/// the last short), as the device tables hold them.
struct ReductionLayout {
    /// [`CHUNK_WORDS`] per chunk: its first group in the flat buffers, its groups.
    chunk_words: Vec<u32>,
    /// [`TENSOR_WORDS`] per tensor: its first chunk, its chunks, its elements, its row.
    tensor_words: Vec<u32>,
    tensor_chunks: Vec<(usize, usize)>,
}

impl ReductionLayout {
    fn of(segments: &[Segment]) -> ReductionLayout {
        let mut chunk_words: Vec<u32> = Vec::new();
        let mut tensor_words: Vec<u32> = Vec::new();
        let mut tensor_chunks = Vec::with_capacity(segments.len());
        for (row, s) in segments.iter().enumerate() {
            let first = chunk_words.len() / CHUNK_WORDS;
            for c in (0..s.groups).step_by(CHUNK_GROUPS) {
                let groups = CHUNK_GROUPS.min(s.groups - c);
                chunk_words.extend([word(s.first_group + c), word(groups)]);
            }
            let count = chunk_words.len() / CHUNK_WORDS - first;
            tensor_words.extend([word(first), word(count), word(s.len), word(row)]);
            tensor_chunks.push((first, count));
        }
        ReductionLayout {
            chunk_words,
            tensor_words,
            tensor_chunks,
        }
    }
}

fn word(x: usize) -> u32 {
    u32::try_from(x).expect("tensors, groups and chunks fewer than 2^32")
}

impl<R: HostTransfers> GpuOptimizer<R> {
    /// Scalars per tensor (its own row) instead of per parameter group: the plan
    /// reduces over tensors.
    pub(super) fn rows_per_tensor(&self) -> bool {
        !self.core.plan().reductions.is_empty()
    }

    /// Rows of kernel scalars: one per tensor or per parameter group.
    pub(super) fn scalar_rows(&self) -> usize {
        if self.rows_per_tensor() {
            self.core.tensors().len()
        } else {
            self.core.hyper().len()
        }
    }

    /// Every reduction phase of the tensors in `scope`, in order, each followed by
    /// its reductions over those tensors: after this the tensors' rows of kernel
    /// scalars hold their reductions' values. `bound` gives the gradients where the
    /// trainer left them; `None` reads the flat gradient buffer.
    pub(super) fn run_phases(&self, scope: Scope, bound: Option<&Bound>) {
        let Some(phases) = &self.phases else {
            return;
        };
        let (tensors, groups) = match scope {
            Scope::All => ((0, self.segments.len()), (0, self.groups)),
            Scope::Tensor(id) => {
                let s = &self.segments[id.0];
                ((id.0, id.0 + 1), (s.first_group, s.first_group + s.groups))
            }
        };
        if tensors.1 == tensors.0 {
            return;
        }
        let chunks = (
            phases.tensor_chunks[tensors.0].0,
            phases.tensor_chunks[tensors.1 - 1].0 + phases.tensor_chunks[tensors.1 - 1].1,
        );
        let plan = self.core.plan();
        let partials = &self.buffers[self.slot(Binding::Partials)];
        let scalars = &self.buffers[self.slot(Binding::Scalars)];
        for phase in &phases.kernels {
            match bound {
                Some(bound) => self.launch_bound_with(bound, (&phase.alone, &phase.regions)),
                // SAFETY: every buffer holds every group (`upload`).
                None => unsafe {
                    launch(
                        &self.client,
                        &phase.alone,
                        &self.buffers,
                        groups.0 as u32,
                        (groups.1 - groups.0) as u32,
                    )
                },
            }
            for &reduction in &phase.reductions {
                // SAFETY: the phase wrote the partials of every group of these
                // tensors; the tables were built from the same segments, the scalars
                // with a row per tensor of the plan's stride.
                unsafe {
                    launch_tensor_values(
                        &self.client,
                        &phases.tables,
                        partials,
                        scalars,
                        reduction,
                        (scalar_stride(plan), plan.scalar_count()),
                        chunks,
                        tensors,
                    )
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use flashopt_ir::GROUP_SIZE;
    use flashopt_ir::graph::Reduction;
    use flashopt_ir::reduction::{self, STRANDS};
    use flashopt_runtime::core::TensorInfo;

    use super::*;
    use crate::optimizer::layout::segments;

    /// The device's levels 2 to 4 over the tables, performed on the host from the
    /// flat buffers' group values (padding poisoned, as the GPU tests poison it):
    /// each tensor's value is `reduction::reduce` of its elements, bit for bit.
    #[test]
    fn the_tables_give_each_tensor_its_own_groups_in_order() {
        let lens = [
            1usize,
            33,
            CHUNK_GROUPS * GROUP_SIZE * (STRANDS + 3) + 5,
            1024,
            95,
        ];
        let tensors: Vec<TensorInfo> = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| TensorInfo::new(format!("t{i}"), 0, len))
            .collect();
        let (segments, groups) = segments(&tensors);
        let layout = ReductionLayout::of(&segments);
        // Flat values, padding NaN: a group's value reads only its real elements.
        let mut flat = vec![f32::NAN; groups * GROUP_SIZE];
        let values: Vec<Vec<f32>> = lens
            .iter()
            .map(|&n| {
                (0..n)
                    .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3)
                    .collect()
            })
            .collect();
        for (s, v) in segments.iter().zip(&values) {
            flat[s.elements()].copy_from_slice(v);
        }
        for r in Reduction::ALL {
            let partials: Vec<f64> = (0..groups)
                .map(|g| {
                    let s = segments
                        .iter()
                        .find(|s| (s.first_group..s.first_group + s.groups).contains(&g))
                        .unwrap();
                    let real = (s.len - (g - s.first_group) * GROUP_SIZE).min(GROUP_SIZE);
                    reduction::group_value(r, &flat[g * GROUP_SIZE..g * GROUP_SIZE + real])
                })
                .collect();
            let chunk_values: Vec<f64> = layout
                .chunk_words
                .chunks(CHUNK_WORDS)
                .map(|w| {
                    let (start, count) = (w[0] as usize, w[1] as usize);
                    reduction::chunk_values(r, &partials[start..start + count])[0]
                })
                .collect();
            for (t, w) in layout.tensor_words.chunks(TENSOR_WORDS).enumerate() {
                let (first, count, len, row) = (w[0] as usize, w[1] as usize, w[2] as usize, w[3]);
                assert_eq!((row as usize, len), (t, lens[t]));
                assert_eq!(layout.tensor_chunks[t], (first, count));
                let total = reduction::total(r, &chunk_values[first..first + count]);
                let value = reduction::finish(r, total, len);
                assert_eq!(
                    value.to_bits(),
                    reduction::reduce(r, &values[t]).to_bits(),
                    "{r:?}, tensor {t}"
                );
            }
        }
    }
}
