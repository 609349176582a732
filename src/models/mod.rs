//! Image classifiers whose residual stages are depth-scaled [`Stack`]s, trainable in every
//! [`GradMode`]: the paper's [`TinyResNet`] (paper.md §3.4) and the [`CifarResNet`] family of
//! He et al., each with tied variants (one function per stack: the "ODE-like" models of
//! paper.md §3.2) and untying ([`Model::untie`], paper.md §3.5). torchvision's ImageNet
//! ResNets ([`TorchvisionResNet`]) are here in their unscaled form, to import pretrained
//! checkpoints ([`crate::import`]).
//!
//! Every model exposes `forward_train(x, mode, bn) -> (logits, runs)`; the backward is
//! [`crate::grad::backward_through`] over [`Model::segments`] and those runs.

mod authors;
mod cifar;
mod layers;
mod tiny;
mod torchvision;

pub use authors::{AuthorsConfig, AuthorsResNet, AuthorsStage, AUTHORS_PLANES, IMAGENET_CLASSES};
pub use cifar::{original_run, CifarConfig, CifarResNet, Rest, Stage, STAGE_CHANNELS};
pub use layers::{
    BasicBlock, BottleneckBlock, Downsample, Head, Pool, Stem, StridedConv, BOTTLENECK_EXPANSION,
};
pub use tiny::{TinyConfig, TinyResNet, PAPER_STEM_MIN_SIZE};
pub use torchvision::{torchvision_blocks, TorchvisionResNet, TvBlock, TORCHVISION_STAGE_CHANNELS};

use crate::device::Placement;
use crate::grad::{mode_at, GradMode, Segment, StackRun};
use crate::norm::{BnMode, Norm, Phase};
use crate::params::{independent_copy, plain_view};
use crate::residual::{Bottleneck, ConvBlock};
use crate::rng::Rng;
use crate::scheme::Scheme;
use crate::stack::Stack;
use crate::{Error, Result};
use burn::module::{Module, ModuleDisplay};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::str::FromStr;

/// The paper's TinyResNet depth when none is given.
pub const DEFAULT_TINY_DEPTH: usize = 8;
/// The paper's `--base_depth` of the piecewise-constant initialisation.
pub const DEFAULT_BASE_DEPTH: usize = 8;
/// The paper's `--planes`.
pub const DEFAULT_PLANES: usize = 16;

/// Shape of the images and number of classes a model is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
}

/// Which architecture, as named by `--model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arch {
    /// `tiny`: the paper's TinyResNet.
    Tiny,
    /// `cifar-resnetL`: He et al.'s L-layer CIFAR ResNet (L = 6n + 2).
    CifarResNet(usize),
    /// `torchvision-resnetL`: torchvision's ImageNet ResNet-L (18, 34, 50, 101, 152), unscaled.
    Torchvision(usize),
    /// `authors-resnet-A-B-C-D`: the paper authors' ResNet with n_layers = [A, B, C, D]
    /// (`IResNetAuto2` with `--tied`, `ResNetMemoryCustom` without).
    Authors([usize; 4]),
}

impl FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s == "tiny" {
            return Ok(Arch::Tiny);
        }
        if let Some(list) = s.strip_prefix("authors-resnet-") {
            let layers: Vec<usize> = list.split('-').filter_map(|n| n.parse().ok()).collect();
            return match <[usize; 4]>::try_from(layers) {
                Ok(layers) if layers.iter().all(|&n| n >= 2) => Ok(Arch::Authors(layers)),
                _ => Err(Error::invalid(
                    "--model",
                    format!("`{s}`: expected authors-resnet-A-B-C-D, the layers of the four stages, each ≥ 2 (e.g. authors-resnet-4-4-32-4)"),
                )),
            };
        }
        if let Some(l) = s.strip_prefix("torchvision-resnet") {
            let layers = l.parse::<usize>().unwrap_or(0);
            torchvision_blocks(layers)?;
            return Ok(Arch::Torchvision(layers));
        }
        let layers = s
            .strip_prefix("cifar-resnet")
            .and_then(|l| l.parse::<usize>().ok());
        match layers {
            Some(l) if l >= 14 && (l - 2).is_multiple_of(6) => Ok(Arch::CifarResNet(l)),
            _ => Err(Error::invalid(
                "--model",
                format!("`{s}`: expected tiny, cifar-resnetL with L = 6n+2, n ≥ 2 (cifar-resnet20, 32, 44, 56, 110, 1202) or torchvision-resnet18/34/50/101/152 or authors-resnet-A-B-C-D"),
            )),
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arch::Tiny => write!(f, "tiny"),
            Arch::CifarResNet(l) => write!(f, "cifar-resnet{l}"),
            Arch::Torchvision(l) => write!(f, "torchvision-resnet{l}"),
            Arch::Authors([a, b, c, d]) => write!(f, "authors-resnet-{a}-{b}-{c}-{d}"),
        }
    }
}

/// Everything that fixes a model's structure (stored with a run, so `eval` can rebuild it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub arch: Arch,
    /// Residual functions per stack: TinyResNet's N (default 8); for a CIFAR ResNet n − 1,
    /// fixed by the layer count (None takes it from there; another value is an error).
    pub depth: Option<usize>,
    pub scheme: Scheme,
    pub tied: bool,
    /// CIFAR ResNets only: He et al.'s unscaled blocks (backprop or checkpointing).
    pub original: bool,
    /// TinyResNet's channels P.
    pub planes: usize,
    /// TinyResNet's piecewise-constant initialisation base depth.
    pub base_depth: usize,
}

impl Default for ModelSpec {
    /// The paper's TinyResNet: depth 8, Euler, P = 16, untied, base depth 8.
    fn default() -> Self {
        Self {
            arch: Arch::Tiny,
            depth: None,
            scheme: Scheme::Euler,
            tied: false,
            original: false,
            planes: DEFAULT_PLANES,
            base_depth: DEFAULT_BASE_DEPTH,
        }
    }
}

impl ModelSpec {
    /// The residual functions per stack this spec builds (0 for torchvision's models, which
    /// have no depth-scaled stack).
    pub fn stack_depth(&self) -> Result<usize> {
        match self.arch {
            Arch::Tiny => Ok(self.depth.unwrap_or(DEFAULT_TINY_DEPTH)),
            Arch::Authors(layers) => match self.depth {
                Some(_) => Err(Error::invalid(
                    "--depth",
                    format!("{}: the depths are fixed by the name", self.arch),
                )),
                None => Ok(layers.iter().max().map_or(0, |n| n - 1)),
            },
            Arch::Torchvision(_) => match self.depth {
                Some(_) => Err(Error::invalid(
                    "--depth",
                    format!("{}: the depth is fixed by the name", self.arch),
                )),
                None => Ok(0),
            },
            Arch::CifarResNet(layers) => {
                let n = (layers.saturating_sub(2) / 6).saturating_sub(1);
                match self.depth {
                    Some(d) if d != n => Err(Error::invalid(
                        "--depth",
                        format!("{d}: {} has {n} residual functions per stage (omit --depth or pick another cifar-resnet)", self.arch),
                    )),
                    _ => Ok(n),
                }
            }
        }
    }

    /// The functions of every depth-scaled stack this spec builds, in forward order (what
    /// [`Model::stack_depths`] reads on the model): the authors' n_k − 1 per stage; none for
    /// torchvision's or an original CIFAR ResNet.
    pub fn stack_depths(&self) -> Result<Vec<usize>> {
        let n = self.stack_depth()?;
        Ok(match self.arch {
            Arch::Tiny => vec![n],
            Arch::Authors(layers) => layers.iter().map(|l| l - 1).collect(),
            Arch::CifarResNet(_) if !self.original => vec![n; 3],
            Arch::CifarResNet(_) | Arch::Torchvision(_) => Vec::new(),
        })
    }

    /// Checks the combination of settings against a gradient mode, naming the flag at fault.
    pub fn check(&self, mode: GradMode) -> Result<()> {
        if let Arch::Torchvision(_) = self.arch {
            if self.tied {
                return Err(Error::invalid(
                    "--tied",
                    format!("{} has no tied variant", self.arch),
                ));
            }
            if mode != GradMode::Backprop {
                return Err(Error::invalid("--grad", format!("{mode}: {} applies a ReLU after every addition, which cannot be inverted; use --grad backprop", self.arch)));
            }
        }
        if self.original && !matches!(self.arch, Arch::CifarResNet(_)) {
            return Err(Error::invalid(
                "--original",
                "applies to the cifar-resnet models only",
            ));
        }
        if self.original && self.tied {
            return Err(Error::invalid(
                "--original",
                "the unscaled original has no tied variant; drop --tied",
            ));
        }
        if self.original && !matches!(mode, GradMode::Backprop | GradMode::Checkpoint(_)) {
            return Err(Error::invalid("--grad", format!("{mode}: the unscaled original (--original) applies a ReLU after every addition, which cannot be inverted; use --grad backprop or checkpoint:K")));
        }
        if self.arch == Arch::Tiny && self.planes == 0 {
            return Err(Error::invalid(
                "--planes",
                "TinyResNet needs at least one channel",
            ));
        }
        if self.arch == Arch::Tiny && self.stack_depth()? == 0 {
            return Err(Error::invalid(
                "--depth",
                "TinyResNet needs at least one residual function",
            ));
        }
        self.stack_depth().map(|_| ())
    }

    /// Draws a model for images of `input` from `rng`.
    pub fn init(&self, p: &Placement, input: InputShape, rng: &mut Rng) -> Result<Model> {
        let depth = self.stack_depth()?;
        match self.arch {
            Arch::Tiny => TinyConfig {
                planes: self.planes,
                depth,
                scheme: self.scheme,
                tied: self.tied,
                base_depth: self.base_depth,
                input,
            }
            .init(p, rng)
            .map(Model::Tiny),
            Arch::CifarResNet(layers) => CifarConfig {
                layers,
                scheme: self.scheme,
                tied: self.tied,
                original: self.original,
                input,
            }
            .init(p, rng)
            .map(Model::Cifar),
            Arch::Torchvision(layers) => {
                TorchvisionResNet::init(layers, input, p, rng).map(Model::Torchvision)
            }
            Arch::Authors(layers) => AuthorsConfig {
                layers,
                planes: self.planes,
                tied: self.tied,
                scheme: self.scheme,
                input,
            }
            .init(p, rng)
            .map(Model::Authors),
        }
    }
}

/// A residual stage as `doctor` sees it: a depth-scaled stack of conv blocks or of the authors'
/// bottlenecks, or He et al.'s unscaled `relu(x + g(x))` blocks (a CIFAR ResNet's blocks after
/// each stage's first with `--original`).
pub enum StageView<'a> {
    Scaled(&'a Stack<ConvBlock>),
    Bottleneck(&'a Stack<Bottleneck>),
    Original(&'a Vec<BasicBlock>),
}

/// Any of the models, so a trainer, a checkpoint and `eval` handle them alike.
#[derive(Module, Debug)]
pub enum Model {
    Tiny(TinyResNet),
    Cifar(CifarResNet),
    Torchvision(TorchvisionResNet),
    Authors(AuthorsResNet),
}

impl Model {
    /// Training forward in `mode`: logits (graph-connected to the head, and to everything under
    /// backprop) and one [`StackRun`] per stack of [`Model::stacks`], in that order. Batch norms
    /// outside the stacks use batch statistics (running statistics under `BnMode::Frozen`).
    pub fn forward_train(
        &self,
        x: Tensor<4>,
        mode: GradMode,
        bn: BnMode,
    ) -> (Tensor<2>, Vec<StackRun<4>>) {
        self.forward_train_modes(x, &[mode], bn)
    }

    /// Training forward with a gradient mode per segment: segment i of [`Model::segments`]
    /// (the stacks, or an original model's unscaled stages) runs in [`mode_at`]`(modes, i)`
    /// (the last entry for segments beyond the slice, so `&[mode]` is one mode for all). The
    /// hybrid policy (`--grad auto`) gives each stack its own mode.
    pub fn forward_train_modes(
        &self,
        x: Tensor<4>,
        modes: &[GradMode],
        bn: BnMode,
    ) -> (Tensor<2>, Vec<StackRun<4>>) {
        match self {
            Model::Tiny(m) => m.forward_train(x, mode_at(modes, 0), bn),
            Model::Cifar(m) => m.forward_train(x, modes, bn),
            Model::Torchvision(m) => m.forward_train(x, bn),
            Model::Authors(m) => m.forward_train(x, modes, bn),
        }
    }

    /// Every residual stage with its input on batch `x`: batch statistics (running statistics
    /// under `BnMode::Frozen`), no graph, running statistics left alone. What `doctor`
    /// measures each stage from. Empty for torchvision's models, whose unscaled bottleneck
    /// stages `doctor` does not measure yet.
    pub fn stage_inputs(&self, x: Tensor<4>, bn: BnMode) -> Vec<(StageView<'_>, Tensor<4>)> {
        let x = x.detach().without_autodiff();
        match self {
            Model::Tiny(m) => {
                let x0 = plain_view(&m.stem).forward(x, &mut Norm::new(bn, Phase::Replay, None));
                vec![(StageView::Scaled(&m.stack), x0)]
            }
            Model::Cifar(m) => m.stage_inputs(x, bn),
            Model::Authors(m) => m
                .stacks()
                .into_iter()
                .map(StageView::Bottleneck)
                .zip(m.stack_inputs(x, bn))
                .collect(),
            Model::Torchvision(_) => Vec::new(),
        }
    }

    /// The input of every depth-scaled stack (of [`Model::stack_depths`]) on batch `x`, as
    /// [`Model::stage_inputs`] computes it: what a measurement of one stack alone starts from.
    pub fn stack_inputs(&self, x: Tensor<4>, bn: BnMode) -> Vec<Tensor<4>> {
        self.stage_inputs(x, bn)
            .into_iter()
            .filter_map(|(view, x)| (!matches!(view, StageView::Original(_))).then_some(x))
            .collect()
    }

    /// Inference logits (running statistics, no graph; the result is a plain tensor).
    pub fn forward_eval(&self, x: Tensor<4>) -> Tensor<2> {
        let x = x.detach().without_autodiff();
        match plain_view(self) {
            Model::Tiny(m) => m.forward_plain(x),
            Model::Cifar(m) => m.forward_plain(x),
            Model::Torchvision(m) => m.forward_plain(x),
            Model::Authors(m) => m.forward_plain(x),
        }
    }

    /// The same model with every stack integrated by `scheme` (independent copy; Heun takes
    /// N − 1 steps of the same N functions, so this is another network unless N is large).
    pub fn with_scheme(&self, scheme: Scheme) -> Result<Model> {
        if let Model::Authors(m) = self {
            return Ok(Model::Authors(m.with_scheme(scheme)?));
        }
        self.copy_with_stacks(|s| independent_copy(s).with_scheme(scheme))
    }

    /// What [`crate::grad::backward_through`] carries gradients through, one per run of
    /// [`Model::forward_train`], in forward order: the residual stacks (of conv blocks or
    /// bottlenecks), or an original CIFAR ResNet's unscaled stages; none for torchvision's.
    pub fn segments(&self) -> Vec<&dyn Segment<4>> {
        match self {
            Model::Tiny(m) => vec![&m.stack],
            Model::Cifar(m) => m.segments(),
            Model::Torchvision(_) => Vec::new(),
            Model::Authors(m) => m
                .stacks()
                .into_iter()
                .map(|s| s as &dyn Segment<4>)
                .collect(),
        }
    }

    /// The residual stacks of conv blocks, in forward order (none for the authors' models,
    /// whose stacks are [`Model::bottleneck_stacks`]).
    pub fn stacks(&self) -> Vec<&Stack<ConvBlock>> {
        match self {
            Model::Tiny(m) => vec![&m.stack],
            Model::Cifar(m) => m.stacks(),
            Model::Torchvision(_) | Model::Authors(_) => Vec::new(),
        }
    }

    /// The residual stacks of bottlenecks (the authors' models), in forward order.
    pub fn bottleneck_stacks(&self) -> Vec<&Stack<Bottleneck>> {
        match self {
            Model::Authors(m) => m.stacks(),
            _ => Vec::new(),
        }
    }

    /// The depth N of every stack, of either kind, in forward order.
    pub fn stack_depths(&self) -> Vec<usize> {
        let conv = self.stacks().into_iter().map(|s| s.depth);
        conv.chain(self.bottleneck_stacks().into_iter().map(|s| s.depth))
            .collect()
    }

    /// Whether every stack shares one function over depth.
    pub fn is_tied(&self) -> bool {
        let (conv, bottleneck) = (self.stacks(), self.bottleneck_stacks());
        !(conv.is_empty() && bottleneck.is_empty())
            && conv.iter().all(|s| s.is_tied())
            && bottleneck.iter().all(|s| s.is_tied())
    }

    /// An independent copy where every stack's shared function becomes N independent copies:
    /// the same outputs before training, separate parameters after (paper.md §3.5).
    pub fn untie(&self) -> Model {
        if let Model::Authors(m) = self {
            return Model::Authors(m.untie());
        }
        let Ok(model) = self.copy_with_stacks(|s| Ok::<_, Infallible>(s.untie()));
        model
    }

    /// An independent copy with `depth` functions per stack, function i copying function
    /// ⌊i·N/depth⌋ (see [`Stack::piecewise_copy`]); stem, head and other layers are copied.
    pub fn piecewise_copy(&self, depth: usize) -> Result<Model> {
        self.piecewise_copy_each(&vec![depth; self.stack_depths().len()])
    }

    /// [`Model::piecewise_copy`] with `depths[i]` functions in stack i (of
    /// [`Model::stack_depths`]): the authors' fine-tuning start deepens one stage only
    /// (paper.md §3.5, n_layers [4, 4, 32, 4]).
    pub fn piecewise_copy_each(&self, depths: &[usize]) -> Result<Model> {
        let stacks = self.stack_depths().len();
        if stacks == 0 {
            return Err(Error::invalid(
                "--model",
                "the model has no depth-scaled stack to copy (an original CIFAR ResNet or torchvision's)",
            ));
        }
        if depths.len() != stacks {
            return Err(Error::invalid(
                "--depth",
                format!(
                    "{} depths given for a model of {stacks} stacks",
                    depths.len()
                ),
            ));
        }
        if let Model::Authors(m) = self {
            return Ok(Model::Authors(m.piecewise_copy(depths)?));
        }
        let next = std::cell::Cell::new(0);
        self.copy_with_stacks(|s| {
            let i = next.replace(next.get() + 1);
            s.piecewise_copy(depths[i])
        })
    }

    /// An independent copy of every layer, each depth-scaled stack replaced by `copy(stack)`.
    fn copy_with_stacks<E>(
        &self,
        copy: impl Fn(&Stack<ConvBlock>) -> std::result::Result<Stack<ConvBlock>, E>,
    ) -> std::result::Result<Model, E> {
        Ok(match self {
            Model::Tiny(m) => Model::Tiny(TinyResNet {
                stem: independent_copy(&m.stem),
                stack: copy(&m.stack)?,
                head: independent_copy(&m.head),
                pool: m.pool,
            }),
            Model::Cifar(m) => {
                let stage = |s: &Stage| -> std::result::Result<Stage, E> {
                    let rest = match &s.rest {
                        Rest::Scaled(stack) => Rest::Scaled(copy(stack)?),
                        Rest::Original(blocks) => {
                            Rest::Original(blocks.iter().map(independent_copy).collect())
                        }
                    };
                    Ok(Stage {
                        first: independent_copy(&s.first),
                        rest,
                    })
                };
                Model::Cifar(CifarResNet {
                    stem: independent_copy(&m.stem),
                    stages: m
                        .stages
                        .iter()
                        .map(stage)
                        .collect::<std::result::Result<_, E>>()?,
                    head: independent_copy(&m.head),
                })
            }
            Model::Torchvision(m) => Model::Torchvision(independent_copy(m)),
            Model::Authors(m) => Model::Authors(independent_copy(m)),
        })
    }

    /// The same model integrating every stack with `depth` steps' worth of functions: for tied
    /// models, a finer or coarser discretisation of the same ODE (the "ODE-like" test of
    /// paper.md §3.2). Untied models only accept their own depth.
    pub fn with_depth(self, depth: usize) -> Result<Model> {
        if self.stack_depths().iter().all(|&d| d == depth) {
            return Ok(self);
        }
        if !self.is_tied() {
            return Err(Error::invalid(
                "--depth",
                format!("{depth}: only a tied model (--tied) can run at another depth than it was trained at"),
            ));
        }
        match self {
            Model::Tiny(m) => Ok(Model::Tiny(TinyResNet {
                stack: retie(m.stack, depth)?,
                ..m
            })),
            Model::Cifar(m) => {
                let stages = m
                    .stages
                    .into_iter()
                    .map(|s| stage_with_depth(s, depth))
                    .collect::<Result<_>>()?;
                Ok(Model::Cifar(CifarResNet { stages, ..m }))
            }
            Model::Torchvision(m) => Ok(Model::Torchvision(m)),
            Model::Authors(m) => Ok(Model::Authors(m.with_depth(depth)?)),
        }
    }
}

fn stage_with_depth(s: Stage, depth: usize) -> Result<Stage> {
    let rest = match s.rest {
        Rest::Scaled(stack) => Rest::Scaled(retie(stack, depth)?),
        original => original,
    };
    Ok(Stage { rest, ..s })
}

/// A tied stack's function used `depth` times.
pub(super) fn retie<F: Module + ModuleDisplay>(stack: Stack<F>, depth: usize) -> Result<Stack<F>> {
    let scheme: Scheme = stack.scheme;
    match stack.functions.into_iter().next() {
        Some(f) => Stack::tied(f, depth, scheme),
        None => Err(Error::invalid(
            "--depth",
            "the stack has no residual function",
        )),
    }
}
