//! TinyResNet (paper.md §3.4): stem → N residual conv blocks integrated over depth → pool → linear.

use super::layers::{Head, Pool, Stem};
use super::InputShape;
use crate::device::Placement;
use crate::family::Family;
use crate::grad::{GradMode, StackRun};
use crate::norm::{BnMode, Norm};
use crate::residual::{ConvBlock, ConvBlockConfig};
use crate::rng::Rng;
use crate::scheme::Scheme;
use crate::stack::Stack;
use crate::Result;
use burn::module::Module;
use burn::tensor::Tensor;

/// Inputs at least this large get the paper's stem (conv5×5 stride 3: 32×32 → 10×10,
/// 28×28 → 9×9); smaller ones (the 8×8 digits) a conv3×3 stride 1 that keeps their size, since
/// a stride-3 stem would leave 2×2 pixels.
pub const PAPER_STEM_MIN_SIZE: usize = 24;

/// Settings of a [`TinyResNet`].
#[derive(Debug, Clone, Copy)]
pub struct TinyConfig {
    /// P, the channels of the residual stack (the paper's `--planes 16`).
    pub planes: usize,
    /// N, the residual functions of the stack.
    pub depth: usize,
    pub scheme: Scheme,
    /// One function used N times (the "ODE-like" model) instead of N.
    pub tied: bool,
    /// The piecewise-constant initialisation draws this many functions (the paper's
    /// `--base_depth 8`): function n copies draw ⌊n·base/N⌋.
    pub base_depth: usize,
    pub input: InputShape,
}

/// The paper's TinyResNet, with the stem and pooling adapted to the input size (see
/// [`PAPER_STEM_MIN_SIZE`] and [`Pool::for_size`]).
#[derive(Module, Debug)]
pub struct TinyResNet {
    pub stem: Stem,
    pub stack: Stack<ConvBlock>,
    pub head: Head,
    #[module(skip)]
    pub pool: Pool,
}

impl TinyConfig {
    /// Draws the parameters: stem, residual functions (zero-initialised last BN, weight and
    /// bias, so every residual is exactly 0 at init), head.
    pub fn init(&self, p: &Placement, rng: &mut Rng) -> Result<TinyResNet> {
        let (c, h, w) = (self.input.channels, self.input.height, self.input.width);
        let paper = h.min(w) >= PAPER_STEM_MIN_SIZE;
        let (k, stride) = if paper { (5, 3) } else { (3, 1) };
        let stem = Stem::new(p, rng, [c, self.planes], k, stride, 1);
        let (fh, fw) = (stem.conv.out_size(h), stem.conv.out_size(w));
        let block = ConvBlockConfig {
            channels: self.planes,
            zero_init: true,
        };
        let stack = if self.tied {
            Stack::tied(block.init(p, rng), self.depth, self.scheme)?
        } else {
            let family = Family::Piecewise(self.base_depth.max(1));
            let functions = family.functions(self.depth, rng, |r| block.init(p, r));
            Stack::new(functions, self.scheme)?
        };
        let pool = Pool::for_size(fh, fw);
        let features = self.planes * pool.cells(fh, fw);
        let head = Head::new(p, rng, features, self.input.classes);
        Ok(TinyResNet {
            stem,
            stack,
            head,
            pool,
        })
    }
}

impl TinyResNet {
    /// Training forward: logits and the stack's run for [`crate::grad::backward_through`].
    pub fn forward_train(
        &self,
        x: Tensor<4>,
        mode: GradMode,
        bn: BnMode,
    ) -> (Tensor<2>, Vec<StackRun<4>>) {
        let x0 = self.stem.forward(x, &mut Norm::train(bn));
        let run = self.stack.run(x0, mode, bn);
        let logits = self.head.forward(self.pool.forward(run.output.clone()));
        (logits, vec![run])
    }

    /// Inference forward on a graph-free model (running statistics everywhere).
    pub(super) fn forward_plain(&self, x: Tensor<4>) -> Tensor<2> {
        let x0 = self.stem.forward(x, &mut Norm::eval());
        let xn = self.stack.forward_eval(x0);
        self.head.forward(self.pool.forward(xn))
    }
}
