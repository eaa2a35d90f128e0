//! Any burn backend: the optimizer state lives on the host and steps on flashopt's
//! CPU reference (the same arithmetic as the GPU kernel, bit for bit). Gradients are
//! read back, parameters written back, every step: made for tests, CI and small
//! models, not for speed (the cubecl placement, [`crate::cuda`], steps in place).

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{FloatDType, Tensor, TensorData};
use flashopt_runtime::{CpuOptimizer, StepOutcome, TensorId};

use crate::BurnError;
use crate::optimizer::{BackendPlacement, BurnOptimizer, Placement};
use crate::params::ParamInfo;

/// A flashopt optimizer for a burn module on any backend, stepping on the host.
/// Gradients are read back as f32 and rounded to the format's gradient dtype (to
/// nearest, ties to even, as a device cast does), so a bf16 plan sees the gradients
/// the CUDA path sees.
pub type HostOptimizer = BurnOptimizer<Host>;

/// The state on the host: flashopt's CPU reference, the module on any backend.
#[derive(Debug)]
pub struct Host {
    cpu: CpuOptimizer,
    /// The dtype the module's parameters are written back in (`None`: the backend's
    /// default float type).
    module_dtype: Option<FloatDType>,
}

impl Placement for Host {
    type Inner = CpuOptimizer;

    fn inner(&self) -> &CpuOptimizer {
        &self.cpu
    }

    fn inner_mut(&mut self) -> &mut CpuOptimizer {
        &mut self.cpu
    }
}

impl<B: AutodiffBackend> BackendPlacement<B> for Host {
    type Grad = Vec<f32>;

    fn place(cpu: CpuOptimizer, _: &[ParamInfo], _: &B::Device) -> Result<Self, BurnError> {
        Ok(Host {
            cpu,
            module_dtype: None,
        })
    }

    fn take_grad(&self, _: usize, grad: Tensor<B::InnerBackend, 1>) -> Vec<f32> {
        grad.into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("converted to f32")
    }

    fn step(&mut self, grads: Vec<Option<Vec<f32>>>) -> Result<StepOutcome, BurnError> {
        Ok(self.cpu.step_rounding(&grads)?)
    }

    fn param(&self, index: usize, shape: Vec<usize>, device: &B::Device) -> FloatTensor<B> {
        let values = self
            .cpu
            .param(TensorId(index))
            .expect("every parameter was registered, in visiting order");
        let t = B::float_from_data(
            TensorData::new(values, shape).convert::<B::FloatElem>(),
            device,
        );
        match self.module_dtype {
            Some(dtype) => B::float_cast(t, dtype),
            None => t,
        }
    }
}

impl HostOptimizer {
    /// Keep the module's parameters in `dtype` (the plan's bf16, say, on a backend
    /// that has it) instead of the backend's default float type, as the CUDA path
    /// does: the model then sees the same tensors on both paths. Returns the module
    /// with its parameters converted.
    pub fn set_module_dtype<B, M>(&mut self, dtype: Option<FloatDType>, module: M) -> M
    where
        B: AutodiffBackend,
        M: burn::module::AutodiffModule<B>,
    {
        self.placed_mut().module_dtype = dtype;
        self.write_back::<B, M>(module)
    }
}
