//! Values per row on the device: which tensors the kernels can step (rows that
//! start groups), the table from which a unit finds its group's row, and the copy that
//! ends a step by making the rows' new values the current ones.

use flashopt_ir::{Extent, FloatDtype, Plan};
use flashopt_runtime::core::TensorInfo;
use flashopt_runtime::error::{RuntimeError, refuse_columns};

use super::GpuOptimizer;
use super::layout::{Segment, segments};
use crate::codegen::bindings::{Binding, ROW_TABLE_WORDS, has_rows};
use crate::device::copy;
use crate::device::transfer::HostTransfers;

/// Where the GPU back end is named in refusals.
const GPU: &str = "the GPU back end";

/// Refuse what the kernels cannot step: values per column, and values per row of a
/// tensor whose rows do not start groups (a group would then hold two rows).
pub(super) fn refuse_unsupported(plan: &Plan, tensors: &[TensorInfo]) -> Result<(), RuntimeError> {
    refuse_columns(plan, GPU)?;
    if !has_rows(plan) {
        return Ok(());
    }
    let (segments, _) = segments(tensors);
    match tensors
        .iter()
        .zip(&segments)
        .find(|(_, s)| !s.rows_start_groups())
    {
        Some((t, s)) => Err(RuntimeError::RowsAcrossGroups {
            name: t.name.clone(),
            row_len: s.row_len,
            optimizer: plan.optimizer.clone(),
            place: GPU,
        }),
        None => Ok(()),
    }
}

/// [`ROW_TABLE_WORDS`] per tensor: its first group, its groups per row, its first row
/// (and a word of padding).
pub(super) fn row_table(segments: &[Segment]) -> Vec<u32> {
    let word = |x: usize| u32::try_from(x).expect("groups and rows fewer than 2^32");
    let table: Vec<u32> = segments
        .iter()
        .flat_map(|s| {
            [
                word(s.first_group),
                word(s.groups_per_row()),
                word(s.first_row),
                0,
            ]
        })
        .collect();
    debug_assert_eq!(table.len(), segments.len() * ROW_TABLE_WORDS);
    table
}

impl<R: HostTransfers> GpuOptimizer<R> {
    /// After a step of tensors `tensors.0..tensors.1`: their rows' new values (in the
    /// write halves) become the current ones, in stream order.
    pub(super) fn commit_rows(&self, tensors: (usize, usize)) {
        if tensors.1 <= tensors.0 {
            return;
        }
        let first = self.segments[tensors.0].first_row;
        let last = &self.segments[tensors.1 - 1];
        let rows = last.first_row + last.rows - first;
        let plan = self.core.plan();
        for (i, part) in plan.parts.iter().enumerate() {
            if part.extent != Extent::Row {
                continue;
            }
            assert_eq!(
                part.storage,
                flashopt_ir::Storage::F32,
                "values per row are stored in f32"
            );
            let written = &self.buffers[self.slot(Binding::RowWrite(i))].0;
            let current = &self.buffers[self.slot(Binding::Part(i))].0;
            // SAFETY: both buffers hold every tensor's rows (`upload`).
            unsafe {
                copy::copy_elements(
                    &self.client,
                    FloatDtype::F32,
                    &written.clone().offset_start(first as u64 * 4),
                    current,
                    first,
                    rows,
                )
            }
        }
    }
}
