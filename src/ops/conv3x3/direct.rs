//! A direct 3×3 convolution for f32 on AVX-512 (the layout oneDNN's kernels use, in spirit):
//! sixteen output channels at a time, each accumulating sixteen consecutive pixels in one
//! register, so that every input vector loaded feeds sixteen fused multiply-adds with the
//! broadcast weights. No column matrix is built and no GEMM packing is done, which at 16
//! channels cost as much as the multiply-adds themselves (issue 12). Pixels are in the
//! padded-width geometry of [`super::kernel`] (junk columns dropped when storing).
//!
//! Used when the CPU has AVX-512F and the output channels are a multiple of 16; otherwise the
//! im2col + GEMM kernels run.

use super::kernel::{self, Shape};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Output channels (and pixels) per register block.
const BLOCK: usize = 16;

/// Whether [`forward`] runs for this shape on this CPU.
pub fn available(s: &Shape) -> bool {
    s.cout.is_multiple_of(BLOCK) && s.cout > 0 && s.h > 0 && s.w > 0 && has_avx512()
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512() -> bool {
    false
}

/// `y = conv3x3(x, weight) + bias` (see [`super::kernel::forward`]); `None` when not
/// [`available`].
pub fn forward(s: Shape, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Option<Vec<f32>> {
    if !available(&s) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        Some(run(s, x, weight, bias))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, weight, bias);
        None
    }
}

/// The geometry of one padded image: plane size, row width, the first output pixel's offset
/// and the output length rounded up to whole vectors.
#[derive(Clone, Copy)]
struct Geometry {
    plane: usize,
    pw: usize,
    len: usize,
    lenv: usize,
}

impl Geometry {
    fn new(s: &Shape) -> Self {
        let pw = s.w + 2;
        let len = (s.h - 1) * pw + s.w;
        Geometry {
            plane: (s.h + 2) * pw,
            pw,
            len,
            lenv: len.div_ceil(BLOCK) * BLOCK,
        }
    }

    /// Padded input buffer: the planes, then enough zeros for the last vector's overrun.
    fn padded_size(&self, cin: usize) -> usize {
        cin * self.plane + self.lenv - self.len + 2 * self.pw + 2
    }
}

#[cfg(target_arch = "x86_64")]
fn run(s: Shape, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let g = Geometry::new(&s);
    let hw = s.h * s.w;
    // Weights regrouped as [block][c][tap][16 outputs]: one contiguous row per broadcast set.
    let blocks = s.cout / BLOCK;
    let mut wt = vec![0f32; weight.len()];
    for o in 0..s.cout {
        for c in 0..s.cin {
            for t in 0..9 {
                let (b, lane) = (o / BLOCK, o % BLOCK);
                wt[((b * s.cin + c) * 9 + t) * BLOCK + lane] = weight[(o * s.cin + c) * 9 + t];
            }
        }
    }
    // Not zeroed: `store` writes every element.
    let mut y = Box::<[f32]>::new_uninit_slice(s.batch * s.cout * hw);
    y.par_chunks_mut(s.cout * hw)
        .zip(x.par_chunks(s.cin * hw))
        .for_each_init(
            || {
                (
                    vec![0f32; g.padded_size(s.cin)],
                    vec![0f32; s.cout * g.lenv],
                )
            },
            |(pad, out), (y_n, x_n)| {
                pad_image(x_n, &s, &g, pad);
                for b in 0..blocks {
                    let w = &wt[b * s.cin * 9 * BLOCK..][..s.cin * 9 * BLOCK];
                    let o = &mut out[b * BLOCK * g.lenv..][..BLOCK * g.lenv];
                    // SAFETY: `available` checked AVX-512F; the slices' lengths are checked
                    // inside against every offset the kernel reads or writes.
                    unsafe { block(pad, w, o, s.cin, &g) };
                }
                // SAFETY: `available` checked AVX-512F, the one feature `store` is compiled for.
                unsafe { store(out, y_n, bias, &s, &g) };
            },
        );
    // SAFETY: the chunks cover `y` (whole images) and `store` writes every element of its chunk.
    unsafe { y.assume_init() }.into_vec()
}

/// `dW = Σ_n dY_n ⋆ x_n` and `db = Σ dY` (see [`super::kernel::weight_grad`]); `None` when not
/// [`available`]. Images are summed in chunks whose size depends on the shape only, then the
/// chunks in order, so the result does not depend on scheduling.
pub fn weight_grad(s: Shape, x: &[f32], dy: &[f32]) -> Option<(Vec<f32>, Vec<f32>)> {
    if !available(&s) || !weight_grad_pays(&s) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        Some(run_weight_grad(s, x, dy))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, dy);
        None
    }
}

/// Pixels per tile of the weight gradient: sixteen rows of `dY` of this length fill 16 KiB.
const TILE: usize = 256;

/// Whether the direct weight gradient beats im2col + GEMM: the vector partial sums of one block
/// of sixteen outputs (`Cin·9·16·16` floats) must stay in L2 (≤ 512 KiB). Measured on
/// 128-image batches (2 cores, loaded): 16 channels at 10×10, 1.3–1.5 ms against 1.9–2.3 ms
/// for im2col + GEMM; 64 channels at 8×8 (590 KiB of sums per block) 15–16 ms against 8.5.
fn weight_grad_pays(s: &Shape) -> bool {
    s.cin * 9 * BLOCK * BLOCK * 4 <= 512 << 10
}

#[cfg(target_arch = "x86_64")]
fn run_weight_grad(s: Shape, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let g = Geometry::new(&s);
    let (hw, blocks, per) = (s.h * s.w, s.cout / BLOCK, s.batch.div_ceil(16).max(1));
    let partials: Vec<Vec<f32>> = dy
        .par_chunks(per * s.cout * hw)
        .zip(x.par_chunks(per * s.cin * hw))
        .map_init(
            || {
                (
                    vec![0f32; g.padded_size(s.cin)],
                    vec![0f32; s.cout * g.lenv],
                )
            },
            |(pad, dy_pad), (dy_chunk, x_chunk)| {
                // [block][c][tap][16 outputs][16 lanes], then the bias gradient.
                let lanes = s.cout * s.cin * 9 * BLOCK;
                let mut acc = vec![0f32; lanes + s.cout];
                for (dy_n, x_n) in dy_chunk.chunks(s.cout * hw).zip(x_chunk.chunks(s.cin * hw)) {
                    pad_image(x_n, &s, &g, pad);
                    // dY in the padded-width geometry: zeros in the junk columns and the tail.
                    for (src, dst) in dy_n.chunks(hw).zip(dy_pad.chunks_mut(g.lenv)) {
                        for (row, d) in src.chunks(s.w).zip(dst.chunks_mut(g.pw)) {
                            d[..s.w].copy_from_slice(row);
                        }
                    }
                    let (dw, db) = acc.split_at_mut(lanes);
                    for b in 0..blocks {
                        let d = &dy_pad[b * BLOCK * g.lenv..][..BLOCK * g.lenv];
                        let size = s.cin * 9 * BLOCK * BLOCK;
                        let w = &mut dw[b * size..][..size];
                        // SAFETY: `available` checked AVX-512F; lengths are checked inside.
                        unsafe { block_weight_grad(pad, d, w, s.cin, &g) };
                    }
                    for (acc, row) in db.iter_mut().zip(dy_n.chunks(hw)) {
                        *acc += kernel::sum(row);
                    }
                }
                // The lanes summed, in order: [block][c][tap][16 outputs] then the bias.
                let mut sums: Vec<f32> =
                    acc[..lanes].chunks(BLOCK).map(|l| l.iter().sum()).collect();
                sums.extend_from_slice(&acc[lanes..]);
                sums
            },
        )
        .collect();
    let mut total = vec![0f32; s.cout * s.cin * 9 + s.cout];
    for p in partials {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    let db = total.split_off(s.cout * s.cin * 9);
    // Back from [block][c][tap][16] to [Cout][Cin][3][3].
    let mut dw = vec![0f32; total.len()];
    for o in 0..s.cout {
        for c in 0..s.cin {
            for t in 0..9 {
                let (b, lane) = (o / BLOCK, o % BLOCK);
                dw[(o * s.cin + c) * 9 + t] = total[((b * s.cin + c) * 9 + t) * BLOCK + lane];
            }
        }
    }
    (dw, db)
}

/// Sixteen output channels of one image: `w[c][t][o][lane] += Σ_{q ≡ lane} dy[o][q] ·
/// pad[c][q + off_t]` (sixteen partial sums per weight, summed at the end of the chunk).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block_weight_grad(pad: &[f32], dy: &[f32], w: &mut [f32], cin: usize, g: &Geometry) {
    use std::arch::x86_64::*;
    let offsets: [usize; 9] = std::array::from_fn(|t| (t / 3) * g.pw + t % 3);
    assert!(w.len() >= cin * 9 * BLOCK * BLOCK && dy.len() >= BLOCK * g.lenv);
    assert!(pad.len() >= (cin - 1) * g.plane + g.lenv + offsets[8]);
    // Pixels in tiles of TILE, so that the tile of sixteen rows of dY stays in L1 (16 KiB)
    // across the 9·Cin passes over it.
    for q_start in (0..g.lenv).step_by(TILE) {
        let q_end = (q_start + TILE).min(g.lenv);
        for c in 0..cin {
            for (t, &off) in offsets.iter().enumerate() {
                let base = pad.as_ptr().add(c * g.plane + off);
                let mut acc = [_mm512_setzero_ps(); BLOCK];
                for q0 in (q_start..q_end).step_by(BLOCK) {
                    let xv = _mm512_loadu_ps(base.add(q0));
                    for (o, a) in acc.iter_mut().enumerate() {
                        let d = _mm512_loadu_ps(dy.as_ptr().add(o * g.lenv + q0));
                        *a = _mm512_fmadd_ps(d, xv, *a);
                    }
                }
                // Added as vectors: the horizontal sums wait for the end of the chunk.
                let out = w.as_mut_ptr().add((c * 9 + t) * BLOCK * BLOCK);
                for (o, a) in acc.iter().enumerate() {
                    let p = out.add(o * BLOCK);
                    _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), *a));
                }
            }
        }
    }
}

/// Drop the junk columns of `out` (padded-width geometry, rows `lenv` apart) into the image
/// `y_n`, adding the bias. Compiled for AVX-512 (only called where it is present).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn store(out: &[f32], y_n: &mut [MaybeUninit<f32>], bias: Option<&[f32]>, s: &Shape, g: &Geometry) {
    for (oc, y_o) in y_n.chunks_mut(s.h * s.w).enumerate() {
        let bias = bias.map_or(0.0, |b| b[oc]);
        let src = &out[oc * g.lenv..][..g.len];
        for (row, src) in y_o.chunks_mut(s.w).zip(src.chunks(g.pw)) {
            for (v, &u) in row.iter_mut().zip(src) {
                v.write(u + bias);
            }
        }
    }
}

/// Copy one image into its padded planes (the border and the tail stay zero).
fn pad_image(x: &[f32], s: &Shape, g: &Geometry, pad: &mut [f32]) {
    for (plane, padded) in x.chunks(s.h * s.w).zip(pad.chunks_mut(g.plane)) {
        for (row, out) in plane.chunks(s.w).zip(padded[g.pw + 1..].chunks_mut(g.pw)) {
            out[..s.w].copy_from_slice(row);
        }
    }
}

/// Sixteen output channels of one image: `out[o][q] = Σ_{c,t} w[c][t][o] · pad[c][q + off_t]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block(pad: &[f32], w: &[f32], out: &mut [f32], cin: usize, g: &Geometry) {
    use std::arch::x86_64::*;
    let offsets: [usize; 9] = std::array::from_fn(|t| (t / 3) * g.pw + t % 3);
    assert!(w.len() >= cin * 9 * BLOCK && out.len() >= BLOCK * g.lenv);
    // The last vector of the last plane reads up to this index.
    assert!(pad.len() >= (cin - 1) * g.plane + g.lenv + offsets[8]);
    for q0 in (0..g.lenv).step_by(BLOCK) {
        let mut acc = [_mm512_setzero_ps(); BLOCK];
        for c in 0..cin {
            let base = pad.as_ptr().add(c * g.plane + q0);
            let wc = w.as_ptr().add(c * 9 * BLOCK);
            for (t, &off) in offsets.iter().enumerate() {
                let xv = _mm512_loadu_ps(base.add(off));
                let wt = wc.add(t * BLOCK);
                for (o, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(_mm512_set1_ps(*wt.add(o)), xv, *a);
                }
            }
        }
        for (o, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(out.as_mut_ptr().add(o * g.lenv + q0), *a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_kernel_matches_the_gemm_kernel() {
        let shapes = [
            (2, 16, 16, 10, 10),
            (3, 5, 32, 1, 1),
            (1, 7, 16, 3, 9),
            (33, 1, 16, 2, 2),
        ];
        for (batch, cin, cout, h, w) in shapes {
            let s = Shape {
                batch,
                cin,
                cout,
                h,
                w,
            };
            if !available(&s) {
                eprintln!("skipping {s:?}: no AVX-512F on this CPU");
                continue;
            }
            let values = |n: usize, k: u32| -> Vec<f32> {
                (0..n)
                    .map(|i| {
                        (((i as u32).wrapping_mul(2654435761) ^ k) % 1000) as f32 / 500.0 - 1.0
                    })
                    .collect()
            };
            let x = values(batch * cin * h * w, 1);
            let wt = values(cout * cin * 9, 2);
            let b = values(cout, 3);
            let close = |fast: &[f32], slow: &[f32], what: &str| {
                assert_eq!(fast.len(), slow.len(), "{s:?} {what}");
                let scale = slow.iter().fold(1f32, |m, v| m.max(v.abs()));
                for (a, e) in fast.iter().zip(slow) {
                    assert!((a - e).abs() <= 1e-5 * scale, "{s:?} {what}: {a} vs {e}");
                }
            };
            let fast = forward(s, &x, &wt, Some(&b)).unwrap_or_default();
            close(&fast, &kernel::forward(s, &x, &wt, Some(&b)), "y");
            let dy = values(batch * cout * h * w, 4);
            assert!(weight_grad_pays(&s), "{s:?}: the test shapes are small");
            let (dw, db) = weight_grad(s, &x, &dy).unwrap_or_default();
            let (dw_ref, db_ref) = kernel::weight_grad(s, &x, &dy);
            close(&dw, &dw_ref, "dw");
            close(&db, &db_ref, "db");
        }
    }
}
