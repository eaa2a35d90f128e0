//! Any burn backend: the optimizer state lives on the host and steps on flashopt's
//! CPU reference (the same arithmetic as the GPU kernel, bit for bit). Gradients are
//! read back, parameters written back, every step: made for tests, CI and small
//! models, not for speed (the CUDA path, [`crate::cuda`], steps in place).

use std::collections::HashMap;
use std::path::Path;

use burn::module::{AutodiffModule, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{FloatDType, Tensor, TensorData};
use flashopt_ir::interp::{GradBuf, PartData};
use flashopt_ir::{OptimizerSpec, PlanConfig};
use flashopt_runtime::{CheckpointError, CpuOptimizer, Optimizer, StepOutcome, TensorId};

use crate::params::{self, ParamInfo, Replace};
use crate::{BurnError, TakeGrads};

/// A flashopt optimizer for a burn module on any backend, stepping on the host.
#[derive(Debug)]
pub struct HostOptimizer {
    cpu: CpuOptimizer,
    params: Vec<ParamInfo>,
    index: HashMap<ParamId, usize>,
    /// The dtype the module's parameters are written back in (`None`: the backend's
    /// default float type).
    module_dtype: Option<FloatDType>,
}

impl HostOptimizer {
    /// Take over `module`'s float parameters: they become the optimizer's narrow
    /// parameters (bf16 with a correction for `PlanConfig::bf16(MasterMode::Int8)`,
    /// the master weight kept to 24 bits), and the returned module holds their
    /// values (as the backend's float type) for the forward pass. Gradients are read
    /// back as f32 and rounded to `config.grad` (to nearest, ties to even, as a
    /// device cast does), so a bf16 plan sees the gradients the CUDA path sees.
    pub fn new<B, M, S>(spec: &S, config: PlanConfig, module: M) -> Result<(Self, M), BurnError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        S: OptimizerSpec,
    {
        let collected = params::collect::<B, M>(&module);
        if collected.is_empty() {
            return Err(BurnError::NoParameters);
        }
        let mut cpu = CpuOptimizer::for_spec(spec, config)?;
        for (info, values) in &collected {
            cpu.add_tensor(&info.name, values)?;
        }
        let params: Vec<ParamInfo> = collected.into_iter().map(|(info, _)| info).collect();
        let opt = HostOptimizer {
            cpu,
            index: params::index_of(&params),
            params,
            module_dtype: None,
        };
        let module = opt.write_back::<B, M>(module);
        Ok((opt, module))
    }

    /// The module with every parameter set to the optimizer's narrow values.
    fn write_back<B: AutodiffBackend, M: AutodiffModule<B>>(&self, module: M) -> M {
        let mut make = |i: usize, shape: Vec<usize>, device: &B::Device| {
            let values = self
                .cpu
                .param(TensorId(i))
                .expect("every parameter was registered, in this order");
            let data = TensorData::new(values, shape).convert::<B::FloatElem>();
            let t = B::float_from_data(data, device);
            match self.module_dtype {
                Some(dtype) => B::float_cast(t, dtype),
                None => t,
            }
        };
        module.map(&mut Replace {
            index: &self.index,
            make: &mut make,
        })
    }

    /// One step at learning rate `lr` (the hyper-parameter the definition names its
    /// learning rate), like burn's `Optimizer::step`. A parameter without a gradient gets a zero gradient (the
    /// whole model steps at once; burn's optimizers skip such parameters). A step
    /// whose gradients hold NaN or infinity changes nothing and returns the module
    /// as it was, with [`StepOutcome::Skipped`].
    pub fn step<B, M>(
        &mut self,
        lr: f64,
        module: M,
        mut grads: GradientsParams,
    ) -> Result<(M, StepOutcome), BurnError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
    {
        crate::check_shapes(&self.params, &self.index, &module)?;
        self.cpu.set_learning_rate(lr)?;
        let mut host: Vec<Option<Vec<f32>>> = vec![None; self.params.len()];
        module.visit(&mut TakeGrads::<B, _> {
            grads: &mut grads,
            index: &self.index,
            backend: std::marker::PhantomData,
            on_grad: |i: usize, g: Tensor<B::InnerBackend, 1>| {
                host[i] = Some(
                    g.into_data()
                        .convert::<f32>()
                        .into_vec::<f32>()
                        .expect("converted to f32"),
                );
            },
        });
        let host: Vec<Vec<f32>> = host
            .into_iter()
            .zip(&self.params)
            .map(|(g, p)| g.unwrap_or_else(|| vec![0.0; p.len()]))
            .collect();
        let dtype = self.cpu.plan().config.grad;
        let grads: Vec<PartData> = host
            .iter()
            .map(|g| PartData::round_from_f32(dtype, g))
            .collect();
        let bufs: Vec<GradBuf<'_>> = grads
            .iter()
            .map(|g| g.as_grad().expect("rounded to a float dtype"))
            .collect();
        let outcome = self.cpu.step(&bufs)?;
        let module = if outcome.applied() {
            self.write_back::<B, M>(module)
        } else {
            module
        };
        Ok((module, outcome))
    }

    /// Keep the module's parameters in `dtype` (the plan's bf16, say, on a backend
    /// that has it) instead of the backend's default float type, as the CUDA path
    /// does: the model then sees the same tensors on both paths. Returns the module
    /// with its parameters converted.
    pub fn set_module_dtype<B: AutodiffBackend, M: AutodiffModule<B>>(
        &mut self,
        dtype: Option<FloatDType>,
        module: M,
    ) -> M {
        self.module_dtype = dtype;
        self.write_back::<B, M>(module)
    }

    /// The parameters, in the order burn visits them.
    pub fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    /// The underlying CPU optimizer (checkpoints, clipping, numerics checks).
    pub fn optimizer(&self) -> &CpuOptimizer {
        &self.cpu
    }

    pub fn optimizer_mut(&mut self) -> &mut CpuOptimizer {
        &mut self.cpu
    }

    /// Restore a checkpoint and put its parameters into `module`.
    pub fn load<B: AutodiffBackend, M: AutodiffModule<B>>(
        &mut self,
        path: impl AsRef<Path>,
        module: M,
    ) -> Result<M, CheckpointError> {
        self.cpu.load(path)?;
        Ok(self.write_back::<B, M>(module))
    }
}
