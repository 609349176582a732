//! `scaled_dot(a, b, s) = s ⟨a, b⟩`, differentiated with respect to `a` only: the seed of the
//! adjoint's vector-Jacobian products (`grad.rs`), where `b` is the adjoint state and `s` a step
//! weight. burn's backward starts from a scalar, so a product `⟨k, g⟩` stands in for PyTorch's
//! `grad_outputs=g`; this op keeps that to one read of each tensor forward and one pass back
//! (`dk = s·u·b`), where a scaled copy, a product and a sum took five reads and three writes.
//!
//! The default body is burn's composition, a product and a sum over the whole tensor (CubeCL
//! runs the sum as one parallel reduction). Flex writes it as one 1×n by n×1 matrix product, a
//! single pass; that shape must stay off GPUs, where cubek gives the one output element to one
//! unit or one cube. LibTorch uses ATen's `dot`, as MKL's `sgemv` took 9.7 ms for that product
//! at TinyResNet's activation size against 0.3 ms.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, TensorMetadata};
use burn::tensor::Tensor;

/// The scaled inner product and its gradient.
#[backend_extension(
    Flex,
    LibTorch: cfg(feature = "tch"),
    Cube: cfg(any(feature = "cuda", feature = "vulkan", feature = "wgpu")),
    Autodiff
)]
pub trait DotOps: Backend {
    /// `scale · ⟨a, b⟩` as a one-element tensor; `a` and `b` have the same shape.
    fn scaled_dot(a: FloatTensor<Self>, b: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        let sum = Self::float_sum(Self::float_mul(a, b));
        Self::float_mul_scalar(sum, scale.into())
    }

    /// `scale · grad · b`, the gradient with respect to `a` (`grad` has one element).
    fn scaled_dot_backward(
        b: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        let ones = vec![1; b.shape().num_dims()];
        let factor = Self::float_reshape(Self::float_mul_scalar(grad, scale.into()), ones.into());
        Self::float_mul(b, factor)
    }
}

/// Flex: one 1×n by n×1 matrix product reads each tensor once and writes nothing in between.
impl DotOps for burn::backend::Flex {
    fn scaled_dot(a: FloatTensor<Self>, b: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        use burn::backend::ops::FloatTensorOps;
        let n = a.shape().num_elements();
        let row = Self::float_reshape(a, [1, n].into());
        let column = Self::float_reshape(b, [n, 1].into());
        let product = Self::float_matmul(row, column);
        Self::float_reshape(Self::float_mul_scalar(product, scale.into()), [1].into())
    }
}

/// CubeCL keeps the composition: as a matrix product the inner product is cubek's
/// `MatmulKind::InnerProduct`, whose kernels give the one output element to one unit
/// (autotune's `matmul_naive`) or one cube (the untuned tiled kernel), so one GPU thread or
/// streaming multiprocessor would walk the whole activation every adjoint step.
#[cfg(any(feature = "cuda", feature = "vulkan", feature = "wgpu"))]
impl DotOps for burn::backend::Cube {}

#[cfg(feature = "tch")]
impl DotOps for burn::backend::LibTorch {
    fn scaled_dot(a: FloatTensor<Self>, b: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        use burn::backend::libtorch::TchTensor;
        let (a, b) = (a.tensor.reshape([-1]), b.tensor.reshape([-1]));
        TchTensor::new((a.dot(&b) * scale).reshape([1]))
    }
}

#[derive(Debug)]
struct DotBackward;

impl<B: Backend + DotOps> Backward<B, 1> for DotBackward {
    /// `b` and the scale.
    type State = (FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            let (b, scale) = ops.state;
            grads.register::<B>(node.id, B::scaled_dot_backward(b, grad, scale));
        }
    }
}

impl<B: Backend + DotOps, C: CheckpointStrategy> DotOps for Autodiff<B, C> {
    /// Tracks `a` only: `b` is a constant of the product.
    fn scaled_dot(a: FloatTensor<Self>, b: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        let b = b.into_primitive();
        match DotBackward
            .prepare::<C>([a.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let value = B::scaled_dot(a.into_primitive(), b.clone(), scale);
                prep.finish((b, scale), value)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::scaled_dot(a.into_primitive(), b, scale)),
        }
    }

    /// Values only (never differentiated again).
    fn scaled_dot_backward(
        b: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        FloatTensor::<Self>::new(B::scaled_dot_backward(
            b.into_primitive(),
            grad.into_primitive(),
            scale,
        ))
    }
}

/// `scale · ⟨a, b⟩`, differentiated with respect to `a` only (`b` is taken as a constant).
pub fn scaled_dot<const D: usize>(a: Tensor<D>, b: Tensor<D>, scale: f64) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as DotOps>::scaled_dot(
        a.into_dispatch(),
        b.into_dispatch(),
        scale,
    ))
}
