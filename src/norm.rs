//! Batch normalisation that knows which pass it is in.
//!
//! burn's own BatchNorm picks training or inference behaviour from whether autodiff is on; the
//! adjoint needs finer control, because one training step evaluates each residual function up to
//! three times (forward, reconstruction, vector-Jacobian product) and the running statistics
//! must be updated exactly once. The policy under the adjoint is explicit ([`BnMode`]):
//!
//! - `cached` (default): the forward stores each evaluation's batch mean and variance (2·C numbers
//!   per BN per evaluation); the reconstruction normalises with exactly those statistics, and the
//!   vector-Jacobian product uses their *values* while differentiating through the statistics of
//!   the reconstructed input (a straight-through estimate: value of the forward, derivative of
//!   batch normalisation), so the adjoint's error still vanishes with depth;
//! - `frozen`: running statistics everywhere, in every gradient mode (the usual fine-tuning
//!   choice); the running statistics are not updated;
//! - `recompute`: batch statistics of whatever input the pass sees (the authors' resnet_cifar
//!   behaviour without its triple update of the running statistics).
//!
//! In every mode the running statistics are updated only by the forward pass.

use crate::device::Placement;
use crate::ops::batch_norm;
use burn::module::{Module, Param, RunningState};
use burn::tensor::module::batch_norm;
use burn::tensor::Tensor;
use std::str::FromStr;

/// Batch-norm policy under the adjoint (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum BnMode {
    #[default]
    Cached,
    Frozen,
    Recompute,
}

impl FromStr for BnMode {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "cached" => Ok(BnMode::Cached),
            "frozen" => Ok(BnMode::Frozen),
            "recompute" => Ok(BnMode::Recompute),
            _ => Err(crate::Error::invalid(
                "--bn",
                format!("`{s}`: expected cached, frozen or recompute"),
            )),
        }
    }
}

impl std::fmt::Display for BnMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BnMode::Cached => "cached",
            BnMode::Frozen => "frozen",
            BnMode::Recompute => "recompute",
        })
    }
}

/// Which pass a residual evaluation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The training forward: batch statistics, running statistics updated, statistics recorded
    /// when a store is attached.
    Forward,
    /// A recomputation from an exact stored input (checkpointing): batch statistics, no update.
    Replay,
    /// The adjoint's reconstruction (no graph).
    Reconstruct,
    /// The adjoint's recomputation with a graph at the reconstructed input.
    Vjp,
    /// Inference: running statistics.
    Eval,
}

/// Batch mean and biased variance of one BN evaluation, kept without a graph.
#[derive(Debug, Clone)]
pub struct BnStats {
    pub mean: Tensor<1>,
    pub var: Tensor<1>,
}

/// The batch statistics of one evaluation site: every BN's mean then variance, in call order,
/// packed into one tensor (one allocation per evaluation rather than two per batch norm: the
/// memory-free forward keeps one per step). Boxed, so a site without batch norm costs one word.
pub type PackedStats = Option<Box<Tensor<1>>>;

/// The context a residual evaluation passes to its batch norms.
pub struct Norm<'a> {
    mode: BnMode,
    phase: Phase,
    /// Statistics of this evaluation site: filled in the forward, read by the adjoint.
    stats: Option<&'a mut PackedStats>,
    /// Statistics recorded by this evaluation, packed into `stats` when it ends.
    pending: Vec<Tensor<1>>,
    offset: usize,
}

impl<'a> Norm<'a> {
    /// A context for one evaluation.
    pub fn new(mode: BnMode, phase: Phase, stats: Option<&'a mut PackedStats>) -> Self {
        Self {
            mode,
            phase,
            stats,
            pending: Vec::new(),
            offset: 0,
        }
    }

    /// Inference context (running statistics, nothing recorded).
    pub fn eval() -> Norm<'static> {
        Norm::new(BnMode::Frozen, Phase::Eval, None)
    }

    /// Plain training forward without a statistics store.
    pub fn train(mode: BnMode) -> Norm<'static> {
        Norm::new(mode, Phase::Forward, None)
    }

    /// The next batch norm's recorded statistics (`channels` wide), if any.
    fn cached(&mut self, channels: usize) -> Option<BnStats> {
        let packed = self.stats.as_ref()?.as_ref()?;
        if self.offset + 2 * channels > packed.dims()[0] {
            return None;
        }
        let mean = packed.clone().narrow(0, self.offset, channels);
        let var = packed.clone().narrow(0, self.offset + channels, channels);
        self.offset += 2 * channels;
        Some(BnStats { mean, var })
    }

    /// Whether this evaluation records its statistics: a store is attached and the policy
    /// reads them back (`cached`; `recompute` and `frozen` never do).
    fn records(&self) -> bool {
        self.stats.is_some() && self.mode == BnMode::Cached
    }

    fn record(&mut self, mean: Tensor<1>, var: Tensor<1>) {
        if self.records() {
            self.pending.push(mean.without_autodiff());
            self.pending.push(var.without_autodiff());
        }
    }
}

impl Drop for Norm<'_> {
    /// Pack what the evaluation recorded into its site's store.
    fn drop(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if let Some(store) = self.stats.as_mut() {
            **store = Some(Box::new(Tensor::cat(std::mem::take(&mut self.pending), 0)));
        }
    }
}

/// A batch-norm layer over dimension 1 of its input (features of an MLP, channels of a conv).
#[derive(Module, Debug)]
pub struct BatchNorm {
    pub gamma: Param<Tensor<1>>,
    pub beta: Param<Tensor<1>>,
    pub running_mean: RunningState<Tensor<1>>,
    pub running_var: RunningState<Tensor<1>>,
    /// Weight of the newest batch in the running statistics (PyTorch's 0.1).
    pub momentum: f64,
    pub epsilon: f64,
}

fn act<const D: usize>(x: Tensor<D>, relu: bool) -> Tensor<D> {
    if relu {
        crate::ops::relu(x)
    } else {
        x
    }
}

/// Give `t` the same autodiff context as `like` (mixing contexts in one op is not allowed).
pub fn like<const D: usize, const E: usize>(t: Tensor<D>, like: &Tensor<E>) -> Tensor<D> {
    if like.is_autodiff() {
        t.autodiff()
    } else {
        t.without_autodiff()
    }
}

impl BatchNorm {
    /// γ = 1, β = 0, running mean 0 and variance 1.
    pub fn new(p: &Placement, features: usize) -> Self {
        Self {
            gamma: Param::from_tensor(p.tensor(vec![1.0; features], [features])),
            beta: Param::from_tensor(p.zeros([features])),
            running_mean: RunningState::new(p.zeros([features]).detach()),
            running_var: RunningState::new(p.tensor(vec![1.0; features], [features]).detach()),
            momentum: 0.1,
            epsilon: 1e-5,
        }
    }

    /// Normalise `x` as the pass in `norm` requires.
    pub fn forward<const D: usize>(&self, x: Tensor<D>, norm: &mut Norm) -> Tensor<D> {
        self.forward_act(x, norm, false)
    }

    /// `relu(self.forward(x, norm))`, fused where the device has a kernel for it.
    pub fn forward_relu<const D: usize>(&self, x: Tensor<D>, norm: &mut Norm) -> Tensor<D> {
        self.forward_act(x, norm, true)
    }

    fn forward_act<const D: usize>(&self, x: Tensor<D>, norm: &mut Norm, relu: bool) -> Tensor<D> {
        let (g, b) = (self.gamma.val(), self.beta.val());
        if norm.mode == BnMode::Frozen || norm.phase == Phase::Eval {
            return act(self.with_running(x, g, b), relu);
        }
        self.batch(x, [g, b], norm, relu)
    }

    /// The training-time passes (`ops::batch_norm`: flex's or ATen's kernels, burn's ops on
    /// CubeCL), the ReLU fused: at the cached statistics a normalisation with the
    /// straight-through backward; where the statistics are recorded (the adjoint's forward)
    /// statistics, then a normalisation with them; elsewhere one training-mode batch norm
    /// (LibTorch: one ATen op, as PyTorch's).
    fn batch<const D: usize>(
        &self,
        x: Tensor<D>,
        [g, b]: [Tensor<1>; 2],
        norm: &mut Norm,
        relu: bool,
    ) -> Tensor<D> {
        let eps = self.epsilon;
        let cached = match (norm.phase, norm.mode) {
            (Phase::Reconstruct | Phase::Vjp, BnMode::Cached) => norm.cached(g.dims()[0]),
            _ => None,
        };
        if let Some(s) = cached {
            let (mean, var) = (like(s.mean, &x), like(s.var, &x));
            return batch_norm::normalize(x, [g, b, mean, var], eps, relu, true);
        }
        let update = norm.phase == Phase::Forward;
        if update && norm.records() {
            let (mean, var) = self.update_running(x.clone());
            norm.record(mean.clone(), var.clone());
            return batch_norm::normalize(x, [g, b, mean, var], eps, relu, false);
        }
        let running = [&self.running_mean, &self.running_var].map(|r| like(r.value_sync(), &x));
        let momentum = self.momentum;
        let (y, updated) = batch_norm::train(x, [g, b], running, [momentum, eps], relu, update);
        self.store_running(updated);
        y
    }

    fn with_running<const D: usize>(&self, x: Tensor<D>, g: Tensor<1>, b: Tensor<1>) -> Tensor<D> {
        let m = like(self.running_mean.value_sync(), &x);
        let v = like(self.running_var.value_sync(), &x);
        batch_norm(x, g, b, m, v, self.epsilon)
    }

    /// `x`'s batch statistics, and the running statistics updated by them (PyTorch's rule,
    /// unbiased variance). LibTorch updates them in place; elsewhere the new values go through
    /// `RunningState::update` (whose next read divides them by the number of updates, 1).
    fn update_running<const D: usize>(&self, x: Tensor<D>) -> (Tensor<1>, Tensor<1>) {
        let rm = like(self.running_mean.value_sync(), &x);
        let rv = like(self.running_var.value_sync(), &x);
        let (mean, var, updated) = batch_norm::update_statistics(x, [rm, rv], self.momentum);
        self.store_running(updated);
        (mean, var)
    }

    /// Stores running statistics computed as new tensors (`None`: updated in place).
    fn store_running(&self, updated: Option<(Tensor<1>, Tensor<1>)>) {
        if let Some((rm, rv)) = updated {
            self.running_mean.update(rm.without_autodiff());
            self.running_var.update(rv.without_autodiff());
        }
    }
}
