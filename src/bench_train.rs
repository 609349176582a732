//! `bench train`: throughput and activation memory of whole training steps of the image models
//! (TinyResNet at several depths, He et al.'s CIFAR ResNet-56/110), per gradient mode, on random
//! 3×32×32 inputs with random labels, so the numbers can be set beside PyTorch's
//! (`bench/pytorch/bench_train.py`, which reads the same record fields).
//!
//! A step is what the trainer does per batch: forward, cross-entropy, backward (stacks in the
//! chosen mode) and the SGD update (lr 0.1, momentum 0.9, weight decay 5e-4, as the PyTorch
//! reference). The step time is the median over the timed steps, after one warm-up step that
//! also creates the optimizer's momentum buffers. The device is synchronised before a timer
//! stops, so asynchronous backends are timed to completion.
//!
//! Activation memory is measured as in [`crate::bench`]: the heap peak of forward and backward
//! above what was live before the step, minus the gradients still live when the backward
//! returns (read from the counting allocator of [`crate::memory`], so 0 outside the
//! `resnet-ode` binary and on devices whose memory is not host heap).

use crate::data::Batch;
use crate::device::{DeviceSpec, Placement};
use crate::grad::GradMode;
use crate::memory;
use crate::models::{Arch, InputShape, Model, ModelSpec};
use crate::norm::BnMode;
use crate::params::parameter_bytes;
use crate::rng::Rng;
use crate::scheme::Scheme;
use crate::trace::{self, Trace};
use crate::train::{step_gradients, DeviceBatch, Optimizer, OptimizerConfig};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

/// The PyTorch reference's learning rate (the value does not change the step's cost).
const LR: f64 = 0.1;
/// CIFAR-10's image shape and classes, which the benchmark inputs imitate.
const INPUT: InputShape = InputShape {
    channels: 3,
    height: 32,
    width: 32,
    classes: 10,
};

/// A benchmarked model, as named by `--models`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchModel {
    /// `tiny`: the paper's TinyResNet (P = 16), at each of the tiny depths.
    Tiny,
    /// `resnetL`: He et al.'s L-layer CIFAR ResNet with 1/N-scaled stages.
    CifarResNet(usize),
}

impl FromStr for BenchModel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let arch = match s.strip_prefix("resnet") {
            Some(layers) => format!("cifar-resnet{layers}").parse::<Arch>(),
            None => s.parse::<Arch>(),
        };
        match arch {
            Ok(Arch::Tiny) => Ok(BenchModel::Tiny),
            Ok(Arch::CifarResNet(l)) => Ok(BenchModel::CifarResNet(l)),
            Ok(Arch::Torchvision(_) | Arch::Authors(_)) | Err(_) => Err(Error::invalid(
                "--models",
                format!("`{s}`: expected tiny or resnetL with L = 6n+2 (resnet56, resnet110)"),
            )),
        }
    }
}

impl std::fmt::Display for BenchModel {
    /// The record's `model` field: `tiny`, `resnet56`, …
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchModel::Tiny => write!(f, "tiny"),
            BenchModel::CifarResNet(l) => write!(f, "resnet{l}"),
        }
    }
}

/// One benchmarked configuration (the fields `bench/pytorch/compare.py` reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainBenchRecord {
    /// `tiny`, `resnet56`, `resnet110`.
    pub model: String,
    /// TinyResNet: the stack depth N; CIFAR ResNets: the layer count (56, 110).
    pub depth: usize,
    pub scheme: String,
    pub mode: String,
    pub batch: usize,
    /// Median wall-clock time of one training step, in milliseconds.
    pub step_ms: f64,
    pub images_per_sec: f64,
    /// Largest heap peak of a step's forward and backward above the live baseline, gradients
    /// excluded.
    pub activation_peak_bytes: usize,
    pub device: String,
    /// The batch-norm policy (`cached` in records written before it was a choice).
    #[serde(default)]
    pub bn: BnMode,
}

/// One configuration to measure.
#[derive(Debug, Clone)]
pub struct TrainBench {
    pub model: BenchModel,
    /// TinyResNet's stack depth N (ignored for the CIFAR ResNets, whose depth is their name's).
    pub depth: usize,
    pub scheme: Scheme,
    pub mode: GradMode,
    pub batch: usize,
    /// Timed steps (after one warm-up step).
    pub steps: usize,
    pub seed: u64,
    /// The `--device` string, copied into the record.
    pub device: String,
    /// Batch-norm policy under the adjoint (`recompute` is the paper's: batch statistics of the
    /// reconstructed input).
    pub bn: BnMode,
    /// Write a profiler trace of one more step, after the timed ones, into this folder.
    pub trace: Option<PathBuf>,
}

impl TrainBench {
    /// The model this configuration trains.
    fn spec(&self) -> ModelSpec {
        match self.model {
            BenchModel::Tiny => ModelSpec {
                depth: Some(self.depth),
                scheme: self.scheme,
                ..ModelSpec::default()
            },
            BenchModel::CifarResNet(layers) => ModelSpec {
                arch: Arch::CifarResNet(layers),
                scheme: self.scheme,
                ..ModelSpec::default()
            },
        }
    }

    /// The trace's file name: model, depth, scheme and mode, e.g. `tiny16-euler-adjoint`, and
    /// the batch-norm policy where it is not the default (`tiny16-euler-adjoint-recompute`).
    pub fn name(&self) -> String {
        let model = match self.model {
            BenchModel::Tiny => format!("tiny{}", self.depth),
            BenchModel::CifarResNet(_) => self.model.to_string(),
        };
        let bn = match self.bn {
            BnMode::Cached => String::new(),
            other => format!("-{other}"),
        };
        format!("{model}-{}-{}{bn}", self.scheme, self.mode).replace(':', "")
    }

    /// The record's `depth`: N for TinyResNet, the layer count for a CIFAR ResNet.
    fn record_depth(&self) -> usize {
        match self.model {
            BenchModel::Tiny => self.depth,
            BenchModel::CifarResNet(layers) => layers,
        }
    }

    /// Rejects settings that cannot run, naming the flag (call it on every configuration before
    /// measuring any, so a bad flag fails at once).
    pub fn check(&self) -> Result<()> {
        if self.batch == 0 {
            return Err(Error::invalid("--batch", "must be at least 1"));
        }
        if self.steps == 0 {
            return Err(Error::invalid("--steps", "must be at least 1"));
        }
        if self.model == BenchModel::Tiny && self.depth < self.scheme.min_functions() {
            return Err(Error::invalid(
                "--tiny-depths",
                format!(
                    "{}: {} needs at least {} residual functions",
                    self.depth,
                    self.scheme,
                    self.scheme.min_functions()
                ),
            ));
        }
        if self.trace.is_some() {
            trace::check(&self.device.parse()?)?;
        }
        self.spec().check(self.mode)
    }
}

/// Trains the configured model for one warm-up and `steps` timed steps on a fixed random batch.
pub fn measure(p: &Placement, cfg: &TrainBench) -> Result<TrainBenchRecord> {
    cfg.check()?;
    let mut model = cfg
        .spec()
        .init(p, INPUT, &mut Rng::derive(cfg.seed, "model init"))?;
    let batch = DeviceBatch::new(p, &random_batch(cfg.batch, cfg.seed), INPUT.classes);
    let mut optimizer = Optimizer::new(OptimizerConfig::default());
    let meter = memory::Meter::for_device(&cfg.device)?;
    let mut times = Vec::with_capacity(cfg.steps);
    let mut peak = 0;
    for k in 0..=cfg.steps {
        let start = Instant::now();
        let (next, bytes) = step(model, &batch, cfg, &mut optimizer, p, &meter, k)?;
        model = next;
        if k > 0 {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        if (k == 0) == meter.reads_first_step() {
            peak = peak.max(bytes);
        }
    }
    if let Some(dir) = &cfg.trace {
        // One more step, untimed: the profiler's own overhead stays out of `step_ms`.
        let spec: DeviceSpec = cfg.device.parse()?;
        let trace = Trace::start(&spec, trace::path_in(dir, &cfg.name()))?;
        step(model, &batch, cfg, &mut optimizer, p, &meter, cfg.steps + 1)?;
        trace.finish()?;
    }
    let step_ms = median(&mut times);
    Ok(TrainBenchRecord {
        model: cfg.model.to_string(),
        depth: cfg.record_depth(),
        scheme: cfg.scheme.to_string(),
        mode: cfg.mode.to_string(),
        batch: cfg.batch,
        step_ms,
        images_per_sec: cfg.batch as f64 / (step_ms / 1e3).max(1e-12),
        activation_peak_bytes: peak,
        device: cfg.device.clone(),
        bn: cfg.bn,
    })
}

/// One training step: the updated model and the step's activation peak (gradients excluded).
fn step(
    model: Model,
    batch: &DeviceBatch,
    cfg: &TrainBench,
    optimizer: &mut Optimizer,
    p: &Placement,
    meter: &memory::Meter,
    k: usize,
) -> Result<(Model, usize)> {
    let gradients = || {
        let grads = step_gradients(&model, batch, cfg.mode, cfg.bn);
        // A GPU reading must see the whole step: wait for the device.
        let _ = p.device.sync();
        grads
    };
    let (grads, peak) = if k == 0 || !meter.reads_first_step() {
        // The gradients a step holds: one per parameter.
        let held = parameter_bytes(&model, p.precision.bytes());
        let (grads, peak, _) = meter.measure(gradients, |_| held);
        (grads, peak)
    } else {
        (gradients(), 0)
    };
    if !grads.loss.is_finite() {
        return Err(Error::NonFinite {
            what: format!(
                "the benchmark loss of {} depth {} ({}, {})",
                cfg.model,
                cfg.record_depth(),
                cfg.scheme,
                cfg.mode
            ),
        });
    }
    let model = optimizer.step(model, grads.grads, LR);
    p.device
        .sync()
        .map_err(|e| Error::invalid("--device", format!("{}: {e:?}", cfg.device)))?;
    Ok((model, peak))
}

/// Standard normal 3×32×32 images with uniformly random labels, fixed by `seed`.
fn random_batch(batch: usize, seed: u64) -> Batch {
    let mut rng = Rng::derive(seed, "benchmark batch");
    let len = batch * INPUT.channels * INPUT.height * INPUT.width;
    Batch {
        images: rng.normals(len).into_iter().map(|v| v as f32).collect(),
        labels: (0..batch).map(|_| rng.below(INPUT.classes)).collect(),
        batch,
        channels: INPUT.channels,
        height: INPUT.height,
        width: INPUT.width,
    }
}

/// The median of `values` (not empty: `steps ≥ 1` is checked).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
