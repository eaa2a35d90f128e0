//! burn's cubecl backends (CUDA; HIP builds, never run here): the optimizer's buffers
//! are allocated on burn's own cubecl client, the module's parameters ARE slices of
//! the optimizer's flat parameter buffer (no copies: the fused step updates them in
//! place), and each step copies the gradients burn computed into the flat gradient
//! buffer on the device, freeing each as soon as it is copied, before ONE fused launch.

use std::collections::HashMap;
use std::path::Path;

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, FloatDType, Shape, Tensor};
/// The float types burn's CUDA backend computes in (f32, bf16, f16).
pub use burn_cubecl::FloatElement;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, IntElement};
use cubecl::cuda::CudaRuntime;
use cubecl::hip::HipRuntime;
use cubecl::server::Handle;
use flashopt_cubecl::GpuOptimizer;
use flashopt_cubecl::device::transfer::HostTransfers;
use flashopt_ir::interp::HostTensor;
use flashopt_ir::{FloatDtype, OptimizerSpec, PlanConfig};
use flashopt_runtime::{CheckpointError, Optimizer, StepOutcome, TensorId};

use crate::params::{self, ParamInfo, Replace};
use crate::{BurnError, TakeGrads};

/// The inner (non-autodiff) burn backend on a cubecl runtime, without fusion.
pub type CubeInner<R, F, I, BT> = CubeBackend<R, F, I, BT>;
/// The autodiff backend a [`DeviceOptimizer`] on `R` steps.
pub type CubeAutodiff<R, F, I, BT> = Autodiff<CubeInner<R, F, I, BT>>;
/// The inner burn backend on CUDA, without fusion.
pub type CudaInner<F, I, BT> = CubeInner<CudaRuntime, F, I, BT>;
/// The autodiff backend a [`CudaOptimizer`] steps.
pub type CudaAutodiff<F, I, BT> = Autodiff<CudaInner<F, I, BT>>;
/// flashopt on burn's CUDA backend.
pub type CudaOptimizer = DeviceOptimizer<CudaRuntime>;
/// flashopt on burn's HIP backend (compiled, never run: no AMD GPU here).
pub type HipOptimizer = DeviceOptimizer<HipRuntime>;

fn burn_dtype(dtype: FloatDtype) -> DType {
    match dtype {
        FloatDtype::Bf16 => DType::BF16,
        FloatDtype::F16 => DType::F16,
        FloatDtype::F32 => DType::F32,
    }
}

fn burn_float_dtype(dtype: FloatDtype) -> FloatDType {
    match dtype {
        FloatDtype::Bf16 => FloatDType::BF16,
        FloatDtype::F16 => FloatDType::F16,
        FloatDtype::F32 => FloatDType::F32,
    }
}

/// A flashopt optimizer whose state and parameters live on the device of burn's
/// cubecl backend on runtime `R`.
pub struct DeviceOptimizer<R: HostTransfers + CubeRuntime> {
    gpu: GpuOptimizer<R>,
    params: Vec<ParamInfo>,
    index: HashMap<ParamId, usize>,
    /// Each parameter as a burn tensor over its slice of the parameter buffer.
    views: Vec<CubeTensor<R>>,
}

impl<R: HostTransfers + CubeRuntime> DeviceOptimizer<R> {
    /// Take over `module`'s float parameters (read once, to build the narrow
    /// parameters and corrections): the returned module's parameters are views of
    /// the optimizer's parameter buffer in `config.param`'s dtype (bf16 for
    /// `PlanConfig::bf16`). A model whose backend computes in f32 casts them where it
    /// uses them (`param.val().cast(FloatDType::F32)`); their gradients then come back
    /// in the parameter dtype.
    pub fn new<F, I, BT, M, S>(
        spec: &S,
        config: PlanConfig,
        module: M,
    ) -> Result<(Self, M), BurnError>
    where
        F: FloatElement,
        I: IntElement,
        BT: BoolElement,
        M: AutodiffModule<CubeAutodiff<R, F, I, BT>>,
        S: OptimizerSpec,
    {
        let collected = params::collect::<CubeAutodiff<R, F, I, BT>, M>(&module);
        let device = module
            .devices()
            .into_iter()
            .next()
            .ok_or(BurnError::NoParameters)?;
        if collected.is_empty() {
            return Err(BurnError::NoParameters);
        }
        // cubecl keeps one client per device: this is the client burn runs on.
        let client = R::client(&device);
        let plan = S::plan(config)?;
        let hyper = spec.hyper_values()?;
        let tensors = collected
            .iter()
            .map(|(info, values)| {
                flashopt_runtime::check_initial_values(&info.name, values)?;
                Ok((info.name.clone(), HostTensor::from_f32(&plan, values)))
            })
            .collect::<Result<_, flashopt_runtime::RuntimeError>>()?;
        let mut gpu = GpuOptimizer::from_host(client.clone(), plan, hyper, tensors)?;
        // Each step reads burn's gradients where they lie.
        gpu.release_grad_buffer();
        let params: Vec<ParamInfo> = collected.into_iter().map(|(info, _)| info).collect();
        let dtype = burn_dtype(config.param);
        let views = params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Ok(CubeTensor::new_contiguous(
                    client.clone(),
                    device.clone(),
                    Shape::from(p.shape.clone()),
                    gpu.param_handle(TensorId(i))?,
                    dtype,
                ))
            })
            .collect::<Result<_, flashopt_runtime::RuntimeError>>()?;
        let opt = DeviceOptimizer {
            gpu,
            index: params::index_of(&params),
            params,
            views,
        };
        let module = opt.attach::<F, I, BT, M>(module);
        Ok((opt, module))
    }

    /// The module with every parameter a fresh leaf over its view.
    fn attach<F, I, BT, M>(&self, module: M) -> M
    where
        F: FloatElement,
        I: IntElement,
        BT: BoolElement,
        M: AutodiffModule<CubeAutodiff<R, F, I, BT>>,
    {
        let mut make = |i: usize, _shape: Vec<usize>, _device: &_| {
            CubeAutodiff::<R, F, I, BT>::from_inner(self.views[i].clone())
        };
        module.map(&mut Replace {
            index: &self.index,
            make: &mut make,
        })
    }

    /// One step at learning rate `lr`, like burn's `Optimizer::step`: the fused step
    /// reads each gradient where burn's backward pass left it (cast to the plan's
    /// gradient dtype first if burn's differs; a parameter without one gets zeros),
    /// one launch per parameter, and every gradient is dropped once the launches are
    /// queued. The optimizer holds no gradient buffer of its own. NaN or infinity in
    /// the gradients (found on the device) skips the step.
    pub fn step<F, I, BT, M>(
        &mut self,
        lr: f64,
        module: M,
        mut grads: GradientsParams,
    ) -> Result<(M, StepOutcome), BurnError>
    where
        F: FloatElement,
        I: IntElement,
        BT: BoolElement,
        M: AutodiffModule<CubeAutodiff<R, F, I, BT>>,
    {
        crate::check_shapes(&self.params, &self.index, &module)?;
        self.gpu.set_learning_rate(lr)?;
        let grad_dtype = self.gpu.plan().config.grad;
        let mut handles: Vec<Option<Handle>> = vec![None; self.params.len()];
        module.visit(&mut TakeGrads::<CubeAutodiff<R, F, I, BT>, _> {
            grads: &mut grads,
            index: &self.index,
            backend: std::marker::PhantomData,
            on_grad: |i: usize, g: Tensor<CubeInner<R, F, I, BT>, 1>| {
                let g = g.cast(burn_float_dtype(grad_dtype));
                let g = burn_cubecl::kernel::into_contiguous(g.into_primitive().tensor());
                handles[i] = Some(g.handle);
            },
        });
        let client = self.gpu.client().clone();
        let handles: Vec<Handle> = handles
            .into_iter()
            .zip(&self.params)
            .map(|(h, p)| {
                h.unwrap_or_else(|| {
                    client.create_from_slice(&vec![0; p.len() * grad_dtype.size_bytes()])
                })
            })
            .collect();
        let refs: Vec<&Handle> = handles.iter().collect();
        let outcome = self.gpu.step_with_grads(&refs)?;
        Ok((self.attach::<F, I, BT, M>(module), outcome))
    }

    /// The parameters, in the order burn visits them.
    pub fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    /// The underlying GPU optimizer (checkpoints, clipping, numerics checks, the
    /// raw buffers).
    pub fn optimizer(&self) -> &GpuOptimizer<R> {
        &self.gpu
    }

    pub fn optimizer_mut(&mut self) -> &mut GpuOptimizer<R> {
        &mut self.gpu
    }

    /// Restore a checkpoint. The optimizer allocates fresh buffers for it, so the
    /// module's parameters are re-attached to them: use the returned module.
    pub fn load<F, I, BT, M>(
        &mut self,
        path: impl AsRef<Path>,
        module: M,
    ) -> Result<M, CheckpointError>
    where
        F: FloatElement,
        I: IntElement,
        BT: BoolElement,
        M: AutodiffModule<CubeAutodiff<R, F, I, BT>>,
    {
        self.gpu.load(path)?;
        for (i, view) in self.views.iter_mut().enumerate() {
            view.handle = self
                .gpu
                .param_handle(TensorId(i))
                .expect("a loaded checkpoint keeps the registered tensors");
        }
        Ok(self.attach::<F, I, BT, M>(module))
    }
}
