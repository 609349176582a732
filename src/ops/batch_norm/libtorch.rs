//! LibTorch's path: ATen's own batch-norm kernels, on the CPU and on CUDA. Training mode is
//! `native_batch_norm` (statistics, running statistics in place, normalisation), as PyTorch's;
//! the adjoint's recorded forward takes the statistics from `batch_norm_update_stats` (running
//! statistics in place) and normalises, as at the cached statistics, with ATen's
//! evaluation-mode `batch_norm` (then an in-place ReLU); every backward is
//! `native_batch_norm_backward` through the shim (`ops/aten`). burn-tch composes them from a
//! dozen elementwise passes.

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
    aten_backward(x, p, false, epsilon, relu, given)
}

/// ATen's backward from `[γ, mean, spread, y, grad]`, `spread` the variance or (`invstd`)
/// 1/√(var + ε).
fn aten_backward(
    x: TchTensor,
    p: [TchTensor; 5],
    invstd: bool,
    epsilon: f64,
    relu: bool,
    given: bool,
) -> (TchTensor, TchTensor, TchTensor) {
    let [gamma, mean, spread, y, grad] = p.map(|t| t.tensor);
    let mask = relu.then_some(&y);
    let spread = match invstd {
        true => Spread::InvStd(&spread),
        false => Spread::Var(&spread),
    };
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
/// it saves `(mean, 1/√(var + ε))` for its backward.
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
        blend_one_value(&rm, &rv, &mean, momentum);
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
    aten_backward(x, p, true, epsilon, relu, false)
}

/// The running statistics after a batch of one value per channel, in place: its variance is 0,
/// so PyTorch's rule is a blend of the mean and a decay of the variance (ATen's own update would
/// divide by M − 1 = 0).
fn blend_one_value(rm: &TchTensor, rv: &TchTensor, mean: &tch::Tensor, momentum: f64) {
    let _ = rm.tensor.shallow_clone().lerp_(mean, momentum);
    let _ = rv.tensor.shallow_clone().g_mul_scalar_(1.0 - momentum);
}

/// Statistics and, in place, the running statistics: `batch_norm_update_stats` given `rm` and
/// `rv` blends them in the same pass (PyTorch's rule, unbiased by M/(M − 1)).
pub(super) fn update_statistics(
    x: TchTensor,
    rm: TchTensor,
    rv: TchTensor,
    momentum: f64,
) -> (TchTensor, TchTensor, TchTensor, TchTensor) {
    if per_channel(&x.tensor) <= 1 {
        let (mean, var) = statistics(x);
        blend_one_value(&rm, &rv, &mean.tensor, momentum);
        return (mean, var, rm, rv);
    }
    let (mean, var) =
        x.tensor
            .batch_norm_update_stats(Some(&rm.tensor), Some(&rv.tensor), momentum);
    (TchTensor::new(mean), TchTensor::new(var), rm, rv)
}
