//! Memory and speed of one training step through a residual stack, per gradient mode.
//!
//! What is measured: the heap bytes a step (forward, loss, backward) allocates above what was
//! live before it, read from the counting global allocator of [`crate::memory`] (so only in
//! the `resnet-ode` binary) on the CPU backends; on a GPU, the device memory of the first step
//! above what the device held before it ([`memory::Meter`]). `activation_peak_bytes` is what activations,
//! the autodiff graph and temporaries held at the step's peak. The step time is the median wall-clock time of the
//! repetitions (after one warm-up step).
//!
//! The gradients are measured, not assumed: the bytes still live when the step returns (the
//! parameter gradients with their bookkeeping, and dL/dx_0) are reported as
//! `gradient_bytes` and subtracted from the step's peak.

use crate::device::{to_vec, Placement};
use crate::family::Family;
use crate::grad::{GradMode, StackGrads};
use crate::memory;
use crate::norm::BnMode;
use crate::params::parameter_bytes;
use crate::residual::{Activation, ConvBlockConfig, MlpConfig, Residual};
use crate::rng::Rng;
use crate::scheme::Scheme;
use crate::stack::Stack;
use crate::{Error, Result};
use burn::module::ModuleDisplay;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::time::Instant;

/// A benchmark workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Workload {
    /// The paper's memory experiment: batch 500, d = 500, one MLP 500→8→500 tanh shared by
    /// all N layers (tied, as `memory.py`), or N independent ones.
    Mlp { tied: bool },
    /// TinyResNet's conv block, batch 128, `C` channels, 10×10.
    Conv(usize),
}

impl FromStr for Workload {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mlp" | "mlp-tied" => Ok(Workload::Mlp { tied: true }),
            "mlp-untied" => Ok(Workload::Mlp { tied: false }),
            _ => match s.strip_prefix("conv").map(str::parse::<usize>) {
                Some(Ok(c)) if c > 0 => Ok(Workload::Conv(c)),
                _ => Err(Error::invalid(
                    "--workloads",
                    format!("`{s}`: expected mlp, mlp-untied or convC (e.g. conv16, conv64)"),
                )),
            },
        }
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Workload::Mlp { tied: true } => write!(f, "mlp-tied"),
            Workload::Mlp { tied: false } => write!(f, "mlp-untied"),
            Workload::Conv(c) => write!(f, "conv{c}"),
        }
    }
}

/// One measured configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchRecord {
    pub workload: String,
    pub scheme: String,
    pub mode: String,
    pub depth: usize,
    pub activation_peak_bytes: usize,
    pub gradient_bytes: usize,
    pub parameter_bytes: usize,
    /// Median step time in milliseconds.
    pub step_ms: f64,
    pub step_ms_all: Vec<f64>,
    pub device: String,
    pub dtype: String,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub scheme: Scheme,
    pub mode: GradMode,
    /// Batch-norm policy (conv workloads).
    pub bn: BnMode,
    pub depth: usize,
    pub reps: usize,
    pub seed: u64,
    pub device: String,
}

/// Measure one workload in one configuration.
pub fn measure(p: &Placement, w: Workload, cfg: &BenchConfig) -> Result<BenchRecord> {
    let mut rng = Rng::new(cfg.seed);
    match w {
        Workload::Mlp { tied } => {
            let m = MlpConfig {
                dim: 500,
                hidden: 8,
                activation: Activation::Tanh,
            };
            let stack = if tied {
                Stack::tied(m.init(p, &mut rng), cfg.depth, cfg.scheme)?
            } else {
                let fs = Family::Iid.functions(cfg.depth, &mut rng, |r| m.init(p, r));
                Stack::new(fs, cfg.scheme)?
            };
            let x = p.tensor((0..500 * 500).map(|_| rng.uniform()).collect(), [500, 500]);
            time_steps(p, w, &stack, x, cfg)
        }
        Workload::Conv(c) => {
            let b = ConvBlockConfig {
                channels: c,
                zero_init: false,
            };
            let fs = Family::Iid.functions(cfg.depth, &mut rng, |r| b.init(p, r));
            let x = p.tensor(rng.normals(128 * c * 100), [128, c, 10, 10]);
            time_steps(p, w, &Stack::new(fs, cfg.scheme)?, x, cfg)
        }
    }
}

/// One training step of `stack` from `x` with the loss mean(x_N²), waiting for the device.
fn loss_step<F, const D: usize>(
    stack: &Stack<F>,
    x: &Tensor<D>,
    mode: GradMode,
    bn: BnMode,
) -> StackGrads<D>
where
    F: Residual<D> + ModuleDisplay,
{
    let g = stack.loss_grads(x.clone(), mode, bn, |y| y.square().mean());
    // Reading a value waits for the device to finish the step.
    let _ = to_vec(&g.input.clone().sum());
    g
}

/// The activation memory of one training step of `stack` from `x` in `mode` (loss mean(x_N²)),
/// measured as the benchmarks measure it: the transient heap peak of the step, after one
/// warm-up step, the largest of `reps`. None without the counting allocator, or where it cannot
/// see the tensors (LibTorch, GPUs: [`memory::sees`]).
pub fn step_activation_bytes<F, const D: usize>(
    stack: &Stack<F>,
    x: &Tensor<D>,
    mode: GradMode,
    bn: BnMode,
    reps: usize,
) -> Option<usize>
where
    F: Residual<D> + ModuleDisplay,
{
    drop(loss_step(stack, x, mode, bn));
    if !memory::is_counting() || !memory::sees(&x.device()) {
        return None;
    }
    (0..reps.max(1))
        .map(|_| memory::measure_transient(|| loss_step(stack, x, mode, bn)).1)
        .max()
}

fn time_steps<F, const D: usize>(
    p: &Placement,
    w: Workload,
    stack: &Stack<F>,
    x: Tensor<D>,
    cfg: &BenchConfig,
) -> Result<BenchRecord>
where
    F: Residual<D> + ModuleDisplay,
{
    let step = || loss_step(stack, &x, cfg.mode, cfg.bn);
    let meter = memory::Meter::for_device(&cfg.device)?;
    let params = parameter_bytes(stack, p.precision.bytes());
    // What a step returns: a gradient per parameter and dL/dx_0.
    let grad_bytes = params + x.shape().num_elements() * p.precision.bytes();
    let (first, first_peak, first_held) = meter.measure(step, |_| grad_bytes);
    if !first.loss.is_finite() {
        return Err(Error::NonFinite {
            what: format!("benchmark loss ({w}, depth {})", cfg.depth),
        });
    }
    drop(first);
    let (mut times, mut peak, mut held) = (Vec::new(), 0usize, 0usize);
    if meter.reads_first_step() {
        (peak, held) = (first_peak, first_held);
    }
    for _ in 0..cfg.reps.max(1) {
        let t0 = Instant::now();
        let (grads, transient, grad_bytes) = match meter.reads_first_step() {
            false => memory::measure_transient(step),
            true => (step(), 0, 0),
        };
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        peak = peak.max(transient);
        held = held.max(grad_bytes);
        drop(grads);
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(BenchRecord {
        workload: w.to_string(),
        scheme: cfg.scheme.to_string(),
        mode: cfg.mode.to_string(),
        depth: cfg.depth,
        activation_peak_bytes: peak,
        gradient_bytes: held,
        parameter_bytes: params,
        step_ms: sorted[sorted.len() / 2],
        step_ms_all: times,
        device: cfg.device.clone(),
        dtype: format!("{:?}", p.precision).to_lowercase(),
    })
}
