//! The GPU side: copy ceiling, step times, device bytes.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use flashopt::GpuOptimizer;
use flashopt::ir::Plan;
use flashopt::ir::interp::{GradBuf, HostTensor, PartData};
use flashopt::ir::layout::Shape;
use flashopt::optimizers::{
    Adafactor, Adam, AdamMini, AdamW, CautiousAdamW, Lamb, Lion, Muon, Sgd, SgdW,
};
use flashopt::{MasterMode, NearestRounding, OptimizerSpec, PlanConfig};
use flashopt_cubecl::codegen::bindings::{Arithmetic, KernelShape};
use flashopt_cubecl::cubecl;
use flashopt_cubecl::cubecl::cuda::CudaRuntime;
use flashopt_cubecl::cubecl::hip::HipRuntime;
use flashopt_cubecl::cubecl::prelude::*;
use flashopt_cubecl::device::DeviceRuntime;
use flashopt_cubecl::device::gemm;
use half::bf16;

use crate::workloads::{self, Workload};

const WARMUP_BATCHES: usize = 3;
const BATCHES: usize = 21;
/// Steps per timed batch: back-to-back launches between two device syncs, so the host
/// round trip of a sync is spread over many steps.
const STEPS_PER_BATCH: usize = 10;
/// A call that takes longer than this alone (Muon's step on a large matrix, a GEMM-
/// bound tenth of a second) is timed in [`SLOW_BATCHES`] batches of
/// [`SLOW_STEPS_PER_BATCH`] after that first call, where the sync's round trip is
/// negligible anyway.
const SLOW_CALL_S: f64 = 0.02;
const SLOW_BATCHES: usize = 5;
const SLOW_STEPS_PER_BATCH: usize = 2;

#[cube(launch_unchecked)]
fn copy_kernel(input: &Array<Vector<u32, Const<4>>>, output: &mut Array<Vector<u32, Const<4>>>) {
    if ABSOLUTE_POS < input.len() {
        output[ABSOLUTE_POS] = input[ABSOLUTE_POS];
    }
}

fn sync<R: DeviceRuntime>(client: &ComputeClient<R>) {
    cubecl::future::block_on(client.sync()).expect("device sync");
}

/// Median seconds per call of `f`, timed in batches between device syncs.
fn time_per_call<R: DeviceRuntime>(client: &ComputeClient<R>, f: impl FnMut()) -> f64 {
    time_and_enqueue(client, f).0
}

/// The median seconds per call of `f`, and the median host seconds per call spent
/// before the batch's final sync (queuing its work): where the second comes near the
/// first, the host, not the GPU, sets the pace.
fn time_and_enqueue<R: DeviceRuntime>(
    client: &ComputeClient<R>,
    mut f: impl FnMut(),
) -> (f64, f64) {
    sync(client);
    let first = Instant::now();
    f();
    sync(client);
    let (warmup, batches, steps) = if first.elapsed().as_secs_f64() > SLOW_CALL_S {
        (0, SLOW_BATCHES, SLOW_STEPS_PER_BATCH)
    } else {
        (WARMUP_BATCHES, BATCHES, STEPS_PER_BATCH)
    };
    let mut times = Vec::with_capacity(batches);
    let mut queued = Vec::with_capacity(batches);
    for batch in 0..warmup + batches {
        sync(client);
        let start = Instant::now();
        for _ in 0..steps {
            f();
        }
        let enqueued = start.elapsed().as_secs_f64();
        sync(client);
        if batch >= warmup {
            times.push(start.elapsed().as_secs_f64() / steps as f64);
            queued.push(enqueued / steps as f64);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(times), median(queued))
}

/// Read + write GB/s of a 16-byte-vector copy of 2 GiB.
fn copy_gbps<R: DeviceRuntime>(client: &ComputeClient<R>) -> f64 {
    let bytes = 2usize << 30;
    let vectors = bytes / 16;
    let a = client.create_from_slice(&vec![1u8; bytes]);
    let b = client.empty(bytes);
    let t = time_per_call(client, || unsafe {
        copy_kernel::launch_unchecked::<R>(
            client,
            CubeCount::Static((vectors as u32).div_ceil(256), 1, 1),
            CubeDim::new_1d(256),
            ArrayArg::from_raw_parts(a.clone(), vectors * 4),
            ArrayArg::from_raw_parts(b.clone(), vectors * 4),
        );
    });
    2.0 * bytes as f64 / t / 1e9
}

/// A fresh optimizer state as flashoptim starts one: bf16 weights, zero corrections,
/// zero states.
fn fresh_tensor(plan: &Plan, shape: Shape, seed: usize) -> HostTensor {
    let weight = |j: usize| bf16::from_f32((((j + seed) % 2003) as f32 - 1001.0) * 1e-3);
    let mut t = HostTensor::zeros(plan, shape);
    t.parts[0] = PartData::Bf16((0..shape.len).map(weight).collect());
    t
}

pub struct Measured {
    pub ms: f64,
    pub model_gbps: f64,
    pub device_bytes_per_param: f64,
}

fn measure<R: DeviceRuntime, S: OptimizerSpec>(
    client: &ComputeClient<R>,
    spec: &S,
    master: MasterMode,
    workload: &Workload,
    grads: &[Vec<bf16>],
    shape: KernelShape,
) -> Result<Measured, String> {
    let setup = Instant::now();
    let mut phases: Vec<(&str, f64)> = Vec::new();
    let mut lap = {
        let mut last = Instant::now();
        move |name: &'static str, phases: &mut Vec<(&str, f64)>| {
            phases.push((name, last.elapsed().as_secs_f64()));
            last = Instant::now();
        }
    };
    let plan = S::plan(PlanConfig::bf16(master)).map_err(|e| e.to_string())?;
    let bytes: u64 = workload
        .tensors
        .iter()
        .map(|&shape| plan.bytes_for(shape))
        .map(|(r, w)| r + w)
        .sum();
    let tensors: Vec<(String, HostTensor)> = workload
        .tensors
        .iter()
        .enumerate()
        .map(|(i, &shape)| (format!("t{i}"), fresh_tensor(&plan, shape, i)))
        .collect();
    let hyper = spec.hyper_values().map_err(|e| e.to_string())?;
    lap("host state", &mut phases);
    let mut opt =
        GpuOptimizer::from_host(client.clone(), plan, hyper, tensors).map_err(|e| e.to_string())?;
    opt.set_kernel_shape(shape);
    // The steps reuse one set of gradients, which after the first step count as
    // written on the device: the NaN/Inf scan would run before each. The bench times
    // the fused step alone; the GPU tests (tests/gpu/guards.rs) check the scan and
    // clipping.
    opt.set_check_device_grads(false);
    sync(client);
    lap("upload state", &mut phases);
    let bufs: Vec<GradBuf<'_>> = grads.iter().map(|g| GradBuf::Bf16(g)).collect();
    opt.write_grads(&bufs).map_err(|e| e.to_string())?;
    sync(client);
    lap("upload grads", &mut phases);
    let timing = Instant::now();
    let step = |opt: &mut GpuOptimizer<R>| {
        assert!(
            opt.step().expect("step").applied(),
            "bench gradients are finite"
        );
    };
    let t = time_per_call(client, || step(&mut opt));
    let timed = timing.elapsed().as_secs_f64();
    // The same step with the device NaN/Inf scan before it (one reduction pass over
    // the gradients and a read of its partial sums): what a trainer whose gradients
    // are written on the device pays.
    opt.set_check_device_grads(true);
    let checked = time_per_call(client, || step(&mut opt));
    opt.set_check_device_grads(false);
    // The check's reduction pass alone, back to back (no read of its partial sums):
    // the share of the gradients' read bandwidth it reaches.
    let reduction = time_per_call(client, || {
        opt.launch_grad_reduction();
    });
    let gradient_buffer_bytes = opt.grad_buffer().size() as f64;
    let downloaded: usize = {
        let start = Instant::now();
        let state = opt.download();
        phases.push(("download state", start.elapsed().as_secs_f64()));
        state
            .iter()
            .flat_map(|(_, t)| &t.parts)
            .map(|p| p.len() * p.storage().size_bytes())
            .sum()
    };
    let grad_bytes = workload.params() as f64 * 2.0;
    let device_bytes = opt.device_bytes();
    let state_bytes = device_bytes as f64 - grad_bytes;
    let in_place = time_in_place(client, &mut opt, grads);
    let rate = |name: &str, bytes: f64| {
        let s = phases.iter().find(|(n, _)| *n == name).map_or(0.0, |p| p.1);
        format!("{name} {s:.2} s = {:.1} GB/s", bytes / s / 1e9)
    };
    eprintln!(
        "  ({} {master:?} {} {:?}: setup {:.1} s [host state {:.1} s, {}, {}, {}], timing {timed:.1} s; \
         step with the device gradient check {:.4} ms, check {:.4} ms = {:.0} GB/s of gradients, \
         its reduction pass alone {:.4} ms = {:.0} GB/s; \
         gradients read in place (up to 8 tensors per launch, no gradient buffer: {:.3} bytes per parameter): \
         step {:.4} ms (host {:.4} ms), with the device gradient check {:.4} ms (host {:.4} ms))",
        S::NAME,
        workload.name,
        shape.arithmetic(),
        timing.duration_since(setup).as_secs_f64(),
        phases[0].1,
        rate("upload state", state_bytes),
        rate("upload grads", grad_bytes),
        rate("download state", downloaded as f64),
        checked * 1e3,
        (checked - t) * 1e3,
        grad_bytes / (checked - t) / 1e9,
        reduction * 1e3,
        gradient_buffer_bytes / reduction / 1e9,
        in_place.bytes_per_param,
        in_place.ms,
        in_place.host_ms,
        in_place.checked_ms,
        in_place.checked_host_ms,
    );
    Ok(Measured {
        ms: t * 1e3,
        model_gbps: bytes as f64 / t / 1e9,
        device_bytes_per_param: device_bytes as f64 / workload.params() as f64,
    })
}

struct InPlace {
    ms: f64,
    /// Host time per step before the sync (the launches queued, and for the check its
    /// read of the partial sums).
    host_ms: f64,
    checked_ms: f64,
    checked_host_ms: f64,
    bytes_per_param: f64,
}

/// The step reading each tensor's gradient from a buffer of its own, as a trainer
/// leaves them (`step_with_grads`), with the flat gradient buffer released: without
/// and with the device gradient check. Leaves `opt` without its gradient buffer.
fn time_in_place<R: DeviceRuntime>(
    client: &ComputeClient<R>,
    opt: &mut GpuOptimizer<R>,
    grads: &[Vec<bf16>],
) -> InPlace {
    let handles: Vec<_> = grads
        .iter()
        .map(|g| {
            let bytes: Vec<u8> = g.iter().flat_map(|x| x.to_le_bytes()).collect();
            client.create_from_slice(&bytes)
        })
        .collect();
    let refs: Vec<_> = handles.iter().collect();
    opt.release_grad_buffer();
    let params: usize = grads.iter().map(Vec::len).sum();
    let bytes_per_param = opt.device_bytes() as f64 / params as f64;
    let step = |opt: &mut GpuOptimizer<R>| {
        let outcome = opt.step_with_grads(&refs).expect("step");
        assert!(outcome.applied(), "bench gradients are finite");
    };
    opt.set_check_device_grads(false);
    let (plain, plain_host) = time_and_enqueue(client, || step(opt));
    opt.set_check_device_grads(true);
    let (checked, checked_host) = time_and_enqueue(client, || step(opt));
    opt.set_check_device_grads(false);
    InPlace {
        ms: plain * 1e3,
        host_ms: plain_host * 1e3,
        checked_ms: checked * 1e3,
        checked_host_ms: checked_host * 1e3,
        bytes_per_param,
    }
}

fn dispatch<R: DeviceRuntime>(
    client: &ComputeClient<R>,
    optimizer: &str,
    master: MasterMode,
    workload: &Workload,
    grads: &[Vec<bf16>],
    shape: KernelShape,
) -> Result<Measured, String> {
    match optimizer {
        "AdamW" => measure(client, &AdamW::default(), master, workload, grads, shape),
        "AdamW-flashoptim" => measure(
            client,
            &AdamW {
                bound_momentum: false,
                ..AdamW::default()
            },
            master,
            workload,
            grads,
            shape,
        ),
        "Adam" => measure(client, &Adam::default(), master, workload, grads, shape),
        "Lion" => measure(client, &Lion::default(), master, workload, grads, shape),
        "Lion-flashoptim" => measure(
            client,
            &NearestRounding(Lion::default()),
            master,
            workload,
            grads,
            shape,
        ),
        "SGD" => measure(client, &sgd(), master, workload, grads, shape),
        "SGD-flashoptim" => measure(
            client,
            &NearestRounding(sgd()),
            master,
            workload,
            grads,
            shape,
        ),
        "SGDW" => measure(
            client,
            &SgdW {
                momentum: 0.9,
                ..SgdW::default()
            },
            master,
            workload,
            grads,
            shape,
        ),
        "Lamb" => measure(client, &Lamb::default(), master, workload, grads, shape),
        "AdamMini" => measure(client, &AdamMini::default(), master, workload, grads, shape),
        "Adafactor" => measure(
            client,
            &Adafactor::default(),
            master,
            workload,
            grads,
            shape,
        ),
        "CautiousAdamW" => measure(
            client,
            &CautiousAdamW::default(),
            master,
            workload,
            grads,
            shape,
        ),
        "Muon" => measure(client, &Muon::default(), master, workload, grads, shape),
        other => Err(format!("no optimizer `{other}`")),
    }
}

/// The tensors of `workload` that `optimizer` steps, with their gradients: Muon
/// steps the matrices (`torch.optim.Muon` takes nothing else), the others all.
fn stepped_by(
    optimizer: &str,
    workload: &Workload,
    grads: &[Vec<bf16>],
) -> (Workload, Vec<Vec<bf16>>) {
    let keep: Vec<usize> = (0..workload.tensors.len())
        .filter(|&i| optimizer != "Muon" || workload.tensors[i].rows() > 1)
        .collect();
    let stepped = Workload {
        name: workload.name,
        tensors: keep.iter().map(|&i| workload.tensors[i]).collect(),
    };
    (stepped, keep.iter().map(|&i| grads[i].clone()).collect())
}

/// SGD with momentum 0.9, as the workloads step it.
fn sgd() -> Sgd {
    Sgd {
        momentum: 0.9,
        ..Sgd::default()
    }
}

/// The `-flashoptim` variants are flashoptim's arithmetic: AdamW without its momentum
/// bound, Lion and SGD with their momentum codes rounded to nearest (not dithered).
pub const OPTIMIZERS: [&str; 13] = [
    "AdamW",
    "Adam",
    "Lion",
    "SGD",
    "SGDW",
    "AdamW-flashoptim",
    "Lion-flashoptim",
    "SGD-flashoptim",
    "Lamb",
    "CautiousAdamW",
    "AdamMini",
    "Adafactor",
    "Muon",
];
pub const MASTERS: [(&str, MasterMode); 3] = [
    ("24", MasterMode::Int8),
    ("32", MasterMode::Int16),
    ("none", MasterMode::None),
];

pub const CSV_HEADER: &str = "optimizer,master,workload,params,tensors,lanes_per_unit,ms,model_gbps,pct_of_copy,device_bytes_per_param,arithmetic";

/// What `run` measures: each filter keeps everything when empty.
#[derive(Default)]
pub struct Selection {
    pub workloads: Vec<String>,
    pub optimizers: Vec<String>,
    pub masters: Vec<String>,
    /// Lanes per unit to measure (the default shape when empty).
    pub lanes: Vec<usize>,
    /// `exact`, `approximate` (exact only when empty).
    pub arithmetic: Vec<String>,
    /// `cuda` (when `None`) or `hip`.
    pub runtime: Option<String>,
    /// The matrix stage's routine, one of `gemm::STRATEGIES` (the default when `None`).
    pub matrix_gemm: Option<String>,
}

fn keeps(filter: &[String], name: &str) -> bool {
    filter.is_empty() || filter.iter().any(|f| f == name)
}

/// The runtime's client, or why there is none (asked of the driver first: cubecl
/// panics inside its bindings where no driver or device exists).
fn client<R: DeviceRuntime>(needs: &str) -> Result<ComputeClient<R>, String> {
    flashopt_cubecl::device::probe::devices(R::TARGET)
        .map_err(|e| format!("`run` needs {needs}: {e}; `report` works anywhere"))?;
    Ok(R::client(&Default::default()))
}

/// Measure on CUDA (`--runtime cuda`, the default) or HIP (`--runtime hip`: the same
/// code built for cubecl-hip; no AMD GPU has run it).
pub fn run(out: &Path, selection: &Selection) -> Result<(), String> {
    let workloads: Vec<&str> = workloads::all().iter().map(|w| w.name).collect();
    let masters: Vec<&str> = MASTERS.iter().map(|(m, _)| *m).collect();
    for (flag, filter, known) in [
        ("--only", &selection.workloads, &workloads[..]),
        ("--optimizers", &selection.optimizers, &OPTIMIZERS[..]),
        ("--masters", &selection.masters, &masters[..]),
    ] {
        if let Some(unknown) = filter.iter().find(|f| !known.contains(&f.as_str())) {
            return Err(format!("{flag} {unknown}: not one of {known:?}"));
        }
    }
    if let Some(name) = &selection.matrix_gemm {
        if !gemm::set_strategy(name) {
            return Err(format!(
                "--matrix-gemm {name}: not one of {:?}",
                gemm::STRATEGIES
            ));
        }
    }
    match selection.runtime.as_deref().unwrap_or("cuda") {
        "cuda" => run_on::<CudaRuntime>(out, selection, "a CUDA GPU and driver"),
        "hip" => run_on::<HipRuntime>(out, selection, "an AMD GPU and ROCm"),
        other => Err(format!("--runtime {other}: cuda or hip")),
    }
}

fn run_on<R: DeviceRuntime>(out: &Path, selection: &Selection, needs: &str) -> Result<(), String> {
    let lanes: Vec<KernelShape> = if selection.lanes.is_empty() {
        vec![KernelShape::default()]
    } else {
        selection
            .lanes
            .iter()
            .map(|&l| KernelShape::new(l).ok_or(format!("--lanes {l}: 4, 8, 16 or 32")))
            .collect::<Result<_, _>>()?
    };
    let arithmetic: Vec<Arithmetic> = if selection.arithmetic.is_empty() {
        vec![Arithmetic::Exact]
    } else {
        selection
            .arithmetic
            .iter()
            .map(|a| {
                Arithmetic::ALL
                    .into_iter()
                    .find(|x| x.name() == a)
                    .ok_or(format!("--arithmetic {a}: exact or approximate"))
            })
            .collect::<Result<_, _>>()?
    };
    let shapes: Vec<KernelShape> = arithmetic
        .iter()
        .flat_map(|&a| lanes.iter().map(move |s| s.with_arithmetic(a)))
        .collect();
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let client = client::<R>(needs)?;
    let copy = copy_gbps(&client);
    println!("device-to-device copy (2 GiB, read + write): {copy:.0} GB/s");
    let path = out.join("flashopt.csv");
    let mut csv = format!("# copy_gbps={copy:.1}\n{CSV_HEADER}\n");
    let mut row = |opt: &str, master: &str, w: &Workload, shape: KernelShape, m: &Measured| {
        let line = format!(
            "{opt},{master},{},{},{},{},{:.4},{:.1},{:.2},{:.3},{}",
            w.name,
            w.params(),
            w.tensors.len(),
            shape.lanes_per_unit(),
            m.ms,
            m.model_gbps,
            100.0 * m.model_gbps / copy,
            m.device_bytes_per_param,
            shape.arithmetic().name(),
        );
        println!("{line}");
        writeln!(csv, "{line}").expect("string write");
        // Rewritten after every row: a run cut short keeps what it measured.
        if let Err(e) = std::fs::write(&path, &csv) {
            eprintln!("{}: {e}", path.display());
        }
    };
    let workloads: Vec<Workload> = workloads::all()
        .into_iter()
        .filter(|w| keeps(&selection.workloads, w.name))
        .collect();
    let gradients = |w: &Workload| -> Vec<Vec<bf16>> {
        w.tensors
            .iter()
            .map(|s| {
                (0..s.len)
                    .map(|j| bf16::from_f32(((j % 97) as f32 - 48.0) * 1e-4))
                    .collect()
            })
            .collect()
    };
    for w in &workloads {
        let grads = gradients(w);
        for &shape in &shapes {
            for opt in OPTIMIZERS
                .iter()
                .filter(|o| keeps(&selection.optimizers, o))
            {
                let (w, grads) = &stepped_by(opt, w, &grads);
                for (label, master) in MASTERS.iter().filter(|(l, _)| keeps(&selection.masters, l))
                {
                    let m = dispatch(&client, opt, *master, w, grads, shape)?;
                    row(opt, label, w, shape, &m);
                }
            }
        }
    }
    println!("wrote {}", path.display());
    Ok(())
}
