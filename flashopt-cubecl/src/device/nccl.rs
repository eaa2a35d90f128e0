//! NCCL on cubecl-cuda buffers: the collectives of a sharded optimizer's step, through
//! cudarc 0.19's bindings (the version and build cubecl-cuda uses; libnccl is loaded
//! at run time, so building needs no NCCL).
//!
//! Ordering between cubecl's stream and NCCL's: each collective first waits for the
//! work queued on the client (the kernels that wrote its input), then runs on the
//! communicator's own stream and waits for it before returning, so later cubecl work
//! sees its output. Two host waits per collective: simple and safe; overlapping the
//! collectives with compute is not done.

use cubecl::client::ComputeClient;
use cubecl::cuda::CudaRuntime;
use cubecl::server::Handle;
use cudarc::driver::result::{self as driver, stream};
use cudarc::driver::sys::{self as driver_sys, CUdeviceptr, CUstream};
use cudarc::nccl::result as nccl;
use cudarc::nccl::sys as nccl_sys;
use flashopt_ir::Storage;

use crate::device::transfer::device_address_after_queued_work as device_address;

/// A collective call failed; the message is NCCL's or the driver's.
#[derive(Debug, thiserror::Error)]
#[error("NCCL {during}: {message}")]
pub struct NcclError {
    during: &'static str,
    message: String,
}

fn failed(during: &'static str) -> impl FnOnce(String) -> NcclError {
    move |message| NcclError { during, message }
}

/// The id every rank of one communicator shares: made by one rank
/// ([`NcclId::new`]), sent to the others by the caller (128 bytes).
#[derive(Clone, Copy)]
pub struct NcclId(nccl_sys::ncclUniqueId);

impl NcclId {
    pub fn new() -> Result<NcclId, NcclError> {
        nccl::get_uniqueid()
            .map(NcclId)
            .map_err(|e| failed("unique id")(format!("{e:?}")))
    }

    pub fn to_bytes(&self) -> [u8; 128] {
        self.0.internal.map(|c| c as u8)
    }

    pub fn from_bytes(bytes: [u8; 128]) -> NcclId {
        NcclId(nccl_sys::ncclUniqueId {
            internal: bytes.map(|b| b as std::ffi::c_char),
        })
    }
}

impl std::fmt::Debug for NcclId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NcclId(..)")
    }
}

/// One rank of an NCCL communicator on the device of a cubecl-cuda client.
pub struct Communicator {
    comm: nccl_sys::ncclComm_t,
    stream: CUstream,
    context: driver_sys::CUcontext,
    device: driver_sys::CUdevice,
    /// A few f64 on the device for all-reduces of host values.
    scratch: CUdeviceptr,
    rank: usize,
    world: usize,
}

// SAFETY: the communicator, stream and scratch buffer are used by one thread at a
// time (`&mut self` or `&self` calls that enter the context first).
unsafe impl Send for Communicator {}

/// Values `all_reduce_f64` sums at once: a checkpoint's few sums, and the ranks'
/// agreement on their layout before they build (3 values per rank, up to 1024 ranks).
const SCRATCH_VALUES: usize = 3 * 1024;

impl Communicator {
    /// Join communicator `id` as `rank` of `world`, on the device `client` runs on.
    /// Every rank calls this at the same time (NCCL waits for all of them).
    pub fn new(
        client: &ComputeClient<CudaRuntime>,
        id: &NcclId,
        rank: usize,
        world: usize,
    ) -> Result<Communicator, NcclError> {
        let probe = client.create_from_slice(&[0u8; 4]);
        let ptr = device_address(client, &probe).map_err(|e| failed("device")(e.to_string()))?;
        let device = crate::device::transfer::pinned::device_of(ptr)
            .map_err(|e| failed("device")(e.to_string()))?;
        // SAFETY: `device` is the ordinal of a live allocation's device; its primary
        // context is retained before it is made current (released in Drop); the
        // stream and scratch buffer are created in that context and owned by the
        // communicator; `comm_init_rank` gets a valid out-pointer and the id every
        // rank of the world shares.
        unsafe {
            let context = driver::primary_ctx::retain(device)
                .map_err(|e| failed("context")(e.to_string()))?;
            driver::ctx::set_current(context).map_err(|e| failed("context")(e.to_string()))?;
            let stream = stream::create(stream::StreamKind::NonBlocking)
                .map_err(|e| failed("stream")(e.to_string()))?;
            let scratch = driver::malloc_sync(SCRATCH_VALUES * 8)
                .map_err(|e| failed("scratch buffer")(e.to_string()))?;
            let mut comm = std::ptr::null_mut();
            nccl::comm_init_rank(&mut comm, world as i32, id.0, rank as i32)
                .map_err(|e| failed("init")(format!("{e:?}")))?;
            Ok(Communicator {
                comm,
                stream,
                context,
                device,
                scratch,
                rank,
                world,
            })
        }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// `send` holds `world` blocks of `count` values; `recv` gets the element-wise sum
    /// over ranks of block `rank`, in the values' own type (NCCL's order).
    ///
    /// # Safety
    /// `send` must hold `world * count` values of `storage`, `recv` `count`.
    pub unsafe fn reduce_scatter(
        &self,
        client: &ComputeClient<CudaRuntime>,
        storage: Storage,
        send: &Handle,
        recv: &Handle,
        count: usize,
    ) -> Result<(), NcclError> {
        let address =
            |h| device_address(client, h).map_err(|e| failed("reduce-scatter")(e.to_string()));
        let (send, recv) = (address(send)?, address(recv)?);
        let op = nccl_sys::ncclRedOp_t::ncclSum;
        // SAFETY: the caller guarantees `send` holds `world * count` values and
        // `recv` `count` (this function's contract); both are allocations of
        // `client`'s device, whose context `run` makes current.
        self.run("reduce-scatter", |comm, stream| unsafe {
            nccl::reduce_scatter(
                send as *const _,
                recv as *mut _,
                count,
                data_type(storage),
                op,
                comm,
                stream,
            )
        })
    }

    /// In place: block `rank` of `buffer` (`count` values) goes to every rank, so
    /// that every rank's `buffer` holds all `world` blocks.
    ///
    /// # Safety
    /// `buffer` must hold `world * count` values of `storage`.
    pub unsafe fn all_gather_in_place(
        &self,
        client: &ComputeClient<CudaRuntime>,
        storage: Storage,
        buffer: &Handle,
        count: usize,
    ) -> Result<(), NcclError> {
        let base =
            device_address(client, buffer).map_err(|e| failed("all-gather")(e.to_string()))?;
        let own = base + (self.rank * count * storage.size_bytes()) as u64;
        // SAFETY: the caller guarantees `buffer` holds `world * count` values, so
        // block `rank` and all `world` blocks lie inside it; `run` makes the
        // context of `client`'s device current.
        self.run("all-gather", |comm, stream| unsafe {
            nccl::all_gather(
                own as *const _,
                base as *mut _,
                count,
                data_type(storage),
                comm,
                stream,
            )
        })
    }

    /// The element-wise sum over ranks of a few host values, in place.
    pub fn all_reduce_f64(&self, values: &mut [f64]) -> Result<(), NcclError> {
        assert!(values.len() <= SCRATCH_VALUES, "a few values");
        self.enter()?;
        let scratch = self.scratch;
        // SAFETY: `scratch` holds SCRATCH_VALUES f64s and `values` at most that many
        // (asserted above); the stream is the communicator's, in the current context.
        unsafe {
            driver::memcpy_htod_async(scratch, &*values, self.stream)
                .map_err(|e| failed("all-reduce")(e.to_string()))?;
        }
        // SAFETY: as above: `values.len()` f64s of `scratch`, summed in place.
        self.run("all-reduce", |comm, stream| unsafe {
            nccl::all_reduce(
                scratch as *const _,
                scratch as *mut _,
                values.len(),
                nccl_sys::ncclDataType_t::ncclFloat64,
                nccl_sys::ncclRedOp_t::ncclSum,
                comm,
                stream,
            )
        })?;
        // SAFETY: as above; `values` outlives the copy: the stream is synchronized
        // before this returns.
        unsafe {
            driver::memcpy_dtoh_async(values, scratch, self.stream)
                .map_err(|e| failed("all-reduce")(e.to_string()))?;
            stream::synchronize(self.stream).map_err(|e| failed("all-reduce")(e.to_string()))
        }
    }

    fn enter(&self) -> Result<(), NcclError> {
        // SAFETY: `context` was retained in `new` and is released only in Drop.
        unsafe { driver::ctx::set_current(self.context) }
            .map_err(|e| failed("context")(e.to_string()))
    }

    /// Run one NCCL call on the communicator's stream and wait for it.
    fn run(
        &self,
        during: &'static str,
        call: impl FnOnce(
            nccl_sys::ncclComm_t,
            nccl_sys::cudaStream_t,
        ) -> Result<nccl::NcclStatus, nccl::NcclError>,
    ) -> Result<(), NcclError> {
        self.enter()?;
        call(self.comm, self.stream as nccl_sys::cudaStream_t)
            .map_err(|e| failed(during)(format!("{e:?}")))?;
        // SAFETY: the stream was created in `new` and is destroyed only in Drop.
        unsafe { stream::synchronize(self.stream) }.map_err(|e| failed(during)(e.to_string()))
    }
}

impl Drop for Communicator {
    fn drop(&mut self) {
        if self.enter().is_ok() {
            // SAFETY: each handle was created in `new` and is destroyed once, here,
            // with its context current.
            unsafe {
                let _ = nccl::comm_destroy(self.comm);
                let _ = driver::free_sync(self.scratch);
                let _ = stream::destroy(self.stream);
                let _ = driver::primary_ctx::release(self.device);
            }
        }
    }
}

fn data_type(storage: Storage) -> nccl_sys::ncclDataType_t {
    use nccl_sys::ncclDataType_t as T;
    match storage {
        Storage::Bf16 => T::ncclBfloat16,
        Storage::F16 => T::ncclFloat16,
        Storage::F32 => T::ncclFloat32,
        Storage::I8 => T::ncclInt8,
        Storage::U8 => T::ncclUint8,
        Storage::I16 => panic!("NCCL has no 16-bit integer type; flashopt never reduces one"),
    }
}
