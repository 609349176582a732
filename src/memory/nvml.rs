//! GPU memory as the driver sees it: NVML's `used` bytes of one device, loaded at run time.
//!
//! The counting allocator sees only host memory; on a GPU the activations live in device
//! memory owned by the backend's caching allocator (CubeCL's pools, LibTorch's c10 allocator).
//! Neither backend offers a resettable byte peak through burn, but both keep the memory they
//! reserve for reuse instead of returning it to the driver during a step, so the driver's
//! `used` figure only grows while a step runs, up to the step's peak. [`Sampler`] reads it
//! continuously on a second thread while the step runs (to be safe against a pool that does
//! give memory back mid-step) and reports the largest reading above the one taken just before.
//!
//! NVML is opened with `dlopen` (`libnvidia-ml.so.1`, which ships with the NVIDIA driver), so
//! the binary has no link-time dependency on it and CPU machines never load it.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

#[repr(C)]
#[derive(Default)]
struct NvmlMemory {
    total: u64,
    free: u64,
    used: u64,
}

type Init = unsafe extern "C" fn() -> c_int;
type HandleByIndex = unsafe extern "C" fn(c_uint, *mut *mut c_void) -> c_int;
type MemoryInfo = unsafe extern "C" fn(*mut c_void, *mut NvmlMemory) -> c_int;

const RTLD_NOW: c_int = 2;
unsafe extern "C" {
    fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

/// One GPU's memory counter.
#[derive(Clone, Copy)]
pub struct Nvml {
    device: *mut c_void,
    memory_info: MemoryInfo,
}

// SAFETY: NVML is thread-safe (its documentation: "all NVML functions are thread-safe"); the
// device handle is an opaque pointer valid for the whole process once NVML is initialised.
unsafe impl Send for Nvml {}

impl Nvml {
    /// Opens NVML and the GPU with this index (NVML's order, the same as CUDA's unless
    /// `CUDA_VISIBLE_DEVICES` reorders them).
    pub fn open(index: usize) -> std::result::Result<Self, String> {
        let missing = |what: &str| {
            format!("cannot read GPU memory: {what} (NVML, part of the NVIDIA driver)")
        };
        // SAFETY: dlopen/dlsym with NUL-terminated names; each symbol is cast to the signature
        // NVML's header (nvml.h) declares for it.
        unsafe {
            let lib = dlopen(c"libnvidia-ml.so.1".as_ptr(), RTLD_NOW);
            if lib.is_null() {
                return Err(missing("libnvidia-ml.so.1 not found"));
            }
            let sym = |name: &CStr| {
                let p = dlsym(lib, name.as_ptr());
                if p.is_null() {
                    Err(missing(&format!("symbol {name:?} missing")))
                } else {
                    Ok(p)
                }
            };
            let init: Init = std::mem::transmute(sym(c"nvmlInit_v2")?);
            let by_index: HandleByIndex =
                std::mem::transmute(sym(c"nvmlDeviceGetHandleByIndex_v2")?);
            let memory_info: MemoryInfo = std::mem::transmute(sym(c"nvmlDeviceGetMemoryInfo")?);
            let status = init();
            if status != 0 {
                return Err(missing(&format!("nvmlInit failed with status {status}")));
            }
            let mut device = std::ptr::null_mut();
            let status = by_index(index as c_uint, &mut device);
            if status != 0 {
                return Err(missing(&format!("no GPU {index} (status {status})")));
            }
            Ok(Self {
                device,
                memory_info,
            })
        }
    }

    /// Device memory in use now, all processes together (bytes), or 0 if the read fails.
    pub fn used(&self) -> u64 {
        let mut m = NvmlMemory::default();
        // SAFETY: `device` came from nvmlDeviceGetHandleByIndex_v2; `m` is a valid out-pointer.
        let status = unsafe { (self.memory_info)(self.device, &mut m) };
        if status == 0 {
            m.used
        } else {
            0
        }
    }
}

/// Reads [`Nvml::used`] on a second thread until dropped, keeping the largest reading.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling.
    pub fn start(nvml: Nvml) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(nvml.used()));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(nvml.used(), Ordering::Relaxed);
                    std::thread::sleep(std::time::Duration::from_micros(50));
                }
                peak.fetch_max(nvml.used(), Ordering::Relaxed);
            })
        };
        Self {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// Stops sampling and returns the largest reading (bytes).
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
