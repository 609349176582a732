//! Gradient modes: how the gradient of a loss reaches every residual function of a stack.
//!
//! - [`GradMode::Backprop`]: ordinary autodiff through every step; activation memory O(N).
//! - [`GradMode::Adjoint`]: the memory-free discrete adjoint (paper.md §1.2). The forward keeps
//!   only x_N; the backward reconstructs x_n by the scheme's inverse step **chained from x_N**
//!   and takes the step's vector-Jacobian product at the reconstructed state. Activation memory
//!   O(1) in N; the gradient is approximate, its error vanishing with depth.
//! - [`GradMode::AdjointSerial`]: the same adjoint, same numbers, on one thread (the default
//!   adjoint uses a second thread on flex, see [`Stack::backward`]): the smallest peak memory,
//!   the same at every step.
//! - [`GradMode::AdjointPerStep`]: what the authors' CIFAR code effectively ran through memcnn
//!   (paper.md §3.4): every step's output is kept and each input is reconstructed by one inverse
//!   step from its *true* output, so errors do not accumulate; memory stays O(N). For
//!   reproducing their numbers.
//! - [`GradMode::Checkpoint`]: keep every k-th state and recompute each segment with a graph;
//!   exact gradients, memory O(N/k + k).
//!
//! One loop per mode serves every scheme and residual kind. A stack run composes with layers
//! before and after it: [`Stack::run`] returns the output as a leaf, the caller backpropagates
//! its head to that leaf, [`Stack::backward`] carries the gradient to the stack input, and
//! [`push_to_input`] pushes it into the layers before (the stem).

use crate::norm::{like, BnMode, Phase};
use crate::params::{accumulate, leaf_view};
use crate::residual::Residual;
use crate::stack::{Pass, SiteStats, Stack};
use crate::{Error, Result};
use burn::module::{Module, ModuleDisplay};
use burn::optim::GradientsParams;
use burn::tensor::{Gradients, Tensor};
use std::str::FromStr;

/// How gradients are taken through a stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GradMode {
    Backprop,
    Adjoint,
    AdjointSerial,
    AdjointPerStep,
    Checkpoint(usize),
}

impl FromStr for GradMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "--grad",
                format!(
                    "`{s}`: expected backprop, adjoint, adjoint-serial, adjoint-per-step or checkpoint:K (K ≥ 1)"
                ),
            )
        };
        match s {
            "backprop" => Ok(GradMode::Backprop),
            "adjoint" => Ok(GradMode::Adjoint),
            "adjoint-serial" => Ok(GradMode::AdjointSerial),
            "adjoint-per-step" => Ok(GradMode::AdjointPerStep),
            _ => {
                let k = s.strip_prefix("checkpoint:").ok_or_else(bad)?;
                match k.parse::<usize>() {
                    Ok(k) if k >= 1 => Ok(GradMode::Checkpoint(k)),
                    _ => Err(bad()),
                }
            }
        }
    }
}

impl std::fmt::Display for GradMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GradMode::Backprop => write!(f, "backprop"),
            GradMode::Adjoint => write!(f, "adjoint"),
            GradMode::AdjointSerial => write!(f, "adjoint-serial"),
            GradMode::AdjointPerStep => write!(f, "adjoint-per-step"),
            GradMode::Checkpoint(k) => write!(f, "checkpoint:{k}"),
        }
    }
}

/// The mode of stack `i` when each stack has its own: `modes[i]`, the last entry for stacks
/// beyond the slice (so `&[mode]` is one mode for every stack), backprop for an empty slice.
pub fn mode_at(modes: &[GradMode], i: usize) -> GradMode {
    modes
        .get(i)
        .or(modes.last())
        .copied()
        .unwrap_or(GradMode::Backprop)
}

/// What the forward kept for the backward.
enum Saved<const D: usize> {
    /// Backprop: the graph itself.
    Graph,
    /// Adjoint: only batch-norm statistics (x_N is the run's output).
    Adjoint(SiteStats),
    /// Per-step adjoint: every state x_0..x_steps.
    PerStep(SiteStats, Vec<Tensor<D>>),
    /// Checkpointing: the states at steps 0, k, 2k, …
    Checkpoint(usize, Vec<Tensor<D>>),
}

/// A training forward through a stack, waiting for its backward.
pub struct StackRun<const D: usize> {
    /// The stack input as given (graph-connected to the layers before).
    pub input: Tensor<D>,
    /// x_N: graph-connected under backprop, otherwise a fresh leaf that requires grad.
    pub output: Tensor<D>,
    bn: BnMode,
    /// The adjoint's steps on this thread only ([`GradMode::AdjointSerial`]).
    serial: bool,
    saved: Saved<D>,
}

impl<const D: usize> StackRun<D> {
    /// A run whose output is graph-connected to its input (backprop through the segment).
    pub fn graph(input: Tensor<D>, output: Tensor<D>, bn: BnMode) -> Self {
        Self {
            input,
            output,
            bn,
            serial: false,
            saved: Saved::Graph,
        }
    }

    /// A checkpointed run: `states` are every k-th state from the input on (graph-free), the
    /// output x_N is made a leaf that requires grad.
    pub fn checkpointed(
        input: Tensor<D>,
        x_n: Tensor<D>,
        k: usize,
        states: Vec<Tensor<D>>,
        bn: BnMode,
    ) -> Self {
        Self {
            input,
            output: x_n.autodiff().require_grad(),
            bn,
            serial: false,
            saved: Saved::Checkpoint(k, states),
        }
    }

    /// The checkpoint interval, the kept states and the BN policy of a checkpointed run.
    pub fn into_checkpoint(self) -> Option<(usize, Vec<Tensor<D>>, BnMode)> {
        match self.saved {
            Saved::Checkpoint(k, states) => Some((k, states, self.bn)),
            _ => None,
        }
    }

    /// Whether the caller's backward already covers the stack (backprop mode).
    pub fn is_graph(&self) -> bool {
        matches!(self.saved, Saved::Graph)
    }

    /// dL/dx_N from the gradients of the head's backward (None under backprop).
    pub fn output_grad(&self, grads: &Gradients) -> Option<Tensor<D>> {
        if self.is_graph() {
            return None;
        }
        self.output.grad(grads)
    }
}

/// One step's stages evaluated with a graph from a leaf at the reconstructed input, through
/// leaf views of the functions the step evaluates (`views[i]` is function n + i's).
struct StageGraph<F, const D: usize> {
    leaf: Tensor<D>,
    ks: Vec<Tensor<D>>,
    views: Vec<F>,
}

impl<F, const D: usize> StageGraph<F, D> {
    /// The value of the first stage, without its graph.
    fn first_stage(&self) -> Option<Tensor<D>> {
        self.ks.first().map(|k| k.clone().without_autodiff())
    }
}

/// Push dL/dx_0 into the layers that produced the stack input `input` (the stem): returns their
/// gradients (empty when the input depends on nothing trainable).
pub fn push_to_input<const D: usize>(input: &Tensor<D>, grad_input: Tensor<D>) -> Gradients {
    let g = like(grad_input, input).detach();
    (input.clone() * g).sum().backward()
}

/// A part of a model that a [`StackRun`] went through and that carries dL/d(output) back to
/// dL/d(input) itself: a residual [`Stack`] in any mode, or a model's own unscaled blocks
/// under checkpointing.
pub trait Segment<const D: usize> {
    /// Carry `grad_output` back through `run`, adding the segment's parameter gradients to
    /// `grads`; None when the caller's backward already did (a graph run).
    fn backward_run(
        &self,
        run: StackRun<D>,
        grad_output: Tensor<D>,
        grads: &mut GradientsParams,
    ) -> Option<Tensor<D>>;
}

impl<F: Residual<D> + ModuleDisplay, const D: usize> Segment<D> for Stack<F> {
    fn backward_run(
        &self,
        run: StackRun<D>,
        grad_output: Tensor<D>,
        grads: &mut GradientsParams,
    ) -> Option<Tensor<D>> {
        self.backward(run, grad_output, grads)
    }
}

/// After the head's backward (`back`), carry the gradient through a model's segments (its
/// stacks), last to first, and through the layers between them: every trainable parameter of
/// `model` ends up in `grads`. `runs` are in forward order, one per segment; what lies between
/// segments is an ordinary autodiff graph that ends at the previous segment's output leaf.
pub fn backward_through<M, const D: usize>(
    model: &M,
    segments: &[&dyn Segment<D>],
    runs: Vec<StackRun<D>>,
    mut back: Gradients,
    grads: &mut GradientsParams,
) where
    M: Module,
{
    let mut pending: Vec<_> = segments.iter().zip(runs).collect();
    while let Some((segment, run)) = pending.pop() {
        let g = run.output_grad(&back);
        accumulate(grads, &mut back, model);
        let Some(g) = g else { continue };
        let input = run.input.clone();
        if let Some(g0) = segment.backward_run(run, g, grads) {
            back = push_to_input(&input, g0);
        }
    }
    accumulate(grads, &mut back, model);
}

/// How well a stack's inverse steps recover its forward trajectory x_0..x_S (S steps), each
/// entry relative to ‖x_n‖ (index n = 0..S−1).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Reconstruction {
    /// ‖x̃_n − x_n‖ with x̃_n one inverse step from the true x_{n+1} (the per-step adjoint's
    /// reconstruction: errors do not accumulate).
    pub one_step: Vec<f64>,
    /// ‖x̃_n − x_n‖ with x̃_n reversed step by step from x_S (the memory-free adjoint's).
    pub chained: Vec<f64>,
    /// ‖x_{n+1} − x_n‖: how far step n moves its input (‖f_n(x_n)/N‖ for Euler).
    pub moves: Vec<f64>,
}

/// ‖a − b‖/‖b‖.
pub fn relative_distance<const D: usize>(a: Tensor<D>, b: &Tensor<D>) -> f64 {
    let norm = |t: Tensor<D>| crate::device::to_vec(&t.square().sum())[0].sqrt();
    norm(a - b.clone()) / norm(b.clone())
}

/// A scalar loss's gradients through a stack in one gradient mode.
pub struct StackGrads<const D: usize> {
    /// The loss value.
    pub loss: f64,
    /// Gradients of every trainable parameter of the stack (summed over uses when tied).
    pub params: GradientsParams,
    /// dL/dx_0.
    pub input: Tensor<D>,
}

impl<F: Module + ModuleDisplay> Stack<F> {
    /// Training forward in `mode`. Running statistics are updated here, once.
    pub fn run<const D: usize>(&self, x0: Tensor<D>, mode: GradMode, bn: BnMode) -> StackRun<D>
    where
        F: Residual<D>,
    {
        if mode == GradMode::Backprop {
            let output = self.forward(x0.clone(), bn);
            return StackRun::graph(x0, output, bn);
        }
        let mut stats = self.new_site_stats();
        let mut states = Vec::new();
        let every = match mode {
            GradMode::Checkpoint(k) => k,
            GradMode::AdjointPerStep => 1,
            _ => usize::MAX,
        };
        let mut pass = Pass {
            bn,
            phase: Phase::Forward,
            stats: Some(&mut stats),
            plain: true,
        };
        let x = x0.clone().without_autodiff();
        let x_n = self.integrate(x, 0, self.steps(), &mut pass, |n, s| {
            if n % every == 0 {
                states.push(s.clone());
            }
        });
        let saved = match mode {
            GradMode::Checkpoint(k) => Saved::Checkpoint(k, states),
            GradMode::AdjointPerStep => Saved::PerStep(stats, states),
            _ => Saved::Adjoint(stats),
        };
        StackRun {
            input: x0,
            output: x_n.autodiff().require_grad(),
            bn,
            serial: mode == GradMode::AdjointSerial,
            saved,
        }
    }

    /// Carry dL/dx_N back to dL/dx_0, adding the stack's parameter gradients to `grads`.
    /// Under backprop the caller's own backward has done this: returns None.
    pub fn backward<const D: usize>(
        &self,
        run: StackRun<D>,
        grad_output: Tensor<D>,
        grads: &mut GradientsParams,
    ) -> Option<Tensor<D>>
    where
        F: Residual<D>,
    {
        let g = grad_output.without_autodiff();
        let x_n = run.output.without_autodiff();
        let threads = !run.serial && crate::device::overlaps_host_threads(&x_n.device());
        let (bn, reuse) = (run.bn, self.reuses_first_stage::<D>(run.bn));
        match run.saved {
            Saved::Graph => None,
            Saved::Adjoint(mut stats) => {
                Some(self.adjoint(x_n, g, bn, &mut stats, None, reuse, threads, grads))
            }
            Saved::PerStep(mut stats, states) => {
                Some(self.adjoint(x_n, g, bn, &mut stats, Some(&states), false, threads, grads))
            }
            Saved::Checkpoint(k, states) => Some(self.checkpointed(k, &states, g, run.bn, grads)),
        }
    }

    /// The discrete adjoint: reverse steps from x_N (or, per step, from each stored true
    /// output), one vector-Jacobian product per step at the reconstructed state.
    ///
    /// With `threads`, two threads share the work (where that pays,
    /// [`crate::device::overlaps_host_threads`], unless [`GradMode::AdjointSerial`]; otherwise
    /// the same steps run in the same order on this thread). Neither the reversal nor the graph of a step's stages depends
    /// on the gradient, so a second thread runs them one step ahead (x̃_n, then f_n at x̃_n with
    /// a graph) while this thread backpropagates the previous step: only the backward passes
    /// stay on the critical path. On the CPU backends a step's small kernels leave a core idle
    /// much of the time, and this is where the adjoint's extra evaluations go (see the README's
    /// `bench speed` table). Memory stays O(1) in depth: at most two steps' graphs are alive.
    ///
    /// With `reuse` (see [`Self::reuses_first_stage`]), the reversal of step n−1 takes its first
    /// stage from the graph of step n, which has just evaluated the same function at x̃_n to the
    /// same value: not evaluating what was already evaluated saves one evaluation per step.
    #[allow(clippy::too_many_arguments)]
    fn adjoint<const D: usize>(
        &self,
        x_n: Tensor<D>,
        mut g: Tensor<D>,
        bn: BnMode,
        stats: &mut SiteStats,
        exact: Option<&[Tensor<D>]>,
        reuse: bool,
        threads: bool,
        grads: &mut GradientsParams,
    ) -> Tensor<D>
    where
        F: Residual<D>,
    {
        if !threads {
            for graph in self.stage_graphs(x_n, bn, stats, exact, reuse) {
                g = self.pull_stages(graph, g, grads);
            }
            return g;
        }
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel(0);
            scope.spawn(move || {
                for graph in self.stage_graphs(x_n, bn, stats, exact, reuse) {
                    if tx.send(graph).is_err() {
                        return;
                    }
                }
            });
            for graph in rx {
                g = self.pull_stages(graph, g, grads);
            }
            g
        })
    }

    /// The adjoint's gradient-free half, last step first: reverse step n (from the previous
    /// reconstruction, or from the true output x_{n+1} when `exact`) and yield step n's stage
    /// graph at the result.
    fn stage_graphs<'a, const D: usize>(
        &'a self,
        x_n: Tensor<D>,
        bn: BnMode,
        stats: &'a mut SiteStats,
        exact: Option<&'a [Tensor<D>]>,
        reuse: bool,
    ) -> impl Iterator<Item = StageGraph<F, D>> + 'a
    where
        F: Residual<D>,
    {
        let (mut x, mut first_stage) = (x_n, None);
        (0..self.steps()).rev().map(move |n| {
            if let Some(states) = exact {
                x = states[n + 1].clone();
            }
            x = self.reverse_step(n, x.clone(), bn, stats, first_stage.take());
            let graph = self.stage_graph(n, x.clone(), bn, stats);
            first_stage = graph.first_stage().filter(|_| reuse);
            graph
        })
    }

    /// The scheme's inverse step n without a graph, normalising with the statistics the
    /// forward recorded for the mirrored evaluation; `first_stage`, when given, is the value of
    /// the first stage, already evaluated.
    fn reverse_step<const D: usize>(
        &self,
        n: usize,
        x: Tensor<D>,
        bn: BnMode,
        stats: &mut SiteStats,
        mut first_stage: Option<Tensor<D>>,
    ) -> Tensor<D>
    where
        F: Residual<D>,
    {
        let stages = self.scheme.stages();
        let mut pass = Pass {
            bn,
            phase: Phase::Reconstruct,
            stats: Some(stats),
            plain: true,
        };
        self.scheme
            .inverse_step(n, self.h(), x, |stage, layer, xi| {
                if let Some(k) = first_stage.take().filter(|_| stage == 0) {
                    return k;
                }
                let site = n * stages + self.scheme.mirror_stage(stage);
                self.eval(layer, xi, &mut pass, site)
            })
    }

    /// Whether the reversal of step n−1 can take its first stage from the vector-Jacobian
    /// product of step n. It evaluates f_n at x̃_n for Heun (whose reversal of step n starts with
    /// f_{n+1} at x_{n+1}) and, for Euler, when the function is shared: the VJP's first stage
    /// exactly. The values agree without batch statistics, with `frozen` (running statistics)
    /// and with `recompute` (statistics of x̃_n in both). Not with `cached`: the reversal
    /// normalises with the statistics of the forward stage it mirrors (step n−1's second stage
    /// for Heun), which keeps Heun's reversal symmetric (third-order local error; the
    /// statistics of step n's first stage would make it second order), while the VJP uses
    /// step n's.
    fn reuses_first_stage<const D: usize>(&self, bn: BnMode) -> bool
    where
        F: Residual<D>,
    {
        let same_function = self.is_tied() || self.scheme.reach() == 1;
        let same_value = bn != BnMode::Cached || !self.functions[0].has_batch_norm();
        same_function && same_value
    }

    /// Relative error ‖x̃_0 − x_0‖/‖x_0‖ of the reversal chained from x_N (a training forward in
    /// `bn` mode, then every inverse step), the quantity behind the adjoint's gradient error.
    pub fn reconstruction_error<const D: usize>(&self, x0: Tensor<D>, bn: BnMode) -> f64
    where
        F: Residual<D>,
    {
        let r = self.reconstruction(x0, bn);
        r.chained.first().copied().unwrap_or(f64::NAN)
    }

    /// The inverse steps measured against one training forward from `x0` (`bn` mode, the
    /// statistics the adjoint would use), step by step: see [`Reconstruction`].
    pub fn reconstruction<const D: usize>(&self, x0: Tensor<D>, bn: BnMode) -> Reconstruction
    where
        F: Residual<D>,
    {
        let run = self.run(x0.without_autodiff(), GradMode::AdjointPerStep, bn);
        let Saved::PerStep(mut stats, states) = run.saved else {
            return Reconstruction::default();
        };
        let steps = self.steps();
        let one_step = (0..steps)
            .map(|n| {
                let x = self.reverse_step(n, states[n + 1].clone(), bn, &mut stats, None);
                relative_distance(x, &states[n])
            })
            .collect();
        let mut chained = vec![0.0; steps];
        let mut x = states[steps].clone();
        for n in (0..steps).rev() {
            x = self.reverse_step(n, x, bn, &mut stats, None);
            chained[n] = relative_distance(x.clone(), &states[n]);
        }
        let moves = (0..steps)
            .map(|n| relative_distance(states[n + 1].clone(), &states[n]))
            .collect();
        Reconstruction {
            one_step,
            chained,
            moves,
        }
    }

    /// The stages of step n recomputed with a graph from a leaf at `x`, ready for
    /// [`Self::pull_stages`]. The functions enter through leaf views
    /// ([`crate::params::leaf_view`]), so this graph shares no node with the previous step's.
    fn stage_graph<const D: usize>(
        &self,
        n: usize,
        x: Tensor<D>,
        bn: BnMode,
        stats: &mut SiteStats,
    ) -> StageGraph<F, D>
    where
        F: Residual<D>,
    {
        let leaf = x.autodiff().require_grad();
        // One view per evaluated function, even when tied: their gradients add up by parameter
        // id in `pull_stages`, as uses of one parameter do.
        let views: Vec<F> = (n..=n + self.scheme.reach())
            .map(|l| leaf_view(self.function(l)))
            .collect();
        let mut pass = Pass {
            bn,
            phase: Phase::Vjp,
            stats: Some(stats),
            plain: false,
        };
        let stages = self.scheme.stages();
        let ks = self
            .scheme
            .stage_values(n, self.h(), leaf.clone(), |stage, layer, xi| {
                Self::eval_with(&views[layer - n], xi, &mut pass, n * stages + stage)
            });
        StageGraph { leaf, ks, views }
    }

    /// Backpropagate `g` through step n, whose stages are on `graph`: returns the gradient at
    /// the step's input. As x_{n+1} = x_n + h Σ b_i k_i, the vector-Jacobian product is g plus
    /// the gradient of Σ_i ⟨k_i, h b_i g⟩: only the stages go on the graph, not the step's sums.
    fn pull_stages<const D: usize>(
        &self,
        graph: StageGraph<F, D>,
        g: Tensor<D>,
        grads: &mut GradientsParams,
    ) -> Tensor<D>
    where
        F: Residual<D>,
    {
        let StageGraph { leaf, ks, views } = graph;
        let h = self.h();
        let weights = self.scheme.tableau().b;
        let seed = like(g.clone(), &leaf);
        let s = ks
            .into_iter()
            .zip(weights)
            .map(|(k, b)| crate::ops::scaled_dot(k, seed.clone(), h * b))
            .reduce(|a, b| a + b);
        let Some(s) = s else { return g };
        let mut back = s.backward();
        for f in &views {
            accumulate(grads, &mut back, f);
        }
        match leaf.grad_remove(&mut back) {
            Some(gx) => g + gx.without_autodiff(),
            None => g,
        }
    }

    /// Exact gradients by recomputing each checkpointed segment with a graph.
    fn checkpointed<const D: usize>(
        &self,
        k: usize,
        states: &[Tensor<D>],
        mut g: Tensor<D>,
        bn: BnMode,
        grads: &mut GradientsParams,
    ) -> Tensor<D>
    where
        F: Residual<D>,
    {
        let steps = self.steps();
        for (s, x) in states.iter().enumerate().rev() {
            let (from, to) = (s * k, ((s + 1) * k).min(steps));
            if from >= to {
                continue;
            }
            let leaf = x.clone().autodiff().require_grad();
            let mut pass = Pass {
                bn,
                phase: Phase::Replay,
                stats: None,
                plain: false,
            };
            let y = self.integrate(leaf.clone(), from, to, &mut pass, |_, _| {});
            g = self.pull_back(y, g, &leaf, from..to + self.scheme.reach(), grads);
        }
        g
    }

    /// One backward from `y` seeded with `g`: collects the gradients of the functions of
    /// `layers` into `grads` and returns the gradient at `leaf`.
    fn pull_back<const D: usize>(
        &self,
        y: Tensor<D>,
        g: Tensor<D>,
        leaf: &Tensor<D>,
        layers: std::ops::Range<usize>,
        grads: &mut GradientsParams,
    ) -> Tensor<D> {
        let mut back = (y * g.clone().autodiff()).sum().backward();
        self.collect(&mut back, layers, grads);
        leaf.grad_remove(&mut back)
            .unwrap_or_else(|| g.zeros_like())
            .without_autodiff()
    }

    /// Move the gradients of the functions of `layers` out of one backward pass into `grads`.
    fn collect(
        &self,
        back: &mut Gradients,
        layers: std::ops::Range<usize>,
        grads: &mut GradientsParams,
    ) {
        if self.functions.len() == 1 {
            accumulate(grads, back, &self.functions[0]);
        } else {
            for l in layers.take_while(|&l| l < self.depth) {
                accumulate(grads, back, &self.functions[l]);
            }
        }
    }

    /// Gradients of `loss(x_N)` with respect to the stack's parameters and its input `x0`.
    pub fn loss_grads<const D: usize>(
        &self,
        x0: Tensor<D>,
        mode: GradMode,
        bn: BnMode,
        loss: impl Fn(Tensor<D>) -> Tensor<1>,
    ) -> StackGrads<D>
    where
        F: Residual<D>,
    {
        let leaf = x0.detach().autodiff().require_grad();
        let run = self.run(leaf.clone(), mode, bn);
        let value = loss(run.output.clone());
        let loss_value = crate::device::to_vec(&value)
            .first()
            .copied()
            .unwrap_or(f64::NAN);
        let mut back = value.backward();
        let mut params = GradientsParams::new();
        if run.is_graph() {
            accumulate(&mut params, &mut back, self);
            let input = leaf.grad(&back).unwrap_or_else(|| leaf.zeros_like());
            return StackGrads {
                loss: loss_value,
                params,
                input: input.without_autodiff(),
            };
        }
        let g_out = run
            .output_grad(&back)
            .unwrap_or_else(|| run.output.zeros_like().without_autodiff());
        let input = self
            .backward(run, g_out, &mut params)
            .unwrap_or_else(|| leaf.zeros_like().without_autodiff());
        StackGrads {
            loss: loss_value,
            params,
            input,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{Placement, Precision};
    use crate::family::Family;
    use crate::metrics::gradient_error;
    use crate::params::flat_grads;
    use crate::residual::{ConvBlock, ConvBlockConfig};
    use crate::rng::Rng;
    use crate::scheme::Scheme;

    /// Adjoint gradients of `mean(x_N²)` (parameters, then dL/dx_0), with or without reusing
    /// first stages.
    fn adjoint_grads(
        stack: &Stack<ConvBlock>,
        x: &Tensor<4>,
        bn: BnMode,
        reuse: bool,
        threads: bool,
    ) -> Vec<(String, Vec<f64>)> {
        let run = stack.run(x.clone(), GradMode::Adjoint, bn);
        let x_n = run.output.clone().without_autodiff();
        let g = x_n.clone() * (2.0 / x_n.shape().num_elements() as f64);
        let Saved::Adjoint(mut stats) = run.saved else {
            panic!("an adjoint run saves statistics")
        };
        let mut grads = GradientsParams::new();
        let g0 = stack.adjoint(x_n, g, bn, &mut stats, None, reuse, threads, &mut grads);
        let mut flat = flat_grads(stack, &grads);
        flat.push(("input".into(), crate::device::to_vec(&g0)));
        flat
    }

    fn conv_stack(p: &Placement, scheme: Scheme) -> Stack<ConvBlock> {
        let cfg = ConvBlockConfig {
            channels: 2,
            zero_init: false,
        };
        let fs = Family::Smooth.functions(6, &mut Rng::new(1), |r| cfg.init(p, r));
        Stack::new(fs, scheme).unwrap()
    }

    /// The reversal and the stage graphs run on a second thread, the backward passes here:
    /// repeated runs give the numbers of the one-thread adjoint bit for bit, for untied, Heun
    /// (consecutive steps share a function) and tied stacks (every step shares it).
    #[test]
    fn threaded_adjoint_gives_the_serial_numbers() {
        let p = Placement::flex(Precision::F64);
        let x = p.tensor(Rng::new(4).normals(4 * 2 * 5 * 5), [4, 2, 5, 5]);
        let cfg = ConvBlockConfig {
            channels: 2,
            zero_init: false,
        };
        let tied = || Stack::tied(cfg.init(&p, &mut Rng::new(2)), 6, Scheme::Heun).unwrap();
        for bn in [BnMode::Cached, BnMode::Frozen] {
            for (name, make) in [
                (
                    "euler",
                    &(|| conv_stack(&p, Scheme::Euler)) as &dyn Fn() -> Stack<ConvBlock>,
                ),
                ("heun", &|| conv_stack(&p, Scheme::Heun)),
                ("tied heun", &tied),
            ] {
                let reuse = make().reuses_first_stage::<4>(bn);
                let serial = adjoint_grads(&make(), &x, bn, reuse, false);
                for _ in 0..3 {
                    let threaded = adjoint_grads(&make(), &x, bn, reuse, true);
                    assert_eq!(serial, threaded, "{name} {bn}");
                }
            }
        }
    }

    #[test]
    fn grad_modes_round_trip_and_bad_names_name_the_flag() {
        for m in [
            GradMode::Backprop,
            GradMode::Adjoint,
            GradMode::AdjointSerial,
            GradMode::AdjointPerStep,
            GradMode::Checkpoint(4),
        ] {
            assert_eq!(m.to_string().parse::<GradMode>().ok(), Some(m));
        }
        for bad in ["adjoint-threads", "checkpoint:0", ""] {
            let e = bad.parse::<GradMode>().err().map(|e| e.to_string());
            assert!(e.is_some_and(|e| e.contains("--grad")), "{bad}");
        }
    }

    /// Through the public API: `adjoint-serial` gives the default adjoint's gradients exactly.
    #[test]
    fn adjoint_serial_equals_adjoint() {
        let p = Placement::flex(Precision::F64);
        let x = p.tensor(Rng::new(4).normals(4 * 2 * 5 * 5), [4, 2, 5, 5]);
        let stack = conv_stack(&p, Scheme::Heun);
        let grads = |mode| {
            let r = stack.loss_grads(x.clone(), mode, BnMode::Cached, |y| y.square().mean());
            (
                r.loss,
                flat_grads(&stack, &r.params),
                crate::device::to_vec(&r.input),
            )
        };
        assert_eq!(grads(GradMode::Adjoint), grads(GradMode::AdjointSerial));
    }

    #[test]
    fn reusing_first_stages_changes_nothing() {
        let p = Placement::flex(Precision::F64);
        let cfg = ConvBlockConfig {
            channels: 2,
            zero_init: false,
        };
        let x = p.tensor(Rng::new(4).normals(4 * 2 * 5 * 5), [4, 2, 5, 5]);
        let tied = Stack::tied(cfg.init(&p, &mut Rng::new(2)), 6, Scheme::Euler).unwrap();
        let (full, reused) = (false, true);
        for (name, stack) in [("heun", conv_stack(&p, Scheme::Heun)), ("tied euler", tied)] {
            assert!(!stack.reuses_first_stage::<4>(BnMode::Cached), "{name}");
            for bn in [BnMode::Frozen, BnMode::Recompute] {
                assert!(stack.reuses_first_stage::<4>(bn), "{name} {bn}");
                let e = gradient_error(
                    &adjoint_grads(&stack, &x, bn, full, true),
                    &adjoint_grads(&stack, &x, bn, reused, true),
                )
                .relative_error;
                assert!(e < 1e-12, "{name} {bn}: {e}");
            }
            // Under `cached` the two evaluations normalise with different statistics.
            let e = gradient_error(
                &adjoint_grads(&stack, &x, BnMode::Cached, full, true),
                &adjoint_grads(&stack, &x, BnMode::Cached, reused, true),
            )
            .relative_error;
            assert!(e > 1e-9, "{name}");
        }
        assert!(!conv_stack(&p, Scheme::Euler).reuses_first_stage::<4>(BnMode::Frozen));
    }
}
