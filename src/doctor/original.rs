//! Doctor on He et al.'s unscaled `relu(x + g(x))` blocks: how much the ReLU clips, how badly
//! the inverse steps of `x + g(x)` recover the true trajectory, and the memory of backprop and
//! of checkpointing them (the trainer's own `checkpoint:K` for `--original` models).

use super::{
    backprop_unless_it_saves, checkpoint_k, scheme_report, smoothness, DoctorConfig, Form, MeanMax,
    StageMemory, StageReport, Verdict,
};
use crate::device::to_vec;
use crate::grad::{backward_through, relative_distance, GradMode, Reconstruction, Segment};
use crate::memory;
use crate::models::{original_run, BasicBlock};
use crate::norm::{BnMode, Norm, PackedStats, Phase};
use crate::params::plain_view;
use crate::scheme::Scheme;
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

/// The training forward through the blocks, graph-free, with what each block recorded.
struct Trajectory {
    /// x_0..x_N.
    states: Vec<Tensor<4>>,
    /// Batch statistics of each block's evaluation (read back by the reversal under `cached`).
    stats: Vec<PackedStats>,
    /// Fraction of units each block's final ReLU set to 0.
    clipped: Vec<f64>,
    /// ‖g_n(x_n)‖/‖x_n‖.
    moves: Vec<f64>,
}

fn forward(blocks: &[BasicBlock], x0: Tensor<4>, bn: BnMode) -> Trajectory {
    let mut t = Trajectory {
        states: vec![x0],
        stats: vec![None; blocks.len()],
        clipped: Vec::new(),
        moves: Vec::new(),
    };
    for (b, store) in blocks.iter().zip(&mut t.stats) {
        let x = t
            .states
            .last()
            .cloned()
            .unwrap_or_else(|| unreachable!("x_0 is there"));
        let pre = plain_view(b)
            .pre_activation(x.clone(), &mut Norm::new(bn, Phase::Forward, Some(store)));
        let values = to_vec(&pre);
        let negative = values.iter().filter(|v| **v < 0.0).count();
        t.clipped.push(negative as f64 / values.len().max(1) as f64);
        // pre − x is g(x): the shortcut of a block after a stage's first is the identity.
        t.moves.push(relative_distance(pre.clone(), &x));
        t.states.push(burn::tensor::activation::relu(pre));
    }
    t
}

/// The scheme's inverse step of block n's `x + g_n(x)` at `y` (unit step: N·g_n as f with step
/// 1/N), normalising as the adjoint would (`cached`: the forward's statistics of block n).
fn inverse(
    block: &BasicBlock,
    scheme: Scheme,
    y: Tensor<4>,
    bn: BnMode,
    stats: &mut PackedStats,
) -> Tensor<4> {
    let block = plain_view(block);
    scheme.inverse_step(0, 1.0, y, |_, _, x| {
        block.residual(x, &mut Norm::new(bn, Phase::Reconstruct, Some(&mut *stats)))
    })
}

/// One-step and chained errors of `scheme`'s inverse steps on the true trajectory.
fn reconstruction(
    blocks: &[BasicBlock],
    t: &mut Trajectory,
    scheme: Scheme,
    bn: BnMode,
) -> Reconstruction {
    let n = blocks.len();
    let s = &t.states;
    let one_step = (0..n)
        .map(|i| {
            relative_distance(
                inverse(&blocks[i], scheme, s[i + 1].clone(), bn, &mut t.stats[i]),
                &s[i],
            )
        })
        .collect();
    let mut chained = vec![0.0; n];
    let mut x = s[n].clone();
    for i in (0..n).rev() {
        x = inverse(&blocks[i], scheme, x, bn, &mut t.stats[i]);
        chained[i] = relative_distance(x.clone(), &s[i]);
    }
    Reconstruction {
        one_step,
        chained,
        moves: t.moves.clone(),
    }
}

/// One training step through the blocks from `x0` (loss mean(x_N²)) in `mode` (backprop or
/// `checkpoint:K`), the trainer's own path ([`original_run`], [`backward_through`]).
fn step(blocks: &Vec<BasicBlock>, x0: &Tensor<4>, bn: BnMode, mode: GradMode) {
    let leaf = x0.clone().detach().autodiff().require_grad();
    let run = original_run(blocks, leaf, mode, bn);
    let back = run.output.clone().square().mean().backward();
    let mut grads = GradientsParams::new();
    backward_through(
        blocks,
        &[blocks as &dyn Segment<4>],
        vec![run],
        back,
        &mut grads,
    );
}

fn measured(
    blocks: &Vec<BasicBlock>,
    x0: &Tensor<4>,
    bn: BnMode,
    mode: GradMode,
    reps: usize,
) -> Option<usize> {
    step(blocks, x0, bn, mode);
    if !memory::is_counting() || !memory::sees(&x0.device()) {
        return None;
    }
    (0..reps.max(1))
        .map(|_| memory::measure_transient(|| step(blocks, x0, bn, mode)).1)
        .max()
}

/// Doctor's numbers and verdict for unscaled ReLU blocks with input `x0`.
pub(super) fn diagnose(blocks: &Vec<BasicBlock>, x0: Tensor<4>, cfg: &DoctorConfig) -> StageReport {
    let n = blocks.len();
    let mut t = forward(blocks, x0.clone(), cfg.bn);
    let euler = scheme_report(
        Scheme::Euler,
        reconstruction(blocks, &mut t, Scheme::Euler, cfg.bn),
        None,
    );
    let heun = scheme_report(
        Scheme::Heun,
        reconstruction(blocks, &mut t, Scheme::Heun, cfg.bn),
        None,
    );
    let k = checkpoint_k(n);
    let memory = StageMemory {
        backprop: measured(blocks, &x0, cfg.bn, GradMode::Backprop, cfg.memory_reps),
        adjoint: None,
        checkpoint: measured(
            blocks,
            &x0,
            cfg.bn,
            GradMode::Checkpoint(k),
            cfg.memory_reps,
        ),
        k,
    };
    let clipped = MeanMax::of(&t.clipped);
    let least = t.clipped.iter().copied().fold(f64::INFINITY, f64::min);
    let e = &euler.reconstruction.one_step;
    let (lo, hi) = (
        e.iter().copied().fold(f64::INFINITY, f64::min),
        euler.one_step_max,
    );
    let (mode, why) = if n < 2 {
        (GradMode::Backprop, "one block: nothing to save".to_string())
    } else {
        (
            GradMode::Checkpoint(k),
            format!("checkpointing is exact (train --original --grad checkpoint:{k})"),
        )
    };
    let reason = format!(
        "post-addition ReLU clips {:.0}–{:.0}% of units; one-step inversion error {:.0}–{:.0}%: not invertible, the adjoint is not safe; {why}",
        100.0 * least,
        100.0 * clipped.max,
        100.0 * lo,
        100.0 * hi
    );
    let chosen = if n < 2 {
        memory.backprop
    } else {
        memory.checkpoint
    };
    StageReport {
        stage: 0,
        form: Form::PostRelu,
        n,
        scheme: Scheme::Euler,
        tied: false,
        relu_clipped: Some(clipped),
        moves: MeanMax::of(&t.moves),
        smoothness: smoothness(blocks, n),
        euler,
        heun: Some(heun),
        memory,
        verdict: backprop_unless_it_saves(
            Verdict {
                recommendation: mode.to_string(),
                mode,
                scheme: Scheme::Euler,
                reason,
                memory: chosen,
                saves: None,
            },
            memory.backprop,
            Scheme::Euler,
        ),
    }
}
