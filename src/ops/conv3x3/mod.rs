//! `conv3x3`: the 3×3 convolution with stride 1 and padding 1 of every residual block, as a
//! burn backend extension: on flex, [`kernel`]'s im2col + GEMM (and [`direct`]'s AVX-512)
//! kernels, forward and backward; on LibTorch, ATen's `convolution_backward` for the backward
//! (`libtorch.rs`); elsewhere (CubeCL) burn's own `conv2d` and its backward.
//!
//! The trait's default bodies compose burn's module ops; `Autodiff` gets a handwritten backward
//! (modelled on burn-autodiff's `conv2d`) that calls the backend's own `conv3x3_backward`,
//! which is where the fast paths come in.

pub mod direct;
mod flex;
pub mod kernel;
#[cfg(feature = "tch")]
mod libtorch;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::ops::ConvOptions;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch};
use burn::tensor::Tensor;

/// Stride 1, padding 1, no dilation, one group.
fn same() -> ConvOptions<2> {
    ConvOptions::new([1, 1], [1, 1], [1, 1], 1)
}

/// The 3×3 "same" convolution and its backward, per backend.
#[backend_extension(
    Flex,
    LibTorch: cfg(feature = "tch"),
    Cube: cfg(any(feature = "cuda", feature = "vulkan", feature = "wgpu")),
    Autodiff
)]
pub trait Conv3x3Ops: Backend {
    /// burn's `conv2d` with stride 1 and padding 1; `weight` is `[Cout, Cin, 3, 3]`.
    fn conv3x3(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, Some(bias), same())
    }

    /// The gradients of `⟨grad, conv3x3(x, weight, bias)⟩` that `wanted` asks for, as
    /// `(dx, dW, db)`; where one is not asked the input itself stands in for it, unread (no
    /// kernel). One op, because LibTorch's `convolution_backward` computes all three in one call
    /// (PyTorch's autograd makes one; two calls cost a second dispatch per convolution) and flex
    /// computes dW and db in one pass over the images. A block without a bias (its zero bias is
    /// a constant) skips the reduction of `grad` over the batch.
    fn conv3x3_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        wanted: Wanted,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let dx = match wanted.x {
            true => Self::conv2d_x_backward(x.clone(), weight.clone(), grad.clone(), same()),
            false => x.clone(),
        };
        let dw = match wanted.weight {
            true => Self::conv2d_weight_backward(x.clone(), weight, grad.clone(), same()),
            false => weight,
        };
        let db = match wanted.bias {
            true => Self::conv2d_bias_backward(x, bias, grad),
            false => bias,
        };
        (dx, dw, db)
    }
}

/// Which gradients a convolution's backward must compute (its inputs that are tracked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    pub x: bool,
    pub weight: bool,
    pub bias: bool,
}

impl Conv3x3Ops for burn::backend::Flex {
    fn conv3x3(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        flex::conv3x3(x, weight, bias)
    }

    fn conv3x3_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        wanted: Wanted,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        flex::backward(x, weight, bias, grad, wanted)
    }
}

#[cfg(feature = "tch")]
impl Conv3x3Ops for burn::backend::LibTorch {
    fn conv3x3_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        wanted: Wanted,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        libtorch::backward(x, weight, bias, grad, wanted)
    }
}

#[cfg(any(feature = "cuda", feature = "vulkan", feature = "wgpu"))]
impl Conv3x3Ops for burn::backend::Cube {}

#[derive(Debug)]
struct Conv3x3Backward;

impl<B: Backend + Conv3x3Ops> Backward<B, 3> for Conv3x3Backward {
    type State = (NodeId, NodeId, NodeId);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, cp: &mut Checkpointer) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state, bias_state) = ops.state;
        let x = cp.retrieve_node_output::<FloatTensor<B>>(x_state);
        let weight = cp.retrieve_node_output::<FloatTensor<B>>(weight_state);
        let bias = cp.retrieve_node_output::<FloatTensor<B>>(bias_state);
        let wanted = Wanted {
            x: node_x.is_some(),
            weight: node_weight.is_some(),
            bias: node_bias.is_some(),
        };
        if !(wanted.x || wanted.weight || wanted.bias) {
            return;
        }
        let (dx, dw, db) = B::conv3x3_backward(x, weight, bias, grad, wanted);
        for (node, g) in [(node_x, dx), (node_weight, dw), (node_bias, db)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

impl<B: Backend + Conv3x3Ops, C: CheckpointStrategy> Conv3x3Ops for Autodiff<B, C> {
    fn conv3x3(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        match Conv3x3Backward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (
                    prep.checkpoint(&x),
                    prep.checkpoint(&weight),
                    prep.checkpoint(&bias),
                );
                let y = B::conv3x3(
                    x.into_primitive(),
                    weight.into_primitive(),
                    bias.into_primitive(),
                );
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conv3x3(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
            )),
        }
    }

    /// Values only (not differentiated again): the models never take second derivatives.
    fn conv3x3_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        wanted: Wanted,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [x, weight, bias, grad] = [x, weight, bias, grad].map(|t| t.into_primitive());
        let (dx, dw, db) = B::conv3x3_backward(x, weight, bias, grad, wanted);
        let new = FloatTensor::<Self>::new;
        (new(dx), new(dw), new(db))
    }
}

/// burn's `conv2d(x, weight, bias)` with stride 1 and padding 1 for a `[Cout, Cin, 3, 3]`
/// weight, on whatever device `x` lives (flex's own kernels there).
pub fn conv3x3(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as Conv3x3Ops>::conv3x3(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}
