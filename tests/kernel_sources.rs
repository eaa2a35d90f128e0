//! The generated CUDA and HIP source of every shipped optimizer's fused kernel,
//! compiled by cubecl-cpp on the host (no GPU): bf16 parameters at 24-bit, 32-bit and
//! no correction, plus f16 and f32 parameters for AdamW.

use flashopt::optimizers;
use flashopt::{FloatDtype, MasterMode, PlanConfig};
use flashopt_cubecl::emit::{Target, emit};

fn configs() -> Vec<(String, String, PlanConfig)> {
    let mut out = Vec::new();
    for name in optimizers::NAMES {
        for master in MasterMode::ALL {
            out.push((
                name.to_string(),
                format!("bf16_{}", master.bits_label()),
                PlanConfig::bf16(master),
            ));
        }
    }
    let f16 = PlanConfig {
        param: FloatDtype::F16,
        grad: FloatDtype::F16,
        master: MasterMode::Int8,
    };
    out.push(("adamw".into(), "f16_24".into(), f16));
    out.push(("adamw".into(), "f32".into(), PlanConfig::f32()));
    out
}

#[test]
fn kernel_sources() {
    for (name, label, config) in configs() {
        let plan = flashopt::ir::compile(&optimizers::by_name(&name).unwrap(), config).unwrap();
        for target in [Target::Cuda, Target::Hip] {
            let source = emit(&plan, target).unwrap();
            // The properties every kernel must have, checked beyond the snapshot.
            let entry = format!(
                "flashopt_{name}_{}_m{}_g{}",
                config.param,
                config.master.bits_label(),
                config.grad
            );
            assert!(
                source.contains(&entry),
                "{name} {label} {target:?}: entry point {entry}"
            );
            assert!(source.contains("__launch_bounds__(256)"));
            // 16-byte vectors for the parameters (8 x 16-bit or 4 x f32).
            let vector = match config.param {
                FloatDtype::F32 => "float_4",
                _ => "_8",
            };
            assert!(
                source.contains(vector),
                "{name} {label} {target:?}: no 16-byte parameter vectors"
            );
            insta::assert_snapshot!(format!("{name}_{label}_{}", target.name()), source);
        }
    }
}

#[test]
fn the_cli_prints_the_same_source() {
    let bin = env!("CARGO_BIN_EXE_flashopt");
    let out = std::process::Command::new(bin)
        .args(["emit", "lion", "--target", "hip", "--master", "32"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let plan = flashopt::ir::compile(
        &optimizers::by_name("lion").unwrap(),
        PlanConfig::bf16(MasterMode::Int16),
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        emit(&plan, Target::Hip).unwrap()
    );
    let bad = std::process::Command::new(bin)
        .args(["emit", "adamw", "--target", "metal"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(bad.stderr).unwrap().trim(),
        "unknown target `metal`: cuda or hip"
    );
}

/// Debian's hipcc (5.2.3) on the generated HIP source, where it is installed.
#[test]
fn hipcc_accepts_the_hip_source_when_present() {
    let Ok(which) = std::process::Command::new("hipcc")
        .arg("--version")
        .output()
    else {
        eprintln!("hipcc not installed: skipped");
        return;
    };
    if !which.status.success() {
        eprintln!("hipcc not usable: skipped");
        return;
    }
    let plan = flashopt::ir::compile(
        &optimizers::by_name("adamw").unwrap(),
        PlanConfig::bf16(MasterMode::Int8),
    )
    .unwrap();
    let dir = std::env::temp_dir().join("flashopt-hipcc");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("adamw.hip");
    std::fs::write(&src, emit(&plan, Target::Hip).unwrap()).unwrap();
    let out = std::process::Command::new("hipcc")
        .args(["--genco", "--offload-arch=gfx90a", "-o"])
        .arg(dir.join("adamw.co"))
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hipcc rejected the source:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
