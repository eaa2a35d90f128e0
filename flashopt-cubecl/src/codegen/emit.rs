//! Generated source without a GPU: a plan's kernel compiled by cubecl-cpp's CUDA and
//! HIP compilers on the host, for snapshots and for `flashopt emit`.

use cubecl::ir::{
    AddressType, DeviceProperties, HardwareProperties, MemoryDeviceProperties, TargetProperties,
};
use cubecl::prelude::*;
use cubecl::server::ExecutionMode;
use cubecl_cpp::shared::CompilationOptions;
use flashopt_ir::plan::Plan;

use crate::codegen::bindings::KernelShape;
use crate::codegen::define::{Scheduling, define};

/// The source languages cubecl compiles kernels to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Cuda,
    Hip,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Cuda => "cuda",
            Target::Hip => "hip",
        }
    }

    /// How a plane's units run: CUDA's warps schedule their threads independently,
    /// HIP's wavefronts run in lockstep.
    pub fn scheduling(self) -> Scheduling {
        match self {
            Target::Cuda => Scheduling::Independent,
            Target::Hip => Scheduling::Lockstep,
        }
    }

    pub fn target_properties(self) -> TargetProperties {
        match self {
            Target::Cuda => <cubecl::cuda::CudaRuntime as Runtime>::target_properties(),
            Target::Hip => <cubecl::hip::HipRuntime as Runtime>::target_properties(),
        }
    }
}

/// A cubecl runtime flashopt launches on, with its target's facts (where cubecl
/// keeps none): the one place a runtime type maps to a [`Target`].
pub trait TargetRuntime: Runtime {
    const TARGET: Target;
}

impl TargetRuntime for cubecl::cuda::CudaRuntime {
    const TARGET: Target = Target::Cuda;
}

impl TargetRuntime for cubecl::hip::HipRuntime {
    const TARGET: Target = Target::Hip;
}

#[derive(Debug, thiserror::Error)]
#[error("cubecl could not compile the {target} kernel of `{optimizer}`: {message}")]
pub struct EmitError {
    pub target: &'static str,
    pub optimizer: String,
    pub message: String,
}

/// Units (threads) per cube of the fused step.
pub const CUBE_DIM: u32 = 256;

/// The kernel's entry-point name for a plan (stable: it appears in profiles).
pub fn kernel_name(plan: &Plan) -> String {
    let c = plan.config;
    format!(
        "flashopt_{}_{}_m{}_g{}",
        plan.optimizer,
        c.param,
        c.master.bits_label(),
        c.grad
    )
}

pub fn settings(plan: &Plan) -> KernelSettings {
    KernelSettings::default()
        .cube_dim(CubeDim::new_1d(CUBE_DIM))
        .address_type(AddressType::U32)
        .kernel_name(kernel_name(plan))
}

/// Device properties of a generic 32-wide GPU with the storage types the kernels use,
/// registered the way cubecl-cpp registers them on a real device.
pub fn offline_device_properties(target: Target) -> DeviceProperties {
    let hardware = HardwareProperties {
        load_width: 128,
        plane_size_min: if target == Target::Hip { 64 } else { 32 },
        plane_size_max: if target == Target::Hip { 64 } else { 32 },
        max_bindings: 64,
        max_shared_memory_size: 48 * 1024,
        max_cube_count: (i32::MAX as u32, 65535, 65535),
        max_units_per_cube: 1024,
        max_cube_dim: (1024, 1024, 64),
        num_streaming_multiprocessors: None,
        num_cpu_cores: None,
        num_tensor_cores: None,
        min_tensor_cores_dim: None,
        max_vector_size: usize::MAX,
    };
    let memory = MemoryDeviceProperties {
        max_page_size: 1 << 32,
        alignment: 32,
    };
    let mut props = DeviceProperties::new(
        Default::default(),
        memory,
        hardware,
        cubecl_common::profile::TimingMethod::System,
    );
    cubecl_cpp::register_supported_types(&mut props);
    props.register_address_type(AddressType::U32);
    props
}

/// The kernel of `plan` as `target` source, in the default [`KernelShape`].
pub fn emit(plan: &Plan, target: Target) -> Result<String, EmitError> {
    emit_shaped(plan, target, KernelShape::default())
}

pub fn emit_shaped(plan: &Plan, target: Target, shape: KernelShape) -> Result<String, EmitError> {
    emit_pass(plan, plan.phases.len(), target, shape)
}

/// The kernel of one pass of `plan` (an index of [`Plan::passes`]: its reduction
/// phases, then the step).
pub fn emit_pass(
    plan: &Plan,
    pass: usize,
    target: Target,
    shape: KernelShape,
) -> Result<String, EmitError> {
    let props = offline_device_properties(target);
    let definition = define(
        plan,
        pass,
        shape,
        (target.target_properties(), target.scheduling()),
        &props,
        settings(plan),
    );
    compile_for(target, definition).map_err(|message| EmitError {
        target: target.name(),
        optimizer: plan.optimizer.clone(),
        message,
    })
}

/// A kernel definition as `target` source, compiled as the runtimes compile it:
/// cubecl-cuda turns on fast-math support (used only where a kernel asks for it,
/// `Arithmetic::Approximate`), cubecl-hip does not.
pub(crate) fn compile_for(target: Target, definition: KernelDefinition) -> Result<String, String> {
    let addr = AddressType::U32.unsigned_type();
    let mut options = CompilationOptions::default();
    let source = match target {
        Target::Cuda => {
            options.supports_features.fast_math = true;
            compile::<cubecl::cuda::CudaCompiler>(definition, addr, &options)
        }
        Target::Hip => {
            compile::<<cubecl::hip::HipRuntime as Runtime>::Compiler>(definition, addr, &options)
        }
    }?;
    Ok(canonical_order(&source))
}

fn compile<C>(
    definition: KernelDefinition,
    addr: cubecl::ir::StorageType,
    options: &CompilationOptions,
) -> Result<String, String>
where
    C: cubecl::Compiler<CompilationOptions = CompilationOptions> + Default,
{
    C::default()
        .compile(definition, options, ExecutionMode::Unchecked, addr)
        .map(|compiled| compiled.to_string())
        .map_err(|e| format!("{e:?}"))
}

/// cubecl-cpp declares the vector structs and the mutable locals from hash sets, so
/// their order changes from run to run. They are independent declarations; sorting
/// each run of them makes the text stable (for snapshots and diffs) without changing
/// its meaning.
pub fn canonical_order(source: &str) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let is_local = |l: &str| {
        let mut parts = l.split_whitespace();
        matches!((parts.next(), parts.next(), parts.next()), (Some(_), Some(name), None) if name.starts_with("l_mut_") && name.ends_with(';'))
    };
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        if lines[i].starts_with("struct __align__") {
            let mut blocks: Vec<String> = Vec::new();
            while i < lines.len() && lines[i].starts_with("struct __align__") {
                let start = i;
                while lines[i] != "};" {
                    i += 1;
                }
                i += 1;
                blocks.push(lines[start..i].join("\n"));
            }
            blocks.sort();
            out.extend(blocks);
        } else if is_local(lines[i]) {
            let start = i;
            while i < lines.len() && is_local(lines[i]) {
                i += 1;
            }
            let mut run: Vec<&str> = lines[start..i].to_vec();
            run.sort();
            out.extend(run.into_iter().map(String::from));
        } else {
            out.push(lines[i].to_string());
            i += 1;
        }
    }
    let mut text = out.join("\n");
    if source.ends_with('\n') {
        text.push('\n');
    }
    text
}
