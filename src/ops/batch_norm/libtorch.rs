//! LibTorch's path: ATen's own batch-norm kernels, on the CPU and on CUDA. The statistics are
//! `batch_norm_update_stats`, the normalisation ATen's evaluation-mode `batch_norm` with the given
//! statistics (then an in-place ReLU), the backward `native_batch_norm_backward` through the
//! shim (`ops/aten`). burn-tch composes all three from a dozen elementwise passes.

use super::super::aten;
use burn::backend::libtorch::TchTensor;

/// ATen's `batch_norm_update_stats` without running statistics: the batch mean and biased
/// variance from the contiguous per-channel kernel that PyTorch's training forward uses. A
/// `var_mean` over dimensions (0, 2, 3) took a generic Welford reduction instead: 23 % of a
/// TinyResNet N = 16 step.
pub(super) fn statistics(x: TchTensor) -> (TchTensor, TchTensor) {
    let (mean, var) =
        x.tensor
            .batch_norm_update_stats(None::<tch::Tensor>, None::<tch::Tensor>, 0.0);
    (TchTensor::new(mean), TchTensor::new(var))
}

pub(super) fn normalize(x: TchTensor, p: [TchTensor; 4], epsilon: f64, relu: bool) -> TchTensor {
    let [gamma, beta, mean, var] = p.map(|t| t.tensor);
    let mut y = x.tensor.batch_norm(
        Some(&gamma),
        Some(&beta),
        Some(&mean),
        Some(&var),
        false,
        0.0,
        epsilon,
        true,
    );
    if relu {
        // `y` is this op's own fresh output: rectified in place.
        let _ = y.relu_();
    }
    TchTensor::new(y)
}

pub(super) fn backward(
    x: TchTensor,
    p: [TchTensor; 5],
    epsilon: f64,
    relu: bool,
    given: bool,
) -> (TchTensor, TchTensor, TchTensor) {
    let [gamma, mean, var, y, grad] = p.map(|t| t.tensor);
    let mask = relu.then_some(&y);
    let (dx, dg, db) =
        aten::bn_backward(&x.tensor, &gamma, &mean, &var, mask, &grad, epsilon, given);
    (TchTensor::new(dx), TchTensor::new(dg), TchTensor::new(db))
}

/// Statistics and, in place, the running statistics: `batch_norm_update_stats` given `rm` and
/// `rv` blends them in the same pass (PyTorch's rule, unbiased by M/(M − 1)). With one value
/// per channel ATen would divide by M − 1 = 0; the variance is 0 there and the rule a plain blend.
pub(super) fn update_statistics(
    x: TchTensor,
    rm: TchTensor,
    rv: TchTensor,
    momentum: f64,
) -> (TchTensor, TchTensor, TchTensor, TchTensor) {
    let (mut r_mean, mut r_var) = (rm.tensor.shallow_clone(), rv.tensor.shallow_clone());
    let shape = x.tensor.size();
    let per_channel = shape.iter().product::<i64>() / shape.get(1).copied().unwrap_or(1).max(1);
    let (mean, var) = if per_channel > 1 {
        x.tensor
            .batch_norm_update_stats(Some(&r_mean), Some(&r_var), momentum)
    } else {
        let (mean, var) =
            x.tensor
                .batch_norm_update_stats(None::<tch::Tensor>, None::<tch::Tensor>, 0.0);
        let _ = r_mean.lerp_(&mean, momentum);
        let _ = r_var.lerp_(&var, momentum);
        (mean, var)
    };
    (TchTensor::new(mean), TchTensor::new(var), rm, rv)
}
