//! The paper authors' ResNets (paper.md §3.2, §3.3, §3.5): `IResNetAuto2` (tied) and
//! `ResNetMemoryCustom` (untied) of michaelsdr/resnet_nodes, with a width multiplier.
//!
//! A stem (CIFAR: conv3×3 stride 1; ImageNet, for 1000 classes: conv7×7 stride 2 and a 3×3
//! stride-2 max-pool, as the authors choose), then four stages with `planes`·{1, 2, 4, 8} base
//! channels (the authors' `planes` is 64) and strides 1/2/2/2. Stage k with n_k layers is a
//! torchvision bottleneck (with its option-B `downsample`) followed by a depth-scaled
//! [`Stack`] of N = n_k − 1 pre-activation bottlenecks `x ← x + f(x)/N` (the authors'
//! `MBottleneck`, [`Bottleneck`]), one shared function when tied; a ReLU follows each stage.
//! Global average pooling and a linear head end it. The stacks train in every gradient mode.

use super::layers::{BottleneckBlock, Head, Pool, Stem, BOTTLENECK_EXPANSION};
use super::InputShape;
use crate::device::Placement;
use crate::grad::{mode_at, GradMode, StackRun};
use crate::norm::{BnMode, Norm, Phase};
use crate::ops::relu;
use crate::params::{independent_copy, plain_view};
use crate::residual::{Bottleneck, BottleneckConfig};
use crate::rng::Rng;
use crate::scheme::Scheme;
use crate::stack::Stack;
use crate::{Error, Result};
use burn::module::Module;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::Tensor;
use std::convert::Infallible;

/// The authors' base channels of the first stage (`planes` of their stage 1).
pub const AUTHORS_PLANES: usize = 64;

/// The class count for which the authors build the ImageNet stem.
pub const IMAGENET_CLASSES: usize = 1000;

/// Settings of an [`AuthorsResNet`].
#[derive(Debug, Clone, Copy)]
pub struct AuthorsConfig {
    /// The authors' `n_layers` per stage: one bottleneck, then n − 1 stack functions.
    pub layers: [usize; 4],
    /// Base channels of the first stage (the authors': 64).
    pub planes: usize,
    pub tied: bool,
    pub scheme: Scheme,
    pub input: InputShape,
}

impl AuthorsConfig {
    pub fn init(&self, p: &Placement, rng: &mut Rng) -> Result<AuthorsResNet> {
        if self.planes == 0 || self.layers.iter().any(|&n| n < 2) {
            return Err(Error::invalid(
                "--model",
                format!("authors-resnet with layers {:?} and {} planes: every stage needs n ≥ 2 layers and planes ≥ 1", self.layers, self.planes),
            ));
        }
        let imagenet = self.input.classes == IMAGENET_CLASSES;
        let stem = if imagenet {
            Stem::new(p, rng, [self.input.channels, self.planes], 7, 2, 3)
        } else {
            Stem::new(p, rng, [self.input.channels, self.planes], 3, 1, 1)
        };
        let mut cin = self.planes;
        let mut stages = Vec::new();
        for (k, &n) in self.layers.iter().enumerate() {
            let width = self.planes << k;
            let stride = if k == 0 { 1 } else { 2 };
            let first = BottleneckBlock::new(p, rng, cin, width, stride);
            let f = BottleneckConfig {
                planes: width,
                zero_init: false,
            };
            let stack = if self.tied {
                Stack::tied(f.init(p, rng), n - 1, self.scheme)?
            } else {
                Stack::new((1..n).map(|_| f.init(p, rng)).collect(), self.scheme)?
            };
            stages.push(AuthorsStage { first, stack });
            cin = BOTTLENECK_EXPANSION * width;
        }
        let head = Head::new(p, rng, cin, self.input.classes);
        Ok(AuthorsResNet {
            stem,
            imagenet,
            stages,
            head,
        })
    }
}

/// One stage: a bottleneck, then the depth-scaled stack.
#[derive(Module, Debug)]
pub struct AuthorsStage {
    pub first: BottleneckBlock,
    pub stack: Stack<Bottleneck>,
}

/// The authors' ResNet (see the module docs).
#[derive(Module, Debug)]
pub struct AuthorsResNet {
    pub stem: Stem,
    /// ImageNet stem (max-pool after it).
    pub imagenet: bool,
    pub stages: Vec<AuthorsStage>,
    pub head: Head,
}

impl AuthorsResNet {
    /// Training forward: logits and one run per stack, in forward order.
    pub fn forward_train(
        &self,
        x: Tensor<4>,
        modes: &[GradMode],
        bn: BnMode,
    ) -> (Tensor<2>, Vec<StackRun<4>>) {
        let mut x = self.stem_forward(x, &mut Norm::train(bn));
        let mut runs = Vec::new();
        for (i, stage) in self.stages.iter().enumerate() {
            x = stage.first.forward(x, &mut Norm::train(bn));
            let run = stage.stack.run(x, mode_at(modes, i), bn);
            x = relu(run.output.clone());
            runs.push(run);
        }
        (self.head.forward(Pool::Global.forward(x)), runs)
    }

    /// Inference forward on a graph-free model.
    pub(super) fn forward_plain(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = self.stem_forward(x, &mut Norm::eval());
        for stage in &self.stages {
            x = stage.first.forward(x, &mut Norm::eval());
            x = relu(stage.stack.forward_eval(x));
        }
        self.head.forward(Pool::Global.forward(x))
    }

    /// Each stack's input on batch `x` (see [`super::Model::stack_inputs`]).
    pub(super) fn stack_inputs(&self, x: Tensor<4>, bn: BnMode) -> Vec<Tensor<4>> {
        let norm = || Norm::new(bn, Phase::Replay, None);
        let m = plain_view(self);
        let mut x = m.stem_forward(x, &mut norm());
        let mut out = Vec::new();
        for stage in &m.stages {
            x = stage.first.forward(x, &mut norm());
            out.push(x.clone());
            x = relu(stage.stack.replay(x, bn));
        }
        out
    }

    fn stem_forward(&self, x: Tensor<4>, norm: &mut Norm) -> Tensor<4> {
        let x = self.stem.forward(x, norm);
        if !self.imagenet {
            return x;
        }
        let pool = MaxPoolOptions::new([3, 3])
            .with_stride([2, 2])
            .with_padding([1, 1]);
        max_pool2d(x, pool)
    }

    /// The stacks, in forward order.
    pub fn stacks(&self) -> Vec<&Stack<Bottleneck>> {
        self.stages.iter().map(|s| &s.stack).collect()
    }

    /// An independent copy with every shared function made N independent copies (the
    /// authors' `IResNetAuto2` → `ResNetMemoryCustom` fine-tuning start, paper.md §3.5).
    pub fn untie(&self) -> Self {
        let Ok(model) = self.map_stacks(|_, s| Ok::<_, Infallible>(s.untie()));
        model
    }

    /// An independent copy with `depths[i]` functions in stack i (see
    /// [`Stack::piecewise_copy`]): the authors' [4, 4, 32, 4] fine-tuning start deepens one
    /// stage only.
    pub fn piecewise_copy(&self, depths: &[usize]) -> Result<Self> {
        self.map_stacks(|i, s| s.piecewise_copy(depths[i]))
    }

    /// A tied model's shared functions used `depth` times per stack.
    pub fn with_depth(&self, depth: usize) -> Result<Self> {
        self.map_stacks(|_, s| super::retie(independent_copy(s), depth))
    }

    /// The same model integrating every stack with `scheme`.
    pub fn with_scheme(&self, scheme: Scheme) -> Result<Self> {
        self.map_stacks(|_, s| independent_copy(s).with_scheme(scheme))
    }

    /// An independent copy of every layer, stack i replaced by `copy(i, stack)`.
    fn map_stacks<E>(
        &self,
        copy: impl Fn(usize, &Stack<Bottleneck>) -> std::result::Result<Stack<Bottleneck>, E>,
    ) -> std::result::Result<Self, E> {
        let stages = self
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Ok(AuthorsStage {
                    first: independent_copy(&s.first),
                    stack: copy(i, &s.stack)?,
                })
            })
            .collect::<std::result::Result<_, E>>()?;
        Ok(Self {
            stem: independent_copy(&self.stem),
            imagenet: self.imagenet,
            stages,
            head: independent_copy(&self.head),
        })
    }
}
