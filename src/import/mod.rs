//! Pretrained PyTorch checkpoints in and out: import a `.th`, `.pth` or `.safetensors` state
//! dict into the project's [`Model`]s, and export a model as safetensors with PyTorch's names.
//!
//! One file per source layout (`he`: He et al.'s CIFAR ResNets; `torchvision`: torchvision's
//! ResNets; `authors`: the paper authors' tied and untied models; `tiny`: their TinyResNet), each
//! mapping our parameter paths to PyTorch keys; the same map
//! serves the import and the export. The import is strict: every tensor of the model must be
//! found with its shape, every tensor of the file must be used, and none may hold NaN or
//! infinity. burn-store's own loaders are lenient where this must not be (a partial load into
//! a list silently shifts its indices) and print long diagnostics, so the matching is done
//! here and only the final assignment goes through `ModuleSnapshot::apply`.
//!
//! The library entry point is [`load_model`]; [`Checkpoint`] gives the steps separately
//! (read once, ask for the class count, load, list what a partial load skipped).

mod authors;
mod checkpoint;
mod he;
mod layout;
mod tiny;
mod torchvision;

pub use checkpoint::{write_safetensors, StateDict};
pub use layout::Layout;

use crate::device::Placement;
use crate::models::{InputShape, Model, ModelSpec};
use crate::rng::Rng;
use crate::{Error, Result};
use burn::module::Module;
use burn::store::{bridge, ModuleSnapshot};
use burn::tensor::TensorData;
use layout::HEAD_WEIGHT;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// How strict an import is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Load what fits and list the rest ([`Imported::skipped`]) instead of failing: tensors
    /// of the model that are missing or mis-shaped keep their random initialisation, tensors
    /// of the file that the model has no place for are ignored. Non-finite values still fail.
    pub partial: bool,
}

/// An imported model and what a partial load left out.
#[derive(Debug)]
pub struct Imported {
    pub model: Model,
    /// Tensors loaded from the file.
    pub loaded: usize,
    /// One line per tensor not loaded (empty unless [`ImportOptions::partial`]).
    pub skipped: Vec<String>,
}

/// Reads the checkpoint at `path` and loads it into a `spec` model for images of `input`, on
/// `p`'s device and in its precision (the file's dtype is cast). Fails, naming the file and
/// the keys, unless every tensor fits (see [`ImportOptions`]). `input.classes` must equal the
/// checkpoint's ([`Checkpoint::classes`] reads it).
pub fn load_model(
    path: &Path,
    spec: &ModelSpec,
    input: InputShape,
    p: &Placement,
    options: &ImportOptions,
) -> Result<Model> {
    Ok(Checkpoint::open(path)?.load(spec, input, p, options)?.model)
}

/// A checkpoint read into memory (wrapping key and `module.` prefix removed).
pub struct Checkpoint {
    pub path: PathBuf,
    pub tensors: StateDict,
}

impl Checkpoint {
    /// Reads `path` (legacy `.th`, zip `.pth` or `.safetensors`, found from the content).
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            tensors: checkpoint::read(path)?,
        })
    }

    /// The number of classes of the checkpoint's classifier in `spec`'s layout.
    pub fn classes(&self, spec: &ModelSpec) -> Result<usize> {
        let key = Layout::of(spec)?.head_key();
        match self.tensors.get(key).map(|t| t.shape().as_slice().to_vec()) {
            Some(shape) if shape.len() == 2 => Ok(shape[0]),
            Some(shape) => Err(self.error(format!(
                "`{key}` has shape {shape:?}, expected [classes, features]"
            ))),
            None => Err(self.error(format!(
                "no `{key}`: not a {} checkpoint (its first keys: {})",
                spec.arch,
                self.first_keys()
            ))),
        }
    }

    /// The input channels and classes the checkpoint's stem and classifier take, with images
    /// of `height`×`width` (which no layout's weights fix).
    pub fn input(&self, spec: &ModelSpec, height: usize, width: usize) -> Result<InputShape> {
        let classes = self.classes(spec)?;
        let key = Layout::of(spec)?.stem_key();
        match self.tensors.get(key).map(|t| t.shape().as_slice().to_vec()) {
            Some(shape) if shape.len() == 4 => Ok(InputShape {
                channels: shape[1],
                height,
                width,
                classes,
            }),
            found => Err(self.error(format!(
                "`{key}` has shape {found:?}, expected [out, in, kh, kw]"
            ))),
        }
    }

    /// Loads the checkpoint into a freshly drawn `spec` model (see [`load_model`]).
    pub fn load(
        &self,
        spec: &ModelSpec,
        input: InputShape,
        p: &Placement,
        options: &ImportOptions,
    ) -> Result<Imported> {
        let layout = Layout::of(spec)?;
        let mut model = spec.init(p, input, &mut Rng::new(0))?;
        let plan = self.plan(&model, layout, p)?;
        let problems = plan.problems();
        if !problems.is_empty() && !options.partial {
            return Err(self.error(format!(
                "does not fit {}{}: {}\n{}\n(--partial loads what fits and lists the rest)",
                spec.arch,
                if spec.original { " --original" } else { "" },
                plan.counts(),
                crate::io::list_problems(&problems)
            )));
        }
        let loaded = plan.tensors.len();
        let result = model.apply(plan.tensors, None, None, true);
        if let Some(e) = result.errors.first() {
            return Err(self.error(format!("cannot assign the weights: {e}")));
        }
        if result.applied.len() != loaded {
            return Err(self.error(format!(
                "{} of {loaded} matched tensors were assigned",
                result.applied.len()
            )));
        }
        Ok(Imported {
            model,
            loaded,
            skipped: problems,
        })
    }

    /// Matches every tensor of `model` with the file's.
    fn plan(&self, model: &Model, layout: Layout, p: &Placement) -> Result<Plan> {
        let mut plan = Plan::default();
        let mut used = BTreeSet::new();
        for ours in model.collect(None, None, true) {
            let expected = ours.shape.as_slice().to_vec();
            let Some(key) = layout.torch_key(&ours.name) else {
                plan.missing
                    .push(format!("{} (no PyTorch name)", ours.name));
                continue;
            };
            let torch_expected = torch_shape(&ours.name, &expected);
            let Some(data) = self.tensors.get(&key) else {
                plan.missing
                    .push(format!("{key} {}", shape_text(&torch_expected)));
                continue;
            };
            used.insert(key.clone());
            let found = data.shape().as_slice().to_vec();
            if found != torch_expected {
                plan.misshaped.push(format!(
                    "{key}: expected {}, found {}",
                    shape_text(&torch_expected),
                    shape_text(&found)
                ));
                continue;
            }
            let values = self.finite_values(&key, data)?;
            let values = if ours.name == HEAD_WEIGHT {
                transpose(&values, &found)
            } else {
                values
            };
            let data = TensorData::new(values, expected).convert_dtype(p.precision.dtype());
            plan.tensors.push(bridge::from_data(data, ours.name, None));
        }
        plan.unexpected = self
            .tensors
            .iter()
            .filter(|(k, _)| !used.contains(*k))
            .map(|(k, t)| format!("{k} {}", shape_text(t.shape().as_slice())))
            .collect();
        Ok(plan)
    }

    /// The values of float tensor `key` as f64, or an error if it is not float or not finite.
    fn finite_values(&self, key: &str, data: &TensorData) -> Result<Vec<f64>> {
        if !data.dtype().is_float() {
            return Err(self.error(format!(
                "tensor `{key}` has dtype {:?}, expected a float type",
                data.dtype()
            )));
        }
        let values = data
            .clone()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .map_err(|e| self.error(format!("tensor `{key}` cannot be read: {e:?}")))?;
        match values.iter().position(|v| !v.is_finite()) {
            Some(i) => Err(self.error(format!(
                "tensor `{key}` holds {} at flat index {i}",
                values[i]
            ))),
            None => Ok(values),
        }
    }

    fn first_keys(&self) -> String {
        let keys: Vec<&str> = self.tensors.keys().take(4).map(String::as_str).collect();
        keys.join(", ")
    }

    fn error(&self, msg: impl std::fmt::Display) -> Error {
        Error::file(&self.path, msg)
    }
}

/// Tensors ready to assign, and what did not fit.
#[derive(Default)]
struct Plan {
    tensors: Vec<burn::store::burn_pack::Tensor>,
    missing: Vec<String>,
    misshaped: Vec<String>,
    unexpected: Vec<String>,
}

impl Plan {
    /// One line per problem, grouped by kind.
    fn problems(&self) -> Vec<String> {
        let tag = |kind: &'static str, items: &[String]| {
            items
                .iter()
                .map(move |i| format!("{kind} {i}"))
                .collect::<Vec<_>>()
        };
        [
            tag("missing", &self.missing),
            tag("mis-shaped", &self.misshaped),
            tag("unexpected", &self.unexpected),
        ]
        .concat()
    }

    fn counts(&self) -> String {
        format!(
            "{} missing, {} mis-shaped, {} unexpected (of the model's {} tensors, {} fit)",
            self.missing.len(),
            self.misshaped.len(),
            self.unexpected.len(),
            self.tensors.len() + self.missing.len() + self.misshaped.len(),
            self.tensors.len()
        )
    }
}

fn shape_text(shape: &[usize]) -> String {
    format!("{shape:?}")
}

/// PyTorch's shape of our tensor `path` (the classifier weight is transposed).
fn torch_shape(path: &str, ours: &[usize]) -> Vec<usize> {
    if path == HEAD_WEIGHT {
        ours.iter().rev().copied().collect()
    } else {
        ours.to_vec()
    }
}

/// Row-major `[r, c]` values to `[c, r]`.
fn transpose(values: &[f64], shape: &[usize]) -> Vec<f64> {
    let (r, c) = (shape[0], shape[1]);
    (0..c)
        .flat_map(|j| (0..r).map(move |i| values[i * c + j]))
        .collect()
}

/// Writes `model` (built from `spec`) to `path` as safetensors with PyTorch's key names in
/// `spec`'s layout, F32, so `load_state_dict(strict=True)` of the PyTorch module accepts it
/// (`num_batches_tracked` is left out; PyTorch's batch norm fills it in). Returns the number
/// of tensors written.
pub fn export(model: &Model, spec: &ModelSpec, path: &Path) -> Result<usize> {
    let layout = Layout::of(spec)?;
    // `valid()` folds the running statistics' pending updates in (collecting reads the stored
    // value only, which lags behind after a training forward until the next inference).
    let model = model.valid();
    let mut tensors = Vec::new();
    for ours in model.collect(None, None, true) {
        let key = layout.torch_key(&ours.name).ok_or_else(|| {
            Error::file(
                path,
                format!("`{}` has no name in the PyTorch layout", ours.name),
            )
        })?;
        let shape = ours.shape.as_slice().to_vec();
        let data = bridge::into_data(ours)
            .map_err(|e| Error::file(path, format!("cannot read `{key}`: {e}")))?;
        let values = data
            .convert::<f64>()
            .try_to_vec::<f64>()
            .map_err(|e| Error::file(path, format!("cannot read `{key}`: {e:?}")))?;
        let (shape, values) = if key == layout.head_key() {
            (torch_shape(HEAD_WEIGHT, &shape), transpose(&values, &shape))
        } else {
            (shape, values)
        };
        tensors.push((key, shape, values.into_iter().map(|v| v as f32).collect()));
    }
    write_safetensors(path, &tensors)?;
    Ok(tensors.len())
}
