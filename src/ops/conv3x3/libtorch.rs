//! LibTorch's backward: ATen's `convolution_backward` (oneDNN on the CPU, cuDNN on CUDA), the
//! call PyTorch's autograd makes, through the shim (`ops/aten`). burn-tch's default is a
//! transposed convolution for `dx` and a convolution over swapped batch and channel axes for
//! `dW`, each with layout copies. The forward stays burn-tch's `conv2d` (ATen's already).

use super::super::aten;
use super::Wanted;
use burn::backend::libtorch::TchTensor;

/// One `convolution_backward` for every gradient `wanted` asks; the inputs stand in for the
/// others.
pub(super) fn backward(
    x: TchTensor,
    weight: TchTensor,
    bias: TchTensor,
    grad: TchTensor,
    wanted: Wanted,
) -> (TchTensor, TchTensor, TchTensor) {
    let mask = i32::from(wanted.x) | i32::from(wanted.weight) << 1 | i32::from(wanted.bias) << 2;
    let [dx, dw, db] = aten::conv3x3_backward(&x.tensor, &weight.tensor, &grad.tensor, mask);
    let pick = |asked: bool, got: Option<tch::Tensor>, input: TchTensor| match asked {
        true => TchTensor::new(got.unwrap_or_else(|| {
            panic!("ATen: convolution_backward left out a gradient it was asked for")
        })),
        false => input,
    };
    (
        pick(wanted.x, dx, x),
        pick(wanted.weight, dw, weight),
        pick(wanted.bias, db, bias),
    )
}
