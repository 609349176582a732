//! Integration schemes over depth: a scheme is its Butcher tableau, its step and its inverse step.
//!
//! A stack of N residual functions f_0..f_{N-1} is read as samples of f(·, θ(t)) at t = n/N, and
//! a step of size h = 1/N from state n evaluates f at the nodes `n + c_i` (c_i ∈ {0, 1}: the
//! schemes may only use functions that exist). Following Diffrax, a scheme is data (tableau and
//! order); one generic step routine serves every scheme, forward and backward.
//!
//! - Euler (`c = [0]`): `x_{n+1} = x_n + f_n(x_n)/N`, N steps; the ResNet itself.
//! - Heun (`c = [0, 1]`, paper.md §1.3): f_n at x_n and f_{n+1} at the Euler predictor,
//!   `x_{n+1} = x_n + (f_n(x_n) + f_{n+1}(x_n + f_n(x_n)/N)) / (2N)`. N functions give **N − 1**
//!   steps of size 1/N (total time (N−1)/N), exactly as the authors' HeunNet.
//!
//! The inverse step (the reversal used by the adjoint, paper.md §1.2, §1.4) runs the same
//! tableau with step −h and the nodes reflected (`n + c_max − c_i`): for Euler
//! `x̃_n = x̃_{n+1} − f_n(x̃_{n+1})/N`; for Heun f_{n+1} at the later state then f_n at the backward
//! predictor.

use burn::tensor::Tensor;
use std::str::FromStr;

/// A depth-integration scheme. `Copy` data: the tableau is static.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Scheme {
    /// First order; one function evaluation per step.
    Euler,
    /// Heun's method (explicit trapezoid), second order; two evaluations per step.
    Heun,
}

/// An explicit Runge–Kutta tableau whose nodes are whole layers.
#[derive(Debug)]
pub struct Tableau {
    /// Layer offset of each stage's function (the node c_i, in units of h).
    pub c: &'static [usize],
    /// Lower-triangular stage coefficients a_ij (row i has i entries).
    pub a: &'static [&'static [f64]],
    /// Output weights b_i.
    pub b: &'static [f64],
    /// Classical order of accuracy.
    pub order: usize,
}

const EULER: Tableau = Tableau {
    c: &[0],
    a: &[&[]],
    b: &[1.0],
    order: 1,
};

const HEUN: Tableau = Tableau {
    c: &[0, 1],
    a: &[&[], &[1.0]],
    b: &[0.5, 0.5],
    order: 2,
};

impl FromStr for Scheme {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "euler" => Ok(Scheme::Euler),
            "heun" => Ok(Scheme::Heun),
            _ => Err(crate::Error::invalid(
                "--scheme",
                format!("`{s}`: expected euler or heun"),
            )),
        }
    }
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scheme::Euler => "euler",
            Scheme::Heun => "heun",
        })
    }
}

impl Scheme {
    /// The scheme's tableau.
    pub fn tableau(self) -> &'static Tableau {
        match self {
            Scheme::Euler => &EULER,
            Scheme::Heun => &HEUN,
        }
    }

    /// Number of stages (function evaluations per step).
    pub fn stages(self) -> usize {
        self.tableau().b.len()
    }

    /// Largest layer offset used by a step.
    pub fn reach(self) -> usize {
        self.tableau().c.iter().copied().max().unwrap_or(0)
    }

    /// Steps taken by a stack of `functions` residual functions (Euler N, Heun N − 1).
    pub fn steps(self, functions: usize) -> usize {
        functions.saturating_sub(self.reach())
    }

    /// Smallest stack this scheme can integrate (Heun needs two functions for one step).
    pub fn min_functions(self) -> usize {
        self.reach() + 1
    }

    /// One step from state `n`: `f(stage, layer, x)` evaluates residual function `layer` at `x`
    /// (the stage index lets callers key per-evaluation state such as batch-norm statistics).
    pub fn step<const D: usize>(
        self,
        n: usize,
        h: f64,
        x: Tensor<D>,
        f: impl FnMut(usize, usize, Tensor<D>) -> Tensor<D>,
    ) -> Tensor<D> {
        let t = self.tableau();
        rk_step(t, h, x, |i| n + t.c[i], f)
    }

    /// The inverse step: from state n+1 back to (an approximation of) state n. Stage `i` of the
    /// reversal evaluates the same layer as forward stage `mirror_stage(i)`.
    pub fn inverse_step<const D: usize>(
        self,
        n: usize,
        h: f64,
        x_next: Tensor<D>,
        f: impl FnMut(usize, usize, Tensor<D>) -> Tensor<D>,
    ) -> Tensor<D> {
        let t = self.tableau();
        let reach = self.reach();
        rk_step(t, -h, x_next, |i| n + reach - t.c[i], f)
    }

    /// The stage values k_i of step n (the step is `x + h Σ b_i k_i`): what the adjoint
    /// differentiates, so it never builds the full step on the graph.
    pub fn stage_values<const D: usize>(
        self,
        n: usize,
        h: f64,
        x: Tensor<D>,
        f: impl FnMut(usize, usize, Tensor<D>) -> Tensor<D>,
    ) -> Vec<Tensor<D>> {
        let t = self.tableau();
        rk_stages(t, h, x, |i| n + t.c[i], f)
    }

    /// The forward stage that evaluates the same layer as reversal stage `i`.
    pub fn mirror_stage(self, i: usize) -> usize {
        let t = self.tableau();
        let layer = self.reach() - t.c[i];
        t.c.iter().position(|&c| c == layer).unwrap_or(i)
    }
}

/// One explicit Runge–Kutta step over layers: stage i evaluates layer `node(i)`.
fn rk_step<const D: usize>(
    t: &Tableau,
    h: f64,
    x: Tensor<D>,
    node: impl Fn(usize) -> usize,
    f: impl FnMut(usize, usize, Tensor<D>) -> Tensor<D>,
) -> Tensor<D> {
    let k = rk_stages(t, h, x.clone(), node, f);
    rk_combine(t, h, x, k)
}

/// The stage values k_i of one step.
fn rk_stages<const D: usize>(
    t: &Tableau,
    h: f64,
    x: Tensor<D>,
    node: impl Fn(usize) -> usize,
    mut f: impl FnMut(usize, usize, Tensor<D>) -> Tensor<D>,
) -> Vec<Tensor<D>> {
    let mut k: Vec<Tensor<D>> = Vec::with_capacity(t.b.len());
    for (i, row) in t.a.iter().enumerate() {
        let xi = row
            .iter()
            .zip(&k)
            .fold(x.clone(), |acc, (a, kj)| acc + kj.clone() * (h * a));
        k.push(f(i, node(i), xi));
    }
    k
}

/// x + h Σ b_i k_i.
fn rk_combine<const D: usize>(t: &Tableau, h: f64, x: Tensor<D>, k: Vec<Tensor<D>>) -> Tensor<D> {
    k.into_iter()
        .zip(t.b)
        .fold(x, |acc, (ki, b)| acc + ki * (h * b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{to_vec, Placement, Precision};

    /// Scalar linear layers f_n(x) = a_n x, so steps can be checked by hand.
    fn run(scheme: Scheme, a: &[f64], x0: f64, inverse: bool) -> f64 {
        let p = Placement::flex(Precision::F64);
        let x = p.tensor(vec![x0], [1]);
        let h = 1.0 / a.len() as f64;
        let f = |_s: usize, l: usize, x: Tensor<1>| x * a[l];
        let y = if inverse {
            scheme.inverse_step(0, h, x, f)
        } else {
            scheme.step(0, h, x, f)
        };
        to_vec(&y)[0]
    }

    #[test]
    fn euler_and_heun_steps_match_the_paper() {
        let (a0, a1) = (0.5, -1.0);
        let a = [a0, a1];
        let h = 0.5;
        assert!((run(Scheme::Euler, &a, 2.0, false) - (2.0 + h * a0 * 2.0)).abs() < 1e-12);
        let pred = 2.0 + h * a0 * 2.0;
        let heun = 2.0 + h / 2.0 * (a0 * 2.0 + a1 * pred);
        assert!((run(Scheme::Heun, &a, 2.0, false) - heun).abs() < 1e-12);
        // Reversal: f_{n+1} at the later state, then f_n at the backward predictor.
        let back_pred = 2.0 - h * a1 * 2.0;
        let heun_inv = 2.0 - h / 2.0 * (a1 * 2.0 + a0 * back_pred);
        assert!((run(Scheme::Heun, &a, 2.0, true) - heun_inv).abs() < 1e-12);
        assert!((run(Scheme::Euler, &a, 2.0, true) - (2.0 - h * a0 * 2.0)).abs() < 1e-12);
    }

    #[test]
    fn step_counts_and_mirrors() {
        assert_eq!(Scheme::Euler.steps(8), 8);
        assert_eq!(Scheme::Heun.steps(8), 7);
        assert_eq!(Scheme::Heun.mirror_stage(0), 1);
        assert_eq!(Scheme::Euler.mirror_stage(0), 0);
        assert!("rk9".parse::<Scheme>().is_err());
    }
}
