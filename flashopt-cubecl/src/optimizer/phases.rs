//! The reduction phases of a plan with reductions (LAMB's norms, Cautious AdamW's mask
//! mean, Adam-mini's row means): before the step, each phase's kernel runs over the
//! same groups as the step and writes every group's value of its reductions; two small
//! launches per reduction ([`reductions::launch_tensor_values`]) sum those over each
//! tensor, writing the results into the tensor's row of kernel scalars, or over each
//! row (rows that start groups), writing them into the row values; the next passes
//! read them. With reductions or values per row, every tensor has its own row of
//! scalars (its parameter group's scalars, then its reductions' values) and its
//! groups' info words name that row.

use std::sync::Arc;

use flashopt_ir::Plan;
use flashopt_ir::graph::{Reduction, Scope as ReductionScope};
use flashopt_ir::program::InstOp;
use flashopt_ir::reduction::CHUNK_GROUPS;
use flashopt_runtime::raw;
use flashopt_runtime::step::Scope;

use super::GpuOptimizer;
use super::columns::{ColumnLayout, launch_range};
use super::in_place::Bound;
use super::layout::Segment;
use crate::codegen::bindings::{
    Binding, KernelShape, MAX_GRADIENT_REGIONS, column_index, column_reductions, has_columns,
    has_rows, reads_dims, scalar_stride, tiled,
};
use crate::cubecl::client::ComputeClient;
use crate::device::DeviceRuntime;
use crate::device::launch::{FusedStep, launch};
use crate::device::matrix::{self, MatrixBatch};
use crate::device::reductions::{CHUNK_WORDS, ReductionTables, launch_tensor_values, output_row};
use crate::device::transfer;
use flashopt_ir::graph::MatrixFn;
use flashopt_ir::matrix::NewtonSchulz;

/// One reduction phase: its kernels (one gradient binding, and the most regions for
/// gradients where the trainer left them) and the reductions it computes.
pub(super) struct PhaseKernels<R: DeviceRuntime> {
    alone: FusedStep<R>,
    regions: FusedStep<R>,
    reductions: Vec<(usize, Reduction)>,
    /// The matrix functions whose arguments it writes: the matrix stage runs them
    /// after it.
    matrices: Vec<usize>,
    /// Whether the phase reduces over columns: it launches over tile slots.
    tiled: bool,
}

/// Everything a plan's reductions need on the device.
pub(super) struct Phases<R: DeviceRuntime> {
    kernels: Vec<PhaseKernels<R>>,
    /// The tables of reductions over each tensor (a span per tensor) and, for a plan
    /// with row reductions, over each row (a span per row).
    tensors: SpanTables,
    rows: Option<SpanTables>,
    /// For a plan with column reductions: the tables over each column (a span per
    /// column, its bands), and where the column partials and tiles lie.
    columns: Option<(SpanTables, ColumnLayout)>,
}

/// One scope's reduction tables, and each span's chunks: its first and how many.
struct SpanTables {
    tables: ReductionTables,
    span_chunks: Vec<(usize, usize)>,
}

impl SpanTables {
    fn new<R: DeviceRuntime>(
        client: &ComputeClient<R>,
        spans: &[Span],
        reductions: usize,
    ) -> SpanTables {
        let ReductionLayout {
            chunk_words,
            span_words,
            span_chunks,
        } = ReductionLayout::of(spans);
        let chunks = span_chunks.last().map_or(0, |&(f, c)| f + c);
        let upload = |words: &[u32]| {
            let handle = transfer::upload_bytes(client, &raw::le_bytes(words));
            (handle, words.len().max(1))
        };
        let values = (chunks * reductions).max(1);
        SpanTables {
            tables: ReductionTables {
                chunks: upload(&chunk_words),
                tensors: upload(&span_words),
                chunk_values: (transfer::filled(client, values * 8, 0), values),
                reductions,
            },
            span_chunks,
        }
    }

    /// The chunks of spans `spans.0..spans.1`.
    fn chunks(&self, spans: (usize, usize)) -> (usize, usize) {
        (
            self.span_chunks[spans.0].0,
            self.span_chunks[spans.1 - 1].0 + self.span_chunks[spans.1 - 1].1,
        )
    }
}

impl<R: DeviceRuntime> Phases<R> {
    /// `None` for a plan without reductions or matrix functions.
    pub fn new(
        client: &ComputeClient<R>,
        plan: &Arc<Plan>,
        shape: KernelShape,
        segments: &[Segment],
    ) -> Option<Phases<R>> {
        if plan.reductions.is_empty() && plan.matrices.is_empty() {
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
                    tiled: tiled(plan, pass),
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
                    matrices: program
                        .insts
                        .iter()
                        .filter_map(|i| match i.op {
                            InstOp::MatrixArg(m, _) => Some(m),
                            _ => None,
                        })
                        .collect(),
                }
            })
            .collect();
        let reductions = plan.reductions.len();
        let rows = plan
            .reductions
            .iter()
            .any(|r| r.scope == ReductionScope::Row)
            .then(|| SpanTables::new(client, &row_spans(segments), reductions));
        let column_reductions = column_reductions(plan).len();
        let columns = (column_reductions > 0).then(|| {
            let layout = ColumnLayout::of(segments);
            let spans = column_spans(segments, &layout);
            (SpanTables::new(client, &spans, column_reductions), layout)
        });
        Some(Phases {
            kernels,
            tensors: SpanTables::new(client, &tensor_spans(segments), reductions),
            rows,
            columns,
        })
    }

    /// Where the column partials and tiles lie, for a plan with column reductions.
    pub fn column_layout(&self) -> Option<&ColumnLayout> {
        self.columns.as_ref().map(|(_, layout)| layout)
    }
}

/// The tensors of `segments` as batches of matrices of one shape, in order of first
/// appearance.
fn matrix_batches(segments: &[Segment]) -> Vec<MatrixBatch> {
    let mut batches: Vec<MatrixBatch> = Vec::new();
    for s in segments.iter().filter(|s| s.len > 0) {
        let (rows, cols) = (s.rows, s.row_len);
        let offset = s.elements().start;
        match batches
            .iter_mut()
            .find(|b| (b.rows, b.cols) == (rows, cols))
        {
            Some(b) => b.offsets.push(offset),
            None => batches.push(MatrixBatch {
                offsets: vec![offset],
                rows,
                cols,
            }),
        }
    }
    batches
}

/// What one reduction's value is taken over: a tensor, or one row of a tensor whose
/// rows start groups. Its groups are consecutive in the flat buffers.
struct Span {
    first_group: usize,
    groups: usize,
    /// Its elements (the reduction's `len`).
    len: usize,
    /// Where its value goes: the tensor's row of kernel scalars, or the row's index
    /// in the row values.
    out: usize,
}

/// Each tensor as a span, its value going to its own row of kernel scalars.
fn tensor_spans(segments: &[Segment]) -> Vec<Span> {
    segments
        .iter()
        .enumerate()
        .map(|(t, s)| Span {
            first_group: s.first_group,
            groups: s.groups,
            len: s.len,
            out: t,
        })
        .collect()
}

/// Each row of every tensor as a span (rows that start groups: a row is
/// `groups_per_row` groups, a tensor of one row all of its groups).
fn row_spans(segments: &[Segment]) -> Vec<Span> {
    segments
        .iter()
        .flat_map(|s| {
            let per_row = s.groups_per_row();
            (0..s.rows).map(move |r| Span {
                first_group: s.first_group + r * per_row,
                groups: per_row.min(s.groups - r * per_row),
                len: s.row_len,
                out: s.first_row + r,
            })
        })
        .collect()
}

/// Each column of every tensor as a span: its bands of 32 rows, consecutive in the
/// column partials; its value goes to the column's index over every tensor's
/// (padded) columns.
fn column_spans(segments: &[Segment], layout: &ColumnLayout) -> Vec<Span> {
    segments
        .iter()
        .zip(&layout.tensors)
        .flat_map(|(s, c)| {
            (0..spanned_columns(s)).map(move |column| Span {
                first_group: c.first_column_group + column * c.bands,
                groups: c.bands,
                len: s.rows,
                out: s.first_column + column,
            })
        })
        .collect()
}

/// A tensor's column spans: its columns (none for an empty tensor, whose row length
/// is 0 but which has no rows either).
fn spanned_columns(s: &Segment) -> usize {
    if s.len == 0 { 0 } else { s.row_len }
}

/// The column spans ([`column_spans`]) of tensors `tensors.0..tensors.1`.
fn column_spans_of(segments: &[Segment], tensors: (usize, usize)) -> (usize, usize) {
    let before: usize = segments[..tensors.0].iter().map(spanned_columns).sum();
    let inside: usize = segments[tensors.0..tensors.1]
        .iter()
        .map(spanned_columns)
        .sum();
    (before, before + inside)
}

/// Where each span's chunks lie ([`CHUNK_GROUPS`] groups from the span's first, the
/// last short), as the device tables hold them.
struct ReductionLayout {
    /// [`CHUNK_WORDS`] per chunk: its first group in the flat buffers, its groups.
    chunk_words: Vec<u32>,
    /// [`TENSOR_WORDS`] per span: its first chunk, its chunks, its elements, where
    /// its value goes.
    span_words: Vec<u32>,
    span_chunks: Vec<(usize, usize)>,
}

impl ReductionLayout {
    fn of(spans: &[Span]) -> ReductionLayout {
        let mut chunk_words: Vec<u32> = Vec::new();
        let mut span_words: Vec<u32> = Vec::new();
        let mut span_chunks = Vec::with_capacity(spans.len());
        for s in spans {
            let first = chunk_words.len() / CHUNK_WORDS;
            for c in (0..s.groups).step_by(CHUNK_GROUPS) {
                let groups = CHUNK_GROUPS.min(s.groups - c);
                chunk_words.extend([word(s.first_group + c), word(groups)]);
            }
            let count = chunk_words.len() / CHUNK_WORDS - first;
            span_words.extend([word(first), word(count), word(s.len), word(s.out)]);
            span_chunks.push((first, count));
        }
        ReductionLayout {
            chunk_words,
            span_words,
            span_chunks,
        }
    }
}

fn word(x: usize) -> u32 {
    u32::try_from(x).expect("tensors, groups and chunks fewer than 2^32")
}

impl<R: DeviceRuntime> GpuOptimizer<R> {
    /// Scalars per tensor (its own row) instead of per parameter group: the plan
    /// reduces over tensors, or finds each group's row through its tensor.
    pub(super) fn rows_per_tensor(&self) -> bool {
        let plan = self.core.plan();
        !plan.reductions.is_empty() || has_rows(plan) || has_columns(plan) || reads_dims(plan)
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
        let tensors = self.tensors_in(scope);
        let groups = match scope {
            Scope::All => (0, self.groups),
            Scope::Tensor(id) => {
                let s = &self.segments[id.0];
                (s.first_group, s.first_group + s.groups)
            }
        };
        if tensors.1 == tensors.0 {
            return;
        }
        let rows = self.scoped_range(tensors, flashopt_ir::Extent::Row);
        let plan = self.core.plan();
        let scalars = &self.buffers[self.slot(Binding::Scalars)];
        let tensor_row = (scalar_stride(plan), plan.scalar_count());
        for phase in &phases.kernels {
            // A tiled phase steps the tensors' tile slots instead of their groups.
            let columns = phase.tiled.then(|| {
                phases
                    .column_layout()
                    .expect("a plan with column reductions has their layout")
            });
            match (bound, columns) {
                (Some(bound), Some(layout)) => {
                    self.launch_bound_tiled(bound, &phase.regions, layout)
                }
                (Some(bound), None) => {
                    self.launch_bound_with(bound, (&phase.alone, &phase.regions))
                }
                (None, columns) => {
                    let (first, count) = launch_range(match columns {
                        Some(layout) => layout.slots_of(tensors),
                        None => (groups.0, groups.1 - groups.0),
                    });
                    // SAFETY: every buffer holds every group (`upload`), the tile table
                    // every tile.
                    unsafe { launch(&self.client, &phase.alone, &self.buffers, first, count) }
                }
            }
            for &(k, op) in &phase.reductions {
                let scope = plan.reductions[k].scope;
                let (tables, partials, out, spans, k) = match (scope, &phases.rows, &phases.columns)
                {
                    (ReductionScope::Row, Some(row_tables), _) => (
                        row_tables,
                        &self.buffers[self.slot(Binding::Partials(k))],
                        &self.buffers[self.slot(Binding::RowValues)],
                        rows,
                        k,
                    ),
                    (ReductionScope::Column, _, Some((column_tables, _))) => (
                        column_tables,
                        &self.buffers[self.slot(Binding::ColumnPartials(k))],
                        &self.buffers[self.slot(Binding::ColumnValues)],
                        column_spans_of(&self.segments, tensors),
                        column_index(plan, k).expect("a column reduction"),
                    ),
                    _ => (
                        &phases.tensors,
                        &self.buffers[self.slot(Binding::Partials(k))],
                        scalars,
                        tensors,
                        k,
                    ),
                };
                if spans.1 == spans.0 {
                    continue;
                }
                // SAFETY: the phase wrote the partials of every group (column group)
                // of these tensors; the tables were built from the same segments, the
                // scalars with a row per tensor of the plan's stride, the row and
                // column values with one per row (column) of every tensor.
                unsafe {
                    launch_tensor_values(
                        &self.client,
                        &tables.tables,
                        partials,
                        out,
                        (k, op),
                        output_row(scope, tables.tables.reductions, tensor_row),
                        tables.chunks(spans),
                        spans,
                    )
                }
            }
            for &m in &phase.matrices {
                self.run_matrix_stage(m, tensors);
            }
        }
    }

    /// Give each matrix function's buffer room for every group, for one step: a phase
    /// writes it, the matrix stage and the step read it. Between steps it holds one
    /// element ([`Self::release_matrices`]), so a matrix function costs no memory
    /// held between steps.
    pub(super) fn hold_matrices(&mut self) {
        let len = self.groups * flashopt_ir::GROUP_SIZE;
        for m in 0..self.core.plan().matrices.len() {
            let slot = self.slot(Binding::Matrix(m));
            self.buffers[slot] = (self.client.empty(len.max(1) * 2), len.max(1));
        }
    }

    /// After a step: each matrix function's buffer back to one element.
    pub(super) fn release_matrices(&mut self) {
        for m in 0..self.core.plan().matrices.len() {
            let slot = self.slot(Binding::Matrix(m));
            self.buffers[slot] = (self.client.empty(2), 1);
        }
    }

    /// Matrix function `m` of every tensor in `tensors` (a range of registration
    /// indices), in place in its matrix buffer: tensors of one shape in one batch.
    fn run_matrix_stage(&self, m: usize, tensors: (usize, usize)) {
        let plan = self.core.plan();
        let MatrixFn::Orthogonalize = plan.matrices[m];
        let (handle, len) = &self.buffers[self.slot(Binding::Matrix(m))];
        let batches = matrix_batches(&self.segments[tensors.0..tensors.1]);
        // SAFETY: the buffer holds every group of every tensor, each tensor's matrix
        // row-major from its first group; tensors do not overlap.
        let done = unsafe {
            matrix::orthogonalize_batches(&self.client, handle, *len, &batches, &NewtonSchulz::MUON)
        };
        if let Err(e) = done {
            panic!("the matrix stage of `{}`: {e}", plan.optimizer);
        }
    }
}

#[cfg(test)]
mod tests {
    use flashopt_ir::GROUP_SIZE;
    use flashopt_ir::graph::Reduction;
    use flashopt_ir::layout::Shape;
    use flashopt_ir::reduction::{self, STRANDS};
    use flashopt_runtime::core::TensorInfo;

    use super::*;
    use crate::device::reductions::TENSOR_WORDS;
    use crate::optimizer::layout::segments;

    /// The device's levels 2 to 4 over the tables, performed on the host from the
    /// flat buffers' group values (padding poisoned, as the GPU tests poison it):
    /// each span's value is `reduction::reduce` of its elements, bit for bit.
    fn check_spans(spans: &[Span], flat: &[f32], expected: &[(usize, Vec<f32>)]) {
        // Each group's value over its real elements (the padding is NaN).
        let group_value = |r, g: usize| {
            let group = &flat[g * GROUP_SIZE..(g + 1) * GROUP_SIZE];
            let real = group.iter().take_while(|x| !x.is_nan()).count();
            reduction::group_value(r, &group[..real])
        };
        check_spans_of(spans, &group_value, expected)
    }

    /// As [`check_spans`], with each group's value (of the flat buffers, or of the
    /// column partials) given by `group_value`.
    fn check_spans_of(
        spans: &[Span],
        group_value: &dyn Fn(Reduction, usize) -> f64,
        expected: &[(usize, Vec<f32>)],
    ) {
        let layout = ReductionLayout::of(spans);
        assert_eq!(layout.span_chunks.len(), expected.len());
        for r in Reduction::ALL {
            let group_value = |g: usize| group_value(r, g);
            let chunk_values: Vec<f64> = layout
                .chunk_words
                .chunks(CHUNK_WORDS)
                .map(|w| {
                    let (start, count) = (w[0] as usize, w[1] as usize);
                    let groups: Vec<f64> = (start..start + count).map(group_value).collect();
                    reduction::chunk_values(r, &groups)[0]
                })
                .collect();
            for (i, w) in layout.span_words.chunks(TENSOR_WORDS).enumerate() {
                let (first, count, len, out) =
                    (w[0] as usize, w[1] as usize, w[2] as usize, w[3] as usize);
                let (expected_out, values) = &expected[i];
                assert_eq!((out, len), (*expected_out, values.len()));
                assert_eq!(layout.span_chunks[i], (first, count));
                let total = reduction::total(r, &chunk_values[first..first + count]);
                let value = reduction::finish(r, total, len);
                assert_eq!(
                    value.to_bits(),
                    reduction::reduce(r, values).to_bits(),
                    "{r:?}, span {i}"
                );
            }
        }
    }

    /// Tensors of `shapes`, their values in flat buffers with NaN padding (no value
    /// is NaN).
    fn flat_tensors(shapes: &[Shape]) -> (Vec<Segment>, Vec<f32>, Vec<Vec<f32>>) {
        let tensors: Vec<TensorInfo> = shapes
            .iter()
            .enumerate()
            .map(|(i, &shape)| TensorInfo::new(format!("t{i}"), 0, shape))
            .collect();
        let (segments, groups) = segments(&tensors);
        let mut flat = vec![f32::NAN; groups * GROUP_SIZE];
        let values: Vec<Vec<f32>> = shapes
            .iter()
            .map(|s| {
                (0..s.len)
                    .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3)
                    .collect()
            })
            .collect();
        for (s, v) in segments.iter().zip(&values) {
            flat[s.elements()].copy_from_slice(v);
        }
        (segments, flat, values)
    }

    #[test]
    fn the_tables_give_each_tensor_its_own_groups_in_order() {
        let lens = [
            1usize,
            33,
            CHUNK_GROUPS * GROUP_SIZE * (STRANDS + 3) + 5,
            1024,
            95,
        ];
        let shapes: Vec<Shape> = lens.iter().map(|&n| Shape::vector(n)).collect();
        let (segments, flat, values) = flat_tensors(&shapes);
        let expected: Vec<(usize, Vec<f32>)> = values.into_iter().enumerate().collect();
        check_spans(&tensor_spans(&segments), &flat, &expected);
    }

    /// Rows that start groups: each row's value is its own elements', in order, and
    /// goes to the row's index over every tensor's rows.
    #[test]
    fn the_tables_give_each_row_its_own_groups_in_order() {
        let shapes = [
            Shape::matrix(3, 64),
            Shape::vector(100),
            Shape::matrix(5, CHUNK_GROUPS * GROUP_SIZE + 32),
            Shape::matrix(1, 7),
            Shape::matrix(2, 32),
        ];
        let (segments, flat, values) = flat_tensors(&shapes);
        assert!(segments.iter().all(Segment::rows_start_groups));
        let mut expected = Vec::new();
        for (shape, v) in shapes.iter().zip(&values) {
            for row in v.chunks(shape.row_len) {
                expected.push((expected.len(), row.to_vec()));
            }
        }
        check_spans(&row_spans(&segments), &flat, &expected);
    }

    /// Columns: each column's value is its own elements', top to bottom, from the
    /// band values a tiled phase writes where the column layout puts them, and goes
    /// to the column's index over every tensor's (padded) columns.
    #[test]
    fn the_tables_give_each_column_its_own_bands_in_order() {
        let shapes = [
            Shape::matrix(3, 64),
            Shape::vector(100),
            Shape::matrix(CHUNK_GROUPS * GROUP_SIZE + 40, 32),
            Shape::vector(0),
            Shape::matrix(1, 7),
            Shape::matrix(33, 64),
        ];
        let (segments, _, values) = flat_tensors(&shapes);
        let layout = ColumnLayout::of(&segments);
        // Column group -> (tensor, column, band), as the tiles write them.
        let mut place = vec![None; layout.column_groups];
        let mut expected = Vec::new();
        for (t, (s, shape)) in segments.iter().zip(&shapes).enumerate() {
            let c = layout.tensors[t];
            let columns = if s.len == 0 { 0 } else { shape.cols() };
            for column in 0..columns {
                for band in 0..c.bands {
                    place[c.first_column_group + column * c.bands + band] = Some((t, column, band));
                }
                let values: Vec<f32> = (0..shape.rows())
                    .map(|r| values[t][r * shape.row_len + column])
                    .collect();
                expected.push((s.first_column + column, values));
            }
        }
        let group_value = |r, g: usize| {
            let (t, column, band) = place[g].expect("every column group is written");
            let shape = shapes[t];
            let rows = (band * GROUP_SIZE..shape.rows().min((band + 1) * GROUP_SIZE))
                .map(|row| values[t][row * shape.row_len + column])
                .collect::<Vec<f32>>();
            reduction::group_value(r, &rows)
        };
        check_spans_of(&column_spans(&segments, &layout), &group_value, &expected);
        let all = column_spans_of(&segments, (0, shapes.len()));
        assert_eq!(all, (0, expected.len()));
        assert_eq!(
            column_spans_of(&segments, (2, 3)),
            (64 + 100, 64 + 100 + 32)
        );
    }

    #[test]
    fn tensors_of_one_shape_share_a_batch_in_order() {
        let infos: Vec<TensorInfo> = [(6, 40), (40, 6), (6, 40), (1, 5), (40, 6)]
            .iter()
            .enumerate()
            .map(|(i, &(r, c))| TensorInfo::new(format!("t{i}"), 0, Shape::matrix(r, c)))
            .collect();
        let (segments, _) = segments(&infos);
        let batches = matrix_batches(&segments);
        let start = |t: usize| segments[t].first_group * GROUP_SIZE;
        assert_eq!(batches.len(), 3);
        assert_eq!((batches[0].rows, batches[0].cols), (6, 40));
        assert_eq!(batches[0].offsets, [start(0), start(2)]);
        assert_eq!((batches[1].rows, batches[1].cols), (40, 6));
        assert_eq!(batches[1].offsets, [start(1), start(4)]);
        assert_eq!(batches[2].offsets, [start(3)]);
    }
}
