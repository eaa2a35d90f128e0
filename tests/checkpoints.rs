//! Checkpoints on the CPU reference: round trips, the size against an fp32 AdamW
//! checkpoint, and every way a file can be wrong (each refused, nothing changed).

use std::path::{Path, PathBuf};

use flashopt::Optimizer as _;
use flashopt::optimizers::{AdamW, Lion};
use flashopt::runtime::checkpoint::{FORMAT, write_atomically};
use flashopt::runtime::{CheckpointError, CpuOptimizer};
use flashopt::{GradBuf, MasterMode, NearestRounding, OptimizerSpec, PlanConfig};
use half::bf16;

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flashopt-ckpt-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn grads(lens: &[usize], step: u32) -> Vec<Vec<bf16>> {
    lens.iter()
        .map(|&n| {
            values(n, step * 7 + 1)
                .iter()
                .map(|v| bf16::from_f32(v * 1e-2))
                .collect()
        })
        .collect()
}

const LENS: [usize; 3] = [1, 33, 1000];

fn adamw(master: MasterMode, steps: u32) -> CpuOptimizer {
    let spec = AdamW {
        lr: 1e-2,
        weight_decay: 0.1,
        ..AdamW::default()
    };
    trained(&spec, PlanConfig::bf16(master), steps)
}

/// `spec` over the tensors of `LENS`, stepped `steps` times with [`grads`].
fn trained<S: OptimizerSpec>(spec: &S, config: PlanConfig, steps: u32) -> CpuOptimizer {
    let mut opt = CpuOptimizer::for_spec(spec, config).unwrap();
    for (i, &n) in LENS.iter().enumerate() {
        opt.add_tensor(&format!("layer{i}.weight"), &values(n, i as u32))
            .unwrap();
    }
    for t in 0..steps {
        step(&mut opt, t);
    }
    opt
}

/// One step with the gradients of step `t`.
fn step(opt: &mut CpuOptimizer, t: u32) {
    let g = grads(&LENS, t);
    let bufs: Vec<GradBuf<'_>> = g.iter().map(|g| GradBuf::Bf16(g)).collect();
    opt.step(&bufs).unwrap();
}

fn state(opt: &CpuOptimizer) -> (u64, Vec<flashopt::ir::interp::HostTensor>, String) {
    let tensors = (0..LENS.len())
        .map(|i| opt.tensor(flashopt::TensorId(i)).unwrap().clone())
        .collect();
    (opt.steps_taken(), tensors, format!("{:?}", opt.hyper(0)))
}

#[test]
fn a_loaded_checkpoint_continues_bit_for_bit() {
    let dir = scratch("roundtrip");
    let path = dir.join("adamw.safetensors");
    let mut trained = adamw(MasterMode::Int8, 3);
    trained.set_hyper("lr", 3e-3).unwrap();
    trained.save(&path).unwrap();

    let mut restored = adamw(MasterMode::Int8, 0);
    restored.load(&path).unwrap();
    assert_eq!(state(&restored), state(&trained));

    step(&mut trained, 9);
    step(&mut restored, 9);
    assert_eq!(state(&restored), state(&trained));
    // Nothing but the checkpoint is left in the folder (the temporary file was renamed).
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(files.len(), 1);
}

/// The keys of a safetensors file's `__metadata__` object, in the order written
/// (its values are all strings: keys and values alternate).
fn metadata_keys(file: &[u8]) -> Vec<String> {
    let len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&file[8..8 + len]).unwrap();
    let start = header.find("\"__metadata__\":{").unwrap() + "\"__metadata__\":{".len();
    let mut strings = Vec::new();
    let (mut current, mut in_string, mut escaped) = (String::new(), false, false);
    for c in header[start..].chars() {
        match (in_string, escaped, c) {
            (true, true, _) => {
                current.push(c);
                escaped = false;
            }
            (true, false, '\\') => escaped = true,
            (true, false, '"') => {
                strings.push(std::mem::take(&mut current));
                in_string = false;
            }
            (true, false, _) => current.push(c),
            (false, _, '"') => in_string = true,
            (false, _, '}') => break,
            _ => {}
        }
    }
    strings.into_iter().step_by(2).collect()
}

/// Users diff, hash and deduplicate checkpoints: the same state saves to the same
/// bytes, every time and from an optimizer rebuilt from scratch (safetensors alone
/// writes its metadata in hash order, which differed in 9 of 10 saves).
#[test]
fn the_same_state_saves_to_the_same_bytes() {
    let dir = scratch("reproducible");
    let first = adamw(MasterMode::Int8, 2);
    let reference = dir.join("first.safetensors");
    first.save(&reference).unwrap();
    let expected = std::fs::read(&reference).unwrap();
    first.export_f32(dir.join("first-f32.safetensors")).unwrap();
    let expected_f32 = std::fs::read(dir.join("first-f32.safetensors")).unwrap();
    for i in 0..10 {
        let rebuilt;
        let opt = if i % 2 == 0 {
            rebuilt = adamw(MasterMode::Int8, 2);
            &rebuilt
        } else {
            &first
        };
        let path = dir.join(format!("again-{i}.safetensors"));
        opt.save(&path).unwrap();
        assert!(
            std::fs::read(&path).unwrap() == expected,
            "save {i} differs in bytes"
        );
        opt.export_f32(&path).unwrap();
        assert!(
            std::fs::read(&path).unwrap() == expected_f32,
            "export {i} differs in bytes"
        );
    }
    // The metadata's keys are in sorted order in the header, and the file still loads.
    let keys = metadata_keys(&expected);
    assert!(keys.len() > 4, "{keys:?}");
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    let mut restored = adamw(MasterMode::Int8, 0);
    restored.load(&reference).unwrap();
    assert_eq!(state(&restored), state(&first));
}

#[test]
fn compressed_checkpoints_are_57_percent_smaller_than_fp32_adamw() {
    let dir = scratch("size");
    let n = 1 << 20;
    let mut opt =
        CpuOptimizer::for_spec(&AdamW::default(), PlanConfig::bf16(MasterMode::Int8)).unwrap();
    opt.add_tensor("w", &values(n, 3)).unwrap();
    let g: Vec<bf16> = values(n, 4).iter().map(|v| bf16::from_f32(*v)).collect();
    opt.step(&[GradBuf::Bf16(&g)]).unwrap();
    let compressed = opt.save(dir.join("c.safetensors")).unwrap();
    // The f32 export holds exactly what an fp32 AdamW checkpoint holds: weights, m, v.
    let fp32 = opt.export_f32(dir.join("f.safetensors")).unwrap();
    let smaller = 1.0 - compressed as f64 / fp32 as f64;
    println!(
        "1M-parameter AdamW-24: compressed {compressed} B, fp32 {fp32} B, {:.1}% smaller",
        100.0 * smaller
    );
    // 5.125 bytes per parameter against 12.
    assert!((0.57..0.58).contains(&smaller), "{smaller}");
}

#[test]
fn f32_masters_import_into_another_optimizer() {
    let dir = scratch("master");
    let path = dir.join("f32.safetensors");
    let trained = adamw(MasterMode::Int16, 2);
    trained.export_f32(&path).unwrap();
    let mut other = adamw(MasterMode::Int8, 0);
    let states_before: Vec<_> = (0..3)
        .map(|i| other.tensor(flashopt::TensorId(i)).unwrap().parts[2..].to_vec())
        .collect();
    other.import_master_f32(&path).unwrap();
    for (i, before) in states_before.iter().enumerate() {
        let id = flashopt::TensorId(i);
        for (a, b) in trained
            .master(id)
            .unwrap()
            .iter()
            .zip(other.master(id).unwrap())
        {
            // 24-bit master: the narrow bf16 value plus 7 bits of correction.
            assert!(
                (a - b).abs() <= a.abs() * 2f32.powi(-14) + 1e-30,
                "{a} vs {b}"
            );
        }
        // Parts after the parameter's two (param, correction) are the states'.
        assert_eq!(&other.tensor(id).unwrap().parts[2..], before, "states stay");
    }
    assert_eq!(other.steps_taken(), 0);
}

/// Load `path` into a fresh AdamW-24 and check it fails with `check`, unchanged.
fn refused(path: &Path, check: impl Fn(&CheckpointError) -> bool) -> String {
    let mut opt = adamw(MasterMode::Int8, 1);
    let before = state(&opt);
    let err = opt.load(path).unwrap_err();
    assert!(check(&err), "unexpected error: {err}");
    assert_eq!(state(&opt), before, "a refused load changed the optimizer");
    err.to_string()
}

#[test]
fn truncated_and_corrupt_files_are_refused() {
    let dir = scratch("corrupt");
    let path = dir.join("c.safetensors");
    adamw(MasterMode::Int8, 2).save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    let cut = dir.join("truncated.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    refused(&cut, |e| matches!(e, CheckpointError::Corrupt { .. }));

    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"not a checkpoint at all").unwrap();
    refused(&garbage, |e| matches!(e, CheckpointError::Corrupt { .. }));

    let missing = dir.join("missing.safetensors");
    let text = refused(&missing, |e| matches!(e, CheckpointError::Io { .. }));
    assert!(text.contains("missing.safetensors"), "{text}");
}

#[test]
fn other_optimizers_configs_and_shapes_are_refused() {
    let dir = scratch("mismatch");

    let lion = dir.join("lion.safetensors");
    let mut l =
        CpuOptimizer::for_spec(&Lion::default(), PlanConfig::bf16(MasterMode::Int8)).unwrap();
    for (i, &n) in LENS.iter().enumerate() {
        l.add_tensor(&format!("layer{i}.weight"), &values(n, 0))
            .unwrap();
    }
    l.save(&lion).unwrap();
    let text = refused(
        &lion,
        |e| matches!(e, CheckpointError::Mismatch { field, .. } if field == "optimizer"),
    );
    assert_eq!(
        text.rsplit(": ").next().unwrap(),
        "optimizer is `lion`, this optimizer has `adamw`"
    );

    let wide = dir.join("32bit.safetensors");
    adamw(MasterMode::Int16, 1).save(&wide).unwrap();
    refused(
        &wide,
        |e| matches!(e, CheckpointError::Mismatch { field, .. } if field == "config"),
    );

    let renamed = dir.join("renamed.safetensors");
    let mut r =
        CpuOptimizer::for_spec(&AdamW::default(), PlanConfig::bf16(MasterMode::Int8)).unwrap();
    for (i, &n) in LENS.iter().enumerate() {
        r.add_tensor(&format!("block{i}.weight"), &values(n, 0))
            .unwrap();
    }
    r.save(&renamed).unwrap();
    refused(
        &renamed,
        |e| matches!(e, CheckpointError::Mismatch { field, .. } if field == "tensor list"),
    );

    let resized = dir.join("resized.safetensors");
    let mut s =
        CpuOptimizer::for_spec(&AdamW::default(), PlanConfig::bf16(MasterMode::Int8)).unwrap();
    for (i, &n) in LENS.iter().enumerate() {
        s.add_tensor(&format!("layer{i}.weight"), &values(n + 1, 0))
            .unwrap();
    }
    s.save(&resized).unwrap();
    let text = refused(&resized, |e| {
        matches!(e, CheckpointError::TensorShape { .. })
    });
    assert!(text.contains("layer0.weight::param"), "{text}");
}

/// A checkpoint whose metadata or tensors were edited by hand.
fn edited(
    dir: &Path,
    name: &str,
    edit: impl Fn(
        &mut std::collections::HashMap<String, String>,
        &mut Vec<(String, Vec<u8>, safetensors::Dtype, usize)>,
    ),
) -> PathBuf {
    let path = dir.join(format!("{name}.safetensors"));
    adamw(MasterMode::Int8, 1).save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = meta.metadata().clone().unwrap();
    let mut tensors: Vec<(String, Vec<u8>, safetensors::Dtype, usize)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.data().to_vec(), v.dtype(), v.shape()[0]))
        .collect();
    edit(&mut meta, &mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(k, d, t, n)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(*t, vec![*n], d).unwrap(),
            )
        })
        .collect();
    write_atomically(&path, &safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
    path
}

#[test]
fn edited_metadata_and_tensors_are_refused() {
    let dir = scratch("edited");
    let newer = edited(&dir, "newer", |m, _| {
        m.insert("version".into(), "2".into());
    });
    let text = refused(&newer, |e| matches!(e, CheckpointError::Version { .. }));
    assert!(
        text.contains("version 2; this flashopt reads version 1"),
        "{text}"
    );

    let foreign = edited(&dir, "foreign", |m, _| {
        m.remove("format");
    });
    refused(&foreign, |e| {
        matches!(e, CheckpointError::NotACheckpoint { found: None, .. })
    });
    assert_eq!(FORMAT, "flashopt-checkpoint");

    let extra = edited(&dir, "extra", |_, t| {
        t.push((
            "layer0.weight::ema".into(),
            vec![0; 4],
            safetensors::Dtype::F32,
            1,
        ));
    });
    refused(
        &extra,
        |e| matches!(e, CheckpointError::UnexpectedTensor { key, .. } if key == "layer0.weight::ema"),
    );

    let dropped = edited(&dir, "dropped", |_, t| {
        t.retain(|(k, ..)| k != "layer2.weight::v::scales");
    });
    refused(
        &dropped,
        |e| matches!(e, CheckpointError::MissingTensor { key, .. } if key == "layer2.weight::v::scales"),
    );

    let retyped = edited(&dir, "retyped", |_, t| {
        for (k, _, dtype, _) in t.iter_mut() {
            if k == "layer1.weight::m::codes" {
                *dtype = safetensors::Dtype::U8;
            }
        }
    });
    refused(
        &retyped,
        |e| matches!(e, CheckpointError::TensorShape { key, .. } if key == "layer1.weight::m::codes"),
    );

    let bad_hyper = edited(&dir, "bad-hyper", |m, _| {
        m.insert("hyper.0.lr".into(), "-1.0".into());
    });
    let text = refused(
        &bad_hyper,
        |e| matches!(e, CheckpointError::Metadata { key, .. } if key == "hyper.0.lr"),
    );
    assert!(text.contains("hyper.0.lr"), "{text}");
}

#[test]
fn a_save_into_a_missing_folder_fails_and_names_the_path() {
    let dir = scratch("nofolder");
    let path = dir.join("no/such/folder/c.safetensors");
    let err = adamw(MasterMode::Int8, 0).save(&path).unwrap_err();
    assert!(matches!(err, CheckpointError::Io { .. }));
    assert!(err.to_string().contains("no/such/folder"), "{err}");
}

/// Loading never panics, whatever the file holds: every truncation of a real
/// checkpoint, every single-byte change of its header, and random bytes are each
/// refused with an error (or, for a changed data byte, loaded), and a refused load
/// changes nothing. Counts the cases it ran.
#[test]
fn loading_arbitrary_bytes_never_panics_and_changes_nothing_on_error() {
    let dir = scratch("fuzz");
    let path = dir.join("c.safetensors");
    adamw(MasterMode::Int8, 2).save(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let header_end = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut opt = adamw(MasterMode::Int8, 1);
    let before = state(&opt);
    let probe = dir.join("probe.safetensors");
    let (mut cases, mut refused) = (0usize, 0usize);
    let mut try_bytes = |bytes: &[u8], opt: &mut CpuOptimizer| {
        std::fs::write(&probe, bytes).unwrap();
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| opt.load(&probe)));
        cases += 1;
        match loaded {
            Err(_) => panic!("load panicked on case {cases} ({} bytes)", bytes.len()),
            Ok(Err(_)) => {
                refused += 1;
                assert!(state(opt) == before, "a refused load changed the state");
            }
            Ok(Ok(())) => *opt = adamw(MasterMode::Int8, 1),
        }
    };
    for len in 0..good.len() {
        try_bytes(&good[..len], &mut opt);
    }
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for at in 0..header_end {
        let mut bytes = good.clone();
        bytes[at] = (next() % 256) as u8;
        try_bytes(&bytes, &mut opt);
    }
    for _ in 0..500 {
        let len = (next() % 4096) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if len >= 8 && next() % 2 == 0 {
            // A plausible header length, so the JSON parser sees the bytes.
            let n = (len - 8) as u64;
            bytes[..8].copy_from_slice(&n.to_le_bytes());
        }
        try_bytes(&bytes, &mut opt);
    }
    println!("{cases} cases, {refused} refused, none panicked");
    assert!(
        cases > 1000 && refused > 900,
        "{cases} cases, {refused} refused"
    );
}

/// Dithering changes how codes are chosen, not what they mean: a checkpoint of Lion
/// rounding to nearest (flashoptim's arithmetic) loads into the shipped, dithered Lion
/// and back, and both continue from the same state.
#[test]
fn nearest_and_dithered_checkpoints_load_into_each_other() {
    let dir = scratch("rounding");
    let config = PlanConfig::bf16(MasterMode::Int8);
    let spec = Lion {
        lr: 1e-2,
        ..Lion::default()
    };
    let mut nearest = trained(&NearestRounding(spec.clone()), config, 3);
    let path = dir.join("lion-nearest.safetensors");
    nearest.save(&path).unwrap();

    let mut dithered = trained(&spec, config, 0);
    dithered.load(&path).unwrap();
    assert_eq!(state(&dithered), state(&nearest));

    // One more step each: the rounding is all that differs, by at most one code.
    step(&mut dithered, 3);
    step(&mut nearest, 3);
    let codes = |opt: &CpuOptimizer| -> Vec<i8> {
        (0..LENS.len())
            .flat_map(|i| {
                let t = opt.tensor(flashopt::TensorId(i)).unwrap();
                match t.part(opt.plan(), "m::codes") {
                    Some(flashopt::ir::interp::PartData::I8(c)) => c.clone(),
                    other => panic!("int8 momentum codes, got {other:?}"),
                }
            })
            .collect()
    };
    let (d, n) = (codes(&dithered), codes(&nearest));
    assert!(
        d.iter()
            .zip(&n)
            .all(|(a, b)| (i16::from(*a) - i16::from(*b)).abs() <= 1)
    );
    assert_ne!(d, n, "the dither changed no code");

    let back = dir.join("lion-dithered.safetensors");
    dithered.save(&back).unwrap();
    nearest.load(&back).unwrap();
    assert_eq!(state(&nearest), state(&dithered));
}
