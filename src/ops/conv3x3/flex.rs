//! flex's side of `conv3x3`: borrow the tensors' storage, run [`super::kernel`], wrap the result.
//! Half precision (which the kernels do not cover) falls back to burn-flex's own ops.

use super::direct;
use super::kernel::{self, Real, Shape};
use super::{same, Wanted};
use crate::ops::flex_data::{tensor, values};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::{Flex, TensorMetadata};
use burn::tensor::{DType, Element};

/// The fastest forward kernel for a float type: the direct AVX-512 one for f32 where it
/// applies, im2col + GEMM otherwise.
trait Conv: Real + Element + bytemuck::Pod {
    fn conv(s: Shape, x: &[Self], weight: &[Self], bias: Option<&[Self]>) -> Vec<Self>;

    /// The weight and bias gradients, likewise.
    fn weight_grad(s: Shape, x: &[Self], dy: &[Self]) -> (Vec<Self>, Vec<Self>) {
        kernel::weight_grad(s, x, dy)
    }
}

impl Conv for f32 {
    fn conv(s: Shape, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        direct::forward(s, x, weight, bias).unwrap_or_else(|| kernel::forward(s, x, weight, bias))
    }

    fn weight_grad(s: Shape, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
        direct::weight_grad(s, x, dy).unwrap_or_else(|| kernel::weight_grad(s, x, dy))
    }
}

impl Conv for f64 {
    fn conv(s: Shape, x: &[f64], weight: &[f64], bias: Option<&[f64]>) -> Vec<f64> {
        kernel::forward(s, x, weight, bias)
    }
}

fn shape(x: &FlexTensor, weight: &FlexTensor) -> Shape {
    let (xs, ws) = (x.shape(), weight.shape());
    Shape {
        batch: xs[0],
        cin: xs[1],
        cout: ws[0],
        h: xs[2],
        w: xs[3],
    }
}

fn forward<T: Conv>(x: &FlexTensor, weight: &FlexTensor, bias: &FlexTensor) -> FlexTensor {
    let s = shape(x, weight);
    let y = T::conv(s, &values::<T>(x), &values(weight), Some(&values(bias)));
    tensor(y, vec![s.batch, s.cout, s.h, s.w])
}

pub(super) fn conv3x3(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
    match x.dtype() {
        DType::F32 => forward::<f32>(&x, &weight, &bias),
        DType::F64 => forward::<f64>(&x, &weight, &bias),
        _ => Flex::conv2d(x, weight, Some(bias), same()),
    }
}

fn x_grad<T: Conv>(x: &FlexTensor, weight: &FlexTensor, grad: &FlexTensor) -> FlexTensor {
    let s = shape(x, weight);
    let dx = kernel::input_grad(s, &values::<T>(weight), &values(grad), |s, x, w| {
        T::conv(s, x, w, None)
    });
    tensor(dx, vec![s.batch, s.cin, s.h, s.w])
}

fn x_backward(x: FlexTensor, weight: FlexTensor, grad: FlexTensor) -> FlexTensor {
    match x.dtype() {
        DType::F32 => x_grad::<f32>(&x, &weight, &grad),
        DType::F64 => x_grad::<f64>(&x, &weight, &grad),
        _ => Flex::conv2d_x_backward(x, weight, grad, same()),
    }
}

fn params_grad<T: Conv>(
    x: &FlexTensor,
    weight: &FlexTensor,
    grad: &FlexTensor,
) -> (FlexTensor, FlexTensor) {
    let s = shape(x, weight);
    let (dw, db) = T::weight_grad(s, &values::<T>(x), &values(grad));
    (
        tensor(dw, weight.shape().to_vec()),
        tensor(db, vec![s.cout]),
    )
}

fn params_backward(
    x: FlexTensor,
    weight: FlexTensor,
    bias: FlexTensor,
    grad: FlexTensor,
) -> (FlexTensor, FlexTensor) {
    match x.dtype() {
        DType::F32 => params_grad::<f32>(&x, &weight, &grad),
        DType::F64 => params_grad::<f64>(&x, &weight, &grad),
        _ => (
            Flex::conv2d_weight_backward(x.clone(), weight, grad.clone(), same()),
            Flex::conv2d_bias_backward(x, bias, grad),
        ),
    }
}

/// The gradients `wanted` asks for, `(dx, dW, db)`; dW and db come from one pass, whichever of
/// them is asked. Where one is not asked its input stands in.
pub(super) fn backward(
    x: FlexTensor,
    weight: FlexTensor,
    bias: FlexTensor,
    grad: FlexTensor,
    wanted: Wanted,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let dx = match wanted.x {
        true => x_backward(x.clone(), weight.clone(), grad.clone()),
        false => x.clone(),
    };
    let (dw, db) = match wanted.weight || wanted.bias {
        true => params_backward(x, weight, bias, grad),
        false => (weight, bias),
    };
    (dx, dw, db)
}
