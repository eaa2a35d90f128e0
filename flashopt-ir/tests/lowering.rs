//! The lowered codecs compute exactly what the reference format functions compute
//! (flashoptim's formulas, in `codec/`), bit for bit, for random bit patterns and the
//! edge cases: zeros, subnormals, huge values, infinities and NaN. The programs run in
//! the CPU interpreter, the same instructions the GPU back end translates.

use flashopt_ir::codec::{decode_master, dither, encode_master, linear, softsign, sqrt};
use flashopt_ir::def::{OptimizerDef, name};
use flashopt_ir::interp::{self, GradBuf, HostTensor, PartData};
use flashopt_ir::{
    Codec, FloatDtype, HyperValues, MasterMode, Plan, PlanConfig, Rounding, StateKind,
};
use half::{bf16, f16};
use proptest::prelude::*;

/// `p = g` (the master weight set to the gradient, stored through the master codec)
/// and `s = g` (the state stored through `codec`): one step stores values we choose.
fn store_plan(config: PlanConfig, codec: Codec) -> Plan {
    let kind = if codec == Codec::Uint8Sqrt {
        StateKind::NonNegative
    } else {
        StateKind::Signed
    };
    let mut def = OptimizerDef::new("store");
    def.state_with("s", kind, codec);
    def.assign("s", name("g"));
    def.assign("p", name("g"));
    flashopt_ir::compile(&def, config).unwrap()
}

fn config(param: FloatDtype, master: MasterMode) -> PlanConfig {
    PlanConfig {
        param,
        grad: FloatDtype::F32,
        master,
    }
}

/// Step `plan` once with gradient `values` on a zero tensor.
fn stored(plan: &Plan, values: &[f32]) -> HostTensor {
    stored_at(plan, values, 1)
}

/// [`stored`] with the step counter at `step`.
fn stored_at(plan: &Plan, values: &[f32], step: u64) -> HostTensor {
    let mut t = HostTensor::zeros(plan, values.len());
    let scalars = plan
        .kernel_scalars(&HyperValues::defaults(&plan.hyper_params), step)
        .unwrap();
    interp::run(plan, &scalars, &mut t, GradBuf::F32(values)).unwrap();
    t
}

fn narrow_bits(part: &PartData, i: usize) -> u16 {
    match part {
        PartData::Bf16(v) => v[i].to_bits(),
        PartData::F16(v) => v[i].to_bits(),
        other => panic!("not a narrow parameter: {other:?}"),
    }
}

fn correction(part: &PartData, i: usize) -> i32 {
    match part {
        PartData::I8(v) => i32::from(v[i]),
        PartData::I16(v) => i32::from(v[i]),
        other => panic!("not a correction: {other:?}"),
    }
}

fn check_master(values: &[f32]) -> Result<(), TestCaseError> {
    for dtype in [FloatDtype::Bf16, FloatDtype::F16] {
        for mode in [MasterMode::Int8, MasterMode::Int16] {
            let plan = store_plan(config(dtype, mode), Codec::F32);
            let t = stored(&plan, values);
            let init = HostTensor::from_f32(&plan, values);
            let decoded = t.master_f32(&plan);
            for (i, &x) in values.iter().enumerate() {
                let (bits, code) = encode_master(x, dtype, mode);
                prop_assert_eq!(
                    narrow_bits(&t.parts[0], i),
                    bits,
                    "{} {} x={:e}",
                    dtype,
                    mode,
                    x
                );
                prop_assert_eq!(
                    correction(&t.parts[1], i),
                    code,
                    "{} {} x={:e}",
                    dtype,
                    mode,
                    x
                );
                prop_assert_eq!(narrow_bits(&init.parts[0], i), bits);
                prop_assert_eq!(correction(&init.parts[1], i), code);
                let want = decode_master(bits, code, dtype, mode);
                prop_assert!(
                    want.to_bits() == decoded[i].to_bits()
                        || (want.is_nan() && decoded[i].is_nan()),
                    "{dtype} {mode} decode of {x:e}: {} vs {want}",
                    decoded[i]
                );
            }
        }
    }
    Ok(())
}

/// Decoding arbitrary stored bits (not only what encoding produces).
fn check_master_decode(bits: &[u16], codes: &[i16]) -> Result<(), TestCaseError> {
    for dtype in [FloatDtype::Bf16, FloatDtype::F16] {
        for mode in [MasterMode::Int8, MasterMode::Int16] {
            let plan = store_plan(config(dtype, mode), Codec::F32);
            let mut t = HostTensor::zeros(&plan, bits.len());
            t.parts[0] = match dtype {
                FloatDtype::Bf16 => {
                    PartData::Bf16(bits.iter().map(|&b| bf16::from_bits(b)).collect())
                }
                _ => PartData::F16(bits.iter().map(|&b| f16::from_bits(b)).collect()),
            };
            let codes: Vec<i32> = codes
                .iter()
                .map(|&c| {
                    if mode == MasterMode::Int8 {
                        i32::from(c as i8)
                    } else {
                        i32::from(c)
                    }
                })
                .collect();
            t.parts[1] = match mode {
                MasterMode::Int8 => PartData::I8(codes.iter().map(|&c| c as i8).collect()),
                _ => PartData::I16(codes.iter().map(|&c| c as i16).collect()),
            };
            let decoded = t.master_f32(&plan);
            for i in 0..bits.len() {
                let want = decode_master(bits[i], codes[i], dtype, mode);
                prop_assert!(
                    want.to_bits() == decoded[i].to_bits()
                        || (want.is_nan() && decoded[i].is_nan()),
                    "{dtype} {mode} bits {:#x} code {}: {} vs {want}",
                    bits[i],
                    codes[i],
                    decoded[i]
                );
            }
        }
    }
    Ok(())
}

/// A signed codec's reference encoder (of a group) and decoder (of an element).
type SignedReference = (fn(&[f32], &mut [i8]) -> f16, fn(i8, f16) -> f32);

fn signed_reference(codec: Codec) -> SignedReference {
    match codec {
        Codec::Int8Softsign => (softsign::encode_group, softsign::decode),
        _ => (linear::encode_group, linear::decode),
    }
}

fn check_states(values: &[f32]) -> Result<(), TestCaseError> {
    let cfg = config(FloatDtype::F32, MasterMode::None);
    for codec in [Codec::Int8Softsign, Codec::Int8Linear] {
        let plan = store_plan(cfg, codec);
        let t = stored(&plan, values);
        let (encode, decode) = signed_reference(codec);
        let (PartData::I8(codes), PartData::F16(scales)) = (&t.parts[1], &t.parts[2]) else {
            panic!("{codec}: {:?}", t.parts)
        };
        let decoded = &t.decoded(&plan)[1];
        for (g, chunk) in values.chunks(32).enumerate() {
            let mut want = vec![0i8; chunk.len()];
            let scale = encode(chunk, &mut want);
            prop_assert_eq!(
                &codes[g * 32..g * 32 + chunk.len()],
                &want[..],
                "{} group {}",
                codec,
                g
            );
            prop_assert_eq!(
                scales[g].to_bits(),
                scale.to_bits(),
                "{} group {}",
                codec,
                g
            );
            for (k, &c) in want.iter().enumerate() {
                let d = decode(c, scale);
                let got = decoded[g * 32 + k];
                prop_assert!(d.to_bits() == got.to_bits() || (d.is_nan() && got.is_nan()));
            }
        }
    }
    let plan = store_plan(cfg, Codec::Uint8Sqrt);
    let t = stored(&plan, values);
    let (PartData::U8(codes), PartData::F16(scales)) = (&t.parts[1], &t.parts[2]) else {
        panic!("{:?}", t.parts)
    };
    let decoded = &t.decoded(&plan)[1];
    for (g, chunk) in values.chunks(32).enumerate() {
        let mut want = vec![0u8; chunk.len()];
        let scale = sqrt::encode_group(chunk, &mut want);
        prop_assert_eq!(
            &codes[g * 32..g * 32 + chunk.len()],
            &want[..],
            "sqrt group {}",
            g
        );
        prop_assert_eq!(scales[g].to_bits(), scale.to_bits());
        for (k, &c) in want.iter().enumerate() {
            let d = sqrt::decode(c, scale);
            let got = decoded[g * 32 + k];
            prop_assert!(d.to_bits() == got.to_bits() || (d.is_nan() && got.is_nan()));
        }
    }
    Ok(())
}

/// Every code with a few scales, decoded by the program and by the reference.
#[test]
fn every_code_decodes_as_the_reference() {
    let cfg = config(FloatDtype::F32, MasterMode::None);
    let scales = [0.0f32, 6.0e-8, 1.0e-3, 1.0, 3.5, 65504.0, f32::INFINITY];
    for codec in [Codec::Int8Softsign, Codec::Int8Linear, Codec::Uint8Sqrt] {
        let plan = store_plan(cfg, codec);
        for &s in &scales {
            let scale = f16::from_f32(s);
            let mut t = HostTensor::zeros(&plan, 256);
            t.parts[2] = PartData::F16(vec![scale; 8]);
            t.parts[1] = match codec {
                Codec::Uint8Sqrt => PartData::U8((0..=255u8).collect()),
                _ => PartData::I8((-128..=127i8).collect()),
            };
            let decoded = &t.decoded(&plan)[1];
            for (i, &got) in decoded.iter().enumerate() {
                let want = match codec {
                    Codec::Uint8Sqrt => sqrt::decode(i as u8, scale),
                    c => (signed_reference(c).1)((i as i16 - 128) as i8, scale),
                };
                assert!(
                    want.to_bits() == got.to_bits() || (want.is_nan() && got.is_nan()),
                    "{codec} code #{i} scale {s}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn master_edge_cases() {
    let mut values = vec![
        0.0f32,
        -0.0,
        1.0,
        -1.5,
        1.0 + 2f32.powi(-9),
        1.0 - 2f32.powi(-10),
        f32::MIN_POSITIVE,
        1.0e-40,
        -1.0e-45,
        3.0e-39,
        65504.0,
        65520.0,
        1.0e6,
        -1.0e6,
        3.0e38,
        f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    // Every power of two and its neighbours: the binade edges of both narrow dtypes.
    for e in -149..128 {
        let x = if e >= -126 {
            f32::from_bits(((e + 127) as u32) << 23)
        } else {
            f32::from_bits(1 << (e + 149))
        };
        values.extend([
            x,
            f32::from_bits(x.to_bits() + 1),
            f32::from_bits(x.to_bits() - 1),
        ]);
    }
    check_master(&values).unwrap();
    let bits: Vec<u16> = (0..=u16::MAX).collect();
    let codes: Vec<i16> = (0..=u16::MAX)
        .map(|i| i.wrapping_mul(40503) as i16)
        .collect();
    check_master_decode(&bits, &codes).unwrap();
}

#[test]
fn state_edge_cases() {
    let mut values = vec![0.0f32; 32]; // an all-zero group
    values.extend([f32::NAN, 1.0, -0.5, 0.25, -1.0e-40, 1.0e-45, 3.0]); // NaN in a group
    values.resize(64, 0.125);
    values.extend([f32::INFINITY, 1.0, -2.0]); // an infinite group, short
    values.resize(96, 7.0);
    values.extend([1.0e5, -3.0, 65504.0, 70000.0, -0.0]); // beyond f16's range
    values.resize(128, -1.0e-30);
    values.extend([-4.0, 9.0, f32::NEG_INFINITY]); // negatives for the sqrt codec
    check_states(&values).unwrap();
}

fn any_f32() -> impl Strategy<Value = f32> {
    any::<u32>().prop_map(f32::from_bits)
}

fn moderate() -> impl Strategy<Value = f32> {
    (-30i32..10, -1.0f32..1.0).prop_map(|(e, m)| m * 2f32.powi(e))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn master_random_bits(values in prop::collection::vec(any_f32(), 1..200)) {
        check_master(&values)?;
    }

    #[test]
    fn master_random_weights(values in prop::collection::vec(moderate(), 1..200)) {
        check_master(&values)?;
    }

    #[test]
    fn master_decode_random_bits(pairs in prop::collection::vec((any::<u16>(), any::<i16>()), 1..200)) {
        let (bits, codes): (Vec<u16>, Vec<i16>) = pairs.into_iter().unzip();
        check_master_decode(&bits, &codes)?;
    }

    #[test]
    fn states_random_bits(values in prop::collection::vec(any_f32(), 1..200)) {
        check_states(&values)?;
    }

    #[test]
    fn states_random_moments(values in prop::collection::vec(moderate(), 1..200)) {
        check_states(&values)?;
    }
}

#[test]
fn zero_bytes_decode_to_zero_in_every_codec() {
    for codec in Codec::ALL {
        for (param, master) in [
            (FloatDtype::Bf16, MasterMode::Int8),
            (FloatDtype::F16, MasterMode::Int16),
            (FloatDtype::F32, MasterMode::None),
        ] {
            let plan = store_plan(config(param, master), codec);
            let t = HostTensor::zeros(&plan, 40);
            for values in t.decoded(&plan) {
                assert!(
                    values.iter().all(|&v| v == 0.0),
                    "{codec} {param}: {values:?}"
                );
            }
        }
    }
}

/// A plan and its decode and init programs, as a reviewer reads them.
fn text(plan: &Plan) -> String {
    format!("{plan}{}", plan.side_programs_text())
}

/// One feature each: every codec's lowering alone, after the passes (code tables,
/// exact reciprocals), in a plan that stores the gradient (`s = g; p = g`).
#[test]
fn each_state_codec_snapshot() {
    for codec in Codec::ALL {
        let plan = store_plan(config(FloatDtype::F32, MasterMode::None), codec);
        insta::assert_snapshot!(format!("state_{}", codec.name()), text(&plan));
    }
}

/// [`store_plan`]'s rule with its state in `int8_softsign`, dithered.
fn dithered_store_plan() -> Plan {
    let mut def = OptimizerDef::new("store");
    def.state_rounded("s", StateKind::Signed, None, Rounding::Dithered);
    def.assign("s", name("g"));
    def.assign("p", name("g"));
    flashopt_ir::compile(&def, config(FloatDtype::F32, MasterMode::None)).unwrap()
}

/// A dithered state: the rounding offset's instructions and the dither-phase scalar.
#[test]
fn dithered_state_snapshot() {
    let plan = dithered_store_plan();
    assert_eq!(plan.dither_phase(), Some(plan.grad_scale() + 1));
    insta::assert_snapshot!("state_int8_softsign_dithered", text(&plan));
}

/// The lowered dithered encoder stores what the reference computes with the same
/// offsets, step after step, and differs from rounding to nearest.
#[test]
fn dithered_codes_match_the_reference() {
    let plan = dithered_store_plan();
    let values: Vec<f32> = (0..64)
        .map(|i| ((i * 37 % 64) as f32 - 31.7) * 0.013)
        .collect();
    let mut differs = false;
    for step in [1u64, 2, 3, 17, 1_000_003] {
        let t = stored_at(&plan, &values, step);
        let Some(PartData::I8(codes)) = t.part(&plan, "s::codes") else {
            panic!("int8 codes")
        };
        let phase = dither::phase(step);
        for (g, chunk) in values.chunks(32).enumerate() {
            let mut expected = [0i8; 32];
            softsign::encode_group_with(chunk, &mut expected, |x| dither::offset(x, phase));
            assert_eq!(&codes[g * 32..g * 32 + 32], &expected[..], "step {step}");
            let mut nearest = [0i8; 32];
            softsign::encode_group(chunk, &mut nearest);
            differs |= nearest != expected;
        }
    }
    assert!(differs, "dithering changed no code");
}

/// A group's largest value whose offset, uncapped, would be within 2^-20 of 1: the
/// lowered encoder stores 127 (uncapped, `127 + u` rounds to 128.0, which the
/// interpreter refuses in tests and CUDA wraps to -128).
#[test]
fn the_largest_dithered_code_stays_127_when_the_offset_nears_1() {
    let plan = dithered_store_plan();
    let step = 1;
    let phase = dither::phase(step);
    let target = 1.0 - 2.0f64.powi(-21) - f64::from(phase);
    let field = (target * 8_388_608.0).round() as u32;
    let largest = f32::from_bits(0x3f80_0000 | field);
    let fraction = f64::from(field) / 8_388_608.0;
    let uncapped = fraction + f64::from(phase);
    assert!(uncapped > f64::from(dither::MAX_OFFSET) && uncapped < 1.0);
    assert_eq!(
        127.0f32 + uncapped as f32,
        128.0,
        "the case the cap exists for"
    );
    let mut values = vec![0.25f32; 32];
    values[0] = largest;
    values[1] = -largest;
    let t = stored_at(&plan, &values, step);
    let Some(PartData::I8(codes)) = t.part(&plan, "s::codes") else {
        panic!("int8 codes")
    };
    assert_eq!((codes[0], codes[1]), (127, -127));
}

#[test]
fn each_master_format_snapshot() {
    for (label, param, master) in [
        ("bf16_24", FloatDtype::Bf16, MasterMode::Int8),
        ("bf16_32", FloatDtype::Bf16, MasterMode::Int16),
        ("f16_24", FloatDtype::F16, MasterMode::Int8),
        ("f16_32", FloatDtype::F16, MasterMode::Int16),
        ("bf16_none", FloatDtype::Bf16, MasterMode::None),
    ] {
        let plan = store_plan(config(param, master), Codec::F32);
        insta::assert_snapshot!(format!("master_{label}"), text(&plan));
    }
}
