//! The CUDA adapter checked against the CPU-reference adapter on a tiny model
//! (`--check-adapter STEPS`, on the GPU machine).

use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use flashopt::Optimizer as _;
use flashopt::{MasterMode, PlanConfig};

use crate::Setup;
use crate::data::{self, Rng};
use crate::model::{Gpt, causal_mask};

/// The CUDA adapter against the CPU reference adapter, both stepping the same model
/// on burn's CUDA backend with bf16 parameters (the host adapter writes its back as
/// bf16 tensors): the two models are the same computation, so the parameters must
/// agree bit for bit after every step. A second CUDA adapter on a second copy of the
/// model shows that burn's backward pass is deterministic, which the comparison
/// needs. All three are built from one optimizer set up by hand (gradients clipped to
/// a global norm the tiny model's exceed, weight decay and second-moment decay off
/// their defaults, a step count already running): every setting must reach both
/// placements.
pub fn check_adapter(steps: usize) -> bool {
    use flashopt_burn::cuda::CudaAutodiff;
    use flashopt_cubecl::cubecl::cuda::CudaDevice;
    type B = CudaAutodiff<f32, i32, u8>;
    let setup = Setup::named("tiny").expect("tiny");
    let device = CudaDevice::default();
    let config = PlanConfig::bf16(MasterMode::Int8);
    let fresh = || Gpt::<B>::new(&setup.model, setup.seed, &device);
    let set_up = || {
        let mut cpu = flashopt::runtime::CpuOptimizer::for_spec(&setup.adamw(), config)
            .expect("the tiny setup's AdamW");
        cpu.set_grad_clipping(Some(0.5)).expect("a positive norm");
        cpu.set_hyper("weight_decay", 0.05)
            .expect("AdamW's weight decay");
        cpu.set_hyper("b2", 0.95)
            .expect("AdamW's second-moment decay");
        cpu.set_steps_taken(3);
        cpu
    };
    let (mut cuda, mut on_device) =
        flashopt_burn::CudaOptimizer::from_optimizer(set_up(), fresh()).expect("cuda adapter");
    let (mut cuda2, mut on_device2) =
        flashopt_burn::CudaOptimizer::from_optimizer(set_up(), fresh()).expect("cuda adapter");
    let (mut host, on_host) =
        flashopt_burn::HostOptimizer::from_optimizer(set_up(), fresh()).expect("host adapter");
    let mut on_host = host.set_module_dtype::<B, _>(Some(burn::tensor::FloatDType::BF16), on_host);
    let values = |m: &Gpt<B>| flashopt_burn::params::collect::<B, _>(m);
    // (identical elements, elements, tensors that differ)
    let compare = |a: &Gpt<B>, b: &Gpt<B>| {
        let (a, b) = (values(a), values(b));
        let mut same = 0;
        let mut differing = Vec::new();
        for ((info, x), (_, y)) in a.iter().zip(&b) {
            let s = x
                .iter()
                .zip(y)
                .filter(|(p, q)| p.to_bits() == q.to_bits())
                .count();
            if s < x.len() {
                differing.push(format!("{} ({} of {})", info.name, x.len() - s, x.len()));
            }
            same += s;
        }
        let total: usize = a.iter().map(|(_, v)| v.len()).sum();
        (same, total, differing)
    };
    let (train_text, _) = data::split();
    let mask = causal_mask::<B>(setup.model.context, &device);
    let mut rng = Rng::new(1);
    let (same, total, _) = compare(&on_device, &on_host);
    let mut exact = same == total;
    println!("adapter check: initial parameters: {same} of {total} equal");
    for step in 1..=steps {
        let (x, y) = data::batch::<B>(
            train_text,
            &mut rng,
            setup.batch,
            setup.model.context,
            &device,
        );
        let grads = |m: &Gpt<B>| {
            GradientsParams::from_grads(
                m.loss(x.clone(), y.clone(), mask.clone(), false).backward(),
                m,
            )
        };
        if step == 1 {
            let (a, b) = (cast_values(&on_device), cast_values(&on_host));
            let differing: Vec<String> = a
                .iter()
                .zip(&b)
                .enumerate()
                .filter(|(_, (x, y))| x != y)
                .map(|(i, (x, y))| {
                    let n = x
                        .iter()
                        .zip(y.iter())
                        .filter(|(p, q)| p.to_bits() != q.to_bits())
                        .count();
                    format!("#{i} ({n} of {})", x.len())
                })
                .collect();
            println!("  parameters cast to f32 on the device that differ: {differing:?}");
        }
        let (g1, g2, g3) = (grads(&on_device), grads(&on_device2), grads(&on_host));
        // The gradients the CUDA adapter's step reads where burn left them.
        let device_grads = grad_values(&on_device, &g1);
        if step == 1 {
            let (a, b) = (&device_grads, grad_values(&on_host, &g3));
            let differing: Vec<String> = a
                .iter()
                .zip(&b)
                .filter(|(x, y)| x.1 != y.1)
                .map(|(x, y)| {
                    let n =
                        x.1.iter()
                            .zip(&y.1)
                            .filter(|(p, q)| p.to_bits() != q.to_bits())
                            .count();
                    format!("{} ({n} of {})", x.0, x.1.len())
                })
                .collect();
            println!(
                "  step 1 gradients that differ, CUDA model vs CPU-reference model: {differing:?}"
            );
        }
        on_device = cuda.step(1e-3, on_device, g1).expect("cuda step").0;
        if step == 1 {
            // The kernel alone: the CPU reference fed the gradients the GPU read.
            let gpu = cuda.optimizer();
            let mut cpu = set_up();
            for (info, v) in flashopt_burn::params::collect::<B, _>(&fresh()) {
                cpu.add_tensor(&info.name, &v).expect("add");
            }
            cpu.set_learning_rate(1e-3).expect("lr");
            // bf16 gradients (the parameters' dtype), read as f32: exact. A parameter
            // without one steps with zeros, as the adapter does.
            let grads: Vec<Vec<half::bf16>> = device_grads
                .iter()
                .enumerate()
                .map(|(i, (_, g))| match g.is_empty() {
                    true => {
                        vec![half::bf16::ZERO; cpu.tensor_info(flashopt::TensorId(i)).unwrap().len]
                    }
                    false => g.iter().map(|&x| half::bf16::from_f32(x)).collect(),
                })
                .collect();
            let bufs: Vec<flashopt::GradBuf<'_>> =
                grads.iter().map(|g| flashopt::GradBuf::Bf16(g)).collect();
            cpu.step(&bufs).expect("cpu step");
            let same = gpu
                .download()
                .iter()
                .enumerate()
                .filter(|(i, (_, t))| t == cpu.tensor(flashopt::TensorId(*i)).unwrap())
                .count();
            println!(
                "  the GPU state after step 1 equals the CPU reference stepped with the GPU's gradients in {same} of {} tensors",
                gpu.tensor_count()
            );
        }
        on_device2 = cuda2.step(1e-3, on_device2, g2).expect("cuda step").0;
        on_host = host.step(1e-3, on_host, g3).expect("host step").0;
        let (same, total, differing) = compare(&on_device, &on_host);
        let (same2, _, differing2) = compare(&on_device, &on_device2);
        println!(
            "adapter check: step {step}: CUDA adapter vs CPU-reference adapter {same} of {total} bit-identical; CUDA adapter vs itself on a second copy {same2} of {total}; gradient norm {:?} on the device, {:?} on the host (clipped to 0.5); steps taken {} and {}",
            cuda.optimizer().last_grad_norm(),
            host.optimizer().last_grad_norm(),
            cuda.optimizer().steps_taken(),
            host.optimizer().steps_taken()
        );
        if step == 1 {
            println!("  tensors that differ, CUDA vs CPU reference: {differing:?}");
            println!("  tensors that differ between the two CUDA runs: {differing2:?}");
        }
        exact &= same == total
            && cuda.optimizer().steps_taken() == host.optimizer().steps_taken()
            && cuda.optimizer().grad_clipping() == Some(0.5);
    }
    exact
}

/// Each parameter as the model's forward pass sees it: cast to f32 on the device.
fn cast_values<B: AutodiffBackend>(model: &Gpt<B>) -> Vec<Vec<f32>> {
    struct Visit(Vec<Vec<f32>>);
    impl<B: AutodiffBackend> burn::module::ModuleVisitor<B> for Visit {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<B, D>>,
        ) {
            let v = param.val().cast(burn::tensor::FloatDType::F32).into_data();
            self.0
                .push(v.convert::<f32>().into_vec::<f32>().expect("f32"));
        }
    }
    let mut visit = Visit(Vec::new());
    burn::module::Module::visit(model, &mut visit);
    visit.0
}

/// Each parameter's gradient (name, values as f32) in visiting order.
fn grad_values<B: AutodiffBackend>(
    model: &Gpt<B>,
    grads: &GradientsParams,
) -> Vec<(String, Vec<f32>)> {
    struct Visit<'a, B: AutodiffBackend> {
        grads: &'a GradientsParams,
        names: std::vec::IntoIter<String>,
        out: Vec<(String, Vec<f32>)>,
        backend: std::marker::PhantomData<B>,
    }
    impl<B: AutodiffBackend> burn::module::ModuleVisitor<B> for Visit<'_, B> {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<B, D>>,
        ) {
            let name = self.names.next().expect("one name per parameter");
            let values = self
                .grads
                .get::<B::InnerBackend, D>(param.id)
                .map(|g| {
                    g.into_data()
                        .convert::<f32>()
                        .into_vec::<f32>()
                        .expect("f32")
                })
                .unwrap_or_default();
            self.out.push((name, values));
        }
    }
    let names: Vec<String> = flashopt_burn::params::describe(model)
        .into_iter()
        .map(|p| p.name)
        .collect();
    let mut visit = Visit::<B> {
        grads,
        names: names.into_iter(),
        out: Vec::new(),
        backend: std::marker::PhantomData,
    };
    burn::module::Module::visit(model, &mut visit);
    visit.out
}
