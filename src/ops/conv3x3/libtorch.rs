//! LibTorch's backward: ATen's `convolution_backward` (oneDNN on the CPU, cuDNN on CUDA), the
//! call PyTorch's autograd makes, through the shim (`ops/aten`). burn-tch's default is a
//! transposed convolution for `dx` and a convolution over swapped batch and channel axes for
//! `dW`, each with layout copies. The forward stays burn-tch's `conv2d` (ATen's already).

use super::super::aten;
use burn::backend::libtorch::TchTensor;

/// ATen's result where the mask asked for it.
fn asked(t: Option<tch::Tensor>) -> tch::Tensor {
    t.unwrap_or_else(|| panic!("ATen: convolution_backward left out a gradient it was asked for"))
}

pub(super) fn x_backward(x: TchTensor, weight: TchTensor, grad: TchTensor) -> TchTensor {
    let [dx, _, _] = aten::conv3x3_backward(&x.tensor, &weight.tensor, &grad.tensor, 1);
    TchTensor::new(asked(dx))
}

/// `(dW, db)`; `bias` itself in place of `db` unless `bias_grad` (a block without a bias skips
/// the reduction of `grad` over the batch).
pub(super) fn params_backward(
    x: TchTensor,
    weight: TchTensor,
    bias: TchTensor,
    grad: TchTensor,
    bias_grad: bool,
) -> (TchTensor, TchTensor) {
    let mask = if bias_grad { 6 } else { 2 };
    let [_, dw, db] = aten::conv3x3_backward(&x.tensor, &weight.tensor, &grad.tensor, mask);
    let db = match bias_grad {
        true => TchTensor::new(asked(db)),
        false => bias,
    };
    (TchTensor::new(asked(dw)), db)
}
