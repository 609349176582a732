//! Linear ResNets under gradient descent (paper.md §1.5, Figure 2): `X = ∏_n (I + A_n/N)` with
//! the loss `mean((X − B)²)`, zero initial weights and plain gradient descent at the paper's
//! scaling, learning rate η·N (∂ℓ/∂A_n carries a 1/N, so this is the gradient flow
//! `dA_n/dt = −N ∇_{A_n} ℓ` discretized with step η). The claim checked with it: the weights
//! stay smooth in depth (`max_n ‖A_{n+1} − A_n‖·N` bounded) and the depth-N weights converge to
//! a limit θ(t) at rate 1/N, uniformly in training time.

use crate::device::{to_vec, Placement, Precision};
use crate::rng::Rng;
use crate::{Error, Result};
use burn::tensor::Tensor;

/// A linear ResNet's weights: N matrices of size d×d, row-major, `a[n·d² + i·d + j] = (A_n)_ij`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearWeights {
    pub dim: usize,
    pub depth: usize,
    pub a: Vec<f64>,
}

impl LinearWeights {
    /// All-zero weights (the paper's initialisation), or an error for d < 1 or N < 1.
    pub fn zeros(dim: usize, depth: usize) -> Result<Self> {
        if dim == 0 {
            return Err(Error::invalid("--dim", "d must be at least 1"));
        }
        if depth == 0 {
            return Err(Error::invalid("--depth", "N must be at least 1"));
        }
        Ok(Self {
            dim,
            depth,
            a: vec![0.0; depth * dim * dim],
        })
    }

    /// The matrix A_n.
    pub fn matrix(&self, n: usize) -> &[f64] {
        let d2 = self.dim * self.dim;
        &self.a[n * d2..(n + 1) * d2]
    }

    /// Smoothness in depth, `max_n ‖A_{n+1} − A_n‖_F · N` (0 for a single layer): bounded in N
    /// exactly when the weights sample a Lipschitz θ(t).
    pub fn smoothness(&self) -> f64 {
        (1..self.depth)
            .map(|n| frobenius(self.matrix(n), self.matrix(n - 1)))
            .fold(0.0, f64::max)
            * self.depth as f64
    }

    /// `max_n ‖A_n − R_{n·M/N}‖_F`: the distance to weights `reference` of a deeper network
    /// (depth M, a multiple of N) at the same depth positions t = n/N.
    pub fn distance_to(&self, reference: &LinearWeights) -> Result<f64> {
        let (n, m) = (self.depth, reference.depth);
        if reference.dim != self.dim || !m.is_multiple_of(n) {
            return Err(Error::invalid(
                "--ref-depth",
                format!("the reference depth {m} must be a multiple of every depth (got {n})"),
            ));
        }
        Ok((0..n)
            .map(|k| frobenius(self.matrix(k), reference.matrix(k * (m / n))))
            .fold(0.0, f64::max))
    }
}

fn frobenius(x: &[f64], y: &[f64]) -> f64 {
    x.iter()
        .zip(y)
        .map(|(u, v)| (u - v).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// `∏_n (I + A_n/N)` in the order (I + A_0/N)(I + A_1/N)…, as in the authors' code. The product
/// is taken as a balanced tree of batched matrix products (log₂ N graph nodes instead of N), the
/// list padded with identities to a power of two.
pub fn product(a: Tensor<3>, placement: &Placement) -> Tensor<2> {
    let [n, d, _] = a.dims();
    let width = n.next_power_of_two();
    let eye = |count: usize| {
        let one: Vec<f64> = (0..d * d)
            .map(|k| if k / d == k % d { 1.0 } else { 0.0 })
            .collect();
        placement.tensor(one.repeat(count), [count, d, d])
    };
    let mut m = a / n as f64 + eye(n);
    if width > n {
        m = Tensor::cat(vec![m, eye(width - n)], 0);
    }
    let mut len = width;
    while len > 1 {
        len /= 2;
        let pairs = m.reshape([len, 2, d, d]);
        let left = pairs.clone().narrow(1, 0, 1).reshape([len, d, d]);
        let right = pairs.narrow(1, 1, 1).reshape([len, d, d]);
        m = left.matmul(right);
    }
    m.reshape([d, d])
}

/// The loss `mean((X − B)²)` and its gradient with respect to every A_n (autodiff, f64).
pub fn loss_and_grad(weights: &LinearWeights, target: &[f64]) -> Result<(f64, Vec<f64>)> {
    let p = Placement::flex(Precision::F64);
    let (d, n) = (weights.dim, weights.depth);
    if target.len() != d * d {
        return Err(Error::Shape {
            what: "target matrix B".into(),
            expected: format!("{d}×{d}"),
            found: format!("{} values", target.len()),
        });
    }
    let a = p.tensor(weights.a.clone(), [n, d, d]).require_grad();
    let b = p.tensor(target.to_vec(), [d, d]);
    let loss = (product(a.clone(), &p) - b).square().mean();
    let value = to_vec(&loss)[0];
    let grads = loss.backward();
    let g = a
        .grad(&grads)
        .map(|g| to_vec(&g))
        .unwrap_or_else(|| vec![0.0; n * d * d]);
    Ok((value, g))
}

/// One plain gradient-descent step with learning rate η·N; errors if the loss is not finite
/// (the run diverged: the learning rate is too large).
pub fn gd_step(weights: &mut LinearWeights, target: &[f64], eta: f64) -> Result<f64> {
    let (loss, grad) = loss_and_grad(weights, target)?;
    if !loss.is_finite() || grad.iter().any(|g| !g.is_finite()) {
        return Err(Error::NonFinite {
            what: format!(
                "linear ResNet loss (depth {}, η = {eta}): gradient descent diverged; lower --lr",
                weights.depth
            ),
        });
    }
    let lr = eta * weights.depth as f64;
    for (w, g) in weights.a.iter_mut().zip(&grad) {
        *w -= lr * g;
    }
    Ok(loss)
}

/// Trains from zero for `steps` steps, calling `visit(k, &weights, loss)` with the weights
/// *before* step k (k = 0..steps) and its loss, then `visit(steps, &final, final loss)`.
pub fn train(
    dim: usize,
    depth: usize,
    target: &[f64],
    eta: f64,
    steps: usize,
    mut visit: impl FnMut(usize, &LinearWeights, f64),
) -> Result<LinearWeights> {
    if !(eta.is_finite() && eta > 0.0) {
        return Err(Error::invalid("--lr", format!("{eta}: must be positive")));
    }
    let mut w = LinearWeights::zeros(dim, depth)?;
    for k in 0..steps {
        let before = w.clone();
        let loss = gd_step(&mut w, target, eta)?;
        visit(k, &before, loss);
    }
    let (loss, _) = loss_and_grad(&w, target)?;
    visit(steps, &w, loss);
    Ok(w)
}

/// A target `B = I + randn(d, d)` (paper.md §3.1) that the network can reach: every
/// `∏ (I + A_n/N)` met along training from zero has a positive determinant, so a draw with
/// det B ≤ 0 is redrawn from the same stream. Without this, gradient descent cannot bring the
/// loss near 0 and wanders (the paper's result assumes a small enough initial loss).
pub fn reachable_target(dim: usize, rng: &mut Rng) -> Result<Vec<f64>> {
    for _ in 0..1000 {
        let b: Vec<f64> = (0..dim * dim)
            .map(|k| rng.normal() + if k / dim == k % dim { 1.0 } else { 0.0 })
            .collect();
        if determinant(&b, dim) > 0.0 {
            return Ok(b);
        }
    }
    Err(Error::invalid(
        "--dim",
        format!("no target I + randn with a positive determinant found for d = {dim}"),
    ))
}

/// Determinant by Gaussian elimination with partial pivoting (d×d row-major).
fn determinant(m: &[f64], d: usize) -> f64 {
    let mut a = m.to_vec();
    let mut det = 1.0;
    for c in 0..d {
        let pivot = (c..d)
            .max_by(|&i, &j| a[i * d + c].abs().total_cmp(&a[j * d + c].abs()))
            .unwrap_or(c);
        if a[pivot * d + c] == 0.0 {
            return 0.0;
        }
        if pivot != c {
            for k in 0..d {
                a.swap(c * d + k, pivot * d + k);
            }
            det = -det;
        }
        det *= a[c * d + c];
        for r in c + 1..d {
            let f = a[r * d + c] / a[c * d + c];
            for k in c..d {
                a[r * d + k] -= f * a[c * d + k];
            }
        }
    }
    det
}
