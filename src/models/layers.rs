//! The layers around the residual stacks: strided convolutions (stems, downsampling blocks),
//! He et al.'s basic block, pooling and the linear head. Parameters are drawn from [`Rng`] with
//! PyTorch's default scale, like [`crate::residual`], so a seed fixes every number.

use crate::device::Placement;
use crate::norm::{BatchNorm, Norm};
use crate::ops::relu;
use crate::residual::Conv;
use crate::rng::Rng;
use burn::module::{Module, Param};
use burn::tensor::module::{avg_pool2d, linear};
use burn::tensor::ops::AvgPoolOptions;
use burn::tensor::{s, Tensor};

/// A convolution with its own stride and padding ([`Conv`] itself always keeps the size).
#[derive(Module, Debug)]
pub struct StridedConv {
    pub conv: Conv,
    pub stride: usize,
}

impl StridedConv {
    /// `k×k` convolution `cin → cout` with the given stride and padding (no bias, as every
    /// convolution followed by a batch norm in the papers).
    pub fn new(
        p: &Placement,
        rng: &mut Rng,
        channels: [usize; 2],
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Self {
        let mut conv = Conv::new(p, rng, channels[0], channels[1], k, false);
        conv.padding = padding;
        Self { conv, stride }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward_strided(x, self.stride)
    }

    /// Spatial size of the output for an input of size `n`.
    pub fn out_size(&self, n: usize) -> usize {
        let k = self.conv.weight.dims()[2];
        (n + 2 * self.conv.padding).saturating_sub(k) / self.stride + 1
    }
}

/// Convolution → batch norm → ReLU: the stems of both model families.
#[derive(Module, Debug)]
pub struct Stem {
    pub conv: StridedConv,
    pub bn: BatchNorm,
}

impl Stem {
    pub fn new(
        p: &Placement,
        rng: &mut Rng,
        channels: [usize; 2],
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Self {
        Self {
            conv: StridedConv::new(p, rng, channels, k, stride, padding),
            bn: BatchNorm::new(p, channels[1]),
        }
    }

    pub fn forward(&self, x: Tensor<4>, norm: &mut Norm) -> Tensor<4> {
        self.bn.forward_relu(self.conv.forward(x), norm)
    }
}

/// He et al.'s basic block `relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))`, unscaled.
/// With stride 2 it halves the size and doubles the channels; the shortcut is then either
/// their parameter-free option A (subsample, zero-pad the new channels), as in the CIFAR
/// ResNets, or option B, a strided 1×1 convolution and batch norm (`downsample`), as in the
/// ImageNet ResNets of torchvision.
#[derive(Module, Debug)]
pub struct BasicBlock {
    pub conv1: StridedConv,
    pub bn1: BatchNorm,
    pub conv2: StridedConv,
    pub bn2: BatchNorm,
    pub downsample: Option<Downsample>,
    pub stride: usize,
}

impl BasicBlock {
    /// A block with the option-A shortcut (the CIFAR ResNets).
    pub fn new(p: &Placement, rng: &mut Rng, cin: usize, cout: usize, stride: usize) -> Self {
        Self {
            conv1: StridedConv::new(p, rng, [cin, cout], 3, stride, 1),
            bn1: BatchNorm::new(p, cout),
            conv2: StridedConv::new(p, rng, [cout, cout], 3, 1, 1),
            bn2: BatchNorm::new(p, cout),
            downsample: None,
            stride,
        }
    }

    /// A block with torchvision's shortcut: option B where the shape changes, identity else.
    pub fn torchvision(
        p: &Placement,
        rng: &mut Rng,
        cin: usize,
        cout: usize,
        stride: usize,
    ) -> Self {
        Self {
            downsample: Downsample::needed(p, rng, [cin, cout], stride),
            ..Self::new(p, rng, cin, cout, stride)
        }
    }

    pub fn forward(&self, x: Tensor<4>, norm: &mut Norm) -> Tensor<4> {
        relu(self.pre_activation(x, norm))
    }

    /// `g(x) + shortcut(x)`, the sum before the block's final ReLU; `g(x) = bn2(conv2(relu(bn1(conv1
    /// x))))` is the residual branch (`doctor` measures how much that ReLU clips).
    pub fn pre_activation(&self, x: Tensor<4>, norm: &mut Norm) -> Tensor<4> {
        let cout = self.bn2.gamma.dims()[0];
        let shortcut = match &self.downsample {
            Some(d) => d.forward(x.clone(), norm),
            None => shortcut_a(x.clone(), self.stride, cout),
        };
        self.residual(x, norm) + shortcut
    }

    /// The residual branch g(x) alone.
    pub fn residual(&self, x: Tensor<4>, norm: &mut Norm) -> Tensor<4> {
        let h = self.bn1.forward_relu(self.conv1.forward(x), norm);
        self.bn2.forward(self.conv2.forward(h), norm)
    }
}

/// Option-B shortcut `bn(conv1×1 stride s)`: torchvision's `downsample.{0,1}`.
#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: StridedConv,
    pub bn: BatchNorm,
}

impl Downsample {
    /// The shortcut a block `cin → cout` with `stride` needs: None where the identity fits.
    pub fn needed(
        p: &Placement,
        rng: &mut Rng,
        channels: [usize; 2],
        stride: usize,
    ) -> Option<Self> {
        (stride != 1 || channels[0] != channels[1]).then(|| Self {
            conv: StridedConv::new(p, rng, channels, 1, stride, 0),
            bn: BatchNorm::new(p, channels[1]),
        })
    }

    pub fn forward(&self, x: Tensor<4>, norm: &mut Norm) -> Tensor<4> {
        self.bn.forward(self.conv.forward(x), norm)
    }
}

/// torchvision's (v1.5) bottleneck, unscaled and post-activation:
/// `relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1 x))))))) + shortcut(x))` with 1×1
/// `cin → width`, 3×3 `width → width` carrying the stride, 1×1 `width → 4·width`.
#[derive(Module, Debug)]
pub struct BottleneckBlock {
    pub conv1: StridedConv,
    pub bn1: BatchNorm,
    pub conv2: StridedConv,
    pub bn2: BatchNorm,
    pub conv3: StridedConv,
    pub bn3: BatchNorm,
    pub downsample: Option<Downsample>,
}

/// Output channels of a bottleneck per unit of its width (torchvision's `expansion`).
pub const BOTTLENECK_EXPANSION: usize = 4;

impl BottleneckBlock {
    pub fn new(p: &Placement, rng: &mut Rng, cin: usize, width: usize, stride: usize) -> Self {
        let cout = BOTTLENECK_EXPANSION * width;
        Self {
            conv1: StridedConv::new(p, rng, [cin, width], 1, 1, 0),
            bn1: BatchNorm::new(p, width),
            conv2: StridedConv::new(p, rng, [width, width], 3, stride, 1),
            bn2: BatchNorm::new(p, width),
            conv3: StridedConv::new(p, rng, [width, cout], 1, 1, 0),
            bn3: BatchNorm::new(p, cout),
            downsample: Downsample::needed(p, rng, [cin, cout], stride),
        }
    }

    pub fn forward(&self, x: Tensor<4>, norm: &mut Norm) -> Tensor<4> {
        let shortcut = match &self.downsample {
            Some(d) => d.forward(x.clone(), norm),
            None => x.clone(),
        };
        let h = self.bn1.forward_relu(self.conv1.forward(x), norm);
        let h = self.bn2.forward_relu(self.conv2.forward(h), norm);
        relu(self.bn3.forward(self.conv3.forward(h), norm) + shortcut)
    }
}

/// Option A shortcut: keep every `stride`-th pixel and pad the channels with zeros on both
/// sides up to `cout`. The subsampling is a 1×1 average pool with that stride (the same
/// numbers as a stepped slice, whose backward LibTorch's burn backend cannot run).
fn shortcut_a(x: Tensor<4>, stride: usize, cout: usize) -> Tensor<4> {
    let x = if stride > 1 {
        avg_pool2d(x, AvgPoolOptions::new([1, 1]).with_stride([stride, stride]))
    } else {
        x
    };
    let cin = x.dims()[1];
    if cout <= cin {
        return x;
    }
    let (before, after) = ((cout - cin) / 2, cout - cin - (cout - cin) / 2);
    let zeros = x.zeros_like();
    let pad = |n: usize| zeros.clone().slice(s![.., 0..n, .., ..]);
    Tensor::cat(vec![pad(before), x, pad(after)], 1)
}

/// Pooling before the head: the paper's `avg_pool2d(4)` (10×10 → 2×2, floor) when the map is at
/// least 8×8, a global average otherwise (the 8×8 digits keep their 8×8 map through the stem, so
/// they get `avg_pool2d(4)` too; only maps under 8×8 are averaged globally).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    Paper,
    Global,
}

impl Pool {
    /// The paper's pooling where it leaves at least 2×2, the global average otherwise.
    pub fn for_size(h: usize, w: usize) -> Self {
        if h >= 8 && w >= 8 {
            Pool::Paper
        } else {
            Pool::Global
        }
    }

    /// Features per channel after pooling a `h×w` map.
    pub fn cells(self, h: usize, w: usize) -> usize {
        match self {
            Pool::Paper => (h / 4) * (w / 4),
            Pool::Global => 1,
        }
    }

    /// Pool and flatten in (C, H, W) order, as PyTorch's `flatten(1)`.
    pub fn forward(self, x: Tensor<4>) -> Tensor<2> {
        let pooled = match self {
            Pool::Paper => avg_pool2d(x, AvgPoolOptions::new([4, 4])),
            Pool::Global => x.mean_dim(3).mean_dim(2),
        };
        let [b, c, h, w] = pooled.dims();
        pooled.reshape([b, c * h * w])
    }
}

/// The classifier `Linear(features, classes)`, weight stored [in, out] (burn's layout).
#[derive(Module, Debug)]
pub struct Head {
    pub weight: Param<Tensor<2>>,
    pub bias: Param<Tensor<1>>,
}

impl Head {
    /// PyTorch's default initialisation (uniform ±1/√features).
    pub fn new(p: &Placement, rng: &mut Rng, features: usize, classes: usize) -> Self {
        let bound = 1.0 / (features as f64).sqrt();
        let mut draw = |n: usize| (0..n).map(|_| rng.uniform_in(-bound, bound)).collect();
        let weight = p.tensor(draw(features * classes), [features, classes]);
        let bias = p.tensor(draw(classes), [classes]);
        Self {
            weight: Param::from_tensor(weight),
            bias: Param::from_tensor(bias),
        }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        linear(x, self.weight.val(), Some(self.bias.val()))
    }
}
