//! The back end proper: a [`Plan`] becomes a cubecl [`KernelDefinition`].
//!
//! One unit steps one 32-element group: it loads the group with 16-byte vectors where
//! the dtype allows, decodes every input, runs the plan's instructions lane by lane in
//! f32, and encodes and stores the results (the group maximum of each quantized state
//! is taken over the unit's own lanes, so no cross-unit communication is needed).
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
use flashopt_ir::graph::Func2;
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

/// 16-byte vectors: 8 bf16, 16 int8, 4 f32 lanes.
fn vectored(role: Role, storage: StorageType, writable: bool) -> Buffer {
    Buffer {
        role,
        storage,
        vector: 16 / storage.size(),
        writable,
    }
}

/// The buffers of a plan's kernel, in binding order.
pub fn buffers(plan: &Plan) -> Vec<Buffer> {
    let cfg = plan.config;
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
    target: TargetProperties,
    device: &DeviceProperties,
    settings: KernelSettings,
) -> KernelDefinition {
    let mut builder = KernelBuilder::default();
    builder.runtime_properties(target);
    builder.device_properties(device);
    // `usize` indices resolve to the address type, as in cubecl's own kernels.
    settings.address_type.register(&mut builder.scope);
    let layout = buffers(plan);
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
        layout: &layout,
        vars: &vars,
        veil: veil.into(),
    };
    let scope = &mut builder.scope;
    let group = ops::unit_group::expand(scope, first.into());
    let in_range = ops::unit_in_range::expand(scope, count.into());
    cubecl::frontend::branch::if_expand(scope, in_range, |scope| kernel.step_group(scope, group));
    builder.build(settings)
}

struct KernelBody<'a> {
    plan: &'a Plan,
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

    fn step_group(&self, scope: &mut Scope, group: NativeExpand<usize>) {
        let plan = self.plan;
        let scalar_count = plan.host.scalars.len();
        let info =
            ops::load_scalar::expand::<u32>(scope, self.var(Role::GroupInfo).into(), group.clone());
        let valid = ops::group_len::expand(scope, info.clone());
        let base = ops::scalar_base::expand(scope, info, scalar_count);
        let scalars_array: NativeExpand<Array<f32>> = self.var(Role::Scalars).into();
        let scalars: Vec<Lane> = (0..scalar_count)
            .map(|k| {
                let at = ops::block_index::expand(scope, base.clone(), 1, k);
                ops::load_scalar::expand::<f32>(scope, scalars_array.clone(), at)
            })
            .collect();

        let mut regs: Vec<Vec<Lane>> = Vec::with_capacity(plan.body.len());
        for inst in &plan.body {
            let lanes = match inst.op {
                InstOp::Load(Load::Param) => self.load_param(scope, group.clone()),
                InstOp::Load(Load::Grad) => {
                    load_float(scope, self.var(Role::Grad), plan.config.grad, group.clone())
                }
                InstOp::Load(Load::State(s)) => self.load_state(scope, s, group.clone()),
                InstOp::Scalar(k) => vec![scalars[k].clone(); GROUP_SIZE],
                InstOp::Const(c) => vec![Lane::from_lit(scope, c); GROUP_SIZE],
                InstOp::Unary(f, a) => (0..GROUP_SIZE)
                    .map(|l| ops::unary::expand(scope, regs[a.index()][l].clone(), f))
                    .collect(),
                InstOp::Binary(f, a, b) => (0..GROUP_SIZE)
                    .map(|l| {
                        let (x, y) = (regs[a.index()][l].clone(), regs[b.index()][l].clone());
                        let out = ops::binary::expand(scope, x, y, f);
                        // Products may feed an addition: keep NVRTC from fusing them.
                        match f {
                            Func2::Mul | Func2::Powi => {
                                ops::veiled::expand(scope, out, self.veil.clone())
                            }
                            _ => out,
                        }
                    })
                    .collect(),
                InstOp::Ternary(f, a, b, c) => (0..GROUP_SIZE)
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
            regs.push(lanes);
        }

        for store in &plan.stores {
            match *store {
                Store::Param(v) => self.store_param(scope, group.clone(), &regs[v.index()]),
                Store::State(s, v) => {
                    self.store_state(scope, s, group.clone(), valid.clone(), &regs[v.index()])
                }
            }
        }
    }

    fn load_param(&self, scope: &mut Scope, group: NativeExpand<usize>) -> Vec<Lane> {
        let cfg = self.plan.config;
        let param = self.var(Role::Param);
        match (cfg.param, cfg.master) {
            (dtype, MasterMode::None) | (dtype @ FloatDtype::F32, _) => {
                load_float(scope, param, dtype, group)
            }
            (dtype, mode) => {
                let correction = self.var(Role::Correction);
                let codes: Vec<Lane> = match mode {
                    MasterMode::Int8 => {
                        load_lanes::<i8, Const<16>>(scope, correction, group.clone())
                            .into_iter()
                            .map(|c| ops::to_f32::expand::<i8>(scope, c))
                            .collect()
                    }
                    _ => load_lanes::<i16, Const<8>>(scope, correction, group.clone())
                        .into_iter()
                        .map(|c| ops::to_f32::expand::<i16>(scope, c))
                        .collect(),
                };
                let max = mode.code_max().expect("correction");
                let (mantissa, bias) = (dtype.mantissa_bits(), dtype.exponent_bias());
                match dtype {
                    FloatDtype::Bf16 => decode_master::<bf16>(
                        scope,
                        param,
                        group,
                        codes,
                        (mantissa, bias, max),
                        self.veil.clone(),
                    ),
                    _ => decode_master::<f16>(
                        scope,
                        param,
                        group,
                        codes,
                        (mantissa, bias, max),
                        self.veil.clone(),
                    ),
                }
            }
        }
    }

    fn store_param(&self, scope: &mut Scope, group: NativeExpand<usize>, values: &[Lane]) {
        let cfg = self.plan.config;
        let param = self.var(Role::Param);
        match (cfg.param, cfg.master) {
            (FloatDtype::F32, _) => store_float(scope, param, FloatDtype::F32, group, values),
            (dtype, MasterMode::None) => store_float(scope, param, dtype, group, values),
            (dtype, mode) => {
                let max = mode.code_max().expect("correction");
                let (mantissa, bias) = (dtype.mantissa_bits(), dtype.exponent_bias());
                let codes = match dtype {
                    FloatDtype::Bf16 => encode_master::<bf16>(
                        scope,
                        param,
                        group.clone(),
                        values,
                        mantissa,
                        bias,
                        max,
                    ),
                    _ => encode_master::<f16>(
                        scope,
                        param,
                        group.clone(),
                        values,
                        mantissa,
                        bias,
                        max,
                    ),
                };
                let correction = self.var(Role::Correction);
                match mode {
                    MasterMode::Int8 => {
                        store_from_f32::<i8, Const<16>>(scope, correction, group, &codes)
                    }
                    _ => store_from_f32::<i16, Const<8>>(scope, correction, group, &codes),
                }
            }
        }
    }

    fn scale(&self, scope: &mut Scope, s: usize, group: NativeExpand<usize>) -> Lane {
        let scales: NativeExpand<Array<f16>> = self.var(Role::StateScales(s)).into();
        let scale = ops::load_scalar::expand::<f16>(scope, scales, group);
        ops::to_f32::expand::<f16>(scope, scale)
    }

    fn load_state(&self, scope: &mut Scope, s: usize, group: NativeExpand<usize>) -> Vec<Lane> {
        let codec = self.plan.states[s].codec;
        let codes_var = self.var(Role::StateCodes(s));
        match codec {
            Codec::Int8Softsign | Codec::Int8Linear => {
                let scale = self.scale(scope, s, group.clone());
                let softsign = codec == Codec::Int8Softsign;
                load_lanes::<i8, Const<16>>(scope, codes_var, group)
                    .into_iter()
                    .map(|c| {
                        let c = ops::to_f32::expand::<i8>(scope, c);
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
                let scale = self.scale(scope, s, group.clone());
                load_lanes::<u8, Const<16>>(scope, codes_var, group)
                    .into_iter()
                    .map(|c| {
                        let c = ops::to_f32::expand::<u8>(scope, c);
                        ops::decode_sqrt::expand(scope, c, scale.clone(), self.veil.clone())
                    })
                    .collect()
            }
            Codec::Bf16 => load_float(scope, codes_var, FloatDtype::Bf16, group),
            Codec::F32 => load_float(scope, codes_var, FloatDtype::F32, group),
        }
    }

    fn store_state(
        &self,
        scope: &mut Scope,
        s: usize,
        group: NativeExpand<usize>,
        valid: NativeExpand<u32>,
        values: &[Lane],
    ) {
        let codec = self.plan.states[s].codec;
        let codes_var = self.var(Role::StateCodes(s));
        match codec {
            Codec::Bf16 => return store_float(scope, codes_var, FloatDtype::Bf16, group, values),
            Codec::F32 => return store_float(scope, codes_var, FloatDtype::F32, group, values),
            _ => {}
        }
        let magnitudes: Vec<Lane> = if codec == Codec::Uint8Sqrt {
            values
                .iter()
                .map(|v| ops::sqrt_lane::expand(scope, v.clone()))
                .collect()
        } else {
            values.to_vec()
        };
        let mut absmax = Lane::from_lit(scope, 0.0f32);
        for (lane, m) in magnitudes.iter().enumerate() {
            absmax = ops::absmax_step::expand(scope, absmax, m.clone(), valid.clone(), lane as u32);
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
        match codec {
            Codec::Uint8Sqrt => {
                store_from_f32::<u8, Const<16>>(scope, codes_var, group.clone(), &codes)
            }
            _ => store_from_f32::<i8, Const<16>>(scope, codes_var, group.clone(), &codes),
        }
        let scales: NativeExpand<Array<f16>> = self.var(Role::StateScales(s)).into();
        let stored = ops::from_f32::expand::<f16>(scope, scale);
        ops::store_scalar::expand::<f16>(scope, scales, group, stored);
    }
}

/// The lanes of a group as raw elements, loaded as 16-byte vectors.
fn load_lanes<E: Numeric, N: Size>(
    scope: &mut Scope,
    var: ManagedVariable,
    group: NativeExpand<usize>,
) -> Vec<NativeExpand<E>> {
    let array: NativeExpand<Array<Vector<E, N>>> = var.into();
    let width = N::try_value_const().expect("constant vector width");
    let per_group = GROUP_SIZE / width;
    let mut lanes = Vec::with_capacity(GROUP_SIZE);
    for c in 0..per_group {
        let at = ops::block_index::expand(scope, group.clone(), per_group, c);
        let v = ops::load_vector::expand::<E, N>(scope, array.clone(), at);
        for k in 0..width {
            lanes.push(ops::lane::expand::<E, N>(scope, v.clone(), k));
        }
    }
    lanes
}

fn load_float(
    scope: &mut Scope,
    var: ManagedVariable,
    dtype: FloatDtype,
    group: NativeExpand<usize>,
) -> Vec<Lane> {
    fn widen<E: Numeric, N: Size>(
        scope: &mut Scope,
        var: ManagedVariable,
        group: NativeExpand<usize>,
    ) -> Vec<Lane> {
        load_lanes::<E, N>(scope, var, group)
            .into_iter()
            .map(|x| ops::to_f32::expand::<E>(scope, x))
            .collect()
    }
    match dtype {
        FloatDtype::Bf16 => widen::<bf16, Const<8>>(scope, var, group),
        FloatDtype::F16 => widen::<f16, Const<8>>(scope, var, group),
        FloatDtype::F32 => widen::<f32, Const<4>>(scope, var, group),
    }
}

/// Store raw element lanes as 16-byte vectors.
fn store_lanes<E: Numeric, N: Size>(
    scope: &mut Scope,
    var: ManagedVariable,
    group: NativeExpand<usize>,
    lanes: Vec<NativeExpand<E>>,
) {
    let array: NativeExpand<Array<Vector<E, N>>> = var.into();
    let width = N::try_value_const().expect("constant vector width");
    let per_group = GROUP_SIZE / width;
    for c in 0..per_group {
        let v = ops::empty_vector::expand::<E, N>(scope);
        for k in 0..width {
            ops::set_lane::expand::<E, N>(scope, v.clone(), k, lanes[c * width + k].clone());
        }
        let at = ops::block_index::expand(scope, group.clone(), per_group, c);
        ops::store_vector::expand::<E, N>(scope, array.clone(), at, v);
    }
}

fn store_from_f32<E: Numeric, N: Size>(
    scope: &mut Scope,
    var: ManagedVariable,
    group: NativeExpand<usize>,
    values: &[Lane],
) {
    let lanes = values
        .iter()
        .map(|x| ops::from_f32::expand::<E>(scope, x.clone()))
        .collect();
    store_lanes::<E, N>(scope, var, group, lanes)
}

fn store_float(
    scope: &mut Scope,
    var: ManagedVariable,
    dtype: FloatDtype,
    group: NativeExpand<usize>,
    values: &[Lane],
) {
    match dtype {
        FloatDtype::Bf16 => store_from_f32::<bf16, Const<8>>(scope, var, group, values),
        FloatDtype::F16 => store_from_f32::<f16, Const<8>>(scope, var, group, values),
        FloatDtype::F32 => store_from_f32::<f32, Const<4>>(scope, var, group, values),
    }
}

fn decode_master<N: Float>(
    scope: &mut Scope,
    param: ManagedVariable,
    group: NativeExpand<usize>,
    codes: Vec<Lane>,
    (mantissa, bias, max): (u32, i32, f32),
    veil: Lane,
) -> Vec<Lane> {
    load_lanes::<N, Const<8>>(scope, param, group)
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
    group: NativeExpand<usize>,
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
    store_lanes::<N, Const<8>>(scope, param, group, narrow);
    codes
}
