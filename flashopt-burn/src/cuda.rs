//! burn's cubecl backends (CUDA; HIP builds, never run here): the optimizer's buffers
//! are allocated on burn's own cubecl client, the module's parameters ARE slices of
//! the optimizer's flat parameter buffer (no copies: the fused step updates them in
//! place), and each step reads the gradients where burn's backward pass left them.

use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, FloatDType, Shape, Tensor};
/// The float types burn's CUDA backend computes in (f32, bf16, f16).
pub use burn_cubecl::FloatElement;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, IntElement};
use cubecl::cuda::CudaRuntime;
use cubecl::hip::HipRuntime;
use cubecl::server::Handle;
use flashopt_cubecl::GpuOptimizer;
use flashopt_cubecl::device::DeviceRuntime;
use flashopt_ir::FloatDtype;
use flashopt_runtime::{CpuOptimizer, Optimizer, RuntimeError, StepOutcome, TensorId};

use crate::BurnError;
use crate::optimizer::{BackendPlacement, BurnOptimizer, Placement};
use crate::params::ParamInfo;
use crate::split::SplitOptimizer;

/// The inner (non-autodiff) burn backend on a cubecl runtime, without fusion.
pub type CubeInner<R, F, I, BT> = CubeBackend<R, F, I, BT>;
/// The autodiff backend a [`DeviceOptimizer`] on `R` steps.
pub type CubeAutodiff<R, F, I, BT> = Autodiff<CubeInner<R, F, I, BT>>;
/// The inner burn backend on CUDA, without fusion.
pub type CudaInner<F, I, BT> = CubeInner<CudaRuntime, F, I, BT>;
/// The autodiff backend a [`CudaOptimizer`] steps.
pub type CudaAutodiff<F, I, BT> = Autodiff<CudaInner<F, I, BT>>;
/// A flashopt optimizer whose state and parameters live on the device of burn's cubecl
/// backend on runtime `R`.
pub type DeviceOptimizer<R> = BurnOptimizer<Cube<R>>;
/// flashopt on burn's CUDA backend.
pub type CudaOptimizer = DeviceOptimizer<CudaRuntime>;
/// flashopt on burn's HIP backend (compiled, never run: no AMD GPU here).
pub type HipOptimizer = DeviceOptimizer<HipRuntime>;
/// Two flashopt optimizers over one module on burn's CUDA backend ([`SplitOptimizer`]).
pub type CudaSplitOptimizer = SplitOptimizer<Cube<CudaRuntime>>;

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

/// The state on the device of burn's cubecl backend on runtime `R`, on burn's own
/// compute client. The module's parameters are views of the parameter buffer in the
/// plan's parameter dtype (bf16 for `PlanConfig::bf16`): a model whose backend computes
/// in f32 casts them where it uses them (`param.val().cast(FloatDType::F32)`); their
/// gradients then come back in the parameter dtype.
pub struct Cube<R: DeviceRuntime + CubeRuntime> {
    gpu: GpuOptimizer<R>,
    /// Each parameter as a tensor over its slice of the parameter buffer.
    views: Vec<CubeTensor<R>>,
}

impl<R: DeviceRuntime + CubeRuntime> std::fmt::Debug for Cube<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cube")
            .field("tensors", &self.gpu.tensor_count())
            .finish_non_exhaustive()
    }
}

impl<R: DeviceRuntime + CubeRuntime> Placement for Cube<R> {
    type Inner = GpuOptimizer<R>;

    fn inner(&self) -> &GpuOptimizer<R> {
        &self.gpu
    }

    fn inner_mut(&mut self) -> &mut GpuOptimizer<R> {
        &mut self.gpu
    }

    /// A loaded checkpoint comes in fresh buffers: the views follow them.
    fn loaded(&mut self) -> Result<(), BurnError> {
        for (i, view) in self.views.iter_mut().enumerate() {
            view.handle = self.gpu.param_handle(TensorId(i))?;
        }
        Ok(())
    }
}

impl<R, F, I, BT> BackendPlacement<CubeAutodiff<R, F, I, BT>> for Cube<R>
where
    R: DeviceRuntime + CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    type Grad = Handle;

    /// Everything `cpu` holds comes along: every parameter group's hyper-parameters
    /// and each tensor's group, clipping, the step count. The optimizer keeps no
    /// gradient buffer: each step reads burn's gradients where they lie.
    fn place(
        cpu: CpuOptimizer,
        params: &[ParamInfo],
        device: &R::Device,
    ) -> Result<Self, BurnError> {
        // cubecl keeps one client per device: this is the client burn runs on.
        let client = R::client(device);
        let mut gpu = GpuOptimizer::from_cpu(client.clone(), cpu)?;
        gpu.release_grad_buffer();
        let dtype = burn_dtype(gpu.plan().config.param);
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
            .collect::<Result<_, RuntimeError>>()?;
        Ok(Cube { gpu, views })
    }

    /// Cast to the plan's gradient dtype if burn's differs, made contiguous; burn's
    /// own tensor is dropped here.
    fn take_grad(&self, _: usize, grad: Tensor<CubeInner<R, F, I, BT>, 1>) -> Handle {
        let g = grad.cast(burn_float_dtype(self.gpu.plan().config.grad));
        burn_cubecl::kernel::into_contiguous(g.into_primitive().tensor()).handle
    }

    /// The fused step reads each gradient where it lies, one launch per parameter
    /// (zeros for a parameter without one); NaN or infinity in the gradients (found on
    /// the device) skips the step.
    fn step(&mut self, grads: Vec<Option<Handle>>) -> Result<StepOutcome, BurnError> {
        let size = self.gpu.plan().config.grad.size_bytes();
        let client = self.gpu.client().clone();
        let mut handles = Vec::with_capacity(grads.len());
        for (i, g) in grads.into_iter().enumerate() {
            handles.push(match g {
                Some(h) => h,
                None => {
                    let len = self.gpu.tensor_info(TensorId(i))?.len;
                    client.create_from_slice(&vec![0; len * size])
                }
            });
        }
        let refs: Vec<&Handle> = handles.iter().collect();
        Ok(self.gpu.step_with_grads(&refs)?)
    }

    /// A fresh leaf over the parameter's view.
    fn param(
        &self,
        index: usize,
        _: Vec<usize>,
        _: &R::Device,
    ) -> FloatTensor<CubeAutodiff<R, F, I, BT>> {
        CubeAutodiff::<R, F, I, BT>::from_inner(self.views[index].clone())
    }
}
