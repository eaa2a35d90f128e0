//! The generated CUDA and HIP source of the fused kernels, compiled by cubecl-cpp on
//! the host (no GPU). Every shipped optimizer in every format is compiled and checked
//! for the properties below; the source itself is snapshotted for AdamW-24 on bf16
//! alone (the plans, which the sources translate, are snapshotted for all).

use flashopt::optimizers;
use flashopt::{FloatDtype, MasterMode, PlanConfig};
use flashopt_cubecl::codegen::bindings::{
    Binding, KernelShape, SCALAR_VECTOR, buffers, scalar_stride, slot,
};
use flashopt_cubecl::codegen::emit::{Target, emit};

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
    out.push(("adamw".into(), "f32".into(), PlanConfig::f32_params()));
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
            // cubecl marks what a target cannot do with `#error` (HIP has no warp sync).
            assert!(!source.contains("#error"), "{name} {label} {target:?}");
            // Parameters load as vectors of a unit's lanes (at most 16 bytes).
            let lanes = KernelShape::default().lanes_per_unit();
            let width = lanes.min(16 / config.param.size_bytes());
            assert!(
                source.contains(&format!("_{width} ")),
                "{name} {label} {target:?}: no {width}-lane parameter vectors"
            );
            // A group spans several units: its maxima cross them by plane shuffles.
            if plan
                .parts
                .iter()
                .any(|p| p.extent == flashopt::ir::Extent::Group)
            {
                assert!(
                    source.contains("__shfl_xor"),
                    "{name} {label} {target:?}: no plane shuffle for the group maximum"
                );
            }
            if name == "adamw" && label == "bf16_24" {
                insta::assert_snapshot!(format!("{name}_{label}_{}", target.name()), source);
            }
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
}

/// Every mistake on the command line is an error (exit status 2) that says what is
/// expected; nothing is ignored.
#[test]
fn the_cli_refuses_what_it_does_not_know() {
    let bin = env!("CARGO_BIN_EXE_flashopt");
    let refused = |args: &[&str], expected: &[&str]| {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        for e in expected {
            assert!(stderr.contains(e), "{args:?}: `{e}` not in {stderr}");
        }
    };
    refused(
        &["emit", "adamw", "--target", "metal"],
        &[
            "invalid value 'metal' for '--target <TARGET>'",
            "[possible values: cuda, hip]",
        ],
    );
    refused(
        &["emit", "adamw", "--target", "cuda", "--unknown"],
        &["unexpected argument '--unknown'"],
    );
    refused(
        &["emit", "adagrad", "--target", "cuda"],
        &[
            "invalid value 'adagrad'",
            "shipped: adamw, adam, lion, sgd, sgdw, lamb, cautious_adamw, adafactor, adafactor_momentum, adam_mini",
        ],
    );
    refused(
        &["emit", "adamw", "--target", "cuda", "--phase", "0"],
        &["`adamw` has 0 phase(s) before the step; there is no phase 0"],
    );
    refused(
        &["emit", "adamw", "--target", "cuda", "--lanes", "5"],
        &["invalid value '5' for '--lanes <LANES>'", "4, 8, 16 or 32"],
    );
    refused(
        &[
            "emit",
            "adamw",
            "--target",
            "cuda",
            "--gradient-regions",
            "9",
        ],
        &["1 to 8"],
    );
    refused(
        &["emit", "adamw", "--master", "16", "--target", "cuda"],
        &["[possible values: 24, 32, none]"],
    );
    refused(&["emit", "adamw"], &["`--target cuda|hip` is required"]);
    refused(
        &["compile", "adamw"],
        &["unrecognized subcommand 'compile'"],
    );
    let plan = std::process::Command::new(bin)
        .args(["emit", "sgd", "--plan", "--master", "none"])
        .output()
        .unwrap();
    assert!(plan.status.success());
    assert_eq!(
        String::from_utf8(plan.stdout).unwrap(),
        flashopt::ir::compile(
            &optimizers::by_name("sgd").unwrap(),
            PlanConfig::bf16(MasterMode::None)
        )
        .unwrap()
        .to_string()
    );
}

fn hipcc(name: &str, source: &str) -> std::process::Output {
    let dir = std::env::temp_dir().join("flashopt-hipcc");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join(format!("{name}.hip"));
    std::fs::write(&src, source).unwrap();
    std::process::Command::new("hipcc")
        .args(["--genco", "--offload-arch=gfx90a", "-o"])
        .arg(dir.join(format!("{name}.co")))
        .arg(&src)
        .output()
        .unwrap()
}

/// Debian's hipcc (5.2.3) on the generated HIP source, where it is installed.
///
/// cubecl 0.10's HIP dialect includes `hip/hip_bf16.h` in every kernel and uses
/// `__hip_bfloat16`; both arrived in ROCm releases after 5.2 (which has
/// `hip/hip_bfloat16.h` and `hip_bfloat16`). So with HIP 5.2: f16 and f32 kernels
/// compile once that one include is dropped, and bf16 kernels cannot compile.
#[test]
fn hipcc_accepts_the_hip_source_when_present() {
    let usable = std::process::Command::new("hipcc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !usable {
        eprintln!("hipcc not installed: skipped");
        return;
    }
    let has_bf16_header = [
        "/usr/include/hip/hip_bf16.h",
        "/opt/rocm/include/hip/hip_bf16.h",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).exists());
    let adamw = optimizers::by_name("adamw").unwrap();
    for (label, config) in [
        ("f32", PlanConfig::f32_params()),
        (
            "f16_24",
            PlanConfig {
                param: FloatDtype::F16,
                grad: FloatDtype::F16,
                master: MasterMode::Int8,
            },
        ),
    ] {
        let source = emit(&flashopt::ir::compile(&adamw, config).unwrap(), Target::Hip).unwrap();
        let source = if has_bf16_header {
            source
        } else {
            source.replace("#include <hip/hip_bf16.h>\n", "")
        };
        let out = hipcc(label, &source);
        assert!(
            out.status.success(),
            "hipcc rejected the {label} kernel:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bf16 = emit(
        &flashopt::ir::compile(&adamw, PlanConfig::bf16(MasterMode::Int8)).unwrap(),
        Target::Hip,
    )
    .unwrap();
    let out = hipcc("bf16_24", &bf16);
    if has_bf16_header {
        assert!(
            out.status.success(),
            "hipcc rejected the bf16 kernel:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("'hip/hip_bf16.h' file not found"),
            "{stderr}"
        );
    }
}

/// The opt-in approximate arithmetic changes only how CUDA divides and takes roots:
/// `__fdividef` and `rsqrt` in place of the correctly rounded operators and their
/// zero shortcuts. HIP (cubecl-hip has no fast-math support) keeps exact ones.
#[test]
fn approximate_arithmetic_uses_the_fast_intrinsics_on_cuda_only() {
    use flashopt_cubecl::codegen::bindings::Arithmetic;
    use flashopt_cubecl::codegen::emit::emit_shaped;

    let plan = flashopt::ir::compile(
        &optimizers::by_name("adamw").unwrap(),
        PlanConfig::bf16(MasterMode::Int8),
    )
    .unwrap();
    let approximate = KernelShape::default().with_arithmetic(Arithmetic::Approximate);
    let fast = emit_shaped(&plan, Target::Cuda, approximate).unwrap();
    let exact = emit(&plan, Target::Cuda).unwrap();
    // AdamW-24: 2 divisions by per-element values and 2 square roots per element, 4
    // elements per unit, and the reciprocals of the two group scales once per unit
    // (the other divisions are by reciprocals: `passes::reciprocals`).
    assert_eq!(fast.matches("__fdividef(").count(), 10, "{fast}");
    assert_eq!(fast.matches("rsqrt(").count(), 8);
    assert_eq!(fast.matches("= sqrt(").count(), 0);
    assert_eq!(exact.matches("__fdividef(").count(), 0);
    assert_eq!(exact.matches("rsqrt(").count(), 0);
    assert_eq!(exact.matches("= sqrt(").count(), 8);
    let hip = emit_shaped(&plan, Target::Hip, approximate).unwrap();
    assert_eq!(hip.matches("__fdividef(").count(), 0);
}

/// The variant that steps several tensors' gradients in one launch binds one gradient
/// buffer per region and reads each under its region's condition; the one-region
/// kernel is unchanged by it.
#[test]
fn gradient_regions_bind_a_buffer_each() {
    use flashopt_cubecl::codegen::bindings::MAX_GRADIENT_REGIONS;
    use flashopt_cubecl::codegen::emit::emit_shaped;

    let plan = flashopt::ir::compile(
        &optimizers::by_name("adamw").unwrap(),
        PlanConfig::bf16(MasterMode::Int8),
    )
    .unwrap();
    let one = emit(&plan, Target::Cuda).unwrap();
    assert_eq!(
        one.matches("const __nv_bfloat16_4* __restrict__").count(),
        1
    );
    for (target, gradient) in [
        (Target::Cuda, "const __nv_bfloat16_4* __restrict__"),
        (Target::Hip, "const __hip_bfloat16_4* __restrict__"),
    ] {
        let shape = KernelShape::default()
            .with_gradient_regions(MAX_GRADIENT_REGIONS)
            .unwrap();
        let source = emit_shaped(&plan, target, shape).unwrap();
        assert_eq!(
            source.matches(gradient).count(),
            MAX_GRADIENT_REGIONS,
            "{target:?}"
        );
        // Each region's load sits in its own conditional block.
        assert!(
            source.matches("\nif (").count() >= MAX_GRADIENT_REGIONS,
            "{target:?}"
        );
    }
}

/// A kernel shape is built only through its checks: no shape the kernel cannot run
/// (zero or uneven lanes would divide by zero or skip elements).
#[test]
fn kernel_shapes_the_kernel_cannot_run_are_refused() {
    use flashopt_cubecl::codegen::bindings::MAX_GRADIENT_REGIONS;
    for lanes in [0, 1, 3, 5, 64] {
        assert_eq!(KernelShape::new(lanes), None, "{lanes} lanes");
    }
    for lanes in [4, 8, 16, 32] {
        let shape = KernelShape::new(lanes).unwrap();
        assert_eq!(
            (shape.lanes_per_unit(), shape.units_per_group()),
            (lanes, 32 / lanes)
        );
    }
    let shape = KernelShape::default();
    assert_eq!(shape.with_gradient_regions(0), None);
    assert_eq!(shape.with_gradient_regions(MAX_GRADIENT_REGIONS + 1), None);
    assert_eq!(
        shape
            .with_gradient_regions(MAX_GRADIENT_REGIONS)
            .map(KernelShape::gradient_regions),
        Some(MAX_GRADIENT_REGIONS)
    );
}

/// A parameter group's host scalars are read as 16-byte vectors, one load per four
/// (AdamW's 14 were 14 loads per unit, more than its data loads): the binding is a
/// vector of four, each group's scalars padded to whole vectors and no further.
#[test]
fn host_scalars_are_read_four_at_a_time() {
    for (name, label, config) in configs() {
        let plan = flashopt::ir::compile(&optimizers::by_name(&name).unwrap(), config).unwrap();
        let (count, stride) = (plan.scalar_count(), scalar_stride(&plan));
        assert_eq!(stride % SCALAR_VECTOR, 0, "{name} {label}");
        assert!(
            stride >= count.max(1) && stride < count.max(1) + SCALAR_VECTOR,
            "{name} {label}: {count} scalars padded to {stride}"
        );
        let binding = slot(&buffers(&plan, KernelShape::default()), Binding::Scalars);
        let source = emit(&plan, Target::Cuda).unwrap();
        assert!(
            source.contains(&format!("const float_4* __restrict__ buffer_{binding}")),
            "{name} {label}: the scalar binding is not a vector of four"
        );
        assert_eq!(
            source.matches(&format!("= buffer_{binding}[")).count(),
            stride / SCALAR_VECTOR,
            "{name} {label}: one load per four scalars"
        );
    }
}

/// Every pass of the reducing optimizers compiles for both targets: the phase
/// kernels shuffle f64 group values across a group's units and write one per group,
/// and neither they nor the step store what the other stores.
#[test]
fn reduction_phase_kernels() {
    use flashopt_cubecl::codegen::emit::emit_pass;
    for name in optimizers::REDUCING_NAMES {
        let plan = flashopt::ir::compile(
            &optimizers::by_name(name).unwrap(),
            PlanConfig::bf16(MasterMode::Int8),
        )
        .unwrap();
        let layout = buffers(&plan, KernelShape::default());
        let partials = slot(&layout, Binding::Partials(0));
        let partials_array = format!("buffer_{partials}[");
        for target in [Target::Cuda, Target::Hip] {
            let phase = emit_pass(&plan, 0, target, KernelShape::default()).unwrap();
            let step = emit_pass(&plan, 1, target, KernelShape::default()).unwrap();
            assert!(
                phase.contains("double"),
                "{name} {target:?}: f64 terms\n{phase}"
            );
            assert!(
                phase.contains(&partials_array) && !step.contains(&partials_array),
                "{name} {target:?}: only the phase writes the partial values\n{phase}"
            );
            // The phase stores no part; the step stores the parameter.
            let param = format!("buffer_{}[", slot(&layout, Binding::Part(0)));
            let stores = |s: &str| s.lines().any(|l| l.trim_start().starts_with(&param));
            assert!(!stores(&phase) && stores(&step), "{name} {target:?}");
        }
    }
}

/// `tensor_max`'s term keeps its `+ 0.0` in f64 (-0 becomes +0 before the maximum,
/// as `reduction::term` does): neither cubecl nor the source drops it.
#[test]
fn the_maximum_adds_its_zero_in_f64() {
    use flashopt::ir::def::{OptimizerDef, Range, call, name};
    use flashopt_cubecl::codegen::emit::emit_pass;
    let mut def = OptimizerDef::new("max_scaled");
    def.hyper("lr", 0.1, Range::at_least(0.0));
    def.assign(
        "p",
        name("p") - name("lr") * name("g") / call("tensor_max", vec![name("g") * name("g")]),
    );
    let plan = flashopt::ir::compile(&def, PlanConfig::f32_params()).unwrap();
    let phase = emit_pass(&plan, 0, Target::Cuda, KernelShape::default()).unwrap();
    assert!(phase.contains("+ double(0.0)"), "{phase}");
}

/// Values per row and per column have kernels: every pass of a row or column
/// reduction alone, of Adam-mini and of Adafactor emits for both targets and every
/// kernel shape; a pass that reduces over columns meets in shared memory (a barrier),
/// the others do not.
#[test]
fn rows_and_columns_emit_for_every_pass_and_shape() {
    use flashopt::ir::def::{OptimizerDef, Range, call, float, name};
    use flashopt_cubecl::codegen::bindings::tiled;
    use flashopt_cubecl::codegen::emit::emit_pass;
    let normalized = |reduction: &str| {
        let mut def = OptimizerDef::new("normalized");
        def.hyper("lr", 0.1, Range::at_least(0.0));
        let rms = call(reduction, vec![name("g")]);
        def.assign(
            "p",
            name("p") - name("lr") * name("g") / (rms + float(1e-8)),
        );
        def
    };
    let config = PlanConfig::bf16(MasterMode::Int8);
    let compile = |def| flashopt::ir::compile(&def, config).unwrap();
    let mut tiled_passes = 0;
    for plan in [
        compile(normalized("row_rms")),
        compile(normalized("col_rms")),
        compile(optimizers::by_name("adam_mini").unwrap()),
        compile(optimizers::by_name("adafactor").unwrap()),
    ] {
        for target in [Target::Cuda, Target::Hip] {
            for lanes in [4, 8, 16, 32] {
                let shape = KernelShape::new(lanes).unwrap();
                for pass in 0..=plan.phases.len() {
                    let source = emit_pass(&plan, pass, target, shape).unwrap();
                    assert!(source.contains("flashopt_"), "{source}");
                    let barrier = source.contains("__syncthreads");
                    assert_eq!(barrier, tiled(&plan, pass), "{source}");
                    tiled_passes += usize::from(tiled(&plan, pass));
                }
            }
        }
    }
    // `col_rms`'s phase and Adafactor's first, at two targets and four shapes.
    assert_eq!(tiled_passes, 2 * 2 * 4);
}
