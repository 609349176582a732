//! One SGD-with-momentum update of a flattened parameter, PyTorch's rule:
//! `d = g + wd·w; b' = μ·b + d; s = nesterov ? d + μ·b' : b'; w' = w − lr·s`.
//!
//! The default body composes it from burn's tensor ops: five or six passes, each with a fresh
//! output (and, on LibTorch, a wrapped scalar per product). A TinyResNet of depth 256 updates
//! 2048 parameter tensors of mostly 16 values per step, so the count of ops is the cost, not
//! the arithmetic: skipping the update altogether saved 3 % of a LibTorch backprop step. Flex
//! runs one loop; LibTorch three ATen calls through the shim (`ops/aten`), `add` with `alpha`.
//! A first step passes a zero buffer: `μ·0 + d` is `d` exactly, PyTorch's `buf = d.clone()`.
//!
//! [`sgd_steps`] updates all the parameters of a step at once, each in its own shape (no
//! reshapes: LibTorch dispatches one view op per reshape): on LibTorch as ATen's multi-tensor
//! (`_foreach`) ops on the lists, PyTorch's `foreach` SGD, so CUDA launches a handful of kernels
//! per step instead of three per parameter (400 for a TinyResNet N = 16); the values are those
//! of the per-tensor ops, to the bit. Elsewhere one by one: flex's loop is one pass per
//! parameter already, and CubeCL fuses each update.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::Autodiff;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, DispatchTensor};

/// The hyper-parameters of one update (the rate already scaled for the parameter's group).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdRule {
    pub lr: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub nesterov: bool,
}

/// The update as one op per backend.
#[backend_extension(
    Flex,
    LibTorch: cfg(feature = "tch"),
    Cube: cfg(any(feature = "cuda", feature = "vulkan", feature = "wgpu")),
    Autodiff
)]
pub trait SgdOps: Backend {
    /// `(w', b')` from the weights `w`, their gradient `g` and momentum buffer `b` (same shape).
    fn sgd_step(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        b: FloatTensor<Self>,
        rule: SgdRule,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed::<Self>(w, g, b, rule)
    }
}

/// The update from burn's tensor ops (every backend; flex for dtypes it has no loop for).
fn composed<B: Backend>(
    w: FloatTensor<B>,
    g: FloatTensor<B>,
    b: FloatTensor<B>,
    rule: SgdRule,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let d = match rule.weight_decay > 0.0 {
        true => B::float_add(g, B::float_mul_scalar(w.clone(), rule.weight_decay.into())),
        false => g,
    };
    let b = B::float_add(B::float_mul_scalar(b, rule.momentum.into()), d.clone());
    let s = match rule.nesterov {
        true => B::float_add(d, B::float_mul_scalar(b.clone(), rule.momentum.into())),
        false => b.clone(),
    };
    (B::float_sub(w, B::float_mul_scalar(s, rule.lr.into())), b)
}

#[cfg(any(feature = "cuda", feature = "vulkan", feature = "wgpu"))]
impl SgdOps for burn::backend::Cube {}

impl SgdOps for burn::backend::Flex {
    fn sgd_step(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        b: FloatTensor<Self>,
        rule: SgdRule,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        flex::step(w, g, b, rule)
    }
}

#[cfg(feature = "tch")]
impl SgdOps for burn::backend::LibTorch {
    fn sgd_step(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        b: FloatTensor<Self>,
        rule: SgdRule,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        use burn::backend::libtorch::TchTensor;
        let (w, b) = super::aten::sgd_steps(&[&w.tensor], &[&g.tensor], &[&b.tensor], rule);
        let one = |v: Vec<tch::Tensor>| TchTensor::new(v.into_iter().next().expect("one result"));
        (one(w), one(b))
    }
}

/// Values only: optimizer tensors carry no graph.
impl<B: Backend + SgdOps, C: CheckpointStrategy> SgdOps for Autodiff<B, C> {
    fn sgd_step(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        b: FloatTensor<Self>,
        rule: SgdRule,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (w, b) = B::sgd_step(
            w.into_primitive(),
            g.into_primitive(),
            b.into_primitive(),
            rule,
        );
        (FloatTensor::<Self>::new(w), FloatTensor::<Self>::new(b))
    }
}

mod flex {
    use super::SgdRule;
    use crate::ops::batch_norm::kernel::Float;
    use crate::ops::flex_data::{tensor, values};
    use burn::backend::flex::FlexTensor;
    use burn::backend::TensorMetadata;
    use burn::tensor::{DType, Element};

    fn run<T: Float + Element + bytemuck::Pod>(
        w: &FlexTensor,
        g: &FlexTensor,
        b: &FlexTensor,
        rule: SgdRule,
    ) -> (FlexTensor, FlexTensor) {
        let shape = w.shape().to_vec();
        let (mut w, mut b) = (values::<T>(w).into_owned(), values::<T>(b).into_owned());
        let g = values::<T>(g);
        let [lr, wd, mu] = [rule.lr, rule.weight_decay, rule.momentum].map(T::from_f64);
        for ((w, b), &g) in w.iter_mut().zip(b.iter_mut()).zip(g.iter()) {
            // The composed order: each product rounded, then the sum.
            let d = if rule.weight_decay > 0.0 {
                g + *w * wd
            } else {
                g
            };
            *b = *b * mu + d;
            let s = if rule.nesterov { d + *b * mu } else { *b };
            *w = *w - s * lr;
        }
        (tensor(w, shape.clone()), tensor(b, shape))
    }

    pub(super) fn step(
        w: FlexTensor,
        g: FlexTensor,
        b: FlexTensor,
        rule: SgdRule,
    ) -> (FlexTensor, FlexTensor) {
        match w.dtype() {
            DType::F64 => run::<f64>(&w, &g, &b, rule),
            DType::F32 => run::<f32>(&w, &g, &b, rule),
            _ => super::composed::<burn::backend::Flex>(w, g, b, rule),
        }
    }
}

/// `(w′ᵢ, b′ᵢ)`: one update of each `wᵢ` by its gradient `gᵢ` and momentum buffer `bᵢ` under
/// one rule (tensors of any shape, `bᵢ` and `gᵢ` shaped as `wᵢ`, no graph, all on one device):
/// on LibTorch ATen's multi-tensor ops on the lists, elsewhere one by one.
pub fn sgd_steps(
    ws: Vec<DispatchTensor>,
    gs: Vec<DispatchTensor>,
    bs: Vec<DispatchTensor>,
    rule: SgdRule,
) -> (Vec<DispatchTensor>, Vec<DispatchTensor>) {
    #[cfg(feature = "tch")]
    if let Some(updated) = libtorch::steps(&ws, &gs, &bs, rule) {
        return updated;
    }
    let triples = ws.into_iter().zip(gs).zip(bs);
    triples
        .map(|((w, g), b)| <Dispatch as SgdOps>::sgd_step(w, g, b, rule))
        .unzip()
}

/// LibTorch's list update, on the ATen tensors inside the dispatch handles.
#[cfg(feature = "tch")]
mod libtorch {
    use super::SgdRule;
    use crate::ops::aten;
    use burn::backend::libtorch::TchTensor;
    use burn::backend::{
        BackendTensor, DispatchAutodiffContext, DispatchTensor, DispatchTensorKind,
    };

    fn aten_of(t: &DispatchTensor) -> Option<&tch::Tensor> {
        match &t.kind {
            DispatchTensorKind::LibTorch(BackendTensor::Float(t)) => Some(&t.tensor),
            _ => None,
        }
    }

    fn dispatch_of(t: tch::Tensor) -> DispatchTensor {
        DispatchTensor {
            kind: DispatchTensorKind::LibTorch(BackendTensor::Float(TchTensor::new(t))),
            autodiff: DispatchAutodiffContext::Disabled,
        }
    }

    fn lists(v: &[DispatchTensor]) -> Option<Vec<&tch::Tensor>> {
        v.iter().map(aten_of).collect()
    }

    /// `None` unless every tensor is a plain (graph-free) LibTorch one.
    pub(super) fn steps(
        ws: &[DispatchTensor],
        gs: &[DispatchTensor],
        bs: &[DispatchTensor],
        rule: SgdRule,
    ) -> Option<(Vec<DispatchTensor>, Vec<DispatchTensor>)> {
        let (w, g, b) = (lists(ws)?, lists(gs)?, lists(bs)?);
        let (w, b) = aten::sgd_steps(&w, &g, &b, rule);
        let wrap = |v: Vec<tch::Tensor>| v.into_iter().map(dispatch_of).collect();
        Some((wrap(w), wrap(b)))
    }
}
