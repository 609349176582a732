//! LibTorch's path: ATen's own batch-norm kernels, on the CPU and on CUDA. The statistics are
//! `batch_norm_update_stats`, the normalisation ATen's evaluation-mode `batch_norm` with the given
//! statistics (then an in-place ReLU), the backward `native_batch_norm_backward` through the
//! shim (`ops/aten`). burn-tch composes all three from a dozen elementwise passes.

use super::super::aten::{self, Spread};
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
    let spread = Spread::Var(&var);
    let (dx, dg, db) = aten::bn_backward(
        &x.tensor, &gamma, &mean, spread, mask, &grad, epsilon, given,
    );
    (TchTensor::new(dx), TchTensor::new(dg), TchTensor::new(db))
}

/// Values per channel (M).
fn per_channel(x: &tch::Tensor) -> i64 {
    let shape = x.size();
    shape.iter().product::<i64>() / shape.get(1).copied().unwrap_or(1).max(1)
}

/// ATen's training forward, `native_batch_norm` (PyTorch's `batch_norm` in training runs it):
/// statistics, the running statistics in place (with `update`) and the normalisation in one op;
/// it saves `(mean, 1/√(var + ε))` for its backward. With one value per channel ATen's unbiased
/// running variance would divide by M − 1 = 0: the variance is 0 there and the rule a blend.
#[allow(clippy::too_many_arguments)]
pub(super) fn train(
    x: TchTensor,
    gamma: TchTensor,
    beta: TchTensor,
    rm: TchTensor,
    rv: TchTensor,
    momentum: f64,
    epsilon: f64,
    relu: bool,
    update: bool,
) -> (TchTensor, TchTensor, TchTensor, TchTensor, TchTensor) {
    let in_place = update && per_channel(&x.tensor) > 1;
    let (mut y, mean, invstd) = x.tensor.native_batch_norm(
        Some(&gamma.tensor),
        Some(&beta.tensor),
        in_place.then_some(&rm.tensor),
        in_place.then_some(&rv.tensor),
        true,
        momentum,
        epsilon,
    );
    if update && !in_place {
        let _ = rm.tensor.shallow_clone().lerp_(&mean, momentum);
        let _ = rv.tensor.shallow_clone().g_mul_scalar_(1.0 - momentum);
    }
    if relu {
        // `y` is this op's own fresh output: rectified in place.
        let _ = y.relu_();
    }
    let wrap = TchTensor::new;
    (wrap(y), wrap(mean), wrap(invstd), rm, rv)
}

/// The backward of [`train`], from the `(mean, 1/√(var + ε))` it saved.
pub(super) fn train_backward(
    x: TchTensor,
    p: [TchTensor; 5],
    epsilon: f64,
    relu: bool,
) -> (TchTensor, TchTensor, TchTensor) {
    let [gamma, mean, invstd, y, grad] = p.map(|t| t.tensor);
    let mask = relu.then_some(&y);
    let spread = Spread::InvStd(&invstd);
    let (dx, dg, db) = aten::bn_backward(
        &x.tensor, &gamma, &mean, spread, mask, &grad, epsilon, false,
    );
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
    let (mean, var) = if per_channel(&x.tensor) > 1 {
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
