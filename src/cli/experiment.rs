//! `resnet-ode experiment …`: the paper's theory measured (paper.md §2). Each subcommand runs a
//! depth sweep from [`resnet_ode::experiments`], writes CSV, JSON, PNG and SVG files and a report
//! into `--out`, and prints its table with the fitted slopes beside the expected ones.

use super::parse_list;
use clap::{Args, Subcommand};
use resnet_ode::analysis::neural_ode::Interpolation;
use resnet_ode::experiments::{
    adjoint, claims_table, depth_sweep, finetune, linear_gd, ode_distance, powers_of_two, run_all,
    write_outcome, AllConfig, Outcome,
};
use resnet_ode::family::Family;
use resnet_ode::report::ensure_writable_dir;
use resnet_ode::scheme::Scheme;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The paper's experiments.
#[derive(Subcommand, Debug)]
pub enum Experiment {
    /// Distance between a ResNet's trajectory and its Neural ODE vs depth, per weight family.
    OdeDistance(OdeDistanceArgs),
    /// Linear ResNets under gradient descent: smoothness in depth and the 1/N limit (Fig. 2).
    LinearGd(LinearGdArgs),
    /// Adjoint reconstruction error ‖x̃₀ − x₀‖/‖x₀‖ vs depth, Euler vs Heun.
    Reconstruction(AdjointArgs),
    /// Adjoint vs backprop gradient error vs depth, Euler vs Heun.
    GradientError(AdjointArgs),
    /// Every experiment at default sizes, with DIR/report.md and DIR/report.json.
    All(AllArgs),
    /// TinyResNet's best test error vs depth, Euler/Heun × backprop/adjoint, and the adjoint's
    /// gradient error on a trained model copied to each depth (paper Fig. 3c/4). Boxed: its
    /// flags make it the largest variant.
    DepthSweep(Box<DepthSweepArgs>),
    /// A tied ODE-like TinyResNet pre-trained, evaluated at other depths, untied into a deep
    /// model and fine-tuned with the adjoint vs backprop vs tied; untied from scratch with the
    /// adjoint vs backprop (paper Table 2, Fig. 3a/b).
    Finetune(Box<FinetuneArgs>),
}

/// Flags every experiment takes.
#[derive(Args, Debug)]
pub struct Common {
    /// Output directory (created; must be writable).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of every random draw (weights, inputs, targets).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Depths N to sweep, comma-separated (overrides --max-depth).
    #[arg(long, value_delimiter = ',')]
    pub depths: Vec<usize>,
    /// Largest depth of the default power-of-two sweep.
    #[arg(long)]
    pub max_depth: Option<usize>,
}

impl Common {
    fn out(&self, name: &str) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| Path::new("out").join(name))
    }

    /// `--depths` if given, else powers of two from `min` to `--max-depth` (or `default_max`).
    fn depths(&self, min: usize, default_max: usize) -> Vec<usize> {
        if self.depths.is_empty() {
            powers_of_two(min, self.max_depth.unwrap_or(default_max))
        } else {
            self.depths.clone()
        }
    }
}

/// `experiment ode-distance` flags.
#[derive(Args, Debug)]
pub struct OdeDistanceArgs {
    #[command(flatten)]
    pub common: Common,
    /// Weight families: smooth, iid, piecewise:K, alternating (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "smooth,iid,piecewise:4,alternating"
    )]
    pub families: Vec<String>,
    /// Seeds averaged over (seed, seed + 1, …).
    #[arg(long, default_value_t = 3)]
    pub seeds: usize,
    /// Inputs per seed.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// θ(t) between the nodes t_n = n/N: linear or constant.
    #[arg(long, default_value = "linear")]
    pub interpolation: String,
}

/// `experiment linear-gd` flags.
#[derive(Args, Debug)]
pub struct LinearGdArgs {
    #[command(flatten)]
    pub common: Common,
    /// Matrix size d.
    #[arg(long, default_value_t = 2)]
    pub dim: usize,
    /// Depth of the weight-curve run (Fig. 2).
    #[arg(long, default_value_t = 100)]
    pub depth: usize,
    /// η: the learning rate is η·N (the paper: η = 1, lr = 100 at N = 100; at η = 1 gradient
    /// descent oscillates for about half of the random targets, hence 0.5 by default).
    #[arg(long, default_value_t = 0.5)]
    pub lr: f64,
    /// Gradient-descent steps.
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// Depth of the reference run (a multiple of every swept depth).
    #[arg(long, default_value_t = 4096)]
    pub ref_depth: usize,
}

/// `experiment reconstruction` / `gradient-error` flags.
#[derive(Args, Debug)]
pub struct AdjointArgs {
    #[command(flatten)]
    pub common: Common,
    /// Weight families (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "smooth,iid,piecewise:4")]
    pub families: Vec<String>,
    /// Schemes: euler, heun (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "euler,heun")]
    pub schemes: Vec<String>,
    /// Residual kinds: mlp, conv (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "mlp,conv")]
    pub kinds: Vec<String>,
    /// Inputs (MLP) or digit images (conv) per batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Channels the 8×8 digits are lifted to for the conv stacks.
    #[arg(long, default_value_t = 4)]
    pub channels: usize,
}

/// `experiment all` flags.
#[derive(Args, Debug)]
pub struct AllArgs {
    /// Output directory: one folder per experiment, report.md and report.json on top.
    #[arg(long, default_value = "out/all")]
    pub out: PathBuf,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `experiment depth-sweep` flags. The defaults fit about 15 minutes on 2 CPU cores; the
/// paper's run is `--data cifar10:DIR --depths 2,4,8,16,32,64 --seeds 4 --epochs 90
/// --batch-size 256 --schedule step`.
#[derive(Args, Debug)]
pub struct DepthSweepArgs {
    /// Output directory (created; must be writable).
    #[arg(long, default_value = "out/depth-sweep")]
    pub out: PathBuf,
    /// Dataset: digits (built in), mnist:DIR, fashion-mnist:DIR, cifar10:DIR, cifar100:DIR,
    /// images:DIR.
    #[arg(long, default_value = "digits")]
    pub data: String,
    /// TinyResNet depths N (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = depth_sweep::DEFAULT_DEPTHS)]
    pub depths: Vec<usize>,
    /// Schemes: euler (ResNet), heun (HeunNet).
    #[arg(long, value_delimiter = ',', default_value = "euler,heun")]
    pub schemes: Vec<String>,
    /// Gradient modes: backprop, adjoint, adjoint-serial, adjoint-per-step, checkpoint:K.
    #[arg(long, value_delimiter = ',', default_value = "backprop,adjoint")]
    pub modes: Vec<String>,
    /// Runs per configuration, with seeds --seed, --seed + 1, …
    #[arg(long, default_value_t = depth_sweep::DEFAULT_SEEDS)]
    pub seeds: usize,
    /// First seed (also fixes the train/test split of the digits).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = depth_sweep::DEFAULT_EPOCHS)]
    pub epochs: usize,
    #[arg(long, default_value_t = depth_sweep::DEFAULT_BATCH)]
    pub batch_size: usize,
    /// Base learning rate (SGD, momentum 0.9, weight decay 5e-4).
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// Learning-rate schedule: cosine, step (÷10 after E/3 and 2E/3, the paper's) or constant.
    #[arg(long, default_value = "cosine")]
    pub schedule: String,
    /// Augmentation (crop with padding 4, horizontal flip): on, off or auto (on for CIFAR).
    #[arg(long, default_value = "auto")]
    pub augment: String,
    /// Batch-norm policy under the adjoint: cached, frozen or recompute.
    #[arg(long, default_value = "cached")]
    pub bn: String,
    /// TinyResNet's channels P.
    #[arg(long, default_value_t = resnet_ode::models::DEFAULT_PLANES)]
    pub planes: usize,
    /// Train the residual functions at lr × N (the authors' --adaptive; true or false). On by
    /// default here: in a few epochs a deep 1/N-scaled stack barely moves from its init
    /// otherwise (digits, 3 epochs, N = 32: 92.2 % vs 96.2 % test accuracy with it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub adaptive_lr: bool,
    /// Train on the first N training images only.
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    pub limit_test: Option<usize>,
    /// Images in the batch the adjoint's gradients are compared on.
    #[arg(long, default_value_t = depth_sweep::DEFAULT_GRAD_BATCH)]
    pub grad_batch: usize,
    /// Depths the trained base model is copied to (piecewise-constant) for the gradient
    /// comparison (the paper's plot_grad_dist.py: 4,8,16,32,64).
    #[arg(long, value_delimiter = ',', default_values_t = depth_sweep::DEFAULT_GRAD_DEPTHS)]
    pub grad_depths: Vec<usize>,
    /// The swept depth whose adjoint-trained model (first seed) is copied [default: 32 when
    /// swept, else the largest of --depths].
    #[arg(long)]
    pub grad_base_depth: Option<usize>,
    #[command(flatten)]
    pub device: super::DeviceArgs,
}

impl DepthSweepArgs {
    /// The library configuration these flags name (each parse error names its flag).
    fn config(&self) -> anyhow::Result<depth_sweep::Config> {
        let data: resnet_ode::data::DataSpec = self.data.parse()?;
        let augment = match self.augment.as_str() {
            "on" => true,
            "off" => false,
            "auto" => data.default_augment(),
            other => anyhow::bail!("invalid --augment: `{other}`: expected on, off or auto"),
        };
        let defaults = depth_sweep::Config::default();
        let mut train = defaults.train;
        train.data = data.to_string();
        train.model.planes = self.planes;
        train.bn = self.bn.parse()?;
        train.epochs = self.epochs;
        train.batch_size = self.batch_size;
        train.lr = self.lr;
        train.schedule = self.schedule.parse()?;
        train.augment = augment;
        train.limit_train = self.limit_train;
        train.limit_test = self.limit_test;
        train.adaptive_lr = self.adaptive_lr;
        Ok(depth_sweep::Config {
            train,
            depths: self.depths.clone(),
            schemes: parse_list("--schemes", &self.schemes)?,
            modes: parse_list("--modes", &self.modes)?,
            seeds: (0..self.seeds as u64)
                .map(|k| self.seed.wrapping_add(k))
                .collect(),
            grad_batch: self.grad_batch,
            grad_depths: self.grad_depths.clone(),
            grad_base_depth: self.grad_base_depth,
        })
    }
}

/// `experiment finetune` flags. The defaults fit a few minutes on 2 CPU cores on the digits
/// (10–20 on Fashion-MNIST's first 6000 images).
#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// Output directory: report, CSV/JSON, figures, and the trainings' run directories under
    /// runs/ (resumed when run again with the same flags).
    #[arg(long, default_value = "out/finetune")]
    pub out: PathBuf,
    /// Dataset (any the trainer reads) [default: fashion-mnist:/usr/share/datasets/fashion-mnist
    /// when present, else the built-in digits].
    #[arg(long)]
    pub data: Option<String>,
    /// Architecture: tiny (TinyResNet, one stack) or authors (the authors' bottleneck ResNet,
    /// IResNetAuto2 → ResNetMemoryCustom, four stacks; its layer3 is deepened, as in their
    /// [4, 4, 32, 4]).
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Functions per stack the tied and untied models are pre-trained with [default: 8 for
    /// tiny; 3 for authors, their n_layers 4].
    #[arg(long)]
    pub depth: Option<usize>,
    /// Functions of the deep stage (TinyResNet's stack, the authors' layer3) after untying;
    /// the other stages keep --depth [default: 32 for tiny; 31 for authors, so the untied
    /// model is their [4, 4, 32, 4]].
    #[arg(long)]
    pub deep_depth: Option<usize>,
    /// Depths of the ODE-like test (Fig. 3a).
    #[arg(long, value_delimiter = ',', default_value = "2,4,8,16,32,64")]
    pub eval_depths: Vec<usize>,
    #[arg(long, default_value_t = 8)]
    pub pretrain_epochs: usize,
    #[arg(long, default_value_t = 4)]
    pub finetune_epochs: usize,
    #[arg(long, default_value_t = 0.01)]
    pub finetune_lr: f64,
    /// Epochs of the untied from-scratch runs (Fig. 3b).
    #[arg(long, default_value_t = 6)]
    pub scratch_epochs: usize,
    /// Train the from-scratch runs' residual functions at lr × N (the authors' --adaptive)
    /// instead of the paper's ResNet-101 protocol (plain lr).
    #[arg(long)]
    pub scratch_lr_times_n: bool,
    /// Fine-tuning runs per method, with seeds --seed, --seed + 1, …
    #[arg(long, default_value_t = 2)]
    pub seeds: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stages fine-tuning trains (stem, layer1, …, head); the others stay frozen
    /// [default: the deep stage].
    #[arg(long, value_delimiter = ',')]
    pub train_stages: Option<Vec<String>>,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Learning rate of the pre-training and from-scratch runs (SGD, cosine).
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// Channels: TinyResNet's P, the authors' first-stage base width (theirs: 64) [default:
    /// 16 for tiny, 4 for authors].
    #[arg(long)]
    pub planes: Option<usize>,
    #[arg(long, default_value_t = 6000)]
    pub limit_train: usize,
    #[arg(long, default_value_t = 2000)]
    pub limit_test: usize,
    /// Images doctor measures smoothness and gradient error on.
    #[arg(long, default_value_t = 128)]
    pub grad_batch: usize,
    /// The tied model to untie and fine-tune instead of pre-training one: a finished tied run
    /// (resnet-ode train --tied --out DIR; --depth and --planes must be its own) or, with
    /// --model authors, the authors' tied PyTorch checkpoint (IResNetAuto2).
    #[arg(long)]
    pub init: Option<PathBuf>,
    #[command(flatten)]
    pub device: super::DeviceArgs,
}

impl FinetuneArgs {
    fn config(&self) -> anyhow::Result<finetune::Config> {
        let (data, data_note) = match &self.data {
            Some(d) => (d.parse::<resnet_ode::data::DataSpec>()?.to_string(), None),
            None => finetune::default_data(),
        };
        // The fallback changes what the numbers mean: say so before hours of training.
        if let Some(note) = &data_note {
            eprintln!("warning: {note}");
        }
        let arch: finetune::Architecture = self.model.parse()?;
        let mut cfg = finetune::Config::default();
        cfg.train.data = data;
        cfg.train.batch_size = self.batch_size;
        cfg.train.lr = self.lr;
        cfg.train.model.planes = self.planes.unwrap_or(arch.default_planes());
        cfg.train.limit_train = Some(self.limit_train);
        cfg.train.limit_test = Some(self.limit_test);
        Ok(finetune::Config {
            arch,
            depth: self.depth.unwrap_or(arch.default_depths().0),
            deep_depth: self.deep_depth.unwrap_or(arch.default_depths().1),
            eval_depths: self.eval_depths.clone(),
            pretrain_epochs: self.pretrain_epochs,
            finetune_epochs: self.finetune_epochs,
            finetune_lr: self.finetune_lr,
            scratch_epochs: self.scratch_epochs,
            scratch_lr_times_n: self.scratch_lr_times_n,
            seeds: (0..self.seeds as u64)
                .map(|k| self.seed.wrapping_add(k))
                .collect(),
            train_stages: self
                .train_stages
                .clone()
                .unwrap_or_else(|| vec![arch.deep_stage()]),
            grad_batch: self.grad_batch,
            data_note,
            init: self.init.clone(),
            command: std::iter::once("resnet-ode".to_string())
                .chain(std::env::args().skip(1))
                .collect::<Vec<_>>()
                .join(" "),
            ..cfg
        })
    }
}

pub fn run(e: &Experiment) -> anyhow::Result<()> {
    let start = Instant::now();
    match e {
        Experiment::OdeDistance(a) => {
            let cfg = ode_distance_config(a)?;
            let out = a.common.out("ode-distance");
            single(&out, |show| {
                ode_distance::run(&cfg, show).and_then(|d| ode_distance::write(&d, &out))
            })?
        }
        Experiment::LinearGd(a) => {
            let cfg = linear_gd_config(a);
            let out = a.common.out("linear-gd");
            single(&out, |show| {
                linear_gd::run(&cfg, show).and_then(|d| linear_gd::write(&d, &out))
            })?
        }
        Experiment::Reconstruction(a) | Experiment::GradientError(a) => {
            let measure = match e {
                Experiment::Reconstruction(_) => adjoint::Measure::Reconstruction,
                _ => adjoint::Measure::Gradient,
            };
            let cfg = adjoint_config(a)?;
            let out = a.common.out(measure.name());
            single(&out, |show| {
                adjoint::run(&cfg, measure, show).and_then(|d| adjoint::write(&d, &out))
            })?
        }
        Experiment::All(a) => {
            let cfg = all_config(a.seed);
            let outcomes = run_all(&a.out, &cfg, print_outcome)?;
            let claims: Vec<_> = outcomes.iter().flat_map(|o| o.claims.clone()).collect();
            println!("\nall claims\n{}", claims_table(&claims));
            println!("report: {}", a.out.join("report.md").display());
        }
        Experiment::DepthSweep(a) => {
            let (cfg, p) = (a.config()?, a.device.placement()?);
            // Bad settings fail before the output directory is created.
            cfg.check()?;
            let runs = a.out.join(depth_sweep::RUNS_FILE);
            single(&a.out, |show| {
                depth_sweep::run(&cfg, &p, show, Some(&runs))
                    .and_then(|d| depth_sweep::write(&d, &a.out))
            })?
        }
        Experiment::Finetune(a) => {
            let (cfg, p) = (a.config()?, a.device.placement()?);
            cfg.check()?;
            single(&a.out, |show| {
                finetune::run(&cfg, &p, &a.out, show)
                    .and_then(|d| finetune::write(&d, &cfg, &a.out))
            })?;
            // Repeated under the results, where it is read.
            if let Some(note) = &cfg.data_note {
                eprintln!("warning: {note}");
            }
        }
    }
    eprintln!("done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// Checks `out` is writable, runs, writes the report last, prints. A run rejected before it
/// wrote anything (a bad flag) leaves no empty `out` behind.
fn single(
    out: &Path,
    work: impl FnOnce(bool) -> resnet_ode::Result<Outcome>,
) -> anyhow::Result<()> {
    let existed = out.exists();
    ensure_writable_dir(out)?;
    let outcome = work(true).inspect_err(|_| {
        if !existed {
            // Only an empty directory is removed: nothing written is lost.
            let _ = std::fs::remove_dir(out);
        }
    })?;
    write_outcome(out, &outcome)?;
    print_outcome(&outcome);
    println!("report: {}", out.join("report.md").display());
    Ok(())
}

fn print_outcome(o: &Outcome) {
    println!(
        "\n== {} ==\n{}\n{}",
        o.name,
        o.table,
        claims_table(&o.claims)
    );
}

fn ode_distance_config(a: &OdeDistanceArgs) -> anyhow::Result<ode_distance::Config> {
    Ok(ode_distance::Config {
        families: parse_list::<Family>("--families", &a.families)?,
        depths: a.common.depths(8, 1024),
        seed: a.common.seed,
        seeds: a.seeds,
        batch: a.batch,
        interpolation: a.interpolation.parse::<Interpolation>()?,
        ..Default::default()
    })
}

fn linear_gd_config(a: &LinearGdArgs) -> linear_gd::Config {
    linear_gd::Config {
        dim: a.dim,
        depth: a.depth,
        eta: a.lr,
        steps: a.steps,
        depths: a.common.depths(16, 1024),
        ref_depth: a.ref_depth,
        seed: a.common.seed,
        ..Default::default()
    }
}

fn adjoint_config(a: &AdjointArgs) -> anyhow::Result<adjoint::Config> {
    let kinds = a
        .kinds
        .iter()
        .map(|k| match k.as_str() {
            "mlp" => Ok(adjoint::Kind::Mlp),
            "conv" => Ok(adjoint::Kind::Conv),
            _ => Err(resnet_ode::Error::invalid(
                "--kinds",
                format!("`{k}`: expected mlp or conv"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(adjoint::Config {
        kinds,
        schemes: parse_list::<Scheme>("--schemes", &a.schemes)?,
        families: parse_list::<Family>("--families", &a.families)?,
        depths: a.common.depths(16, 256),
        seed: a.common.seed,
        batch: a.batch,
        channels: a.channels,
        ..Default::default()
    })
}

fn all_config(seed: u64) -> AllConfig {
    AllConfig {
        ode_distance: ode_distance::Config {
            seed,
            ..Default::default()
        },
        linear_gd: linear_gd::Config {
            seed,
            ..Default::default()
        },
        adjoint: adjoint::Config {
            seed,
            ..Default::default()
        },
        show_progress: true,
    }
}
