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
                            InstOp::Reduce(k, _) => Some((k, plan.reductions[k])),
                            _ => None,
                        })
                        .collect(),
                }
            })
            .collect();
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
