//! flex's side of the batch-norm ops: borrow the storage, run [`super::kernel`], wrap. The
//! kernels are f32 and f64; any other float type takes the composition ([`super::composed`]).

use super::composed;
use super::kernel::{self, Float, Layout};
use crate::ops::flex_data::{tensor, values};
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::backend::TensorMetadata;
use burn::tensor::{DType, Element};

fn layout(x: &FlexTensor) -> Layout {
    let shape = x.shape();
    let (n, c) = (shape[0], shape[1]);
    Layout {
        n,
        c,
        inner: shape.num_elements() / (n * c).max(1),
    }
}

fn stats<T: Float + Element + bytemuck::Pod>(x: &FlexTensor) -> (FlexTensor, FlexTensor) {
    let l = layout(x);
    let (mean, var) = kernel::statistics(l, &values::<T>(x));
    (tensor(mean, vec![l.c]), tensor(var, vec![l.c]))
}

pub(super) fn statistics(x: FlexTensor) -> (FlexTensor, FlexTensor) {
    match x.dtype() {
        DType::F64 => stats::<f64>(&x),
        DType::F32 => stats::<f32>(&x),
        _ => composed::statistics::<Flex>(x),
    }
}

fn norm<T: Float + Element + bytemuck::Pod>(
    x: &FlexTensor,
    [gamma, beta, mean, var]: &[FlexTensor; 4],
    epsilon: f64,
    relu: bool,
) -> FlexTensor {
    let l = layout(x);
    let y = kernel::normalize(
        l,
        &values::<T>(x),
        &values(gamma),
        &values(beta),
        &values(mean),
        &values(var),
        epsilon,
        relu,
    );
    tensor(y, x.shape().to_vec())
}

pub(super) fn normalize(x: FlexTensor, p: [FlexTensor; 4], epsilon: f64, relu: bool) -> FlexTensor {
    match x.dtype() {
        DType::F64 => norm::<f64>(&x, &p, epsilon, relu),
        DType::F32 => norm::<f32>(&x, &p, epsilon, relu),
        _ => composed::normalize::<Flex>(x, p, epsilon, relu),
    }
}

fn back<T: Float + Element + bytemuck::Pod>(
    x: &FlexTensor,
    [gamma, mean, var, y, grad]: &[FlexTensor; 5],
    epsilon: f64,
    relu: bool,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let l = layout(x);
    let (dx, dg, db) = kernel::backward(
        l,
        &values::<T>(x),
        &values(gamma),
        &values(mean),
        &values(var),
        &values(y),
        &values(grad),
        epsilon,
        relu,
    );
    (
        tensor(dx, x.shape().to_vec()),
        tensor(dg, vec![l.c]),
        tensor(db, vec![l.c]),
    )
}

pub(super) fn backward(
    x: FlexTensor,
    p: [FlexTensor; 5],
    epsilon: f64,
    relu: bool,
    given: bool,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    match x.dtype() {
        DType::F64 => back::<f64>(&x, &p, epsilon, relu),
        DType::F32 => back::<f32>(&x, &p, epsilon, relu),
        _ => composed::backward::<Flex>(x, p, epsilon, relu, given),
    }
}

fn run<T: Float + Element + bytemuck::Pod>(
    [rm, rv, mean, var]: &[FlexTensor; 4],
    momentum: f64,
    unbias: f64,
) -> (FlexTensor, FlexTensor) {
    let [keep, take, take_var] = [1.0 - momentum, momentum, momentum * unbias].map(T::from_f64);
    // The composed order: both products rounded, then the sum.
    let blend = |r: &FlexTensor, s: &FlexTensor, take: T| -> Vec<T> {
        let (r, s) = (values::<T>(r), values::<T>(s));
        r.iter()
            .zip(s.iter())
            .map(|(&r, &s)| r * keep + s * take)
            .collect()
    };
    let c = vec![rm.shape().num_elements()];
    (
        tensor(blend(rm, mean, take), c.clone()),
        tensor(blend(rv, var, take_var), c),
    )
}

pub(super) fn running(
    stats: [FlexTensor; 4],
    momentum: f64,
    unbias: f64,
) -> (FlexTensor, FlexTensor) {
    match stats[0].dtype() {
        DType::F64 => run::<f64>(&stats, momentum, unbias),
        DType::F32 => run::<f32>(&stats, momentum, unbias),
        _ => composed::running::<Flex>(stats, momentum, unbias),
    }
}

/// Statistics, then the running statistics after them (new tensors).
pub(super) fn update_statistics(
    x: FlexTensor,
    rm: FlexTensor,
    rv: FlexTensor,
    momentum: f64,
) -> (FlexTensor, FlexTensor, FlexTensor, FlexTensor) {
    let unbias = composed::unbias(&x.shape());
    let (mean, var) = statistics(x);
    let (rm, rv) = running([rm, rv, mean.clone(), var.clone()], momentum, unbias);
    (mean, var, rm, rv)
}
