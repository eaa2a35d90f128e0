//! The back end proper: a [`Plan`] becomes a cubecl [`KernelDefinition`].
//!
//! A 32-element group is stepped by `32 / lanes_per_unit` neighbouring units of one
//! plane ([`KernelShape`]). Each unit loads its lanes with vectors of up to 16 bytes,
//! decodes every input, runs the plan's instructions lane by lane in f32, and encodes
//! and stores the results. The group maximum of a quantized state is each unit's own
//! maximum combined across the group's units with plane shuffles, so every unit of a
//! plane reaches the shuffles: units past the end recompute the last group and store
//! nothing.
//!
//! Buffers are flat and padded to whole groups; a per-group info word gives the
//! group's element count (a tensor's last group may be short: padding lanes never
//! enter a group maximum) and its parameter group, which selects the host scalars.
//! So one launch steps any number of tensors.

use cubecl::ir::{
    DeviceProperties, ElemType, FloatKind, IntKind, ManagedVariable, StorageType, TargetProperties,
    UIntKind,
};
use cubecl::prelude::*;
use flashopt_ir::graph::{Func1, Func2};
use flashopt_ir::plan::{InstOp, Load, Plan, Store};
use flashopt_ir::{Codec, FloatDtype, GROUP_SIZE, MasterMode};
use half::{bf16, f16};

use crate::ops;

type Lane = NativeExpand<f32>;

/// What a kernel buffer holds, in binding order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Param,
    Correction,
    Grad,
    StateCodes(usize),
    StateScales(usize),
    /// Host scalars, `scalars` per parameter group.
    Scalars,
    /// One u32 per group: element count in bits 0..6, parameter group from bit 8.
    GroupInfo,
}

/// One kernel buffer: its role, element type and vector width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Buffer {
    pub role: Role,
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

fn float_storage(dtype: FloatDtype) -> StorageType {
    StorageType::Scalar(ElemType::Float(match dtype {
        FloatDtype::Bf16 => FloatKind::BF16,
        FloatDtype::F16 => FloatKind::F16,
        FloatDtype::F32 => FloatKind::F32,
    }))
}

const I8: StorageType = StorageType::Scalar(ElemType::Int(IntKind::I8));
const I16: StorageType = StorageType::Scalar(ElemType::Int(IntKind::I16));
const U8: StorageType = StorageType::Scalar(ElemType::UInt(UIntKind::U8));
const U32: StorageType = StorageType::Scalar(ElemType::UInt(UIntKind::U32));
const F16: StorageType = StorageType::Scalar(ElemType::Float(FloatKind::F16));
const F32: StorageType = StorageType::Scalar(ElemType::Float(FloatKind::F32));

/// How the kernel spreads a group over units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelShape {
    /// Elements each unit steps: 4, 8, 16 or 32 (then `32 / lanes` units share a group).
    pub lanes_per_unit: usize,
}

impl Default for KernelShape {
    /// 4 lanes: eight units share a group. Fewer registers per unit leave room for more
    /// resident planes, which the step needs to overlap its arithmetic with memory;
    /// on an H100 it was the fastest shape for AdamW, Lion and SGD at 268M parameters
    /// (docs/BENCHMARKS.md, "Kernel shape").
    fn default() -> Self {
        KernelShape { lanes_per_unit: 4 }
    }
}

impl KernelShape {
    pub fn new(lanes_per_unit: usize) -> Option<KernelShape> {
        matches!(lanes_per_unit, 4 | 8 | 16 | 32).then_some(KernelShape { lanes_per_unit })
    }

    pub fn units_per_group(self) -> usize {
        GROUP_SIZE / self.lanes_per_unit
    }

    /// Vector width for an element type: at most 16 bytes, at most one unit's lanes.
    fn vector_width(self, element_bytes: usize) -> usize {
        (16 / element_bytes).min(self.lanes_per_unit)
    }
}

fn vectored(shape: KernelShape, role: Role, storage: StorageType, writable: bool) -> Buffer {
    Buffer {
        role,
        storage,
        vector: shape.vector_width(storage.size()),
        writable,
    }
}

/// The buffers of a plan's kernel, in binding order.
pub fn buffers(plan: &Plan, shape: KernelShape) -> Vec<Buffer> {
    let cfg = plan.config;
    let vectored = |role, storage, writable| vectored(shape, role, storage, writable);
    let mut out = vec![vectored(Role::Param, float_storage(cfg.param), true)];
    match cfg.master {
        MasterMode::None => {}
        MasterMode::Int8 => out.push(vectored(Role::Correction, I8, true)),
        MasterMode::Int16 => out.push(vectored(Role::Correction, I16, true)),
    }
    out.push(vectored(Role::Grad, float_storage(cfg.grad), false));
    for (i, s) in plan.states.iter().enumerate() {
        let codes = match s.codec {
            Codec::Int8Softsign | Codec::Int8Linear => I8,
            Codec::Uint8Sqrt => U8,
            Codec::Bf16 => float_storage(FloatDtype::Bf16),
            Codec::F32 => F32,
        };
        out.push(vectored(Role::StateCodes(i), codes, true));
        if s.codec.is_quantized() {
            out.push(Buffer {
                role: Role::StateScales(i),
                storage: F16,
                vector: 1,
                writable: true,
            });
        }
    }
    out.push(Buffer {
        role: Role::Scalars,
        storage: F32,
        vector: 1,
        writable: false,
    });
    out.push(Buffer {
        role: Role::GroupInfo,
        storage: U32,
        vector: 1,
        writable: false,
    });
    out
}

/// Build the kernel definition of `plan` for a target and device.
pub fn define(
    plan: &Plan,
    shape: KernelShape,
    target: TargetProperties,
    device: &DeviceProperties,
    settings: KernelSettings,
) -> KernelDefinition {
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
    let kernel = KernelBody {
        plan,
        shape,
        layout: &layout,
        vars: &vars,
        veil: veil.into(),
    };
    let scope = &mut builder.scope;
    let units = shape.units_per_group();
    let group = ops::unit_group::expand(scope, first.into(), count.clone().into(), units);
    let sub = ops::unit_part::expand(scope, units);
    let in_range = ops::unit_in_range::expand(scope, count.into(), units);
    let place = Place { group, sub, shape };
    kernel.step_group(scope, &place, in_range);
    builder.build(settings)
}

/// Where a unit's lanes lie: its group and which part of the group it holds.
#[derive(Clone)]
struct Place {
    group: NativeExpand<usize>,
    sub: NativeExpand<usize>,
    shape: KernelShape,
}

impl Place {
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

struct KernelBody<'a> {
    plan: &'a Plan,
    shape: KernelShape,
    layout: &'a [Buffer],
    vars: &'a [ManagedVariable],
    veil: Lane,
}

impl KernelBody<'_> {
    fn var(&self, role: Role) -> ManagedVariable {
        let i = self
            .layout
            .iter()
            .position(|b| b.role == role)
            .expect("the plan has this buffer");
        self.vars[i].clone()
    }

    fn lanes(&self) -> usize {
        self.shape.lanes_per_unit
    }

    fn step_group(&self, scope: &mut Scope, place: &Place, in_range: NativeExpand<bool>) {
        let plan = self.plan;
        let lanes = self.lanes();
        let scalar_count = plan.scalar_count();
        let info = ops::load_scalar::expand::<u32>(
            scope,
            self.var(Role::GroupInfo).into(),
            place.group.clone(),
        );
        let valid = ops::group_len::expand(scope, info.clone());
        let base = ops::scalar_base::expand(scope, info, scalar_count);
        let scalars_array: NativeExpand<Array<f32>> = self.var(Role::Scalars).into();
        let scalars: Vec<Lane> = (0..scalar_count)
            .map(|k| {
                let at = ops::block_index::expand(scope, base.clone(), 1, k);
                ops::load_scalar::expand::<f32>(scope, scalars_array.clone(), at)
            })
            .collect();

        let veil_needed = products_to_veil(plan);
        let mut regs: Vec<Vec<Lane>> = Vec::with_capacity(plan.body.len());
        for (index, inst) in plan.body.iter().enumerate() {
            let values = match inst.op {
                InstOp::Load(Load::Param) => self.load_param(scope, place),
                InstOp::Load(Load::Grad) => {
                    load_float(scope, self.var(Role::Grad), plan.config.grad, place)
                }
                InstOp::Load(Load::State(s)) => self.load_state(scope, s, place),
                InstOp::Scalar(k) => vec![scalars[k].clone(); lanes],
                InstOp::Const(c) => vec![Lane::from_lit(scope, c); lanes],
                InstOp::Unary(f, a) => (0..lanes)
                    .map(|l| ops::unary::expand(scope, regs[a.index()][l].clone(), f))
                    .collect(),
                InstOp::Binary(f, a, b) => (0..lanes)
                    .map(|l| {
                        let (x, y) = (regs[a.index()][l].clone(), regs[b.index()][l].clone());
                        let out = ops::binary::expand(scope, x, y, f);
                        if veil_needed[index] {
                            ops::veiled::expand(scope, out, self.veil.clone())
                        } else {
                            out
                        }
                    })
                    .collect(),
                InstOp::Ternary(f, a, b, c) => (0..lanes)
                    .map(|l| {
                        let (x, y, z) = (
                            regs[a.index()][l].clone(),
                            regs[b.index()][l].clone(),
                            regs[c.index()][l].clone(),
                        );
                        ops::ternary::expand(scope, x, y, z, self.veil.clone(), f)
                    })
                    .collect(),
            };
            regs.push(values);
        }

        // Every unit takes part in the group maxima (plane shuffles); only units inside
        // the launch store.
        let mut encoded: Vec<EncodedState> = Vec::new();
        for store in &plan.stores {
            if let Store::State(s, v) = *store {
                if self.plan.states[s].codec.is_quantized() {
                    encoded.push(self.encode_state(
                        scope,
                        s,
                        place,
                        valid.clone(),
                        &regs[v.index()],
                    ));
                }
            }
        }
        cubecl::frontend::branch::if_expand(scope, in_range, |scope| {
            let mut encoded = encoded.into_iter();
            for store in &plan.stores {
                match *store {
                    Store::Param(v) => self.store_param(scope, place, &regs[v.index()]),
                    Store::State(s, v) => match self.plan.states[s].codec {
                        codec @ (Codec::Bf16 | Codec::F32) => {
                            let dtype = if codec == Codec::Bf16 {
                                FloatDtype::Bf16
                            } else {
                                FloatDtype::F32
                            };
                            let codes = self.var(Role::StateCodes(s));
                            store_float(scope, codes, dtype, place, &regs[v.index()])
                        }
                        _ => {
                            self.store_encoded(scope, place, encoded.next().expect("encoded above"))
                        }
                    },
                }
            }
        });
    }

    fn load_param(&self, scope: &mut Scope, place: &Place) -> Vec<Lane> {
        let cfg = self.plan.config;
        let param = self.var(Role::Param);
        match (cfg.param, cfg.master) {
            (dtype, MasterMode::None) | (dtype @ FloatDtype::F32, _) => {
                load_float(scope, param, dtype, place)
            }
            (dtype, mode) => {
                let correction = self.var(Role::Correction);
                let codes: Vec<Lane> = match mode {
                    MasterMode::Int8 => load_widened::<i8>(scope, correction, place),
                    _ => load_widened::<i16>(scope, correction, place),
                };
                let max = mode.code_max().expect("correction");
                let (mantissa, bias) = (dtype.mantissa_bits(), dtype.exponent_bias());
                let narrow = (mantissa, bias, max);
                match dtype {
                    FloatDtype::Bf16 => {
                        decode_master::<bf16>(scope, param, place, codes, narrow, &self.veil)
                    }
                    _ => decode_master::<f16>(scope, param, place, codes, narrow, &self.veil),
                }
            }
        }
    }

    fn store_param(&self, scope: &mut Scope, place: &Place, values: &[Lane]) {
        let cfg = self.plan.config;
        let param = self.var(Role::Param);
        match (cfg.param, cfg.master) {
            (FloatDtype::F32, _) => store_float(scope, param, FloatDtype::F32, place, values),
            (dtype, MasterMode::None) => store_float(scope, param, dtype, place, values),
            (dtype, mode) => {
                let max = mode.code_max().expect("correction");
                let (mantissa, bias) = (dtype.mantissa_bits(), dtype.exponent_bias());
                let codes = match dtype {
                    FloatDtype::Bf16 => {
                        encode_master::<bf16>(scope, param, place, values, mantissa, bias, max)
                    }
                    _ => encode_master::<f16>(scope, param, place, values, mantissa, bias, max),
                };
                let correction = self.var(Role::Correction);
                match mode {
                    MasterMode::Int8 => store_narrowed::<i8>(scope, correction, place, &codes),
                    _ => store_narrowed::<i16>(scope, correction, place, &codes),
                }
            }
        }
    }

    fn scale(&self, scope: &mut Scope, s: usize, place: &Place) -> Lane {
        let scales: NativeExpand<Array<f16>> = self.var(Role::StateScales(s)).into();
        let scale = ops::load_scalar::expand::<f16>(scope, scales, place.group.clone());
        ops::to_f32::expand::<f16>(scope, scale)
    }

    fn load_state(&self, scope: &mut Scope, s: usize, place: &Place) -> Vec<Lane> {
        let codec = self.plan.states[s].codec;
        let codes_var = self.var(Role::StateCodes(s));
        match codec {
            Codec::Int8Softsign | Codec::Int8Linear => {
                let scale = self.scale(scope, s, place);
                let softsign = codec == Codec::Int8Softsign;
                load_widened::<i8>(scope, codes_var, place)
                    .into_iter()
                    .map(|c| {
                        ops::decode_signed::expand(
                            scope,
                            c,
                            scale.clone(),
                            self.veil.clone(),
                            softsign,
                        )
                    })
                    .collect()
            }
            Codec::Uint8Sqrt => {
                let scale = self.scale(scope, s, place);
                load_widened::<u8>(scope, codes_var, place)
                    .into_iter()
                    .map(|c| ops::decode_sqrt::expand(scope, c, scale.clone(), self.veil.clone()))
                    .collect()
            }
            Codec::Bf16 => load_float(scope, codes_var, FloatDtype::Bf16, place),
            Codec::F32 => load_float(scope, codes_var, FloatDtype::F32, place),
        }
    }

    /// Codes and scale of a quantized state; the scale is the whole group's.
    fn encode_state(
        &self,
        scope: &mut Scope,
        s: usize,
        place: &Place,
        valid: NativeExpand<u32>,
        values: &[Lane],
    ) -> EncodedState {
        let codec = self.plan.states[s].codec;
        let magnitudes: Vec<Lane> = if codec == Codec::Uint8Sqrt {
            values
                .iter()
                .map(|v| ops::sqrt_lane::expand(scope, v.clone()))
                .collect()
        } else {
            values.to_vec()
        };
        let first_lane =
            ops::block_index::expand(scope, place.sub.clone(), place.shape.lanes_per_unit, 0);
        let mut absmax = Lane::from_lit(scope, 0.0f32);
        for (lane, m) in magnitudes.iter().enumerate() {
            absmax = ops::absmax_step::expand(
                scope,
                absmax,
                m.clone(),
                valid.clone(),
                first_lane.clone(),
                lane,
            );
        }
        let mut mask = 1;
        while mask < self.shape.units_per_group() {
            absmax = ops::plane_max::expand(scope, absmax, mask as u32);
            mask *= 2;
        }
        let scale = ops::finish_scale::expand(scope, absmax);
        let codes: Vec<Lane> = magnitudes
            .iter()
            .map(|m| match codec {
                Codec::Uint8Sqrt => {
                    ops::encode_sqrt::expand(scope, m.clone(), scale.clone(), self.veil.clone())
                }
                _ => ops::encode_signed::expand(
                    scope,
                    m.clone(),
                    scale.clone(),
                    self.veil.clone(),
                    codec == Codec::Int8Softsign,
                ),
            })
            .collect();
        EncodedState {
            state: s,
            unsigned: codec == Codec::Uint8Sqrt,
            codes,
            scale,
        }
    }

    fn store_encoded(&self, scope: &mut Scope, place: &Place, encoded: EncodedState) {
        let codes_var = self.var(Role::StateCodes(encoded.state));
        if encoded.unsigned {
            store_narrowed::<u8>(scope, codes_var, place, &encoded.codes);
        } else {
            store_narrowed::<i8>(scope, codes_var, place, &encoded.codes);
        }
        let scales: NativeExpand<Array<f16>> = self.var(Role::StateScales(encoded.state)).into();
        let stored = ops::from_f32::expand::<f16>(scope, encoded.scale);
        ops::store_group_scalar::expand::<f16>(
            scope,
            scales,
            place.group.clone(),
            place.sub.clone(),
            stored,
        );
    }
}

/// Which instructions are products that NVRTC could contract into a later addition
/// (see `ops::veiled`): a `mul` or `powi` with any user that is not another product, a
/// division, a root, a comparison, a min/max or a quantized state's encoder (which
/// divides first). Products with only such users need no barrier.
fn products_to_veil(plan: &Plan) -> Vec<bool> {
    let mut contractible_use = vec![false; plan.body.len()];
    for inst in &plan.body {
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
            InstOp::Unary(f, _) => matches!(f, Func1::Sqrt | Func1::Rsqrt),
            _ => false,
        };
        if !harmless {
            for operand in inst.op.operands() {
                contractible_use[operand.index()] = true;
            }
        }
    }
    for store in &plan.stores {
        match *store {
            Store::Param(v) => contractible_use[v.index()] = true,
            Store::State(s, v) => {
                if !plan.states[s].codec.is_quantized() {
                    contractible_use[v.index()] = true;
                }
            }
        }
    }
    plan.body
        .iter()
        .enumerate()
        .map(|(i, inst)| {
            matches!(inst.op, InstOp::Binary(Func2::Mul | Func2::Powi, ..)) && contractible_use[i]
        })
        .collect()
}

struct EncodedState {
    state: usize,
    unsigned: bool,
    codes: Vec<Lane>,
    scale: Lane,
}

/// A unit's lanes as raw elements, loaded as vectors of `N`.
fn load_lanes<E: Numeric, N: Size>(
    scope: &mut Scope,
    var: ManagedVariable,
    place: &Place,
) -> Vec<NativeExpand<E>> {
    let array: NativeExpand<Array<Vector<E, N>>> = var.into();
    let width = N::try_value_const().expect("constant vector width");
    let mut lanes = Vec::with_capacity(place.shape.lanes_per_unit);
    for c in 0..place.shape.lanes_per_unit / width {
        let at = place.vector_index(scope, width, c);
        let v = ops::load_vector::expand::<E, N>(scope, array.clone(), at);
        for k in 0..width {
            lanes.push(ops::lane::expand::<E, N>(scope, v.clone(), k));
        }
    }
    lanes
}

/// Store raw element lanes as vectors of `N`.
fn store_lanes<E: Numeric, N: Size>(
    scope: &mut Scope,
    var: ManagedVariable,
    place: &Place,
    lanes: Vec<NativeExpand<E>>,
) {
    let array: NativeExpand<Array<Vector<E, N>>> = var.into();
    let width = N::try_value_const().expect("constant vector width");
    for c in 0..place.shape.lanes_per_unit / width {
        let v = ops::empty_vector::expand::<E, N>(scope);
        for k in 0..width {
            ops::set_lane::expand::<E, N>(scope, v.clone(), k, lanes[c * width + k].clone());
        }
        let at = place.vector_index(scope, width, c);
        ops::store_vector::expand::<E, N>(scope, array.clone(), at, v);
    }
}

/// The vector width [`buffers`] gives elements of `E`.
fn width_of<E: CubePrimitive>(place: &Place) -> usize {
    place.shape.vector_width(size_of::<E>())
}

fn load_raw<E: Numeric>(
    scope: &mut Scope,
    var: ManagedVariable,
    place: &Place,
) -> Vec<NativeExpand<E>> {
    match width_of::<E>(place) {
        16 => load_lanes::<E, Const<16>>(scope, var, place),
        8 => load_lanes::<E, Const<8>>(scope, var, place),
        _ => load_lanes::<E, Const<4>>(scope, var, place),
    }
}

fn store_raw<E: Numeric>(
    scope: &mut Scope,
    var: ManagedVariable,
    place: &Place,
    lanes: Vec<NativeExpand<E>>,
) {
    match width_of::<E>(place) {
        16 => store_lanes::<E, Const<16>>(scope, var, place, lanes),
        8 => store_lanes::<E, Const<8>>(scope, var, place, lanes),
        _ => store_lanes::<E, Const<4>>(scope, var, place, lanes),
    }
}

fn load_widened<E: Numeric>(scope: &mut Scope, var: ManagedVariable, place: &Place) -> Vec<Lane> {
    load_raw::<E>(scope, var, place)
        .into_iter()
        .map(|x| ops::to_f32::expand::<E>(scope, x))
        .collect()
}

fn store_narrowed<E: Numeric>(
    scope: &mut Scope,
    var: ManagedVariable,
    place: &Place,
    values: &[Lane],
) {
    let lanes = values
        .iter()
        .map(|x| ops::from_f32::expand::<E>(scope, x.clone()))
        .collect();
    store_raw::<E>(scope, var, place, lanes)
}

fn load_float(
    scope: &mut Scope,
    var: ManagedVariable,
    dtype: FloatDtype,
    place: &Place,
) -> Vec<Lane> {
    match dtype {
        FloatDtype::Bf16 => load_widened::<bf16>(scope, var, place),
        FloatDtype::F16 => load_widened::<f16>(scope, var, place),
        FloatDtype::F32 => load_widened::<f32>(scope, var, place),
    }
}

fn store_float(
    scope: &mut Scope,
    var: ManagedVariable,
    dtype: FloatDtype,
    place: &Place,
    values: &[Lane],
) {
    match dtype {
        FloatDtype::Bf16 => store_narrowed::<bf16>(scope, var, place, values),
        FloatDtype::F16 => store_narrowed::<f16>(scope, var, place, values),
        FloatDtype::F32 => store_narrowed::<f32>(scope, var, place, values),
    }
}

fn decode_master<N: Float>(
    scope: &mut Scope,
    param: ManagedVariable,
    place: &Place,
    codes: Vec<Lane>,
    (mantissa, bias, max): (u32, i32, f32),
    veil: &Lane,
) -> Vec<Lane> {
    load_raw::<N>(scope, param, place)
        .into_iter()
        .zip(codes)
        .map(|(n, c)| {
            ops::decode_master::expand::<N>(scope, n, c, mantissa, bias, max, veil.clone())
        })
        .collect()
}

/// Store the narrow parameters; returns the correction codes (integral f32 lanes).
fn encode_master<N: Float>(
    scope: &mut Scope,
    param: ManagedVariable,
    place: &Place,
    values: &[Lane],
    mantissa: u32,
    bias: i32,
    max: f32,
) -> Vec<Lane> {
    let narrow: Vec<NativeExpand<N>> = values
        .iter()
        .map(|x| ops::from_f32::expand::<N>(scope, x.clone()))
        .collect();
    let codes = values
        .iter()
        .zip(&narrow)
        .map(|(x, n)| {
            ops::correction_code::expand::<N>(scope, x.clone(), n.clone(), mantissa, bias, max)
        })
        .collect();
    store_raw::<N>(scope, param, place, narrow);
    codes
}
