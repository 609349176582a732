//! Weight families over depth: how the N residual functions of a stack relate to each other.
//!
//! The paper's dichotomy is about exactly this: a ResNet whose weights are samples of a smooth
//! θ(t) converges to its Neural ODE at rate 1/N; one whose weights are unrelated across depth
//! need not. Every family is a linear combination of a few independent random draws of the
//! residual function, so it works for any residual kind.

use crate::params::combine;
use crate::rng::Rng;
use crate::{Error, Result};
use burn::module::Module;
use std::f64::consts::PI;
use std::str::FromStr;

/// A family of weights over depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Family {
    /// θ_n = θ(n/N) with θ(t) = cos(πt/2)·A + sin(πt/2)·B for independent draws A, B (each
    /// weight keeps the distribution of one draw when A, B are Gaussian-like).
    Smooth,
    /// Independent draws per layer.
    Iid,
    /// K pieces: layer n copies draw ⌊nK/N⌋ (the authors' initialisation from a base depth).
    Piecewise(usize),
    /// θ_n = (−1)^n θ: every parameter flips sign from one layer to the next (paper.md §2, the
    /// counterexample whose distance to the ODE does not vanish).
    Alternating,
}

impl FromStr for Family {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "--weights",
                format!("`{s}`: expected smooth, iid, piecewise:K (K ≥ 1) or alternating"),
            )
        };
        match s {
            "smooth" => Ok(Family::Smooth),
            "iid" => Ok(Family::Iid),
            "alternating" => Ok(Family::Alternating),
            _ => match s.strip_prefix("piecewise:").map(str::parse::<usize>) {
                Some(Ok(k)) if k >= 1 => Ok(Family::Piecewise(k)),
                _ => Err(bad()),
            },
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Family::Smooth => write!(f, "smooth"),
            Family::Iid => write!(f, "iid"),
            Family::Piecewise(k) => write!(f, "piecewise:{k}"),
            Family::Alternating => write!(f, "alternating"),
        }
    }
}

impl Family {
    /// The continuous-time coefficients of the smooth family at time t.
    pub fn smooth_weights(t: f64) -> [f64; 2] {
        [(PI * t / 2.0).cos(), (PI * t / 2.0).sin()]
    }

    /// N residual functions of this family; `draw` makes one independent random function.
    pub fn functions<F: Module>(
        self,
        depth: usize,
        rng: &mut Rng,
        mut draw: impl FnMut(&mut Rng) -> F,
    ) -> Vec<F> {
        let mix = |parts: &[&F], w: &[f64]| combine(parts, w).expect("at least one part");
        match self {
            Family::Iid => (0..depth).map(|_| draw(rng)).collect(),
            Family::Smooth => {
                let (a, b) = (draw(rng), draw(rng));
                (0..depth)
                    .map(|n| mix(&[&a, &b], &Self::smooth_weights(n as f64 / depth as f64)))
                    .collect()
            }
            Family::Piecewise(k) => {
                let base: Vec<F> = (0..k).map(|_| draw(rng)).collect();
                (0..depth)
                    .map(|n| mix(&[&base[n * k / depth]], &[1.0]))
                    .collect()
            }
            Family::Alternating => {
                let a = draw(rng);
                (0..depth)
                    .map(|n| mix(&[&a], &[if n % 2 == 0 { 1.0 } else { -1.0 }]))
                    .collect()
            }
        }
    }
}
