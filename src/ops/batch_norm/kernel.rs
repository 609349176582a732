//! Batch normalisation over dimension 1 of `x[N, C, inner]` on plain slices, forward and
//! backward in one pass each per channel, optionally followed by a ReLU. Sums accumulate in f64
//! whatever the storage type, one channel per task in a fixed order (deterministic).
//!
//! The backward is the one the adjoint's `cached` mode needs (`norm.rs`): the value normalises
//! with given statistics `(μ_c, σ²_c)`, the derivative is that of batch normalisation at `x`'s
//! own mean `μ` (a straight-through estimate). With `μ_c, σ²_c` the batch's own statistics it is
//! the ordinary batch-norm backward. With `s = √(σ²_c + ε)`, `g = γ·dy` (masked by the ReLU) and
//! `M = N·inner`:
//! `dx_i = (g_i − mean(g))/s − (x_i − μ)/(M s³) · Σ_j g_j (x_j − μ_c)`,
//! `dγ = Σ dy·(x − μ_c)/s`, `dβ = Σ dy`.

use super::super::conv3x3::kernel::Real;
use rayon::prelude::*;

/// Conversions the kernels need on top of [`Real`].
pub trait Float: Real {
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

impl Float for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Float for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// `[N, C, inner]`: the layout of a batch-normalised tensor with every dimension after the
/// channels flattened.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub n: usize,
    pub c: usize,
    pub inner: usize,
}

impl Layout {
    /// The `inner`-long runs of channel `c`, one per image.
    fn runs<'a, T>(&self, v: &'a [T], c: usize) -> impl Iterator<Item = &'a [T]> {
        let (stride, inner) = (self.c * self.inner, self.inner);
        (0..self.n).map(move |i| &v[i * stride + c * inner..][..inner])
    }

    fn count(&self) -> f64 {
        (self.n * self.inner) as f64
    }
}

/// Batch mean and biased variance of every channel (two passes, f64 sums).
pub fn statistics<T: Float>(l: Layout, x: &[T]) -> (Vec<T>, Vec<T>) {
    let per: Vec<(f64, f64)> = (0..l.c)
        .into_par_iter()
        .map(|c| {
            let sum: f64 = l.runs(x, c).flatten().map(|v| v.to_f64()).sum();
            let mean = sum / l.count();
            let sq: f64 = l
                .runs(x, c)
                .flatten()
                .map(|v| (v.to_f64() - mean).powi(2))
                .sum();
            (mean, sq / l.count())
        })
        .collect();
    per.into_iter()
        .map(|(m, v)| (T::from_f64(m), T::from_f64(v)))
        .unzip()
}

/// `y = γ (x − μ)/√(σ² + ε) + β` with the given statistics, then the ReLU if asked.
#[allow(clippy::too_many_arguments)]
pub fn normalize<T: Float>(
    l: Layout,
    x: &[T],
    gamma: &[T],
    beta: &[T],
    mean: &[T],
    var: &[T],
    epsilon: f64,
    relu: bool,
) -> Vec<T> {
    let mut y = vec![T::default(); x.len()];
    if x.is_empty() {
        return y;
    }
    let (stride, inner) = (l.c * l.inner, l.inner);
    y.par_chunks_mut(stride)
        .zip(x.par_chunks(stride))
        .for_each(|(y_i, x_i)| {
            for c in 0..l.c {
                let scale = gamma[c].to_f64() / (var[c].to_f64() + epsilon).sqrt();
                let shift = beta[c].to_f64() - mean[c].to_f64() * scale;
                let (a, b) = (T::from_f64(scale), T::from_f64(shift));
                let out = &mut y_i[c * inner..][..inner];
                for (o, &v) in out.iter_mut().zip(&x_i[c * inner..][..inner]) {
                    let r = mul_add(v, a, b);
                    // As burn's relu: values ≤ 0 become 0, NaN passes (so divergence stays visible).
                    *o = if relu && r.to_f64() <= 0.0 {
                        T::default()
                    } else {
                        r
                    };
                }
            }
        });
    y
}

fn mul_add<T: Float>(v: T, a: T, b: T) -> T {
    T::from_f64(v.to_f64() * a.to_f64() + b.to_f64())
}

/// Gradients `(dx, dγ, dβ)` of the normalisation above (see the module docs); `y` is its output,
/// which carries the ReLU's mask when `relu` is set.
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Float>(
    l: Layout,
    x: &[T],
    gamma: &[T],
    mean: &[T],
    var: &[T],
    y: &[T],
    dy: &[T],
    epsilon: f64,
    relu: bool,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let active = |out: T| !(relu && out.to_f64() <= 0.0);
    let m = l.count();
    let per_channel: Vec<(Vec<T>, T, T)> = (0..l.c)
        .into_par_iter()
        .map(|c| {
            let s = (var[c].to_f64() + epsilon).sqrt();
            let (mu_c, g) = (mean[c].to_f64(), gamma[c].to_f64());
            // One pass: μ of x, Σ dy, Σ dy (x − μ_c) over the active units.
            let (mut sum_x, mut sum_dy, mut sum_dy_xc) = (0.0, 0.0, 0.0);
            for ((xr, yr), dr) in l.runs(x, c).zip(l.runs(y, c)).zip(l.runs(dy, c)) {
                for ((&xv, &yv), &dv) in xr.iter().zip(yr).zip(dr) {
                    let xv = xv.to_f64();
                    sum_x += xv;
                    if active(yv) {
                        let dv = dv.to_f64();
                        sum_dy += dv;
                        sum_dy_xc += dv * (xv - mu_c);
                    }
                }
            }
            let mu = sum_x / m;
            let (mean_g, k) = (g * sum_dy / m, g * sum_dy_xc / (m * s * s * s));
            let mut dx = Vec::with_capacity(l.n * l.inner);
            for ((xr, yr), dr) in l.runs(x, c).zip(l.runs(y, c)).zip(l.runs(dy, c)) {
                for ((&xv, &yv), &dv) in xr.iter().zip(yr).zip(dr) {
                    let gi = if active(yv) { g * dv.to_f64() } else { 0.0 };
                    dx.push(T::from_f64((gi - mean_g) / s - (xv.to_f64() - mu) * k));
                }
            }
            (dx, T::from_f64(sum_dy_xc / s), T::from_f64(sum_dy))
        })
        .collect();
    let mut dx = vec![T::default(); x.len()];
    let mut dgamma = Vec::with_capacity(l.c);
    let mut dbeta = Vec::with_capacity(l.c);
    for (c, (d, dg, db)) in per_channel.into_iter().enumerate() {
        for (i, run) in d.chunks(l.inner.max(1)).enumerate() {
            dx[i * l.c * l.inner + c * l.inner..][..l.inner].copy_from_slice(run);
        }
        dgamma.push(dg);
        dbeta.push(db);
    }
    (dx, dgamma, dbeta)
}
