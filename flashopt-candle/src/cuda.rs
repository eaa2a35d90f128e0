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
use flashopt_ir::interp::HostTensor;
use flashopt_runtime::{Optimizer as _, StepOutcome, TensorId};

use crate::optimizer::{candle_optimizer, grad_of, in_tensor, take_over, vars_by_name};
use crate::{CandleError, Config};

/// A flashopt optimizer over candle variables on one CUDA device, its state on that
/// device: the fused step of [`GpuOptimizer`], bit for bit the CPU reference's.
pub struct CudaFlashOptimizer {
    gpu: GpuOptimizer<CudaRuntime>,
    vars: Vec<Var>,
    device: candle_core::CudaDevice,
    last: Option<StepOutcome>,
    refused: Option<CandleError>,
}

impl CudaFlashOptimizer {
    /// Take over named variables, all on one CUDA device: as
    /// [`crate::FlashOptimizer::from_named`], with the state uploaded to that device.
    pub fn from_named(
        vars: impl IntoIterator<Item = (String, Var)>,
        config: Config,
    ) -> Result<CudaFlashOptimizer, CandleError> {
        let mut device: Option<candle_core::CudaDevice> = None;
        let (cpu, kept) = take_over(vars, config, |name, var| match (var.device(), &device) {
            (Device::Cuda(d), None) => {
                device = Some(d.clone());
                Ok(())
            }
            (Device::Cuda(_), Some(first))
                if Device::Cuda(first.clone()).same_device(var.device()) =>
            {
                Ok(())
            }
            (Device::Cuda(_), Some(_)) => Err(CandleError::OtherCudaDevice {
                name: name.to_string(),
            }),
            _ => Err(CandleError::NotOnCuda {
                name: name.to_string(),
            }),
        })?;
        let device = device.ok_or(CandleError::NoCudaVariable)?;
        let DeviceLocation::Cuda { gpu_id } = Device::Cuda(device.clone()).location() else {
            unreachable!("a CUDA device has a CUDA location")
        };
        let client = CudaRuntime::client(&CudaDevice::new(gpu_id));
        // Everything the configured optimizer holds comes along: every parameter
        // group's hyper-parameters and each tensor's group, clipping, the step count.
        let tensors: Vec<(String, usize, HostTensor)> = (0..kept.len())
            .map(|i| {
                let id = TensorId(i);
                let info = cpu.tensor_info(id)?;
                Ok((info.name.clone(), info.param_group, cpu.tensor(id)?.clone()))
            })
            .collect::<Result<_, flashopt_runtime::RuntimeError>>()?;
        let groups = (0..cpu.param_groups())
            .map(|g| cpu.hyper(g).clone())
            .collect();
        let mut gpu =
            GpuOptimizer::from_host_grouped(client, cpu.plan().clone(), groups, tensors, 0)?;
        gpu.set_grad_clipping(cpu.grad_clipping())?;
        gpu.set_steps_taken(cpu.steps_taken());
        let opt = CudaFlashOptimizer {
            gpu,
            vars: kept,
            device,
            last: None,
            refused: None,
        };
        opt.write_back()?;
        Ok(opt)
    }

    /// Every variable of `varmap` (all on one CUDA device), named by its path, in
    /// name order: see [`crate::FlashOptimizer::from_varmap`].
    pub fn from_varmap(
        varmap: &candle_nn::VarMap,
        config: Config,
    ) -> Result<CudaFlashOptimizer, CandleError> {
        CudaFlashOptimizer::from_named(vars_by_name(varmap), config)
    }

    /// One step; see [`crate::FlashOptimizer::try_step`]. A variable without a
    /// gradient steps with a zero gradient.
    pub fn try_step(&mut self, grads: &GradStore) -> Result<StepOutcome, CandleError> {
        if let Some(e) = self.refused.take() {
            return Err(e);
        }
        let dtype = candle_dtype(self.gpu.plan().config.grad);
        let mut narrow = Vec::with_capacity(self.vars.len());
        for (i, var) in self.vars.iter().enumerate() {
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
        let outcome = self.gpu.step()?;
        if outcome.applied() {
            self.write_back()?;
        }
        self.last = Some(outcome.clone());
        Ok(outcome)
    }

    /// The outcome of the last step (`None` before the first).
    pub fn last_outcome(&self) -> Option<&StepOutcome> {
        self.last.as_ref()
    }

    /// The variables, in registration order (`TensorId(i)` is `vars()[i]`).
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// The GPU optimizer underneath: checkpoints, clipping, state read-back.
    pub fn optimizer(&self) -> &GpuOptimizer<CudaRuntime> {
        &self.gpu
    }

    pub fn optimizer_mut(&mut self) -> &mut GpuOptimizer<CudaRuntime> {
        &mut self.gpu
    }

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

    /// Set every variable to the optimizer's narrow parameters, copied on the device
    /// into fresh candle tensors (then converted to the variable's dtype by candle).
    fn write_back(&self) -> Result<(), CandleError> {
        let param = self.gpu.plan().config.param;
        let size = param.size_bytes();
        let base = device_address_after_queued_work(self.gpu.client(), self.gpu.param_buffer())
            .map_err(|e| CandleError::Device(e.to_string()))?;
        self.bind_context()?;
        let mut made = Vec::with_capacity(self.vars.len());
        for (i, var) in self.vars.iter().enumerate() {
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
        for (i, (var, t)) in self.vars.iter().zip(made).enumerate() {
            t.to_dtype(var.dtype())
                .and_then(|t| var.set(&t))
                .map_err(in_tensor(self.name(i)))?;
        }
        Ok(())
    }
}

candle_optimizer!(CudaFlashOptimizer, gpu);

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
