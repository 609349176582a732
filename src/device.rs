//! Where tensors live and in which precision: the device is chosen at run time
//! (`--device flex|libtorch|libtorch-cuda:N|cuda:N`) and the float type with `--dtype f32|f64`.
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
    *device == Device::flex()
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
            _ => {
                if let Some(rest) = s.strip_prefix("libtorch-cuda:") {
                    Ok(DeviceSpec::LibTorchCuda(index(rest)?))
                } else if let Some(rest) = s.strip_prefix("cuda:") {
                    Ok(DeviceSpec::Cuda(index(rest)?))
                } else {
                    Err(Error::invalid(
                        "--device",
                        format!("`{s}`: expected flex, libtorch, libtorch-cuda:N or cuda:N"),
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
        }
    }
}

impl DeviceSpec {
    /// The burn device, or an error naming the cargo feature this build lacks.
    #[allow(deprecated)] // burn marks its LibTorch device deprecated; it is still PyTorch's kernels.
    pub fn device(&self) -> Result<Device> {
        match self {
            DeviceSpec::Flex => Ok(Device::flex()),
            #[cfg(feature = "tch")]
            DeviceSpec::LibTorch => Ok(Device::libtorch()),
            #[cfg(feature = "tch")]
            DeviceSpec::LibTorchCuda(i) => Ok(Device::libtorch_cuda(*i)),
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda(i) => Ok(Device::cuda(*i)),
            #[allow(unreachable_patterns)]
            other => Err(Error::invalid(
                "--device",
                format!(
                    "`{other}` needs a build with `--features {}`",
                    other.feature()
                ),
            )),
        }
    }

    fn feature(&self) -> &'static str {
        match self {
            DeviceSpec::Flex => "",
            DeviceSpec::LibTorch | DeviceSpec::LibTorchCuda(_) => "tch",
            DeviceSpec::Cuda(_) => "cuda",
        }
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
