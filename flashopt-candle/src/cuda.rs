//! [`CudaFlashOptimizer`]: candle variables on a CUDA device, stepped there by
//! flashopt's fused kernel (feature `cuda`).
//!
//! candle 0.11 and cubecl-cuda 0.10 both reach the device through cudarc 0.19 and its
//! primary context, so device addresses of one are valid for the other and a step
//! moves bytes on the device only: candle converts each gradient to the format's
//! gradient dtype, each is copied into the optimizer's flat gradient buffer, one
//! launch steps every tensor (NaN/infinity scanned on the device), and each variable
//! is set from the optimizer's narrow parameters, copied out the same way. The two
//! libraries queue work on their own streams; every crossing waits for both.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, DeviceLocation, Storage, Tensor, Var};
use cudarc::driver::{DevicePtr, result};
use flashopt_cubecl::GpuOptimizer;
use flashopt_cubecl::cubecl::Runtime;
use flashopt_cubecl::cubecl::cuda::{CudaDevice, CudaRuntime};
use flashopt_cubecl::device::transfer::device_address_after_queued_work;
use flashopt_ir::FloatDtype;
use flashopt_runtime::{CpuOptimizer, Optimizer as _, StepOutcome, TensorId};

use crate::CandleError;
use crate::optimizer::{CandleOptimizer, Placement, grad_of, in_tensor};

/// A flashopt optimizer over candle variables on one CUDA device, its state on that
/// device: the fused step of [`GpuOptimizer`], bit for bit the CPU reference's.
pub type CudaFlashOptimizer = CandleOptimizer<Cuda>;

/// The state on the variables' CUDA device (all on one), stepped by the fused kernel.
pub struct Cuda {
    gpu: GpuOptimizer<CudaRuntime>,
    device: candle_core::CudaDevice,
}

impl std::fmt::Debug for Cuda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cuda")
            .field("tensors", &self.gpu.tensor_count())
            .finish_non_exhaustive()
    }
}

impl Placement for Cuda {
    type Inner = GpuOptimizer<CudaRuntime>;

    /// Every variable on one CUDA device; everything the configured optimizer holds
    /// comes along: every parameter group's hyper-parameters and each tensor's group,
    /// clipping, the step count.
    fn place(cpu: CpuOptimizer, vars: &[Var]) -> Result<Self, CandleError> {
        let name = |i: usize| {
            cpu.tensor_info(TensorId(i))
                .map_or_else(|_| format!("var{i}"), |t| t.name.clone())
        };
        let mut device: Option<candle_core::CudaDevice> = None;
        for (i, var) in vars.iter().enumerate() {
            match (var.device(), &device) {
                (Device::Cuda(d), None) => device = Some(d.clone()),
                (Device::Cuda(_), Some(first))
                    if Device::Cuda(first.clone()).same_device(var.device()) => {}
                (Device::Cuda(_), Some(_)) => {
                    return Err(CandleError::OtherCudaDevice { name: name(i) });
                }
                _ => return Err(CandleError::NotOnCuda { name: name(i) }),
            }
        }
        let device = device.ok_or(CandleError::NoCudaVariable)?;
        let DeviceLocation::Cuda { gpu_id } = Device::Cuda(device.clone()).location() else {
            unreachable!("a CUDA device has a CUDA location")
        };
        let client = CudaRuntime::client(&CudaDevice::new(gpu_id));
        let gpu = GpuOptimizer::from_cpu(client, cpu)?;
        Ok(Cuda { gpu, device })
    }

    fn inner(&self) -> &GpuOptimizer<CudaRuntime> {
        &self.gpu
    }

    fn inner_mut(&mut self) -> &mut GpuOptimizer<CudaRuntime> {
        &mut self.gpu
    }

    /// candle converts each gradient to the format's gradient dtype; each is copied
    /// into the flat gradient buffer on the device; one launch steps every tensor.
    fn step(&mut self, vars: &[Var], grads: &GradStore) -> Result<StepOutcome, CandleError> {
        let dtype = candle_dtype(self.gpu.plan().config.grad);
        let mut narrow = Vec::with_capacity(vars.len());
        for (i, var) in vars.iter().enumerate() {
            let name = self.name(i);
            narrow.push(match grad_of(grads, var, name)? {
                None => None,
                Some(g) => Some(
                    g.to_dtype(dtype)
                        .and_then(|g| g.contiguous())
                        .map_err(in_tensor(name))?,
                ),
            });
        }
        Device::Cuda(self.device.clone())
            .synchronize()
            .map_err(in_tensor(self.name(0)))?;
        let size = self.gpu.plan().config.grad.size_bytes();
        let base = device_address_after_queued_work(self.gpu.client(), self.gpu.grad_buffer())
            .map_err(|e| CandleError::Device(e.to_string()))?;
        self.bind_context()?;
        for (i, g) in narrow.iter().enumerate() {
            let id = TensorId(i);
            let dst = base + (self.gpu.tensor_range(id)?.start * size) as u64;
            match g {
                // SAFETY: the gradient buffer holds the tensor's range; the source is
                // a contiguous tensor of the same element count and dtype.
                Some(g) => unsafe {
                    copy(
                        dst,
                        address(g, size).map_err(in_tensor(self.name(i)))?,
                        g.elem_count() * size,
                    )?
                },
                None => self.gpu.zero_grad(id)?,
            }
        }
        result::ctx::synchronize().map_err(|e| CandleError::Device(e.to_string()))?;
        Ok(self.gpu.step()?)
    }

    /// Copied on the device into fresh candle tensors (then converted to the
    /// variable's dtype by candle).
    fn write_back(&self, vars: &[Var]) -> Result<(), CandleError> {
        let param = self.gpu.plan().config.param;
        let size = param.size_bytes();
        let base = device_address_after_queued_work(self.gpu.client(), self.gpu.param_buffer())
            .map_err(|e| CandleError::Device(e.to_string()))?;
        self.bind_context()?;
        let mut made = Vec::with_capacity(vars.len());
        for (i, var) in vars.iter().enumerate() {
            let name = self.name(i);
            let t = Tensor::zeros(
                var.shape(),
                candle_dtype(param),
                &Device::Cuda(self.device.clone()),
            )
            .map_err(in_tensor(name))?;
            Device::Cuda(self.device.clone())
                .synchronize()
                .map_err(in_tensor(name))?;
            let src = base + (self.gpu.tensor_range(TensorId(i))?.start * size) as u64;
            // SAFETY: `t` is a fresh contiguous tensor of the tensor's element count
            // in the parameter dtype; the parameter buffer holds the tensor's range.
            unsafe {
                copy(
                    address(&t, size).map_err(in_tensor(name))?,
                    src,
                    t.elem_count() * size,
                )?
            };
            made.push(t);
        }
        result::ctx::synchronize().map_err(|e| CandleError::Device(e.to_string()))?;
        for (i, (var, t)) in vars.iter().zip(made).enumerate() {
            t.to_dtype(var.dtype())
                .and_then(|t| var.set(&t))
                .map_err(in_tensor(self.name(i)))?;
        }
        Ok(())
    }
}

impl Cuda {
    fn name(&self, i: usize) -> &str {
        self.gpu
            .tensor_info(TensorId(i))
            .map_or("(unregistered)", |t| t.name.as_str())
    }

    /// cudarc's driver calls below act on the current context: candle's, the
    /// device's primary context, which cubecl uses too.
    fn bind_context(&self) -> Result<(), CandleError> {
        self.device
            .cuda_stream()
            .context()
            .bind_to_thread()
            .map_err(|e| CandleError::Device(e.to_string()))
    }
}

fn candle_dtype(dtype: FloatDtype) -> DType {
    match dtype {
        FloatDtype::Bf16 => DType::BF16,
        FloatDtype::F16 => DType::F16,
        FloatDtype::F32 => DType::F32,
    }
}

/// The device address of a contiguous CUDA tensor's first element.
fn address(t: &Tensor, size: usize) -> candle_core::Result<u64> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(cuda) = &*storage else {
        candle_core::bail!("not on a CUDA device")
    };
    let stream = cuda.device.cuda_stream();
    let base = match t.dtype() {
        DType::BF16 => cuda.as_cuda_slice::<half::bf16>()?.device_ptr(&stream).0,
        DType::F16 => cuda.as_cuda_slice::<half::f16>()?.device_ptr(&stream).0,
        DType::F32 => cuda.as_cuda_slice::<f32>()?.device_ptr(&stream).0,
        other => candle_core::bail!("unexpected dtype {other:?}"),
    };
    Ok(base + (layout.start_offset() * size) as u64)
}

/// # Safety
/// Both addresses must hold `bytes` bytes on the current context's device.
unsafe fn copy(dst: u64, src: u64, bytes: usize) -> Result<(), CandleError> {
    if bytes == 0 {
        return Ok(());
    }
    unsafe { result::memcpy_dtod_sync(dst, src, bytes) }
        .map_err(|e| CandleError::Device(e.to_string()))
}
