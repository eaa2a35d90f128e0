//! The optimizer's exact inputs and outputs at chosen steps of a run, and their
//! replay on flashopt's CPU reference: where a loss spike comes from, element by
//! element. `scripts/flashoptim_replay.py` steps the same files with flashoptim.
//!
//! For a step `N` (1-based, the step whose update the next forward pass sees) the
//! capture folder gets `step-N-before.safetensors` (the optimizer's checkpoint before
//! the update), `step-N-grads.safetensors` (every gradient as the optimizer reads it,
//! in the plan's gradient dtype, metadata `lr` and `step`) and
//! `step-N-after.safetensors` (the checkpoint the GPU step left).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use flashopt::optimizers::AdamW;
use flashopt::runtime::health::zero_denominator_elements;
use flashopt::{CpuOptimizer, GradBuf, MasterMode, Optimizer, PlanConfig, TensorId};
use half::bf16;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// Diagnostics a flashopt run can take along the way.
#[derive(Clone, Debug)]
pub struct Diagnostics {
    /// The optimizer's inputs and outputs at chosen steps.
    pub capture: Option<Capture>,
    /// Count the elements in `state_health`'s failure state every this many steps
    /// (`health-<run>.csv` in `out`).
    pub health_every: Option<usize>,
    /// Compare Muon's 8-bit momentum with an f32 one every this many steps
    /// (`momentum-error-<run>.csv` in `out`).
    pub momentum_error_every: Option<usize>,
    pub out: PathBuf,
}

/// A run's diagnostics, called around each optimizer step.
pub struct Probe<'a> {
    diag: &'a Diagnostics,
    step: usize,
    health: String,
    momentum: Option<crate::momentum_error::MomentumError>,
}

impl<'a> Probe<'a> {
    pub fn new(diag: &'a Diagnostics) -> Probe<'a> {
        Probe {
            diag,
            step: 0,
            health: String::from("step,elements,tensors,worst_tensor,worst_elements\n"),
            momentum: diag
                .momentum_error_every
                .map(crate::momentum_error::MomentumError::new),
        }
    }

    fn capture(&self) -> Option<&'a Capture> {
        self.diag
            .capture
            .as_ref()
            .filter(|c| c.steps.contains(&self.step))
    }

    /// Before step `lr`'s update: the state and the gradients, if captured.
    pub fn before_step<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer>(
        &mut self,
        opt: &O,
        module: &M,
        grads: &GradientsParams,
        lr: f64,
    ) {
        self.step += 1;
        if let Some(c) = self.capture() {
            opt.save(c.path(self.step, "before"))
                .expect("save the state before the step");
            write_grads::<B, M>(&c.path(self.step, "grads"), module, grads, lr, self.step);
        }
    }

    /// Before the update of a Muon half (a split run): the momentum comparison.
    pub fn before_muon_step<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer>(
        &mut self,
        muon: &O,
        module: &M,
        grads: &GradientsParams,
    ) {
        if let Some(study) = &mut self.momentum {
            study.before_step::<B, M, O>(muon, module, grads);
        }
    }

    /// After the update of a Muon half: the momentum comparison.
    pub fn after_muon_step<O: Optimizer>(&mut self, muon: &O) {
        if let Some(study) = &mut self.momentum {
            study.after_step(muon);
        }
    }

    /// After the update: the state, if captured, and the health count.
    pub fn after_step<O: Optimizer>(&mut self, opt: &O) {
        if let Some(c) = self.capture() {
            opt.save(c.path(self.step, "after"))
                .expect("save the state after the step");
        }
        if let Some(every) = self.diag.health_every
            && self.step % every == 0
        {
            let found = opt.state_health();
            let total: usize = found.iter().map(|h| h.zero_denominators).sum();
            let worst = found.iter().max_by_key(|h| h.zero_denominators);
            let _ = writeln!(
                self.health,
                "{},{total},{},{},{}",
                self.step,
                found.len(),
                worst.map_or("", |h| h.tensor.as_str()),
                worst.map_or(0, |h| h.zero_denominators)
            );
        }
    }

    /// Writes `health-<label>.csv` if counted, `momentum-error-<label>.csv` if
    /// compared.
    pub fn finish(self, label: &str) {
        if self.diag.health_every.is_some() {
            let path = self.diag.out.join(format!("health-{label}.csv"));
            std::fs::write(&path, self.health).expect("write the health log");
        }
        if let Some(study) = self.momentum {
            study.finish(&self.diag.out, label);
        }
    }
}

/// Where and when to capture.
#[derive(Clone, Debug)]
pub struct Capture {
    pub dir: PathBuf,
    pub steps: Vec<usize>,
}

impl Capture {
    pub fn path(&self, step: usize, what: &str) -> PathBuf {
        self.dir.join(format!("step-{step}-{what}.safetensors"))
    }
}

struct HostGrads<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    out: HashMap<ParamId, Vec<f32>>,
    backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for HostGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let values = g.flatten::<1>(0, D - 1).into_data().convert::<f32>();
            self.out
                .insert(param.id, values.into_vec::<f32>().expect("f32 values"));
        }
    }
}

/// Every parameter's gradient on the host, as f32 values, by parameter id (those
/// without one left out), without taking them out of `grads`.
pub fn host_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> HashMap<ParamId, Vec<f32>> {
    let mut visitor = HostGrads::<B> {
        grads,
        out: HashMap::new(),
        backend: std::marker::PhantomData,
    };
    module.visit(&mut visitor);
    visitor.out
}

/// Every parameter's gradient rounded to bf16 (as the optimizer rounds a wider one),
/// in flashopt's order and by its names, without taking them out of `grads`; a
/// parameter without one gets zeros, as the optimizer gives it.
pub fn write_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    path: &Path,
    module: &M,
    grads: &GradientsParams,
    lr: f64,
    step: usize,
) {
    let mut host = host_grads::<B, M>(module, grads);
    let params = flashopt_burn::params::describe(module);
    let bytes: Vec<(String, Vec<u8>, usize)> = params
        .iter()
        .map(|p| {
            let values = host.remove(&p.id).unwrap_or(vec![0.0; p.len()]);
            let narrow: Vec<u8> = values
                .iter()
                .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
                .collect();
            (p.name.clone(), narrow, p.len())
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(name, b, n)| {
            let view = TensorView::new(Dtype::BF16, vec![*n], b).expect("a bf16 view");
            (name.clone(), view)
        })
        .collect();
    let meta = HashMap::from([
        ("lr".to_string(), format!("{lr:e}")),
        ("step".to_string(), step.to_string()),
    ]);
    safetensors::serialize_to_file(views, Some(meta), path).expect("write the gradients");
}

/// A CPU-reference AdamW-24 holding the checkpoint at `path` (tensor names and
/// lengths read from it; hyper-parameters and step count restored by the load).
fn cpu_from_checkpoint(path: &Path) -> (CpuOptimizer, Vec<(String, usize)>) {
    let bytes = std::fs::read(path).expect("read the checkpoint");
    let file = SafeTensors::deserialize(&bytes).expect("a safetensors file");
    let (_, meta) = SafeTensors::read_metadata(&bytes).expect("metadata");
    let meta = meta.metadata().clone().unwrap_or_default();
    let count: usize = meta["tensors"].parse().expect("tensor count");
    let tensors: Vec<(String, usize)> = (0..count)
        .map(|i| {
            let name = meta[&format!("tensor.{i}")].clone();
            let len = file
                .tensor(&format!("{name}::param"))
                .expect("a param")
                .shape()
                .iter()
                .product();
            (name, len)
        })
        .collect();
    let mut opt = CpuOptimizer::for_spec(&AdamW::default(), PlanConfig::bf16(MasterMode::Int8))
        .expect("AdamW-24");
    // The checkpoint's hyper-parameters (the step cap's among them) replace these.
    for (name, len) in &tensors {
        opt.add_tensor(name, &vec![0.0; *len]).expect("add");
    }
    opt.load(path).expect("load the checkpoint");
    (opt, tensors)
}

/// Exact Adam's largest `|m_hat| / sqrt(v_hat)` at step `t` from zero moments
/// (Cauchy-Schwarz; the cap the shipped AdamW applies).
fn adam_cap(b1: f64, b2: f64, t: f64) -> f64 {
    let r = b1 * b1 / b2;
    let geometric = if (r - 1.0).abs() < 1e-12 {
        t
    } else {
        (1.0 - r.powf(t)) / (1.0 - r)
    };
    (1.0 - b1) / (1.0 - b1.powf(t)) * ((1.0 - b2.powf(t)) / (1.0 - b2)).sqrt() * geometric.sqrt()
}

/// One value of a stored part of one tensor as f32 (a code as its integer, a scale
/// widened).
fn part_value(opt: &CpuOptimizer, id: TensorId, name: &str, k: usize) -> f32 {
    use flashopt::ir::interp::PartData;
    match opt.tensor(id).unwrap().part(opt.plan(), name) {
        Some(PartData::I8(c)) => f32::from(c[k]),
        Some(PartData::U8(c)) => f32::from(c[k]),
        Some(PartData::F16(c)) => c[k].to_f32(),
        other => panic!("part {name}: {other:?}"),
    }
}

/// Replays every captured step in `dir` on the CPU reference: the GPU's result
/// against the reference's, bit for bit, then the elements whose step exceeds exact
/// Adam's largest and what their stored states held. Writes `replay-step-N.md`.
pub fn replay(dir: &Path) -> bool {
    let mut steps: Vec<usize> = std::fs::read_dir(dir)
        .expect("read the capture folder")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("step-")?
                .strip_suffix("-before.safetensors")?
                .parse()
                .ok()
        })
        .collect();
    steps.sort();
    let mut all_equal = true;
    let capture = Capture {
        dir: dir.to_path_buf(),
        steps: steps.clone(),
    };
    for step in steps {
        let (report, equal) = replay_step(&capture, step);
        all_equal &= equal;
        print!("{report}");
        std::fs::write(dir.join(format!("replay-step-{step}.md")), report).expect("write");
    }
    all_equal
}

fn replay_step(capture: &Capture, step: usize) -> (String, bool) {
    // Stepped by the reference, and kept as it was (read twice: the CPU optimizer
    // does not clone).
    let (mut cpu, tensors) = cpu_from_checkpoint(&capture.path(step, "before"));
    let (before, _) = cpu_from_checkpoint(&capture.path(step, "before"));
    let (gpu_after, _) = cpu_from_checkpoint(&capture.path(step, "after"));
    let grad_bytes = std::fs::read(capture.path(step, "grads")).expect("read the gradients");
    let grad_file = SafeTensors::deserialize(&grad_bytes).expect("gradients");
    let (_, meta) = SafeTensors::read_metadata(&grad_bytes).expect("metadata");
    let meta = meta.metadata().clone().unwrap_or_default();
    let lr: f64 = meta["lr"].parse().expect("lr");
    let grads: Vec<Vec<bf16>> = tensors
        .iter()
        .map(|(name, _)| {
            let data = grad_file.tensor(name).expect("a gradient").data().to_vec();
            data.chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]))
                .collect()
        })
        .collect();
    cpu.set_learning_rate(lr).expect("lr");
    let bufs: Vec<GradBuf<'_>> = grads.iter().map(|g| GradBuf::Bf16(g)).collect();
    let outcome = cpu.step(&bufs).expect("CPU step");
    let hyper = |name: &str| {
        before
            .hyper(0)
            .get(name)
            .and_then(|v| v.as_f64())
            .expect(name)
    };
    let (b1, b2, wd) = (hyper("b1"), hyper("b2"), hyper("weight_decay"));
    let t = cpu.steps_taken() as f64;
    let cap = adam_cap(b1, b2, t);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Step {step} replayed on the CPU reference\n\nlr {lr:e}, optimizer step {t} (after the update), b1 {b1}, b2 {b2}, weight decay {wd}; exact Adam's largest |m_hat|/sqrt(v_hat) at this step: {cap:.4}; outcome {outcome:?}\n"
    );
    // The GPU's stored result against the reference's, part by part.
    let mut differing = 0usize;
    let mut total = 0usize;
    for (i, _) in tensors.iter().enumerate() {
        let (a, b) = (
            cpu.tensor(TensorId(i)).unwrap(),
            gpu_after.tensor(TensorId(i)).unwrap(),
        );
        for (pa, pb) in a.parts.iter().zip(&b.parts) {
            let (va, vb) = (pa.view(), pb.view());
            let count = pa.len();
            total += count;
            if pa != pb {
                differing += (0..count)
                    .filter(|&k| element(va, k) != element(vb, k))
                    .count();
            }
        }
    }
    let equal = differing == 0;
    let _ = writeln!(
        out,
        "The captured step (the GPU's, on a CUDA run) against the CPU reference's: {differing} of {total} stored values differ ({})\n",
        if equal { "bit-equal" } else { "NOT equal" }
    );
    // Elements whose step exceeds exact Adam's largest (plus the decay).
    let _ = writeln!(
        out,
        "| tensor | elements | steps over exact Adam's largest | over 10x it | largest step / lr | flagged by state_health before the step | of those over the bound, flagged |\n| --- | --- | --- | --- | --- | --- | --- |"
    );
    // (step / lr, tensor, element, master before)
    let mut worst: Vec<(f64, usize, usize, f32)> = Vec::new();
    let mut over_total = 0usize;
    let mut far_total = 0usize;
    let mut over_flagged = 0usize;
    for (i, (name, len)) in tensors.iter().enumerate() {
        let id = TensorId(i);
        let (m0, m1) = (before.master(id).unwrap(), cpu.master(id).unwrap());
        let flagged = flagged_elements(&before, id);
        let mut over = 0usize;
        let mut far_over = 0usize;
        let mut flagged_over = 0usize;
        let mut largest = 0f64;
        for k in 0..*len {
            let delta = (m1[k] as f64 - m0[k] as f64).abs();
            let ratio = delta / lr;
            largest = largest.max(ratio);
            if delta > lr * (cap * 1.001 + wd * (m0[k] as f64).abs()) + 1e-30 {
                over += 1;
                far_over += usize::from(ratio > 10.0 * cap);
                flagged_over += usize::from(flagged.contains(&k));
                worst.push((ratio, i, k, m0[k]));
            }
        }
        over_total += over;
        far_total += far_over;
        over_flagged += flagged_over;
        if over > 0 || !flagged.is_empty() {
            let _ = writeln!(
                out,
                "| `{name}` | {len} | {over} | {far_over} | {largest:.3e} | {} | {flagged_over} |",
                flagged.len()
            );
        }
    }
    let _ = writeln!(
        out,
        "\n{over_total} element(s) stepped further than exact Adam can ({far_total} over 10 times as far); {over_flagged} of them were flagged by `state_health` before the step.\n"
    );
    worst.sort_by(|a, b| b.0.total_cmp(&a.0));
    let _ = writeln!(
        out,
        "The largest steps (codes and f16 scales as stored before the step; `g` the bf16 gradient):\n\n| tensor | element | step / lr | g | master before | m code | m scale | v code | v scale | group's largest v code |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for &(ratio, i, k, master) in worst.iter().take(25) {
        let id = TensorId(i);
        let value = |part: &str, k: usize| part_value(&before, id, part, k);
        let group = k / 32 * 32..((k / 32 + 1) * 32).min(tensors[i].1);
        let vmax = group.map(|j| value("v::codes", j)).fold(0f32, f32::max);
        let _ = writeln!(
            out,
            "| `{}` | {k} | {ratio:.3e} | {:e} | {master:e} | {} | {:e} | {} | {:e} | {vmax} |",
            tensors[i].0,
            grads[i][k].to_f32(),
            value("m::codes", k),
            value("m::scales", k / 32),
            value("v::codes", k),
            value("v::scales", k / 32),
        );
    }
    let _ = writeln!(out);
    (out, equal)
}

fn element(part: flashopt::ir::interp::PartRef<'_>, k: usize) -> u32 {
    use flashopt::ir::interp::PartRef;
    match part {
        PartRef::Bf16(v) => v[k].to_bits() as u32,
        PartRef::F16(v) => v[k].to_bits() as u32,
        PartRef::F32(v) => v[k].to_bits(),
        PartRef::I8(v) => v[k] as u8 as u32,
        PartRef::I16(v) => v[k] as u16 as u32,
        PartRef::U8(v) => v[k] as u32,
    }
}

/// The elements of one tensor `state_health` counts, by index.
fn flagged_elements(opt: &CpuOptimizer, id: TensorId) -> HashSet<usize> {
    zero_denominator_elements(opt.plan(), opt.tensor(id).unwrap())
        .unwrap_or_default()
        .into_iter()
        .collect()
}
