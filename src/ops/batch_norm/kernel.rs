//! Batch normalisation over dimension 1 of `x[N, C, inner]` on plain slices, forward and
//! backward in one pass each per channel, optionally followed by a ReLU. Sums accumulate in f64
//! lanes whatever the storage type, each task over a contiguous range of whole images (sized by
//! the shape alone); the tasks' partial sums are added in a fixed order (deterministic).
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
use std::mem::MaybeUninit;
use std::ops::Range;

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
    /// Images `r` of a tensor of this layout.
    fn images<'a, T>(&self, v: &'a [T], r: Range<usize>) -> &'a [T] {
        let stride = self.c * self.inner;
        &v[r.start * stride..r.end * stride]
    }

    fn count(&self) -> f64 {
        (self.n * self.inner) as f64
    }
}

/// Lanes of the sums: independent accumulators the compiler keeps in vector registers (a single
/// accumulator serialises every addition). The order is fixed, so results are too.
const LANES: usize = 16;

/// Adds one run's lane accumulators (storage type) into the channel's f64 lanes: element-wise,
/// so vectorised (a horizontal f64 sum per run cost more than the run itself at 10×10 maps).
#[inline(always)]
fn widen<T: Float>(acc: &[T; LANES], total: &mut [f64; LANES]) {
    for k in 0..LANES {
        total[k] += acc[k].to_f64();
    }
}

/// The sum of f64 lanes, in a fixed order.
fn reduce(total: [f64; LANES]) -> f64 {
    total.iter().sum()
}

/// `Σ f(v)` over one run (one image's pixels of one channel, at most a few thousand) in
/// [`LANES`] accumulators of the storage type.
#[inline(always)]
fn run_sum<T: Float>(run: &[T], f: impl Fn(T) -> T) -> [T; LANES] {
    let mut acc = [T::default(); LANES];
    let full = run.len() - run.len() % LANES;
    for chunk in run[..full].chunks_exact(LANES) {
        for k in 0..LANES {
            acc[k] = acc[k] + f(chunk[k]);
        }
    }
    for (k, &v) in run[full..].iter().enumerate() {
        acc[k] = acc[k] + f(v);
    }
    acc
}

/// Images per parallel task of the sums: about 128 KiB of one input, at least one image, at
/// most a sixteenth of the batch (so that cores share the work). It depends on the shape only,
/// so the order of the additions, hence every sum, does not depend on the thread count.
fn images_per_task(l: Layout) -> usize {
    let per_image = (l.c * l.inner).max(1);
    (32 * 1024 / per_image).min(l.n.div_ceil(16)).max(1)
}

/// Per-channel sums of `K` quantities over the batch: `task(images)` sums a contiguous range of
/// whole images (streaming through memory, which the hardware prefetches; one channel's runs
/// are strided and were a seventh of a TinyResNet step), the tasks in parallel, their partial
/// sums then added in order.
fn batch_sums<const K: usize>(
    l: Layout,
    task: impl Fn(Range<usize>) -> Vec<[f64; K]> + Sync,
) -> Vec<[f64; K]> {
    let per = images_per_task(l);
    let parts: Vec<Vec<[f64; K]>> = (0..l.n.div_ceil(per))
        .into_par_iter()
        .map(|t| task(t * per..((t + 1) * per).min(l.n)))
        .collect();
    let mut total = vec![[0.0; K]; l.c];
    for part in parts {
        for (t, p) in total.iter_mut().zip(part) {
            for k in 0..K {
                t[k] += p[k];
            }
        }
    }
    total
}

/// Batch mean and biased variance of every channel (two passes, f64 sums).
pub fn statistics<T: Float>(l: Layout, x: &[T]) -> (Vec<T>, Vec<T>) {
    let sums = batch_sums(l, |r| moment_sums(l, l.images(x, r), None));
    let mean: Vec<T> = sums.iter().map(|s| T::from_f64(s[0] / l.count())).collect();
    let squares = batch_sums(l, |r| moment_sums(l, l.images(x, r), Some(&mean)));
    let var = squares
        .iter()
        .map(|s| T::from_f64(s[0] / l.count()))
        .collect();
    (mean, var)
}

simd::multiversion! {
    /// Per channel `Σ x` (`mean` None) or `Σ (x − mean_c)²` over `x` (whole images).
    fn moment_sums<T: Float>(l: Layout, x: &[T], mean: Option<&[T]>) -> Vec<[f64; 1]> {
        let mut total = vec![[0.0; LANES]; l.c];
        if l.inner > 0 {
            for image in x.chunks_exact(l.c * l.inner) {
                for (c, (run, total)) in image.chunks_exact(l.inner).zip(&mut total).enumerate() {
                    let acc = match mean {
                        None => run_sum(run, |v| v),
                        Some(mean) => {
                            let m = mean[c];
                            run_sum(run, |v| (v - m) * (v - m))
                        }
                    };
                    widen(&acc, total);
                }
            }
        }
        total.into_iter().map(|t| [reduce(t)]).collect()
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
    if x.is_empty() {
        return Vec::new();
    }
    // Not zeroed: `normalize_image` writes every element.
    let mut y = Box::<[T]>::new_uninit_slice(x.len());
    let stride = l.c * l.inner;
    let stats = [gamma, beta, mean, var];
    y.par_chunks_mut(stride)
        .zip(x.par_chunks(stride))
        .for_each(|(y_i, x_i)| normalize_image(l, y_i, x_i, stats, epsilon, relu));
    // SAFETY: the chunks cover `y` (`stride` divides `x.len()`, a whole batch) and
    // `normalize_image` writes every element of its chunk.
    unsafe { y.assume_init() }.into_vec()
}

simd::multiversion! {
    /// [`normalize`] of one image (`x_i`, `y_i`: `[C, inner]`); `stats` = γ, β, mean, var.
    fn normalize_image<T: Float>(
        l: Layout,
        y_i: &mut [MaybeUninit<T>],
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
                o.write(if relu && r <= T::default() { T::default() } else { r });
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
    // Per channel: Σ x, Σ dy and Σ dy (x − μ_c) over the units the ReLU passed.
    let sums = batch_sums(l, |r| {
        let xyd = [
            l.images(x, r.clone()),
            l.images(y, r.clone()),
            l.images(dy, r),
        ];
        backward_sums(l, xyd, mean, relu)
    });
    // Per channel [γ/s, mean(g)/s, k, μ] of dx_i = (γ dy_i − mean(g))/s − (x_i − μ) k.
    let coef: Vec<[f64; 4]> = (0..l.c)
        .map(|c| {
            let s = (var[c].to_f64() + epsilon).sqrt();
            let [sx, sd, sdx] = sums[c];
            let mu = sx / m;
            let g = gamma[c].to_f64();
            [g / s, g * sd / (m * s), g * sdx / (m * s * s * s), mu]
        })
        .collect();
    // Not zeroed: `dx_image` writes every element.
    let mut dx = Box::<[T]>::new_uninit_slice(x.len());
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
        .map(|c| T::from_f64(sums[c][2] / (var[c].to_f64() + epsilon).sqrt()))
        .collect();
    let dbeta = sums.iter().map(|s| T::from_f64(s[1])).collect();
    // SAFETY: the chunks cover `dx` (a whole batch; nothing to write when empty) and `dx_image`
    // writes every element of its chunk.
    (unsafe { dx.assume_init() }.into_vec(), dgamma, dbeta)
}

simd::multiversion! {
    /// Per channel `[Σ x, Σ d, Σ d (x − μ_c)]` over whole images (`xyd` = x, y, dy), with
    /// `d = dy` where the ReLU passed (y > 0), else 0.
    fn backward_sums<T: Float>(
        l: Layout,
        xyd: [&[T]; 3],
        mean: &[T],
        relu: bool,
    ) -> Vec<[f64; 3]> {
        let [x, y, dy] = xyd;
        let (zero, stride) = (T::default(), l.c * l.inner);
        if stride == 0 {
            return vec![[0.0; 3]; l.c];
        }
        let mut total = vec![[[0.0; LANES]; 3]; l.c];
        let images = x.chunks_exact(stride).zip(y.chunks_exact(stride)).zip(dy.chunks_exact(stride));
        for ((xi, yi), di) in images {
            for (c, total) in total.iter_mut().enumerate() {
                let r = c * l.inner..(c + 1) * l.inner;
                let (xr, yr, dr) = (&xi[r.clone()], &yi[r.clone()], &di[r]);
                let m = mean[c];
                let mut acc = [[zero; LANES]; 3];
                let mut add = |k: usize, xv: T, yv: T, dv: T| {
                    let d = if relu && yv <= zero { zero } else { dv };
                    acc[0][k] = acc[0][k] + xv;
                    acc[1][k] = acc[1][k] + d;
                    acc[2][k] = acc[2][k] + d * (xv - m);
                };
                let full = xr.len() - xr.len() % LANES;
                for i in (0..full).step_by(LANES) {
                    let (xc, yc, dc) = (&xr[i..i + LANES], &yr[i..i + LANES], &dr[i..i + LANES]);
                    for k in 0..LANES {
                        add(k, xc[k], yc[k], dc[k]);
                    }
                }
                for k in 0..xr.len() - full {
                    add(k, xr[full + k], yr[full + k], dr[full + k]);
                }
                for (acc, total) in acc.iter().zip(total.iter_mut()) {
                    widen(acc, total);
                }
            }
        }
        total.into_iter().map(|t| t.map(reduce)).collect()
    }
}

simd::multiversion! {
    /// `dx_i` of one image (`[C, inner]` slices; `xyd` = x, y, dy), with `coef = [γ/s,
    /// mean(g)/s, k, μ]` per channel.
    fn dx_image<T: Float>(
        l: Layout,
        dx_i: &mut [MaybeUninit<T>],
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
                o.write(gi - mean_g_s - (xv - mu) * k);
            }
        }
    }
}
