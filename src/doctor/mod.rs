//! `doctor`: is the memory-free adjoint safe for this model, on this data? (issue 10, design
//! notes "gradient-error report" and "hybrid policy").
//!
//! For one real batch and every residual stage of a [`Model`] it measures what the paper says
//! the adjoint's accuracy depends on, then recommends a gradient mode per stage:
//!
//! - the stage's form: a depth-scaled stack `x + f(x)/N` of conv blocks or of the authors'
//!   bottlenecks (invertible by the scheme's inverse step), or He et al.'s unscaled
//!   `relu(x + g(x))` blocks, with the fraction of units their post-addition ReLU clips
//!   (whatever it clips is lost to any reversal);
//! - N, how far a step moves its input (‖f_n(x_n)/N‖/‖x_n‖; ‖g(x)‖/‖x‖ for unscaled blocks)
//!   and the weights' smoothness over depth, max_n ‖θ_{n+1} − θ_n‖·N / mean_n ‖θ_n‖ (0 when
//!   tied): Heun's error is second order only for smooth weights (paper.md §2, claim 4);
//! - the one-step and chained reconstruction errors of the Euler and Heun inverse steps
//!   ([`crate::grad::Reconstruction`]);
//! - the adjoint-vs-backprop gradient error of the stage's parameters on the model's real loss
//!   (the stage in adjoint mode, every other stage in backprop), per tensor as in the authors'
//!   `compare_gradients.py` ([`crate::metrics`]: median and max of `mean((g_b−g_a)²)/mean(g_b²)`,
//!   `bias` tensors skipped, smallest cosine);
//! - the measured activation memory of one training step of the stage under backprop, the
//!   adjoint and `checkpoint:K`, K = round(√N) ([`crate::bench::step_activation_bytes`]).
//!
//! Verdict ([`verdict`]): `adjoint` where the gradient error of the stage's own scheme is
//! under the tolerance, `adjoint` with Heun where only Heun's is, `checkpoint:K` otherwise and
//! for every unscaled ReLU stage; `backprop` for a one-step stage, or where the recommendation's
//! measured memory is not below backprop's (nothing to save).
//!
//! Unscaled ReLU stages get no adjoint gradient error: the adjoint of `x + g(x)` is the
//! gradient of another network (one without the ReLUs), so the number would measure the
//! change of model, not the reversal. Their reconstruction numbers say why: the inverse step
//! `x̃_n = x_{n+1} − g_n(x_{n+1})` (Heun: the trapezoid with g_n at both ends) cannot bring back
//! what the ReLU clipped.

mod original;
mod output;

pub use output::{table, write};

use crate::bench::step_activation_bytes;
use crate::grad::{GradMode, Reconstruction};
use crate::metrics::{gradient_error, GradientError};
use crate::models::{Model, StageView};
use crate::norm::BnMode;
use crate::params::{flat_grads, flat_values, independent_copy};
use crate::residual::Residual;
use crate::scheme::Scheme;
use crate::stack::Stack;
use crate::train::{step_gradients_modes, DeviceBatch};
use crate::{Error, Result};
use burn::module::ModuleDisplay;
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Default tolerance on the adjoint's gradient error: the largest per-tensor
/// `mean((g_b−g_a)²)/mean(g_b²)` of a stage. 1e-2 is a relative RMS error of 10 % on the worst
/// tensor (cosine ≳ 0.995), below the noise of a mini-batch gradient, which SGD tolerates;
/// fixed before any model was measured, not fitted to an outcome.
pub const DEFAULT_TOL: f64 = 1e-2;

/// What `doctor` measures with.
#[derive(Debug, Clone, Copy)]
pub struct DoctorConfig {
    /// Gradient-error tolerance (see [`DEFAULT_TOL`]).
    pub tol: f64,
    /// Batch-norm policy of the training the verdict is for.
    pub bn: BnMode,
    /// Repetitions of each memory measurement (the largest peak is kept).
    pub memory_reps: usize,
}

impl Default for DoctorConfig {
    fn default() -> Self {
        Self {
            tol: DEFAULT_TOL,
            bn: BnMode::Cached,
            memory_reps: 2,
        }
    }
}

/// Checks a gradient-error tolerance given with `flag`.
pub fn check_tol(tol: f64, flag: &str) -> Result<()> {
    if tol > 0.0 && tol.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(
            flag,
            format!("{tol}: the gradient-error tolerance must be positive and finite"),
        ))
    }
}

/// The checkpoint interval doctor and `--grad auto` use for `steps` steps: round(√steps) ≥ 1,
/// which minimises the O(steps/K + K) states and step graphs held.
pub fn checkpoint_k(steps: usize) -> usize {
    ((steps as f64).sqrt().round() as usize).max(1)
}

/// Summary of a gradient error (one stage, one scheme).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GradSummary {
    pub median_rel_sq_error: f64,
    pub max_rel_sq_error: f64,
    pub min_cosine: f64,
}

impl From<&GradientError> for GradSummary {
    fn from(e: &GradientError) -> Self {
        Self {
            median_rel_sq_error: e.median_rel_sq_error(),
            max_rel_sq_error: e.max_rel_sq_error,
            min_cosine: e.min_cosine,
        }
    }
}

/// Reconstruction and gradient error with one scheme's inverse step.
#[derive(Debug, Clone, Serialize)]
pub struct SchemeReport {
    pub scheme: Scheme,
    /// Largest one-step relative reconstruction error over the steps.
    pub one_step_max: f64,
    /// Largest chained relative reconstruction error over the steps.
    pub chained_max: f64,
    /// The per-step errors.
    pub reconstruction: Reconstruction,
    /// Adjoint vs backprop (None for unscaled ReLU stages, see the module docs).
    pub gradient: Option<GradSummary>,
}

/// Measured activation memory of one training step of the stage (None: not measurable here,
/// i.e. without the counting allocator, or not applicable).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageMemory {
    pub backprop: Option<usize>,
    pub adjoint: Option<usize>,
    pub checkpoint: Option<usize>,
    /// K of the `checkpoint:K` measured.
    pub k: usize,
}

/// Mean and max of a per-step quantity.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MeanMax {
    pub mean: f64,
    pub max: f64,
}

impl MeanMax {
    fn of(v: &[f64]) -> Self {
        let n = v.len().max(1) as f64;
        Self {
            mean: v.iter().sum::<f64>() / n,
            max: v.iter().copied().fold(0.0, f64::max),
        }
    }
}

/// The stage's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Form {
    /// `x + f(x)/N`, integrated by the scheme.
    Scaled,
    /// He et al.'s unscaled `relu(x + g(x))`.
    PostRelu,
}

/// A recommended gradient mode for one stage, with the reason in one line.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// [`Verdict::label`]: what to pass to `--grad` (and `--scheme` when in parentheses).
    pub recommendation: String,
    pub mode: GradMode,
    /// The scheme to train with (differs from the model's when Heun is recommended).
    pub scheme: Scheme,
    pub reason: String,
    /// Activation memory of the recommendation and what it saves over backprop (measured).
    pub memory: Option<usize>,
    pub saves: Option<i64>,
}

/// `mode`, with the scheme in parentheses when it is not the stage's own.
fn label(mode: GradMode, scheme: Scheme, own: Scheme) -> String {
    if scheme != own {
        format!("{mode} ({scheme})")
    } else {
        mode.to_string()
    }
}

impl Verdict {
    /// `adjoint`, `adjoint (heun)`, `checkpoint:K` or `backprop`.
    pub fn label(&self, own: Scheme) -> String {
        label(self.mode, self.scheme, own)
    }
}

/// Everything measured on one stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// 1-based stage number among the residual stages.
    pub stage: usize,
    pub form: Form,
    /// Residual functions (blocks) N.
    pub n: usize,
    /// The stage's own scheme (Euler for unscaled blocks).
    pub scheme: Scheme,
    pub tied: bool,
    /// Fraction of units the post-addition ReLU sets to 0, over the blocks (ReLU stages).
    pub relu_clipped: Option<MeanMax>,
    /// ‖x_{n+1} − x_n‖/‖x_n‖ for scaled stacks (‖f(x)/N‖/‖x‖ with Euler); ‖g(x)‖/‖x‖ for
    /// unscaled blocks.
    pub moves: MeanMax,
    /// max_n ‖θ_{n+1} − θ_n‖·N / mean_n ‖θ_n‖.
    pub smoothness: f64,
    pub euler: SchemeReport,
    /// None where Heun cannot run (a one-function stack).
    pub heun: Option<SchemeReport>,
    pub memory: StageMemory,
    pub verdict: Verdict,
}

/// Doctor's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was diagnosed (model and data), for the output's header.
    pub model: String,
    pub data: String,
    pub batch: usize,
    pub bn: BnMode,
    pub tol: f64,
    pub stages: Vec<StageReport>,
}

/// Measures every residual stage of `model` on `batch` (see the module docs). The model is
/// not changed (doctor works on an independent copy). Errors on a bad tolerance or a
/// non-finite loss or gradient.
pub fn diagnose(
    model: &Model,
    batch: &DeviceBatch,
    cfg: &DoctorConfig,
) -> Result<Vec<StageReport>> {
    check_tol(cfg.tol, "--tol")?;
    let model = independent_copy(model);
    // Per scheme, every stack's gradient error (None: a stack too short for Heun).
    let errors = [Scheme::Euler, Scheme::Heun].map(|scheme| match model.with_scheme(scheme) {
        Ok(m) => stage_gradient_errors(&m, batch, cfg.bn).map(Some),
        Err(_) => Ok(None),
    });
    let [euler, heun] = errors;
    let errors = [euler?, heun?];
    let mut reports = Vec::new();
    let mut scaled = 0;
    for (i, (view, x0)) in model
        .stage_inputs(batch.images.clone(), cfg.bn)
        .into_iter()
        .enumerate()
    {
        crate::device::check_finite(&x0, &format!("the input of stage {}", i + 1))?;
        let report = match view {
            StageView::Scaled(stack) => {
                scaled += 1;
                diagnose_stack(stack, x0, stack_errors(&errors, scaled - 1), cfg)
            }
            StageView::Bottleneck(stack) => {
                scaled += 1;
                diagnose_stack(stack, x0, stack_errors(&errors, scaled - 1), cfg)
            }
            StageView::Original(blocks) => original::diagnose(blocks, x0, cfg),
        };
        reports.push(StageReport {
            stage: i + 1,
            ..report
        });
    }
    Ok(reports)
}

/// Stack `i`'s gradient errors with Euler and Heun, from both schemes' [`stage_gradient_errors`].
fn stack_errors(errors: &[Option<Vec<GradientError>>; 2], i: usize) -> [Option<&GradientError>; 2] {
    errors.each_ref().map(|e| e.as_ref().map(|e| &e[i]))
}

/// One depth-scaled stack (of conv blocks or bottlenecks) with its input `x0` and its gradient
/// errors with Euler and Heun (from [`stage_gradient_errors`]).
fn diagnose_stack<F: Residual<4> + ModuleDisplay>(
    stack: &Stack<F>,
    x0: Tensor<4>,
    errors: [Option<&GradientError>; 2],
    cfg: &DoctorConfig,
) -> StageReport {
    let own = stack.scheme;
    let measure = |scheme: Scheme, error: Option<&GradientError>| {
        let s = stack.clone().with_scheme(scheme).ok()?;
        let r = s.reconstruction(x0.clone(), cfg.bn);
        Some(scheme_report(scheme, r, error.map(GradSummary::from)))
    };
    let [euler_error, heun_error] = errors;
    let euler = measure(Scheme::Euler, euler_error)
        .unwrap_or_else(|| unreachable!("Euler integrates any stack"));
    let heun = measure(Scheme::Heun, heun_error);
    let own_report = if own == Scheme::Heun {
        heun.as_ref()
    } else {
        Some(&euler)
    };
    let moves = own_report.map_or(MeanMax::of(&[]), |r| MeanMax::of(&r.reconstruction.moves));
    let k = checkpoint_k(stack.steps());
    let mem = |s: &Stack<F>, mode| step_activation_bytes(s, &x0, mode, cfg.bn, cfg.memory_reps);
    let memory = StageMemory {
        backprop: mem(stack, GradMode::Backprop),
        adjoint: mem(stack, GradMode::Adjoint),
        checkpoint: mem(stack, GradMode::Checkpoint(k)),
        k,
    };
    let err = |r: Option<&SchemeReport>| r.and_then(|r| r.gradient).map(|g| g.max_rel_sq_error);
    let mut v = verdict(
        own,
        stack.depth,
        err(own_report),
        err(heun.as_ref()),
        k,
        cfg.tol,
    );
    v.memory = match (v.mode, v.scheme == own) {
        (GradMode::Backprop, _) => memory.backprop,
        (GradMode::Checkpoint(_), _) => memory.checkpoint,
        (_, true) => memory.adjoint,
        (_, false) => stack
            .clone()
            .with_scheme(v.scheme)
            .ok()
            .and_then(|s| mem(&s, GradMode::Adjoint)),
    };
    let v = backprop_unless_it_saves(v, memory.backprop, own);
    StageReport {
        stage: 0,
        form: Form::Scaled,
        n: stack.depth,
        scheme: own,
        tied: stack.is_tied(),
        relu_clipped: None,
        moves,
        smoothness: smoothness(&stack.functions, stack.depth),
        euler,
        heun,
        memory,
        verdict: v,
    }
}

fn scheme_report(scheme: Scheme, r: Reconstruction, gradient: Option<GradSummary>) -> SchemeReport {
    SchemeReport {
        scheme,
        one_step_max: MeanMax::of(&r.one_step).max,
        chained_max: MeanMax::of(&r.chained).max,
        reconstruction: r,
        gradient,
    }
}

/// `v` with what it saves over backprop's measured `backprop` bytes; backprop itself where
/// the measured memory of `v` is not below backprop's (a stage too small for the adjoint's or
/// checkpointing's fixed costs to pay: why choose an approximate or slower gradient for
/// nothing).
fn backprop_unless_it_saves(mut v: Verdict, backprop: Option<usize>, own: Scheme) -> Verdict {
    let (Some(b), Some(m)) = (backprop, v.memory) else {
        return v;
    };
    v.saves = Some(b as i64 - m as i64);
    if v.mode == GradMode::Backprop || v.saves > Some(0) {
        return v;
    }
    let mib = |b: Option<usize>| b.unwrap_or(0) as f64 / (1024.0 * 1024.0);
    Verdict {
        recommendation: GradMode::Backprop.to_string(),
        reason: format!(
            "{}; but {} saves no memory here ({:.2} vs {:.2} MiB measured): backprop",
            v.reason,
            v.label(own),
            mib(v.memory),
            mib(backprop)
        ),
        mode: GradMode::Backprop,
        scheme: own,
        memory: backprop,
        saves: Some(0),
    }
}

/// The weights' smoothness over depth: max_n ‖θ_{n+1} − θ_n‖·N / mean_n ‖θ_n‖ over the
/// distinct functions (0 for a single, tied function).
pub fn smoothness<M: burn::module::Module>(functions: &[M], n: usize) -> f64 {
    if functions.len() < 2 {
        return 0.0;
    }
    let thetas: Vec<Vec<f64>> = functions.iter().map(flat_values).collect();
    let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
    let mean = thetas
        .iter()
        .map(|t| norm(&mut t.iter().copied()))
        .sum::<f64>()
        / thetas.len() as f64;
    let jump = thetas
        .windows(2)
        .map(|w| norm(&mut w[0].iter().zip(&w[1]).map(|(a, b)| b - a)))
        .fold(0.0, f64::max);
    if mean > 0.0 {
        jump * n as f64 / mean
    } else {
        0.0
    }
}

/// Adjoint vs backprop gradients of each stack's parameters on the model's real loss: entry i
/// compares stack i (of [`Model::stack_depths`]: conv stacks, then bottleneck stacks) in
/// adjoint mode, every other stack in backprop, against backprop everywhere (one backprop
/// step, then one step per stack).
pub fn stage_gradient_errors(
    model: &Model,
    batch: &DeviceBatch,
    bn: BnMode,
) -> Result<Vec<GradientError>> {
    let backprop = finite_step(model, batch, &[GradMode::Backprop], bn)?;
    (0..model.stack_depths().len())
        .map(|i| stack_gradient_error(model, batch, bn, i, &backprop))
        .collect()
}

/// The adjoint's gradient error on stack `i` alone (see [`stage_gradient_errors`]).
pub fn stack_gradient_error(
    model: &Model,
    batch: &DeviceBatch,
    bn: BnMode,
    i: usize,
    backprop: &GradientsParams,
) -> Result<GradientError> {
    let mut modes = vec![GradMode::Backprop; model.stack_depths().len()];
    modes[i] = GradMode::Adjoint;
    let adjoint = finite_step(model, batch, &modes, bn)?;
    Ok(gradient_error(
        &stack_grads(model, backprop, i)?,
        &stack_grads(model, &adjoint, i)?,
    ))
}

/// The gradients of one training step in `modes`, refused when its loss is not finite.
pub fn finite_step(
    model: &Model,
    batch: &DeviceBatch,
    modes: &[GradMode],
    bn: BnMode,
) -> Result<GradientsParams> {
    let step = step_gradients_modes(model, batch, modes, bn);
    match step.loss.is_finite() {
        true => Ok(step.grads),
        false => Err(Error::NonFinite {
            what: "the loss of doctor's batch".into(),
        }),
    }
}

/// Stack `i`'s parameter gradients in `grads`, refused when one is not finite.
fn stack_grads(
    model: &Model,
    grads: &GradientsParams,
    i: usize,
) -> Result<Vec<(String, Vec<f64>)>> {
    let conv = model.stacks();
    let g = match conv.get(i) {
        Some(stack) => flat_grads(*stack, grads),
        None => flat_grads(model.bottleneck_stacks()[i - conv.len()], grads),
    };
    match g.iter().find(|(_, v)| v.iter().any(|x| !x.is_finite())) {
        Some((name, _)) => Err(Error::NonFinite {
            what: format!("the gradient of stack {} `{name}`", i + 1),
        }),
        None => Ok(g),
    }
}

/// [`smoothness`] of stack `i` (of [`Model::stack_depths`]) of `model`.
pub fn stack_smoothness(model: &Model, i: usize) -> f64 {
    let conv = model.stacks();
    match conv.get(i) {
        Some(s) => smoothness(&s.functions, s.depth),
        None => {
            let s = model.bottleneck_stacks()[i - conv.len()];
            smoothness(&s.functions, s.depth)
        }
    }
}

/// The verdict for a scaled stack of `n` functions integrated by `own`, from the largest
/// per-tensor gradient error with its own scheme and with Heun (None: not measured).
pub fn verdict(
    own: Scheme,
    n: usize,
    own_err: Option<f64>,
    heun_err: Option<f64>,
    k: usize,
    tol: f64,
) -> Verdict {
    let make = |mode: GradMode, scheme, reason: String| Verdict {
        recommendation: label(mode, scheme, own),
        mode,
        scheme,
        reason,
        memory: None,
        saves: None,
    };
    let fmt = |e: Option<f64>| e.map_or("n/a".to_string(), |e| format!("{e:.2e}"));
    let under = |e: Option<f64>| e.is_some_and(|e| e < tol);
    if own.steps(n) < 2 {
        return make(
            GradMode::Backprop,
            own,
            format!("N = {n} gives one step: nothing to save"),
        );
    }
    if under(own_err) {
        return make(
            GradMode::Adjoint,
            own,
            format!(
                "adjoint gradient error {} < tol {tol:.0e} with {own}: safe",
                fmt(own_err)
            ),
        );
    }
    if own == Scheme::Euler && under(heun_err) {
        return make(
            GradMode::Adjoint,
            Scheme::Heun,
            format!(
                "Euler's gradient error {} ≥ tol {tol:.0e}, Heun's {} < tol: train with --scheme heun",
                fmt(own_err),
                fmt(heun_err)
            ),
        );
    }
    make(
        GradMode::Checkpoint(k),
        own,
        format!(
            "adjoint gradient error {} (Heun {}) ≥ tol {tol:.0e}: not safe; checkpointing is exact",
            fmt(own_err),
            fmt(heun_err)
        ),
    )
}

/// `--grad auto`'s choice for one stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageChoice {
    pub mode: GradMode,
    /// The measured largest per-tensor gradient error of the adjoint.
    pub max_rel_sq_error: f64,
}

/// The hybrid policy: per stack of `model`, the adjoint where its measured gradient error on
/// `batch` is under `tol`, `checkpoint:K` (K = round(√steps)) elsewhere. Measured on an
/// independent copy, so the model's running statistics are not touched.
pub fn auto_modes(
    model: &Model,
    batch: &DeviceBatch,
    bn: BnMode,
    tol: f64,
) -> Result<Vec<StageChoice>> {
    let model = independent_copy(model);
    let errors = stage_gradient_errors(&model, batch, bn)?;
    let choices = model.stacks().into_iter().zip(errors).map(|(stack, e)| {
        let e = e.max_rel_sq_error;
        let mode = if e < tol {
            GradMode::Adjoint
        } else {
            GradMode::Checkpoint(checkpoint_k(stack.steps()))
        };
        StageChoice {
            mode,
            max_rel_sq_error: e,
        }
    });
    Ok(choices.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_tolerance() {
        let v = |own, e, h| verdict(own, 16, e, h, 4, 1e-2).label(own);
        assert_eq!(v(Scheme::Euler, Some(1e-3), Some(1e-4)), "adjoint");
        assert_eq!(v(Scheme::Euler, Some(0.5), Some(1e-4)), "adjoint (heun)");
        assert_eq!(v(Scheme::Euler, Some(0.5), Some(0.2)), "checkpoint:4");
        assert_eq!(v(Scheme::Heun, Some(0.5), Some(0.5)), "checkpoint:4");
        assert_eq!(v(Scheme::Euler, None, None), "checkpoint:4");
        assert_eq!(v(Scheme::Euler, Some(f64::NAN), None), "checkpoint:4");
        assert_eq!(
            verdict(Scheme::Euler, 1, Some(0.0), None, 1, 1e-2).label(Scheme::Euler),
            "backprop"
        );
        assert_eq!(checkpoint_k(64), 8);
        assert_eq!(checkpoint_k(2), 1);
        assert!(check_tol(0.0, "--tol").is_err() && check_tol(f64::NAN, "--tol").is_err());
    }
}
