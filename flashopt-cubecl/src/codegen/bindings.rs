//! How a plan's kernel binds its buffers, and how it spreads groups over units: what
//! the runtime allocates and launches with, and what [`crate::codegen::define`] indexes.

use cubecl::ir::{ElemType, FloatKind, IntKind, StorageType, UIntKind};
use flashopt_ir::graph::Scope;
use flashopt_ir::{Extent, GROUP_SIZE, Plan, Role, Storage};

/// What a kernel buffer holds, in binding order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Binding {
    /// A part of the plan's layout, by index.
    Part(usize),
    /// Host scalars, [`scalar_stride`] per row: per parameter group (the plan's
    /// scalars, then padding to whole vectors), or for a plan with reductions per
    /// tensor (its group's scalars, then its reductions' values).
    Scalars,
    /// One u32 per group: element count in bits 0..6, scalar row from bit 8.
    GroupInfo,
    /// Every code table's values, one after the other.
    Tables,
    /// For reduction `k` of a plan (over tensors or rows): each group's value of it
    /// (f64, one per group), which the phase computing it writes
    /// (`crate::device::reductions` sums them over each tensor or row). One buffer per
    /// reduction, so that a phase writes whole sectors of its own. Every pass of such a
    /// plan binds them all, so that all of them take the same buffers.
    Partials(usize),
    /// The gradient of region `k >= 1` of a launch (region 0 reads the gradient
    /// part's binding): kernels with [`KernelShape::gradient_regions`] above 1.
    GradientRegion(usize),
    /// Where the step writes the new values of per-row part `k` (by index): every
    /// element of a row reads the row's value from before the step in
    /// [`Binding::Part`], so the new one goes elsewhere until the step is over, and
    /// is then copied over the old.
    RowWrite(usize),
    /// For a plan with row reductions: every row's value of each reduction (f32,
    /// `row * reductions + k`, rows counted over every tensor), which the finishing
    /// launches after a reduction phase write.
    RowValues,
    /// For a plan with values per row or column: [`ROW_TABLE_WORDS`] u32 per tensor
    /// (its first group, its groups per row, its first row, its first column), from
    /// which a unit finds its group's row and its lanes' columns.
    RowTable,
    /// As [`Binding::RowWrite`], for per-column part `k`: the units of a tensor's
    /// first row store the new values.
    ColumnWrite(usize),
    /// For a plan with column reductions: every column's value of each column
    /// reduction (f32, `column * column_reductions + j`, columns counted over every
    /// tensor, `j` the reduction's place among the plan's column reductions,
    /// [`column_reductions`]).
    ColumnValues,
    /// For column reduction `k` (by its index among the plan's reductions): each
    /// column's value over each band of 32 rows (f64, one per column group); a
    /// column's bands are consecutive ([`crate::optimizer`]'s column layout), so the
    /// finishing launches read them as they read a row's groups.
    ColumnPartials(usize),
    /// For a plan with column reductions: [`TILE_WORDS`] u32 per tile of 32 rows by
    /// 32 columns (see [`tiled`]).
    TileTable,
    /// For matrix function `m` of a plan: every element's entry of its argument in
    /// bf16, laid out as the parameters are (each tensor's matrix row-major from its
    /// first group), which the phase computing it writes; the matrix stage leaves the
    /// result in its place, which the later passes read.
    Matrix(usize),
}

/// Words per tensor in [`Binding::RowTable`].
pub const ROW_TABLE_WORDS: usize = 4;

/// Words per tile in [`Binding::TileTable`]: the tile's first group (its first row's),
/// the tensor's groups per row (from one row of the tile to the next), the tile's rows
/// (1 to 32), its columns (1 to 32), the column group of its first column and band,
/// and the tensor's bands of 32 rows (from one column's groups to the next's).
pub const TILE_WORDS: usize = 6;

/// One kernel buffer: its role, element type and vector width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Buffer {
    pub role: Binding,
    pub storage: StorageType,
    pub vector: usize,
    pub writable: bool,
}

impl Buffer {
    pub fn ty(&self) -> cubecl::ir::Type {
        cubecl::ir::Type::new(self.storage).with_vector_size(self.vector)
    }

    pub fn element_bytes(&self) -> usize {
        self.storage.size()
    }
}

fn storage_type(storage: Storage) -> StorageType {
    StorageType::Scalar(match storage {
        Storage::Bf16 => ElemType::Float(FloatKind::BF16),
        Storage::F16 => ElemType::Float(FloatKind::F16),
        Storage::F32 => ElemType::Float(FloatKind::F32),
        Storage::I8 => ElemType::Int(IntKind::I8),
        Storage::I16 => ElemType::Int(IntKind::I16),
        Storage::U8 => ElemType::UInt(UIntKind::U8),
    })
}

/// Host scalars are read as vectors of this many: one 16-byte load for four of them
/// (AdamW's 14 scalars were 14 loads per unit, more than its data loads).
pub const SCALAR_VECTOR: usize = 4;

/// How many f32 one row of [`Binding::Scalars`] takes: the plan's scalars, its
/// reductions' values and its tensor's dimensions, padded to whole [`SCALAR_VECTOR`]s
/// (at least one).
pub fn scalar_stride(plan: &Plan) -> usize {
    row_width(plan).div_ceil(SCALAR_VECTOR).max(1) * SCALAR_VECTOR
}

/// The values a kernel reads from its row of [`Binding::Scalars`]: the kernel
/// scalars, then the reductions' values, then, for a plan that reads `rows` or
/// `cols`, the tensor's rows and columns ([`dim_slot`]).
pub fn row_width(plan: &Plan) -> usize {
    plan.scalar_count() + plan.reductions.len() + if reads_dims(plan) { 2 } else { 0 }
}

/// Whether a pass of the plan reads a tensor's `rows` or `cols`: each tensor then has
/// its own row of scalars, which holds them.
pub fn reads_dims(plan: &Plan) -> bool {
    plan.passes().any(|p| {
        p.insts
            .iter()
            .any(|i| matches!(i.op, flashopt_ir::program::InstOp::Dim(_)))
    })
}

/// Where a tensor's row of [`Binding::Scalars`] holds dimension `d`.
pub fn dim_slot(plan: &Plan, d: flashopt_ir::graph::Dim) -> usize {
    let first = plan.scalar_count() + plan.reductions.len();
    match d {
        flashopt_ir::graph::Dim::Rows => first,
        flashopt_ir::graph::Dim::Cols => first + 1,
    }
}

pub(crate) const U32: StorageType = StorageType::Scalar(ElemType::UInt(UIntKind::U32));
pub(crate) const F32: StorageType = StorageType::Scalar(ElemType::Float(FloatKind::F32));
pub(crate) const F64: StorageType = StorageType::Scalar(ElemType::Float(FloatKind::F64));

/// How the kernel spreads a group over units, and how it divides. Built only
/// through [`KernelShape::new`] and the `with_` methods, which refuse shapes the
/// kernel cannot run (a unit count of zero, regions past the binding limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelShape {
    /// Elements each unit steps: 4, 8, 16 or 32 (then `32 / lanes` units share a group).
    pub(crate) lanes_per_unit: usize,
    pub(crate) arithmetic: Arithmetic,
    /// Gradient bindings per launch: 1, or up to [`MAX_GRADIENT_REGIONS`] regions of
    /// consecutive groups, each reading its gradient from its own buffer (tensors'
    /// gradients where a trainer left them, stepped in one launch).
    pub(crate) gradient_regions: usize,
}

/// The most gradient regions a launch binds. Each costs the kernel a comparison and a
/// predicated load per unit.
pub const MAX_GRADIENT_REGIONS: usize = 8;

/// How the kernel computes the plan's divisions and square roots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Arithmetic {
    /// Correctly rounded, as the plan says and the CPU interpreter computes: the GPU
    /// step equals the CPU step bit for bit.
    #[default]
    Exact,
    /// Opt-in, CUDA only: divisions as `__fdividef` (a reciprocal and a multiply,
    /// within 2 ulp for divisors below 2^126) and square roots as `x * rsqrtf(x)`
    /// (within about 3 ulp), without the correctly rounded routines' range checks and
    /// slow paths. Results differ from the CPU reference in the last bits of the
    /// update and, where a value lies near a rounding boundary, by one code or one
    /// parameter ulp (docs/BENCHMARKS.md measures how often). HIP keeps exact
    /// divisions.
    Approximate,
}

impl Arithmetic {
    pub const ALL: [Arithmetic; 2] = [Arithmetic::Exact, Arithmetic::Approximate];

    /// `exact` or `approximate`: the bench's CSV column and command-line values.
    pub fn name(self) -> &'static str {
        match self {
            Arithmetic::Exact => "exact",
            Arithmetic::Approximate => "approximate",
        }
    }
}

impl Default for KernelShape {
    /// 4 lanes: eight units share a group. Fewer registers per unit leave room for more
    /// resident planes, which the step needs to overlap its arithmetic with memory;
    /// on an H100 it was the fastest shape for AdamW, Lion and SGD at 268M parameters
    /// (docs/BENCHMARKS.md, "Kernel shape").
    fn default() -> Self {
        KernelShape {
            lanes_per_unit: 4,
            arithmetic: Arithmetic::Exact,
            gradient_regions: 1,
        }
    }
}

impl KernelShape {
    pub fn new(lanes_per_unit: usize) -> Option<KernelShape> {
        matches!(lanes_per_unit, 4 | 8 | 16 | 32).then_some(KernelShape {
            lanes_per_unit,
            ..KernelShape::default()
        })
    }

    pub fn with_arithmetic(self, arithmetic: Arithmetic) -> KernelShape {
        KernelShape { arithmetic, ..self }
    }

    /// `None` outside `1..=MAX_GRADIENT_REGIONS`.
    pub fn with_gradient_regions(self, gradient_regions: usize) -> Option<KernelShape> {
        (1..=MAX_GRADIENT_REGIONS)
            .contains(&gradient_regions)
            .then_some(KernelShape {
                gradient_regions,
                ..self
            })
    }

    /// Elements each unit steps: 4, 8, 16 or 32.
    pub fn lanes_per_unit(self) -> usize {
        self.lanes_per_unit
    }

    pub fn arithmetic(self) -> Arithmetic {
        self.arithmetic
    }

    /// Gradient bindings per launch, 1 to [`MAX_GRADIENT_REGIONS`].
    pub fn gradient_regions(self) -> usize {
        self.gradient_regions
    }

    pub fn units_per_group(self) -> usize {
        GROUP_SIZE / self.lanes_per_unit
    }

    /// Vector width for an element type: at most 16 bytes, at most one unit's lanes.
    pub(crate) fn vector_width(self, element_bytes: usize) -> usize {
        (16 / element_bytes).min(self.lanes_per_unit)
    }
}

/// The buffers of a plan's kernels, in binding order: one per part, then the host
/// scalars, the group info words, if the plan has any, its code tables, each
/// reduction's partial values, the write halves of per-row and per-column parts,
/// with values per row or column the row values, the column values and tile table,
/// and the row table, each matrix function's matrices, and the gradient bindings of
/// regions 1..
/// (see [`KernelShape::gradient_regions`]).
pub fn buffers(plan: &Plan, shape: KernelShape) -> Vec<Buffer> {
    let mut out: Vec<Buffer> = plan
        .parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let storage = storage_type(p.storage);
            Buffer {
                role: Binding::Part(i),
                storage,
                vector: match p.extent {
                    Extent::Element => shape.vector_width(storage.size()),
                    Extent::Group | Extent::Row | Extent::Column => 1,
                },
                writable: p.role != Role::Gradient,
            }
        })
        .collect();
    let scalar = |role, storage| Buffer {
        role,
        storage,
        vector: 1,
        writable: false,
    };
    out.push(Buffer {
        vector: SCALAR_VECTOR,
        ..scalar(Binding::Scalars, F32)
    });
    out.push(scalar(Binding::GroupInfo, U32));
    if !plan.tables.is_empty() {
        out.push(scalar(Binding::Tables, F32));
    }
    for (k, r) in plan.reductions.iter().enumerate() {
        let role = match r.scope {
            Scope::Column => Binding::ColumnPartials(k),
            Scope::Tensor | Scope::Row => Binding::Partials(k),
        };
        out.push(Buffer {
            writable: true,
            ..scalar(role, F64)
        });
    }
    for (i, p) in plan.parts.iter().enumerate() {
        let role = match p.extent {
            Extent::Row => Binding::RowWrite(i),
            Extent::Column => Binding::ColumnWrite(i),
            _ => continue,
        };
        out.push(Buffer {
            role,
            storage: storage_type(p.storage),
            vector: 1,
            writable: true,
        });
    }
    if has_rows(plan) || has_columns(plan) {
        if plan.reductions.iter().any(|r| r.scope == Scope::Row) {
            out.push(scalar(Binding::RowValues, F32));
        }
        if !column_reductions(plan).is_empty() {
            out.push(scalar(Binding::ColumnValues, F32));
            out.push(scalar(Binding::TileTable, U32));
        }
        out.push(scalar(Binding::RowTable, U32));
    }
    for m in 0..plan.matrices.len() {
        out.push(Buffer {
            role: Binding::Matrix(m),
            storage: storage_type(Storage::Bf16),
            vector: shape.vector_width(2),
            writable: true,
        });
    }
    let grad = out[plan.part_with_role(Role::Gradient).index()];
    for k in 1..shape.gradient_regions {
        out.push(Buffer {
            role: Binding::GradientRegion(k),
            ..grad
        });
    }
    out
}

/// Whether the plan keeps or computes values per row: its kernels find each group's
/// row ([`Binding::RowTable`]).
pub fn has_rows(plan: &Plan) -> bool {
    plan.parts.iter().any(|p| p.extent == Extent::Row)
        || plan.reductions.iter().any(|r| r.scope == Scope::Row)
}

/// Whether the plan keeps or computes values per column: its kernels find each lane's
/// column ([`Binding::RowTable`]).
pub fn has_columns(plan: &Plan) -> bool {
    plan.columns().is_some()
}

/// The plan's reductions over columns, by index: their values and partials are kept
/// in this order ([`Binding::ColumnValues`], [`Binding::ColumnPartials`]).
pub fn column_reductions(plan: &Plan) -> Vec<usize> {
    (0..plan.reductions.len())
        .filter(|&k| plan.reductions[k].scope == Scope::Column)
        .collect()
}

/// Reduction `k`'s place among the plan's column reductions ([`column_reductions`]),
/// where its column values and partials are kept; `None` for another scope.
pub fn column_index(plan: &Plan, k: usize) -> Option<usize> {
    column_reductions(plan).iter().position(|&c| c == k)
}

/// Whether pass `pass` of the plan (as [`Plan::passes`] counts) reduces over columns.
/// Such a pass runs *tiled*: a tile is 32 rows by 32 columns of one tensor (a band of
/// 32 rows and a block of 32 columns; fewer at the tensor's last rows, or at a
/// vector's end), and its 32 groups, one per row, are stepped by 32 consecutive group
/// slots of the launch, so that one cube holds whole tiles ([`TILE_WORDS`] describe
/// each). The step and the other passes run over the groups in order.
pub fn tiled(plan: &Plan, pass: usize) -> bool {
    plan.passes().nth(pass).is_some_and(|program| {
        program.insts.iter().any(|i| {
            matches!(i.op, flashopt_ir::program::InstOp::Reduce(k, _)
                if plan.reductions[k].scope == Scope::Column)
        })
    })
}

/// The binding index of the buffer with `role` in `buffers` (as [`buffers`] lists them).
///
/// # Panics
/// If the plan has no such buffer (tables, for a plan without any).
pub fn slot(buffers: &[Buffer], role: Binding) -> usize {
    buffers
        .iter()
        .position(|b| b.role == role)
        .expect("the plan has this buffer")
}

/// Every table's values, in the order [`Binding::Tables`] holds them, and where each
/// table starts.
pub fn table_values(plan: &Plan) -> (Vec<f32>, Vec<usize>) {
    let mut values = Vec::new();
    let mut starts = Vec::new();
    for t in &plan.tables {
        starts.push(values.len());
        values.extend_from_slice(&t.values);
    }
    (values, starts)
}
