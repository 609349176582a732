//! `bench train --trace`: PyTorch's own profiler (Kineto, what `torch.profiler` runs) around a
//! training step on a LibTorch device, saved as a Chrome trace (chrome://tracing, Perfetto).
//! Every ATen operation we dispatch is in it, and on `libtorch-cuda` every CUDA kernel with its
//! device time, so a step of ours and one of PyTorch's (`bench/pytorch/bench_train.py --trace`)
//! are read by the same instrument: `scripts/trace-summary.py` counts and times both.
//! CubeCL devices have their own kernel log instead (`CUBECL_DEBUG_LOG`, README "GPU").

use std::path::{Path, PathBuf};

use crate::device::DeviceSpec;
use crate::error::{Error, Result};

/// A profiler running on this thread until [`Trace::finish`] writes its file.
#[derive(Debug)]
pub struct Trace {
    path: PathBuf,
}

/// Where the trace of one configuration goes: `dir/NAME.json`.
pub fn path_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

/// Rejects `--trace` on a device whose operations PyTorch's profiler cannot see.
pub fn check(device: &DeviceSpec) -> Result<()> {
    match device {
        DeviceSpec::LibTorch | DeviceSpec::LibTorchCuda(_) => Ok(()),
        other => Err(Error::invalid(
            "--trace",
            format!(
                "PyTorch's profiler sees LibTorch devices only (libtorch, libtorch-cuda:N), not \
                 `{other}`; on CubeCL devices set CUBECL_DEBUG_LOG=FILE \
                 CUBECL_DEBUG_OPTION=profile-medium for a log of every kernel"
            ),
        )),
    }
}

impl Trace {
    /// Starts tracing ATen operations (and CUDA kernels on `libtorch-cuda`) for `path`.
    pub fn start(device: &DeviceSpec, path: PathBuf) -> Result<Self> {
        check(device)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::file(dir, format!("cannot create the --trace folder: {e}")))?;
        }
        backend::start(matches!(device, DeviceSpec::LibTorchCuda(_)))
            .map_err(|e| Error::invalid("--trace", format!("PyTorch's profiler: {e}")))?;
        Ok(Self { path })
    }

    /// Stops the profiler and writes the trace atomically (Kineto writes a temporary file in
    /// the same folder, renamed once complete).
    pub fn finish(self) -> Result<PathBuf> {
        let tmp = crate::report::temp_path(&self.path)?;
        let saved = backend::stop(&tmp).map_err(|e| Error::file(&self.path, e));
        let complete = saved.and_then(|()| match std::fs::metadata(&tmp) {
            Ok(m) if m.len() > 0 => std::fs::rename(&tmp, &self.path)
                .map_err(|e| Error::file(&self.path, format!("cannot write: {e}"))),
            _ => Err(Error::file(&self.path, "the profiler wrote no trace")),
        });
        if complete.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        complete.map(|()| self.path)
    }
}

#[cfg(feature = "tch")]
mod backend {
    pub use crate::ops::aten::{profile_start as start, profile_stop as stop};
}

#[cfg(not(feature = "tch"))]
mod backend {
    //! Unreachable: `check` accepts LibTorch devices only, which need the `tch` feature.
    const WHY: &str = "this binary was built without the `tch` feature";

    pub fn start(_cuda: bool) -> Result<(), String> {
        Err(WHY.into())
    }

    pub fn stop(_path: &std::path::Path) -> Result<(), String> {
        Err(WHY.into())
    }
}
