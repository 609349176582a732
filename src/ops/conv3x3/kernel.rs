//! The flex kernels of the 3×3 convolution (stride 1, padding 1), on plain NCHW slices.
//!
//! Each image is unfolded into a column matrix `cols[9C, HW]` (im2col) held in a buffer reused
//! across the images of a chunk, and one GEMM writes the channels-first output directly:
//! `y_n[O, HW] = W[O, 9C] · cols_n + b`. burn-flex's own conv converts the batch to channels-last
//! and unfolds 512-pixel tiles into fresh buffers, which cost more than the GEMMs at the small
//! channel counts of these models (issue 12). The input gradient is the same convolution of `dY`
//! with the flipped, transposed kernel; the weight gradient is `Σ_n dY_n · cols_nᵀ`, summed over
//! image chunks whose number depends on the shape only, in a fixed order, so the result does not
//! depend on how rayon schedules them (runs stay bit-for-bit reproducible).

use rayon::prelude::*;

/// The float types the kernels run on (f32 and f64).
pub trait Real:
    Copy
    + Send
    + Sync
    + Default
    + PartialOrd
    + 'static
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
{
    const ONE: Self;
}

impl Real for f32 {
    const ONE: Self = 1.0;
}

impl Real for f64 {
    const ONE: Self = 1.0;
}

/// Shape of one convolution: batch, input channels, output channels, height, width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub batch: usize,
    pub cin: usize,
    pub cout: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    fn pixels(&self) -> usize {
        self.h * self.w
    }

    /// Rows of the column matrix (and columns of the weight matrix).
    fn taps(&self) -> usize {
        9 * self.cin
    }

    /// Columns of one image in the padded-width geometry of [`im2col`].
    fn padded_len(&self) -> usize {
        (self.h - 1) * (self.w + 2) + self.w
    }

    fn padded_size(&self) -> usize {
        self.cin * (self.h + 2) * (self.w + 2)
    }

    /// Images per GEMM (and per partial sum of the weight gradient): as many as fill about
    /// 1 MiB of columns, at least one, and at most an eighth of the batch so that both cores get
    /// work. Small maps (10×10: 7 images) would otherwise make GEMMs too small to pay for their
    /// call and packing. Depends on the shape only, never on the thread count.
    fn images_per_chunk(&self) -> usize {
        let per_image = (self.taps() * self.padded_len() * std::mem::size_of::<f32>()).max(1);
        ((1 << 20) / per_image).clamp(1, self.batch.div_ceil(8).max(1))
    }
}

/// Copy one image `x[C, H, W]` into `pad[C, H + 2, W + 2]` with a zero border (the border is
/// written once, when the buffer is made, and never overwritten).
fn pad_image<T: Real>(x: &[T], s: &Shape, pad: &mut [T]) {
    let (h, w, pw) = (s.h, s.w, s.w + 2);
    for (plane, padded) in x.chunks(h * w).zip(pad.chunks_mut((h + 2) * pw)) {
        for (row, out) in plane.chunks(w).zip(padded[pw + 1..].chunks_mut(pw)) {
            out[..w].copy_from_slice(row);
        }
    }
}

/// Unfold a padded image into its block of `cols[9C, ·]` (row stride `ld`, columns `L =
/// (H − 1)(W + 2) + W` of this image): row `c·9 + ky·3 + kx` is the padded plane `c` from
/// offset `ky(W + 2) + kx`, so column `q = y(W + 2) + x` holds `x[c, y + ky − 1, x + kx − 1]`
/// (zero outside the image). In this "padded-width" geometry every row is one contiguous copy;
/// the columns with `x ≥ W` are junk that the callers drop (forward) or multiply by zeros
/// (weight gradient).
fn im2col<T: Real>(pad: &[T], s: &Shape, cols: &mut [T], ld: usize) {
    let (plane, pw, len) = ((s.h + 2) * (s.w + 2), s.w + 2, s.padded_len());
    for (c, padded) in pad.chunks(plane).enumerate() {
        for t in 0..9 {
            let start = (t / 3) * pw + t % 3;
            cols[(c * 9 + t) * ld..][..len].copy_from_slice(&padded[start..start + len]);
        }
    }
}

/// `dst[m, n] (+)= lhs[m, k] · rhs[k, n]`, `dst` row-major, the inputs with explicit
/// (row, column) strides; on the calling thread (the callers parallelise over images).
fn gemm<T: Real>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    accumulate: bool,
    (lhs, lhs_rs, lhs_cs): (&[T], usize, usize),
    (rhs, rhs_rs, rhs_cs): (&[T], usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= m * n);
    assert!(k == 0 || lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    assert!(k == 0 || rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    // SAFETY: the asserts keep every index of the three matrices inside its slice, and `dst` is
    // a distinct `&mut`, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Scratch buffers of one worker: a padded image, the columns of a chunk of images side by side
/// and one GEMM result, all in the padded-width geometry. Made once per rayon job
/// (`for_each_init`), not per image: at 32×32 the columns are 0.6 MB, and zeroing a fresh
/// buffer per image cost as much as the GEMM.
struct Scratch<T> {
    pad: Vec<T>,
    cols: Vec<T>,
    out: Vec<T>,
    /// Row stride of `cols`: the columns of a full chunk.
    ld: usize,
}

impl<T: Real> Scratch<T> {
    fn new(s: &Shape, out_rows: usize) -> Self {
        let ld = s.images_per_chunk() * s.padded_len();
        Scratch {
            pad: vec![T::default(); s.padded_size()],
            cols: vec![T::default(); s.taps() * ld],
            out: vec![T::default(); out_rows * ld],
            ld,
        }
    }

    /// Pad and unfold the images of `x` (a chunk) side by side into `cols`; returns their count.
    fn unfold(&mut self, x: &[T], s: &Shape, cin: usize) -> usize {
        let (len, image) = (s.padded_len(), cin * s.pixels());
        for (j, x_n) in x.chunks(image).enumerate() {
            pad_image(x_n, s, &mut self.pad);
            im2col(&self.pad, s, &mut self.cols[j * len..], self.ld);
        }
        x.len() / image
    }
}

/// `y = conv3x3(x, weight) + bias`: `x[B, Cin, H, W]`, `weight[Cout, Cin, 3, 3]` (row-major, so
/// already the `[Cout, 9·Cin]` matrix), `bias[Cout]`; returns `y[B, Cout, H, W]`.
pub fn forward<T: Real>(s: Shape, x: &[T], weight: &[T], bias: Option<&[T]>) -> Vec<T> {
    let (hw, taps, len) = (s.pixels(), s.taps(), s.padded_len());
    let mut y = vec![T::default(); s.batch * s.cout * hw];
    if y.is_empty() || s.cin == 0 {
        return y;
    }
    let per = s.images_per_chunk();
    y.par_chunks_mut(per * s.cout * hw)
        .zip(x.par_chunks(per * s.cin * hw))
        .for_each_init(
            || Scratch::new(&s, s.cout),
            |buf, (y_chunk, x_chunk)| {
                let n = buf.unfold(x_chunk, &s, s.cin) * len;
                let (w, cols) = ((weight, taps, 1), (&buf.cols[..], buf.ld, 1));
                gemm((s.cout, n, taps), &mut buf.out, false, w, cols);
                // Drop the junk columns (x ≥ W) and add the bias.
                for (j, y_n) in y_chunk.chunks_mut(s.cout * hw).enumerate() {
                    for (o, y_o) in y_n.chunks_mut(hw).enumerate() {
                        let b = bias.map_or(T::default(), |b| b[o]);
                        let src = &buf.out[o * n + j * len..][..len];
                        for (row, src) in y_o.chunks_mut(s.w).zip(src.chunks(s.w + 2)) {
                            for (v, &u) in row.iter_mut().zip(src) {
                                *v = u + b;
                            }
                        }
                    }
                }
            },
        );
    y
}

/// The kernel of the input gradient: `w'[Cin, Cout, ky, kx] = weight[Cout, Cin, 2 − ky, 2 − kx]`.
fn flipped_transposed<T: Real>(s: Shape, weight: &[T]) -> Vec<T> {
    let mut out = vec![T::default(); weight.len()];
    for o in 0..s.cout {
        for c in 0..s.cin {
            for t in 0..9 {
                out[(c * s.cout + o) * 9 + (8 - t)] = weight[(o * s.cin + c) * 9 + t];
            }
        }
    }
    out
}

/// `dx = ∂⟨dy, conv3x3(x, weight)⟩/∂x`: the convolution of `dy` with the flipped, transposed
/// kernel (padding 1 on both sides keeps the size), computed by `conv` (a forward kernel).
pub fn input_grad<T: Real>(
    s: Shape,
    weight: &[T],
    dy: &[T],
    conv: impl Fn(Shape, &[T], &[T]) -> Vec<T>,
) -> Vec<T> {
    let back = Shape {
        cin: s.cout,
        cout: s.cin,
        ..s
    };
    conv(back, dy, &flipped_transposed(s, weight))
}

/// `dW = Σ_n dY_n · cols(x_n)ᵀ` (`[Cout, 9·Cin]`) and `db = Σ_{n, pixel} dY`.
pub fn weight_grad<T: Real>(s: Shape, x: &[T], dy: &[T]) -> (Vec<T>, Vec<T>) {
    let (hw, taps, len) = (s.pixels(), s.taps(), s.padded_len());
    let mut dw = vec![T::default(); s.cout * taps];
    let mut db = vec![T::default(); s.cout];
    if s.batch * hw == 0 {
        return (dw, db);
    }
    let per = s.images_per_chunk();
    let partials: Vec<(Vec<T>, Vec<T>)> = dy
        .par_chunks(per * s.cout * hw)
        .zip(x.par_chunks(per * s.cin * hw))
        .map_init(
            || Scratch::new(&s, s.cout),
            |buf, (dy_chunk, x_chunk)| {
                let n = buf.unfold(x_chunk, &s, s.cin) * len;
                // dY in the padded-width geometry: zeros in the junk columns cancel the columns'.
                let dy_pad = &mut buf.out[..s.cout * n];
                dy_pad.fill(T::default());
                for (j, dy_n) in dy_chunk.chunks(s.cout * hw).enumerate() {
                    for (o, src) in dy_n.chunks(hw).enumerate() {
                        let dst = &mut dy_pad[o * n + j * len..][..len];
                        for (d, row) in dst.chunks_mut(s.w + 2).zip(src.chunks(s.w)) {
                            d[..s.w].copy_from_slice(row);
                        }
                    }
                }
                let mut dw = vec![T::default(); s.cout * taps];
                let cols_t = (&buf.cols[..], 1, buf.ld);
                gemm((s.cout, taps, n), &mut dw, false, (&*dy_pad, n, 1), cols_t);
                let db = dy_pad.chunks(n).map(sum).collect();
                (dw, db)
            },
        )
        .collect();
    for (pw, pb) in partials {
        add_into(&mut dw, &pw);
        add_into(&mut db, &pb);
    }
    (dw, db)
}

/// `Σ v` in eight interleaved accumulators (vectorisable; a fixed order, so deterministic).
pub(super) fn sum<T: Real>(v: &[T]) -> T {
    let mut acc = [T::default(); 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = *a + x;
        }
    }
    for (a, &x) in acc.iter_mut().zip(chunks.remainder()) {
        *a = *a + x;
    }
    acc.iter().fold(T::default(), |t, &a| t + a)
}

fn add_into<T: Real>(acc: &mut [T], v: &[T]) {
    for (a, &b) in acc.iter_mut().zip(v) {
        *a = *a + b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The convolution by its definition, for checking the kernels.
    fn reference(s: Shape, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; s.batch * s.cout * s.h * s.w];
        for n in 0..s.batch {
            for o in 0..s.cout {
                for oy in 0..s.h {
                    for ox in 0..s.w {
                        let mut acc = b[o];
                        for c in 0..s.cin {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = (oy + ky, ox + kx);
                                    if iy < 1 || ix < 1 || iy > s.h || ix > s.w {
                                        continue;
                                    }
                                    let xv = x[((n * s.cin + c) * s.h + iy - 1) * s.w + ix - 1];
                                    acc += w[((o * s.cin + c) * 3 + ky) * 3 + kx] * xv;
                                }
                            }
                        }
                        y[((n * s.cout + o) * s.h + oy) * s.w + ox] = acc;
                    }
                }
            }
        }
        y
    }

    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(p, q)| p * q).sum()
    }

    fn close(a: f64, e: f64) -> bool {
        (a - e).abs() <= 1e-10 * e.abs().max(1.0)
    }

    #[test]
    fn kernels_match_the_definition_and_its_adjoints() {
        let shapes = [
            Shape {
                batch: 3,
                cin: 2,
                cout: 5,
                h: 4,
                w: 3,
            },
            Shape {
                batch: 1,
                cin: 1,
                cout: 1,
                h: 1,
                w: 1,
            },
            Shape {
                batch: 17,
                cin: 3,
                cout: 2,
                h: 2,
                w: 5,
            },
        ];
        for s in shapes {
            let x = values(s.batch * s.cin * s.h * s.w, 1);
            let w = values(s.cout * s.cin * 9, 2);
            let b = values(s.cout, 3);
            let dy = values(s.batch * s.cout * s.h * s.w, 4);
            let y = forward(s, &x, &w, Some(&b));
            for (a, e) in y.iter().zip(&reference(s, &x, &w, &b)) {
                assert!((a - e).abs() < 1e-12, "{s:?}: {a} vs {e}");
            }
            // The gradients are the adjoints of the linear maps x ↦ conv(x, w), w ↦ conv(x, w)
            // and b ↦ conv(x, 0) + b: ⟨dx, v⟩ = ⟨dy, conv(v, w)⟩ for any v, and so on.
            let (v, u, z) = (values(x.len(), 5), values(w.len(), 6), values(s.cout, 7));
            let (zero_b, zero_w) = (vec![0.0; s.cout], vec![0.0; w.len()]);
            let dx = input_grad(s, &w, &dy, |s, x, w| forward(s, x, w, None));
            let (dw, db) = weight_grad(s, &x, &dy);
            assert!(
                close(dot(&dx, &v), dot(&dy, &reference(s, &v, &w, &zero_b))),
                "{s:?} dx"
            );
            assert!(
                close(dot(&dw, &u), dot(&dy, &reference(s, &x, &u, &zero_b))),
                "{s:?} dw"
            );
            assert!(
                close(dot(&db, &z), dot(&dy, &reference(s, &x, &zero_w, &z))),
                "{s:?} db"
            );
        }
    }
}
