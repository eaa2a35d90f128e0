//! Values per row and per column on the device: which tensors the kernels can step
//! (rows that start groups), the table from which a unit finds its group's row and its
//! lanes' columns, and the copy that ends a step by making the rows' and columns' new
//! values the current ones.

use flashopt_ir::{Extent, FloatDtype, Plan};
use flashopt_runtime::core::TensorInfo;
use flashopt_runtime::error::RuntimeError;

use super::GpuOptimizer;
use super::layout::{Segment, segments};
use crate::codegen::bindings::{Binding, ROW_TABLE_WORDS, has_columns, has_rows};
use crate::device::DeviceRuntime;
use crate::device::copy;

/// Where the GPU back end is named in refusals.
const GPU: &str = "the GPU back end";

/// Refuse what the kernels cannot step: values per row or column of a tensor whose
/// rows do not start groups (a group would then hold two rows, or a block of columns
/// start inside a group).
pub(super) fn refuse_unsupported(plan: &Plan, tensors: &[TensorInfo]) -> Result<(), RuntimeError> {
    if !has_rows(plan) && !has_columns(plan) {
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

/// [`ROW_TABLE_WORDS`] per tensor: its first group, its groups per row, its first row,
/// its first column.
pub(super) fn row_table(segments: &[Segment]) -> Vec<u32> {
    let word = |x: usize| u32::try_from(x).expect("groups and rows fewer than 2^32");
    let table: Vec<u32> = segments
        .iter()
        .flat_map(|s| {
            [
                word(s.first_group),
                word(s.groups_per_row()),
                word(s.first_row),
                word(s.first_column),
            ]
        })
        .collect();
    debug_assert_eq!(table.len(), segments.len() * ROW_TABLE_WORDS);
    table
}

impl<R: DeviceRuntime> GpuOptimizer<R> {
    /// After a step of tensors `tensors.0..tensors.1`: their rows' and columns' new
    /// values (in the write halves) become the current ones, in stream order.
    pub(super) fn commit_scoped(&self, tensors: (usize, usize)) {
        let plan = self.core.plan();
        for (i, part) in plan.parts.iter().enumerate() {
            let write = match part.extent {
                Extent::Row => Binding::RowWrite(i),
                Extent::Column => Binding::ColumnWrite(i),
                _ => continue,
            };
            let (first, end) = self.scoped_range(tensors, part.extent);
            let rows = end - first;
            assert_eq!(
                part.storage,
                flashopt_ir::Storage::F32,
                "values per row and column are stored in f32"
            );
            let written = &self.buffers[self.slot(write)].0;
            let current = &self.buffers[self.slot(Binding::Part(i))].0;
            // SAFETY: both buffers hold every tensor's rows (columns) (`upload`).
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

#[cfg(test)]
mod tests {
    use flashopt_ir::def::{OptimizerDef, Range, call, float, name};
    use flashopt_ir::layout::Shape;
    use flashopt_ir::{MasterMode, PlanConfig};

    use super::*;

    /// `p -= lr * g / (scope_rms(g) + 1e-8)`.
    fn normalized(reduction: &str) -> Plan {
        let mut def = OptimizerDef::new("normalized");
        def.hyper("lr", 0.1, Range::at_least(0.0));
        let rms = call(reduction, vec![name("g")]);
        def.assign(
            "p",
            name("p") - name("lr") * name("g") / (rms + float(1e-8)),
        );
        flashopt_ir::compile(&def, PlanConfig::bf16(MasterMode::Int8)).unwrap()
    }

    fn infos(shapes: &[Shape]) -> Vec<TensorInfo> {
        shapes
            .iter()
            .enumerate()
            .map(|(i, &s)| TensorInfo::new(format!("t{i}"), 0, s))
            .collect()
    }

    #[test]
    fn rows_that_start_groups_are_stepped_and_others_refused_by_name() {
        let rows = normalized("row_rms");
        let fine = [
            Shape::vector(1),
            Shape::vector(1000),
            Shape::matrix(3, 64),
            Shape::matrix(1, 40),
            Shape::vector(0),
        ];
        refuse_unsupported(&rows, &infos(&fine)).unwrap();
        let mut across = fine.to_vec();
        across.push(Shape::matrix(6, 40));
        match refuse_unsupported(&rows, &infos(&across)) {
            Err(RuntimeError::RowsAcrossGroups { name, row_len, .. }) => {
                assert_eq!((name.as_str(), row_len), ("t5", 40));
            }
            other => panic!("{other:?}"),
        }
        // Without values per row, the shape does not matter.
        refuse_unsupported(&normalized("tensor_rms"), &infos(&across)).unwrap();
        // Columns ask the same of the tensors.
        refuse_unsupported(&normalized("col_rms"), &infos(&fine)).unwrap();
        let err = refuse_unsupported(&normalized("col_rms"), &infos(&across)).unwrap_err();
        assert!(err.to_string().contains("`t5`"), "{err}");
    }

    #[test]
    fn the_row_table_finds_each_groups_row() {
        let shapes = [
            Shape::vector(33),
            Shape::matrix(3, 64),
            Shape::vector(0),
            Shape::matrix(2, 1056),
        ];
        let (segments, groups) = segments(&infos(&shapes));
        let table = row_table(&segments);
        // What `ops::group_row` and `ops::holds_row_start` compute from the table,
        // against each group's row and whether it starts one, counted from the shapes.
        let mut expected = Vec::new();
        let mut row = 0;
        for s in &shapes {
            let per_row = if s.rows() <= 1 {
                s.len.div_ceil(32)
            } else {
                s.row_len / 32
            };
            for g in 0..s.len.div_ceil(32) {
                expected.push((row + g / per_row, g % per_row == 0));
            }
            row += s.rows();
        }
        assert_eq!(expected.len(), groups);
        for (t, s) in segments.iter().enumerate() {
            let words = &table[t * ROW_TABLE_WORDS..(t + 1) * ROW_TABLE_WORDS];
            let groups = s.first_group..s.first_group + s.groups;
            for (g, &want) in groups.clone().zip(&expected[groups]) {
                let local = g - words[0] as usize;
                let found = words[2] as usize + local / words[1] as usize;
                let starts = local % words[1] as usize == 0;
                assert_eq!((found, starts), want, "group {g}");
            }
        }
        assert_eq!(flashopt_runtime::segments::total_rows(&segments), 6);
    }
}
