//! Training image classifiers in any gradient mode: SGD/AdamW, learning-rate schedules,
//! cross-entropy, per-epoch metrics, a progress bar, and checkpoints that a killed run resumes
//! from to exactly the numbers of an uninterrupted one.
//!
//! Determinism: the model is drawn from `Rng::derive(seed, "model init")`, the data order and
//! augmentation from `Rng::derive(seed, "train batches")` (whose state is checkpointed after
//! every epoch), and the optimizer buffers are saved exactly, so the same seed gives the same
//! numbers and `train 2 epochs` equals `train 1 epoch, resume, train 1 more`.
//!
//! Activation memory: `activation_peak_bytes` is the largest heap peak of one training step's
//! forward and backward above what was live before it (the counting allocator of
//! [`crate::memory`]; 0 where it is not installed, as in tests). It includes the gradients and
//! the batch loader's concurrent allocation of the next batch, not the optimizer update.

mod checkpoint;
mod loss;
mod optim;
mod schedule;

pub use checkpoint::{read_json, RunRecord, TrainState, METRICS_FILE, RUN_FILE, STATE_FILE};
pub use loss::{cross_entropy, score, DeviceBatch};
pub use optim::{Optimizer, OptimizerConfig, OptimizerKind, OptimizerState};
pub use schedule::{Progress, Schedule};

use crate::data::{batches, Augment, Batch, DataId, DataSpec, Dataset, Normalization, Split};
use crate::device::{to_vec, Placement};
use crate::grad::{backward_through, GradMode};
use crate::import::{Checkpoint, ImportOptions};
use crate::io::{load_weights, save_weights};
use crate::models::{InputShape, Model, ModelSpec};
use crate::norm::BnMode;
use crate::params::{independent_copy, named};
use crate::report::{ensure_writable_dir, write_json};
use crate::rng::Rng;
use crate::{memory, Error, Result};
use burn::module::ParamId;
use burn::optim::GradientsParams;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Batch size of the test-set evaluation (inference only, so any size gives the same numbers).
pub const EVAL_BATCH: usize = 256;

/// Everything that determines a run's numbers (stored in `run.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The `--data` string (see [`DataSpec`]).
    pub data: String,
    pub model: ModelSpec,
    pub grad: GradMode,
    pub bn: BnMode,
    pub epochs: usize,
    pub batch_size: usize,
    /// Base learning rate (before schedule and warm-up).
    pub lr: f64,
    pub optimizer: OptimizerConfig,
    pub schedule: Schedule,
    pub warmup_epochs: f64,
    pub seed: u64,
    /// Train on the first N training examples only.
    pub limit_train: Option<usize>,
    /// Evaluate on the first N test examples only.
    pub limit_test: Option<usize>,
    /// Random crop (pad 4) and horizontal flip of the training images.
    pub augment: bool,
    /// The residual functions of each N-function stack train at lr × N (the authors'
    /// `--adaptive`): under the 1/N scaling each function's gradient shrinks like 1/N, so with
    /// one lr for all a deep stack's residual map moves N times slower than a shallow one's.
    #[serde(default)]
    pub adaptive_lr: bool,
    /// `--grad auto[:TOL]`: the hybrid per-stage policy (then `grad` is the adjoint, the mode
    /// of the stages the policy finds safe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<AutoGrad>,
    /// Start from a PyTorch checkpoint instead of a random draw (`--init`: fine-tuning).
    #[serde(default)]
    pub pretrained: Option<Pretrained>,
    /// The stages whose parameters train (`--train-stages`: stem, layer1, layer2, …, head, as
    /// PyTorch names them); the others stay frozen. None trains all.
    #[serde(default)]
    pub train_stages: Option<Vec<String>>,
}

/// A pretrained checkpoint a run starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pretrained {
    pub path: PathBuf,
    /// Load what fits and keep the random draw elsewhere (e.g. a new head for another number
    /// of classes), instead of failing on a mismatch.
    pub partial: bool,
    /// The input normalisation the checkpoint was trained with ([`Normalization::preset`]),
    /// used instead of the training set's statistics.
    pub normalize: String,
    /// The checkpoint holds the tied form of the (untied) model: it is loaded tied and each
    /// stack's function copied N times (the authors' tied-then-untied fine-tuning, §3.5).
    #[serde(default)]
    pub untie: bool,
}

/// The hybrid policy of `--grad auto[:TOL]`: each stack trains with the adjoint where the
/// adjoint's gradient error measured by `doctor` ([`crate::doctor::auto_modes`]) on the first
/// training batch is under `tol`, with `checkpoint:K` (K = round(√steps)) elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AutoGrad {
    pub tol: f64,
    /// Decide again at the start of every this-many epochs, on the then current model
    /// (`--auto-recheck`); None: once, before the first step.
    #[serde(default)]
    pub recheck_epochs: Option<usize>,
}

impl std::str::FromStr for AutoGrad {
    type Err = Error;
    /// `auto` or `auto:TOL`.
    fn from_str(s: &str) -> Result<Self> {
        let tol = match s.strip_prefix("auto") {
            Some("") => crate::doctor::DEFAULT_TOL,
            Some(t) => t
                .strip_prefix(':')
                .and_then(|t| t.parse::<f64>().ok())
                .ok_or_else(|| {
                    Error::invalid(
                        "--grad",
                        format!("`{s}`: expected auto or auto:TOL (e.g. auto:1e-2)"),
                    )
                })?,
            None => return Err(Error::invalid("--grad", format!("`{s}`: not auto[:TOL]"))),
        };
        crate::doctor::check_tol(tol, "--grad")?;
        Ok(Self {
            tol,
            recheck_epochs: None,
        })
    }
}

/// The modes `--grad auto` chose at the start of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradDecision {
    /// Epochs finished when it was decided (0: before the first step).
    pub epoch: usize,
    /// One per stack of [`Model::stacks`].
    pub stages: Vec<crate::doctor::StageChoice>,
}

impl GradDecision {
    pub fn modes(&self) -> Vec<GradMode> {
        self.stages.iter().map(|s| s.mode).collect()
    }

    /// One line for the terminal.
    pub fn describe(&self, tol: f64) -> String {
        let stages: Vec<String> = self
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "stack {}: {} (gradient error {:.2e})",
                    i + 1,
                    s.mode,
                    s.max_rel_sq_error
                )
            })
            .collect();
        format!(
            "--grad auto (tol {tol:.0e}) at epoch {}: {}",
            self.epoch,
            stages.join("; ")
        )
    }
}

impl Default for TrainConfig {
    /// The main job: built-in digits, the paper's TinyResNet (depth 8, Euler) trained with the
    /// memory-free adjoint, SGD 0.1 / momentum 0.9 / wd 5e-4, batch 64, 15 epochs (about half a
    /// minute on 2 CPU cores, ≈ 98 % test accuracy). The schedule is cosine rather than the
    /// paper's TinyResNet step schedule, whose ÷10 drops come too early in a 15-epoch run.
    fn default() -> Self {
        Self {
            data: "digits".into(),
            model: ModelSpec::default(),
            grad: GradMode::Adjoint,
            bn: BnMode::Cached,
            epochs: 15,
            batch_size: 64,
            lr: 0.1,
            optimizer: OptimizerConfig::default(),
            schedule: Schedule::Cosine,
            warmup_epochs: 0.0,
            seed: 0,
            limit_train: None,
            limit_test: None,
            augment: false,
            adaptive_lr: false,
            auto: None,
            pretrained: None,
            train_stages: None,
        }
    }
}

impl TrainConfig {
    /// Rejects settings that cannot run, naming the flag.
    pub fn check(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::invalid("--epochs", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(Error::invalid("--batch-size", "must be at least 1"));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::invalid(
                "--lr",
                format!("{}: must be positive", self.lr),
            ));
        }
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs.is_finite()) {
            return Err(Error::invalid(
                "--warmup",
                format!("{}: must be ≥ 0", self.warmup_epochs),
            ));
        }
        for (flag, limit) in [
            ("--limit-train", self.limit_train),
            ("--limit-test", self.limit_test),
        ] {
            if limit == Some(0) {
                return Err(Error::invalid(flag, "must be at least 1"));
            }
        }
        self.optimizer.check()?;
        if let Some(a) = self.auto {
            crate::doctor::check_tol(a.tol, "--grad")?;
            if a.recheck_epochs == Some(0) {
                return Err(Error::invalid("--auto-recheck", "must be at least 1"));
            }
            if self.model.original {
                return Err(Error::invalid("--grad", "auto: the unscaled original (--original) has no depth-scaled stack to choose a mode for; use --grad checkpoint:K (doctor's recommendation for its ReLU blocks) or backprop"));
            }
        }
        if self.model.tied && self.pretrained.as_ref().is_some_and(|p| p.untie) {
            return Err(Error::invalid(
                "--untie",
                "trains the untied model from a tied checkpoint: drop --tied",
            ));
        }
        self.model.check(self.grad)
    }
}

/// How a training call runs (not part of the numbers).
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Run directory for checkpoints and `metrics.jsonl`; None writes nothing.
    pub out: Option<PathBuf>,
    /// Continue the run in `out` from its last checkpoint (a fresh start if it has none).
    pub resume: bool,
    /// Report progress: one line per epoch on stdout (always readable in a log file) and, when
    /// stderr is a terminal, a bar during each epoch.
    pub progress: bool,
    /// Stop after this many epochs of this call, leaving a resumable run (a time-boxed job).
    pub stop_after: Option<usize>,
    /// The model a fresh run starts from instead of `config`'s draw or checkpoint (an
    /// experiment fine-tuning a model it trained itself); it must be one `config.model` builds,
    /// since a resumed run rebuilds it from there. Ignored when resuming.
    pub initial: Option<Model>,
}

/// One finished epoch (a line of `metrics.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    #[serde(with = "crate::report::float_json")]
    pub train_loss: f64,
    #[serde(with = "crate::report::float_json")]
    pub train_acc: f64,
    #[serde(with = "crate::report::float_json")]
    pub test_loss: f64,
    #[serde(with = "crate::report::float_json")]
    pub test_acc: f64,
    #[serde(with = "crate::report::float_json")]
    pub images_per_sec: f64,
    pub activation_peak_bytes: usize,
    /// Learning rate of the epoch's last step.
    #[serde(with = "crate::report::float_json")]
    pub lr: f64,
    /// Wall-clock seconds of the training part of the epoch.
    #[serde(with = "crate::report::float_json")]
    pub seconds: f64,
}

/// The outcome of [`train`].
pub struct TrainResult {
    /// Every finished epoch, resumed ones included.
    pub history: Vec<EpochMetrics>,
    pub model: Model,
    pub input: InputShape,
    pub normalization: Normalization,
    /// The gradient mode of each stack at the end (one entry: every stack).
    pub grad_modes: Vec<GradMode>,
    /// Images in the training set (after `--limit-train`): no batch is larger.
    pub train_examples: usize,
}

impl TrainResult {
    /// The best test accuracy over the epochs (the paper's "best-epoch" metric).
    pub fn best_test_acc(&self) -> f64 {
        self.history.iter().map(|m| m.test_acc).fold(0.0, f64::max)
    }
}

/// Loads `config.data` and trains on it.
pub fn train(config: &TrainConfig, p: &Placement, options: &TrainOptions) -> Result<TrainResult> {
    let spec: DataSpec = config.data.parse()?;
    train_on(spec.load(config.seed)?, config, p, options)
}

/// The training and test sets after `--limit-*` and normalisation with the training statistics.
pub struct Prepared {
    pub train: Arc<Dataset>,
    pub test: Arc<Dataset>,
    /// The content identities of the two sets (see [`crate::data::DataId`]).
    pub ids: [DataId; 2],
    pub normalization: Normalization,
    pub input: InputShape,
}

/// Applies the limits and the normalisation of `config` to `split`.
pub fn prepare(split: Split, config: &TrainConfig) -> Result<Prepared> {
    let Split {
        mut train,
        mut test,
    } = split;
    if let Some(n) = config.limit_train {
        train = train.take(n);
    }
    if let Some(n) = config.limit_test {
        test = test.take(n);
    }
    let normalization = match &config.pretrained {
        Some(pre) => Normalization::preset(&pre.normalize, train.channels)?,
        None => Normalization::compute(&train),
    };
    normalization.apply(&mut train)?;
    normalization.apply(&mut test)?;
    let input = InputShape {
        channels: train.channels,
        height: train.height,
        width: train.width,
        classes: train.classes,
    };
    Ok(Prepared {
        ids: [train.id(), test.id()],
        train: Arc::new(train),
        test: Arc::new(test),
        normalization,
        input,
    })
}

/// Trains on an already loaded `split` (a sweep loads its data once).
pub fn train_on(
    split: Split,
    config: &TrainConfig,
    p: &Placement,
    options: &TrainOptions,
) -> Result<TrainResult> {
    config.check()?;
    let data = prepare(split, config)?;
    let (mut run, mut model) = Run::start(config, p, options, &data)?;
    let stop = options
        .stop_after
        .map_or(config.epochs, |n| (run.epoch + n).min(config.epochs));
    let (started, first) = (Instant::now(), run.epoch);
    while run.epoch < stop {
        model = run
            .epoch_step(model, &data, options.progress)
            .inspect_err(|_| run.discard_unfinished())?;
        if options.progress {
            report_epoch(
                &run.history,
                config.epochs,
                started,
                run.epoch - first,
                stop - run.epoch,
            );
        }
    }
    Ok(TrainResult {
        history: run.history,
        model,
        input: data.input,
        normalization: data.normalization,
        grad_modes: run.modes,
        train_examples: data.train.len(),
    })
}

/// Learning-rate multipliers by parameter: N for the functions of an N-function stack with
/// `adaptive`, none otherwise.
pub fn lr_scales(model: &Model, adaptive: bool) -> HashMap<ParamId, f64> {
    if !adaptive {
        return HashMap::new();
    }
    let conv = model.stacks().into_iter().map(|s| (s.depth, named(s)));
    let bottleneck = model
        .bottleneck_stacks()
        .into_iter()
        .map(|s| (s.depth, named(s)));
    conv.chain(bottleneck)
        .flat_map(|(depth, params)| params.into_iter().map(move |p| (p.id, depth as f64)))
        .collect()
}

/// The model a fresh run starts from: the pretrained checkpoint, else a seeded random draw.
fn initial_model(
    config: &TrainConfig,
    p: &Placement,
    input: InputShape,
    progress: bool,
) -> Result<Model> {
    let Some(pre) = &config.pretrained else {
        return config
            .model
            .init(p, input, &mut Rng::derive(config.seed, "model init"));
    };
    let options = ImportOptions {
        partial: pre.partial,
    };
    let spec = ModelSpec {
        tied: config.model.tied || pre.untie,
        ..config.model.clone()
    };
    let imported = Checkpoint::open(&pre.path)?.load(&spec, input, p, &options)?;
    if progress && !imported.skipped.is_empty() {
        eprintln!(
            "--partial: {} tensors loaded from {}; skipped (random initialisation kept where missing):",
            imported.loaded,
            pre.path.display()
        );
        imported.skipped.iter().for_each(|s| eprintln!("  {s}"));
    }
    Ok(if pre.untie {
        imported.model.untie()
    } else {
        imported.model
    })
}

/// An independent copy of the model a caller gives a fresh run, which must have the stack
/// depths and tying of `config.model` (a resumed run is rebuilt from that spec).
fn given_model(model: &Model, config: &TrainConfig) -> Result<Model> {
    let spec = &config.model;
    let depths = spec.stack_depths()?;
    let fits = model.stack_depths() == depths && model.is_tied() == spec.tied;
    if !fits {
        return Err(Error::invalid(
            "--depth",
            format!(
                "the initial model (stack depths {:?}, tied {}) is not the {} model of stack depths {depths:?}, tied {} the run records",
                model.stack_depths(),
                model.is_tied(),
                spec.arch,
                spec.tied
            ),
        ));
    }
    Ok(independent_copy(model))
}

/// The stage of parameter `path` in PyTorch's naming: `stem`, `layer{k}` (stage k, TinyResNet's
/// stack being `layer1`), `head`. Enum variants (capitalised) are not part of it.
fn stage_of(path: &str) -> String {
    let mut parts = path
        .split('.')
        .filter(|p| !p.starts_with(|c: char| c.is_ascii_uppercase()));
    match (parts.next(), parts.next()) {
        (Some("stages"), Some(k)) => format!("layer{}", k.parse::<usize>().map_or(0, |k| k + 1)),
        (Some("stack"), _) => "layer1".into(),
        (Some(first), _) => first.into(),
        (None, _) => String::new(),
    }
}

/// The parameters that do not train under `--train-stages stages` (None: all train); an
/// unknown stage name is an error listing the model's.
pub fn frozen_params(model: &Model, stages: Option<&[String]>) -> Result<HashSet<ParamId>> {
    let Some(stages) = stages else {
        return Ok(HashSet::new());
    };
    let params = named(model);
    let mut known: Vec<String> = params.iter().map(|p| stage_of(&p.name)).collect();
    known.dedup();
    if let Some(bad) = stages.iter().find(|s| !known.contains(s)) {
        return Err(Error::invalid(
            "--train-stages",
            format!("`{bad}`: the model's stages are {}", known.join(", ")),
        ));
    }
    Ok(params
        .into_iter()
        .filter(|p| !stages.contains(&stage_of(&p.name)))
        .map(|p| p.id)
        .collect())
}

/// Drops the gradients of the `frozen` parameters, so the optimizer leaves them (and their
/// weight decay) alone.
fn freeze(grads: &mut GradientsParams, model: &Model, frozen: &HashSet<ParamId>) {
    if frozen.is_empty() {
        return;
    }
    for p in named(model).into_iter().filter(|p| frozen.contains(&p.id)) {
        match p.shape.len() {
            1 => drop(grads.remove::<1>(p.id)),
            2 => drop(grads.remove::<2>(p.id)),
            3 => drop(grads.remove::<3>(p.id)),
            _ => drop(grads.remove::<4>(p.id)),
        }
    }
}

/// A run in progress (the model is passed through it, since each optimizer step consumes it).
struct Run<'a> {
    config: &'a TrainConfig,
    p: &'a Placement,
    out: Option<PathBuf>,
    optimizer: Optimizer,
    rng: Rng,
    history: Vec<EpochMetrics>,
    /// Epochs finished.
    epoch: usize,
    /// The last committed checkpoint.
    saved: Option<TrainState>,
    /// The gradient mode of each stack (one entry: every stack).
    modes: Vec<GradMode>,
    /// `--grad auto`'s decisions so far (recorded in `run.json`).
    decisions: Vec<GradDecision>,
    /// Print the decisions (the progress flag: a terminal is watching).
    verbose: bool,
    /// What this call created in `out` for a fresh run (see [`Run::discard_unfinished`]).
    created: Created,
}

/// What a fresh run created: nothing, its `run.json`, or also the directory itself.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Created {
    Nothing,
    RunFile,
    Directory,
}

/// Creates run directory `dir` with its `run.json` (a bad `--out` fails before any training).
fn new_run_dir(dir: &Path, config: &TrainConfig, data: &Prepared, p: &Placement) -> Result<()> {
    ensure_writable_dir(dir)?;
    write_record(dir, config, data, Vec::new(), p)
}

fn write_record(
    dir: &Path,
    config: &TrainConfig,
    data: &Prepared,
    grad_decisions: Vec<GradDecision>,
    p: &Placement,
) -> Result<()> {
    let record = RunRecord {
        config: config.clone(),
        input: data.input,
        normalization: data.normalization.clone(),
        grad_decisions,
        dtype: Some(p.precision),
        data_ids: Some(data.ids.clone()),
    };
    write_json(&dir.join(RUN_FILE), &record)
}

/// The first `batch_size` training images in order (no shuffle, no augmentation): where
/// `--grad auto` measures, the same batch on every call, consuming no randomness.
fn first_batch(data: &Prepared, batch_size: usize, p: &Placement) -> Result<DeviceBatch> {
    let mut rng = Rng::new(0);
    let batch = batches(data.train.clone(), batch_size, false, None, &mut rng, false)?
        .next()
        .ok_or_else(|| Error::invalid("--data", "the training set is empty"))?;
    Ok(DeviceBatch::new(p, &batch, data.input.classes))
}

impl<'a> Run<'a> {
    /// A fresh run, or the one in `options.out` when resuming.
    fn start(
        config: &'a TrainConfig,
        p: &'a Placement,
        options: &TrainOptions,
        data: &Prepared,
    ) -> Result<(Self, Model)> {
        let out = options.out.clone();
        if let Some(dir) = &out {
            if options.resume && !dir.join(RUN_FILE).exists() {
                return Err(Error::invalid(
                    "--resume",
                    format!("{} holds no run to resume (no {RUN_FILE}); check --out, or drop --resume to start one", dir.display()),
                ));
            }
            if dir.join(STATE_FILE).exists() {
                if !options.resume {
                    return Err(Error::invalid("--out", format!("{} already holds a run: pass --resume to continue it, or choose another --out", dir.display())));
                }
                return Self::resume(config, p, dir, data, options.progress);
            }
        } else if options.resume {
            return Err(Error::invalid(
                "--resume",
                "needs the run directory (--out)",
            ));
        }
        // The model first: a setting it rejects or a checkpoint that does not fit leaves no
        // run directory behind.
        let model = match &options.initial {
            Some(m) => given_model(m, config)?,
            None => initial_model(config, p, data.input, options.progress)?,
        };
        frozen_params(&model, config.train_stages.as_deref())?;
        let created = match &out {
            Some(dir) => {
                let existed = dir.exists();
                new_run_dir(dir, config, data, p)?;
                if existed {
                    Created::RunFile
                } else {
                    Created::Directory
                }
            }
            None => Created::Nothing,
        };
        let mut run = Self {
            config,
            p,
            out,
            optimizer: Optimizer::new(config.optimizer.clone()),
            rng: Rng::derive(config.seed, "train batches"),
            history: Vec::new(),
            epoch: 0,
            saved: None,
            created,
            modes: vec![config.grad],
            decisions: Vec::new(),
            verbose: options.progress,
        };
        run.decide(&model, data)
            .inspect_err(|_| run.discard_unfinished())?;
        Ok((run, model))
    }

    /// Continues the run in `dir`, whose configuration must equal `config`.
    fn resume(
        config: &'a TrainConfig,
        p: &'a Placement,
        dir: &Path,
        data: &Prepared,
        verbose: bool,
    ) -> Result<(Self, Model)> {
        let record: RunRecord = read_json(&dir.join(RUN_FILE))?;
        let mut differ = checkpoint::config_differences(&record.config, config);
        if let Some(ids) = &record.data_ids {
            // The data is checked by content, so its name may change (a trailing slash, a
            // relative path, a moved folder).
            differ.retain(|field| field != "data");
            if *ids != data.ids {
                return Err(Error::invalid(
                    "--data",
                    format!(
                        "{}: not the images the run in {} was trained on (training set then: {} images, checksum {}; now: {} images, checksum {})",
                        config.data,
                        dir.display(),
                        ids[0].examples,
                        ids[0].checksum,
                        data.ids[0].examples,
                        data.ids[0].checksum
                    ),
                ));
            }
        }
        if !differ.is_empty() {
            return Err(Error::file(
                dir.join(RUN_FILE),
                format!(
                    "the run was started with other settings ({}); resume with the same flags",
                    differ.join(", ")
                ),
            ));
        }
        if record.input != data.input {
            return Err(Error::file(
                dir.join(RUN_FILE),
                "the data now has another shape or class count than when the run started",
            ));
        }
        if let Some(dtype) = record.dtype.filter(|&d| d != p.precision) {
            // Continuing in another precision would not be the same run.
            return Err(Error::invalid(
                "--dtype",
                format!(
                    "{}: the run in {} trains in {dtype}; resume with --dtype {dtype}",
                    p.precision,
                    dir.display()
                ),
            ));
        }
        let state: TrainState = read_json(&dir.join(STATE_FILE))?;
        checkpoint::repair(dir, &state)?;
        let model = load_model(&record, p, &dir.join(&state.weights))?;
        let optimizer = Optimizer::load(
            config.optimizer.clone(),
            &state.optimizer,
            &model,
            p,
            &dir.join(&state.buffers),
        )?;
        let decisions = record.grad_decisions;
        let modes = match decisions.iter().rev().find(|d| d.epoch <= state.epoch) {
            Some(d) => d.modes(),
            None => vec![config.grad],
        };
        let run = Self {
            config,
            p,
            out: Some(dir.to_path_buf()),
            optimizer,
            rng: state.rng.clone(),
            history: state.history.clone(),
            epoch: state.epoch,
            saved: Some(state),
            created: Created::Nothing,
            modes,
            decisions,
            verbose,
        };
        Ok((run, model))
    }

    /// `--grad auto`: choose each stack's mode on the first training batch (before the first
    /// epoch, and at the start of every `recheck_epochs`-th), print it, record it in
    /// `run.json`. A decision already recorded for this epoch (a resumed run) is replaced by
    /// the same one: the model and the batch are those it was made on.
    fn decide(&mut self, model: &Model, data: &Prepared) -> Result<()> {
        let Some(auto) = self.config.auto else {
            return Ok(());
        };
        let due = match (self.epoch, auto.recheck_epochs) {
            (0, _) => true,
            (e, Some(r)) => e.is_multiple_of(r),
            _ => false,
        };
        if !due {
            return Ok(());
        }
        let batch = first_batch(data, self.config.batch_size, self.p)?;
        let stages = crate::doctor::auto_modes(model, &batch, self.config.bn, auto.tol)?;
        let decision = GradDecision {
            epoch: self.epoch,
            stages,
        };
        if self.verbose {
            println!("{}", decision.describe(auto.tol));
        }
        self.modes = decision.modes();
        self.decisions.retain(|d| d.epoch < self.epoch);
        self.decisions.push(decision);
        match &self.out {
            Some(dir) => write_record(dir, self.config, data, self.decisions.clone(), self.p),
            None => Ok(()),
        }
    }

    /// Trains one epoch, evaluates, logs and checkpoints.
    fn epoch_step(&mut self, model: Model, data: &Prepared, progress: bool) -> Result<Model> {
        if self.epoch > 0 {
            self.decide(&model, data)?;
        }
        let (model, train) = self.train_epoch(model, data, progress)?;
        let (test_loss, test_acc) = evaluate(&model, &data.test, self.p)?;
        if !test_loss.is_finite() {
            // A finite training loss can hide a diverged model (a NaN in the weights or running
            // statistics shows only in evaluation): the epoch is not kept.
            return Err(self.diverged(format!(
                "the test loss after epoch {} ({test_loss})",
                self.epoch + 1
            )));
        }
        let metrics = EpochMetrics {
            epoch: self.epoch + 1,
            test_loss,
            test_acc,
            ..train
        };
        self.history.push(metrics);
        self.epoch += 1;
        self.checkpoint(&model)?;
        Ok(model)
    }

    /// One pass over the training set; the test fields of the result are left at 0.
    fn train_epoch(
        &mut self,
        mut model: Model,
        data: &Prepared,
        progress: bool,
    ) -> Result<(Model, EpochMetrics)> {
        let c = self.config;
        let augment = c.augment.then_some(Augment::STANDARD);
        let epoch = batches(
            data.train.clone(),
            c.batch_size,
            true,
            augment,
            &mut self.rng,
            false,
        )?;
        let steps = epoch.len();
        let scales = lr_scales(&model, c.adaptive_lr);
        let frozen = frozen_params(&model, c.train_stages.as_deref())?;
        let bar = progress_bar(progress, steps, self.epoch, c.epochs);
        let start = Instant::now();
        let (mut loss_sum, mut correct, mut seen, mut peak, mut lr) =
            (0.0, 0usize, 0usize, 0usize, 0.0);
        for (k, batch) in epoch.enumerate() {
            let at = Progress {
                epoch: self.epoch,
                epochs: c.epochs,
                step: k,
                steps_per_epoch: steps,
            };
            lr = c.schedule.lr(c.lr, c.warmup_epochs, at);
            let device_batch = DeviceBatch::new(self.p, &batch, data.input.classes);
            let (mut step, bytes) =
                memory::measure(|| step_gradients_modes(&model, &device_batch, &self.modes, c.bn));
            freeze(&mut step.grads, &model, &frozen);
            if !step.loss.is_finite() {
                return Err(self.non_finite(k, steps));
            }
            model = self.optimizer.step_scaled(model, step.grads, lr, &scales);
            loss_sum += step.loss * batch.batch as f64;
            correct += step.correct;
            (seen, peak) = (seen + batch.batch, peak.max(bytes));
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "loss {:.4}  acc {:.1}%  {:.0} img/s",
                loss_sum / seen as f64,
                100.0 * correct as f64 / seen as f64,
                seen as f64 / secs
            ));
            bar.inc(1);
        }
        // Cleared, so the epoch's line starts on a line of its own.
        bar.finish_and_clear();
        let seconds = start.elapsed().as_secs_f64();
        let n = seen.max(1) as f64;
        let metrics = EpochMetrics {
            epoch: self.epoch + 1,
            train_loss: loss_sum / n,
            train_acc: correct as f64 / n,
            test_loss: 0.0,
            test_acc: 0.0,
            images_per_sec: seen as f64 / seconds.max(1e-9),
            activation_peak_bytes: peak,
            lr,
            seconds,
        };
        Ok((model, metrics))
    }

    /// After a failure before the first checkpoint (divergence in epoch 1, a full disk), removes
    /// what this fresh run created, so no directory holding only `run.json` (and perhaps a
    /// half-written checkpoint) is left behind; a run that has a checkpoint keeps everything.
    fn discard_unfinished(&self) {
        let (Some(dir), None) = (&self.out, &self.saved) else {
            return;
        };
        if self.created == Created::Nothing {
            return;
        }
        let (weights, buffers) = checkpoint::file_names(self.epoch.max(1));
        for name in [RUN_FILE, &weights, &buffers] {
            let _ = std::fs::remove_file(dir.join(name));
        }
        if self.created == Created::Directory {
            // Only if empty: anything else in it is not ours to delete.
            let _ = std::fs::remove_dir(dir);
        }
    }

    /// The error for a non-finite loss at step `k`, naming the checkpoint that stays in force.
    fn non_finite(&self, k: usize, steps: usize) -> Error {
        self.diverged(format!(
            "the training loss at epoch {}, step {} of {steps} (global step {})",
            self.epoch + 1,
            k + 1,
            self.epoch * steps + k + 1
        ))
    }

    /// The error for a diverged run (`what` went non-finite), naming the checkpoint that stays
    /// in force.
    fn diverged(&self, what: String) -> Error {
        let kept = match (&self.out, &self.saved) {
            (Some(dir), Some(s)) => format!(
                "the last good checkpoint, {}, is kept",
                dir.join(&s.weights).display()
            ),
            (Some(_), None) => "no epoch had finished, so there is no checkpoint".into(),
            (None, _) => "no run directory was given".into(),
        };
        Error::NonFinite {
            what: format!("{what}; {kept}; try a lower --lr"),
        }
    }

    /// Writes the checkpoint of the epoch just finished (when there is a run directory).
    fn checkpoint(&mut self, model: &Model) -> Result<()> {
        let Some(dir) = &self.out else {
            return Ok(());
        };
        let (weights, buffers) = checkpoint::file_names(self.epoch);
        let written = save_weights(model, &dir.join(&weights))
            .and_then(|()| self.optimizer.save_buffers(&dir.join(&buffers)));
        if let Err(e) = written {
            // A full disk after the weights: no state names them, so they would only be an
            // orphan until a resume's repair (the previous checkpoint stays in force).
            checkpoint::discard(dir, &[&weights, &buffers]);
            return Err(e);
        }
        let state = TrainState {
            epoch: self.epoch,
            rng: self.rng.clone(),
            optimizer: self.optimizer.state(),
            history: self.history.clone(),
            weights,
            buffers,
        };
        checkpoint::commit(dir, &state, self.saved.as_ref())?;
        // From here `state.json` names the new files: the checkpoint is in force even if the
        // rest fails (a full disk on metrics.jsonl made the run look unsaved, and the cleanup
        // of an unfinished run deleted run.json and the checkpoint that state.json named).
        let previous = self.saved.replace(state.clone());
        checkpoint::tidy(dir, &state, previous.as_ref())
    }
}

/// One training step's forward and backward, before the optimizer update.
pub struct StepGrads {
    /// Mean cross-entropy of the batch (NaN or infinite: no backward was taken).
    pub loss: f64,
    /// Correct predictions in the batch.
    pub correct: usize,
    /// Every trainable parameter's gradient (stacks in `mode`, the rest by autodiff).
    pub grads: GradientsParams,
}

/// Loss, correct predictions and every parameter's gradient for one batch, with the stacks'
/// gradients taken in `mode` (the forward updates the running statistics once).
pub fn step_gradients(model: &Model, batch: &DeviceBatch, mode: GradMode, bn: BnMode) -> StepGrads {
    step_gradients_modes(model, batch, &[mode], bn)
}

/// [`step_gradients`] with a gradient mode per stack (see [`Model::forward_train_modes`]).
pub fn step_gradients_modes(
    model: &Model,
    batch: &DeviceBatch,
    modes: &[GradMode],
    bn: BnMode,
) -> StepGrads {
    let (logits, runs) = model.forward_train_modes(batch.images.clone(), modes, bn);
    let (_, correct) = score(&logits, &batch.labels);
    let loss = cross_entropy(logits, batch.one_hot.clone());
    let value = to_vec(&loss).first().copied().unwrap_or(f64::NAN);
    let mut grads = GradientsParams::new();
    if value.is_finite() {
        backward_through(model, &model.segments(), runs, loss.backward(), &mut grads);
    }
    StepGrads {
        loss: value,
        correct,
        grads,
    }
}

/// Every image of `data` in order, in evaluation batches (no shuffle, no augmentation).
fn in_order(data: &Arc<Dataset>) -> Result<crate::data::Batches> {
    batches(
        data.clone(),
        EVAL_BATCH,
        false,
        None,
        &mut Rng::new(0),
        false,
    )
}

/// Test loss (mean cross-entropy) and accuracy of `model` on `test` (running statistics).
pub fn evaluate(model: &Model, test: &Arc<Dataset>, p: &Placement) -> Result<(f64, f64)> {
    let (mut loss, mut correct) = (0.0, 0);
    for batch in in_order(test)? {
        let b = DeviceBatch::new(p, &batch, test.classes);
        let (l, c) = score(&model.forward_eval(b.images), &b.labels);
        loss += l;
        correct += c;
    }
    let n = test.len().max(1) as f64;
    Ok((loss / n, correct as f64 / n))
}

/// A model's scores on a dataset, image by image (running statistics), in dataset order.
#[derive(Debug, Clone, Serialize)]
pub struct Scores {
    pub examples: usize,
    pub correct: usize,
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    pub labels: Vec<usize>,
    pub predictions: Vec<usize>,
    pub logits: Vec<Vec<f64>>,
}

/// Scores `model` on every image of `data`; a label the model has no output for is an error.
pub fn score_images(model: &Model, data: &Arc<Dataset>, p: &Placement) -> Result<Scores> {
    let mut logits = Vec::new();
    for batch in in_order(data)? {
        let b = DeviceBatch::new(p, &batch, data.classes);
        let out = model.forward_eval(b.images);
        let classes = out.dims()[1];
        logits.extend(to_vec(&out).chunks(classes.max(1)).map(<[f64]>::to_vec));
    }
    let (mut correct, mut loss, mut predictions) = (0, 0.0, Vec::new());
    for (row, &label) in logits.iter().zip(&data.labels) {
        if label >= row.len() {
            return Err(Error::invalid(
                "--data",
                format!(
                    "label {label} of {} is beyond the model's {} classes",
                    data.name,
                    row.len()
                ),
            ));
        }
        let pred = argmax(row);
        let max = row[pred];
        let log_sum = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        loss += log_sum - row[label];
        correct += usize::from(pred == label);
        predictions.push(pred);
    }
    let n = data.len().max(1) as f64;
    Ok(Scores {
        examples: data.len(),
        correct,
        accuracy: correct as f64 / n,
        loss: loss / n,
        labels: data.labels.clone(),
        predictions,
        logits,
    })
}

/// Index of the largest value (the first one on ties, as PyTorch's `argmax`).
fn argmax(row: &[f64]) -> usize {
    (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best })
}

/// Peak heap bytes of one training step's forward and backward in `modes` (one per stack), on an independent
/// copy of `model` (its running statistics are left alone). 0 without the counting allocator.
pub fn step_memory(
    model: &Model,
    p: &Placement,
    batch: &Batch,
    classes: usize,
    modes: &[GradMode],
    bn: BnMode,
) -> usize {
    let copy = independent_copy(model);
    let b = DeviceBatch::new(p, batch, classes);
    memory::measure(|| drop(step_gradients_modes(&copy, &b, modes, bn))).1
}

/// Rebuilds the model a run record describes and loads `weights` into it.
pub fn load_model(record: &RunRecord, p: &Placement, weights: &Path) -> Result<Model> {
    let model = record
        .config
        .model
        .init(p, record.input, &mut Rng::new(0))?;
    load_weights(model, weights, p.precision)
}

/// The run record and the last checkpoint's model of run directory `dir`.
pub fn load_run(dir: &Path, p: &Placement) -> Result<(RunRecord, TrainState, Model)> {
    let record: RunRecord = read_json(&dir.join(RUN_FILE))?;
    let state: TrainState = read_json(&dir.join(STATE_FILE))?;
    let model = load_model(&record, p, &dir.join(&state.weights))?;
    Ok((record, state, model))
}

/// Prints the epoch just finished: train and test loss and accuracy, speed, time so far (this
/// call: `done` epochs since `started`) and the estimated time for the `left` epochs to come.
fn report_epoch(
    history: &[EpochMetrics],
    epochs: usize,
    started: Instant,
    done: usize,
    left: usize,
) {
    let Some(m) = history.last() else { return };
    let elapsed = started.elapsed().as_secs_f64();
    let eta = elapsed / done.max(1) as f64 * left as f64;
    println!(
        "epoch {}/{epochs}: train loss {:.4} acc {:.2}% | test loss {:.4} acc {:.2}% | {:.0} img/s | elapsed {elapsed:.1} s, ETA {eta:.1} s",
        m.epoch,
        m.train_loss,
        100.0 * m.train_acc,
        m.test_loss,
        100.0 * m.test_acc,
        m.images_per_sec
    );
}

/// The bar of one epoch's steps: only on a terminal (a log file gets [`report_epoch`]'s lines).
fn progress_bar(show: bool, steps: usize, epoch: usize, epochs: usize) -> ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{prefix} [{bar:24}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bar = ProgressBar::new(steps as u64).with_style(style);
    bar.set_prefix(format!("epoch {}/{epochs}", epoch + 1));
    bar
}

/// The test score of a finished (or interrupted) run, possibly at another depth.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Residual functions per stack the model was evaluated with.
    pub depth: usize,
    /// … and was trained with.
    pub trained_depth: usize,
    /// Epochs the checkpoint had finished.
    pub epochs: usize,
    pub test_loss: f64,
    pub test_acc: f64,
    pub examples: usize,
}

/// Evaluates the last checkpoint of run directory `dir` on its test set, with every stack at
/// `depth` functions if given (tied models only: the ODE-like test of paper.md §3.2).
pub fn eval_run(dir: &Path, depth: Option<usize>, p: &Placement) -> Result<EvalReport> {
    eval_run_on(dir, depth, None, p)
}

/// [`eval_run`] with the data named anew (`eval --data`: the run's data moved or is named
/// otherwise); its test set must be the one the run recorded (same content).
pub fn eval_run_on(
    dir: &Path,
    depth: Option<usize>,
    data: Option<&str>,
    p: &Placement,
) -> Result<EvalReport> {
    let (record, state, model) = load_run(dir, p)?;
    let trained_depth = model.stack_depths().first().copied().unwrap_or(0);
    let model = match depth {
        Some(d) => model.with_depth(d)?,
        None => model,
    };
    let spec: DataSpec = data.unwrap_or(&record.config.data).parse()?;
    let mut test = spec.load(record.config.seed)?.test;
    if let Some(n) = record.config.limit_test {
        test = test.take(n);
    }
    record.normalization.apply(&mut test)?;
    if let (Some(name), Some([_, recorded])) = (data, &record.data_ids) {
        if test.id() != *recorded {
            return Err(Error::invalid(
                "--data",
                format!(
                    "{name}: not the test images the run in {} was trained with ({} images, checksum {}; these: {}, {})",
                    dir.display(),
                    recorded.examples,
                    recorded.checksum,
                    test.len(),
                    test.id().checksum
                ),
            ));
        }
    }
    let test = Arc::new(test);
    let (test_loss, test_acc) = evaluate(&model, &test, p)?;
    Ok(EvalReport {
        depth: model.stack_depths().first().copied().unwrap_or(0),
        trained_depth,
        epochs: state.epoch,
        test_loss,
        test_acc,
        examples: test.len(),
    })
}
