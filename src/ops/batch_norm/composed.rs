//! The batch-norm ops composed from burn's backend ops: the trait's default bodies (CubeCL runs
//! them; flex too for float types its kernels lack), checked against flex's kernels in a unit
//! test below. The same formulas as
//! [`super::kernel`]: the backward is written out (two per-channel sums and one elementwise
//! expression) instead of left to autodiff over a composition of a dozen ops, and the
//! straight-through correction of cached statistics is one more per-channel sum.
//!
//! Per-channel values are spread to `[1, C, 1, …]` before any arithmetic, so that CubeCL fuses
//! each expression with `x` into one kernel (ops on `[C]` between reshapes ran one kernel each);
//! per-channel sums reduce one dimension at a time, where burn's `batch_norm_train` swaps
//! dimensions 0 and 1 and copies the tensor before each of its reductions.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Scalar, Shape, TensorMetadata};

/// `[1, C, 1, …]` for `x`'s rank: per-channel values broadcast against `x`.
fn per_channel(x: &Shape) -> Shape {
    let mut dims = vec![1; x.num_dims()];
    dims[1] = x[1];
    dims.into()
}

/// Elements per channel (`M`).
fn count(x: &Shape) -> f64 {
    (x.num_elements() / x[1].max(1)) as f64
}

/// `Σ t` over every dimension but 1, shaped `[1, C, 1, …]` like `t`: one reduction per
/// dimension, last first, on `t` as it lies in memory (CubeCL's convolutions leave channels
/// last: a reshape would copy).
fn channel_sum<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    let shape = t.shape();
    (0..shape.num_dims())
        .rev()
        .filter(|&d| d != 1 && shape[d] > 1)
        .fold(t, |s, d| B::float_sum_dim(s, d))
}

/// `[C]` → `[1, C, 1, …]`.
fn spread<B: Backend>(t: FloatTensor<B>, like: &Shape) -> FloatTensor<B> {
    B::float_reshape(t, per_channel(like))
}

/// `1/√(var + ε)` per channel.
fn inv_std<B: Backend>(var: FloatTensor<B>, epsilon: f64) -> FloatTensor<B> {
    B::float_recip(B::float_sqrt(B::float_add_scalar(
        var,
        Scalar::from(epsilon),
    )))
}

/// Batch mean and biased variance per channel, as `[C]`.
pub fn statistics<B: Backend>(x: FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let shape = x.shape();
    let m = count(&shape);
    let mean = B::float_div_scalar(channel_sum::<B>(x.clone()), Scalar::from(m));
    let centered = B::float_sub(x, mean.clone());
    let var = B::float_div_scalar(
        channel_sum::<B>(B::float_mul(centered.clone(), centered)),
        Scalar::from(m),
    );
    let c: Shape = [shape[1]].into();
    (B::float_reshape(mean, c.clone()), B::float_reshape(var, c))
}

/// `γ (x − mean)/√(var + ε) + β`, then `max(·, 0)` if `relu`: burn's `batch_norm`, every
/// per-channel value broadcast against `x` so that the elementwise work fuses into one kernel.
pub fn normalize<B: Backend>(
    x: FloatTensor<B>,
    [gamma, beta, mean, var]: [FloatTensor<B>; 4],
    epsilon: f64,
    relu: bool,
) -> FloatTensor<B> {
    let shape = x.shape();
    let [gamma, beta, mean, var] = [gamma, beta, mean, var].map(|t| spread::<B>(t, &shape));
    let std = B::float_sqrt(B::float_add_scalar(var, Scalar::from(epsilon)));
    let normalized = B::float_div(B::float_sub(x, mean), std);
    let y = B::float_add(B::float_mul(normalized, gamma), beta);
    if relu {
        B::relu(y)
    } else {
        y
    }
}

/// `(dx, dγ, dβ)` of [`normalize`] at the statistics `(μ_c, σ²_c)`, differentiated as batch
/// normalisation at `x`'s own mean `μ` (which is `μ_c` unless `given`), `y` its output (the
/// ReLU's mask). With `s = √(σ²_c + ε)`, `dy` masked by the ReLU and `M` values per channel:
/// `dx = γ/s · (dy − Σdy/M − (x − μ) · Σ dy (x − μ_c) / (M s²))`, `dγ = Σ dy (x − μ_c)/s`,
/// `dβ = Σ dy`.
pub fn backward<B: Backend>(
    x: FloatTensor<B>,
    [gamma, mean, var, y, grad]: [FloatTensor<B>; 5],
    epsilon: f64,
    relu: bool,
    given: bool,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let shape = x.shape();
    let m = Scalar::from(count(&shape));
    let dy = if relu {
        B::relu_backward(y, grad)
    } else {
        grad
    };
    let inv_s = inv_std::<B>(spread::<B>(var, &shape), epsilon);
    let mean_c = spread::<B>(mean, &shape);
    let centered = B::float_sub(x.clone(), mean_c.clone());
    let sum_dy = channel_sum::<B>(dy.clone());
    let sum_dy_centered = channel_sum::<B>(B::float_mul(dy.clone(), centered.clone()));
    // x − μ: centred on x's own mean, which differs from μ_c when the statistics are given.
    let own = match given {
        true => B::float_sub(
            centered,
            B::float_sub(B::float_div_scalar(channel_sum::<B>(x), m), mean_c),
        ),
        false => centered,
    };
    let k = B::float_div_scalar(
        B::float_mul(
            sum_dy_centered.clone(),
            B::float_mul(inv_s.clone(), inv_s.clone()),
        ),
        m,
    );
    let inner = B::float_sub(
        B::float_sub(dy, B::float_div_scalar(sum_dy.clone(), m)),
        B::float_mul(own, k),
    );
    let gamma_s = B::float_mul(spread::<B>(gamma, &shape), inv_s.clone());
    let dx = B::float_mul(inner, gamma_s);
    let c: Shape = [shape[1]].into();
    let dgamma = B::float_reshape(B::float_mul(sum_dy_centered, inv_s), c.clone());
    (dx, dgamma, B::float_reshape(sum_dy, c))
}

/// `M/(M − 1)`, which makes the biased variance of `M` values per channel unbiased (1 when
/// `M = 1`, where PyTorch refuses to train: the variance is 0 either way).
pub fn unbias(x: &Shape) -> f64 {
    let m = count(x);
    m / (m.max(2.0) - 1.0)
}

/// PyTorch's running-statistics rule: `(1 − m)·rm + m·mean`, `(1 − m)·rv + m·unbias·var`.
pub fn running<B: Backend>(
    [rm, rv, mean, var]: [FloatTensor<B>; 4],
    momentum: f64,
    unbias: f64,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let keep = Scalar::from(1.0 - momentum);
    let rm = B::float_add(
        B::float_mul_scalar(rm, keep),
        B::float_mul_scalar(mean, Scalar::from(momentum)),
    );
    let rv = B::float_add(
        B::float_mul_scalar(rv, keep),
        B::float_mul_scalar(var, Scalar::from(momentum * unbias)),
    );
    (rm, rv)
}

#[cfg(test)]
mod tests {
    use super::super::flex;
    use crate::ops::flex_data::{tensor, values};
    use crate::rng::Rng;
    use burn::backend::flex::FlexTensor;
    use burn::backend::Flex;

    fn random(rng: &mut Rng, shape: &[usize]) -> FlexTensor {
        tensor(rng.normals(shape.iter().product()), shape.to_vec())
    }

    fn max_diff(a: &FlexTensor, b: &FlexTensor) -> f64 {
        let (a, b) = (values::<f64>(a), values::<f64>(b));
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b.iter())
            .map(|(u, v)| (u - v).abs())
            .fold(0.0, f64::max)
    }

    /// The composition against flex's f64 kernels, which `tests/ops.rs` checks against burn's
    /// batch norm and its autodiff: statistics, normalisation, running statistics, and the
    /// backward with and without a ReLU, at the batch's own and at given statistics.
    #[test]
    fn composition_matches_the_flex_kernels() {
        let mut rng = Rng::new(5);
        for shape in [
            vec![4, 3, 5, 6],
            vec![7, 5],
            vec![1, 2, 3, 1],
            vec![3, 1, 2, 2],
        ] {
            let c = shape[1];
            let x = random(&mut rng, &shape);
            let [gamma, beta, mean_c] = [(); 3].map(|_| random(&mut rng, &[c]));
            let var_c = tensor(
                rng.normals(c).iter().map(|u| u.abs() + 0.5).collect(),
                vec![c],
            );
            let grad = random(&mut rng, &shape);
            let context = format!("{shape:?}");
            let (m, v) = super::statistics::<Flex>(x.clone());
            let (mk, vk) = flex::statistics(x.clone());
            assert!(
                max_diff(&m, &mk) < 1e-12 && max_diff(&v, &vk) < 1e-12,
                "{context}"
            );
            let (r, rk) = (
                super::running::<Flex>(
                    [m.clone(), v.clone(), mean_c.clone(), var_c.clone()],
                    0.1,
                    1.5,
                ),
                flex::running([m, v, mean_c.clone(), var_c.clone()], 0.1, 1.5),
            );
            assert!(max_diff(&r.0, &rk.0) < 1e-14 && max_diff(&r.1, &rk.1) < 1e-14);
            for (given, (mean, var)) in [(false, (mk, vk)), (true, (mean_c.clone(), var_c.clone()))]
            {
                for relu in [false, true] {
                    let stats = [gamma.clone(), beta.clone(), mean.clone(), var.clone()];
                    let y = super::normalize::<Flex>(x.clone(), stats.clone(), 1e-5, relu);
                    let yk = flex::normalize(x.clone(), stats, 1e-5, relu);
                    let case = format!("{context} given {given} relu {relu}");
                    assert!(max_diff(&y, &yk) < 1e-12, "{case}: y");
                    let p = [gamma.clone(), mean.clone(), var.clone(), yk, grad.clone()];
                    let ours = super::backward::<Flex>(x.clone(), p.clone(), 1e-5, relu, given);
                    let kernel = flex::backward(x.clone(), p, 1e-5, relu, given);
                    for (what, a, b) in [
                        ("dx", &ours.0, &kernel.0),
                        ("dγ", &ours.1, &kernel.1),
                        ("dβ", &ours.2, &kernel.2),
                    ] {
                        let d = max_diff(a, b);
                        assert!(d < 1e-10, "{case}: {what} differs by {d:e}");
                    }
                }
            }
        }
    }
}
