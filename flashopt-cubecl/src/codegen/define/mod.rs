//! The back end proper: a [`Plan`]'s step program becomes a cubecl
//! [`KernelDefinition`], instruction by instruction.
//!
//! A 32-element group is stepped by `32 / lanes_per_unit` neighbouring units of one
//! plane ([`KernelShape`]). Each unit loads its lanes of every per-element part with
//! vectors of up to 16 bytes and runs the program lane by lane; a value the same on
//! every lane of the group (host scalars, constants, per-group parts, group maxima and
//! what is computed from those alone) is computed once per unit. A group maximum is
//! each unit's own maximum combined across the group's units with plane shuffles, so
//! every unit of a plane reaches the shuffles: units past the end recompute the last
//! group and store nothing. Stores happen last, after every load (the plan verifier
//! guarantees no part is read after it is written).
//!
//! Buffers are one per part, flat and padded to whole groups; a per-group info word
//! gives the group's element count (a tensor's last group may be short: padding lanes
//! never enter a group maximum) and its parameter group, which selects the host
//! scalars. So one launch steps any number of tensors. This file knows no codec.

use cubecl::ir::{DeviceProperties, ManagedVariable, TargetProperties};
use cubecl::prelude::*;
use flashopt_ir::graph::{Func1, Func2, Reduction, Scope as ReductionScope};
use flashopt_ir::passes::ranges::{OperandFacts, operand_facts};
use flashopt_ir::program::{InstOp, Program, ValueId};
use flashopt_ir::{Extent, GROUP_SIZE, PartId, Plan, Role, Storage};
use half::{bf16, f16};

use crate::codegen::bindings::{
    Arithmetic, Binding, Buffer, F32, KernelShape, SCALAR_VECTOR, U32, buffers, dim_slot,
    has_columns, has_rows, row_width, scalar_stride, slot, table_values, tiled,
};
use crate::codegen::emit::CUBE_DIM;
use crate::codegen::ops;

mod memory;
mod scoped;

use memory::{
    load_elements, load_group, load_lanes_from_regions, push_lanes, store_elements, store_group,
    widen, width_of,
};
use scoped::{load_row, store_row};

type F = NativeExpand<f32>;
type I = NativeExpand<i32>;

/// Build the kernel definition of one pass of `plan` (`pass` indexes
/// [`Plan::passes`]: its reduction phases, then the step) for a target and device.
pub fn define(
    plan: &Plan,
    pass: usize,
    shape: KernelShape,
    target: (TargetProperties, Scheduling),
    device: &DeviceProperties,
    settings: KernelSettings,
) -> KernelDefinition {
    let (target, scheduling) = target;
    let mut builder = KernelBuilder::default();
    builder.runtime_properties(target);
    builder.device_properties(device);
    // `usize` indices resolve to the address type, as in cubecl's own kernels.
    settings.address_type.register(&mut builder.scope);
    let layout = buffers(plan, shape);
    let vars: Vec<ManagedVariable> = layout
        .iter()
        .map(|b| {
            if b.writable {
                builder.output_array(b.ty())
            } else {
                builder.input_array(b.ty())
            }
        })
        .collect();
    // Scalars: the number of groups launched, then the first of them.
    let count = builder.scalar(U32);
    let first = builder.scalar(U32);
    // Always 0 at launch: see `ops::veiled`.
    let veil = builder.scalar(F32);
    // How many groups the gradient binding starts before group 0 (`ops::gradient_group`).
    let gradient_first = builder.scalar(U32);
    // Regions 1.. of a launch with several gradient bindings: each one's first group
    // and where its binding starts (as `gradient_first`).
    let regions: Vec<(ManagedVariable, ManagedVariable)> = (1..shape.gradient_regions)
        .map(|_| (builder.scalar(U32), builder.scalar(U32)))
        .collect();
    let program = plan
        .passes()
        .nth(pass)
        .expect("a pass of the plan: its phases, then the step");
    let tiled = tiled(plan, pass);
    let kernel = KernelBody {
        plan,
        program,
        shape,
        scheduling,
        layout: &layout,
        vars: &vars,
        veil: veil.into(),
        launch: tiled.then(|| (first.clone(), count.clone())),
    };
    let scope = &mut builder.scope;
    let units = shape.units_per_group();
    let unit = ops::unit_index::expand(scope);
    let group = ops::unit_group::expand(
        scope,
        unit.clone(),
        first.into(),
        count.clone().into(),
        units,
    );
    let sub = ops::unit_part::expand(scope, unit.clone(), units);
    let in_range = ops::unit_in_range::expand(scope, unit, count.into(), units);
    // A tiled pass launches over tile slots: each names its group through the tiles.
    let (group, in_range) = if tiled {
        assert_eq!(
            (CUBE_DIM as usize / units) % GROUP_SIZE,
            0,
            "a cube holds whole tiles"
        );
        let tiles: NativeExpand<Array<u32>> = kernel.var(Binding::TileTable).into();
        let real = ops::tile_row_is_real::expand(scope, tiles.clone(), group.clone());
        let group = ops::tile_group::expand(scope, tiles, group);
        (group, ops::both::expand(scope, in_range, real))
    } else {
        (group, in_range)
    };
    let gradient_group = ops::gradient_group::expand(scope, group.clone(), gradient_first.into());
    let gradient_regions = gradient_regions(scope, &group, gradient_group.clone(), &regions);
    let place = Place {
        group,
        gradient_group,
        gradient_regions,
        sub,
        shape,
        row: None,
        column: None,
    };
    match shape.arithmetic {
        Arithmetic::Exact => kernel.step_group(scope, &place, in_range),
        // What cubecl needs to emit `a / b` as `__fdividef`; square roots stay as
        // `ops::sqrt` writes them.
        Arithmetic::Approximate => fast_math_expand(
            scope,
            FastMath::AllowReciprocal
                | FastMath::ReducedPrecision
                | FastMath::UnsignedZero
                | FastMath::NotInf,
            |scope| kernel.step_group(scope, &place, in_range),
        ),
    }
    builder.build(settings)
}

/// How the units of a plane run: the one difference between the targets the kernel
/// cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheduling {
    /// Each unit may run ahead of the others of its plane (CUDA since Volta): a plane
    /// barrier orders one unit's stores after the others' loads.
    Independent,
    /// A plane runs in lockstep (AMD wavefronts; HIP has no plane barrier).
    Lockstep,
}

/// For a launch with several gradient regions, whether the unit's group is in each
/// region and its index in that region's binding. Region `k` runs from its first group
/// to the next region's, so the group's region is the number of regions 1.. starting
/// at or before it.
fn gradient_regions(
    scope: &mut Scope,
    group: &NativeExpand<usize>,
    first_gradient_group: NativeExpand<usize>,
    regions: &[(ManagedVariable, ManagedVariable)],
) -> Vec<(NativeExpand<bool>, NativeExpand<usize>)> {
    if regions.is_empty() {
        return Vec::new();
    }
    let mut index = ops::region_count::expand(scope, group.clone(), regions[0].0.clone().into());
    for (start, _) in &regions[1..] {
        let after = ops::region_count::expand(scope, group.clone(), start.clone().into());
        index = ops::add_u32::expand(scope, index, after);
    }
    let mut out = vec![(
        ops::is_region::expand(scope, index.clone(), 0),
        first_gradient_group,
    )];
    for (k, (_, first)) in regions.iter().enumerate() {
        out.push((
            ops::is_region::expand(scope, index.clone(), k as u32 + 1),
            ops::gradient_group::expand(scope, group.clone(), first.clone().into()),
        ));
    }
    out
}

/// Where a unit's lanes lie: its group and which part of the group it holds.
#[derive(Clone)]
struct Place {
    group: NativeExpand<usize>,
    /// The group's index in the gradient binding.
    gradient_group: NativeExpand<usize>,
    /// With several gradient regions: whether the group lies in each, and its index in
    /// that region's binding (empty with one binding).
    gradient_regions: Vec<(NativeExpand<bool>, NativeExpand<usize>)>,
    sub: NativeExpand<usize>,
    shape: KernelShape,
    /// For a plan with values per row: the group's row (over every tensor's rows),
    /// and whether this unit holds the row's first element.
    row: Option<(NativeExpand<usize>, NativeExpand<bool>)>,
    /// For a plan with values per column: the column of the unit's first lane (over
    /// every tensor's columns, its other lanes the next ones), whether the group lies
    /// in its tensor's first row, and the group's real elements.
    column: Option<(NativeExpand<usize>, NativeExpand<bool>, NativeExpand<u32>)>,
}

impl Place {
    /// The same unit, indexing the gradient binding.
    fn in_gradient(&self) -> Place {
        Place {
            group: self.gradient_group.clone(),
            ..self.clone()
        }
    }

    /// Index of this unit's `c`-th vector of `width` elements.
    fn vector_index(&self, scope: &mut Scope, width: usize, c: usize) -> NativeExpand<usize> {
        ops::vector_index::expand(
            scope,
            self.group.clone(),
            self.sub.clone(),
            GROUP_SIZE / width,
            self.shape.lanes_per_unit / width,
            c,
        )
    }
}

/// One value of the program in one unit.
#[derive(Clone)]
enum Scalar {
    F(F),
    I(I),
}

impl Scalar {
    fn f(&self) -> F {
        match self {
            Scalar::F(x) => x.clone(),
            Scalar::I(_) => unreachable!("the verifier types every operand"),
        }
    }

    fn i(&self) -> I {
        match self {
            Scalar::I(x) => x.clone(),
            Scalar::F(_) => unreachable!("the verifier types every operand"),
        }
    }
}

/// A program value in one unit: one per lane, or one for the whole group.
#[derive(Clone)]
enum Reg {
    Lanes(Vec<Scalar>),
    Uniform(Scalar),
    /// Effects define nothing.
    None,
}

impl Reg {
    fn lane(&self, l: usize) -> Scalar {
        match self {
            Reg::Lanes(v) => v[l].clone(),
            Reg::Uniform(x) => x.clone(),
            Reg::None => unreachable!("effects are not operands"),
        }
    }
}

struct KernelBody<'a> {
    plan: &'a Plan,
    /// The pass this kernel runs: a reduction phase or the step.
    program: &'a Program,
    shape: KernelShape,
    scheduling: Scheduling,
    layout: &'a [Buffer],
    vars: &'a [ManagedVariable],
    veil: F,
    /// For a tiled pass (`bindings::tiled`): the launch's first tile slot and its
    /// slots, which place the cube's tiles.
    launch: Option<(ManagedVariable, ManagedVariable)>,
}

impl KernelBody<'_> {
    fn var(&self, role: Binding) -> ManagedVariable {
        self.vars[slot(self.layout, role)].clone()
    }

    fn lanes(&self) -> usize {
        self.shape.lanes_per_unit
    }

    fn approximate(&self) -> bool {
        self.shape.arithmetic == Arithmetic::Approximate
    }

    fn step_group(&self, scope: &mut Scope, place: &Place, in_range: NativeExpand<bool>) {
        let plan = self.plan;
        let program = self.program;
        let scalar_count = plan.scalar_count();
        let info = ops::load_scalar::expand::<u32>(
            scope,
            self.var(Binding::GroupInfo).into(),
            place.group.clone(),
        );
        let valid = ops::group_len::expand(scope, info.clone());
        let mut scoped = place.clone();
        if has_rows(plan) {
            let table: NativeExpand<Array<u32>> = self.var(Binding::RowTable).into();
            let row =
                ops::group_row::expand(scope, table.clone(), info.clone(), place.group.clone());
            let starts = ops::holds_row_start::expand(
                scope,
                table,
                info.clone(),
                place.group.clone(),
                place.sub.clone(),
            );
            scoped.row = Some((row, starts));
        }
        if has_columns(plan) {
            let table: NativeExpand<Array<u32>> = self.var(Binding::RowTable).into();
            let column = ops::group_column::expand(
                scope,
                table.clone(),
                info.clone(),
                place.group.clone(),
                place.sub.clone(),
                self.lanes(),
            );
            let first_row =
                ops::in_first_row::expand(scope, table, info.clone(), place.group.clone());
            scoped.column = Some((column, first_row, valid.clone()));
        }
        let place = &scoped;
        let vectors = scalar_stride(plan) / SCALAR_VECTOR;
        let base = ops::scalar_base::expand(scope, info, vectors);
        let scalars_array: NativeExpand<Array<Vector<f32, Const<SCALAR_VECTOR>>>> =
            self.var(Binding::Scalars).into();
        let mut scalars: Vec<F> = Vec::with_capacity(vectors * SCALAR_VECTOR);
        for c in 0..vectors {
            let at = ops::block_index::expand(scope, base.clone(), 1, c);
            let v = ops::load_vector::expand(scope, scalars_array.clone(), at);
            push_lanes(scope, &v, &mut scalars);
        }
        scalars.truncate(row_width(plan));
        let (_, table_starts) = table_values(plan);

        // The GPU steps only tensors whose rows start groups.
        let uniform = plan.uniform_over_group_where(program, true);
        let veil_needed = products_to_veil(program);
        let facts = operand_facts(plan, program);
        let mut regs: Vec<Reg> = Vec::with_capacity(program.len());
        let mut stores: Vec<(PartId, ValueId)> = Vec::new();
        let mut terms: Vec<(usize, ValueId)> = Vec::new();
        let mut matrix_args: Vec<(usize, ValueId)> = Vec::new();
        for (index, inst) in program.insts.iter().enumerate() {
            let reg = match inst.op {
                InstOp::Load(p) => self.load(scope, p, place),
                InstOp::Store(p, v) => {
                    stores.push((p, v));
                    Reg::None
                }
                InstOp::Input(_) | InstOp::Output(..) => {
                    unreachable!("a step program has no streams")
                }
                InstOp::Scalar(k) => Reg::Uniform(Scalar::F(scalars[k].clone())),
                InstOp::Reduced(k) => match plan.reductions[k].scope {
                    ReductionScope::Row => Reg::Uniform(Scalar::F(self.row_value(scope, k, place))),
                    ReductionScope::Column => Reg::Lanes(self.column_values(scope, k, place)),
                    ReductionScope::Tensor => {
                        Reg::Uniform(Scalar::F(scalars[scalar_count + k].clone()))
                    }
                },
                InstOp::Reduce(k, v) => {
                    terms.push((k, v));
                    Reg::None
                }
                InstOp::MatrixArg(m, v) => {
                    matrix_args.push((m, v));
                    Reg::None
                }
                InstOp::MatrixResult(m) => Reg::Lanes(load_elements(
                    scope,
                    self.var(Binding::Matrix(m)),
                    Storage::Bf16,
                    place,
                )),
                InstOp::Dim(d) => Reg::Uniform(Scalar::F(scalars[dim_slot(plan, d)].clone())),
                InstOp::Const(c) => Reg::Uniform(Scalar::F(constant(scope, c, &self.veil))),
                InstOp::IntConst(c) => Reg::Uniform(Scalar::I(I::from_lit(scope, c))),
                InstOp::GroupMax(v) => Reg::Uniform(Scalar::F(self.group_max(
                    scope,
                    &regs[v.index()],
                    place,
                    valid.clone(),
                ))),
                InstOp::Table(t, v) => {
                    let tables: NativeExpand<Array<f32>> = self.var(Binding::Tables).into();
                    let table = &plan.tables[t.index()];
                    let (first, len) = (table.first, table.values.len() as u32);
                    let start = table_starts[t.index()];
                    self.map(scope, uniform[index], |scope, l| {
                        let code = regs[v.index()].lane(l).i();
                        Scalar::F(ops::lookup::expand(
                            scope,
                            tables.clone(),
                            code,
                            first,
                            len,
                            start,
                        ))
                    })
                }
                op => self.map(scope, uniform[index], |scope, l| {
                    let arg = |k: usize| regs[op.operands()[k].index()].lane(l);
                    self.lane_op(scope, op, &arg, veil_needed[index], facts[index])
                }),
            };
            regs.push(reg);
        }

        // A group's first unit stores its per-group parts, which the group's other
        // units (in the same plane) read at the start: they all meet here first.
        // Independent thread scheduling does not keep a plane in step by itself, and
        // a program need not shuffle (group maxima do) before it stores.
        if self.scheduling == Scheduling::Independent
            && stores
                .iter()
                .any(|(p, _)| plan.part(*p).extent == Extent::Group)
        {
            cubecl::prelude::sync_plane::expand(scope);
        }
        // Each reduction's value over the group, through plane shuffles that every
        // unit joins; the group's first unit writes it.
        let (column_terms, terms): (Vec<_>, Vec<_>) = terms
            .into_iter()
            .partition(|&(k, _)| plan.reductions[k].scope == ReductionScope::Column);
        // Column reductions meet in shared memory: every unit of the cube reaches the
        // barriers, outside the stores' branch.
        let mut shared_terms = None;
        for &(k, v) in &column_terms {
            self.column_band_values(scope, k, &regs[v.index()], &mut shared_terms);
        }
        let group_values: Vec<(usize, NativeExpand<f64>)> = terms
            .iter()
            .map(|&(k, v)| {
                let r = plan.reductions[k].op;
                let value = self.group_value(scope, r, &regs[v.index()], place, valid.clone());
                (k, value)
            })
            .collect();
        // Every unit took part in the group maxima (plane shuffles) and the barrier;
        // only units inside the launch store.
        cubecl::frontend::branch::if_expand(scope, in_range, |scope| {
            for (p, v) in stores {
                self.store(scope, p, &regs[v.index()], place);
            }
            for (m, v) in matrix_args {
                let lanes: Vec<F> = (0..self.lanes())
                    .map(|l| regs[v.index()].lane(l).f())
                    .collect();
                store_elements(
                    scope,
                    self.var(Binding::Matrix(m)),
                    Storage::Bf16,
                    place,
                    &lanes,
                );
            }
            for (k, value) in group_values {
                let partials: NativeExpand<Array<f64>> = self.var(Binding::Partials(k)).into();
                ops::store_group_value::expand(
                    scope,
                    partials,
                    place.group.clone(),
                    place.sub.clone(),
                    value,
                );
            }
        });
    }

    /// Reduction `r`'s value over the group's real elements (`reduction::group_value`):
    /// the pairwise tree over this unit's lanes, then over the group's units through
    /// plane shuffles (butterflies pair units as the tree pairs lanes).
    fn group_value(
        &self,
        scope: &mut Scope,
        r: Reduction,
        value: &Reg,
        place: &Place,
        valid: NativeExpand<u32>,
    ) -> NativeExpand<f64> {
        let first_lane =
            ops::block_index::expand(scope, place.sub.clone(), place.shape.lanes_per_unit, 0);
        let terms: Vec<NativeExpand<f64>> = (0..self.lanes())
            .map(|lane| {
                let x = value.lane(lane).f();
                ops::reduction_term::expand(scope, x, valid.clone(), first_lane.clone(), lane, r)
            })
            .collect();
        let mut acc = pairwise(scope, terms, r);
        let mut mask = 1;
        while mask < self.shape.units_per_group() {
            acc = ops::plane_combine::expand(scope, acc, mask as u32, r);
            mask *= 2;
        }
        acc
    }

    /// A per-lane result, or a single one when every operand is group-uniform.
    fn map(
        &self,
        scope: &mut Scope,
        uniform: bool,
        mut lane: impl FnMut(&mut Scope, usize) -> Scalar,
    ) -> Reg {
        if uniform {
            Reg::Uniform(lane(scope, 0))
        } else {
            Reg::Lanes((0..self.lanes()).map(|l| lane(scope, l)).collect())
        }
    }

    /// One lane of an instruction that reads only its operands.
    fn lane_op(
        &self,
        scope: &mut Scope,
        op: InstOp,
        arg: &dyn Fn(usize) -> Scalar,
        veil: bool,
        facts: OperandFacts,
    ) -> Scalar {
        let veil_var = self.veil.clone();
        match op {
            InstOp::Unary(f, _) => Scalar::F(ops::unary::expand(
                scope,
                arg(0).f(),
                f,
                self.approximate(),
                facts,
            )),
            InstOp::Binary(f, ..) => {
                let out = ops::binary::expand(
                    scope,
                    arg(0).f(),
                    arg(1).f(),
                    f,
                    self.approximate(),
                    facts,
                );
                Scalar::F(if veil {
                    ops::veiled::expand(scope, out, veil_var)
                } else {
                    out
                })
            }
            InstOp::Ternary(f, ..) => Scalar::F(ops::ternary::expand(
                scope,
                arg(0).f(),
                arg(1).f(),
                arg(2).f(),
                veil_var,
                f,
            )),
            InstOp::Floor(_) => Scalar::F(ops::floor::expand(scope, arg(0).f())),
            InstOp::Fma(..) => Scalar::F(ops::fused_multiply_add::expand(
                scope,
                arg(0).f(),
                arg(1).f(),
                arg(2).f(),
            )),
            InstOp::Round(dtype, _) => Scalar::F(match dtype {
                flashopt_ir::FloatDtype::Bf16 => ops::round_to::expand::<bf16>(scope, arg(0).f()),
                flashopt_ir::FloatDtype::F16 => ops::round_to::expand::<f16>(scope, arg(0).f()),
                flashopt_ir::FloatDtype::F32 => arg(0).f(),
            }),
            InstOp::Bits(_) => Scalar::I(ops::bits::expand(scope, arg(0).f())),
            InstOp::Int(f, ..) => Scalar::I(ops::int_op::expand(scope, arg(0).i(), arg(1).i(), f)),
            InstOp::ToF32(_) => Scalar::F(ops::to_f32::expand::<i32>(scope, arg(0).i())),
            InstOp::Pow2(_) => Scalar::F(ops::pow2::expand(scope, arg(0).i())),
            other => unreachable!("{other:?} is not a lane operation"),
        }
    }

    fn load(&self, scope: &mut Scope, p: PartId, place: &Place) -> Reg {
        let part = self.plan.part(p);
        let var = self.var(Binding::Part(p.index()));
        if part.role == Role::Gradient && !place.gradient_regions.is_empty() {
            return Reg::Lanes(self.load_from_regions(scope, var, part.storage, place));
        }
        let in_gradient;
        let place = match part.role {
            Role::Gradient => {
                in_gradient = place.in_gradient();
                &in_gradient
            }
            _ => place,
        };
        match part.extent {
            Extent::Group => Reg::Uniform(load_group(scope, var, part.storage, place)),
            Extent::Element => Reg::Lanes(load_elements(scope, var, part.storage, place)),
            Extent::Row => Reg::Uniform(load_row(scope, var, part.storage, place)),
            Extent::Column => Reg::Lanes(self.load_columns(scope, var, part.storage, place)),
        }
    }

    /// The unit's gradient lanes from its group's region: one predicated load per
    /// region (the region is the same for the whole group), widened once.
    fn load_from_regions(
        &self,
        scope: &mut Scope,
        first: ManagedVariable,
        storage: Storage,
        place: &Place,
    ) -> Vec<Scalar> {
        with_storage_type!(storage, E => self
            .load_raw_from_regions::<E>(scope, first, place)
            .into_iter()
            .map(|x| widen::<E>(scope, x, storage.is_float()))
            .collect())
    }

    fn load_raw_from_regions<E: Numeric>(
        &self,
        scope: &mut Scope,
        first: ManagedVariable,
        place: &Place,
    ) -> Vec<NativeExpand<E>> {
        let regions: Vec<(NativeExpand<bool>, ManagedVariable, Place)> = place
            .gradient_regions
            .iter()
            .enumerate()
            .map(|(k, (inside, group))| {
                let var = match k {
                    0 => first.clone(),
                    k => self.var(Binding::GradientRegion(k)),
                };
                let region = Place {
                    group: group.clone(),
                    ..place.clone()
                };
                (inside.clone(), var, region)
            })
            .collect();
        match width_of::<E>(place) {
            16 => load_lanes_from_regions::<E, Const<16>>(scope, &regions, place),
            8 => load_lanes_from_regions::<E, Const<8>>(scope, &regions, place),
            _ => load_lanes_from_regions::<E, Const<4>>(scope, &regions, place),
        }
    }

    fn store(&self, scope: &mut Scope, p: PartId, value: &Reg, place: &Place) {
        let part = self.plan.part(p);
        let var = self.var(Binding::Part(p.index()));
        match part.extent {
            Extent::Group => store_group(scope, var, part.storage, place, value.lane(0).f()),
            Extent::Element => {
                let lanes: Vec<F> = (0..self.lanes()).map(|l| value.lane(l).f()).collect();
                store_elements(scope, var, part.storage, place, &lanes)
            }
            Extent::Row => {
                let write = self.var(Binding::RowWrite(p.index()));
                store_row(scope, write, part.storage, place, value.lane(0).f())
            }
            Extent::Column => {
                let write = self.var(Binding::ColumnWrite(p.index()));
                self.store_columns(scope, write, part.storage, place, value)
            }
        }
    }

    /// The largest value over the group's real elements: this unit's lanes, then the
    /// other units of the group through plane shuffles.
    fn group_max(
        &self,
        scope: &mut Scope,
        value: &Reg,
        place: &Place,
        valid: NativeExpand<u32>,
    ) -> F {
        let first_lane =
            ops::block_index::expand(scope, place.sub.clone(), place.shape.lanes_per_unit, 0);
        let mut max = constant(scope, f32::NEG_INFINITY, &self.veil);
        for lane in 0..self.lanes() {
            let x = value.lane(lane).f();
            max = ops::max_step::expand(scope, max, x, valid.clone(), first_lane.clone(), lane);
        }
        let mut mask = 1;
        while mask < self.shape.units_per_group() {
            max = ops::plane_max::expand(scope, max, mask as u32);
            mask *= 2;
        }
        max
    }
}

/// The pairwise tree over `values` (a power of two of them), adjacent pairs first, as
/// `flashopt_ir::reduction::pairwise` combines them.
fn pairwise(scope: &mut Scope, values: Vec<NativeExpand<f64>>, r: Reduction) -> NativeExpand<f64> {
    let mut level = values;
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| ops::combine::expand(scope, pair[0].clone(), pair[1].clone(), r))
            .collect();
    }
    level.pop().expect("a tree over at least one value")
}

/// An f32 constant. Infinities and NaN are built at run time from their bits (see
/// `ops::non_finite`): CUDA and HIP source has no literal for them.
fn constant(scope: &mut Scope, c: f32, veil: &F) -> F {
    if c.is_finite() {
        F::from_lit(scope, c)
    } else {
        ops::non_finite::expand(scope, veil.clone(), c.to_bits())
    }
}

/// Which instructions are products that NVRTC could contract into a later addition
/// (see `ops::veiled`): a `mul` or `powi` with any user that is not another product, a
/// division, a root, a comparison, a min/max, a floor, an explicit FMA, a conversion,
/// a group maximum, a store or a matrix argument. Products with only such users need no barrier.
fn products_to_veil(program: &Program) -> Vec<bool> {
    let mut contractible_use = vec![false; program.len()];
    for inst in &program.insts {
        let harmless = match inst.op {
            InstOp::Binary(f, ..) => matches!(
                f,
                Func2::Mul
                    | Func2::Div
                    | Func2::Lt
                    | Func2::Le
                    | Func2::Gt
                    | Func2::Ge
                    | Func2::Eq
                    | Func2::Ne
                    | Func2::Min
                    | Func2::Max
            ),
            InstOp::Unary(f, _) => matches!(f, Func1::Sqrt | Func1::Rsqrt | Func1::Abs),
            InstOp::Floor(_)
            | InstOp::Fma(..)
            | InstOp::Round(..)
            | InstOp::Bits(_)
            | InstOp::GroupMax(_)
            | InstOp::Reduce(..)
            | InstOp::MatrixArg(..)
            | InstOp::Store(..)
            | InstOp::Output(..) => true,
            _ => false,
        };
        if !harmless {
            for operand in inst.op.operands() {
                contractible_use[operand.index()] = true;
            }
        }
    }
    program
        .insts
        .iter()
        .enumerate()
        .map(|(i, inst)| {
            matches!(inst.op, InstOp::Binary(Func2::Mul | Func2::Powi, ..)) && contractible_use[i]
        })
        .collect()
}
