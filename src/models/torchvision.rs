//! torchvision's ImageNet ResNets (ResNet-18/34/50/101/152, `torchvision.models.resnet*`),
//! for any number of classes: a 7×7 stride-2 stem with a 3×3 stride-2 max-pool, four stages
//! of basic blocks (18, 34) or bottlenecks (50, 101, 152) with 64/128/256/512 base channels
//! (the first block of stages 2–4 halves the size, with an option-B `downsample` shortcut),
//! global average pooling and a linear head.
//!
//! Every block is the unscaled `relu(x + f(x))` of He et al., like the CIFAR ResNets'
//! `--original` form: the ReLU after each addition is not invertible, so these models train
//! with backprop only. They exist so a pretrained torchvision checkpoint can be imported
//! ([`crate::import`]), evaluated and fine-tuned.

use super::layers::{BasicBlock, BottleneckBlock, Head, Pool, Stem, BOTTLENECK_EXPANSION};
use super::InputShape;
use crate::device::Placement;
use crate::grad::StackRun;
use crate::norm::{BnMode, Norm};
use crate::rng::Rng;
use crate::{Error, Result};
use burn::module::Module;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::Tensor;

/// Base channels of the four stages.
pub const TORCHVISION_STAGE_CHANNELS: [usize; 4] = [64, 128, 256, 512];

/// The depths torchvision defines, with blocks per stage and whether they are bottlenecks.
pub fn torchvision_blocks(layers: usize) -> Result<([usize; 4], bool)> {
    match layers {
        18 => Ok(([2, 2, 2, 2], false)),
        34 => Ok(([3, 4, 6, 3], false)),
        50 => Ok(([3, 4, 6, 3], true)),
        101 => Ok(([3, 4, 23, 3], true)),
        152 => Ok(([3, 8, 36, 3], true)),
        _ => Err(Error::invalid(
            "--model",
            format!(
                "torchvision-resnet{layers}: torchvision defines resnet18, 34, 50, 101 and 152"
            ),
        )),
    }
}

/// One residual block of either kind. A model holds one kind only, so the variants' size
/// difference (a bottleneck has one convolution and batch norm more) costs nothing.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum TvBlock {
    Basic(BasicBlock),
    Bottleneck(BottleneckBlock),
}

impl TvBlock {
    fn forward(&self, x: Tensor<4>, norm: &mut Norm) -> Tensor<4> {
        match self {
            TvBlock::Basic(b) => b.forward(x, norm),
            TvBlock::Bottleneck(b) => b.forward(x, norm),
        }
    }
}

/// A torchvision ResNet (see the module docs).
#[derive(Module, Debug)]
pub struct TorchvisionResNet {
    pub stem: Stem,
    pub stages: Vec<Vec<TvBlock>>,
    pub head: Head,
}

impl TorchvisionResNet {
    /// Draws a `torchvision-resnet{layers}` for images of `input`.
    pub fn init(layers: usize, input: InputShape, p: &Placement, rng: &mut Rng) -> Result<Self> {
        let (counts, bottleneck) = torchvision_blocks(layers)?;
        let base = TORCHVISION_STAGE_CHANNELS[0];
        let stem = Stem::new(p, rng, [input.channels, base], 7, 2, 3);
        let mut cin = base;
        let mut stages = Vec::new();
        for (i, (&width, &count)) in TORCHVISION_STAGE_CHANNELS.iter().zip(&counts).enumerate() {
            let mut blocks = Vec::new();
            for j in 0..count {
                let stride = if i > 0 && j == 0 { 2 } else { 1 };
                let block = if bottleneck {
                    TvBlock::Bottleneck(BottleneckBlock::new(p, rng, cin, width, stride))
                } else {
                    TvBlock::Basic(BasicBlock::torchvision(p, rng, cin, width, stride))
                };
                cin = if bottleneck {
                    BOTTLENECK_EXPANSION * width
                } else {
                    width
                };
                blocks.push(block);
            }
            stages.push(blocks);
        }
        let head = Head::new(p, rng, cin, input.classes);
        Ok(Self { stem, stages, head })
    }

    /// Training forward (backprop only: no scaled stacks, so no runs).
    pub fn forward_train(&self, x: Tensor<4>, bn: BnMode) -> (Tensor<2>, Vec<StackRun<4>>) {
        (self.forward_with(x, || Norm::train(bn)), Vec::new())
    }

    /// Inference forward on a graph-free model.
    pub(super) fn forward_plain(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_with(x, Norm::eval)
    }

    fn forward_with(&self, x: Tensor<4>, norm: impl Fn() -> Norm<'static>) -> Tensor<2> {
        let x = self.stem.forward(x, &mut norm());
        let pool = MaxPoolOptions::new([3, 3])
            .with_stride([2, 2])
            .with_padding([1, 1]);
        let mut x = max_pool2d(x, pool);
        for stage in &self.stages {
            x = stage.iter().fold(x, |x, b| b.forward(x, &mut norm()));
        }
        self.head.forward(Pool::Global.forward(x))
    }
}
