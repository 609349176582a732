//! A residual stack: N residual functions integrated over depth by a [`Scheme`].
//!
//! `x_{n+1} = x_n + f_n(x_n)/N` for Euler (N steps), Heun's pairing for Heun (N − 1 steps of
//! size 1/N). The functions are either N independent modules or one module used N times
//! (tied weights, the "ODE-like" models of paper.md §3.2). Gradients through a stack come from
//! [`crate::grad`]; this module holds the data and the one integration loop every pass uses.

use crate::norm::{BnMode, Norm, PackedStats, Phase};
use crate::params::{independent_copy, plain_view};
use crate::residual::Residual;
use crate::scheme::Scheme;
use crate::{Error, Result};
use burn::module::{Module, ModuleDisplay};
use burn::tensor::Tensor;

/// N residual functions and the scheme that integrates them.
#[derive(Module, Debug)]
pub struct Stack<F: Module> {
    /// The distinct residual functions: N of them, or a single one when tied.
    pub functions: Vec<F>,
    /// N, the number of residual functions the stack integrates (uses of the tied function).
    pub depth: usize,
    /// How the functions are combined into steps.
    #[module(skip)]
    pub scheme: Scheme,
}

/// Batch-norm statistics of every evaluation of one forward pass, indexed by
/// `step · stages + stage` (an evaluation site).
pub type SiteStats = Vec<PackedStats>;

/// How one pass through the stack normalises and what it records.
pub(crate) struct Pass<'a> {
    pub bn: BnMode,
    pub phase: Phase,
    pub stats: Option<&'a mut SiteStats>,
    /// Evaluate without recording a graph. Each function is viewed graph-free just for its
    /// evaluation, so the memory-free passes hold no per-layer state.
    pub plain: bool,
}

impl<F: Module + ModuleDisplay> Stack<F> {
    /// A stack of independent functions (N = `functions.len()`).
    pub fn new(functions: Vec<F>, scheme: Scheme) -> Result<Self> {
        let depth = functions.len();
        Self::check_depth(depth, scheme)?;
        Ok(Self {
            functions,
            depth,
            scheme,
        })
    }

    /// One function used by all N = `depth` layers.
    pub fn tied(function: F, depth: usize, scheme: Scheme) -> Result<Self> {
        Self::check_depth(depth, scheme)?;
        Ok(Self {
            functions: vec![function],
            depth,
            scheme,
        })
    }

    fn check_depth(depth: usize, scheme: Scheme) -> Result<()> {
        if depth < scheme.min_functions() {
            return Err(Error::invalid(
                "--depth",
                format!(
                    "{depth}: the {scheme} scheme needs at least {} residual functions",
                    scheme.min_functions()
                ),
            ));
        }
        Ok(())
    }

    /// Whether one function serves every layer.
    pub fn is_tied(&self) -> bool {
        self.functions.len() == 1 && self.depth > 1
    }

    /// The function of layer `l` (the shared one when tied).
    pub fn function(&self, l: usize) -> &F {
        &self.functions[if self.functions.len() == 1 { 0 } else { l }]
    }

    /// Step size 1/N.
    pub fn h(&self) -> f64 {
        1.0 / self.depth as f64
    }

    /// Number of scheme steps (Euler N, Heun N − 1).
    pub fn steps(&self) -> usize {
        self.scheme.steps(self.depth)
    }

    /// The same functions integrated by another scheme.
    pub fn with_scheme(self, scheme: Scheme) -> Result<Self> {
        Self::check_depth(self.depth, scheme)?;
        Ok(Self { scheme, ..self })
    }

    /// N independent copies of a tied function: same output before training, separate
    /// parameters (and running statistics) after.
    pub fn untie(&self) -> Self {
        Self {
            functions: self.copies(self.depth),
            depth: self.depth,
            scheme: self.scheme,
        }
    }

    /// An independent depth-`depth` stack whose function i copies function ⌊i·N/depth⌋ of
    /// this one: the piecewise-constant transfer of a trained stack to another depth that the
    /// authors' `compare_gradients.py` uses (paper.md §3.4). A tied stack stays tied.
    pub fn piecewise_copy(&self, depth: usize) -> Result<Self> {
        if self.is_tied() {
            return Self::tied(independent_copy(&self.functions[0]), depth, self.scheme);
        }
        Self::new(self.copies(depth), self.scheme)
    }

    /// `depth` independent functions, function i a copy of distinct function ⌊i·F/depth⌋ (F
    /// distinct functions; all copies of the shared one when tied).
    fn copies(&self, depth: usize) -> Vec<F> {
        let distinct = self.functions.len();
        (0..depth)
            .map(|i| independent_copy(&self.functions[i * distinct / depth]))
            .collect()
    }

    /// Integrate steps `from..to` starting at `x`, calling `keep(n, &x_n)` on every state
    /// (n = from..=to). The single loop behind every pass.
    pub(crate) fn integrate<const D: usize>(
        &self,
        x: Tensor<D>,
        from: usize,
        to: usize,
        pass: &mut Pass,
        mut keep: impl FnMut(usize, &Tensor<D>),
    ) -> Tensor<D>
    where
        F: Residual<D>,
    {
        let (h, stages) = (self.h(), self.scheme.stages());
        let mut x = x;
        keep(from, &x);
        for n in from..to {
            x = self.scheme.step(n, h, x, |stage, layer, xi| {
                self.eval(layer, xi, pass, n * stages + stage)
            });
            keep(n + 1, &x);
        }
        x
    }

    /// Evaluate function `layer` at `x` for evaluation site `site` of `pass`.
    pub(crate) fn eval<const D: usize>(
        &self,
        layer: usize,
        x: Tensor<D>,
        pass: &mut Pass,
        site: usize,
    ) -> Tensor<D>
    where
        F: Residual<D>,
    {
        let f = self.function(layer);
        if pass.plain {
            Self::eval_with(&plain_view(f), x, pass, site)
        } else {
            Self::eval_with(f, x, pass, site)
        }
    }

    /// Evaluate `f` (one of this stack's functions or a view of it) at `x` for evaluation site
    /// `site` of `pass`.
    pub(crate) fn eval_with<const D: usize>(
        f: &F,
        x: Tensor<D>,
        pass: &mut Pass,
        site: usize,
    ) -> Tensor<D>
    where
        F: Residual<D>,
    {
        let store = pass.stats.as_deref_mut().and_then(|s| s.get_mut(site));
        f.forward(x, &mut Norm::new(pass.bn, pass.phase, store))
    }

    /// Empty statistics store for one forward pass.
    pub(crate) fn new_site_stats(&self) -> SiteStats {
        vec![None; self.steps() * self.scheme.stages()]
    }

    /// Training forward with a graph (batch statistics; running statistics updated once).
    pub fn forward<const D: usize>(&self, x: Tensor<D>, bn: BnMode) -> Tensor<D>
    where
        F: Residual<D>,
    {
        let mut pass = Pass {
            bn,
            phase: Phase::Forward,
            stats: None,
            plain: false,
        };
        self.integrate(x, 0, self.steps(), &mut pass, |_, _| {})
    }

    /// A training-mode forward without a graph that leaves the running statistics alone
    /// (batch statistics; running ones under `BnMode::Frozen`): a measurement's view of the
    /// training forward.
    pub fn replay<const D: usize>(&self, x: Tensor<D>, bn: BnMode) -> Tensor<D>
    where
        F: Residual<D>,
    {
        let mut pass = Pass {
            bn,
            phase: Phase::Replay,
            stats: None,
            plain: true,
        };
        self.integrate(x.without_autodiff(), 0, self.steps(), &mut pass, |_, _| {})
    }

    /// Inference forward: running statistics, no graph.
    pub fn forward_eval<const D: usize>(&self, x: Tensor<D>) -> Tensor<D>
    where
        F: Residual<D>,
    {
        self.trajectory(x)
            .pop()
            .expect("a trajectory has at least x_0")
    }

    /// All hidden states x_0..x_steps of an inference pass (no graph), for the analyses.
    pub fn trajectory<const D: usize>(&self, x: Tensor<D>) -> Vec<Tensor<D>>
    where
        F: Residual<D>,
    {
        let mut pass = Pass {
            bn: BnMode::Frozen,
            phase: Phase::Eval,
            stats: None,
            plain: true,
        };
        let mut states = Vec::with_capacity(self.steps() + 1);
        let x = x.without_autodiff();
        self.integrate(x, 0, self.steps(), &mut pass, |_, s| states.push(s.clone()));
        states
    }
}
