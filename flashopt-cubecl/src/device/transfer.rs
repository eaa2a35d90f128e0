//! Host <-> device copies of large buffers in bounded chunks.
//!
//! cubecl 0.10 copies a host slice to the device from pageable memory after copying
//! it twice on the host (`create_from_slice`), and reads a buffer above 100 MB back
//! into pageable memory; on the H100 a 1.7 GB state buffer went up at about
//! 0.2 GB/s. Every transfer here moves at most [`CHUNK_BYTES`] at a time.
//!
//! - CUDA ([`HostTransfers`] for `CudaRuntime`): through two pinned host buffers and
//!   two streams of the device's context (kept per device between copies), so that
//!   filling (or emptying) one chunk on the host overlaps the DMA of the other.
//!   Reads land straight in their destinations ([`download_into`]).
//! - Buffers that start as one repeated byte are written on the device ([`filled`]).
//! - Any runtime (the default methods, used for HIP): a chunk is filled in one reused
//!   host buffer, created as a small device buffer and copied into place on the
//!   device; a read copies a chunk on the device into a small buffer, which cubecl
//!   reads back through its pinned staging memory.

use cubecl::prelude::*;
use cubecl::server::Handle;

/// Bytes per chunk: below glibc's largest mmap threshold (32 MiB), so the reused
/// host buffer and cubecl's own copies of it come from the heap, not fresh pages;
/// below cubecl's 100 MB limit for pinned read-back.
pub const CHUNK_BYTES: usize = 16 << 20;
/// Device buffers are allocated in whole copy words.
const WORD: usize = 16;
const UNITS: u32 = 256;

#[cube(launch_unchecked)]
fn copy_words(
    src: &Array<Vector<u32, Const<4>>>,
    dst: &mut Array<Vector<u32, Const<4>>>,
    src_offset: usize,
    dst_offset: usize,
    len: usize,
) {
    if ABSOLUTE_POS < len {
        dst[dst_offset + ABSOLUTE_POS] = src[src_offset + ABSOLUTE_POS];
    }
}

#[cube(launch_unchecked)]
fn fill_words(
    pattern: &Array<Vector<u32, Const<4>>>,
    dst: &mut Array<Vector<u32, Const<4>>>,
    len: usize,
) {
    if ABSOLUTE_POS < len {
        dst[ABSOLUTE_POS] = pattern[0];
    }
}

/// `dst[dst_offset..][..words] = src[src_offset..][..words]`, in 16-byte words.
///
/// # Safety
/// Both buffers must hold the words named.
unsafe fn copy<R: Runtime>(
    client: &ComputeClient<R>,
    (src, src_offset): (&Handle, usize),
    (dst, dst_offset): (&Handle, usize),
    words: usize,
) {
    let cubes = u32::try_from(words.div_ceil(UNITS as usize)).expect("fewer than 2^32 cubes");
    // SAFETY: the caller guarantees both buffers hold the words named (this
    // function's contract); the kernel touches words `offset..offset + words` only.
    unsafe {
        copy_words::launch_unchecked::<R>(
            client,
            CubeCount::Static(cubes, 1, 1),
            CubeDim::new_1d(UNITS),
            ArrayArg::from_raw_parts(src.clone(), (src_offset + words) * 4),
            ArrayArg::from_raw_parts(dst.clone(), (dst_offset + words) * 4),
            src_offset,
            dst_offset,
            words,
        );
    }
}

/// The device buffer size for `len` bytes: whole 16-byte words, at least one.
pub fn padded_len(len: usize) -> usize {
    len.div_ceil(WORD).max(1) * WORD
}

/// Host <-> device copies of whole buffers, as fast as the runtime allows.
pub trait HostTransfers: crate::codegen::emit::TargetRuntime {
    /// A new device buffer of `len` bytes ([`padded_len`] allocated; the padding is
    /// zero), chunk by chunk: `fill(offset, chunk)` writes bytes `offset..offset +
    /// chunk.len()` of the buffer into `chunk`.
    fn upload(
        client: &ComputeClient<Self>,
        len: usize,
        fill: &(dyn Fn(usize, &mut [u8]) + Sync),
    ) -> Handle {
        upload_through_device_copies(client, len, fill)
    }

    /// As [`Self::upload`], into the existing buffer `dst` (bytes past the first
    /// [`padded_len`]`(len)` are left alone): handles and views of `dst` stay valid,
    /// and nothing new is allocated on the device but chunk-sized staging.
    ///
    /// # Panics
    /// If `dst` holds fewer than [`padded_len`]`(len)` bytes.
    fn upload_into(
        client: &ComputeClient<Self>,
        dst: &Handle,
        len: usize,
        fill: &(dyn Fn(usize, &mut [u8]) + Sync),
    ) {
        assert_holds(dst, len);
        upload_into_through_device_copies(client, dst, len, fill)
    }

    /// The first `len` bytes of a device buffer allocated by [`Self::upload`] or
    /// holding [`padded_len`] bytes, given to `take(offset, piece)` in order, piece
    /// by piece, on this thread (the next piece may be on its way meanwhile). Blocks
    /// until every piece is taken.
    fn download_with(
        client: &ComputeClient<Self>,
        src: &Handle,
        len: usize,
        take: &mut dyn FnMut(usize, &[u8]),
    ) {
        take(0, &download_through_device_copies(client, src, len));
    }
}

impl HostTransfers for cubecl::hip::HipRuntime {}

impl HostTransfers for cubecl::cuda::CudaRuntime {
    fn upload(
        client: &ComputeClient<Self>,
        len: usize,
        fill: &(dyn Fn(usize, &mut [u8]) + Sync),
    ) -> Handle {
        let total = padded_len(len);
        if total <= CHUNK_BYTES {
            return upload_through_device_copies(client, len, fill);
        }
        let dst = client.empty(total);
        Self::upload_into(client, &dst, len, fill);
        dst
    }

    fn upload_into(
        client: &ComputeClient<Self>,
        dst: &Handle,
        len: usize,
        fill: &(dyn Fn(usize, &mut [u8]) + Sync),
    ) {
        assert_holds(dst, len);
        let total = padded_len(len);
        if total > CHUNK_BYTES {
            // A queued kernel may still read the buffer (or the memory a new one
            // reuses).
            let pinned = device_address_after_queued_work(client, dst)
                .map_err(|e| e.to_string())
                .and_then(|ptr| pinned::upload(ptr, len, total, fill).map_err(|e| e.to_string()));
            match pinned {
                Ok(()) => return,
                // Chunks already copied are copied again, with the same bytes.
                Err(e) => pinned::warn_once(&e),
            }
        }
        upload_into_through_device_copies(client, dst, len, fill)
    }

    fn download_with(
        client: &ComputeClient<Self>,
        src: &Handle,
        len: usize,
        take: &mut dyn FnMut(usize, &[u8]),
    ) {
        if padded_len(len) > CHUNK_BYTES {
            // Kernels queued before the read may still write the buffer.
            let pinned = device_address_after_queued_work(client, src)
                .map_err(|e| e.to_string())
                .and_then(|ptr| pinned::download(ptr, len, take).map_err(|e| e.to_string()));
            match pinned {
                Ok(()) => return,
                // Pieces already taken are taken again, with the same bytes.
                Err(e) => pinned::warn_once(&e),
            }
        }
        take(0, &download_through_device_copies(client, src, len));
    }
}

/// A device call that failed: what flashopt asked and what cubecl or the driver said.
#[derive(Debug, thiserror::Error)]
#[error("device: {during}: {message}")]
pub struct DeviceError {
    pub during: &'static str,
    pub message: String,
}

/// The device address of `handle`'s first byte, once everything queued on the
/// client's stream has run: copies outside cubecl's stream must not overtake it.
/// An error where cubecl has no such buffer or the queued work failed (a kernel
/// fault leaves the context unusable: every later call fails too).
pub fn device_address_after_queued_work(
    client: &ComputeClient<cubecl::cuda::CudaRuntime>,
    handle: &Handle,
) -> Result<u64, DeviceError> {
    addresses_after_queued_work(client, &[handle]).map(|a| a[0])
}

/// As [`device_address_after_queued_work`], for several buffers and one wait.
pub fn addresses_after_queued_work(
    client: &ComputeClient<cubecl::cuda::CudaRuntime>,
    handles: &[&Handle],
) -> Result<Vec<u64>, DeviceError> {
    let mut resources = Vec::with_capacity(handles.len());
    for &handle in handles {
        resources.push(
            client
                .get_resource(handle.clone())
                .map_err(|e| DeviceError {
                    during: "looking up a buffer's address",
                    message: e.to_string(),
                })?,
        );
    }
    cubecl::future::block_on(client.sync()).map_err(|e| DeviceError {
        during: "waiting for the queued work",
        message: e.to_string(),
    })?;
    Ok(resources.iter().map(|r| r.resource().ptr).collect())
}

/// Runs `allocate` with every device allocation it makes on this thread's stream of
/// `client` sized exactly and owned alone (cubecl's persistent pool), for buffers that
/// live as long as an optimizer. cubecl's default pools cut allocations of hundreds of
/// MB from pages of up to a quarter of device memory and keep the pages: on an H200 a
/// 353M-parameter model's 1.86 GB of optimizer buffers left 13.2 GB reserved.
pub fn long_lived<R: Runtime, T: Send>(
    client: &ComputeClient<R>,
    allocate: impl FnOnce() -> T + Send,
) -> T {
    client
        .memory_persistent_allocation((), |()| allocate())
        .expect("cubecl's persistent allocation mode cannot fail to switch")
}

/// A new device buffer of `len` bytes ([`padded_len`] allocated, the padding too)
/// with every byte `byte`, written on the device: a buffer that starts as padding
/// (the flat gradients before the first step) costs no host memory and no bus time.
pub fn filled<R: Runtime>(client: &ComputeClient<R>, len: usize, byte: u8) -> Handle {
    let total = padded_len(len);
    if total <= CHUNK_BYTES {
        return client.create_from_slice(&vec![byte; total]);
    }
    let pattern = client.create_from_slice(&[byte; WORD]);
    let dst = client.empty(total);
    let words = total / WORD;
    let cubes = u32::try_from(words.div_ceil(UNITS as usize)).expect("fewer than 2^32 cubes");
    // SAFETY: `pattern` holds one word, `dst` `words` of them.
    unsafe {
        fill_words::launch_unchecked::<R>(
            client,
            CubeCount::Static(cubes, 1, 1),
            CubeDim::new_1d(UNITS),
            ArrayArg::from_raw_parts(pattern, 4),
            ArrayArg::from_raw_parts(dst.clone(), words * 4),
            words,
        );
    }
    dst
}

/// A new device buffer holding `bytes` (see [`HostTransfers::upload`]).
pub fn upload_bytes<R: HostTransfers>(client: &ComputeClient<R>, bytes: &[u8]) -> Handle {
    R::upload(client, bytes.len(), &|offset, chunk| {
        chunk.copy_from_slice(&bytes[offset..offset + chunk.len()])
    })
}

/// The first `len` bytes of a device buffer (see [`HostTransfers::download_with`]).
pub fn download<R: HostTransfers>(client: &ComputeClient<R>, src: &Handle, len: usize) -> Vec<u8> {
    let mut out = huge_page_buffer(len);
    download_into(client, src, vec![(0, out.as_mut_slice())]);
    out
}

/// Bytes of a device buffer straight into host slices: `targets` are `(offset,
/// slice)` pairs, each slice receiving the buffer's bytes `offset..offset +
/// slice.len()` (ranges apart from each other; bytes outside every range are not
/// read back). Large pieces are copied on several threads: one thread copies (and
/// first touches) host memory at a fraction of the bus's speed.
pub fn download_into<R: HostTransfers>(
    client: &ComputeClient<R>,
    src: &Handle,
    targets: Vec<(usize, &mut [u8])>,
) {
    let mut scatter = Scatter::new(targets);
    let len = scatter.end();
    if len > 0 {
        R::download_with(client, src, len, &mut |offset, piece| {
            scatter.write(offset, piece)
        });
    }
}

/// Host slices that receive the pieces of a download, by their offsets in it.
struct Scatter<'a> {
    /// Sorted by offset, apart from each other.
    targets: Vec<(usize, &'a mut [u8])>,
}

impl<'a> Scatter<'a> {
    fn new(mut targets: Vec<(usize, &'a mut [u8])>) -> Scatter<'a> {
        targets.retain(|(_, t)| !t.is_empty());
        targets.sort_by_key(|(offset, _)| *offset);
        for pair in targets.windows(2) {
            assert!(
                pair[0].0 + pair[0].1.len() <= pair[1].0,
                "download targets overlap at byte {}",
                pair[1].0
            );
        }
        Scatter { targets }
    }

    /// One past the last byte any target wants.
    fn end(&self) -> usize {
        self.targets.last().map_or(0, |(o, t)| o + t.len())
    }

    /// Copy `piece`, bytes `offset..` of the buffer, into the targets it overlaps.
    fn write(&mut self, offset: usize, piece: &[u8]) {
        const PER_THREAD: usize = 1 << 20;
        let end = offset + piece.len();
        let mut jobs: Vec<(&mut [u8], &[u8])> = Vec::new();
        for (start, target) in self.targets.iter_mut() {
            let (from, to) = ((*start).max(offset), (*start + target.len()).min(end));
            if from < to {
                let dst = &mut target[from - *start..to - *start];
                let src = &piece[from - offset..to - offset];
                jobs.extend(dst.chunks_mut(PER_THREAD).zip(src.chunks(PER_THREAD)));
            }
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        if jobs.len() < 2 || threads < 2 {
            jobs.into_iter().for_each(|(d, s)| d.copy_from_slice(s));
            return;
        }
        let per_thread = jobs.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let mut jobs = jobs;
            while !jobs.is_empty() {
                let batch: Vec<_> = jobs.drain(..per_thread.min(jobs.len())).collect();
                scope.spawn(move || batch.into_iter().for_each(|(d, s)| d.copy_from_slice(s)));
            }
        });
    }
}

/// `len` zero bytes whose pages are not touched yet, asked to be huge pages: a
/// fresh buffer's first touch costs the host a fault per page, and with 4 KiB
/// pages that, not the bus, bounded reads (3.8 GB/s on an H200 host).
fn huge_page_buffer(len: usize) -> Vec<u8> {
    let out = vec![0u8; len];
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = (out.as_ptr() as usize).next_multiple_of(HUGE);
        let end = (out.as_ptr() as usize + len) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside `out`; the advice changes no contents.
            // A kernel without transparent huge pages declines it, harmlessly.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    out
}

fn upload_through_device_copies<R: Runtime>(
    client: &ComputeClient<R>,
    len: usize,
    fill: &(dyn Fn(usize, &mut [u8]) + Sync),
) -> Handle {
    let total = padded_len(len);
    if total <= CHUNK_BYTES {
        let mut bytes = vec![0; total];
        fill(0, &mut bytes[..len]);
        return client.create_from_slice(&bytes);
    }
    let dst = client.empty(total);
    upload_into_through_device_copies(client, &dst, len, fill);
    dst
}

/// The size check every write into an existing buffer rests on: the copies below
/// are unchecked.
fn assert_holds(dst: &Handle, len: usize) {
    let (holds, needs) = (dst.size_in_used(), padded_len(len) as u64);
    assert!(
        holds >= needs,
        "upload_into: the buffer holds {holds} bytes, the upload writes {needs}"
    );
}

/// Chunk by chunk into `dst`, which holds at least `padded_len(len)` bytes
/// ([`assert_holds`]).
fn upload_into_through_device_copies<R: Runtime>(
    client: &ComputeClient<R>,
    dst: &Handle,
    len: usize,
    fill: &(dyn Fn(usize, &mut [u8]) + Sync),
) {
    let total = padded_len(len);
    let mut chunk = vec![0u8; CHUNK_BYTES.min(total)];
    for start in (0..total).step_by(CHUNK_BYTES) {
        let end = (start + CHUNK_BYTES).min(total);
        let chunk = &mut chunk[..end - start];
        let real = len.clamp(start, end) - start;
        fill(start, &mut chunk[..real]);
        chunk[real..].fill(0);
        let src = client.create_from_slice(chunk);
        // SAFETY: `src` holds the chunk, `dst` the whole padded buffer (checked by
        // `assert_holds` in every caller, or allocated so by `upload`).
        unsafe { copy(client, (&src, 0), (dst, start / WORD), chunk.len() / WORD) };
    }
}

fn download_through_device_copies<R: Runtime>(
    client: &ComputeClient<R>,
    src: &Handle,
    len: usize,
) -> Vec<u8> {
    let total = padded_len(len);
    if total <= CHUNK_BYTES {
        let bytes = client.read_one_unchecked(src.clone());
        return bytes[..len].to_vec();
    }
    let mut out = Vec::with_capacity(len);
    let staging = client.empty(CHUNK_BYTES);
    for start in (0..total).step_by(CHUNK_BYTES) {
        let end = (start + CHUNK_BYTES).min(total);
        // SAFETY: `src` holds `total` bytes, `staging` a chunk.
        unsafe {
            copy(
                client,
                (src, start / WORD),
                (&staging, 0),
                (end - start) / WORD,
            )
        };
        let bytes = client.read_one_unchecked(staging.clone());
        let real = len.clamp(start, end) - start;
        out.extend_from_slice(&bytes[..real]);
    }
    out
}

/// CUDA copies through pinned host memory, double-buffered.
pub(crate) mod pinned {
    use cudarc::driver::result::{self, DriverError, stream};
    use cudarc::driver::sys::{self, CUdeviceptr, CUstream};

    use super::CHUNK_BYTES;

    /// The pinned path failed (the driver said why): the copies still happen, through
    /// cubecl, slower. Said once per process.
    pub fn warn_once(error: &str) {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            eprintln!(
                "flashopt: pinned host copies failed ({error}); copying through cubecl instead"
            )
        });
    }

    /// Two pinned chunk buffers and a stream for each, in the primary context of the
    /// device that owns the memory at `ptr` (the context cubecl-cuda works in), which
    /// stays retained until they are freed.
    struct Lanes {
        device: sys::CUdevice,
        buffers: [*mut u8; 2],
        streams: [CUstream; 2],
    }

    /// The device that owns the memory at `ptr`.
    pub fn device_of(ptr: CUdeviceptr) -> Result<sys::CUdevice, DriverError> {
        let device = enter_context_of(ptr)?;
        // SAFETY: `enter_context_of` retained this context once; this releases it.
        unsafe { result::primary_ctx::release(device)? };
        Ok(device)
    }

    /// Make the primary context of the device owning `ptr` current on this thread
    /// (cubecl-cuda may run its work on another thread) and retain it.
    fn enter_context_of(ptr: CUdeviceptr) -> Result<sys::CUdevice, DriverError> {
        // Pointer attributes need some current context: with unified addressing any
        // device's answers for every pointer.
        let probe = result::device::get(0)?;
        let mut ordinal: std::ffi::c_int = 0;
        // SAFETY: the probe's context is retained before it is made current and
        // released after; the attribute query writes one c_int into `ordinal`; the
        // found device's context is retained once, for the caller to release.
        unsafe {
            result::ctx::set_current(result::primary_ctx::retain(probe)?)?;
            let found = sys::cuPointerGetAttribute(
                (&mut ordinal as *mut std::ffi::c_int).cast(),
                sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                ptr,
            )
            .result();
            let device = found.and_then(|()| result::device::get(ordinal));
            let entered = device.and_then(|d| {
                result::ctx::set_current(result::primary_ctx::retain(d)?)?;
                Ok(d)
            });
            result::primary_ctx::release(probe)?;
            entered
        }
    }

    // SAFETY: the pinned buffers and streams belong to the device's primary context,
    // which any thread may make current; one owner at a time uses them.
    unsafe impl Send for Lanes {}

    /// Lanes kept between copies, at most one set per device: pinning and unpinning
    /// host memory and creating streams cost milliseconds a copy (an optimizer's
    /// upload makes one copy per stored part). Kept for the process's lifetime.
    static KEPT: std::sync::Mutex<Vec<Lanes>> = std::sync::Mutex::new(Vec::new());

    impl Lanes {
        /// Lanes for the device owning `ptr`, whose primary context is then current on
        /// this thread: kept ones if there are, else new ones.
        fn take(ptr: CUdeviceptr) -> Result<Lanes, DriverError> {
            let device = enter_context_of(ptr)?;
            let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
            match kept.iter().position(|l| l.device == device) {
                Some(i) => {
                    let lanes = kept.swap_remove(i);
                    // The kept lanes hold a retain of the context already.
                    // SAFETY: releases the retain `enter_context_of` just took.
                    unsafe { result::primary_ctx::release(device)? };
                    Ok(lanes)
                }
                None => Lanes::new(device),
            }
        }

        /// Keep these lanes for the next copy on their device (after a copy that
        /// succeeded; their streams are idle).
        fn keep(self) {
            let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
            if kept.iter().all(|l| l.device != self.device) {
                kept.push(self);
            }
        }

        /// New lanes in `device`'s primary context, current on this thread and retained
        /// once for them.
        fn new(device: sys::CUdevice) -> Result<Lanes, DriverError> {
            let mut lanes = Lanes {
                device,
                buffers: [std::ptr::null_mut(); 2],
                streams: [std::ptr::null_mut(); 2],
            };
            for k in 0..2 {
                // SAFETY: pinned host memory in the current (the device's) context,
                // freed once in Drop.
                lanes.buffers[k] = unsafe { result::malloc_host(CHUNK_BYTES, 0)? }.cast();
                lanes.streams[k] = stream::create(stream::StreamKind::NonBlocking)?;
            }
            Ok(lanes)
        }

        fn buffer(&mut self, k: usize) -> &mut [u8] {
            // SAFETY: each buffer is CHUNK_BYTES of pinned host memory, used by one
            // copy at a time (callers synchronize its stream before touching it).
            unsafe { std::slice::from_raw_parts_mut(self.buffers[k], CHUNK_BYTES) }
        }

        fn wait(&self, k: usize) -> Result<(), DriverError> {
            // SAFETY: the stream was created in `new` and is destroyed only in Drop.
            unsafe { stream::synchronize(self.streams[k]) }
        }
    }

    impl Drop for Lanes {
        fn drop(&mut self) {
            for k in 0..2 {
                // SAFETY: each stream and buffer was created in `new` (null where
                // creation failed) and is destroyed once, here, after its work ended.
                unsafe {
                    if !self.streams[k].is_null() {
                        let _ = stream::synchronize(self.streams[k]);
                        let _ = stream::destroy(self.streams[k]);
                    }
                    if !self.buffers[k].is_null() {
                        let _ = result::free_host(self.buffers[k].cast());
                    }
                }
            }
            // SAFETY: releases the retain these lanes held since `new`.
            let _ = unsafe { result::primary_ctx::release(self.device) };
        }
    }

    /// `write(offset, piece)` for pieces of `dst` on several threads: one thread
    /// copies (and first touches) host memory at a fraction of the bus's speed.
    fn in_parallel(dst: &mut [u8], write: &(dyn Fn(usize, &mut [u8]) + Sync)) {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let piece = dst.len().div_ceil(threads).max(1 << 20);
        std::thread::scope(|scope| {
            for (i, part) in dst.chunks_mut(piece).enumerate() {
                scope.spawn(move || write(i * piece, part));
            }
        });
    }

    /// Fill and copy chunk `i` through lane `i % 2` while chunk `i - 1` is in flight.
    pub fn upload(
        ptr: CUdeviceptr,
        len: usize,
        total: usize,
        fill: &(dyn Fn(usize, &mut [u8]) + Sync),
    ) -> Result<(), DriverError> {
        let mut lanes = Lanes::take(ptr)?;
        for (i, start) in (0..total).step_by(CHUNK_BYTES).enumerate() {
            let k = i % 2;
            let end = (start + CHUNK_BYTES).min(total);
            let real = len.clamp(start, end) - start;
            lanes.wait(k)?;
            let stream = lanes.streams[k];
            let chunk = &mut lanes.buffer(k)[..end - start];
            in_parallel(&mut chunk[..real], &|at, piece| fill(start + at, piece));
            chunk[real..].fill(0);
            // SAFETY: the device buffer holds `total` bytes from `ptr`; the pinned
            // chunk stays untouched until the lane's stream is synchronized.
            unsafe { result::memcpy_htod_async(ptr + start as u64, chunk, stream)? };
        }
        lanes.wait(0)?;
        lanes.wait(1)?;
        lanes.keep();
        Ok(())
    }

    /// Copy chunk `i` back through lane `i % 2` while `take` has chunk `i - 1`.
    pub fn download(
        ptr: CUdeviceptr,
        len: usize,
        take: &mut dyn FnMut(usize, &[u8]),
    ) -> Result<(), DriverError> {
        let mut lanes = Lanes::take(ptr)?;
        let starts: Vec<usize> = (0..len).step_by(CHUNK_BYTES).collect();
        let request = |lanes: &mut Lanes, i: usize| -> Result<(), DriverError> {
            let (start, k) = (starts[i], i % 2);
            let n = (len - start).min(CHUNK_BYTES);
            let stream = lanes.streams[k];
            // SAFETY: the device buffer holds `len` bytes from `ptr`.
            unsafe {
                result::memcpy_dtoh_async(&mut lanes.buffer(k)[..n], ptr + start as u64, stream)
            }
        };
        request(&mut lanes, 0)?;
        for i in 0..starts.len() {
            if i + 1 < starts.len() {
                request(&mut lanes, i + 1)?;
            }
            let k = i % 2;
            lanes.wait(k)?;
            let start = starts[i];
            let n = (len - start).min(CHUNK_BYTES);
            take(start, &lanes.buffer(k)[..n]);
        }
        lanes.keep();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scattered_pieces_land_in_their_targets_only() {
        let buffer: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
        let (mut a, mut b, mut c) = (vec![0u8; 7], vec![0u8; 3_000_000], vec![0u8; 1]);
        let mut scatter = Scatter::new(vec![
            (1_000_003, b.as_mut_slice()),
            (5, a.as_mut_slice()),
            (4_999_999, c.as_mut_slice()),
        ]);
        assert_eq!(scatter.end(), 5_000_000);
        // Uneven pieces, in order, as a download gives them.
        let mut offset = 0;
        for len in [3, 1 << 20, 2_500_000, 5_000_000] {
            let end = (offset + len).min(buffer.len());
            scatter.write(offset, &buffer[offset..end]);
            offset = end;
        }
        assert_eq!(a, buffer[5..12]);
        assert!(b == buffer[1_000_003..4_000_003]);
        assert_eq!(c, buffer[4_999_999..]);
    }

    #[test]
    #[should_panic(expected = "download targets overlap at byte 10")]
    fn overlapping_download_targets_are_refused() {
        let (mut a, mut b) = (vec![0u8; 11], vec![0u8; 4]);
        Scatter::new(vec![(0, a.as_mut_slice()), (10, b.as_mut_slice())]);
    }

    #[test]
    fn buffers_are_whole_words() {
        assert_eq!(padded_len(0), 16);
        assert_eq!(padded_len(1), 16);
        assert_eq!(padded_len(16), 16);
        assert_eq!(padded_len(CHUNK_BYTES + 2), CHUNK_BYTES + 16);
        assert_eq!(CHUNK_BYTES % WORD, 0);
    }
}
