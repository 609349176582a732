//! Residual functions f(x, θ_n): the layers a residual stack integrates over depth.
//!
//! Every kind implements [`Residual`] and is built from a small config (as in burn-nn):
//! linear `A x`, the MLP `Linear → tanh|relu → Linear`, TinyResNet's conv block
//! `conv3×3 → BN → ReLU → conv3×3 → BN` (paper.md §3.4) and the pre-activation bottleneck
//! `MBottleneck` (paper.md §3.2). Parameters are drawn from [`Rng`] with PyTorch's default
//! scale (uniform ±1/√fan_in), so a seed fixes them on every backend.

use crate::device::Placement;
use crate::norm::{BatchNorm, Norm};
use crate::ops;
use crate::ops::relu;
use crate::rng::Rng;
use burn::module::{Module, Param};
use burn::tensor::module::{conv2d, linear};
use burn::tensor::ops::ConvOptions;
use burn::tensor::Tensor;

/// A residual function acting on states of rank `D` (2 for vectors, 4 for images).
pub trait Residual<const D: usize>: Module + Sized + Sync {
    /// f(x): the residual before the 1/N depth scaling. Batch norms take their statistics as
    /// `norm` says (see [`crate::norm`]).
    fn forward(&self, x: Tensor<D>, norm: &mut Norm) -> Tensor<D>;

    /// Whether the function normalises with batch statistics (so an evaluation depends on the
    /// pass it belongs to).
    fn has_batch_norm(&self) -> bool {
        false
    }
}

/// A parameter tensor drawn uniformly in ±bound.
fn uniform_param<const D: usize>(
    p: &Placement,
    rng: &mut Rng,
    shape: [usize; D],
    bound: f64,
) -> Param<Tensor<D>> {
    let n = shape.iter().product();
    let v = (0..n).map(|_| rng.uniform_in(-bound, bound)).collect();
    Param::from_tensor(p.tensor(v, shape))
}

/// Linear residual `f(x) = x Aᵀ` (the linear ResNets of paper.md §1.5). `a` has shape [d, d].
#[derive(Module, Debug)]
pub struct LinearResidual {
    pub a: Param<Tensor<2>>,
}

/// Config of [`LinearResidual`].
#[derive(Debug, Clone, Copy)]
pub struct LinearConfig {
    pub dim: usize,
}

impl LinearConfig {
    pub fn init(&self, p: &Placement, rng: &mut Rng) -> LinearResidual {
        let bound = 1.0 / (self.dim as f64).sqrt();
        LinearResidual {
            a: uniform_param(p, rng, [self.dim, self.dim], bound),
        }
    }
}

impl Residual<2> for LinearResidual {
    fn forward(&self, x: Tensor<2>, _norm: &mut Norm) -> Tensor<2> {
        x.matmul(self.a.val().transpose())
    }
}

/// Activation of the MLP residual.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    Tanh,
    Relu,
}

impl std::str::FromStr for Activation {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "tanh" => Ok(Activation::Tanh),
            "relu" => Ok(Activation::Relu),
            _ => Err(crate::Error::invalid(
                "--activation",
                format!("`{s}`: expected tanh or relu"),
            )),
        }
    }
}

/// MLP residual `W₂ σ(W₁ x + b₁) + b₂` with weights stored [in, out] (burn's row layout).
#[derive(Module, Debug)]
pub struct Mlp {
    pub w1: Param<Tensor<2>>,
    pub b1: Param<Tensor<1>>,
    pub w2: Param<Tensor<2>>,
    pub b2: Param<Tensor<1>>,
    /// ReLU if true, tanh otherwise (a plain field so the module record stays simple).
    pub relu: bool,
}

/// Config of [`Mlp`].
#[derive(Debug, Clone, Copy)]
pub struct MlpConfig {
    pub dim: usize,
    pub hidden: usize,
    pub activation: Activation,
}

impl MlpConfig {
    pub fn init(&self, p: &Placement, rng: &mut Rng) -> Mlp {
        let b1 = 1.0 / (self.dim as f64).sqrt();
        let b2 = 1.0 / (self.hidden as f64).sqrt();
        Mlp {
            w1: uniform_param(p, rng, [self.dim, self.hidden], b1),
            b1: uniform_param(p, rng, [self.hidden], b1),
            w2: uniform_param(p, rng, [self.hidden, self.dim], b2),
            b2: uniform_param(p, rng, [self.dim], b2),
            relu: self.activation == Activation::Relu,
        }
    }
}

impl Residual<2> for Mlp {
    fn forward(&self, x: Tensor<2>, _norm: &mut Norm) -> Tensor<2> {
        let h = linear(x, self.w1.val(), Some(self.b1.val()));
        let h = if self.relu { relu(h) } else { h.tanh() };
        linear(h, self.w2.val(), Some(self.b2.val()))
    }
}

/// A 3×3 (or 1×1) convolution with padding that keeps the spatial size.
#[derive(Module, Debug)]
pub struct Conv {
    pub weight: Param<Tensor<4>>,
    pub bias: Option<Param<Tensor<1>>>,
    pub padding: usize,
}

impl Conv {
    /// PyTorch's default initialisation (uniform ±1/√fan_in for weight and bias).
    pub fn new(
        p: &Placement,
        rng: &mut Rng,
        cin: usize,
        cout: usize,
        k: usize,
        bias: bool,
    ) -> Self {
        let bound = 1.0 / ((cin * k * k) as f64).sqrt();
        Conv {
            weight: uniform_param(p, rng, [cout, cin, k, k], bound),
            bias: bias.then(|| uniform_param(p, rng, [cout], bound)),
            padding: k / 2,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_strided(x, 1)
    }

    /// The convolution with the given stride. The 3×3 stride-1 "same" case, every residual
    /// block's, goes through [`ops::conv3x3`] (flex's own kernels); a 1×1 stride-1 one (a
    /// bottleneck's) is one batched matrix product; the rest goes through burn.
    pub fn forward_strided(&self, x: Tensor<4>, stride: usize) -> Tensor<4> {
        let [cout, _, kh, kw] = self.weight.dims();
        if (kh, kw, stride, self.padding) == (3, 3, 1, 1) {
            let bias = match &self.bias {
                Some(b) => b.val(),
                None => Tensor::zeros([cout], (&x.device(), x.dtype())),
            };
            return ops::conv3x3(x, self.weight.val(), bias);
        }
        if (kh, kw, stride, self.padding) == (1, 1, 1, 0) {
            return conv1x1(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()));
        }
        let opts = ConvOptions::new([stride, stride], [self.padding, self.padding], [1, 1], 1);
        conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            opts,
        )
    }
}

/// A 1×1 stride-1 convolution as W · x_b for every image b, one batched matrix product whose
/// backward is two more (burn-flex's conv2d pays a channels-last layout round trip and an
/// im2col for it, and its backward is a transposed convolution: a bottleneck ResNet spent
/// most of its step there).
pub fn conv1x1(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
    let [b, cin, h, w] = x.dims();
    let cout = weight.dims()[0];
    let y = weight
        .reshape([1, cout, cin])
        .matmul(x.reshape([b, cin, h * w]));
    let y = match bias {
        Some(bias) => y + bias.reshape([1, cout, 1]),
        None => y,
    };
    y.reshape([b, cout, h, w])
}

/// TinyResNet's residual `conv3×3 → BN → ReLU → conv3×3 → BN` (paper.md §3.4).
#[derive(Module, Debug)]
pub struct ConvBlock {
    pub conv1: Conv,
    pub bn1: BatchNorm,
    pub conv2: Conv,
    pub bn2: BatchNorm,
}

/// Config of [`ConvBlock`].
#[derive(Debug, Clone, Copy)]
pub struct ConvBlockConfig {
    pub channels: usize,
    /// Zero the last BN's weight and bias, so the block starts as exactly 0 (the paper's default).
    pub zero_init: bool,
}

impl ConvBlockConfig {
    pub fn init(&self, p: &Placement, rng: &mut Rng) -> ConvBlock {
        let c = self.channels;
        let mut bn2 = BatchNorm::new(p, c);
        if self.zero_init {
            bn2.gamma = Param::from_tensor(p.zeros([c]));
        }
        ConvBlock {
            conv1: Conv::new(p, rng, c, c, 3, true),
            bn1: BatchNorm::new(p, c),
            conv2: Conv::new(p, rng, c, c, 3, true),
            bn2,
        }
    }
}

impl Residual<4> for ConvBlock {
    fn forward(&self, x: Tensor<4>, norm: &mut Norm) -> Tensor<4> {
        let h = self.bn1.forward_relu(self.conv1.forward(x), norm);
        self.bn2.forward(self.conv2.forward(h), norm)
    }

    fn has_batch_norm(&self) -> bool {
        true
    }
}

/// Pre-activation bottleneck `MBottleneck` (paper.md §3.2):
/// `bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(relu(x)))))))))`, 1×1 4p→p, 3×3 p→p, 1×1 p→4p.
#[derive(Module, Debug)]
pub struct Bottleneck {
    pub conv1: Conv,
    pub bn1: BatchNorm,
    pub conv2: Conv,
    pub bn2: BatchNorm,
    pub conv3: Conv,
    pub bn3: BatchNorm,
}

/// Config of [`Bottleneck`]; the block maps 4·planes channels to 4·planes channels.
#[derive(Debug, Clone, Copy)]
pub struct BottleneckConfig {
    pub planes: usize,
    /// Zero the last BN's weight (torchvision's `zero_init_residual`).
    pub zero_init: bool,
}

impl BottleneckConfig {
    pub fn init(&self, p: &Placement, rng: &mut Rng) -> Bottleneck {
        let (q, w) = (self.planes, 4 * self.planes);
        let mut bn3 = BatchNorm::new(p, w);
        if self.zero_init {
            bn3.gamma = Param::from_tensor(p.zeros([w]));
        }
        Bottleneck {
            conv1: Conv::new(p, rng, w, q, 1, false),
            bn1: BatchNorm::new(p, q),
            conv2: Conv::new(p, rng, q, q, 3, false),
            bn2: BatchNorm::new(p, q),
            conv3: Conv::new(p, rng, q, w, 1, false),
            bn3,
        }
    }
}

impl Residual<4> for Bottleneck {
    fn forward(&self, x: Tensor<4>, norm: &mut Norm) -> Tensor<4> {
        let h = self.bn1.forward(self.conv1.forward(relu(x)), norm);
        let h = self.bn2.forward(self.conv2.forward(relu(h)), norm);
        self.bn3.forward(self.conv3.forward(relu(h)), norm)
    }

    fn has_batch_norm(&self) -> bool {
        true
    }
}
