//! A reduction's value for each tensor, from the per-group values a reduction phase
//! wrote (`Binding::Partials`, one buffer per reduction): levels 2 to 4 of
//! `flashopt_ir::reduction`, in its order, so that the value is the CPU reference's
//! bit for bit.
//!
//! - [`chunk_values`]: one cube of [`CHUNK_GROUPS`] units per chunk, the pairwise
//!   tree over its groups' values in shared memory;
//! - [`tensor_values`]: one cube of [`STRANDS`] units per tensor, each unit folding
//!   its strand's chunks in order, then the pairwise tree over the strands; the first
//!   unit finishes the value and writes it into the tensor's row of kernel scalars,
//!   where the next passes read it.

use cubecl::prelude::*;
use cubecl::server::Handle;
use flashopt_ir::graph::{Reduction, Scope as ReductionScope};
use flashopt_ir::reduction::{CHUNK_GROUPS, STRANDS};

use cubecl::ir::{AddressType, Type};
use flashopt_ir::Plan;

use crate::codegen::bindings::{F32, F64, U32, column_index, column_reductions, scalar_stride};
use crate::codegen::emit::{Target, compile_for, offline_device_properties};
use crate::codegen::ops::{combine, reduction_identity};

/// Words per chunk in the chunk table: its first group (in the flat buffers) and its
/// group count.
pub const CHUNK_WORDS: usize = 2;
/// Words per tensor in the tensor table: its first chunk, its chunk count, its
/// element count and its row of kernel scalars.
pub const TENSOR_WORDS: usize = 4;

/// The pairwise tree over `shared[0..width * 2]`, adjacent pairs first; the result in
/// `shared[0]`. Every unit of the cube calls it.
#[cube]
fn pairwise_in_shared(
    shared: &mut SharedMemory<f64>,
    unit: usize,
    #[comptime] size: usize,
    #[comptime] op: Reduction,
) {
    let levels = comptime![size.trailing_zeros() as usize];
    #[unroll]
    for level in 0..levels {
        let width = comptime![size >> (level + 1)];
        let mut value = reduction_identity(op);
        if unit < width {
            value = combine(shared[2 * unit], shared[2 * unit + 1], op);
        }
        sync_cube();
        if unit < width {
            shared[unit] = value;
        }
        sync_cube();
    }
}

/// Level 2: chunk `first + CUBE_POS`'s value of reduction `k` of `reductions`, from
/// the reduction's partials (one value per group).
#[cube(launch_unchecked)]
fn chunk_values(
    partials: &Array<f64>,
    chunks: &Array<u32>,
    out: &mut Array<f64>,
    first: u32,
    #[comptime] reductions: usize,
    #[comptime] k: usize,
    #[comptime] op: Reduction,
) {
    let chunk = CUBE_POS + usize::cast_from(first);
    let unit = UNIT_POS as usize;
    let start = usize::cast_from(chunks[chunk * CHUNK_WORDS]);
    let groups = usize::cast_from(chunks[chunk * CHUNK_WORDS + 1]);
    let mut shared = SharedMemory::<f64>::new(CHUNK_GROUPS);
    let mut value = reduction_identity(op);
    if unit < groups {
        value = partials[start + unit];
    }
    shared[unit] = value;
    sync_cube();
    pairwise_in_shared(&mut shared, unit, CHUNK_GROUPS, op);
    if unit == 0 {
        out[chunk * reductions + k] = shared[0];
    }
}

/// Levels 3 and 4: tensor `first + CUBE_POS`'s value of reduction `k`, written to
/// `scalars[row * stride + offset + k]`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn tensor_values(
    chunk_values: &Array<f64>,
    tensors: &Array<u32>,
    scalars: &mut Array<f32>,
    first: u32,
    #[comptime] reductions: usize,
    #[comptime] k: usize,
    #[comptime] op: Reduction,
    #[comptime] stride: usize,
    #[comptime] offset: usize,
) {
    let tensor = CUBE_POS + usize::cast_from(first);
    let unit = UNIT_POS as usize;
    let words = tensor * TENSOR_WORDS;
    let first_chunk = usize::cast_from(tensors[words]);
    let chunks = usize::cast_from(tensors[words + 1]);
    let len = tensors[words + 2];
    let row = usize::cast_from(tensors[words + 3]);
    // The strand folds its chunks in order, eight loads issued before their eight
    // combinations: on one large tensor a strand holds about a thousand chunks, and
    // one dependent load at a time left the launch waiting on memory. Past the last
    // chunk a load gives the identity, which the fold leaves as it is (`combine`
    // with the identity changes no strand: a strand started at the identity is never
    // -0, and the maximum's identity is below every value).
    let mut strand = reduction_identity(op);
    let mut c = unit;
    while c < chunks {
        let at = (first_chunk, chunks);
        let v0 = chunk_or_identity(chunk_values, at, c, reductions, k, op);
        let v1 = chunk_or_identity(chunk_values, at, c + STRANDS, reductions, k, op);
        let v2 = chunk_or_identity(chunk_values, at, c + 2 * STRANDS, reductions, k, op);
        let v3 = chunk_or_identity(chunk_values, at, c + 3 * STRANDS, reductions, k, op);
        let v4 = chunk_or_identity(chunk_values, at, c + 4 * STRANDS, reductions, k, op);
        let v5 = chunk_or_identity(chunk_values, at, c + 5 * STRANDS, reductions, k, op);
        let v6 = chunk_or_identity(chunk_values, at, c + 6 * STRANDS, reductions, k, op);
        let v7 = chunk_or_identity(chunk_values, at, c + 7 * STRANDS, reductions, k, op);
        strand = combine(strand, v0, op);
        strand = combine(strand, v1, op);
        strand = combine(strand, v2, op);
        strand = combine(strand, v3, op);
        strand = combine(strand, v4, op);
        strand = combine(strand, v5, op);
        strand = combine(strand, v6, op);
        strand = combine(strand, v7, op);
        c += 8 * STRANDS;
    }
    let mut shared = SharedMemory::<f64>::new(STRANDS);
    shared[unit] = strand;
    sync_cube();
    pairwise_in_shared(&mut shared, unit, STRANDS, op);
    if unit == 0 {
        scalars[row * stride + offset + k] = finish(shared[0], len, op);
    }
}

/// Chunk `c` of a span of `chunks` from `first` (`at`), or the identity past them.
#[cube]
fn chunk_or_identity(
    chunk_values: &Array<f64>,
    at: (usize, usize),
    c: usize,
    #[comptime] reductions: usize,
    #[comptime] k: usize,
    #[comptime] op: Reduction,
) -> f64 {
    let (first, chunks) = at;
    let inside = c < chunks;
    let value = chunk_values[(first + select(inside, c, 0)) * reductions + k];
    select(inside, value, reduction_identity(op))
}

/// `flashopt_ir::reduction::finish`: f64 division and root (correctly rounded on
/// CUDA and HIP), rounded once to f32.
#[cube]
fn finish(total: f64, len: u32, #[comptime] op: Reduction) -> f32 {
    let n = f64::cast_from(len);
    let value = match op {
        Reduction::Sum | Reduction::Max => total,
        Reduction::Mean => total / n,
        Reduction::Norm => f64::sqrt(total),
        Reduction::Rms => f64::sqrt(total / n),
    };
    f32::cast_from(value)
}

/// Where the value of a reduction of `scope` goes in its output row: each row of
/// [`Binding::RowValues`](crate::codegen::bindings::Binding::RowValues) holds every
/// reduction's value (`reductions` of them), each column of
/// [`Binding::ColumnValues`](crate::codegen::bindings::Binding::ColumnValues) every
/// column reduction's (`reductions` is then their count); a tensor's goes into its row
/// of kernel scalars, of `tensor_row`'s (stride, offset).
pub fn output_row(
    scope: ReductionScope,
    reductions: usize,
    tensor_row: (usize, usize),
) -> (usize, usize) {
    match scope {
        ReductionScope::Row | ReductionScope::Column => (reductions, 0),
        ReductionScope::Tensor => tensor_row,
    }
}

/// The device side of one plan's reductions: where its chunks and tensors lie, and
/// the chunk values between the two launches.
pub struct ReductionTables {
    /// [`CHUNK_WORDS`] per chunk, every tensor's chunks in order.
    pub chunks: (Handle, usize),
    /// [`TENSOR_WORDS`] per tensor.
    pub tensors: (Handle, usize),
    /// `chunks * reductions` f64.
    pub chunk_values: (Handle, usize),
    pub reductions: usize,
}

/// Levels 2 to 4 of reduction `k` for tensors `tensors.0..tensors.1` (whose chunks
/// are `chunks.0..chunks.1`), written into their rows of `scalars`.
///
/// # Safety
/// The partials must hold every group of those tensors; the tables and the scalars
/// must be as [`ReductionTables`] and `Binding::Scalars` describe, `stride` and
/// `offset` the plan's.
#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_tensor_values<R: Runtime>(
    client: &ComputeClient<R>,
    tables: &ReductionTables,
    partials: &(Handle, usize),
    scalars: &(Handle, usize),
    (k, op): (usize, Reduction),
    (stride, offset): (usize, usize),
    chunks: (usize, usize),
    tensors: (usize, usize),
) {
    let count = |(a, b): (usize, usize)| u32::try_from(b - a).expect("fewer than 2^32");
    let array = |(h, len): &(Handle, usize)| unsafe { ArrayArg::from_raw_parts(h.clone(), *len) };
    if chunks.1 > chunks.0 {
        unsafe {
            chunk_values::launch_unchecked::<R>(
                client,
                CubeCount::Static(count(chunks), 1, 1),
                CubeDim::new_1d(CHUNK_GROUPS as u32),
                array(partials),
                array(&tables.chunks),
                array(&tables.chunk_values),
                chunks.0 as u32,
                tables.reductions,
                k,
                op,
            )
        }
    }
    if tensors.1 > tensors.0 {
        unsafe {
            tensor_values::launch_unchecked::<R>(
                client,
                CubeCount::Static(count(tensors), 1, 1),
                CubeDim::new_1d(STRANDS as u32),
                array(&tables.chunk_values),
                array(&tables.tensors),
                array(scalars),
                tensors.0 as u32,
                tables.reductions,
                k,
                op,
                stride,
                offset,
            )
        }
    }
}

/// The CUDA or HIP source of the chunk and tensor kernels of every reduction of
/// `plan`, as a device compiles them (for the host's compile checks: NVRTC in CI, and
/// `flashopt emit --reduction-kernels`).
pub fn sources(plan: &Plan, target: Target) -> Result<Vec<String>, String> {
    let stride = scalar_stride(plan);
    let offset = plan.scalar_count();
    let columns = column_reductions(plan).len();
    let mut out = Vec::new();
    for (k, r) in plan.reductions.iter().enumerate() {
        let op = r.op;
        // Column reductions keep their values apart, counted among themselves.
        let (reductions, k) = match column_index(plan, k) {
            Some(j) => (columns, j),
            None => (plan.reductions.len(), k),
        };
        let (stride, offset) = output_row(r.scope, reductions, (stride, offset));
        for tensors in [false, true] {
            let mut b = KernelBuilder::default();
            b.runtime_properties(target.target_properties());
            b.device_properties(&offline_device_properties(target));
            AddressType::U32.register(&mut b.scope);
            let units = if tensors {
                let values = b.input_array(Type::new(F64));
                let table = b.input_array(Type::new(U32));
                let scalars = b.output_array(Type::new(F32));
                let first = b.scalar(U32);
                tensor_values::expand(
                    &mut b.scope,
                    values.into(),
                    table.into(),
                    scalars.into(),
                    first.into(),
                    reductions,
                    k,
                    op,
                    stride,
                    offset,
                );
                STRANDS
            } else {
                let partials = b.input_array(Type::new(F64));
                let table = b.input_array(Type::new(U32));
                let chunk_out = b.output_array(Type::new(F64));
                let first = b.scalar(U32);
                chunk_values::expand(
                    &mut b.scope,
                    partials.into(),
                    table.into(),
                    chunk_out.into(),
                    first.into(),
                    reductions,
                    k,
                    op,
                );
                CHUNK_GROUPS
            };
            let level = if tensors { "tensor" } else { "chunk" };
            let settings = KernelSettings::default()
                .cube_dim(CubeDim::new_1d(units as u32))
                .address_type(AddressType::U32)
                .kernel_name(format!("flashopt_{}_r{k}_{level}", plan.optimizer));
            out.push(compile_for(target, b.build(settings))?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both kernels expand (cubecl runs their Rust on the host) and compile to CUDA
    /// and HIP source for every reduction, as on a device.
    #[test]
    fn the_kernels_compile_for_every_reduction() {
        use flashopt_ir::def::{OptimizerDef, Range, call, name};
        let mut def = OptimizerDef::new("every_reduction");
        def.hyper("lr", 0.1, Range::at_least(0.0));
        let mut update = name("g");
        for r in Reduction::ALL {
            let tensor = flashopt_ir::graph::Reducer::new(r, flashopt_ir::graph::Scope::Tensor);
            update = update * call(&tensor.name(), vec![name("g")]);
        }
        def.assign("p", name("p") - name("lr") * update);
        let plan = flashopt_ir::compile(&def, flashopt_ir::PlanConfig::f32_params()).unwrap();
        for target in [Target::Cuda, Target::Hip] {
            let sources = sources(&plan, target).unwrap();
            assert_eq!(sources.len(), 2 * Reduction::ALL.len());
            for source in sources {
                assert!(source.contains("__syncthreads"), "{source}");
            }
        }
    }
}
