//! Generic operations on a module's parameter tensors (any residual kind, any model):
//! accumulating gradients from several backward passes, naming and flattening them for the
//! gradient-error metrics, linear combinations (the weight families over depth), and untying.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Gradients, Tensor};

/// Trainable parameters visited in a fixed order (running statistics excluded).
fn trainable<const D: usize>(p: &Param<Tensor<D>>) -> bool {
    p.is_require_grad()
}

struct Accumulate<'a> {
    into: &'a mut GradientsParams,
    grads: &'a mut Gradients,
}

impl ModuleVisitor for Accumulate<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !trainable(param) {
            return;
        }
        let Some(g) = param.val().grad_remove(self.grads) else {
            return;
        };
        let sum = match self.into.remove::<D>(param.id) {
            Some(prev) => prev + g,
            None => g,
        };
        self.into.register(param.id, sum);
    }
}

/// Move `module`'s gradients out of one backward pass and add them to `into`. A parameter used
/// several times (tied weights) receives the sum over all its uses and all passes.
pub fn accumulate<M: Module>(into: &mut GradientsParams, grads: &mut Gradients, module: &M) {
    module.visit(&mut Accumulate { into, grads });
}

/// A named trainable parameter tensor.
#[derive(Debug, Clone)]
pub struct NamedParam {
    pub name: String,
    pub id: ParamId,
    pub shape: Vec<usize>,
}

#[derive(Default)]
struct Names {
    path: Vec<String>,
    out: Vec<NamedParam>,
}

impl ModuleVisitor for Names {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if trainable(param) {
            self.out.push(NamedParam {
                name: self.path.join("."),
                id: param.id,
                shape: param.lazy_shape().as_slice().to_vec(),
            });
        }
    }
}

/// The trainable parameters of `module` with dotted names (`functions.3.w1`), in visit order.
pub fn named<M: Module>(module: &M) -> Vec<NamedParam> {
    let mut v = Names::default();
    module.visit(&mut v);
    v.out
}

struct Values(Vec<f64>);

impl ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if trainable(param) {
            self.0.extend(crate::device::to_vec(&param.val()));
        }
    }
}

/// The values of every trainable parameter of `module`, concatenated in [`named`] order (θ as
/// one vector, for distances between functions).
pub fn flat_values<M: Module>(module: &M) -> Vec<f64> {
    let mut v = Values(Vec::new());
    module.visit(&mut v);
    v.0
}

/// The gradient of every named parameter, flattened to f64 (zeros where a parameter got none).
pub fn flat_grads<M: Module>(module: &M, grads: &GradientsParams) -> Vec<(String, Vec<f64>)> {
    named(module)
        .into_iter()
        .map(|p| {
            let n: usize = p.shape.iter().product();
            let v = grad_values(grads, p.id, p.shape.len()).unwrap_or_else(|| vec![0.0; n]);
            (p.name, v)
        })
        .collect()
}

fn grad_values(grads: &GradientsParams, id: ParamId, rank: usize) -> Option<Vec<f64>> {
    use crate::device::to_vec;
    match rank {
        1 => grads.get::<1>(id).map(|t| to_vec(&t)),
        2 => grads.get::<2>(id).map(|t| to_vec(&t)),
        3 => grads.get::<3>(id).map(|t| to_vec(&t)),
        4 => grads.get::<4>(id).map(|t| to_vec(&t)),
        _ => None,
    }
}

#[derive(Default)]
struct FirstNonFinite {
    path: Vec<String>,
    found: Option<String>,
}

impl ModuleVisitor for FirstNonFinite {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.found.is_none() && crate::device::check_finite(&param.val(), "").is_err() {
            self.found = Some(self.path.join("."));
        }
    }
}

/// The name of the first parameter or running statistic holding NaN or infinity, if any.
pub fn first_non_finite<M: Module>(module: &M) -> Option<String> {
    let mut v = FirstNonFinite::default();
    module.visit(&mut v);
    v.found
}

/// Bytes held by `module`'s trainable parameters.
pub fn parameter_bytes<M: Module>(module: &M, bytes_per_value: usize) -> usize {
    named(module)
        .iter()
        .map(|p| p.shape.iter().product::<usize>() * bytes_per_value)
        .sum()
}

struct Flatten(Vec<Tensor<1>>);

impl ModuleVisitor for Flatten {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if trainable(param) {
            let v = param.val();
            let n = v.shape().num_elements();
            self.0.push(v.reshape([n]));
        }
    }
}

struct Combine {
    parts: Vec<Vec<Tensor<1>>>,
    weights: Vec<f64>,
    index: usize,
}

impl ModuleMapper for Combine {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if !trainable(&param) {
            return param;
        }
        let i = self.index;
        self.index += 1;
        let dims = param.val().dims();
        let sum = self
            .parts
            .iter()
            .zip(&self.weights)
            .map(|(p, w)| p[i].clone().detach() * *w)
            .reduce(|a, b| a + b);
        match sum {
            Some(s) => Param::initialized(ParamId::new(), s.reshape(dims).detach().require_grad()),
            None => param,
        }
    }
}

/// `Σ_j w_j · parts_j` parameter by parameter (structure, running statistics and plain fields
/// copied from `parts[0]`), with fresh parameter ids. All parts must share one structure.
pub fn combine<M: Module>(parts: &[&M], weights: &[f64]) -> Option<M> {
    let first = deep_clone(*parts.first()?);
    let flat = parts
        .iter()
        .map(|m| {
            let mut f = Flatten(Vec::new());
            m.visit(&mut f);
            f.0
        })
        .collect();
    Some(first.map(&mut Combine {
        parts: flat,
        weights: weights.to_vec(),
        index: 0,
    }))
}

struct FreshIds;

impl ModuleMapper for FreshIds {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if !trainable(&param) {
            return param;
        }
        let value = param.val().detach().require_grad();
        Param::initialized(ParamId::new(), value)
    }
}

/// A copy of `module` whose trainable parameters are new, independent parameters (same values)
/// and whose running statistics are its own. Used to untie a tied function into N.
pub fn independent_copy<M: Module>(module: &M) -> M {
    deep_clone(module).map(&mut FreshIds)
}

/// A clone that shares no mutable state: `Module::clone` shares batch-norm running statistics
/// (they sit behind a lock), while the validation/training round trip rebuilds them, and
/// [`OwnBuffers`] gives them storage of their own (LibTorch updates them in place).
fn deep_clone<M: Module>(module: &M) -> M {
    module.valid().train().map(&mut OwnBuffers)
}

/// Copies every non-trainable tensor (running statistics) into new storage.
struct OwnBuffers;

impl ModuleMapper for OwnBuffers {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if trainable(&param) {
            return param;
        }
        let (id, value, _) = param.consume();
        let copy = Tensor::from_data(value.to_data(), (&value.device(), value.dtype()));
        Param::initialized(id, crate::norm::like(copy, &value))
    }
}

struct Plain;

impl ModuleMapper for Plain {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let id = param.id;
        Param::initialized(id, param.val().without_autodiff())
    }
}

/// A view of `module` whose parameters record no graph, sharing its running statistics (so the
/// memory-free forward can update them). burn's `valid()` would copy the statistics instead.
/// It takes the plain tensors (`without_autodiff`) rather than detaching: burn keeps some
/// bookkeeping for every detach of an autodiff tensor until its next backward pass, which for a
/// tied function viewed at each of thousands of steps grew with depth.
pub fn plain_view<M: Module>(module: &M) -> M {
    module.clone().map(&mut Plain)
}

struct Leaves;

impl ModuleMapper for Leaves {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let id = param.id;
        let trainable = trainable(&param);
        let leaf = param.val().without_autodiff().autodiff();
        Param::initialized(id, if trainable { leaf.require_grad() } else { leaf })
    }
}

/// A view of `module` whose trainable parameters are fresh autodiff leaves (same parameter ids,
/// same values, no link to the module's own graph nodes), sharing its running statistics.
/// Graphs built on different views share no node, so burn keeps them apart: one thread can
/// build a step's graph while another runs the backward of the previous one, even when the
/// two steps use the same function (tied weights, Heun). Gradients are read back by
/// parameter id ([`accumulate`] on the view).
pub fn leaf_view<M: Module>(module: &M) -> M {
    module.clone().map(&mut Leaves)
}

struct Perturb {
    target: usize,
    entry: usize,
    delta: f64,
    index: usize,
}

impl ModuleMapper for Perturb {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if !trainable(&param) {
            return param;
        }
        let i = self.index;
        self.index += 1;
        if i != self.target {
            return param;
        }
        let v = param.val().detach();
        let dims = v.dims();
        let n = v.shape().num_elements();
        let mut bump = vec![0.0; n];
        if let Some(b) = bump.get_mut(self.entry) {
            *b = self.delta;
        }
        let bump = Tensor::<1>::from_data(
            burn::tensor::TensorData::new(bump, [n]),
            burn::tensor::TensorCreationOptions::new(v.device()).with_dtype(v.dtype()),
        );
        let value = (v.reshape([n]) + bump)
            .reshape(dims)
            .detach()
            .require_grad();
        Param::initialized(param.id, value)
    }
}

/// A copy of `module` (same ids) with entry `entry` of trainable parameter number `target`
/// (in [`named`] order) moved by `delta`: for finite-difference checks.
pub fn perturb<M: Module>(module: &M, target: usize, entry: usize, delta: f64) -> M {
    module.clone().map(&mut Perturb {
        target,
        entry,
        delta,
        index: 0,
    })
}
