//! The CIFAR ResNets of He et al. (ResNet-20/32/44/56/110/1202, 6n+2 layers): a conv3×3 stem,
//! three stages of n basic blocks with 16/32/64 channels (the first block of stages 2 and 3
//! halves the size), global average pooling and a linear head.
//!
//! In the depth-scaled form each stage's blocks after the first are one residual [`Stack`] of
//! N = n − 1 conv blocks `x ← x + f(x)/N`, trainable in any gradient mode, followed by a ReLU
//! (the stage-final `relu2` of the paper's implicit ResNets, paper.md §3.2). The original form
//! keeps He et al.'s unscaled `relu(x + f(x))` blocks; its ReLU after every addition is not
//! invertible, so it trains with backprop or checkpointing (`checkpoint:K`), never the adjoint.

use super::layers::{BasicBlock, Head, Pool, Stem};
use super::{InputShape, StageView};
use crate::device::Placement;
use crate::grad::{mode_at, GradMode, Segment, StackRun};
use crate::norm::{BnMode, Norm, Phase};
use crate::ops::relu;
use crate::params::{accumulate, plain_view};
use crate::residual::{ConvBlock, ConvBlockConfig};
use crate::rng::Rng;
use crate::scheme::Scheme;
use crate::stack::Stack;
use crate::{Error, Result};
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

/// Channels of the three stages.
pub const STAGE_CHANNELS: [usize; 3] = [16, 32, 64];

/// Settings of a [`CifarResNet`].
#[derive(Debug, Clone, Copy)]
pub struct CifarConfig {
    /// Total layers 6n + 2 (20, 32, 44, 56, 110, 1202).
    pub layers: usize,
    pub scheme: Scheme,
    /// One residual function per stage, used n − 1 times.
    pub tied: bool,
    /// He et al.'s unscaled blocks instead of the 1/N-scaled stacks.
    pub original: bool,
    pub input: InputShape,
}

impl CifarConfig {
    /// n, the basic blocks per stage.
    pub fn blocks_per_stage(&self) -> Result<usize> {
        let n = self.layers.saturating_sub(2) / 6;
        if self.layers < 14 || !(self.layers - 2).is_multiple_of(6) {
            return Err(Error::invalid(
                "--model",
                format!(
                    "cifar-resnet{}: the layer count must be 6n+2 with n ≥ 2 (20, 32, 44, 56, 110, 1202)",
                    self.layers
                ),
            ));
        }
        Ok(n)
    }

    pub fn init(&self, p: &Placement, rng: &mut Rng) -> Result<CifarResNet> {
        let n = self.blocks_per_stage()?;
        let stem = Stem::new(p, rng, [self.input.channels, STAGE_CHANNELS[0]], 3, 1, 1);
        let mut stages = Vec::new();
        let mut cin = STAGE_CHANNELS[0];
        for (i, &c) in STAGE_CHANNELS.iter().enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            let first = BasicBlock::new(p, rng, cin, c, stride);
            let rest = self.rest(p, rng, c, n - 1)?;
            stages.push(Stage { first, rest });
            cin = c;
        }
        let head = Head::new(p, rng, cin, self.input.classes);
        Ok(CifarResNet { stem, stages, head })
    }

    /// A stage's blocks after the first.
    fn rest(&self, p: &Placement, rng: &mut Rng, c: usize, count: usize) -> Result<Rest> {
        if self.original {
            let blocks = (0..count)
                .map(|_| BasicBlock::new(p, rng, c, c, 1))
                .collect();
            return Ok(Rest::Original(blocks));
        }
        let block = ConvBlockConfig {
            channels: c,
            zero_init: false,
        };
        let stack = if self.tied {
            Stack::tied(block.init(p, rng), count, self.scheme)?
        } else {
            let functions = (0..count).map(|_| block.init(p, rng)).collect();
            Stack::new(functions, self.scheme)?
        };
        Ok(Rest::Scaled(stack))
    }
}

/// A CIFAR ResNet (see the module docs).
#[derive(Module, Debug)]
pub struct CifarResNet {
    pub stem: Stem,
    pub stages: Vec<Stage>,
    pub head: Head,
}

/// One stage: a (possibly downsampling) basic block, then the rest of the stage's blocks.
#[derive(Module, Debug)]
pub struct Stage {
    pub first: BasicBlock,
    pub rest: Rest,
}

/// A stage's blocks after the first.
#[derive(Module, Debug)]
pub enum Rest {
    /// N = n − 1 conv blocks integrated with step 1/N (any gradient mode).
    Scaled(Stack<ConvBlock>),
    /// He et al.'s unscaled `relu(x + f(x))` blocks (backprop or checkpointing).
    Original(Vec<BasicBlock>),
}

impl CifarResNet {
    /// Training forward: logits and one run per scaled stack, in forward order.
    /// Segment i of [`CifarResNet::segments`] runs in [`mode_at`]`(modes, i)`.
    pub fn forward_train(
        &self,
        x: Tensor<4>,
        modes: &[GradMode],
        bn: BnMode,
    ) -> (Tensor<2>, Vec<StackRun<4>>) {
        let mut x = self.stem.forward(x, &mut Norm::train(bn));
        let mut runs = Vec::new();
        for stage in &self.stages {
            x = stage.first.forward(x, &mut Norm::train(bn));
            x = match &stage.rest {
                Rest::Scaled(stack) => {
                    let run = stack.run(x, mode_at(modes, runs.len()), bn);
                    let out = relu(run.output.clone());
                    runs.push(run);
                    out
                }
                Rest::Original(blocks) => {
                    let run = original_run(blocks, x, mode_at(modes, runs.len()), bn);
                    let out = run.output.clone();
                    runs.push(run);
                    out
                }
            };
        }
        (self.head.forward(Pool::Global.forward(x)), runs)
    }

    /// Inference forward on a graph-free model.
    pub(super) fn forward_plain(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = self.stem.forward(x, &mut Norm::eval());
        for stage in &self.stages {
            x = stage.first.forward(x, &mut Norm::eval());
            x = match &stage.rest {
                Rest::Scaled(stack) => relu(stack.forward_eval(x)),
                Rest::Original(blocks) => blocks
                    .iter()
                    .fold(x, |x, b| b.forward(x, &mut Norm::eval())),
            };
        }
        self.head.forward(Pool::Global.forward(x))
    }

    /// Each stage's blocks after the first with their input (see [`Model::stage_inputs`]).
    pub(super) fn stage_inputs(&self, x: Tensor<4>, bn: BnMode) -> Vec<(StageView<'_>, Tensor<4>)> {
        let norm = || Norm::new(bn, Phase::Replay, None);
        let mut x = plain_view(&self.stem).forward(x, &mut norm());
        let mut out = Vec::new();
        for stage in &self.stages {
            x = plain_view(&stage.first).forward(x, &mut norm());
            let input = x.clone();
            x = match &stage.rest {
                Rest::Scaled(stack) => {
                    out.push((StageView::Scaled(stack), input));
                    relu(stack.replay(x, bn))
                }
                Rest::Original(blocks) => {
                    out.push((StageView::Original(blocks), input));
                    blocks
                        .iter()
                        .fold(x, |x, b| plain_view(b).forward(x, &mut norm()))
                }
            };
        }
        out
    }

    /// What carries gradients back by itself, one per stage in forward order: the scaled
    /// stacks, or the unscaled blocks of an original model.
    pub fn segments(&self) -> Vec<&dyn Segment<4>> {
        self.stages
            .iter()
            .map(|s| match &s.rest {
                Rest::Scaled(stack) => stack as &dyn Segment<4>,
                Rest::Original(blocks) => blocks as &dyn Segment<4>,
            })
            .collect()
    }

    /// The scaled stacks, in forward order.
    pub fn stacks(&self) -> Vec<&Stack<ConvBlock>> {
        self.stages
            .iter()
            .filter_map(|s| match &s.rest {
                Rest::Scaled(stack) => Some(stack),
                Rest::Original(_) => None,
            })
            .collect()
    }
}

/// One stage's unscaled blocks through a training forward: backprop (the graph), or
/// `checkpoint:K` (every K-th state kept without a graph, running statistics updated here,
/// once; [`Segment::backward_run`] recomputes each segment with a graph). No other mode can
/// run on them (`ModelSpec::check`); they get backprop.
pub fn original_run(
    blocks: &[BasicBlock],
    x: Tensor<4>,
    mode: GradMode,
    bn: BnMode,
) -> StackRun<4> {
    let GradMode::Checkpoint(k) = mode else {
        let out = blocks
            .iter()
            .fold(x.clone(), |x, b| b.forward(x, &mut Norm::train(bn)));
        return StackRun::graph(x, out, bn);
    };
    let mut states = Vec::new();
    let mut h = x.clone().without_autodiff();
    for (i, b) in blocks.iter().enumerate() {
        if i % k == 0 {
            states.push(h.clone());
        }
        h = plain_view(b).forward(h, &mut Norm::train(bn));
    }
    StackRun::checkpointed(x, h, k, states, bn)
}

impl Segment<4> for Vec<BasicBlock> {
    /// Exact gradients of a checkpointed run: each segment of K blocks recomputed with a graph
    /// from its kept state (batch statistics, no running-statistics update), last first.
    fn backward_run(
        &self,
        run: StackRun<4>,
        grad_output: Tensor<4>,
        grads: &mut GradientsParams,
    ) -> Option<Tensor<4>> {
        let (k, states, bn) = run.into_checkpoint()?;
        let mut g = grad_output.without_autodiff();
        for (s, x) in states.iter().enumerate().rev() {
            let blocks = &self[s * k..((s + 1) * k).min(self.len())];
            let leaf = x.clone().autodiff().require_grad();
            let y = blocks.iter().fold(leaf.clone(), |x, b| {
                b.forward(x, &mut Norm::new(bn, Phase::Replay, None))
            });
            let mut back = (y * g.clone().autodiff()).sum().backward();
            blocks.iter().for_each(|b| accumulate(grads, &mut back, b));
            g = match leaf.grad_remove(&mut back) {
                Some(gx) => gx.without_autodiff(),
                None => g.zeros_like(),
            };
        }
        Some(g)
    }
}
