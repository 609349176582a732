//! Gradient-error metrics between two sets of per-tensor gradients (adjoint vs backprop).
//!
//! Per tensor: cosine similarity and the paper's squared relative error
//! `mean((g_b − g_a)²) / mean(g_b²)` (paper.md §3.4, `compare_gradients.py`); over all
//! parameters: the relative error `‖g_a − g_b‖ / ‖g_b‖`. Like the paper's script, the
//! per-tensor extremes skip tensors named `bias`: a conv bias feeding a batch norm has an
//! exactly-zero backprop gradient, whose cosine with any approximation is meaningless.

use serde::Serialize;

/// Error of one parameter tensor.
#[derive(Debug, Clone, Serialize)]
pub struct TensorError {
    pub name: String,
    pub cosine: f64,
    pub rel_sq_error: f64,
}

/// Errors of a whole gradient.
#[derive(Debug, Clone, Serialize)]
pub struct GradientError {
    pub tensors: Vec<TensorError>,
    /// ‖g_a − g_b‖ / ‖g_b‖ over all parameters.
    pub relative_error: f64,
    /// Largest per-tensor squared relative error (tensors named `bias` excluded).
    pub max_rel_sq_error: f64,
    /// Smallest per-tensor cosine similarity (tensors named `bias` excluded).
    pub min_cosine: f64,
}

impl GradientError {
    /// Median per-tensor squared relative error (tensors named `bias` excluded, as for the
    /// extremes); NaN when no tensor is left.
    pub fn median_rel_sq_error(&self) -> f64 {
        let mut v: Vec<f64> = self
            .tensors
            .iter()
            .filter(|t| !t.name.contains("bias"))
            .map(|t| t.rel_sq_error)
            .collect();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        if v.len() % 2 == 1 {
            v[m]
        } else {
            0.5 * (v[m - 1] + v[m])
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Compare `approx` against `reference`, tensor by tensor (same names and order).
pub fn gradient_error(
    reference: &[(String, Vec<f64>)],
    approx: &[(String, Vec<f64>)],
) -> GradientError {
    let (mut num, mut den) = (0.0, 0.0);
    let tensors: Vec<TensorError> = reference
        .iter()
        .zip(approx)
        .map(|((name, b), (_, a))| {
            let diff: Vec<f64> = b.iter().zip(a).map(|(x, y)| x - y).collect();
            let (dd, bb, aa) = (dot(&diff, &diff), dot(b, b), dot(a, a));
            num += dd;
            den += bb;
            let cosine = if bb > 0.0 && aa > 0.0 {
                dot(a, b) / (aa.sqrt() * bb.sqrt())
            } else if bb == 0.0 && aa == 0.0 {
                1.0
            } else {
                0.0
            };
            let rel_sq_error = if bb > 0.0 {
                dd / bb
            } else if dd == 0.0 {
                0.0
            } else {
                f64::INFINITY
            };
            TensorError {
                name: name.clone(),
                cosine,
                rel_sq_error,
            }
        })
        .collect();
    let relative_error = if den > 0.0 {
        (num / den).sqrt()
    } else {
        num.sqrt()
    };
    let weights = || tensors.iter().filter(|t| !t.name.contains("bias"));
    GradientError {
        max_rel_sq_error: weights().map(|t| t.rel_sq_error).fold(0.0, f64::max),
        min_cosine: weights().map(|t| t.cosine).fold(1.0, f64::min),
        tensors,
        relative_error,
    }
}
