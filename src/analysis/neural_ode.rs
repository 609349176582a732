//! The Neural ODE a ResNet discretizes: `dx/dt = f(x, θ(t))` on [0, 1], with θ(t) built from the
//! stack's per-function weights θ_n placed at t_n = n/N (paper.md §1.1, §2).
//!
//! The paper's precise θ(t) is not known (paper.md §1.1), so both natural choices are offered:
//! the piecewise-linear interpolation of θ_n (the reference measurements of paper.md §2 use it;
//! with alternating weights it passes through 0 between layers, which is why that ResNet never
//! approaches its ODE) and the piecewise-constant one (θ(t) = θ_n on [t_n, t_{n+1}), for which
//! Euler's error is O(1/N) whatever the weights; i.i.d.
//! weights then converge like N^−1.5). Past t_{N−1} both hold θ_{N−1}, the function
//! the ResNet's last step uses. A closed-form θ(t) is any [`ClosedForm`] closure.

use crate::device::to_vec;
use crate::ode::{solve_dopri5, solve_rk4_grid, Dopri5Config, VectorField};
use crate::params::{combine, plain_view};
use crate::residual::Residual;
use crate::stack::Stack;
use crate::{Error, Result};
use burn::module::{Module, ModuleDisplay, ModuleVisitor, Param};
use burn::tensor::Tensor;
use std::str::FromStr;

/// How θ(t) is read off the weights θ_0..θ_{N−1} between the nodes t_n = n/N.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Interpolation {
    /// θ(t) = (1 − s)θ_n + sθ_{n+1} with s = Nt − n.
    Linear,
    /// θ(t) = θ_n on [t_n, t_{n+1}).
    Constant,
}

impl FromStr for Interpolation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "linear" => Ok(Interpolation::Linear),
            "constant" => Ok(Interpolation::Constant),
            _ => Err(Error::invalid(
                "--interpolation",
                format!("`{s}`: expected linear or constant"),
            )),
        }
    }
}

impl std::fmt::Display for Interpolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Interpolation::Linear => "linear",
            Interpolation::Constant => "constant",
        })
    }
}

/// The vector field `f(x, θ(t))` of a stack's weights interpolated in depth.
///
/// Evaluates on graph-free tensors (the states of [`Stack::trajectory`]). The module for the
/// last requested time is cached: an RK4 step asks for the same time twice in a row and starts
/// where the previous one ended, so it forms two interpolated modules instead of four.
pub struct DepthField<'a, F: Module> {
    stack: &'a Stack<F>,
    /// The stack's functions without a graph: θ(t) at the nodes needs no combination.
    plain: Stack<F>,
    interpolation: Interpolation,
    cache: Option<(f64, F)>,
    /// Evaluations of the field so far.
    pub nfe: usize,
}

impl<'a, F: Module + ModuleDisplay> DepthField<'a, F> {
    /// The field of `stack`'s weights; errors if a weight is not finite (the ODE would be
    /// meaningless and the solver would only fail later, less clearly).
    pub fn new(stack: &'a Stack<F>, interpolation: Interpolation) -> Result<Self> {
        check_weights(stack, "stack weights")?;
        Ok(Self {
            stack,
            plain: plain_view(stack),
            interpolation,
            cache: None,
            nfe: 0,
        })
    }

    /// The layer n with t ∈ [t_n, t_{n+1}) and the fraction s of the way to t_{n+1}; the last
    /// function is held past t_{N−1} (s = 0).
    fn node(&self, t: f64) -> (usize, f64) {
        let depth = self.stack.depth;
        let u = (t * depth as f64).max(0.0);
        let n = (u.floor() as usize).min(depth - 1);
        let s = if n + 1 < depth { u - n as f64 } else { 0.0 };
        (n, s.clamp(0.0, 1.0))
    }

    /// θ(t) as a graph-free module.
    pub fn weights_at(&mut self, t: f64) -> &F {
        let (n, s) = self.node(t);
        if self.interpolation == Interpolation::Constant || s == 0.0 {
            return self.plain.function(n);
        }
        if self.cache.as_ref().is_none_or(|(tc, _)| *tc != t) {
            let (a, b) = (self.stack.function(n), self.stack.function(n + 1));
            let mixed = combine(&[a, b], &[1.0 - s, s]).map(|m| plain_view(&m));
            self.cache = mixed.map(|m| (t, m));
        }
        match &self.cache {
            Some((_, m)) => m,
            None => self.plain.function(n),
        }
    }
}

impl<F, const D: usize> VectorField<D> for DepthField<'_, F>
where
    F: Residual<D> + ModuleDisplay,
{
    fn eval(&mut self, t: f64, x: &Tensor<D>) -> Tensor<D> {
        self.nfe += 1;
        let f = self.weights_at(t);
        f.forward(x.clone(), &mut crate::norm::Norm::eval())
    }
}

/// A closed-form θ(t): the field `f(x, θ(t))` given as a function of t returning the module.
/// The smooth family's θ(t) = cos(πt/2)A + sin(πt/2)B is one (see [`smooth_field`]).
pub struct ClosedForm<F, G> {
    theta: G,
    cache: Option<(f64, F)>,
}

impl<F: Module, G: FnMut(f64) -> F> ClosedForm<F, G> {
    /// The field of the weights `theta(t)` (graph-free modules expected).
    pub fn new(theta: G) -> Self {
        Self { theta, cache: None }
    }
}

impl<F, G, const D: usize> VectorField<D> for ClosedForm<F, G>
where
    F: Residual<D>,
    G: FnMut(f64) -> F,
{
    fn eval(&mut self, t: f64, x: &Tensor<D>) -> Tensor<D> {
        if self.cache.as_ref().is_none_or(|(tc, _)| *tc != t) {
            self.cache = Some((t, (self.theta)(t)));
        }
        match &self.cache {
            Some((_, f)) => f.forward(x.clone(), &mut crate::norm::Norm::eval()),
            None => x.zeros_like(),
        }
    }
}

/// The smooth family's exact θ(t) = cos(πt/2)A + sin(πt/2)B for the two draws A, B.
pub fn smooth_field<'a, F: Module>(a: &'a F, b: &'a F) -> ClosedForm<F, impl FnMut(f64) -> F + 'a> {
    ClosedForm::new(move |t| {
        let w = crate::family::Family::smooth_weights(t);
        let mixed = combine(&[a, b], &w).unwrap_or_else(|| a.clone());
        plain_view(&mixed)
    })
}

/// How the reference ODE is solved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OdeSolver {
    /// Adaptive Dormand–Prince, landing on every node t_n (θ(t) has kinks there).
    Dopri5(Dopri5Config),
    /// Classical RK4 with this many equal steps per layer interval.
    Rk4(usize),
}

impl Default for OdeSolver {
    /// Dopri5 to 1e-9 relative (paper.md §3.1's "solved to 1e-9", f64).
    fn default() -> Self {
        OdeSolver::Dopri5(Dopri5Config {
            rtol: 1e-9,
            atol: 1e-12,
            ..Default::default()
        })
    }
}

/// The ODE solution at the nodes t_n = n/N, n = 0..=N, and the field evaluations it took.
pub fn solve_at_nodes<const D: usize>(
    field: &mut impl VectorField<D>,
    x0: Tensor<D>,
    depth: usize,
    solver: OdeSolver,
) -> Result<(Vec<Tensor<D>>, usize)> {
    if depth == 0 {
        return Err(Error::invalid("--depths", "N must be at least 1"));
    }
    let times: Vec<f64> = (0..=depth).map(|n| n as f64 / depth as f64).collect();
    match solver {
        OdeSolver::Dopri5(cfg) => solve_dopri5(field, x0, &times, &cfg).map(|s| (s.states, s.nfe)),
        OdeSolver::Rk4(k) => {
            let states = solve_rk4_grid(field, x0, &times, k)?;
            Ok((states, 4 * k * depth))
        }
    }
}

/// Per-sample distance between a ResNet trajectory and the ODE at the nodes, relative to the
/// size of the ODE's state: `final` at t = 1 and `trajectory` maxed over n.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Distance {
    /// mean over samples of ‖x_N − x(1)‖ / ‖x(1)‖.
    pub final_distance: f64,
    /// max over n of the mean over samples of ‖x_n − x(n/N)‖ / ‖x(n/N)‖.
    pub trajectory_distance: f64,
}

/// Compares ResNet states x_0..x_N with ODE states at the same nodes (equal lengths).
pub fn distance<const D: usize>(resnet: &[Tensor<D>], ode: &[Tensor<D>]) -> Result<Distance> {
    if resnet.len() != ode.len() || resnet.is_empty() {
        return Err(Error::Shape {
            what: "ResNet vs ODE trajectory".into(),
            expected: format!("{} states", ode.len()),
            found: format!("{} states", resnet.len()),
        });
    }
    let per_node: Vec<f64> = resnet
        .iter()
        .zip(ode)
        .map(|(x, y)| mean_relative(x, y))
        .collect();
    let trajectory_distance = per_node.iter().copied().fold(0.0, f64::max);
    Ok(Distance {
        final_distance: per_node[per_node.len() - 1],
        trajectory_distance,
    })
}

/// mean over samples (dimension 0) of ‖x_i − y_i‖ / ‖y_i‖.
fn mean_relative<const D: usize>(x: &Tensor<D>, y: &Tensor<D>) -> f64 {
    let batch = y.dims()[0].max(1);
    let (xv, yv) = (to_vec(x), to_vec(y));
    let width = yv.len() / batch;
    let ratios = xv.chunks(width).zip(yv.chunks(width)).map(|(a, b)| {
        let diff: f64 = a.iter().zip(b).map(|(u, v)| (u - v).powi(2)).sum();
        let size: f64 = b.iter().map(|v| v * v).sum();
        (diff / size).sqrt()
    });
    ratios.sum::<f64>() / batch as f64
}

/// ResNet trajectory vs its Neural ODE for one stack and one input batch.
pub fn resnet_to_ode<F, const D: usize>(
    stack: &Stack<F>,
    x0: Tensor<D>,
    interpolation: Interpolation,
    solver: OdeSolver,
) -> Result<Distance>
where
    F: Residual<D> + ModuleDisplay,
{
    let resnet = stack.trajectory(x0);
    let mut field = DepthField::new(stack, interpolation)?;
    let (ode, _) = solve_at_nodes(&mut field, resnet[0].clone(), stack.depth, solver)?;
    distance(&resnet, &ode)
}

struct Finite {
    ok: bool,
}

impl ModuleVisitor for Finite {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.ok = self.ok && to_vec(&param.val()).iter().all(|v| v.is_finite());
    }
}

/// Rejects a module holding a NaN or infinite weight, naming `what`.
pub fn check_weights<M: Module>(module: &M, what: &str) -> Result<()> {
    let mut v = Finite { ok: true };
    module.visit(&mut v);
    if v.ok {
        Ok(())
    } else {
        Err(Error::NonFinite { what: what.into() })
    }
}
