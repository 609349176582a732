//! SGD with momentum (optionally Nesterov) and AdamW, with PyTorch's update rules, acting on
//! [`GradientsParams`].
//!
//! Why not burn's optimizers: their state records are keyed by [`burn::module::ParamId`], and a
//! model rebuilt and loaded from a checkpoint gets new ids, so a resumed run would silently
//! restart its momentum; burn's momentum also defaults to a dampening of 0.1 where PyTorch (and
//! the paper's runs) use 0. Here the buffers are indexed by the parameter's position in the
//! model (the order of [`crate::params::named`]), saved as a safetensors file, and a resumed run
//! continues bit for bit.

use crate::device::Placement;
use crate::io::{load_weights, save_weights};
use crate::ops::{self, SgdRule};
use crate::params::named;
use crate::{Error, Result};
use burn::backend::{Dispatch, DispatchTensor, TensorMetadata};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Shape, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

/// Which optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OptimizerKind {
    Sgd,
    AdamW,
}

impl FromStr for OptimizerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sgd" => Ok(OptimizerKind::Sgd),
            "adamw" => Ok(OptimizerKind::AdamW),
            _ => Err(Error::invalid(
                "--optimizer",
                format!("`{s}`: expected sgd or adamw"),
            )),
        }
    }
}

impl std::fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::AdamW => "adamw",
        })
    }
}

/// Optimizer hyper-parameters (the learning rate comes from the schedule at each step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    /// SGD momentum μ (0 disables it).
    pub momentum: f64,
    pub nesterov: bool,
    /// SGD: L2 term `g + wd·w`; AdamW: decoupled decay `w ← w(1 − lr·wd)`.
    pub weight_decay: f64,
    /// AdamW's β₁, β₂.
    pub betas: [f64; 2],
    pub epsilon: f64,
}

impl Default for OptimizerConfig {
    /// The paper's SGD: momentum 0.9, weight decay 5e-4.
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Sgd,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 5e-4,
            betas: [0.9, 0.999],
            epsilon: 1e-8,
        }
    }
}

impl OptimizerConfig {
    /// Rejects settings outside their ranges, naming the flag.
    pub fn check(&self) -> Result<()> {
        let bad = |flag: &str, v: f64| Error::invalid(flag, format!("{v} is out of range"));
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(bad("--momentum", self.momentum));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(bad("--weight-decay", self.weight_decay));
        }
        if self.nesterov && (self.kind != OptimizerKind::Sgd || self.momentum == 0.0) {
            return Err(Error::invalid(
                "--nesterov",
                "needs --optimizer sgd with a momentum > 0",
            ));
        }
        Ok(())
    }
}

/// Which buffers exist and how many steps were taken: the JSON half of the optimizer state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptimizerState {
    pub steps: u64,
    /// Per parameter: has a first buffer (SGD momentum, Adam m).
    pub first: Vec<bool>,
    /// Per parameter: has a second buffer (Adam v).
    pub second: Vec<bool>,
}

/// A graph-free tensor of any rank: parameters, gradients and buffers keep their own shapes
/// through a step (on LibTorch each reshape is an ATen op; a TinyResNet step had 400 of them).
type Any = DispatchTensor;

/// An optimizer with its per-parameter buffers (in the parameters' shapes, graph-free; written
/// flattened).
pub struct Optimizer {
    pub config: OptimizerConfig,
    steps: u64,
    first: Vec<Option<Any>>,
    second: Vec<Option<Any>>,
}

/// `t` as a vector of its values.
fn flat(t: Any) -> Tensor<1> {
    let n = t.shape().num_elements();
    Tensor::<1>::from_dispatch(t).reshape([n])
}

/// `t` in `shape`.
fn shaped(t: Tensor<1>, shape: Shape) -> Any {
    use burn::backend::ops::FloatTensorOps;
    Dispatch::float_reshape(t.into_dispatch(), shape)
}

/// The buffers as a module, so they are written and read like weights (safetensors, every
/// mismatch named).
#[derive(Module, Debug)]
struct Buffers {
    first: Vec<Param<Tensor<1>>>,
    second: Vec<Param<Tensor<1>>>,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig) -> Self {
        Self {
            config,
            steps: 0,
            first: Vec::new(),
            second: Vec::new(),
        }
    }

    /// One update of every parameter of `model` that has a gradient in `grads`, at rate `lr`.
    pub fn step<M: Module>(&mut self, model: M, grads: GradientsParams, lr: f64) -> M {
        self.step_scaled(model, grads, lr, &HashMap::new())
    }

    /// [`Optimizer::step`] with the rate of each parameter in `scales` multiplied by its entry
    /// (a parameter group's learning rate, e.g. the residual functions' lr × N).
    pub fn step_scaled<M: Module>(
        &mut self,
        model: M,
        mut grads: GradientsParams,
        lr: f64,
        scales: &HashMap<ParamId, f64>,
    ) -> M {
        let mut gather = Gather {
            grads: &mut grads,
            lr,
            scales,
            index: 0,
            items: Vec::new(),
        };
        model.visit(&mut gather);
        let items = gather.items;
        if let Some(last) = items.last() {
            for v in [&mut self.first, &mut self.second] {
                if v.len() <= last.index {
                    v.resize(last.index + 1, None);
                }
            }
        }
        let updated = match self.config.kind {
            OptimizerKind::Sgd => self.sgd(items),
            OptimizerKind::AdamW => items
                .into_iter()
                .map(|it| (it.index, self.adamw(it.index, it.w, it.g, it.lr)))
                .collect(),
        };
        let model = model.map(&mut Replace { updated, index: 0 });
        self.steps += 1;
        model
    }

    /// PyTorch's SGD: `g += wd·w; b = μb + g (b = g at first); g = nesterov ? g + μb : b`,
    /// one fused op per learning rate for all its parameters ([`ops::sgd_steps`]); without
    /// momentum no buffer is kept.
    fn sgd(&mut self, items: Vec<Item>) -> HashMap<usize, Any> {
        let c = self.config.clone();
        // Parameter groups by rate, in first-seen order (bit patterns: rates are finite).
        let mut groups: Vec<(f64, Vec<Item>)> = Vec::new();
        for it in items {
            match groups
                .iter_mut()
                .find(|(lr, _)| lr.to_bits() == it.lr.to_bits())
            {
                Some((_, group)) => group.push(it),
                None => groups.push((it.lr, vec![it])),
            }
        }
        let mut updated = HashMap::new();
        for (lr, group) in groups {
            let rule = SgdRule {
                lr,
                weight_decay: c.weight_decay,
                momentum: c.momentum,
                nesterov: c.nesterov,
            };
            // μ·0 + d is d exactly: a zero buffer makes the first step PyTorch's `b = d`.
            let bs = group
                .iter()
                .map(|it| match self.first[it.index].take() {
                    Some(b) => b,
                    None => zeros_like(&it.w),
                })
                .collect();
            let index: Vec<usize> = group.iter().map(|it| it.index).collect();
            let (ws, gs) = group.into_iter().map(|it| (it.w, it.g)).unzip();
            let (ws, bs) = ops::sgd_steps(ws, gs, bs, rule);
            for ((i, w), b) in index.into_iter().zip(ws).zip(bs) {
                if c.momentum > 0.0 {
                    self.first[i] = Some(b);
                }
                updated.insert(i, w);
            }
        }
        updated
    }

    /// PyTorch's AdamW (decoupled weight decay, bias-corrected moments), on the flattened values.
    fn adamw(&mut self, i: usize, w: Any, g: Any, lr: f64) -> Any {
        let c = &self.config;
        let [b1, b2] = c.betas;
        let t = (self.steps + 1) as i32;
        let shape = w.shape();
        let (w, g) = (flat(w), flat(g));
        let w = w * (1.0 - lr * c.weight_decay);
        let m = match self.first[i].take().map(flat) {
            Some(m) => m * b1 + g.clone() * (1.0 - b1),
            None => g.clone() * (1.0 - b1),
        };
        let v = match self.second[i].take().map(flat) {
            Some(v) => v * b2 + g.clone().square() * (1.0 - b2),
            None => g.square() * (1.0 - b2),
        };
        let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        let denom = v.clone().sqrt() / bc2.sqrt() + c.epsilon;
        let out = w - m.clone() / denom * (lr / bc1);
        self.first[i] = Some(shaped(m, shape.clone()));
        self.second[i] = Some(shaped(v, shape.clone()));
        shaped(out, shape)
    }

    /// The JSON half of the state.
    pub fn state(&self) -> OptimizerState {
        let mask = |v: &[Option<Any>]| v.iter().map(Option::is_some).collect();
        OptimizerState {
            steps: self.steps,
            first: mask(&self.first),
            second: mask(&self.second),
        }
    }

    /// Writes the buffers to `path` (safetensors, atomic).
    pub fn save_buffers(&self, path: &Path) -> Result<()> {
        let params = |v: &[Option<Any>]| {
            v.iter()
                .flatten()
                .map(|t| Param::from_tensor(flat(t.clone())))
                .collect()
        };
        let buffers = Buffers {
            first: params(&self.first),
            second: params(&self.second),
        };
        save_weights(&buffers, path)
    }

    /// Restores an optimizer of `model` from its JSON state and the buffers file `path`.
    pub fn load<M: Module>(
        config: OptimizerConfig,
        state: &OptimizerState,
        model: &M,
        p: &Placement,
        path: &Path,
    ) -> Result<Self> {
        let shapes: Vec<Vec<usize>> = named(model).into_iter().map(|n| n.shape).collect();
        let sizes: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
        let too_long = state.first.len().max(state.second.len()) > sizes.len();
        if too_long {
            return Err(Error::file(
                path,
                format!(
                    "optimizer state for {} parameters, the model has {}",
                    state.first.len().max(state.second.len()),
                    sizes.len()
                ),
            ));
        }
        let zeros = |mask: &[bool]| -> Vec<Param<Tensor<1>>> {
            mask.iter()
                .zip(&sizes)
                .filter(|(present, _)| **present)
                .map(|(_, &n)| Param::from_tensor(p.zeros([n])))
                .collect()
        };
        let empty = Buffers {
            first: zeros(&state.first),
            second: zeros(&state.second),
        };
        let loaded = load_weights(empty, path, p.precision)?;
        Ok(Self {
            config,
            steps: state.steps,
            first: unmask(&state.first, &shapes, loaded.first),
            second: unmask(&state.second, &shapes, loaded.second),
        })
    }
}

/// Puts the loaded buffers back, in their parameters' shapes, at the positions the mask marks.
fn unmask(mask: &[bool], shapes: &[Vec<usize>], loaded: Vec<Param<Tensor<1>>>) -> Vec<Option<Any>> {
    let mut it = loaded.into_iter();
    mask.iter()
        .zip(shapes)
        .map(|(&present, shape)| {
            if present {
                let t = it.next()?.val().detach().without_autodiff();
                Some(shaped(t, Shape::from(shape.clone())))
            } else {
                None
            }
        })
        .collect()
}

/// Zeros shaped, typed and placed as `t`.
fn zeros_like(t: &Any) -> Any {
    use burn::backend::ops::FloatTensorOps;
    Dispatch::float_zeros(t.shape(), &t.device(), t.dtype().into())
}

/// One trainable parameter with a gradient: its position among the trainable parameters, its
/// value and gradient (graph-free), and its learning rate.
struct Item {
    index: usize,
    w: Any,
    g: Any,
    lr: f64,
}

/// Collects the [`Item`] of every trainable parameter that has a gradient in `grads`.
struct Gather<'a> {
    grads: &'a mut GradientsParams,
    lr: f64,
    scales: &'a HashMap<ParamId, f64>,
    index: usize,
    items: Vec<Item>,
}

impl ModuleVisitor for Gather<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !param.is_require_grad() {
            return;
        }
        let index = self.index;
        self.index += 1;
        let Some(g) = self.grads.remove::<D>(param.id) else {
            return;
        };
        self.items.push(Item {
            index,
            w: param.val().detach().without_autodiff().into_dispatch(),
            g: g.detach().without_autodiff().into_dispatch(),
            lr: self.lr * self.scales.get(&param.id).copied().unwrap_or(1.0),
        });
    }
}

/// Replaces each trainable parameter [`Gather`] collected by its updated value (counted in the
/// same traversal order).
struct Replace {
    updated: HashMap<usize, Any>,
    index: usize,
}

impl ModuleMapper for Replace {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if !param.is_require_grad() {
            return param;
        }
        let i = self.index;
        self.index += 1;
        let Some(new) = self.updated.remove(&i) else {
            return param;
        };
        let new = Tensor::<D>::from_dispatch(new);
        Param::initialized(param.id, new.autodiff().require_grad())
    }
}
