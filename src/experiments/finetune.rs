//! `experiment finetune` (paper.md §3.2, §3.3, §3.5; Table 2 and Figure 3(a, b)) on TinyResNet
//! or on the authors' bottleneck ResNet (`IResNetAuto2` → `ResNetMemoryCustom`) at a CPU-sized
//! width:
//!
//! 1. pre-train a tied (ODE-like) model at a small depth, and an untied one at the same depth;
//! 2. Fig. 3(a): both evaluated at other depths (piecewise copies: a tied model stays tied, so
//!    its copy is a finer or coarser discretisation of the same ODE);
//! 3. Table 2: the tied model untied into a deep model, its deep stage (TinyResNet's only stack,
//!    the authors' `layer3`, as in their [4, 4, 32, 4]) copied to `--deep-depth` functions (its
//!    logits checked equal to the tied model's at that depth), then only `--train-stages`
//!    (default: the deep stage) fine-tuned with the adjoint, with
//!    backprop, and, as controls, the tied model at that depth without untying, with the
//!    adjoint and with backprop, for the same epochs and seeds; plus the measured activation memory of one step at two depths;
//! 4. doctor's smoothness, adjoint gradient error and verdict on the deep stage, before and
//!    after;
//! 5. Fig. 3(b): the untied deep model trained from scratch with the adjoint and with backprop.
//!
//! Every training is a run directory under `OUT/runs/` (`run.json`, `metrics.jsonl`,
//! checkpoints), resumed when the experiment is run again with the same flags.

use super::{num, progress, Outcome};
use crate::bench::step_activation_bytes;
use crate::data::{batches, Batch, DataSpec, Split};
use crate::device::Placement;
use crate::doctor::{
    checkpoint_k, finite_step, stack_gradient_error, stack_smoothness, verdict, DEFAULT_TOL,
};
use crate::grad::GradMode;
use crate::import::{load_model, Checkpoint, ImportOptions};
use crate::metrics::GradientError;
use crate::models::{Arch, InputShape, Model, ModelSpec};
use crate::norm::BnMode;
use crate::params::independent_copy;
use crate::plot::{bars, lines, Bar, Series, SeriesStyle};
use crate::report::{write_csv, write_json, Claim};
use crate::rng::Rng;
use crate::scheme::Scheme;
use crate::train::{
    evaluate, frozen_params, load_run, prepare, score_images, step_memory, train_on, DeviceBatch,
    EpochMetrics, Prepared, TrainConfig, TrainOptions, TrainResult, RUN_FILE,
};
use crate::{Error, Result};
use burn::tensor::Tensor;
use indicatif::ProgressBar;
use serde::Serialize;
use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where the experiment looks for Fashion-MNIST when `--data` is not given.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Folder of the run directories inside `--out`.
pub const RUNS_DIR: &str = "runs";
/// Everything measured, rewritten after each stage so a killed experiment keeps it.
pub const DATA_FILE: &str = "finetune.json";
/// The bound on untying's logit difference (relative, f32).
pub const UNTIE_TOL: f64 = 1e-5;
/// "Within a few points": the largest accuracy drop (percentage points) of the tied model at
/// depths above its training depth for it to count as ODE-like; fixed before any run.
pub const ODE_LIKE_DROP: f64 = 3.0;
/// Growth of one step's activation memory from depth D to 2D: at most this for "does not
/// grow" (the adjoint) and at least [`GROWS`] for "grows" (backprop, ideally 2×).
pub const FLAT: f64 = 1.1;
pub const GROWS: f64 = 1.5;
/// Repetitions of each step-memory measurement (the largest peak is kept, as doctor does).
pub const MEMORY_REPS: usize = 8;
/// "Far larger": the ratio of the adjoint's gradient errors, scratch vs fine-tuned.
pub const FAR_LARGER: f64 = 10.0;

/// The architectures the experiment fine-tunes (`--model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// TinyResNet: one stack of conv blocks (`layer1`), deepened and fine-tuned.
    Tiny,
    /// The authors' ResNet (paper.md §3.2): four stages of pre-activation bottlenecks; the
    /// third (`layer3`) is deepened and fine-tuned, as in their [4, 4, 32, 4] (§3.5).
    Authors,
}

impl Architecture {
    /// Number of depth-scaled stacks.
    pub fn stacks(self) -> usize {
        match self {
            Architecture::Tiny => 1,
            Architecture::Authors => 4,
        }
    }

    /// The stack untying deepens (index into [`Model::stack_depths`]).
    pub fn deep_stack(self) -> usize {
        match self {
            Architecture::Tiny => 0,
            Architecture::Authors => 2,
        }
    }

    /// The deep stack's PyTorch name (`--train-stages`' default).
    pub fn deep_stage(self) -> String {
        format!("layer{}", self.deep_stack() + 1)
    }

    /// `--depth` and `--deep-depth` when not given: TinyResNet 8 → 32; the authors' n_layers
    /// 4 per stage (3 functions) with layer3 untied into 31, their [4, 4, 32, 4] (paper.md §3.5).
    pub fn default_depths(self) -> (usize, usize) {
        match self {
            Architecture::Tiny => (8, 32),
            Architecture::Authors => (3, 31),
        }
    }

    /// `--planes` when not given: TinyResNet's 16 channels; the authors' first-stage base
    /// width 4 (theirs is 64), so the stages carry 16/32/64/128 channels: CPU-sized.
    pub fn default_planes(self) -> usize {
        match self {
            Architecture::Tiny => 16,
            Architecture::Authors => 4,
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Architecture::Tiny => "tiny",
            Architecture::Authors => "authors",
        })
    }
}

impl FromStr for Architecture {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tiny" => Ok(Architecture::Tiny),
            "authors" => Ok(Architecture::Authors),
            _ => Err(Error::invalid(
                "--model",
                format!(
                    "`{s}`: expected tiny (TinyResNet) or authors (the authors' bottleneck ResNet)"
                ),
            )),
        }
    }
}

/// Settings of the experiment.
#[derive(Debug, Clone)]
pub struct Config {
    /// What every training shares (data, batch size, optimiser, limits, planes, batch norm).
    pub train: TrainConfig,
    pub arch: Architecture,
    /// Functions per stack the tied and untied models are pre-trained with.
    pub depth: usize,
    /// Functions of the deep stage after untying (the other stages keep `depth`).
    pub deep_depth: usize,
    /// Depths of the ODE-like test (Fig. 3a).
    pub eval_depths: Vec<usize>,
    pub pretrain_epochs: usize,
    pub finetune_epochs: usize,
    pub finetune_lr: f64,
    /// Epochs of the from-scratch runs of Fig. 3(b).
    pub scratch_epochs: usize,
    /// Train the from-scratch runs' residual functions at lr × N instead of the plain lr.
    pub scratch_lr_times_n: bool,
    /// One fine-tuning run per seed and method; the first seed also seeds the pre-training.
    pub seeds: Vec<u64>,
    /// The stages fine-tuning trains (PyTorch names: stem, layer1…, head).
    pub train_stages: Vec<String>,
    /// Images in the batch doctor measures on.
    pub grad_batch: usize,
    /// Why the data is what it is (the Fashion-MNIST fallback), for the report.
    pub data_note: Option<String>,
    /// The tied model to untie instead of pre-training one (`--init`): a finished tied run
    /// directory (`resnet-ode train --tied --out DIR`), or for the authors' architecture their
    /// tied PyTorch checkpoint (`IResNetAuto2`); it must match `--depth` (a run), `--planes`
    /// and the data's images and classes.
    pub init: Option<PathBuf>,
    /// The command line, for the report.
    pub command: String,
}

impl Default for Config {
    /// Sized for a few minutes on 2 CPU cores on the digits, 10–20 on Fashion-MNIST (its
    /// first 6000 training and 2000 test images).
    fn default() -> Self {
        let mut train = TrainConfig {
            epochs: 1,
            batch_size: 32,
            limit_train: Some(6000),
            limit_test: Some(2000),
            ..TrainConfig::default()
        };
        train.model.planes = 16;
        Self {
            train,
            arch: Architecture::Tiny,
            depth: 8,
            deep_depth: 32,
            eval_depths: vec![2, 4, 8, 16, 32, 64],
            pretrain_epochs: 8,
            finetune_epochs: 4,
            finetune_lr: 0.01,
            scratch_epochs: 6,
            scratch_lr_times_n: false,
            seeds: vec![0, 1],
            train_stages: vec!["layer1".into()],
            grad_batch: 128,
            data_note: None,
            init: None,
            command: "resnet-ode experiment finetune".into(),
        }
    }
}

/// `--data` when none is given: Fashion-MNIST if its folder exists, else the built-in digits,
/// with a note saying so.
pub fn default_data() -> (String, Option<String>) {
    if Path::new(FASHION_MNIST_DIR).is_dir() {
        (format!("fashion-mnist:{FASHION_MNIST_DIR}"), None)
    } else {
        (
            "digits".into(),
            Some(format!(
                "{FASHION_MNIST_DIR} is absent on this machine, so the built-in 8×8 digits were used \
                 instead (install Debian's dataset-fashion-mnist, or pass --data)"
            )),
        )
    }
}

/// The methods of Table 2.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Method {
    /// Untied, only the chosen stages trained with the adjoint.
    Adjoint,
    /// Untied, the same with backprop.
    Backprop,
    /// The control: tied at the deep depth, not untied, the adjoint.
    Tied,
    /// The control with backprop: separates what the tied form costs from what the adjoint's
    /// gradient error costs (doctor measures that error on the tied model).
    TiedBackprop,
}

impl Method {
    const ALL: [Method; 4] = [
        Method::Adjoint,
        Method::Backprop,
        Method::Tied,
        Method::TiedBackprop,
    ];

    fn tied(self) -> bool {
        matches!(self, Method::Tied | Method::TiedBackprop)
    }

    fn name(self) -> &'static str {
        match self {
            Method::Adjoint => "untied + adjoint",
            Method::Backprop => "untied + backprop",
            Method::Tied => "tied (control) + adjoint",
            Method::TiedBackprop => "tied (control) + backprop",
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Method::Adjoint => "finetune-adjoint",
            Method::Backprop => "finetune-backprop",
            Method::Tied => "finetune-tied",
            Method::TiedBackprop => "finetune-tied-backprop",
        }
    }

    fn mode(self) -> GradMode {
        match self {
            Method::Backprop | Method::TiedBackprop => GradMode::Backprop,
            _ => GradMode::Adjoint,
        }
    }
}

impl Config {
    /// Rejects settings that cannot run, naming the flag, before any training.
    pub fn check(&self) -> Result<()> {
        super::check_sizes(&[
            ("--depth", self.depth),
            ("--pretrain-epochs", self.pretrain_epochs),
            ("--finetune-epochs", self.finetune_epochs),
            ("--scratch-epochs", self.scratch_epochs),
            ("--grad-batch", self.grad_batch),
        ])?;
        let nonempty = [
            ("--seeds", self.seeds.is_empty()),
            ("--eval-depths", self.eval_depths.is_empty()),
            ("--train-stages", self.train_stages.is_empty()),
        ];
        if let Some((flag, _)) = nonempty.iter().find(|(_, empty)| *empty) {
            return Err(Error::invalid(*flag, "needs at least one value"));
        }
        if let Some(d) = self.eval_depths.iter().find(|&&d| d == 0) {
            return Err(Error::invalid(
                "--eval-depths",
                format!("{d}: every depth must be at least 1"),
            ));
        }
        if self.deep_depth <= self.depth {
            return Err(Error::invalid(
                "--deep-depth",
                format!(
                    "{}: untying must reach deeper than the pre-training --depth {}",
                    self.deep_depth, self.depth
                ),
            ));
        }
        if !(self.finetune_lr > 0.0 && self.finetune_lr.is_finite()) {
            return Err(Error::invalid(
                "--finetune-lr",
                format!("{}: must be positive", self.finetune_lr),
            ));
        }
        self.configs().iter().try_for_each(TrainConfig::check)
    }

    /// Functions per stack: `depth` everywhere but the deep stage's `deep`.
    pub fn depths(&self, deep: usize) -> Vec<usize> {
        let mut v = vec![self.depth; self.arch.stacks()];
        v[self.arch.deep_stack()] = deep;
        v
    }

    /// The model of `depths` functions per stack.
    fn spec(&self, depths: &[usize], tied: bool) -> ModelSpec {
        let mut m = self.train.model.clone();
        m.tied = tied;
        match self.arch {
            Architecture::Tiny => {
                m.arch = Arch::Tiny;
                m.depth = Some(depths[0]);
            }
            Architecture::Authors => {
                let mut layers = [1; 4];
                layers.iter_mut().zip(depths).for_each(|(l, d)| *l = d + 1);
                m.arch = Arch::Authors(layers);
                m.depth = None;
            }
        }
        m
    }

    /// The pre-training of the tied (`tied`) or untied model.
    fn pretrain(&self, tied: bool) -> TrainConfig {
        let mut c = self.train.clone();
        c.model = self.spec(&self.depths(self.depth), tied);
        c.grad = GradMode::Backprop;
        c.epochs = self.pretrain_epochs;
        c.seed = self.seeds[0];
        c.adaptive_lr = false;
        c
    }

    /// A fine-tuning run. Untied, the residual functions train at lr × N: each then moves as
    /// the tied function did, whose gradient sums its N copies'.
    fn finetune(&self, method: Method, seed: u64) -> TrainConfig {
        let mut c = self.train.clone();
        c.model = self.spec(&self.depths(self.deep_depth), method.tied());
        c.adaptive_lr = !method.tied();
        c.grad = method.mode();
        c.epochs = self.finetune_epochs;
        c.lr = self.finetune_lr;
        c.seed = seed;
        c.train_stages = Some(self.train_stages.clone());
        c
    }

    /// The untied deep model trained from scratch (all stages) in `mode` (Fig. 3b), as the
    /// paper's ResNet-101 is (paper.md §3.3): every function drawn independently (TinyResNet's
    /// piecewise-constant initialisation would start it smooth in depth) and trained at the
    /// plain lr unless `scratch_lr_times_n` (the authors' `--adaptive`).
    fn scratch(&self, mode: GradMode) -> TrainConfig {
        let mut c = self.train.clone();
        c.model = self.spec(&self.depths(self.deep_depth), false);
        c.model.base_depth = self.deep_depth;
        c.adaptive_lr = self.scratch_lr_times_n;
        c.grad = mode;
        c.epochs = self.scratch_epochs;
        c.seed = self.seeds[0];
        c
    }

    fn configs(&self) -> Vec<TrainConfig> {
        let mut v = vec![self.pretrain(true), self.pretrain(false)];
        for &seed in &self.seeds {
            v.extend(Method::ALL.iter().map(|&m| self.finetune(m, seed)));
        }
        v.extend([GradMode::Adjoint, GradMode::Backprop].map(|m| self.scratch(m)));
        v
    }
}

/// Test accuracy of both pre-trained models at one evaluation depth (Fig. 3a).
#[derive(Debug, Clone, Serialize)]
pub struct DepthRow {
    pub depth: usize,
    /// In %.
    pub tied_acc: f64,
    pub untied_acc: f64,
}

/// One fine-tuning run (a row of Table 2 before the summary over seeds).
#[derive(Debug, Clone, Serialize)]
pub struct FinetuneRow {
    pub method: String,
    pub seed: u64,
    /// Best test accuracy over the epochs, in %.
    pub best_test_acc: f64,
    pub final_train_loss: f64,
    pub seconds_per_epoch: f64,
    /// Test accuracy after every epoch, in %.
    pub test_accs: Vec<f64>,
    /// Why the run stopped, when its loss went non-finite: a result of the method (a tied
    /// model fine-tuned at depth 32 diverged at lr 0.01 on 20 000 images), not a reason to
    /// stop the experiment. Its accuracies are NaN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diverged: Option<String>,
}

/// Table 2's row of one method: mean and spread over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub method: String,
    pub seeds: usize,
    pub mean_best_acc: f64,
    pub min_best_acc: f64,
    pub max_best_acc: f64,
    pub mean_train_loss: f64,
    pub seconds_per_epoch: f64,
    /// Measured activation memory of one step of the deep stage at the deep depth (bytes; see
    /// [`MemoryRow::activation_bytes`]).
    pub step_memory_bytes: usize,
}

/// Memory of one training step of the deep model.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryRow {
    pub mode: String,
    pub depth: usize,
    /// The tied model (its parameters, hence its gradients, do not grow with depth).
    pub tied: bool,
    /// Peak heap bytes of one whole training step.
    pub bytes: usize,
    /// The deep stage's activation memory: the transient peak of one step of that stack
    /// alone, less the gradients it returns (which grow with an untied stack's depth whatever
    /// the gradient mode).
    pub activation_bytes: usize,
}

/// Doctor's numbers on the deep stage of one model.
#[derive(Debug, Clone, Serialize)]
pub struct DoctorRow {
    pub model: String,
    pub depth: usize,
    /// max_n ‖θ_{n+1} − θ_n‖·N / mean_n ‖θ_n‖ (0 when tied).
    pub smoothness: f64,
    /// Adjoint vs backprop, median over the stage's tensors of mean((g_b − g_a)²)/mean(g_b²).
    pub grad_median: f64,
    pub grad_max: f64,
    /// The same with Heun's scheme (its largest per-tensor error).
    pub heun_grad_max: f64,
    pub verdict: String,
}

/// The training curve of one run (Fig. 3b).
#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    pub run: String,
    pub history: Vec<EpochMetrics>,
}

/// Everything measured.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Data {
    pub setting: String,
    pub command: String,
    pub data_note: Option<String>,
    pub test_images: usize,
    /// Test accuracy (%) of the pre-trained models at their training depth, last epoch.
    pub tied_acc: f64,
    pub untied_acc: f64,
    pub depths: Vec<DepthRow>,
    /// max |logits(untied) − logits(tied)| / max |logits(tied)| at the deep depth.
    pub untie_rel_diff: f64,
    /// Test accuracy (%) of the untied deep model before fine-tuning.
    pub acc_before: f64,
    pub finetune: Vec<FinetuneRow>,
    pub summary: Vec<Summary>,
    pub memory: Vec<MemoryRow>,
    pub memory_counted: bool,
    pub doctor: Vec<DoctorRow>,
    pub curves: Vec<Curve>,
}

/// The loaded data, checked, with the run directories' parent.
struct Ctx<'a> {
    cfg: &'a Config,
    p: &'a Placement,
    split: Split,
    prepared: Prepared,
    runs: PathBuf,
    /// The `--init` model, checked against the settings.
    init: Option<Model>,
}

/// Names the stage on the bar, and on its own line when stderr is not a terminal (a log
/// file, nohup, a batch job), where the bar is not drawn.
fn announce(bar: &ProgressBar, show: bool, stage: String) {
    if show && !std::io::stderr().is_terminal() {
        eprintln!(
            "finetune: {stage} ({:.0} s elapsed)",
            bar.elapsed().as_secs_f64()
        );
    }
    bar.set_message(stage);
}

/// Runs the experiment, its trainings as run directories under `out/runs`, writing what is
/// measured so far to `out/finetune.json` after each stage.
pub fn run(cfg: &Config, p: &Placement, out: &Path, show: bool) -> Result<Data> {
    cfg.check()?;
    let ctx = load(cfg, p, out)?;
    // Pre-training, measuring, one step per seed, two scratch runs.
    let bar = progress(4 + cfg.seeds.len() as u64, "finetune", show);
    let partial = out.join(DATA_FILE);
    let mut data = Data {
        setting: setting(cfg, &ctx.prepared),
        command: cfg.command.clone(),
        data_note: cfg.data_note.clone(),
        test_images: ctx.prepared.test.len(),
        ..Data::default()
    };
    announce(&bar, show, "pre-training".into());
    let tied = match &ctx.init {
        Some(model) => independent_copy(model),
        None => ctx.train("pretrain-tied", &cfg.pretrain(true), None)?.model,
    };
    let untied = ctx.train("pretrain-untied", &cfg.pretrain(false), None)?;
    bar.inc(1);
    data.tied_acc = 100.0 * evaluate(&tied, &ctx.prepared.test, p)?.1;
    data.untied_acc = final_acc(&untied);
    data.depths = ctx.depth_rows(&tied, &untied.model)?;
    let deep_tied = tied.piecewise_copy_each(&cfg.depths(cfg.deep_depth))?;
    let deep = deep_tied.untie();
    data.untie_rel_diff = ctx.logit_difference(&deep_tied, &deep)?;
    data.acc_before = 100.0 * evaluate(&deep, &ctx.prepared.test, p)?.1;
    data.memory = ctx.memory(&deep_tied)?;
    data.memory_counted = crate::memory::is_counting();
    let batch = ctx.doctor_batch()?;
    data.doctor
        .push(ctx.doctor_row("pre-trained tied", &deep_tied, &batch)?);
    write_json(&partial, &data)?;
    bar.inc(1);
    for &seed in &cfg.seeds {
        for method in Method::ALL {
            announce(&bar, show, format!("{} seed {seed}", method.dir()));
            let start = if method.tied() { &deep_tied } else { &deep };
            let name = format!("{}-s{seed}", method.dir());
            let result = match ctx.train(&name, &cfg.finetune(method, seed), Some(start)) {
                Ok(result) => result,
                Err(Error::NonFinite { what }) => {
                    data.finetune.push(diverged_row(method, seed, what));
                    write_json(&partial, &data)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if seed == cfg.seeds[0] && !method.tied() {
                let label = format!("fine-tuned {}", method.name());
                data.doctor
                    .push(ctx.doctor_row(&label, &result.model, &batch)?);
            }
            data.finetune.push(finetune_row(method, seed, &result));
            write_json(&partial, &data)?;
        }
        bar.inc(1);
    }
    for mode in [GradMode::Adjoint, GradMode::Backprop] {
        announce(&bar, show, format!("scratch {mode}"));
        let name = format!("scratch-{mode}");
        let result = ctx.train(&name, &cfg.scratch(mode), None)?;
        let label = format!("scratch, trained with {mode}");
        data.doctor
            .push(ctx.doctor_row(&label, &result.model, &batch)?);
        data.curves.push(Curve {
            run: name,
            history: result.history,
        });
        write_json(&partial, &data)?;
        bar.inc(1);
    }
    data.summary = summarize(&data);
    bar.finish_and_clear();
    Ok(data)
}

/// Loads and checks the data and the stage names, so bad input fails before any training.
fn load<'a>(cfg: &'a Config, p: &'a Placement, out: &Path) -> Result<Ctx<'a>> {
    let spec: DataSpec = cfg.train.data.parse()?;
    let split = spec.load(cfg.seeds[0])?;
    for (what, empty) in [
        ("training", split.train.is_empty()),
        ("test", split.test.is_empty()),
    ] {
        if empty {
            return Err(Error::invalid("--data", format!("the {what} set is empty")));
        }
    }
    let prepared = prepare(split.clone(), &cfg.train)?;
    let deep = cfg.finetune(Method::Adjoint, cfg.seeds[0]).model;
    let model = deep.init(p, prepared.input, &mut Rng::new(0))?;
    frozen_params(&model, Some(&cfg.train_stages))?;
    let init = match &cfg.init {
        Some(dir) => Some(init_model(dir, cfg, &prepared, p)?),
        None => None,
    };
    Ok(Ctx {
        cfg,
        p,
        split,
        prepared,
        runs: out.join(RUNS_DIR),
        init,
    })
}

/// The tied model of `--init`: the last checkpoint of a run directory, or (the authors'
/// architecture) their tied PyTorch checkpoint; refused, naming the flag at fault, unless it
/// is a tied model of the experiment's architecture, `--depth` (a run; a PyTorch checkpoint
/// of a tied model has no depth) and `--planes`, for the data's images and classes.
fn init_model(path: &Path, cfg: &Config, data: &Prepared, p: &Placement) -> Result<Model> {
    if !path.is_dir() {
        return init_checkpoint(path, cfg, data, p);
    }
    let (record, _, model) = load_run(path, p)?;
    let spec = &record.config.model;
    let what = format!("{}", path.display());
    let same_arch = match cfg.arch {
        Architecture::Tiny => spec.arch == Arch::Tiny,
        Architecture::Authors => matches!(spec.arch, Arch::Authors(_)),
    };
    if !same_arch || !model.is_tied() {
        let tied = if model.is_tied() { "tied" } else { "untied" };
        return Err(Error::invalid(
            "--init",
            format!(
                "{what} holds an {tied} {} run: --model {} needs a tied {} run (resnet-ode train --tied)",
                spec.arch,
                cfg.arch,
                cfg.spec(&cfg.depths(cfg.depth), true).arch
            ),
        ));
    }
    check_input(&what, record.input, data)?;
    check_planes(spec.planes, cfg)?;
    let depths = model.stack_depths();
    if depths.iter().any(|&d| d != cfg.depth) {
        return Err(Error::invalid(
            "--depth",
            format!(
                "{}: the --init run was trained with {depths:?} functions per stack; pass --depth {}",
                cfg.depth,
                depths.first().copied().unwrap_or(0)
            ),
        ));
    }
    Ok(model)
}

/// `--init FILE`: the authors' tied PyTorch checkpoint (`IResNetAuto2`, any wrapper), loaded
/// strictly into the tied model of `--depth` functions per stack (its weights do not fix a
/// depth).
fn init_checkpoint(path: &Path, cfg: &Config, data: &Prepared, p: &Placement) -> Result<Model> {
    if cfg.arch != Architecture::Authors {
        return Err(Error::invalid(
            "--init",
            format!(
                "{}: not a run directory; a tied TinyResNet has no PyTorch layout, so --model tiny takes a finished tied run (resnet-ode train --tied --out DIR)",
                path.display()
            ),
        ));
    }
    let spec = cfg.spec(&cfg.depths(cfg.depth), true);
    let checkpoint = Checkpoint::open(path)?;
    let found = checkpoint.input(&spec, data.input.height, data.input.width)?;
    check_input(&path.display().to_string(), found, data)?;
    let options = ImportOptions { partial: false };
    load_model(path, &spec, data.input, p, &options)
}

/// Refuses an `--init` model made for other images or classes than `--data`'s.
fn check_input(what: &str, found: InputShape, data: &Prepared) -> Result<()> {
    let want = data.input;
    if (found.channels, found.classes) == (want.channels, want.classes)
        && (found.height, found.width) == (want.height, want.width)
    {
        return Ok(());
    }
    Err(Error::invalid(
        "--init",
        format!(
            "{what} was made for {}×{}×{} images with {} classes; --data has {}×{}×{} with {}",
            found.channels,
            found.height,
            found.width,
            found.classes,
            want.channels,
            want.height,
            want.width,
            want.classes
        ),
    ))
}

fn check_planes(planes: usize, cfg: &Config) -> Result<()> {
    if planes == cfg.train.model.planes {
        return Ok(());
    }
    Err(Error::invalid(
        "--planes",
        format!(
            "{}: the --init model has {planes} base channels",
            cfg.train.model.planes
        ),
    ))
}

impl Ctx<'_> {
    /// Trains (or resumes, or reloads when finished) run directory `runs/name`.
    fn train(
        &self,
        name: &str,
        config: &TrainConfig,
        initial: Option<&Model>,
    ) -> Result<TrainResult> {
        let dir = self.runs.join(name);
        let options = TrainOptions {
            resume: dir.join(RUN_FILE).exists(),
            out: Some(dir),
            initial: initial.map(independent_copy),
            ..TrainOptions::default()
        };
        train_on(self.split.clone(), config, self.p, &options)
    }

    /// Fig. 3(a): test accuracy of both models copied piecewise to each evaluation depth.
    fn depth_rows(&self, tied: &Model, untied: &Model) -> Result<Vec<DepthRow>> {
        let acc = |m: &Model, d: usize| -> Result<f64> {
            Ok(100.0 * evaluate(&m.piecewise_copy(d)?, &self.prepared.test, self.p)?.1)
        };
        // The training depth is always evaluated: the claims measure drops from it.
        let mut depths = self.cfg.eval_depths.clone();
        depths.push(self.cfg.depth);
        depths.sort_unstable();
        depths.dedup();
        depths
            .into_iter()
            .map(|depth| {
                Ok(DepthRow {
                    depth,
                    tied_acc: acc(tied, depth)?,
                    untied_acc: acc(untied, depth)?,
                })
            })
            .collect()
    }

    /// max |a − b| / max |a| over the test logits of `a` and `b`.
    fn logit_difference(&self, a: &Model, b: &Model) -> Result<f64> {
        let la = score_images(a, &self.prepared.test, self.p)?.logits;
        let lb = score_images(b, &self.prepared.test, self.p)?.logits;
        let (mut diff, mut scale) = (0.0f64, 0.0f64);
        for (ra, rb) in la.iter().zip(&lb) {
            for (x, y) in ra.iter().zip(rb) {
                diff = diff.max((x - y).abs());
                scale = scale.max(x.abs());
            }
        }
        Ok(diff / scale.max(f64::MIN_POSITIVE))
    }

    /// Memory at the deep depth and twice it, untied and tied, with the adjoint (and its
    /// one-thread form) and with backprop: the heap peak of one whole training step, and the
    /// deep stage's activation memory alone (a step of that stack from its input on the same
    /// batch, loss mean(x_N²): its transient peak, less what it returns, its parameter
    /// gradients and dL/dx₀; what `bench memory` measures). Each the largest of
    /// [`MEMORY_REPS`] (the default adjoint's second thread makes a single peak vary with
    /// thread timing: with 3 repetitions a 2N/N ratio read 0.98 in one run, 1.15 in another).
    fn memory(&self, deep_tied: &Model) -> Result<Vec<MemoryRow>> {
        let batch = self.first_batch(self.cfg.train.batch_size)?;
        let (classes, bn) = (self.prepared.input.classes, self.cfg.train.bn);
        let stack = self.cfg.arch.deep_stack();
        let images = DeviceBatch::new(self.p, &batch, classes).images;
        let x0 = deep_tied
            .stack_inputs(images, bn)
            .into_iter()
            .nth(stack)
            .ok_or_else(|| Error::invalid("--model", "the model has no deep stack"))?;
        let mut rows = Vec::new();
        for depth in [self.cfg.deep_depth, 2 * self.cfg.deep_depth] {
            let tied = deep_tied.piecewise_copy_each(&self.cfg.depths(depth))?;
            for model in [tied.untie(), tied] {
                for mode in [
                    GradMode::Adjoint,
                    GradMode::AdjointSerial,
                    GradMode::Backprop,
                ] {
                    let bytes = (0..MEMORY_REPS)
                        .map(|_| step_memory(&model, self.p, &batch, classes, &[mode], bn))
                        .max()
                        .unwrap_or(0);
                    rows.push(MemoryRow {
                        mode: mode.to_string(),
                        depth,
                        tied: model.is_tied(),
                        bytes,
                        activation_bytes: stage_activation_bytes(&model, stack, &x0, mode, bn)
                            .unwrap_or(0),
                    });
                }
            }
        }
        Ok(rows)
    }

    /// The first `n` training images in order (no shuffle, no augmentation).
    fn first_batch(&self, n: usize) -> Result<Batch> {
        let mut rng = Rng::new(0);
        batches(self.prepared.train.clone(), n, false, None, &mut rng, false)?
            .next()
            .ok_or_else(|| Error::invalid("--data", "the training set is empty"))
    }

    /// Doctor's measurements of `model`'s deep stack: the weights' smoothness over depth, the
    /// adjoint's gradient error with Euler and with Heun (that stack in adjoint mode, every
    /// other in backprop, against backprop everywhere, per tensor as doctor does), and
    /// doctor's verdict from them at its default tolerance.
    fn doctor_row(&self, label: &str, model: &Model, batch: &DeviceBatch) -> Result<DoctorRow> {
        let (stack, bn) = (self.cfg.arch.deep_stack(), self.cfg.train.bn);
        let error = |scheme: Scheme| -> Result<Option<GradientError>> {
            let Ok(m) = model.with_scheme(scheme) else {
                return Ok(None);
            };
            let backprop = finite_step(&m, batch, &[GradMode::Backprop], bn)?;
            stack_gradient_error(&m, batch, bn, stack, &backprop).map(Some)
        };
        let (euler, heun) = (error(Scheme::Euler)?, error(Scheme::Heun)?);
        let own = self.cfg.train.model.scheme;
        let own_error = if own == Scheme::Heun { &heun } else { &euler };
        let n = model.stack_depths()[stack];
        let max = |e: &Option<GradientError>| e.as_ref().map(|g| g.max_rel_sq_error);
        let v = verdict(
            own,
            n,
            max(own_error),
            max(&heun),
            checkpoint_k(own.steps(n)),
            DEFAULT_TOL,
        );
        Ok(DoctorRow {
            model: label.into(),
            depth: n,
            smoothness: stack_smoothness(model, stack),
            grad_median: own_error
                .as_ref()
                .map_or(f64::NAN, |g| g.median_rel_sq_error()),
            grad_max: max(own_error).unwrap_or(f64::NAN),
            heun_grad_max: max(&heun).unwrap_or(f64::NAN),
            verdict: v.label(own),
        })
    }

    fn doctor_batch(&self) -> Result<DeviceBatch> {
        let batch = self.first_batch(self.cfg.grad_batch)?;
        Ok(DeviceBatch::new(
            self.p,
            &batch,
            self.prepared.input.classes,
        ))
    }
}

/// The activation memory of one step of stack `i` of `model` alone from `x0` (see
/// [`step_activation_bytes`]); None without the counting allocator.
fn stage_activation_bytes(
    model: &Model,
    i: usize,
    x0: &Tensor<4>,
    mode: GradMode,
    bn: BnMode,
) -> Option<usize> {
    let conv = model.stacks();
    match conv.get(i) {
        Some(s) => step_activation_bytes(*s, x0, mode, bn, MEMORY_REPS),
        None => {
            let s = model.bottleneck_stacks()[i - conv.len()];
            step_activation_bytes(s, x0, mode, bn, MEMORY_REPS)
        }
    }
}

/// Test accuracy (%) after the last epoch: that of the model the experiment goes on with.
fn final_acc(r: &TrainResult) -> f64 {
    r.history.last().map_or(f64::NAN, |m| 100.0 * m.test_acc)
}

/// The row of a fine-tuning run whose loss went non-finite (`what`).
fn diverged_row(method: Method, seed: u64, what: String) -> FinetuneRow {
    FinetuneRow {
        method: method.name().into(),
        seed,
        best_test_acc: f64::NAN,
        final_train_loss: f64::NAN,
        seconds_per_epoch: f64::NAN,
        test_accs: Vec::new(),
        diverged: Some(what),
    }
}

fn finetune_row(method: Method, seed: u64, r: &TrainResult) -> FinetuneRow {
    let epochs = r.history.len().max(1) as f64;
    FinetuneRow {
        method: method.name().into(),
        seed,
        best_test_acc: 100.0 * r.best_test_acc(),
        final_train_loss: r.history.last().map_or(f64::NAN, |m| m.train_loss),
        seconds_per_epoch: r.history.iter().map(|m| m.seconds).sum::<f64>() / epochs,
        test_accs: r.history.iter().map(|m| 100.0 * m.test_acc).collect(),
        diverged: None,
    }
}

/// Table 2: each method's mean and range over seeds, with its step memory at the deep depth.
fn summarize(data: &Data) -> Vec<Summary> {
    let deep = data.memory.iter().map(|m| m.depth).min().unwrap_or(0);
    Method::ALL
        .iter()
        .filter_map(|&method| {
            let rows: Vec<&FinetuneRow> = data
                .finetune
                .iter()
                .filter(|r| r.method == method.name())
                .collect();
            if rows.is_empty() {
                return None;
            }
            let n = rows.len() as f64;
            let accs = rows.iter().map(|r| r.best_test_acc);
            let memory = data.memory.iter().find(|m| {
                m.depth == deep && m.tied == method.tied() && m.mode == method.mode().to_string()
            });
            Some(Summary {
                method: method.name().into(),
                seeds: rows.len(),
                mean_best_acc: accs.clone().sum::<f64>() / n,
                min_best_acc: accs.clone().fold(f64::INFINITY, f64::min),
                max_best_acc: accs.fold(f64::NEG_INFINITY, f64::max),
                mean_train_loss: rows.iter().map(|r| r.final_train_loss).sum::<f64>() / n,
                seconds_per_epoch: rows.iter().map(|r| r.seconds_per_epoch).sum::<f64>() / n,
                step_memory_bytes: memory.map_or(0, |m| m.activation_bytes),
            })
        })
        .collect()
}

fn setting(cfg: &Config, data: &Prepared) -> String {
    let t = &cfg.train;
    let init = cfg.init.as_ref().map_or(String::new(), |d| {
        format!(
            "the tied model taken from --init {} (normalised with this data's statistics), ",
            d.display()
        )
    });
    format!(
        "{} (planes {}, {}, batch norm `{}`) on {} ({} training / {} test images); \
         {init}pre-training: tied and untied with {:?} functions per stack, backprop, {} epochs, SGD lr {} ({}), batch {}; \
         fine-tuning with {:?} functions per stack: only {:?} trained, {} epochs, lr {} ({}; untied residual \
         functions at lr × N), seeds {:?}; from scratch: untied, {:?} functions per stack drawn \
         independently, {} epochs, lr {}{}; doctor on the first {} training images",
        match cfg.arch {
            Architecture::Tiny => "TinyResNet",
            Architecture::Authors => "The authors' bottleneck ResNet",
        },
        t.model.planes,
        t.model.scheme,
        t.bn,
        t.data,
        data.train.len(),
        data.test.len(),
        cfg.depths(cfg.depth),
        cfg.pretrain_epochs,
        t.lr,
        t.schedule,
        t.batch_size,
        cfg.depths(cfg.deep_depth),
        cfg.train_stages,
        cfg.finetune_epochs,
        cfg.finetune_lr,
        t.schedule,
        cfg.seeds,
        cfg.depths(cfg.deep_depth),
        cfg.scratch_epochs,
        t.lr,
        if cfg.scratch_lr_times_n {
            " (residual functions at lr × N)"
        } else {
            ""
        },
        cfg.grad_batch.min(data.train.len()),
    )
}

/// The largest accuracy drop (points) of `acc` from `at` over the rows `keep` selects.
fn largest_drop(
    rows: &[DepthRow],
    keep: impl Fn(usize) -> bool,
    acc: impl Fn(&DepthRow) -> f64,
    at: f64,
) -> f64 {
    rows.iter()
        .filter(|r| keep(r.depth))
        .map(|r| at - acc(r))
        .fold(f64::NEG_INFINITY, f64::max)
}

fn summary_of(data: &Data, method: Method) -> Option<&Summary> {
    data.summary.iter().find(|s| s.method == method.name())
}

fn doctor_of<'a>(data: &'a Data, prefix: &str) -> Option<&'a DoctorRow> {
    data.doctor.iter().find(|d| d.model.starts_with(prefix))
}

/// The claims, each with its measured value and a threshold fixed in advance.
pub fn claims(data: &Data, cfg: &Config) -> Vec<Claim> {
    let mut c = vec![Claim::bound(
        "finetune: untying is exact (max logit difference / max |logit|, f32)",
        data.untie_rel_diff,
        UNTIE_TOL,
        0.0,
        format!(
            "{:.3e}: tied model at depth {} vs its untied copy, test set",
            data.untie_rel_diff, cfg.deep_depth
        ),
    )];
    let at = |f: fn(&DepthRow) -> f64| {
        data.depths
            .iter()
            .find(|r| r.depth == cfg.depth)
            .map_or(f64::NAN, f)
    };
    let above = |d: usize| d > cfg.depth;
    let other = |d: usize| d != cfg.depth;
    let tied_drop = largest_drop(&data.depths, above, |r| r.tied_acc, at(|r| r.tied_acc));
    let untied_drop = largest_drop(&data.depths, other, |r| r.untied_acc, at(|r| r.untied_acc));
    c.push(Claim::bound(
        "finetune: tied model ODE-like (largest accuracy drop above training depth, points)",
        tied_drop,
        ODE_LIKE_DROP,
        0.0,
        format!("depths {:?}, trained at {}", cfg.eval_depths, cfg.depth),
    ));
    c.push(Claim::bound(
        "finetune: untied model not ODE-like (−largest drop at other depths, points)",
        -untied_drop,
        -ODE_LIKE_DROP,
        0.0,
        "piecewise copies of the untied model; holds when it loses more than the tied bound",
    ));
    let (adj, bp) = (
        summary_of(data, Method::Adjoint),
        summary_of(data, Method::Backprop),
    );
    let mean = |s: Option<&Summary>| s.map_or(f64::NAN, |s| s.mean_best_acc);
    let range = |s: Option<&Summary>| s.map_or(f64::NAN, |s| s.max_best_acc - s.min_best_acc);
    // One test image is the resolution of an accuracy: a gain, a shortfall or a spread below
    // it is none.
    let one_image = 100.0 / data.test_images.max(1) as f64;
    c.push(Claim::bound(
        "finetune: adjoint fine-tuning improves on the pretrained model (−gain, points)",
        -(mean(adj) - data.acc_before),
        -one_image,
        0.0,
        format!(
            "mean best test accuracy over seeds vs {:.2} % before fine-tuning; a gain of at least one test image",
            data.acc_before
        ),
    ));
    let spread = range(adj).max(range(bp)).max(one_image);
    c.push(Claim::new(
        "finetune: adjoint matches backprop fine-tuning within seed spread (points)",
        mean(adj) - mean(bp),
        0.0,
        spread,
        "mean best test accuracy; tolerance: the larger range over seeds of the two, at least one test image",
    ));
    c.extend(memory_claims(data, cfg));
    let fine = doctor_of(data, "fine-tuned untied + adjoint").map_or(f64::NAN, |d| d.grad_median);
    let scratch =
        doctor_of(data, "scratch, trained with backprop").map_or(f64::NAN, |d| d.grad_median);
    c.push(Claim::bound(
        "finetune: adjoint gradient error from scratch ≫ fine-tuned (−ratio)",
        -(scratch / fine),
        -FAR_LARGER,
        0.0,
        format!("doctor's median relative squared error, scratch-backprop {scratch:.3e} vs fine-tuned {fine:.3e}"),
    ));
    let best = |mode: &str| {
        data.curves
            .iter()
            .find(|cv| cv.run == format!("scratch-{mode}"))
            .map_or(f64::NAN, |cv| {
                100.0 * cv.history.iter().map(|m| m.test_acc).fold(0.0, f64::max)
            })
    };
    c.push(Claim::bound(
        "finetune: from scratch the adjoint falls short of backprop (adjoint − backprop, points)",
        best("adjoint") - best("backprop"),
        -one_image,
        0.0,
        "best test accuracy of the untied deep model trained from scratch; short by at least one test image",
    ));
    c
}

/// Activation memory from depth D to 2D: flat for the adjoint, growing for backprop.
fn memory_claims(data: &Data, cfg: &Config) -> Vec<Claim> {
    let bytes = |mode: &str, depth: usize| {
        data.memory
            .iter()
            .find(|m| !m.tied && m.mode == mode && m.depth == depth)
            .map_or(f64::NAN, |m| m.activation_bytes as f64)
    };
    let ratio = |mode: &str| bytes(mode, 2 * cfg.deep_depth) / bytes(mode, cfg.deep_depth);
    let detail = format!(
        "one step of the deep stage alone, transient peak less the gradients it returns, untied model, depth {} → {}{}",
        cfg.deep_depth,
        2 * cfg.deep_depth,
        if data.memory_counted {
            ""
        } else {
            " (not measured: no counting allocator)"
        }
    );
    vec![
        Claim::bound(
            "finetune: adjoint step memory does not grow with depth (ratio 2N/N)",
            ratio("adjoint"),
            FLAT,
            0.0,
            detail.clone(),
        ),
        Claim::bound(
            "finetune: backprop step memory grows with depth (−ratio 2N/N)",
            -ratio("backprop"),
            -GROWS,
            0.0,
            detail,
        ),
    ]
}

/// Writes the CSV and JSON files and the figures, and returns the outcome for the report.
pub fn write(data: &Data, cfg: &Config, dir: &Path) -> Result<Outcome> {
    write_json(&dir.join(DATA_FILE), data)?;
    write_json(&dir.join("table2.json"), &data.summary)?;
    write_csvs(data, dir)?;
    plot_depths(data, cfg, dir)?;
    plot_curves(data, dir)?;
    plot_table2(data, dir)?;
    Ok(Outcome {
        name: "finetune".into(),
        claims: claims(data, cfg),
        table: table2(data),
        markdown: markdown(data, cfg),
    })
}

fn write_csvs(data: &Data, dir: &Path) -> Result<()> {
    let rows: Vec<Vec<String>> = data
        .depths
        .iter()
        .map(|r| vec![r.depth.to_string(), num(r.tied_acc), num(r.untied_acc)])
        .collect();
    write_csv(
        &dir.join("accuracy_vs_depth.csv"),
        &["depth", "tied_acc", "untied_acc"],
        &rows,
    )?;
    let rows: Vec<Vec<String>> = data
        .finetune
        .iter()
        .map(|r| {
            vec![
                r.method.clone(),
                r.seed.to_string(),
                num(r.best_test_acc),
                num(r.final_train_loss),
                num(r.seconds_per_epoch),
            ]
        })
        .collect();
    let header = [
        "method",
        "seed",
        "best_test_acc",
        "final_train_loss",
        "seconds_per_epoch",
    ];
    write_csv(&dir.join("finetune_runs.csv"), &header, &rows)?;
    let rows: Vec<Vec<String>> = data
        .memory
        .iter()
        .map(|m| {
            vec![
                m.mode.clone(),
                m.depth.to_string(),
                m.tied.to_string(),
                m.bytes.to_string(),
                m.activation_bytes.to_string(),
            ]
        })
        .collect();
    let header = ["mode", "depth", "tied", "peak_bytes", "activation_bytes"];
    write_csv(&dir.join("memory.csv"), &header, &rows)?;
    let rows: Vec<Vec<String>> = data
        .doctor
        .iter()
        .map(|d| {
            vec![
                d.model.clone(),
                d.depth.to_string(),
                num(d.smoothness),
                num(d.grad_median),
                num(d.grad_max),
                num(d.heun_grad_max),
                d.verdict.clone(),
            ]
        })
        .collect();
    let header = [
        "model",
        "depth",
        "smoothness",
        "grad_median",
        "grad_max",
        "heun_grad_max",
        "verdict",
    ];
    write_csv(&dir.join("doctor.csv"), &header, &rows)
}

/// `accuracy_vs_depth.{png,svg}` (Fig. 3a).
fn plot_depths(data: &Data, cfg: &Config, dir: &Path) -> Result<()> {
    let points =
        |f: fn(&DepthRow) -> f64| data.depths.iter().map(|r| (r.depth as f64, f(r))).collect();
    let series = [
        Series::new(
            "tied (ODE-like)",
            points(|r| r.tied_acc),
            SeriesStyle::palette(0).markers(),
        ),
        Series::new(
            "untied",
            points(|r| r.untied_acc),
            SeriesStyle::palette(1).markers(),
        ),
    ];
    lines(
        &dir.join("accuracy_vs_depth"),
        &format!(
            "Test accuracy at other depths (trained at depth {})",
            cfg.depth
        ),
        "evaluation depth N",
        "test accuracy (%)",
        &series,
        false,
    )
}

/// `scratch_loss`, `scratch_accuracy` (Fig. 3b) and `finetune_accuracy` (first seed).
fn plot_curves(data: &Data, dir: &Path) -> Result<()> {
    let curve = |h: &[EpochMetrics], f: fn(&EpochMetrics) -> f64| {
        h.iter().map(|m| (m.epoch as f64, f(m))).collect::<Vec<_>>()
    };
    let style = |i: usize| SeriesStyle::palette(i).markers();
    let loss: Vec<Series> = data
        .curves
        .iter()
        .enumerate()
        .map(|(i, c)| Series::new(c.run.clone(), curve(&c.history, |m| m.train_loss), style(i)))
        .collect();
    lines(
        &dir.join("scratch_loss"),
        "From scratch, untied: training loss",
        "epoch",
        "train loss",
        &loss,
        true,
    )?;
    let acc: Vec<Series> = data
        .curves
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Series::new(
                c.run.clone(),
                curve(&c.history, |m| 100.0 * m.test_acc),
                style(i),
            )
        })
        .collect();
    lines(
        &dir.join("scratch_accuracy"),
        "From scratch, untied: test accuracy",
        "epoch",
        "test accuracy (%)",
        &acc,
        false,
    )?;
    let seed = data.finetune.first().map_or(0, |r| r.seed);
    let fine: Vec<Series> = data
        .finetune
        .iter()
        .filter(|r| r.seed == seed)
        .enumerate()
        .map(|(i, r)| {
            let pts = r
                .test_accs
                .iter()
                .enumerate()
                .map(|(e, &a)| ((e + 1) as f64, a))
                .collect();
            Series::new(r.method.clone(), pts, style(i))
        })
        .collect();
    lines(
        &dir.join("finetune_accuracy"),
        "Fine-tuning at the deep depth: test accuracy",
        "epoch",
        "test accuracy (%)",
        &fine,
        false,
    )
}

/// `table2.{png,svg}`: the best test accuracy of each method (mean, min–max over seeds) beside
/// the untied model before fine-tuning, from a baseline just under the lowest.
fn plot_table2(data: &Data, dir: &Path) -> Result<()> {
    let before = Bar {
        label: "before fine-tuning".into(),
        value: data.acc_before,
        low: data.acc_before,
        high: data.acc_before,
    };
    let methods = data.summary.iter().map(|s| Bar {
        label: s.method.clone(),
        value: s.mean_best_acc,
        low: s.min_best_acc,
        high: s.max_best_acc,
    });
    let all: Vec<Bar> = std::iter::once(before).chain(methods).collect();
    let lowest = all.iter().map(|b| b.low).fold(f64::INFINITY, f64::min);
    let baseline = if lowest.is_finite() {
        (lowest - 2.0).floor().max(0.0)
    } else {
        0.0
    };
    bars(
        &dir.join("table2"),
        "Table 2: best test accuracy at the deep depth (mean, min–max over seeds)",
        "test accuracy (%)",
        &all,
        baseline,
    )
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn table2(data: &Data) -> String {
    let mut s = format!(
        "{:<26} {:>5} {:>10} {:>15} {:>10} {:>9} {:>10}\n",
        "Table 2", "seeds", "best acc", "range", "train loss", "s/epoch", "stage act MiB"
    );
    s.push_str(&format!(
        "{:<26} {:>5} {:>10.2}\n",
        "before fine-tuning", "-", data.acc_before
    ));
    for r in &data.summary {
        s.push_str(&format!(
            "{:<26} {:>5} {:>10.2} {:>7.2}–{:<7.2} {:>10.4} {:>9.2} {:>10.2}\n",
            r.method,
            r.seeds,
            r.mean_best_acc,
            r.min_best_acc,
            r.max_best_acc,
            r.mean_train_loss,
            r.seconds_per_epoch,
            mib(r.step_memory_bytes)
        ));
    }
    s
}

fn markdown(data: &Data, cfg: &Config) -> String {
    let mut md = format!("Command: `{}`\n\n{}.\n\n", data.command, data.setting);
    if let Some(note) = &data.data_note {
        md.push_str(&format!("**Data:** {note}.\n\n"));
    }
    md.push_str(&format!(
        "### Fig. 3(a): accuracy at other depths\n\nPre-trained at depth {}: tied {:.2} %, untied {:.2} % (test accuracy after the last epoch).\n\n![accuracy vs depth](accuracy_vs_depth.png)\n\n| depth | tied (%) | untied (%) |\n|---:|---:|---:|\n",
        cfg.depth, data.tied_acc, data.untied_acc
    ));
    for r in &data.depths {
        md.push_str(&format!(
            "| {} | {:.2} | {:.2} |\n",
            r.depth, r.tied_acc, r.untied_acc
        ));
    }
    md.push_str(&format!(
        "\n### Table 2: fine-tuning with {} at depth {}\n\nUntying: max logit difference / max |logit| = {:.3e}; test accuracy before fine-tuning {:.2} %.\n\n| method | seeds | best test acc (%) mean | min–max | final train loss | s/epoch | deep-stage activations (MiB) |\n|---|---:|---:|---:|---:|---:|---:|\n",
        cfg.arch.deep_stage(), cfg.deep_depth, data.untie_rel_diff, data.acc_before
    ));
    for r in &data.summary {
        md.push_str(&format!(
            "| {} | {} | {:.2} | {:.2}–{:.2} | {:.4} | {:.2} | {:.2} |\n",
            r.method,
            r.seeds,
            r.mean_best_acc,
            r.min_best_acc,
            r.max_best_acc,
            r.mean_train_loss,
            r.seconds_per_epoch,
            mib(r.step_memory_bytes)
        ));
    }
    for r in data.finetune.iter().filter(|r| r.diverged.is_some()) {
        md.push_str(&format!(
            "\n**Diverged:** {} seed {}: {} (its accuracy counts as NaN).\n",
            r.method,
            r.seed,
            r.diverged.as_deref().unwrap_or_default()
        ));
    }
    md.push_str("\n![Table 2](table2.png)\n![fine-tuning](finetune_accuracy.png)\n\nMemory (measured, the largest of eight): the heap peak of one whole training step, and the deep stage's activations (one step of that stack alone: its transient peak less the gradients it returns):\n\n| model | mode | depth | whole step peak MiB | deep-stage activations MiB |\n|---|---|---:|---:|---:|\n");
    for m in &data.memory {
        md.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.2} |\n",
            if m.tied { "tied" } else { "untied" },
            m.mode,
            m.depth,
            mib(m.bytes),
            mib(m.activation_bytes)
        ));
    }
    md.push_str(&format!("\n### Doctor: smoothness and the adjoint's gradient error ({})\n\nPer tensor mean((g_b − g_a)²)/mean(g_b²) of the deep stage's parameters, the stage in adjoint mode and every other in backprop; verdict at doctor's tolerance {DEFAULT_TOL:.0e} on the largest.\n\n| model | depth | smoothness | grad error median | max | max (Heun) | verdict |\n|---|---:|---:|---:|---:|---:|---|\n", cfg.arch.deep_stage()));
    for d in &data.doctor {
        md.push_str(&format!(
            "| {} | {} | {:.3} | {:.3e} | {:.3e} | {:.3e} | {} |\n",
            d.model, d.depth, d.smoothness, d.grad_median, d.grad_max, d.heun_grad_max, d.verdict
        ));
    }
    md.push_str("\n### Fig. 3(b): untied, from scratch\n\n![loss](scratch_loss.png)\n![accuracy](scratch_accuracy.png)\n\n| run | epoch | train loss | test acc (%) |\n|---|---:|---:|---:|\n");
    for c in &data.curves {
        for m in &c.history {
            md.push_str(&format!(
                "| {} | {} | {:.4} | {:.2} |\n",
                c.run,
                m.epoch,
                m.train_loss,
                100.0 * m.test_acc
            ));
        }
    }
    md.push_str("\nFiles: `accuracy_vs_depth.csv`, `finetune_runs.csv`, `table2.json`, `memory.csv`, `doctor.csv`, `finetune.json` (everything, with per-epoch metrics); the trainings' run directories are under `runs/`.\n");
    md
}
