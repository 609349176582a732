//! `relu`, as a backend extension for its backward: burn's default `relu_backward` is two
//! passes (a `≤ 0` mask, then a masked fill) that burn-tch does not override; on LibTorch it is
//! ATen's one-pass `threshold_backward`, what PyTorch's autograd runs. Flex and CubeCL keep
//! burn's own ops (the trait's default bodies).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch};
use burn::tensor::Tensor;

/// `max(x, 0)` and its backward from the output.
#[backend_extension(
    Flex,
    LibTorch: cfg(feature = "tch"),
    Cube: cfg(any(feature = "cuda", feature = "vulkan", feature = "wgpu")),
    Autodiff
)]
pub trait ReluOps: Backend {
    /// burn's `relu`: values ≤ 0 become 0, NaN passes.
    fn relu_op(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::relu(x)
    }

    /// `grad` where the output `y` is positive, 0 elsewhere.
    fn relu_op_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::relu_backward(y, grad)
    }
}

impl ReluOps for burn::backend::Flex {}

#[cfg(any(feature = "cuda", feature = "vulkan", feature = "wgpu"))]
impl ReluOps for burn::backend::Cube {}

#[cfg(feature = "tch")]
impl ReluOps for burn::backend::LibTorch {
    fn relu_op_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        use burn::backend::libtorch::TchTensor;
        // tch binds ATen's `threshold_backward(grad_output, self, threshold)` on `self`.
        TchTensor::new(y.tensor.threshold_backward(&grad.tensor, 0))
    }
}

#[derive(Debug)]
struct ReluBackward;

impl<B: Backend + ReluOps> Backward<B, 1> for ReluBackward {
    /// The output, whose sign is the mask.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            grads.register::<B>(node.id, B::relu_op_backward(ops.state, grad));
        }
    }
}

impl<B: Backend + ReluOps, C: CheckpointStrategy> ReluOps for Autodiff<B, C> {
    fn relu_op(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match ReluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::relu_op(x.into_primitive());
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::relu_op(x.into_primitive())),
        }
    }

    /// Values only (never differentiated again).
    fn relu_op_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        FloatTensor::<Self>::new(B::relu_op_backward(
            y.into_primitive(),
            grad.into_primitive(),
        ))
    }
}

/// `max(x, 0)`, differentiated by the device's own ReLU backward.
pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as ReluOps>::relu_op(x.into_dispatch()))
}
