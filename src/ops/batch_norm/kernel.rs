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
use super::super::simd;
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

/// Lanes of the sums: independent accumulators the compiler keeps in vector registers (a single
/// accumulator serialises every addition). The order is fixed, so results are too.
const LANES: usize = 16;

/// `Σ f(a_i, b_i, c_i)` of three equally long runs (one image's pixels of one channel, at most a
/// few thousand), for `K` sums at once: [`LANES`] interleaved accumulators in the storage type
/// within the run, the run's total in f64 (the caller adds the runs in f64).
#[inline(always)]
fn lane_sums<T: Float, const K: usize>(
    (a, b, c): (&[T], &[T], &[T]),
    f: impl Fn(T, T, T) -> [T; K],
) -> [f64; K] {
    let mut acc = [[T::default(); LANES]; K];
    let chunks = a
        .chunks_exact(LANES)
        .zip(b.chunks_exact(LANES))
        .zip(c.chunks_exact(LANES));
    for ((ac, bc), cc) in chunks {
        for l in 0..LANES {
            let v = f(ac[l], bc[l], cc[l]);
            for k in 0..K {
                acc[k][l] = acc[k][l] + v[k];
            }
        }
    }
    let full = a.len() - a.len() % LANES;
    for (l, ((&x, &y), &z)) in a[full..].iter().zip(&b[full..]).zip(&c[full..]).enumerate() {
        let v = f(x, y, z);
        for k in 0..K {
            acc[k][l] = acc[k][l] + v[k];
        }
    }
    acc.map(|lanes| lanes.iter().map(|v| v.to_f64()).sum())
}

/// Batch mean and biased variance of every channel (two passes, f64 sums).
pub fn statistics<T: Float>(l: Layout, x: &[T]) -> (Vec<T>, Vec<T>) {
    let per: Vec<(f64, f64)> = (0..l.c)
        .into_par_iter()
        .map(|c| channel_statistics(l, c, x))
        .collect();
    per.into_iter()
        .map(|(m, v)| (T::from_f64(m), T::from_f64(v)))
        .unzip()
}

simd::multiversion! {
    fn channel_statistics<T: Float>(l: Layout, c: usize, x: &[T]) -> (f64, f64) {
    let sum: f64 = l
        .runs(x, c)
        .map(|r| lane_sums((r, r, r), |v, _, _| [v])[0])
        .sum();
    let mean = sum / l.count();
    let m = T::from_f64(mean);
    let sq: f64 = l
        .runs(x, c)
        .map(|r| lane_sums((r, r, r), |v, _, _| [(v - m) * (v - m)])[0])
        .sum();
    (mean, sq / l.count())
}
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
    let stride = l.c * l.inner;
    let stats = [gamma, beta, mean, var];
    y.par_chunks_mut(stride)
        .zip(x.par_chunks(stride))
        .for_each(|(y_i, x_i)| normalize_image(l, y_i, x_i, stats, epsilon, relu));
    y
}

simd::multiversion! {
    /// [`normalize`] of one image (`x_i`, `y_i`: `[C, inner]`); `stats` = γ, β, mean, var.
    fn normalize_image<T: Float>(
        l: Layout,
        y_i: &mut [T],
        x_i: &[T],
        stats: [&[T]; 4],
        epsilon: f64,
        relu: bool,
    ) {
        let ([gamma, beta, mean, var], inner) = (stats, l.inner);
        for c in 0..l.c {
            let scale = gamma[c].to_f64() / (var[c].to_f64() + epsilon).sqrt();
            let shift = beta[c].to_f64() - mean[c].to_f64() * scale;
            let (a, b) = (T::from_f64(scale), T::from_f64(shift));
            let out = &mut y_i[c * inner..][..inner];
            for (o, &v) in out.iter_mut().zip(&x_i[c * inner..][..inner]) {
                let r = v * a + b;
                // As burn's relu: values ≤ 0 become 0, NaN passes (divergence stays visible).
                *o = if relu && r <= T::default() { T::default() } else { r };
            }
        }
    }
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
    let m = l.count();
    // Per channel: μ of x, Σ dy and Σ dy (x − μ_c) over the units the ReLU passed.
    let sums: Vec<(f64, f64, f64)> = (0..l.c)
        .into_par_iter()
        .map(|c| channel_sums(l, c, [x, y, dy], mean[c].to_f64(), relu))
        .collect();
    // Per channel [γ/s, mean(g)/s, k, μ] of dx_i = (γ dy_i − mean(g))/s − (x_i − μ) k.
    let coef: Vec<[f64; 4]> = (0..l.c)
        .map(|c| {
            let s = (var[c].to_f64() + epsilon).sqrt();
            let (mu, sd, sdx) = sums[c];
            let g = gamma[c].to_f64();
            [g / s, g * sd / (m * s), g * sdx / (m * s * s * s), mu]
        })
        .collect();
    let mut dx = vec![T::default(); x.len()];
    let stride = l.c * l.inner;
    if !x.is_empty() {
        dx.par_chunks_mut(stride)
            .zip(x.par_chunks(stride))
            .zip(y.par_chunks(stride).zip(dy.par_chunks(stride)))
            .for_each(|((dx_i, x_i), (y_i, dy_i))| {
                dx_image(l, dx_i, [x_i, y_i, dy_i], &coef, relu)
            });
    }
    let dgamma = (0..l.c)
        .map(|c| T::from_f64(sums[c].2 / (var[c].to_f64() + epsilon).sqrt()))
        .collect();
    let dbeta = sums.iter().map(|&(_, sd, _)| T::from_f64(sd)).collect();
    (dx, dgamma, dbeta)
}

simd::multiversion! {
    /// `(μ, Σ dy, Σ dy (x − μ_c))` of channel `c` over the units the ReLU passed; `xyd` = x, y,
    /// dy.
    fn channel_sums<T: Float>(
        l: Layout,
        c: usize,
        xyd: [&[T]; 3],
        mu_c: f64,
        relu: bool,
    ) -> (f64, f64, f64) {
        let [x, y, dy] = xyd;
        // The ReLU's derivative as a factor: 0 where the output was clipped (≤ 0), else 1.
        let pass = |out: T| {
            if relu && out <= T::default() {
                T::default()
            } else {
                T::ONE
            }
        };
        let m = T::from_f64(mu_c);
        let (mut sx, mut sd, mut sdx) = (0.0, 0.0, 0.0);
        for ((xr, yr), dr) in l.runs(x, c).zip(l.runs(y, c)).zip(l.runs(dy, c)) {
            let [a, b, c] = lane_sums((xr, yr, dr), |xv, yv, dv| {
                let d = dv * pass(yv);
                [xv, d, d * (xv - m)]
            });
            (sx, sd, sdx) = (sx + a, sd + b, sdx + c);
        }
        (sx / l.count(), sd, sdx)
    }
}

simd::multiversion! {
    /// `dx_i` of one image (`[C, inner]` slices; `xyd` = x, y, dy), with `coef = [γ/s,
    /// mean(g)/s, k, μ]` per channel.
    fn dx_image<T: Float>(
        l: Layout,
        dx_i: &mut [T],
        xyd: [&[T]; 3],
        coef: &[[f64; 4]],
        relu: bool,
    ) {
        let ([x_i, y_i, dy_i], inner) = (xyd, l.inner);
        for (c, coef) in coef.iter().enumerate() {
            let [g_s, mean_g_s, k, mu] = coef.map(T::from_f64);
            let r = c * inner..(c + 1) * inner;
            let inputs = x_i[r.clone()].iter().zip(&y_i[r.clone()]).zip(&dy_i[r.clone()]);
            for (o, ((&xv, &yv), &dv)) in dx_i[r].iter_mut().zip(inputs) {
                let active = !(relu && yv <= T::default());
                let gi = if active { g_s * dv } else { T::default() };
                *o = gi - mean_g_s - (xv - mu) * k;
            }
        }
    }
}
