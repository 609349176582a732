//! `resnet-ode train` and `resnet-ode eval`: flags in, the library's trainer, a summary out.

use super::pretrained::{eval_init, ImportModelArgs, InitArgs};
use super::DeviceArgs;
use anyhow::Context;
use resnet_ode::data::{Batch, DataSpec};
use resnet_ode::device::DeviceSpec;
use resnet_ode::grad::GradMode;
use resnet_ode::memory;
use resnet_ode::models::{Arch, ModelSpec};
use resnet_ode::rng::Rng;
use resnet_ode::train::{
    eval_run_on, step_memory, AutoGrad, OptimizerConfig, Pretrained, TrainConfig, TrainOptions,
    TrainResult,
};
use std::path::PathBuf;

/// Train a ResNet on images in any gradient mode.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Dataset: digits (built in), mnist:DIR, fashion-mnist:DIR, cifar10:DIR, cifar100:DIR,
    /// images:DIR.
    #[arg(long, default_value = "digits")]
    data: String,
    /// Model: tiny (the paper's TinyResNet) or cifar-resnet20/32/44/56/110/1202.
    #[arg(long, default_value = "tiny")]
    model: String,
    /// One residual function per stack, used at every depth (the ODE-like model).
    #[arg(long)]
    tied: bool,
    /// CIFAR ResNets: He et al.'s unscaled blocks, relu(x + f(x)) (backprop or checkpoint:K).
    #[arg(long)]
    original: bool,
    /// Residual functions per stack (TinyResNet: default 8; CIFAR ResNets: fixed by the name).
    #[arg(long)]
    depth: Option<usize>,
    /// Depth-integration scheme: euler or heun.
    #[arg(long, default_value = "euler")]
    scheme: String,
    /// Gradient mode: backprop, adjoint, adjoint-serial, adjoint-per-step, checkpoint:K, or
    /// auto[:TOL] (per stack: the adjoint where doctor's measured gradient error on the first
    /// batch is under TOL, default 1e-2; checkpoint:K, K = round(√N), elsewhere).
    #[arg(long, default_value = "adjoint")]
    grad: String,
    /// With --grad auto: decide again at the start of every this-many epochs.
    #[arg(long)]
    auto_recheck: Option<usize>,
    /// Batch-norm policy under the adjoint: cached, frozen or recompute.
    #[arg(long, default_value = "cached")]
    bn: String,
    #[arg(long, default_value_t = 15)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// sgd or adamw.
    #[arg(long, default_value = "sgd")]
    optimizer: String,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// Nesterov momentum (SGD).
    #[arg(long)]
    nesterov: bool,
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f64,
    /// Train each stack's residual functions at lr × N (the authors' --adaptive), so deep
    /// 1/N-scaled stacks learn as fast as shallow ones.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    adaptive_lr: bool,
    /// Learning-rate schedule: cosine, step (÷10 after E/3 and 2E/3) or constant.
    #[arg(long, default_value = "cosine")]
    schedule: String,
    /// Linear warm-up over this many epochs.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Augmentation (crop with padding 4, horizontal flip): on, off or auto (on for CIFAR).
    #[arg(long, default_value = "auto")]
    augment: String,
    /// TinyResNet's channels; authors-resnet: the first stage's base channels (the paper's 64;
    /// smaller values give CPU-sized models).
    #[arg(long, default_value_t = resnet_ode::models::DEFAULT_PLANES)]
    planes: usize,
    /// TinyResNet's piecewise-constant initialisation: distinct functions drawn.
    #[arg(long, default_value_t = resnet_ode::models::DEFAULT_BASE_DEPTH)]
    base_depth: usize,
    /// Run directory (checkpoints, metrics.jsonl, run.json); default runs/<data kind>
    /// (runs/digits, runs/fashion-mnist, runs/images, …).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Skip the after-training comparison of this run's activation memory with backprop's
    /// (the adjoint's: for a backprop run).
    #[arg(long)]
    no_memory_report: bool,
    /// Train on the first N training images only.
    #[arg(long)]
    limit_train: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    limit_test: Option<usize>,
    #[command(flatten)]
    init: InitArgs,
    /// Train only these stages (comma-separated: stem, layer1, layer2, …, head, as PyTorch
    /// names them); the others stay frozen (their batch norms' running statistics still update
    /// unless --bn frozen). Default: all.
    #[arg(long, value_delimiter = ',')]
    train_stages: Option<Vec<String>>,
    /// With --init: the checkpoint holds the tied form of --model (e.g. the authors'
    /// IResNetAuto2); the run trains it untied, each function copied N times (paper.md §3.5).
    #[arg(long)]
    untie: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Evaluate a run (a tied model at another depth: the ODE-like test), or a pretrained PyTorch
/// checkpoint (`--init`) on images.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Run directory written by `resnet-ode train`.
    #[arg(long, required_unless_present = "init", conflicts_with = "init")]
    run: Option<PathBuf>,
    /// Residual functions per stack (tied models only; default: the trained depth). With
    /// --init: a tied model runs at this depth; tiny: the checkpoint's N (default 8).
    #[arg(long)]
    depth: Option<usize>,
    #[command(flatten)]
    init: InitArgs,
    /// With --init: the checkpoint's model.
    #[command(flatten)]
    model: ImportModelArgs,
    /// With --init: the images (any --data source of train; an image folder is used whole,
    /// class folders named by integers giving the class index). With --run: the run's data
    /// where it is now (checked by content: the run's test set must be the same images).
    #[arg(long)]
    data: Option<String>,
    /// Print the result as JSON (with --init: every image's label, prediction and logits).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

impl TrainArgs {
    /// `--out`, or `runs/<data kind>` (`fashion-mnist:DIR` → `runs/fashion-mnist`).
    fn run_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let kind = self.data.split(':').next().unwrap_or("digits");
            PathBuf::from("runs").join(kind)
        })
    }

    /// The library configuration these flags name (each parse error names its flag).
    fn config(&self) -> anyhow::Result<TrainConfig> {
        anyhow::ensure!(
            self.init.init.is_some() || !(self.init.partial || self.untie),
            "--partial and --untie apply with --init only"
        );
        let data: DataSpec = self.data.parse()?;
        let augment = match self.augment.as_str() {
            "on" => true,
            "off" => false,
            "auto" => data.default_augment(),
            other => anyhow::bail!("invalid --augment: `{other}`: expected on, off or auto"),
        };
        let model = ModelSpec {
            arch: self.model.parse::<Arch>()?,
            depth: self.depth,
            scheme: self.scheme.parse()?,
            tied: self.tied,
            original: self.original,
            planes: self.planes,
            base_depth: self.base_depth,
        };
        let optimizer = OptimizerConfig {
            kind: self.optimizer.parse()?,
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
            ..OptimizerConfig::default()
        };
        let (grad, auto) = self.grad_policy()?;
        Ok(TrainConfig {
            data: data.to_string(),
            model,
            grad,
            bn: self.bn.parse()?,
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            optimizer,
            schedule: self.schedule.parse()?,
            warmup_epochs: self.warmup,
            seed: self.seed,
            limit_train: self.limit_train,
            limit_test: self.limit_test,
            augment,
            adaptive_lr: self.adaptive_lr,
            auto,
            pretrained: self.init.init.as_ref().map(|path| Pretrained {
                path: path.clone(),
                partial: self.init.partial,
                normalize: self.init.normalize.clone(),
                untie: self.untie,
            }),
            train_stages: self.train_stages.clone(),
        })
    }

    /// `--grad` and `--auto-recheck`: a fixed mode, or the adjoint under the auto policy.
    fn grad_policy(&self) -> anyhow::Result<(GradMode, Option<AutoGrad>)> {
        if !self.grad.starts_with("auto") {
            if self.auto_recheck.is_some() {
                anyhow::bail!("invalid --auto-recheck: applies to --grad auto only");
            }
            return Ok((self.grad.parse()?, None));
        }
        let auto = AutoGrad {
            recheck_epochs: self.auto_recheck,
            ..self.grad.parse::<AutoGrad>()?
        };
        Ok((GradMode::Adjoint, Some(auto)))
    }
}

pub fn train(a: &TrainArgs) -> anyhow::Result<()> {
    let config = a.config()?;
    config.check()?;
    let placement = a.device.placement()?;
    let options = TrainOptions {
        out: Some(a.run_dir()),
        resume: a.resume,
        progress: true,
        stop_after: None,
        initial: None,
    };
    if let Some(pre) = &config.pretrained {
        println!(
            "fine-tuning from {} ({} normalisation); training {}",
            pre.path.display(),
            pre.normalize,
            config
                .train_stages
                .as_ref()
                .map_or("every stage".into(), |s| s.join(", ")
                    + " (the rest frozen)")
        );
    }
    let grad = match config.auto {
        Some(a) => format!("auto:{:e}", a.tol),
        None => config.grad.to_string(),
    };
    println!(
        "training {} (depth {}, {}, {} gradients, BN {}) on {} for {} epochs → {}",
        config.model.arch,
        config.model.stack_depth()?,
        config.model.scheme,
        grad,
        config.bn,
        config.data,
        config.epochs,
        a.run_dir().display()
    );
    let result = resnet_ode::train::train(&config, &placement, &options)?;
    summarise(&result);
    if !a.no_memory_report {
        compare_memory(&result, &config, &placement, &a.device.device);
    }
    Ok(())
}

/// Final and best test accuracy, and the time spent.
fn summarise(result: &TrainResult) {
    let Some(last) = result.history.last() else {
        return;
    };
    let seconds: f64 = result.history.iter().map(|m| m.seconds).sum();
    println!(
        "test accuracy {:.2}% after {} epochs (best {:.2}%); test loss {:.4}; training {:.1} s, {:.0} images/s",
        100.0 * last.test_acc,
        last.epoch,
        100.0 * result.best_test_acc(),
        last.test_loss,
        seconds,
        last.images_per_sec
    );
}

/// The activation memory of one training step in the run's mode next to what backprop (or,
/// for a backprop run, the adjoint) needs, measured on one step of a copy of the model with
/// random images of the training shape, the batch capped at the training set's size. A user who
/// picked the adjoint because backprop does not fit must not be killed by this report: above
/// [`PROBE_BATCH`] images backprop's need is measured on two small batches and extrapolated
/// linearly in the batch size (activations grow with it; the graph's bookkeeping does not).
/// Heap memory only (flex): on another device it says so instead.
fn compare_memory(
    result: &TrainResult,
    config: &TrainConfig,
    p: &resnet_ode::device::Placement,
    device: &str,
) {
    let ours = &result.grad_modes;
    let all_backprop = ours.iter().all(|&m| m == GradMode::Backprop);
    // A backprop run is compared with the adjoint, which needs a depth-scaled stack.
    if all_backprop && result.model.stack_depths().is_empty() {
        return;
    }
    // The counting allocator sees flex's buffers only.
    if device.parse::<DeviceSpec>().ok() != Some(DeviceSpec::Flex) || !memory::is_counting() {
        println!("activation memory: not measured after training on this device (see `resnet-ode bench memory`)");
        return;
    }
    let other = if all_backprop {
        GradMode::Adjoint
    } else {
        GradMode::Backprop
    };
    let b = config.batch_size.min(result.train_examples).max(1);
    let step = |modes: &[GradMode], n: usize| {
        let batch = random_batch(result, n);
        step_memory(
            &result.model,
            p,
            &batch,
            result.input.classes,
            modes,
            config.bn,
        ) as f64
    };
    // The run's own modes trained at this batch, and the adjoint is small: measured directly.
    // Backprop, when it is the other mode, from two small batches.
    let ours_bytes = step(ours, b);
    let (theirs, how) = if other == GradMode::Backprop && b > PROBE_BATCH {
        let probes = [PROBE_BATCH / 2, PROBE_BATCH];
        let bytes = probes.map(|n| step(&[other], n));
        let per_image = ((bytes[1] - bytes[0]) / (probes[1] - probes[0]) as f64).max(0.0);
        let estimate = bytes[1] + per_image * (b - probes[1]) as f64;
        let how = format!("extrapolated from batches {} and {}", probes[0], probes[1]);
        (estimate, how)
    } else {
        (step(&[other], b), "measured".to_string())
    };
    let names: Vec<String> = ours.iter().map(|m| m.to_string()).collect();
    let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
    println!(
        "activation memory of one step (batch {b}, measured): {} {:.2} MiB; {} would need {:.2} MiB ({how}) ({:.1}×)",
        names.join("/"),
        mib(ours_bytes),
        other,
        mib(theirs),
        theirs / ours_bytes.max(1.0)
    );
}

/// Largest batch at which the after-training report measures backprop directly.
const PROBE_BATCH: usize = 8;

/// `n` standard-normal images of the training shape with arbitrary labels.
fn random_batch(result: &TrainResult, n: usize) -> Batch {
    let i = result.input;
    Batch {
        images: Rng::new(1)
            .normals(n * i.channels * i.height * i.width)
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        labels: (0..n).map(|k| k % i.classes).collect(),
        batch: n,
        channels: i.channels,
        height: i.height,
        width: i.width,
    }
}

pub fn eval(a: &EvalArgs) -> anyhow::Result<()> {
    let run = match (&a.run, &a.init.init) {
        (Some(run), _) => {
            anyhow::ensure!(
                !a.init.partial && !a.model.original && !a.model.tied,
                "--partial, --original and --tied apply with --init only (a run records its model)"
            );
            run
        }
        (None, Some(path)) => {
            let data = a.data.as_deref().context("--init needs --data")?;
            let spec = a.model.spec(a.depth)?;
            return eval_init(&a.init, path, &spec, a.depth, data, a.json, &a.device);
        }
        (None, None) => anyhow::bail!("eval needs --run DIR or --init PATH"),
    };
    let placement = a.device.placement()?;
    let r = eval_run_on(run, a.depth, a.data.as_deref(), &placement)
        .with_context(|| format!("evaluating the run in {}", run.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "{}: depth {} (trained at {}, {} epochs): test accuracy {:.2}%, test loss {:.4} on {} images",
        run.display(),
        r.depth,
        r.trained_depth,
        r.epochs,
        100.0 * r.test_acc,
        r.test_loss,
        r.examples
    );
    Ok(())
}
