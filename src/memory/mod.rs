//! Precise heap accounting for the memory benchmarks: a counting global allocator.
//!
//! The binary installs [`CountingAllocator`] as its global allocator; the library then reads
//! the live and peak bytes around one training step. On the CPU backends every tensor buffer
//! and every autodiff node is a heap allocation, so the peak above the bytes live before the
//! step is exactly what the step's activations, graph and temporaries held. (Resident-set
//! figures, as the paper's memory_profiler used, mix in the allocator's caching and the
//! process baseline.) Where the allocator is not installed (library tests, other binaries)
//! the counters stay at zero and [`is_counting`] says so.

pub mod nvml;

use crate::device::DeviceSpec;
use crate::Result;
use burn::tensor::Device;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The system allocator, counting live and peak bytes.
pub struct CountingAllocator;

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwards the caller's layout to the system allocator unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr`/`layout` come from this allocator; the system allocator does the move.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grow(new_size);
        }
        p
    }
}

fn grow(bytes: usize) {
    ACTIVE.store(true, Ordering::Relaxed);
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

/// Keep freed heap memory for reuse instead of handing it back to the operating system at once.
///
/// glibc serves blocks of 128 KiB and more (every activation of a real batch) with fresh
/// `mmap`s and trims its heaps as soon as 128 KiB lie free at the top, so each training step
/// page-faults its activations in anew; the adjoint, whose few live states are freed and
/// reallocated every layer, pays that at every layer. Measured in fresh processes, three runs
/// each without and with this (`bench speed --workloads mlp,conv16 --depths 64 --reps 5`,
/// `docs/bench/malloc-ab.txt`): MLP Heun adjoint 94–159 → 83–95 ms, conv16 Euler adjoint
/// 926–1068 → 823–884 ms; backprop unchanged. This raises the `mmap` threshold to 32 MiB (larger blocks still go straight
/// to the system) and the trim threshold to 256 MiB (at most that much free memory is kept at a
/// heap's top). 64 MiB was enough for flex, but LibTorch's activations (ResNet-56, batch 128)
/// still page-faulted in anew: with 256 MiB, alternating twice, backprop 541–545 vs 559–566 ms
/// and adjoint 789–797 vs 859–900 ms (1 GiB did no better; flex unchanged at 1 GiB). Environment variables `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_`, when
/// set, win. Elsewhere than on glibc this does nothing.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        for (param, var, value) in [
            (M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", 32 << 20),
            (M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", 256 << 20),
        ] {
            if std::env::var_os(var).is_none() {
                // SAFETY: mallopt only changes glibc's tuning parameters; it is called before
                // any other thread exists (start of `main`).
                unsafe { mallopt(param, value) };
            }
        }
    }
}

/// Whether the counting allocator is installed in this process.
pub fn is_counting() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Whether the counting allocator sees the buffers of tensors on `device`: flex keeps them in
/// Rust's heap; LibTorch's (c10's allocator) and a GPU's are out of its sight, so a reading
/// there counts bookkeeping only and must not stand for activation memory (`doctor`).
pub fn sees(device: &burn::tensor::Device) -> bool {
    crate::device::is_flex(device)
}

/// Bytes currently allocated.
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Start a measurement: the peak is reset to the current live bytes, which are returned.
pub fn reset_peak() -> usize {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    live
}

/// Peak bytes allocated since [`reset_peak`].
pub fn peak_bytes() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Run `f` and return its result with the peak heap bytes it added above what was live before.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = reset_peak();
    let out = f();
    (out, peak_bytes().saturating_sub(base))
}

/// Run `f` and split the heap it used: its result, the peak bytes above what was live before
/// that are no longer held when it returns (activations, graph, temporaries), and the bytes it
/// still holds (what it returns, e.g. gradients). What the benchmarks report.
pub fn measure_transient<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let base = reset_peak();
    let out = f();
    let held = live_bytes().saturating_sub(base);
    let transient = peak_bytes().saturating_sub(base).saturating_sub(held);
    (out, transient, held)
}

/// Where a training step's activation memory is read, by device.
pub enum Meter {
    /// The counting allocator: exact heap bytes (CPU devices; see the module docs).
    Host,
    /// The GPU's memory as NVML reports it (see [`nvml`]): what the backend's caching allocator
    /// reserved at the step's peak above what the device held just before the step.
    Gpu(nvml::Nvml),
    /// A CubeCL device without NVML (a GPU of another vendor, a software Vulkan driver): the
    /// bytes its memory pools reserve from the device (burn's `memory_pool_usage`), read after
    /// the step above the reading before it. The pools keep their pages for reuse, so the
    /// growth is the step's peak, as NVML's `used`. (Their bytes in live allocations cannot
    /// stand in: a second thread sees only what the fusion queue has executed, so sampling
    /// them during a step missed most of it: 0.5 of 65 MiB on lavapipe.)
    Pool(Device),
    /// A GPU whose memory this process cannot read (no NVML, no pool statistics: LibTorch
    /// CUDA without NVML): steps run and time as usual, memory columns read 0. The reason is
    /// NVML's error, for the note that says so.
    Unread(String),
}

/// Bytes `device`'s memory pools reserve (0 where it reports none). Reading it executes
/// what the calling thread's fusion queue holds.
fn pool_reserved(device: &Device) -> u64 {
    device.memory_pool_usage().map_or(0, |u| u.bytes_reserved)
}

impl Meter {
    /// The meter for the device named `device` (`--device`): NVML for the GPU devices, where
    /// the driver has it, else the device's pool statistics where the backend keeps them.
    pub fn for_device(device: &str) -> Result<Self> {
        let spec = device.parse::<DeviceSpec>()?;
        let Some(index) = spec.gpu_index() else {
            return Ok(Meter::Host);
        };
        Ok(match nvml::Nvml::open(index) {
            Ok(nvml) => Meter::Gpu(nvml),
            Err(why) => match spec.device()? {
                d if d.memory_pool_usage().is_some() => Meter::Pool(d),
                _ => Meter::Unread(why),
            },
        })
    }

    /// Which step of a benchmark the reading comes from. The host counter sees every step
    /// alike, so the warm-up is skipped. A caching allocator serves a repeated step from the
    /// blocks it kept from the one before, so on a GPU only the first step shows the memory a
    /// step needs; that reading also holds the device's first-use costs (kernel modules,
    /// library workspaces, autotuning scratch), which do not depend on the depth.
    pub fn reads_first_step(&self) -> bool {
        !matches!(self, Meter::Host)
    }

    /// Runs `step`, which must wait for the device before returning, and splits the memory it
    /// used: its result, the peak bytes above the baseline minus the bytes it still holds, and
    /// those held bytes. On the host they are measured; on a GPU, where cached blocks hide what
    /// is still live, `held` gives them (the gradients' size).
    pub fn measure<T>(
        &self,
        step: impl FnOnce() -> T,
        held: impl FnOnce(&T) -> usize,
    ) -> (T, usize, usize) {
        match self {
            Meter::Host => measure_transient(step),
            Meter::Gpu(nvml) => {
                let before = nvml.used();
                let sampler = nvml::Sampler::start(*nvml);
                let out = step();
                let peak = sampler.finish().saturating_sub(before) as usize;
                let held = held(&out);
                (out, peak.saturating_sub(held), held)
            }
            Meter::Pool(device) => {
                let before = pool_reserved(device);
                let out = step();
                let peak = pool_reserved(device).saturating_sub(before) as usize;
                let held = held(&out);
                (out, peak.saturating_sub(held), held)
            }
            Meter::Unread(_) => (step(), 0, 0),
        }
    }

    /// Whether this meter reads anything in this process.
    pub fn is_reading(&self) -> bool {
        matches!(self, Meter::Gpu(_) | Meter::Pool(_)) || is_counting()
    }

    /// One line saying what the memory columns count.
    pub fn describe(&self) -> &'static str {
        match self {
            Meter::Host => "peak heap bytes of one training step above the live baseline (counting allocator)",
            Meter::Gpu(_) => "peak GPU memory in use (NVML, sampled) during the first training step above the device's use just before it",
            Meter::Pool(_) => "bytes the device's memory pools reserved during the first training step above what they held before it (CubeCL's pool statistics)",
            Meter::Unread(_) => "not read on this device (0)",
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    #[test]
    #[allow(deprecated)] // burn marks its LibTorch device deprecated
    fn the_counter_sees_flex_tensors_only() {
        assert!(super::sees(&Device::flex()));
        assert!(super::sees(&Device::flex().autodiff()));
        #[cfg(feature = "tch")]
        assert!(!super::sees(&Device::libtorch().autodiff()));
        #[cfg(feature = "wgpu")]
        assert!(!super::sees(&Device::wgpu(
            burn::tensor::DeviceKind::DefaultDevice
        )));
    }
}
