//! A host tensor's state as little-endian bytes, one part at a time: what the GPU
//! buffers and the checkpoint files both hold (devices and safetensors are
//! little-endian).

use flashopt_ir::interp::{CorrectionData, HostTensor, ParamData, StateData};
use flashopt_ir::{Codec, FloatDtype, GROUP_SIZE, MasterMode, Plan};

/// One stored part of a tensor's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Param,
    Correction,
    /// The codes (or plain values) of state `k`.
    Codes(usize),
    /// The f16 group scales of quantized state `k`.
    Scales(usize),
}

/// Append the little-endian bytes of `values`: one copy on little-endian hosts.
pub fn extend_le<T: bytemuck::Pod>(out: &mut Vec<u8>, values: &[T]) {
    let bytes: &[u8] = bytemuck::cast_slice(values);
    if cfg!(target_endian = "little") {
        out.extend_from_slice(bytes);
    } else {
        for element in bytes.chunks_exact(size_of::<T>()) {
            out.extend(element.iter().rev());
        }
    }
}

/// Values from their little-endian bytes.
pub fn from_le<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
    if cfg!(target_endian = "little") {
        bytemuck::pod_collect_to_vec(bytes)
    } else {
        let swapped: Vec<u8> = bytes
            .chunks_exact(size_of::<T>())
            .flat_map(|e| e.iter().rev().copied())
            .collect();
        bytemuck::pod_collect_to_vec(&swapped)
    }
}

/// Parameters of `dtype` from their bytes.
pub fn param_data(dtype: FloatDtype, bytes: &[u8]) -> ParamData {
    match dtype {
        FloatDtype::Bf16 => ParamData::Bf16(from_le(bytes)),
        FloatDtype::F16 => ParamData::F16(from_le(bytes)),
        FloatDtype::F32 => ParamData::F32(from_le(bytes)),
    }
}

/// The little-endian bytes of `values`.
pub fn le_bytes<T: bytemuck::Pod>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(std::mem::size_of_val(values));
    extend_le(&mut out, values);
    out
}

/// The bytes of one part of `t` (empty for a part it does not have).
pub fn part_bytes(t: &HostTensor, part: Part) -> Vec<u8> {
    match part {
        Part::Param => match &t.param {
            ParamData::Bf16(v) => le_bytes(v),
            ParamData::F16(v) => le_bytes(v),
            ParamData::F32(v) => le_bytes(v),
        },
        Part::Correction => match &t.correction {
            CorrectionData::Int8(v) => le_bytes(v),
            CorrectionData::Int16(v) => le_bytes(v),
            CorrectionData::None => Vec::new(),
        },
        Part::Codes(k) => match &t.states[k] {
            StateData::Int8 { codes, .. } => le_bytes(codes),
            StateData::Uint8 { codes, .. } => codes.clone(),
            StateData::Bf16(v) => le_bytes(v),
            StateData::F32(v) => le_bytes(v),
        },
        Part::Scales(k) => match &t.states[k] {
            StateData::Int8 { scales, .. } | StateData::Uint8 { scales, .. } => le_bytes(scales),
            StateData::Bf16(_) | StateData::F32(_) => Vec::new(),
        },
    }
}

/// The parts a tensor of `plan` stores, in order, with their element size and count
/// for a tensor of `len` elements.
pub fn parts(plan: &Plan, len: usize) -> Vec<(Part, usize, usize)> {
    let cfg = plan.config;
    let mut out = vec![(Part::Param, cfg.param.size_bytes(), len)];
    let correction = cfg.stored_correction();
    if correction != MasterMode::None {
        out.push((Part::Correction, correction.correction_bytes(), len));
    }
    for (k, s) in plan.states.iter().enumerate() {
        let size = match s.codec {
            Codec::Int8Softsign | Codec::Int8Linear | Codec::Uint8Sqrt => 1,
            Codec::Bf16 => 2,
            Codec::F32 => 4,
        };
        out.push((Part::Codes(k), size, len));
        if s.codec.is_quantized() {
            out.push((Part::Scales(k), 2, len.div_ceil(GROUP_SIZE)));
        }
    }
    out
}

/// A tensor of `plan` assembled from the bytes `read` gives for each of its
/// [`parts`] (`read(part, elements)` must give exactly that many elements' bytes).
pub fn assemble<'a, E>(
    plan: &Plan,
    len: usize,
    mut read: impl FnMut(Part, usize) -> Result<&'a [u8], E>,
) -> Result<HostTensor, E> {
    let cfg = plan.config;
    let param = param_data(cfg.param, read(Part::Param, len)?);
    let correction = match cfg.stored_correction() {
        MasterMode::None => CorrectionData::None,
        MasterMode::Int8 => CorrectionData::Int8(from_le(read(Part::Correction, len)?)),
        MasterMode::Int16 => CorrectionData::Int16(from_le(read(Part::Correction, len)?)),
    };
    let groups = len.div_ceil(GROUP_SIZE);
    let mut states = Vec::with_capacity(plan.states.len());
    for (k, s) in plan.states.iter().enumerate() {
        let codes = read(Part::Codes(k), len)?;
        states.push(match s.codec {
            Codec::Int8Softsign | Codec::Int8Linear => StateData::Int8 {
                codes: from_le(codes),
                scales: from_le(read(Part::Scales(k), groups)?),
            },
            Codec::Uint8Sqrt => StateData::Uint8 {
                codes: codes.to_vec(),
                scales: from_le(read(Part::Scales(k), groups)?),
            },
            Codec::Bf16 => StateData::Bf16(from_le(codes)),
            Codec::F32 => StateData::F32(from_le(codes)),
        });
    }
    Ok(HostTensor {
        param,
        correction,
        states,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashopt_ir::PlanConfig;
    use flashopt_ir::StateKind;
    use flashopt_ir::def::{OptimizerDef, Range, float, name};

    #[test]
    fn every_part_round_trips_through_its_bytes() {
        let mut def = OptimizerDef::new("momentum");
        def.hyper("lr", 0.1, Range::at_least(0.0));
        def.state("m", StateKind::Signed);
        def.assign("m", name("m") * float(0.9) + name("g"));
        def.assign("p", name("p") - name("lr") * name("m"));
        let plan = flashopt_ir::compile(&def, PlanConfig::bf16(MasterMode::Int16)).unwrap();
        let values: Vec<f32> = (0..37).map(|i| i as f32 * 0.37 - 5.0).collect();
        let mut t = HostTensor::from_f32(&plan, &values);
        t.states[0] = StateData::Int8 {
            codes: (0..37).map(|i| (i * 7 - 120) as i8).collect(),
            scales: vec![half::f16::from_f32(0.5), half::f16::from_f32(3.0)],
        };
        let layout = parts(&plan, 37);
        assert_eq!(
            layout,
            [
                (Part::Param, 2, 37),
                (Part::Correction, 2, 37),
                (Part::Codes(0), 1, 37),
                (Part::Scales(0), 2, 2)
            ]
        );
        let bytes: Vec<(Part, Vec<u8>)> = layout
            .iter()
            .map(|&(p, size, n)| {
                let b = part_bytes(&t, p);
                assert_eq!(b.len(), size * n, "{p:?}");
                (p, b)
            })
            .collect();
        let back = assemble(&plan, 37, |part, n| {
            let b = &bytes.iter().find(|(p, _)| *p == part).unwrap().1;
            assert_eq!(b.len() % n, 0);
            Ok::<_, ()>(b.as_slice())
        })
        .unwrap();
        assert_eq!(back, t);
    }
}
