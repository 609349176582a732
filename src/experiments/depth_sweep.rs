//! `experiment depth-sweep` (paper.md §3.4, Figures 3(c) and 4): the paper's TinyResNet trained
//! at depths 2…64 as a ResNet (Euler) and as a HeunNet (Heun), each with backprop and with the
//! memory-free adjoint, over several seeds.
//!
//! Two figures, as the authors' `plot_paper_heun.py` and `plot_grad_dist.py`:
//! - the best-epoch test error vs depth, median over seeds with the quartile band, darkblue
//!   ResNet / red HeunNet, solid backprop / dashed adjoint;
//! - the adjoint's gradient error on the trained models: for every parameter tensor except the
//!   biases, `mean((g_b − g_a)²) / mean(g_b²)` between backprop (g_b) and adjoint (g_a)
//!   gradients of one training batch in train mode, scattered per tensor vs depth on a log axis.
//!
//! The adjoint here reconstructs by reverse steps chained from x_N, the algorithm the paper
//! describes (its memcnn code reconstructs each block from its stored output instead, so its
//! errors do not accumulate over depth; paper.md §3.4). The gradient error is measured as the
//! authors' `compare_gradients.py`: one model trained with the adjoint at the base depth (32;
//! first seed) is copied piecewise-constant into a net of each depth 4…64, so every depth
//! carries the same trained function and only the discretisation changes.

use super::{check_depths, num, progress, slope, Outcome};
use crate::data::{batches, Augment, DataSpec, Split};
use crate::device::Placement;
use crate::grad::GradMode;
use crate::metrics::gradient_error;
use crate::models::{Arch, Model};
use crate::params::{flat_grads, independent_copy};
use crate::plot::{band, loglog, Band, Series, SeriesStyle};
use crate::report::{write_csv, write_json, Claim};
use crate::rng::Rng;
use crate::scheme::Scheme;
use crate::train::{prepare, step_gradients, train_on, DeviceBatch, TrainConfig, TrainOptions};
use crate::{Error, Result};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// The default depths: 2…32 rather than the paper's 2…64, so that the default sweep (3 seeds,
/// 2 schemes, 2 modes, 3 epochs) fits in about 15 minutes on 2 CPU cores (measured: 10 min; a
/// depth of 64 alone would cost as much as all the others); pass `--depths` for more.
pub const DEFAULT_DEPTHS: [usize; 5] = [2, 4, 8, 16, 32];
/// Default seeds per configuration (the paper: 4).
pub const DEFAULT_SEEDS: usize = 3;
/// Default epochs on the built-in digits (the paper: 90 on CIFAR-10).
pub const DEFAULT_EPOCHS: usize = 3;
/// Default batch size: on 2 CPU cores a step's cost is nearly proportional to its images, and
/// batches of 16 reach ≈ 97 % on the digits in 3 epochs where batches of 64 reach ≈ 82 %.
pub const DEFAULT_BATCH: usize = 16;
/// The paper's gradient batch: the first training batch of 256 images.
pub const DEFAULT_GRAD_BATCH: usize = 256;
/// The depths `plot_grad_dist.py` compares gradients at.
pub const DEFAULT_GRAD_DEPTHS: [usize; 5] = [4, 8, 16, 32, 64];
/// The depth of the trained model `compare_gradients.py` copies (`--base_depth 32`).
pub const DEFAULT_GRAD_BASE_DEPTH: usize = 32;
/// File holding every finished run; rewritten after each run, so a killed sweep keeps them.
pub const RUNS_FILE: &str = "depth_sweep.json";

/// The paper's colours: darkblue for the ResNet (Euler), red for the HeunNet.
const DARKBLUE: [u8; 3] = [0, 0, 139];
const RED: [u8; 3] = [255, 0, 0];
/// Multiplicative x offsets of the two schemes' gradient scatters, so they do not hide each other.
const JITTER: [f64; 2] = [0.94, 1.06];

/// Settings of the sweep.
#[derive(Debug, Clone)]
pub struct Config {
    /// Every run's settings except the model's depth and scheme, the gradient mode and the seed
    /// (data, epochs, optimiser, TinyResNet planes and base depth, batch-norm policy).
    pub train: TrainConfig,
    pub depths: Vec<usize>,
    pub schemes: Vec<Scheme>,
    pub modes: Vec<GradMode>,
    /// One run per seed and configuration; the first seed also fixes the digits' split.
    pub seeds: Vec<u64>,
    /// Images in the batch the adjoint's gradients are compared on.
    pub grad_batch: usize,
    /// Depths the trained base model is copied to for the gradient comparison.
    pub grad_depths: Vec<usize>,
    /// The swept depth whose trained model is copied; `None`: 32 when swept, else the largest.
    pub grad_base_depth: Option<usize>,
}

impl Default for Config {
    /// The paper's grid (Euler/Heun × backprop/adjoint) on the built-in digits, sized to finish
    /// in about 15 minutes on 2 CPU cores. The residual functions train at lr × N (the
    /// authors' `--adaptive`, off in their runs): their 90 CIFAR epochs let deep stacks catch
    /// up, 3 epochs on the digits do not.
    fn default() -> Self {
        Self {
            train: TrainConfig {
                epochs: DEFAULT_EPOCHS,
                batch_size: DEFAULT_BATCH,
                adaptive_lr: true,
                ..TrainConfig::default()
            },
            depths: DEFAULT_DEPTHS.to_vec(),
            schemes: vec![Scheme::Euler, Scheme::Heun],
            modes: vec![GradMode::Backprop, GradMode::Adjoint],
            seeds: (0..DEFAULT_SEEDS as u64).collect(),
            grad_batch: DEFAULT_GRAD_BATCH,
            grad_depths: DEFAULT_GRAD_DEPTHS.to_vec(),
            grad_base_depth: None,
        }
    }
}

/// One training run of the sweep.
#[derive(Debug, Clone, Copy)]
struct Job {
    scheme: Scheme,
    mode: GradMode,
    depth: usize,
    seed: u64,
}

impl std::fmt::Display for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} N={} seed {}",
            self.scheme, self.mode, self.depth, self.seed
        )
    }
}

impl Job {
    fn config(&self, template: &TrainConfig) -> TrainConfig {
        let mut c = template.clone();
        c.model.depth = Some(self.depth);
        c.model.scheme = self.scheme;
        c.grad = self.mode;
        c.seed = self.seed;
        c
    }

    /// Relative cost (residual evaluations per image), for a progress bar whose ETA holds.
    fn cost(&self) -> u64 {
        (self.depth * self.scheme.stages()) as u64
    }
}

impl Config {
    /// Every run, seeds outermost: a sweep stopped early has whole seeds of the full grid.
    fn jobs(&self) -> Vec<Job> {
        let mut jobs = Vec::new();
        for &seed in &self.seeds {
            for &depth in &self.depths {
                for &scheme in &self.schemes {
                    for &mode in &self.modes {
                        jobs.push(Job {
                            scheme,
                            mode,
                            depth,
                            seed,
                        });
                    }
                }
            }
        }
        jobs
    }

    /// The gradient mode whose trained models the gradient error is measured on: the adjoint
    /// (as the paper) when swept, else the first mode.
    fn reference_mode(&self) -> Option<GradMode> {
        if self.modes.contains(&GradMode::Adjoint) {
            Some(GradMode::Adjoint)
        } else {
            self.modes.first().copied()
        }
    }

    /// The trained depth whose model the gradient comparison copies.
    pub fn base_depth(&self) -> usize {
        let largest = self.depths.iter().copied().max().unwrap_or(0);
        self.grad_base_depth
            .unwrap_or(if self.depths.contains(&DEFAULT_GRAD_BASE_DEPTH) {
                DEFAULT_GRAD_BASE_DEPTH
            } else {
                largest
            })
    }

    /// Rejects a sweep that cannot run, naming the flag, before any training.
    pub fn check(&self) -> Result<()> {
        check_depths(&self.depths, 1)?;
        let nonempty = [
            ("--schemes", self.schemes.is_empty()),
            ("--modes", self.modes.is_empty()),
            ("--seeds", self.seeds.is_empty()),
            ("--grad-depths", self.grad_depths.is_empty()),
        ];
        if let Some((flag, _)) = nonempty.iter().find(|(_, empty)| *empty) {
            return Err(Error::invalid(*flag, "needs at least one value"));
        }
        if self.grad_batch == 0 {
            return Err(Error::invalid("--grad-batch", "must be at least 1"));
        }
        if self.train.model.arch != Arch::Tiny {
            return Err(Error::invalid(
                "--model",
                "the depth sweep trains TinyResNet",
            ));
        }
        let base = self.base_depth();
        if !self.depths.contains(&base) {
            return Err(Error::invalid(
                "--grad-base-depth",
                format!(
                    "{base}: must be one of the swept --depths {:?}",
                    self.depths
                ),
            ));
        }
        for &scheme in &self.schemes {
            check_scheme_depths(scheme, &self.depths, "--depths")?;
            check_scheme_depths(scheme, &self.grad_depths, "--grad-depths")?;
        }
        self.jobs()
            .iter()
            .try_for_each(|j| j.config(&self.train).check())
    }
}

fn check_scheme_depths(scheme: Scheme, depths: &[usize], flag: &str) -> Result<()> {
    match depths.iter().find(|&&n| n < scheme.min_functions()) {
        Some(n) => Err(Error::invalid(
            flag,
            format!(
                "N = {n}: {scheme} needs at least {} residual functions",
                scheme.min_functions()
            ),
        )),
        None => Ok(()),
    }
}

/// One finished training run.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub scheme: String,
    pub mode: String,
    pub depth: usize,
    pub seed: u64,
    /// 100 − the best test accuracy over the epochs, in % (the paper's metric).
    pub best_test_error: f64,
    /// Test error after the last epoch, in %.
    pub final_test_error: f64,
    /// Test error after every epoch, in %.
    pub test_errors: Vec<f64>,
    pub train_seconds: f64,
    /// Largest activation peak of a training step (0 without the counting allocator).
    pub activation_peak_bytes: usize,
}

/// The adjoint's error on one parameter tensor of a trained model copied to another depth.
#[derive(Debug, Clone, Serialize)]
pub struct GradRow {
    pub scheme: String,
    /// Depth of the piecewise copy the gradients are compared on.
    pub depth: usize,
    /// Depth the copied model was trained at.
    pub base_depth: usize,
    /// How the copied model was trained.
    pub trained_with: String,
    pub seed: u64,
    pub tensor: String,
    /// `mean((g_b − g_a)²) / mean(g_b²)`.
    pub rel_sq_error: f64,
    pub cosine: f64,
}

/// Median and quartiles of the best test error of one (scheme, mode, depth) over the seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub scheme: String,
    pub mode: String,
    pub depth: usize,
    pub seeds: usize,
    pub median: f64,
    pub q25: f64,
    pub q75: f64,
}

/// The sweep's measurements and their setting.
#[derive(Debug, Clone, Serialize)]
pub struct Data {
    pub setting: String,
    pub runs: Vec<RunRow>,
    pub gradients: Vec<GradRow>,
}

/// Trains every configuration of `cfg` on `p` and measures the gradient errors. With `partial`,
/// the runs finished so far are written there (atomically) after each run.
pub fn run(cfg: &Config, p: &Placement, show: bool, partial: Option<&Path>) -> Result<Data> {
    cfg.check()?;
    let spec: DataSpec = cfg.train.data.parse()?;
    let split = spec.load(cfg.seeds[0])?;
    let grad_batch = gradient_batch(&split, cfg, p)?;
    let jobs = cfg.jobs();
    let epochs = cfg.train.epochs as u64;
    let total = jobs.iter().map(|j| j.cost() * epochs).sum();
    let bar = progress(total, "depth sweep", show);
    // Deep runs take minutes: keep the elapsed time moving between them.
    bar.enable_steady_tick(Duration::from_millis(500));
    let mut data = Data {
        setting: setting(cfg, &split),
        runs: Vec::new(),
        gradients: Vec::new(),
    };
    for job in jobs {
        bar.set_message(job.to_string());
        let model = train_job(&job, cfg, &split, p, &mut data)?;
        let is_base = job.seed == cfg.seeds[0] && job.depth == cfg.base_depth();
        if is_base && Some(job.mode) == cfg.reference_mode() {
            for &depth in &cfg.grad_depths {
                let copy = model.piecewise_copy(depth)?;
                let rows = gradient_rows(&job, &copy, depth, &grad_batch, cfg)?;
                data.gradients.extend(rows);
            }
        }
        if let Some(path) = partial {
            write_json(path, &data)?;
        }
        bar.inc(job.cost() * epochs);
    }
    bar.finish_and_clear();
    Ok(data)
}

/// Trains one run, records it in `data` and returns its model.
fn train_job(
    job: &Job,
    cfg: &Config,
    split: &Split,
    p: &Placement,
    data: &mut Data,
) -> Result<Model> {
    let result = train_on(
        split.clone(),
        &job.config(&cfg.train),
        p,
        &TrainOptions::default(),
    )
    .map_err(|e| match e {
        Error::NonFinite { what } => Error::NonFinite {
            what: format!("{what} (depth-sweep run {job})"),
        },
        other => other,
    })?;
    let errors: Vec<f64> = result
        .history
        .iter()
        .map(|m| 100.0 * (1.0 - m.test_acc))
        .collect();
    data.runs.push(RunRow {
        scheme: job.scheme.to_string(),
        mode: job.mode.to_string(),
        depth: job.depth,
        seed: job.seed,
        best_test_error: 100.0 * (1.0 - result.best_test_acc()),
        final_test_error: errors.last().copied().unwrap_or(f64::NAN),
        test_errors: errors,
        train_seconds: result.history.iter().map(|m| m.seconds).sum(),
        activation_peak_bytes: result
            .history
            .iter()
            .map(|m| m.activation_peak_bytes)
            .max()
            .unwrap_or(0),
    });
    Ok(result.model)
}

/// The first training batch of the first seed's epoch (shuffled, augmented as in training), as
/// `compare_gradients.py` takes it.
fn gradient_batch(split: &Split, cfg: &Config, p: &Placement) -> Result<DeviceBatch> {
    let data = prepare(split.clone(), &cfg.train)?;
    let augment = cfg.train.augment.then_some(Augment::STANDARD);
    let mut rng = Rng::derive(cfg.seeds[0], "gradient batch");
    let first = batches(data.train, cfg.grad_batch, true, augment, &mut rng, false)?.next();
    let batch = first.ok_or_else(|| Error::invalid("--data", "the training set has no images"))?;
    Ok(DeviceBatch::new(p, &batch, data.input.classes))
}

/// Backprop and adjoint gradients of one batch on copies of `model`, the piecewise copy at
/// `depth` of `job`'s trained model (train mode, so the batch norms use batch statistics),
/// compared per non-bias tensor as `compare_gradients.py`.
fn gradient_rows(
    job: &Job,
    model: &Model,
    depth: usize,
    batch: &DeviceBatch,
    cfg: &Config,
) -> Result<Vec<GradRow>> {
    let grads = |mode: GradMode| {
        let copy = independent_copy(model);
        let step = step_gradients(&copy, batch, mode, cfg.train.bn);
        (step.loss, flat_grads(&copy, &step.grads))
    };
    let (loss_b, b) = grads(GradMode::Backprop);
    let (loss_a, a) = grads(GradMode::Adjoint);
    if !(loss_b.is_finite() && loss_a.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("the gradient-comparison loss of run {job} copied to N={depth}"),
        });
    }
    let rows = gradient_error(&b, &a)
        .tensors
        .into_iter()
        .filter(|t| !t.name.contains("bias"))
        .map(|t| GradRow {
            scheme: job.scheme.to_string(),
            depth,
            base_depth: job.depth,
            trained_with: job.mode.to_string(),
            seed: job.seed,
            tensor: t.name,
            rel_sq_error: t.rel_sq_error,
            cosine: t.cosine,
        })
        .collect();
    Ok(rows)
}

fn setting(cfg: &Config, split: &Split) -> String {
    let t = &cfg.train;
    let n_train = t
        .limit_train
        .map_or(split.train.len(), |n| n.min(split.train.len()));
    let n_test = t
        .limit_test
        .map_or(split.test.len(), |n| n.min(split.test.len()));
    format!(
        "TinyResNet (P = {}, piecewise-constant init from base depth {}, batch norm `{}`) on \
         {} ({n_train} training / {n_test} test images, augmentation {}), {} epochs, batch {}, \
         {} lr {}{} ({} schedule, warm-up {} epochs), seeds {:?}. Adjoint: reverse steps chained \
         from x_N. Gradient error: the depth-{} model trained with seed {} ({}), copied \
         piecewise-constant to depths {:?}, one training batch of {} images, train mode, per \
         non-bias tensor",
        t.model.planes,
        t.model.base_depth,
        t.bn,
        t.data,
        if t.augment { "on" } else { "off" },
        t.epochs,
        t.batch_size,
        t.optimizer.kind,
        t.lr,
        if t.adaptive_lr {
            " (residual functions × N)"
        } else {
            ""
        },
        t.schedule,
        t.warmup_epochs,
        cfg.seeds,
        cfg.base_depth(),
        cfg.seeds[0],
        cfg.reference_mode()
            .map_or("-".to_string(), |m| m.to_string()),
        cfg.grad_depths,
        cfg.grad_batch.min(n_train),
    )
}

/// The paper's name of a network: ResNet (Euler) or HeunNet.
fn net_name(scheme: &str) -> &'static str {
    if scheme == "heun" {
        "HeunNet"
    } else {
        "ResNet"
    }
}

/// The paper's legend label, e.g. "HeunNet + Adjoint Method".
pub fn label(scheme: &str, mode: &str) -> String {
    let method = match mode {
        "backprop" => "Backprop".to_string(),
        "adjoint" => "Adjoint Method".to_string(),
        other => other.to_string(),
    };
    format!("{} + {method}", net_name(scheme))
}

fn color(scheme: &str) -> [u8; 3] {
    if scheme == "heun" {
        RED
    } else {
        DARKBLUE
    }
}

/// Linear-interpolation quantile of sorted values (numpy's default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (pos - lo as f64) * (sorted[hi] - sorted[lo])
}

/// (scheme, mode) pairs in the order the runs were made.
fn curves(data: &Data) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in &data.runs {
        let key = (r.scheme.clone(), r.mode.clone());
        if !out.contains(&key) {
            out.push(key);
        }
    }
    out
}

/// Depths present in `values`, ascending and distinct.
fn sorted_depths(values: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut v: Vec<usize> = values.collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Median and quartiles of the best test error per (scheme, mode, depth) over the seeds.
pub fn summarize(data: &Data) -> Vec<Summary> {
    let depths = sorted_depths(data.runs.iter().map(|r| r.depth));
    let mut out = Vec::new();
    for (scheme, mode) in curves(data) {
        for &depth in &depths {
            let mut errs: Vec<f64> = data
                .runs
                .iter()
                .filter(|r| r.scheme == scheme && r.mode == mode && r.depth == depth)
                .map(|r| r.best_test_error)
                .collect();
            if errs.is_empty() {
                continue;
            }
            errs.sort_by(f64::total_cmp);
            out.push(Summary {
                scheme: scheme.clone(),
                mode: mode.clone(),
                depth,
                seeds: errs.len(),
                median: quantile(&errs, 0.5),
                q25: quantile(&errs, 0.25),
                q75: quantile(&errs, 0.75),
            });
        }
    }
    out
}

/// The median over tensors of the gradient error of `scheme` at each depth.
fn gradient_medians(data: &Data, scheme: &str) -> Vec<(usize, f64, f64)> {
    let rows = || data.gradients.iter().filter(move |g| g.scheme == scheme);
    sorted_depths(rows().map(|g| g.depth))
        .into_iter()
        .map(|depth| {
            let mut v: Vec<f64> = rows()
                .filter(|g| g.depth == depth)
                .map(|g| g.rel_sq_error)
                .collect();
            v.sort_by(f64::total_cmp);
            let max = v.last().copied().unwrap_or(f64::NAN);
            (depth, quantile(&v, 0.5), max)
        })
        .collect()
}

/// Schemes with gradient rows, in sweep order.
fn gradient_schemes(data: &Data) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for g in &data.gradients {
        if !out.contains(&g.scheme) {
            out.push(g.scheme.clone());
        }
    }
    out
}

/// One claim per scheme: the adjoint's squared relative gradient error decays at least as
/// fast as the square of the paper's O(1/N) bound (slope ≤ −2 in N).
pub fn claims(data: &Data) -> Vec<Claim> {
    gradient_schemes(data)
        .into_iter()
        .map(|scheme| {
            let medians = gradient_medians(data, &scheme);
            let ns: Vec<usize> = medians.iter().map(|m| m.0).collect();
            let ys: Vec<f64> = medians.iter().map(|m| m.1).collect();
            Claim::bound(
                format!(
                    "depth-sweep, trained {}: adjoint gradient error (squared) slope ≤ −2",
                    net_name(&scheme)
                ),
                slope(&ns, &ys),
                -2.0,
                0.5,
                format!(
                    "median over non-bias tensors of mean((g_b − g_a)²)/mean(g_b²), N = {ns:?}"
                ),
            )
        })
        .collect()
}

/// Writes the CSV and JSON files, both figures, and returns the outcome for the report.
pub fn write(data: &Data, dir: &Path) -> Result<Outcome> {
    let summary = summarize(data);
    write_runs_csv(data, dir)?;
    write_summary_csv(&summary, dir)?;
    write_gradients_csv(data, dir)?;
    write_json(&dir.join(RUNS_FILE), data)?;
    write_json(&dir.join("summary.json"), &summary)?;
    plot_test_error(&summary, dir)?;
    plot_gradient_error(data, dir)?;
    Ok(Outcome {
        name: "depth-sweep".into(),
        claims: claims(data),
        table: table(&summary, data),
        markdown: markdown(&summary, data),
    })
}

fn write_runs_csv(data: &Data, dir: &Path) -> Result<()> {
    let header = [
        "scheme",
        "mode",
        "depth",
        "seed",
        "best_test_error",
        "final_test_error",
        "train_seconds",
        "activation_peak_bytes",
    ];
    let rows: Vec<Vec<String>> = data
        .runs
        .iter()
        .map(|r| {
            vec![
                r.scheme.clone(),
                r.mode.clone(),
                r.depth.to_string(),
                r.seed.to_string(),
                num(r.best_test_error),
                num(r.final_test_error),
                num(r.train_seconds),
                r.activation_peak_bytes.to_string(),
            ]
        })
        .collect();
    write_csv(&dir.join("runs.csv"), &header, &rows)
}

fn write_summary_csv(summary: &[Summary], dir: &Path) -> Result<()> {
    let header = ["scheme", "mode", "depth", "seeds", "median", "q25", "q75"];
    let rows: Vec<Vec<String>> = summary
        .iter()
        .map(|s| {
            vec![
                s.scheme.clone(),
                s.mode.clone(),
                s.depth.to_string(),
                s.seeds.to_string(),
                num(s.median),
                num(s.q25),
                num(s.q75),
            ]
        })
        .collect();
    write_csv(&dir.join("summary.csv"), &header, &rows)
}

fn write_gradients_csv(data: &Data, dir: &Path) -> Result<()> {
    let header = [
        "scheme",
        "depth",
        "base_depth",
        "trained_with",
        "seed",
        "tensor",
        "rel_sq_error",
        "cosine",
    ];
    let rows: Vec<Vec<String>> = data
        .gradients
        .iter()
        .map(|g| {
            vec![
                g.scheme.clone(),
                g.depth.to_string(),
                g.base_depth.to_string(),
                g.trained_with.clone(),
                g.seed.to_string(),
                g.tensor.clone(),
                num(g.rel_sq_error),
                num(g.cosine),
            ]
        })
        .collect();
    write_csv(&dir.join("gradient_error.csv"), &header, &rows)
}

/// `test_error.{png,svg}`: median best-epoch test error vs depth with the quartile band, in the
/// paper's colours and line styles (log-log, so each depth of the doubling sweep gets a tick).
fn plot_test_error(summary: &[Summary], dir: &Path) -> Result<()> {
    let mut bands: Vec<Band> = Vec::new();
    for s in summary {
        let name = label(&s.scheme, &s.mode);
        let i = match bands.iter().position(|b| b.label == name) {
            Some(i) => i,
            None => {
                let style = SeriesStyle {
                    color: color(&s.scheme),
                    dashed: s.mode != "backprop",
                    markers: true,
                };
                bands.push(Band {
                    label: name,
                    style,
                    x: Vec::new(),
                    median: Vec::new(),
                    q25: Vec::new(),
                    q75: Vec::new(),
                });
                bands.len() - 1
            }
        };
        let b = &mut bands[i];
        b.x.push(s.depth as f64);
        b.median.push(s.median);
        b.q25.push(s.q25);
        b.q75.push(s.q75);
    }
    band(
        &dir.join("test_error"),
        "TinyResNet: best test error vs depth (median, quartiles over seeds)",
        "depth N",
        "test error (%)",
        &bands,
        true,
        true,
    )
}

/// `gradient_error.{png,svg}`: one dot per parameter tensor and depth, darkblue ResNet, red
/// HeunNet (the two nudged apart along x so neither hides the other).
fn plot_gradient_error(data: &Data, dir: &Path) -> Result<()> {
    let mut series = Vec::new();
    for (k, scheme) in gradient_schemes(data).iter().enumerate() {
        let style = SeriesStyle {
            color: color(scheme),
            dashed: false,
            markers: true,
        };
        let dots = data.gradients.iter().filter(|g| &g.scheme == scheme);
        for (i, g) in dots.enumerate() {
            let name = if i == 0 { net_name(scheme) } else { "" };
            let x = g.depth as f64 * JITTER[k % JITTER.len()];
            series.push(Series::new(name, vec![(x, g.rel_sq_error)], style));
        }
    }
    loglog(
        &dir.join("gradient_error"),
        "Adjoint vs backprop gradients of a trained model copied to each depth, per tensor",
        "depth N",
        "mean((g_b − g_a)²) / mean(g_b²)",
        &series,
        None,
    )
}

fn table(summary: &[Summary], data: &Data) -> String {
    let mut s = format!(
        "{:<26} {:>5} {:>6} {:>9} {:>9} {:>9}\n",
        "best test error (%)", "N", "seeds", "median", "q25", "q75"
    );
    for r in summary {
        s.push_str(&format!(
            "{:<26} {:>5} {:>6} {:>9.2} {:>9.2} {:>9.2}\n",
            label(&r.scheme, &r.mode),
            r.depth,
            r.seeds,
            r.median,
            r.q25,
            r.q75
        ));
    }
    s.push_str(&format!(
        "\n{:<26} {:>5} {:>12} {:>12}\n",
        "gradient error", "N", "median", "max"
    ));
    for scheme in gradient_schemes(data) {
        for (depth, median, max) in gradient_medians(data, &scheme) {
            s.push_str(&format!(
                "{:<26} {:>5} {:>12.3e} {:>12.3e}\n",
                net_name(&scheme),
                depth,
                median,
                max
            ));
        }
    }
    s
}

/// The report section: setting, both figures, and their numbers as tables.
fn markdown(summary: &[Summary], data: &Data) -> String {
    let mut md = format!(
        "{}.\n\n![test error](test_error.png)\n\n{}\n![gradient error](gradient_error.png)\n\n{}",
        data.setting,
        error_table(summary, data),
        gradient_table(data)
    );
    md.push_str(
        "\nFiles: `runs.csv` (one row per run), `summary.csv`/`summary.json` (median and \
         quartiles), `gradient_error.csv` (one row per tensor), `depth_sweep.json` (everything, \
         with per-epoch test errors).\n",
    );
    md
}

/// Best test error per depth (rows) and curve (columns): "median (q25–q75)".
fn error_table(summary: &[Summary], data: &Data) -> String {
    let curves = curves(data);
    let mut md = String::from("Best-epoch test error (%), median over seeds (quartiles):\n\n| N |");
    for (scheme, mode) in &curves {
        md.push_str(&format!(" {} |", label(scheme, mode)));
    }
    md.push_str(&format!("\n|---:|{}\n", "---|".repeat(curves.len())));
    for depth in sorted_depths(summary.iter().map(|s| s.depth)) {
        md.push_str(&format!("| {depth} |"));
        for (scheme, mode) in &curves {
            let cell = summary
                .iter()
                .find(|s| &s.scheme == scheme && &s.mode == mode && s.depth == depth)
                .map_or("–".to_string(), |s| {
                    format!("{:.2} ({:.2}–{:.2})", s.median, s.q25, s.q75)
                });
            md.push_str(&format!(" {cell} |"));
        }
        md.push('\n');
    }
    md
}

/// Gradient error per depth: median and largest over the tensors, per network.
fn gradient_table(data: &Data) -> String {
    let schemes = gradient_schemes(data);
    let mut md = String::from(
        "Adjoint gradient error mean((g_b − g_a)²)/mean(g_b²) over the non-bias tensors:\n\n| N |",
    );
    for s in &schemes {
        md.push_str(&format!(" {0} median | {0} max |", net_name(s)));
    }
    md.push_str(&format!("\n|---:|{}\n", "---:|".repeat(2 * schemes.len())));
    let per_scheme: Vec<_> = schemes.iter().map(|s| gradient_medians(data, s)).collect();
    for depth in sorted_depths(data.gradients.iter().map(|g| g.depth)) {
        md.push_str(&format!("| {depth} |"));
        for medians in &per_scheme {
            match medians.iter().find(|m| m.0 == depth) {
                Some((_, median, max)) => md.push_str(&format!(" {median:.2e} | {max:.2e} |")),
                None => md.push_str(" – | – |"),
            }
        }
        md.push('\n');
    }
    md
}
