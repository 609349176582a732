//! Where tensors live and in which precision: the device is chosen at run time
//! (`--device flex|libtorch|libtorch-cuda:N|cuda:N|vulkan[:N]|wgpu[:N]`) and the float type with `--dtype f32|f64`.
//!
//! burn fixes a device's default float type once per process, so resnet-ode never relies on it:
//! every tensor is created through a [`Placement`] with an explicit dtype, which lets f32 and f64
//! runs share one process (the tests do).

use crate::{Error, Result};
use burn::tensor::{DType, Device, Tensor, TensorCreationOptions, TensorData};
use std::str::FromStr;

/// The float precision of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Precision {
    F32,
    F64,
}

impl Precision {
    /// burn's dtype for this precision.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F64 => DType::F64,
        }
    }

    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F64 => 8,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F64 => "f64",
        })
    }
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Precision::F32),
            "f64" => Ok(Precision::F64),
            _ => Err(Error::invalid(
                "--dtype",
                format!("`{s}`: expected f32 or f64"),
            )),
        }
    }
}

/// Whether the adjoint's second host thread pays on `device` (see `grad.rs`): on flex, whose
/// small kernels run on the calling thread and leave a core idle, it does. LibTorch runs its own
/// OpenMP pool, and two host threads contend for it (`bench speed --device libtorch`: adjoint
/// 2.2–3.8× backprop with two threads, 1.35–1.96× with one); GPU kernels are asynchronous anyway.
/// There the adjoint runs on one thread.
pub fn overlaps_host_threads(device: &Device) -> bool {
    is_flex(device)
}

/// Whether `device` is flex's (with or without autodiff): the backend of the pure-Rust fast
/// paths, the second host thread and the counting allocator's readings.
pub fn is_flex(device: &Device) -> bool {
    use burn::backend::DispatchDevice;
    matches!(
        device.clone().inner().as_dispatch(),
        DispatchDevice::Flex(_)
    )
}

/// Whether `device` is LibTorch's, CPU or CUDA (with or without autodiff).
pub fn is_libtorch(device: &Device) -> bool {
    #[cfg(feature = "tch")]
    {
        use burn::backend::DispatchDevice;
        matches!(
            device.clone().inner().as_dispatch(),
            DispatchDevice::LibTorch(_)
        )
    }
    #[cfg(not(feature = "tch"))]
    {
        let _ = device;
        false
    }
}

/// Which compute device, as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// burn's pure-Rust CPU backend (always available).
    Flex,
    /// LibTorch on the CPU (feature `tch`).
    LibTorch,
    /// LibTorch on CUDA device N (feature `tch`).
    LibTorchCuda(usize),
    /// CubeCL CUDA device N (feature `cuda`).
    Cuda(usize),
    /// wgpu on Vulkan, adapter N or the default one (feature `vulkan`): kernels compiled to
    /// SPIR-V.
    Vulkan(Option<usize>),
    /// wgpu on whichever graphics API the machine offers (Vulkan, Metal, DirectX 12), adapter N
    /// or the default one (feature `wgpu`): kernels written in WGSL and translated by wgpu's
    /// naga, the path wgpu itself tests on every API. It needs no fix of ours: `vulkan` needs
    /// `scripts/gpu/patches/` on drivers without explicit workgroup layouts (Mesa's lavapipe).
    Wgpu(Option<usize>),
}

impl FromStr for DeviceSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let index = |rest: &str| {
            rest.parse::<usize>().map_err(|_| {
                Error::invalid(
                    "--device",
                    format!("`{s}`: expected a device index after `:`"),
                )
            })
        };
        match s {
            "flex" | "cpu" => Ok(DeviceSpec::Flex),
            "libtorch" => Ok(DeviceSpec::LibTorch),
            "vulkan" => Ok(DeviceSpec::Vulkan(None)),
            "wgpu" => Ok(DeviceSpec::Wgpu(None)),
            _ => {
                if let Some(rest) = s.strip_prefix("libtorch-cuda:") {
                    Ok(DeviceSpec::LibTorchCuda(index(rest)?))
                } else if let Some(rest) = s.strip_prefix("cuda:") {
                    Ok(DeviceSpec::Cuda(index(rest)?))
                } else if let Some(rest) = s.strip_prefix("vulkan:") {
                    Ok(DeviceSpec::Vulkan(Some(index(rest)?)))
                } else if let Some(rest) = s.strip_prefix("wgpu:") {
                    Ok(DeviceSpec::Wgpu(Some(index(rest)?)))
                } else {
                    Err(Error::invalid(
                        "--device",
                        format!("`{s}`: expected flex, libtorch, libtorch-cuda:N, cuda:N, vulkan, vulkan:N, wgpu or wgpu:N"),
                    ))
                }
            }
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Flex => write!(f, "flex"),
            DeviceSpec::LibTorch => write!(f, "libtorch"),
            DeviceSpec::LibTorchCuda(i) => write!(f, "libtorch-cuda:{i}"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceSpec::Vulkan(None) => write!(f, "vulkan"),
            DeviceSpec::Vulkan(Some(i)) => write!(f, "vulkan:{i}"),
            DeviceSpec::Wgpu(None) => write!(f, "wgpu"),
            DeviceSpec::Wgpu(Some(i)) => write!(f, "wgpu:{i}"),
        }
    }
}

impl DeviceSpec {
    /// The burn device, or an error naming what is missing: the cargo feature this build
    /// lacks, or (for a GPU) the driver or device that did not come up.
    #[allow(deprecated)] // burn marks its LibTorch device deprecated; it is still PyTorch's kernels.
    pub fn device(&self) -> Result<Device> {
        match self {
            DeviceSpec::Flex => Ok(Device::flex()),
            #[cfg(feature = "tch")]
            DeviceSpec::LibTorch => Ok(Device::libtorch()),
            #[cfg(feature = "tch")]
            DeviceSpec::LibTorchCuda(i) => self.probe(Device::libtorch_cuda(*i)),
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda(i) => self.probe(Device::cuda(*i)),
            #[cfg(feature = "vulkan")]
            DeviceSpec::Vulkan(i) => self.probe(Device::vulkan(adapter(*i))),
            #[cfg(feature = "wgpu")]
            DeviceSpec::Wgpu(i) => self.probe(Device::wgpu(adapter(*i))),
            #[allow(unreachable_patterns)]
            other => Err(Error::invalid(
                "--device",
                format!(
                    "`{other}` needs a build with `--features {}` (scripts/gpu/build.sh builds one)",
                    other.feature()
                ),
            )),
        }
    }

    /// The GPU's index for memory readings ([`crate::memory::Meter`]); None on the CPU.
    pub fn gpu_index(&self) -> Option<usize> {
        match self {
            DeviceSpec::Flex | DeviceSpec::LibTorch => None,
            DeviceSpec::LibTorchCuda(i) | DeviceSpec::Cuda(i) => Some(*i),
            DeviceSpec::Vulkan(i) | DeviceSpec::Wgpu(i) => Some(i.unwrap_or(0)),
        }
    }

    /// Refuses the precisions this device computes wrongly: f64 on `vulkan` and `wgpu`. Their
    /// kernels take `exp`, `tanh` and the other transcendental functions from GLSL.std.450 (or
    /// WGSL, which has no f64), defined for 16- and 32-bit floats only, and CubeCL emits them
    /// for f64 all the same: on Mesa's lavapipe f64 `exp` returned values near 1e-314 and
    /// `tanh` wrong ones (arithmetic and matmuls were right), so a Heun gradcheck at depth 8
    /// read a relative error of 3.5e-2 against flex's 7.2e-5. Silently wrong gradients are
    /// worse than an error.
    pub fn check_precision(&self, precision: Precision) -> Result<()> {
        match (self, precision) {
            (DeviceSpec::Vulkan(_) | DeviceSpec::Wgpu(_), Precision::F64) => Err(Error::invalid(
                "--dtype",
                format!(
                    "f64 is not supported on `--device {self}`: Vulkan's and WGSL's exp and tanh \
                     are defined for 32-bit floats only, so f64 results would be wrong; use \
                     f32 there, or f64 on flex, libtorch or cuda:N"
                ),
            )),
            _ => Ok(()),
        }
    }

    fn feature(&self) -> &'static str {
        match self {
            DeviceSpec::Flex => "",
            DeviceSpec::LibTorch | DeviceSpec::LibTorchCuda(_) => "tch",
            DeviceSpec::Cuda(_) => "cuda",
            DeviceSpec::Vulkan(_) => "vulkan",
            DeviceSpec::Wgpu(_) => "wgpu",
        }
    }

    /// Starts a GPU device by moving one value there and back. Its backend brings the driver
    /// up lazily and panics where the driver library, the device or an adapter is missing
    /// (cudarc's dlopen of libcuda, tch's CUDA check, wgpu's adapter request): that panic
    /// becomes an error naming the device, with the backend's own words on what is missing.
    #[cfg(any(
        feature = "tch",
        feature = "cuda",
        feature = "vulkan",
        feature = "wgpu"
    ))]
    fn probe(&self, device: Device) -> Result<Device> {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let t = Tensor::<1>::from_data(
                TensorData::new(vec![1.0f32], [1]),
                TensorCreationOptions::new(device.clone()).with_dtype(DType::F32),
            );
            to_vec(&t) == [1.0]
        }));
        std::panic::set_hook(hook);
        match started {
            Ok(true) => Ok(device),
            Ok(false) => Err(Error::invalid(
                "--device",
                format!("`{self}`: the device returned a wrong value on a round trip"),
            )),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown error".into());
                let why: String = why.chars().take(600).collect();
                Err(Error::invalid(
                    "--device",
                    format!("`{self}` could not be started (no GPU, driver library or adapter here?): {why}"),
                ))
            }
        }
    }
}

/// wgpu's adapter N (counted among discrete GPUs), or its own pick when none is named.
#[cfg(any(feature = "vulkan", feature = "wgpu"))]
fn adapter(index: Option<usize>) -> burn::tensor::DeviceKind {
    match index {
        Some(i) => burn::tensor::DeviceKind::DiscreteGpu(i),
        None => burn::tensor::DeviceKind::DefaultDevice,
    }
}

/// A device (with autodiff enabled, so parameters can be trained) and the run's precision.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The autodiff-enabled device parameters and graph tensors live on.
    pub device: Device,
    /// The float precision of every tensor of the run.
    pub precision: Precision,
}

impl Placement {
    /// Place on `device` (autodiff is switched on) in `precision`.
    pub fn new(device: Device, precision: Precision) -> Self {
        Self {
            device: device.autodiff(),
            precision,
        }
    }

    /// The flex CPU backend in `precision`: what tests and the default CLI use.
    pub fn flex(precision: Precision) -> Self {
        Self::new(Device::flex(), precision)
    }

    /// The same device without autodiff: tensors made here never record a graph.
    pub fn plain_device(&self) -> Device {
        self.device.clone().without_autodiff()
    }

    /// Creation options carrying the run's dtype (graph-recording device).
    pub fn options(&self) -> TensorCreationOptions {
        TensorCreationOptions::new(self.device.clone()).with_dtype(self.precision.dtype())
    }

    /// A tensor of the run's precision from row-major values.
    pub fn tensor<const D: usize>(&self, values: Vec<f64>, shape: [usize; D]) -> Tensor<D> {
        Tensor::from_data(TensorData::new(values, shape), self.options())
    }

    /// Zeros of the run's precision.
    pub fn zeros<const D: usize>(&self, shape: [usize; D]) -> Tensor<D> {
        Tensor::zeros(shape, self.options())
    }
}

/// A tensor's values as f64 (for metrics, reports and tests).
pub fn to_vec<const D: usize>(t: &Tensor<D>) -> Vec<f64> {
    t.clone()
        .into_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .unwrap_or_default()
}

/// Reject non-finite values, naming the tensor.
pub fn check_finite<const D: usize>(t: &Tensor<D>, what: &str) -> Result<()> {
    if to_vec(t).iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(Error::NonFinite { what: what.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f64_is_refused_only_on_the_wgpu_devices() {
        for spec in ["vulkan", "vulkan:1", "wgpu", "wgpu:0"] {
            let spec: DeviceSpec = spec.parse().expect("a device name");
            let err = spec
                .check_precision(Precision::F64)
                .expect_err("f64 refused")
                .to_string();
            assert!(
                err.contains("--dtype") && err.contains(&format!("--device {spec}")),
                "{err}"
            );
            assert!(spec.check_precision(Precision::F32).is_ok());
        }
        for spec in ["flex", "libtorch", "libtorch-cuda:0", "cuda:0"] {
            let spec: DeviceSpec = spec.parse().expect("a device name");
            assert!(spec.check_precision(Precision::F64).is_ok(), "{spec}");
        }
    }

    #[test]
    fn device_names_round_trip() {
        for name in [
            "flex",
            "libtorch",
            "libtorch-cuda:1",
            "cuda:0",
            "vulkan",
            "vulkan:2",
            "wgpu",
            "wgpu:1",
        ] {
            let spec: DeviceSpec = name.parse().unwrap();
            assert_eq!(spec.to_string(), name);
        }
        assert_eq!("vulkan".parse::<DeviceSpec>().unwrap().gpu_index(), Some(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap().gpu_index(), Some(3));
        assert_eq!("flex".parse::<DeviceSpec>().unwrap().gpu_index(), None);
        assert!("vulkan:".parse::<DeviceSpec>().is_err());
    }
}
