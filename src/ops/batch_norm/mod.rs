//! Batch normalisation (optionally fused with the ReLU that follows it) as a burn backend
//! extension with flex kernels ([`kernel`]): statistics, normalisation with given statistics,
//! and one backward that serves both the ordinary training forward and the adjoint's
//! straight-through `cached` evaluation (see [`kernel`] and `norm.rs`).
//!
//! The trait's default bodies are burn's ops ([`composed`]: CubeCL runs them), flex has its own
//! kernels, LibTorch ATen's (`libtorch.rs`: the kernels PyTorch's autograd runs).

mod composed;
mod flex;
pub mod kernel;
#[cfg(feature = "tch")]
mod libtorch;

use crate::device::is_libtorch;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, TensorMetadata};
use burn::tensor::Tensor;

/// Per-channel statistics, normalisation and its backward.
#[backend_extension(
    Flex,
    LibTorch: cfg(feature = "tch"),
    Cube: cfg(any(feature = "cuda", feature = "vulkan", feature = "wgpu")),
    Autodiff
)]
pub trait BatchNormOps: Backend {
    /// Batch mean and biased variance over every dimension but 1 (no gradient).
    fn bn_statistics(x: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed::statistics::<Self>(x)
    }

    /// `γ (x − mean)/√(var + ε) + β` per channel, then `max(·, 0)` if `relu`; differentiated
    /// with respect to `x` as batch normalisation at `x`'s own statistics (and to γ, β).
    /// `given`: `mean` and `var` are not `x`'s own (the adjoint's cached statistics), which a
    /// backward centred on `mean` must correct for.
    #[allow(clippy::too_many_arguments)]
    fn bn_normalize(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
        given: bool,
    ) -> FloatTensor<Self> {
        let _ = given; // the value does not depend on it
        composed::normalize::<Self>(x, [gamma, beta, mean, var], epsilon, relu)
    }

    /// `(dx, dγ, dβ)` of [`BatchNormOps::bn_normalize`], given its output `y` (the ReLU's mask).
    #[allow(clippy::too_many_arguments)]
    fn bn_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        y: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
        given: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        composed::backward::<Self>(x, [gamma, mean, var, y, grad], epsilon, relu, given)
    }

    /// The training forward's statistics: `x`'s batch mean and biased variance (as
    /// [`BatchNormOps::bn_statistics`]) and the running statistics after this batch, PyTorch's
    /// rule `(1 − m)·rm + m·mean`, `(1 − m)·rv + m·unbias·var` (`unbias` = M/(M − 1) over the M
    /// values per channel). LibTorch updates `rm` and `rv` **in place** and returns them (ATen's
    /// `batch_norm_update_stats`, PyTorch's own training path: one op where statistics, two
    /// running ops and burn's `RunningState` reads took five); the others return new tensors.
    fn bn_update_statistics(
        x: FloatTensor<Self>,
        rm: FloatTensor<Self>,
        rv: FloatTensor<Self>,
        momentum: f64,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let unbias = composed::unbias(&x.shape());
        let (mean, var) = Self::bn_statistics(x);
        let stats = [rm, rv, mean.clone(), var.clone()];
        let (rm, rv) = composed::running::<Self>(stats, momentum, unbias);
        (mean, var, rm, rv)
    }

    /// Batch normalisation in training mode: `x` normalised at its own batch statistics (then
    /// the ReLU if `relu`), differentiated as batch normalisation, and with `update` the running
    /// statistics blended as [`BatchNormOps::bn_update_statistics`] blends them (LibTorch in
    /// place). Returns `(y, mean, saved, rm', rv')`: the batch mean and `saved`, what
    /// [`BatchNormOps::bn_train_backward`] takes (the biased variance; on LibTorch
    /// 1/√(var + ε), which ATen's training kernel saves: one op for statistics, running update
    /// and normalisation where the separate ops took two, and none for the backward's
    /// 1/√(var + ε) where it took two), then the running statistics (`rm`, `rv` themselves
    /// without `update`).
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn bn_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        rm: FloatTensor<Self>,
        rv: FloatTensor<Self>,
        momentum: f64,
        epsilon: f64,
        relu: bool,
        update: bool,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let (mean, var, rm, rv) = match update {
            true => Self::bn_update_statistics(x.clone(), rm, rv, momentum),
            false => {
                let (mean, var) = Self::bn_statistics(x.clone());
                (mean, var, rm, rv)
            }
        };
        let (m, v) = (mean.clone(), var.clone());
        let y = Self::bn_normalize(x, gamma, beta, m, v, epsilon, relu, false);
        (y, mean, var, rm, rv)
    }

    /// `(dx, dγ, dβ)` of [`BatchNormOps::bn_train`] from its mean and `saved`, given its output
    /// `y` (the ReLU's mask).
    #[allow(clippy::too_many_arguments)]
    fn bn_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        saved: FloatTensor<Self>,
        y: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        Self::bn_backward(x, gamma, mean, saved, y, grad, epsilon, relu, false)
    }
}

#[cfg(any(feature = "cuda", feature = "vulkan", feature = "wgpu"))]
impl BatchNormOps for burn::backend::Cube {}

impl BatchNormOps for burn::backend::Flex {
    fn bn_statistics(x: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        flex::statistics(x)
    }

    fn bn_normalize(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
        _given: bool, // the forward does not depend on it
    ) -> FloatTensor<Self> {
        flex::normalize(x, [gamma, beta, mean, var], epsilon, relu)
    }

    fn bn_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        y: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
        given: bool, // the kernel centres on x's own mean whatever the statistics
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        flex::backward(x, [gamma, mean, var, y, grad], epsilon, relu, given)
    }

    fn bn_update_statistics(
        x: FloatTensor<Self>,
        rm: FloatTensor<Self>,
        rv: FloatTensor<Self>,
        momentum: f64,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        flex::update_statistics(x, rm, rv, momentum)
    }
}

#[cfg(feature = "tch")]
impl BatchNormOps for burn::backend::LibTorch {
    fn bn_statistics(x: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        libtorch::statistics(x)
    }

    fn bn_normalize(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
        _given: bool, // the forward does not depend on it
    ) -> FloatTensor<Self> {
        libtorch::normalize(x, [gamma, beta, mean, var], epsilon, relu)
    }

    fn bn_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        y: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
        given: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        libtorch::backward(x, [gamma, mean, var, y, grad], epsilon, relu, given)
    }

    fn bn_update_statistics(
        x: FloatTensor<Self>,
        rm: FloatTensor<Self>,
        rv: FloatTensor<Self>,
        momentum: f64,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        libtorch::update_statistics(x, rm, rv, momentum)
    }

    #[allow(clippy::type_complexity)]
    fn bn_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        rm: FloatTensor<Self>,
        rv: FloatTensor<Self>,
        momentum: f64,
        epsilon: f64,
        relu: bool,
        update: bool,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        libtorch::train(x, gamma, beta, rm, rv, momentum, epsilon, relu, update)
    }

    fn bn_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        saved: FloatTensor<Self>,
        y: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        libtorch::train_backward(x, [gamma, mean, saved, y, grad], epsilon, relu)
    }
}

#[derive(Debug)]
struct NormalizeBackward;

/// Where a normalisation's statistics came from, which decides its backward.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// [`BatchNormOps::bn_normalize`]; `given`: not `x`'s own (straight-through backward).
    Normalize { given: bool },
    /// [`BatchNormOps::bn_train`]: `spread` is the backend's `saved`.
    Train,
}

/// What the backward keeps: the checkpointed `x` and γ, the mean and spread of the statistics,
/// the output (only when a ReLU's mask is needed), ε, the ReLU and the statistics' source.
#[derive(Debug, Clone)]
struct NormalizeState<B: Backend> {
    x: NodeId,
    gamma: NodeId,
    mean: FloatTensor<B>,
    spread: FloatTensor<B>,
    y: Option<FloatTensor<B>>,
    epsilon: f64,
    relu: bool,
    source: Source,
}

impl<B: Backend + BatchNormOps> Backward<B, 3> for NormalizeBackward {
    type State = NormalizeState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, cp: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let st = ops.state;
        let x = cp.retrieve_node_output::<FloatTensor<B>>(st.x);
        let gamma = cp.retrieve_node_output::<FloatTensor<B>>(st.gamma);
        // Without a ReLU the output is not read: pass the gradient in its place.
        let y = st.y.unwrap_or_else(|| grad.clone());
        let (mean, spread, eps, relu) = (st.mean, st.spread, st.epsilon, st.relu);
        let (dx, dgamma, dbeta) = match st.source {
            Source::Normalize { given } => {
                B::bn_backward(x, gamma, mean, spread, y, grad, eps, relu, given)
            }
            Source::Train => B::bn_train_backward(x, gamma, mean, spread, y, grad, eps, relu),
        };
        for (node, g) in [(node_x, dx), (node_gamma, dgamma), (node_beta, dbeta)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

impl<B: Backend + BatchNormOps, C: CheckpointStrategy> BatchNormOps for Autodiff<B, C> {
    fn bn_statistics(x: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (mean, var) = B::bn_statistics(x.into_primitive());
        (
            FloatTensor::<Self>::new(mean),
            FloatTensor::<Self>::new(var),
        )
    }

    fn bn_normalize(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
        given: bool,
    ) -> FloatTensor<Self> {
        let (mean, var) = (mean.into_primitive(), var.into_primitive());
        match NormalizeBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let (x_state, gamma_state) = (prep.checkpoint(&x), prep.checkpoint(&gamma));
                let y = B::bn_normalize(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    mean.clone(),
                    var.clone(),
                    epsilon,
                    relu,
                    given,
                );
                let state = NormalizeState {
                    x: x_state,
                    gamma: gamma_state,
                    mean,
                    spread: var,
                    y: relu.then(|| y.clone()),
                    epsilon,
                    relu,
                    source: Source::Normalize { given },
                };
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::bn_normalize(
                x.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                mean,
                var,
                epsilon,
                relu,
                given,
            )),
        }
    }

    #[allow(clippy::type_complexity)]
    fn bn_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        rm: FloatTensor<Self>,
        rv: FloatTensor<Self>,
        momentum: f64,
        epsilon: f64,
        relu: bool,
        update: bool,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let (rm, rv) = (rm.into_primitive(), rv.into_primitive());
        let new = FloatTensor::<Self>::new;
        let prepared = NormalizeBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        let train = |x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>| {
            let [x, gamma, beta] = [x, gamma, beta].map(|t| t.into_primitive());
            B::bn_train(x, gamma, beta, rm, rv, momentum, epsilon, relu, update)
        };
        match prepared {
            OpsKind::Tracked(mut prep) => {
                let (x_state, gamma_state) = (prep.checkpoint(&x), prep.checkpoint(&gamma));
                let (y, mean, saved, rm, rv) = train(x, gamma, beta);
                let state = NormalizeState {
                    x: x_state,
                    gamma: gamma_state,
                    mean: mean.clone(),
                    spread: saved.clone(),
                    y: relu.then(|| y.clone()),
                    epsilon,
                    relu,
                    source: Source::Train,
                };
                (
                    prep.finish(state, y),
                    new(mean),
                    new(saved),
                    new(rm),
                    new(rv),
                )
            }
            OpsKind::UnTracked(prep) => {
                let (y, mean, saved, rm, rv) = train(x, gamma, beta);
                (prep.finish(y), new(mean), new(saved), new(rm), new(rv))
            }
        }
    }

    /// Values only (never differentiated again).
    fn bn_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        saved: FloatTensor<Self>,
        y: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [x, gamma, mean, saved, y, grad] =
            [x, gamma, mean, saved, y, grad].map(|t| t.into_primitive());
        let (dx, dg, db) = B::bn_train_backward(x, gamma, mean, saved, y, grad, epsilon, relu);
        let new = FloatTensor::<Self>::new;
        (new(dx), new(dg), new(db))
    }

    /// Values only (never differentiated again).
    fn bn_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        y: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
        given: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (dx, dg, db) = B::bn_backward(
            x.into_primitive(),
            gamma.into_primitive(),
            mean.into_primitive(),
            var.into_primitive(),
            y.into_primitive(),
            grad.into_primitive(),
            epsilon,
            relu,
            given,
        );
        (
            FloatTensor::<Self>::new(dx),
            FloatTensor::<Self>::new(dg),
            FloatTensor::<Self>::new(db),
        )
    }

    /// Values only (statistics and running statistics carry no graph).
    fn bn_update_statistics(
        x: FloatTensor<Self>,
        rm: FloatTensor<Self>,
        rv: FloatTensor<Self>,
        momentum: f64,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let [x, rm, rv] = [x, rm, rv].map(|t| t.into_primitive());
        let (mean, var, rm, rv) = B::bn_update_statistics(x, rm, rv, momentum);
        let new = FloatTensor::<Self>::new;
        (new(mean), new(var), new(rm), new(rv))
    }
}

/// Batch mean and biased variance per channel (dimension 1), without a graph.
pub fn statistics<const D: usize>(x: Tensor<D>) -> (Tensor<1>, Tensor<1>) {
    let (mean, var) = <Dispatch as BatchNormOps>::bn_statistics(x.into_dispatch());
    (Tensor::from_dispatch(mean), Tensor::from_dispatch(var))
}

/// `γ (x − mean)/√(var + ε) + β` (then the ReLU if `relu`), differentiated as batch
/// normalisation at `x`'s own statistics; `given`: the statistics are not `x`'s own.
pub fn normalize<const D: usize>(
    x: Tensor<D>,
    [gamma, beta, mean, var]: [Tensor<1>; 4],
    epsilon: f64,
    relu: bool,
    given: bool,
) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as BatchNormOps>::bn_normalize(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        mean.into_dispatch(),
        var.into_dispatch(),
        epsilon,
        relu,
        given,
    ))
}

/// The training forward's batch mean and biased variance of `x`, and the running statistics
/// `[rm, rv]` after it (`(1 − m)·rm + m·mean`, `(1 − m)·rv + m·unbias·var`); no graph. `None`
/// where the device updated `rm` and `rv` in place (LibTorch): every tensor sharing their
/// storage sees the new values, so a copy meant to stay independent must own its buffers
/// (`params::independent_copy` does).
pub fn update_statistics<const D: usize>(
    x: Tensor<D>,
    [rm, rv]: [Tensor<1>; 2],
    momentum: f64,
) -> (Tensor<1>, Tensor<1>, Option<(Tensor<1>, Tensor<1>)>) {
    let in_place = is_libtorch(&x.device());
    let [rm, rv] = [rm, rv].map(Tensor::into_dispatch);
    let (mean, var, rm, rv) =
        <Dispatch as BatchNormOps>::bn_update_statistics(x.into_dispatch(), rm, rv, momentum);
    let [mean, var, rm, rv] = [mean, var, rm, rv].map(Tensor::from_dispatch);
    (mean, var, (!in_place).then_some((rm, rv)))
}

/// Batch normalisation in training mode at `x`'s own statistics (then the ReLU if `relu`),
/// differentiated as batch normalisation; with `update` the running statistics `[rm, rv]` after
/// this batch come back, `None` where the device updated them in place (LibTorch; see
/// [`update_statistics`]).
pub fn train<const D: usize>(
    x: Tensor<D>,
    [gamma, beta]: [Tensor<1>; 2],
    [rm, rv]: [Tensor<1>; 2],
    [momentum, epsilon]: [f64; 2],
    relu: bool,
    update: bool,
) -> (Tensor<D>, Option<(Tensor<1>, Tensor<1>)>) {
    let in_place = is_libtorch(&x.device());
    let [gamma, beta, rm, rv] = [gamma, beta, rm, rv].map(Tensor::into_dispatch);
    let (y, _, _, rm, rv) = <Dispatch as BatchNormOps>::bn_train(
        x.into_dispatch(),
        gamma,
        beta,
        rm,
        rv,
        momentum,
        epsilon,
        relu,
        update,
    );
    let running =
        (update && !in_place).then(|| (Tensor::from_dispatch(rm), Tensor::from_dispatch(rv)));
    (Tensor::from_dispatch(y), running)
}
