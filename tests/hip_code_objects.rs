//! Every shipped optimizer's HIP kernel, in every master mode and parameter dtype, and
//! the approximate and multi-gradient-region variants the runtime can launch,
//! compiled to AMDGPU code objects for MI300 (gfx942) and MI200 (gfx90a) by the
//! private toolchain of `scripts/hip_toolchain.sh` (clang 19, HIP 6.4 headers, ROCm
//! device libraries; no AMD GPU or ROCm install needed). Fails on a compile error or a
//! register spill; the registers and scratch of each kernel are a snapshot.
//!
//! The toolchain is found through `FLASHOPT_HIP_TOOLCHAIN` (the script's folder). CI
//! sets it and `FLASHOPT_REQUIRE_HIP=1`, so there the test cannot skip; where neither
//! was set when the tests were built, `cargo test` lists it as ignored (build.rs).

use std::path::{Path, PathBuf};
use std::process::Command;

use flashopt::ir::HyperValues;
use flashopt::ir::interp::{GradBuf, HostTensor};
use flashopt::optimizers;
use flashopt::{Arithmetic, KernelShape};
use flashopt::{FloatDtype, MasterMode, PlanConfig};
use flashopt::{GpuOptimizer, Optimizer};
use flashopt_cubecl::codegen::bindings::MAX_GRADIENT_REGIONS;
use flashopt_cubecl::codegen::emit::{Target, emit, emit_pass, emit_shaped};
use flashopt_cubecl::cubecl::client::ComputeClient;
use flashopt_cubecl::cubecl::hip::HipRuntime;

const ARCHS: [&str; 2] = ["gfx942", "gfx90a"];
/// ELF machine number of AMDGPU code objects.
const EM_AMDGPU: u16 = 224;

/// The formats `scripts/nvrtc_check.py` compiles for CUDA.
fn configs() -> Vec<(&'static str, PlanConfig)> {
    let with = |param, grad, master| PlanConfig {
        param,
        grad,
        master,
    };
    use FloatDtype::{F16, F32};
    vec![
        ("bf16 24", PlanConfig::bf16(MasterMode::Int8)),
        ("bf16 32", PlanConfig::bf16(MasterMode::Int16)),
        ("bf16 none", PlanConfig::bf16(MasterMode::None)),
        ("f16 24", with(F16, F16, MasterMode::Int8)),
        ("f16 32, f32 grad", with(F16, F32, MasterMode::Int16)),
        ("f32", with(F32, F32, MasterMode::None)),
    ]
}

/// What the kernel's AMDGPU metadata says about its resources.
#[derive(Clone, Debug)]
struct Resources {
    vgprs: u32,
    sgprs: u32,
    scratch: u32,
    vgpr_spills: u32,
    sgpr_spills: u32,
}

/// The first `.name: value` of the `amdhsa.kernels` metadata in an assembly listing.
fn metadata(assembly: &str, name: &str) -> u32 {
    assembly
        .lines()
        .find_map(|l| l.trim().strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{name}` in the kernel's metadata"))
}

fn clang(toolchain: &Path, source: &Path, arch: &str, args: &[&str], out: &Path) {
    let result = Command::new(toolchain.join("clang++"))
        .args(["-x", "hip", "-std=c++17", "-O3", "--offload-device-only"])
        .arg(format!("--offload-arch={arch}"))
        .arg(format!("--hip-path={}", toolchain.join("hip").display()))
        .arg(format!(
            "--rocm-device-lib-path={}",
            toolchain.join("bitcode").display()
        ))
        .args(args)
        .arg(source)
        .arg("-o")
        .arg(out)
        .output()
        .expect("run the toolchain's clang++");
    assert!(
        result.status.success(),
        "{} for {arch}:\n{}",
        source.display(),
        String::from_utf8_lossy(&result.stderr)
    );
}

/// Compile one kernel for `arch`: the assembly (its metadata) and the linked code
/// object, which must be an AMDGPU ELF file.
fn compile(toolchain: &Path, dir: &Path, label: &str, source: &str, arch: &str) -> Resources {
    let stem = dir.join(format!("{}-{arch}", label.replace([' ', ','], "_")));
    let hip = stem.with_extension("hip");
    std::fs::write(&hip, source).unwrap();
    let assembly = stem.with_extension("s");
    clang(toolchain, &hip, arch, &["-S"], &assembly);
    let object = stem.with_extension("co");
    clang(
        toolchain,
        &hip,
        arch,
        &["-c", "--no-gpu-bundle-output"],
        &object,
    );
    let elf = std::fs::read(&object).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF", "{label} {arch}: not an ELF file");
    assert_eq!(
        u16::from_le_bytes([elf[18], elf[19]]),
        EM_AMDGPU,
        "{label} {arch}: not an AMDGPU code object"
    );
    let text = std::fs::read_to_string(&assembly).unwrap();
    Resources {
        vgprs: metadata(&text, ".vgpr_count:"),
        sgprs: metadata(&text, ".sgpr_count:"),
        scratch: metadata(&text, ".private_segment_fixed_size:"),
        vgpr_spills: metadata(&text, ".vgpr_spill_count:"),
        sgpr_spills: metadata(&text, ".sgpr_spill_count:"),
    }
}

fn toolchain() -> Option<PathBuf> {
    std::env::var_os("FLASHOPT_HIP_TOOLCHAIN").map(PathBuf::from)
}

#[test]
#[cfg_attr(
    not(flashopt_hip_toolchain),
    ignore = "FLASHOPT_HIP_TOOLCHAIN was not set at build time (scripts/hip_toolchain.sh)"
)]
fn hip_kernels_compile_to_code_objects_without_spills() {
    let Some(toolchain) = toolchain() else {
        panic!("FLASHOPT_HIP_TOOLCHAIN is not set: the tests were built with it, run them with it")
    };
    let dir = std::env::temp_dir().join(format!("flashopt-hip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut jobs = Vec::new();
    for name in optimizers::NAMES {
        let def = optimizers::by_name(name).unwrap();
        let mut kernels = Vec::new();
        for (format, config) in configs() {
            let plan = flashopt::ir::compile(&def, config).unwrap();
            kernels.push((format.to_string(), emit(&plan, Target::Hip).unwrap()));
        }
        // The other kernels the runtime launches, as scripts/nvrtc_check.py compiles
        // them for CUDA: the opt-in approximate arithmetic, and the variant that reads
        // gradients from several buffers per launch (steps in place).
        let plan = flashopt::ir::compile(&def, PlanConfig::bf16(MasterMode::Int8)).unwrap();
        let approximate = KernelShape::default().with_arithmetic(Arithmetic::Approximate);
        let regions = KernelShape::default()
            .with_gradient_regions(MAX_GRADIENT_REGIONS)
            .unwrap();
        for (label, shape) in [
            ("bf16 24 approximate".to_string(), approximate),
            (
                format!("bf16 24, {MAX_GRADIENT_REGIONS} gradient regions"),
                regions,
            ),
        ] {
            kernels.push((label, emit_shaped(&plan, Target::Hip, shape).unwrap()));
        }
        for (format, source) in kernels {
            for arch in ARCHS {
                jobs.push((format!("{name} {format}"), source.clone(), arch));
            }
        }
    }
    // The optimizers that reduce over each tensor, Adam-mini over each row and
    // Adafactor over rows and columns: their phase kernels (plane shuffles of f64, and
    // for columns shared memory) and the kernels that sum each reduction over each
    // tensor, row or column.
    for name in optimizers::REDUCING_NAMES
        .into_iter()
        .chain(["adam_mini", "adafactor"])
    {
        let def = optimizers::by_name(name).unwrap();
        let plan = flashopt::ir::compile(&def, PlanConfig::bf16(MasterMode::Int8)).unwrap();
        let mut kernels = Vec::new();
        for pass in 0..=plan.phases.len() {
            let source = emit_pass(&plan, pass, Target::Hip, KernelShape::default()).unwrap();
            kernels.push((format!("bf16 24, pass {pass}"), source));
        }
        let sums = flashopt_cubecl::device::reductions::sources(&plan, Target::Hip).unwrap();
        for (k, source) in sums.into_iter().enumerate() {
            kernels.push((format!("reduction kernel {k}"), source));
        }
        for (format, source) in kernels {
            for arch in ARCHS {
                jobs.push((format!("{name} {format}"), source.clone(), arch));
            }
        }
    }
    // Two compiles per job, a second or so each: spread over the machine's cores.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(vec![None; jobs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((label, source, arch)) = jobs.get(i) else {
                        break;
                    };
                    let r = compile(&toolchain, &dir, label, source, arch);
                    results.lock().unwrap()[i] = Some(r);
                }
            });
        }
    });
    let mut table = String::from("| kernel | arch | VGPRs | SGPRs | scratch bytes |\n");
    table.push_str("| --- | --- | --- | --- | --- |\n");
    let mut spilled = Vec::new();
    for ((label, _, arch), r) in jobs.iter().zip(results.into_inner().unwrap()) {
        let r = r.expect("every job ran");
        if r.vgpr_spills > 0 || r.sgpr_spills > 0 {
            spilled.push(format!("{label} {arch}: {r:?}"));
        }
        table.push_str(&format!(
            "| {label} | {arch} | {} | {} | {} |\n",
            r.vgprs, r.sgprs, r.scratch
        ));
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        spilled.is_empty(),
        "register spills:\n{}",
        spilled.join("\n")
    );
    insta::assert_snapshot!("hip_code_objects", table);
}

/// The GPU optimizer builds for HIP: its API monomorphized for `HipRuntime` (compiled
/// by `cargo test` and clippy everywhere, never run: no AMD GPU here).
#[allow(dead_code)]
fn gpu_optimizer_builds_for_hip(
    client: ComputeClient<HipRuntime>,
    plan: flashopt::ir::Plan,
    hyper: HyperValues,
    tensors: Vec<(String, HostTensor)>,
    grads: &[GradBuf<'_>],
) {
    let mut opt = GpuOptimizer::from_host(client, plan, hyper, tensors).unwrap();
    opt.write_grads(grads).unwrap();
    opt.step().unwrap();
    opt.set_arithmetic(flashopt::Arithmetic::Approximate);
    let _ = opt.download();
    let _ = opt.save("/dev/null");
}

/// The burn adapter builds on burn's HIP backend too (compiled, never run).
#[allow(dead_code)]
fn burn_adapter_builds_for_hip(device: flashopt_cubecl::cubecl::hip::AmdDevice) {
    type B = flashopt_burn::cuda::CubeAutodiff<HipRuntime, f32, i32, u8>;
    let linear = burn::nn::LinearConfig::new(4, 4).init::<B>(&device);
    let (mut opt, linear) = flashopt_burn::HipOptimizer::new(
        &flashopt::optimizers::AdamW::default(),
        PlanConfig::bf16(MasterMode::Int8),
        linear,
    )
    .unwrap();
    let _ = opt
        .step(1e-3, linear, burn::optim::GradientsParams::new())
        .unwrap();
}
