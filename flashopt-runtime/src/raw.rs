//! A tensor's stored parts as little-endian bytes: what the GPU buffers and the
//! checkpoint files both hold (devices and safetensors are little-endian). The plan's
//! part list says which parts there are and how long each is.

use flashopt_ir::interp::{HostTensor, PartData, PartRef};
use flashopt_ir::layout::Shape;
use flashopt_ir::{Part, PartId, Plan, Storage};

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
        // Zeroed pages are mapped lazily: the copy touches them first, on several
        // threads for large parts (a gigabyte of state read back from the GPU).
        let mut out = bytemuck::zeroed_vec::<T>(bytes.len() / size_of::<T>());
        let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
        let whole = dst.len();
        copy_in_parallel(dst, &bytes[..whole]);
        out
    } else {
        let swapped: Vec<u8> = bytes
            .chunks_exact(size_of::<T>())
            .flat_map(|e| e.iter().rev().copied())
            .collect();
        bytemuck::pod_collect_to_vec(&swapped)
    }
}

/// `dst.copy_from_slice(src)`, in 16 MiB pieces on rayon's pool when there are
/// several: one thread copies (and first touches) memory at a fraction of what the
/// host can.
fn copy_in_parallel(dst: &mut [u8], src: &[u8]) {
    use rayon::prelude::*;
    const PIECE: usize = 16 << 20;
    if dst.len() < 2 * PIECE {
        dst.copy_from_slice(src);
        return;
    }
    dst.par_chunks_mut(PIECE)
        .zip(src.par_chunks(PIECE))
        .for_each(|(to, from)| to.copy_from_slice(from));
}

/// The little-endian bytes of `values`.
pub fn le_bytes<T: bytemuck::Pod>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(std::mem::size_of_val(values));
    extend_le(&mut out, values);
    out
}

/// Append the bytes of one part (a tensor's, or a gradient: `GradBuf::as_part`).
pub fn extend_part(out: &mut Vec<u8>, data: PartRef<'_>) {
    match data {
        PartRef::Bf16(v) => extend_le(out, v),
        PartRef::F16(v) => extend_le(out, v),
        PartRef::F32(v) => extend_le(out, v),
        PartRef::I8(v) => extend_le(out, v),
        PartRef::I16(v) => extend_le(out, v),
        PartRef::U8(v) => out.extend_from_slice(v),
    }
}

/// The little-endian bytes of one part: the values' own memory on little-endian
/// hosts (every device flashopt targets), a converted copy elsewhere.
pub fn part_le_bytes(data: PartRef<'_>) -> std::borrow::Cow<'_, [u8]> {
    fn cast<T: bytemuck::Pod>(values: &[T]) -> std::borrow::Cow<'_, [u8]> {
        if cfg!(target_endian = "little") {
            std::borrow::Cow::Borrowed(bytemuck::cast_slice(values))
        } else {
            std::borrow::Cow::Owned(le_bytes(values))
        }
    }
    match data {
        PartRef::Bf16(v) => cast(v),
        PartRef::F16(v) => cast(v),
        PartRef::F32(v) => cast(v),
        PartRef::I8(v) => cast(v),
        PartRef::I16(v) => cast(v),
        PartRef::U8(v) => std::borrow::Cow::Borrowed(v),
    }
}

/// The bytes of one part.
pub fn part_bytes(data: &PartData) -> Vec<u8> {
    let mut out = Vec::new();
    extend_part(&mut out, data.view());
    out
}

/// A part of `storage` from its bytes.
pub fn part_data(storage: Storage, bytes: &[u8]) -> PartData {
    match storage {
        Storage::Bf16 => PartData::Bf16(from_le(bytes)),
        Storage::F16 => PartData::F16(from_le(bytes)),
        Storage::F32 => PartData::F32(from_le(bytes)),
        Storage::I8 => PartData::I8(from_le(bytes)),
        Storage::I16 => PartData::I16(from_le(bytes)),
        Storage::U8 => PartData::U8(from_le(bytes)),
    }
}

/// `count` zero values of `storage` whose pages are not touched yet (a download
/// writes them first, on several threads).
pub fn zeroed_part(storage: Storage, count: usize) -> PartData {
    match storage {
        Storage::Bf16 => PartData::Bf16(bytemuck::zeroed_vec(count)),
        Storage::F16 => PartData::F16(bytemuck::zeroed_vec(count)),
        Storage::F32 => PartData::F32(bytemuck::zeroed_vec(count)),
        Storage::I8 => PartData::I8(bytemuck::zeroed_vec(count)),
        Storage::I16 => PartData::I16(bytemuck::zeroed_vec(count)),
        Storage::U8 => PartData::U8(bytemuck::zeroed_vec(count)),
    }
}

/// The memory of a part's values, to be written with their little-endian bytes
/// (then [`le_to_native`]).
pub fn part_bytes_mut(part: &mut PartData) -> &mut [u8] {
    match part {
        PartData::Bf16(v) => bytemuck::cast_slice_mut(v),
        PartData::F16(v) => bytemuck::cast_slice_mut(v),
        PartData::F32(v) => bytemuck::cast_slice_mut(v),
        PartData::I8(v) => bytemuck::cast_slice_mut(v),
        PartData::I16(v) => bytemuck::cast_slice_mut(v),
        PartData::U8(v) => v,
    }
}

/// A part written through [`part_bytes_mut`] with little-endian bytes, in this
/// host's byte order (nothing to do on little-endian hosts).
pub fn le_to_native(part: &mut PartData) {
    if cfg!(target_endian = "big") {
        let size = part.storage().size_bytes();
        part_bytes_mut(part)
            .chunks_exact_mut(size)
            .for_each(<[u8]>::reverse);
    }
}

/// A tensor of `plan` assembled from the bytes `read` gives for each resident part
/// (`read(id, part, count)` must give exactly `count` values' bytes).
pub fn assemble<'a, E>(
    plan: &Plan,
    shape: Shape,
    mut read: impl FnMut(PartId, &Part, usize) -> Result<&'a [u8], E>,
) -> Result<HostTensor, E> {
    let parts = plan
        .resident_parts()
        .map(|(id, p)| read(id, p, p.count(shape)).map(|bytes| part_data(p.storage, bytes)))
        .collect::<Result<_, E>>()?;
    Ok(HostTensor::from_parts(shape, parts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashopt_ir::def::{OptimizerDef, Range, float, name};
    use flashopt_ir::{MasterMode, PlanConfig, StateKind};

    #[test]
    fn large_parts_are_read_back_whole_across_the_copy_threads() {
        let values: Vec<i16> = (0..(20 << 20) + 3).map(|i| (i * 31) as i16).collect();
        let bytes = le_bytes(&values);
        assert_eq!(from_le::<i16>(&bytes), values);
    }

    #[test]
    fn every_part_round_trips_through_its_bytes() {
        let mut def = OptimizerDef::new("momentum");
        def.hyper("lr", 0.1, Range::at_least(0.0));
        def.state("m", StateKind::Signed);
        def.state("v", StateKind::NonNegative);
        def.assign("m", name("m") * float(0.9) + name("g"));
        def.assign("v", name("v") + name("g") * name("g"));
        def.assign("p", name("p") - name("lr") * name("m"));
        let plan = flashopt_ir::compile(&def, PlanConfig::bf16(MasterMode::Int16)).unwrap();
        let values: Vec<f32> = (0..37).map(|i| i as f32 * 0.37 - 5.0).collect();
        let mut t = HostTensor::from_f32(&plan, &values);
        t.parts[2] = PartData::I8((0..37).map(|i| (i * 7 - 120) as i8).collect());
        t.parts[3] = PartData::F16(vec![half::f16::from_f32(0.5), half::f16::from_f32(3.0)]);
        t.parts[4] = PartData::U8((0..37).map(|i| (i * 7) as u8).collect());
        let names: Vec<(&str, Storage, usize)> = plan
            .resident_parts()
            .map(|(_, p)| (p.name.as_str(), p.storage, p.bytes(37.into())))
            .collect();
        assert_eq!(
            names,
            [
                ("param", Storage::Bf16, 74),
                ("correction", Storage::I16, 74),
                ("m::codes", Storage::I8, 37),
                ("m::scales", Storage::F16, 4),
                ("v::codes", Storage::U8, 37),
                ("v::scales", Storage::F16, 4),
            ]
        );
        let bytes: Vec<Vec<u8>> = t.parts.iter().map(part_bytes).collect();
        let mut parts = bytes.iter();
        let back = assemble(&plan, 37.into(), |_, p, n| {
            let b = parts.next().unwrap();
            assert_eq!(b.len(), p.storage.size_bytes() * n, "{}", p.name);
            Ok::<_, ()>(b.as_slice())
        })
        .unwrap();
        assert_eq!(back, t);
    }
}
