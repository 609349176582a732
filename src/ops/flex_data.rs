//! Moving values between flex tensors and the plain slices the flex kernels of `src/ops/` work
//! on: borrow the storage (copying only a non-contiguous tensor), wrap a result.

use burn::backend::flex::FlexTensor;
use burn::tensor::{Element, TensorData};
use std::borrow::Cow;

/// The values of a float tensor in row-major order (copied only when not contiguous).
pub(crate) fn values<T: Element + bytemuck::Pod>(t: &FlexTensor) -> Cow<'_, [T]> {
    match t.as_slice::<T>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(t.to_contiguous().as_slice::<T>().unwrap_or(&[]).to_vec()),
    }
}

/// A flex tensor of `shape` holding `values`.
pub(crate) fn tensor<T: Element>(values: Vec<T>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}
