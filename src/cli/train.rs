//! `resnet-ode train` and `resnet-ode eval`: flags in, the library's trainer, a summary out.

use super::pretrained::{eval_init, ImportModelArgs, InitArgs};
use super::DeviceArgs;
use anyhow::Context;
use resnet_ode::data::{Batch, DataSpec};
use resnet_ode::grad::GradMode;
use resnet_ode::memory;
use resnet_ode::models::{Arch, ModelSpec};
use resnet_ode::rng::Rng;
use resnet_ode::train::{
    eval_run, step_memory, AutoGrad, OptimizerConfig, Pretrained, TrainConfig, TrainOptions,
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
    /// Run directory (checkpoints, metrics.jsonl, run.json).
    #[arg(long, default_value = "runs/digits")]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
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
    /// class folders named by integers giving the class index).
    #[arg(long)]
    data: Option<String>,
    /// Print the result as JSON (with --init: every image's label, prediction and logits).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

impl TrainArgs {
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
        out: Some(a.out.clone()),
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
        a.out.display()
    );
    let result = resnet_ode::train::train(&config, &placement, &options)?;
    summarise(&result);
    compare_memory(&result, &config, &placement);
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
/// for a backprop run, the adjoint) needs, both measured on one step of a copy of the model
/// with a random batch of the training shape.
fn compare_memory(result: &TrainResult, config: &TrainConfig, p: &resnet_ode::device::Placement) {
    let ours = &result.grad_modes;
    let all_backprop = ours.iter().all(|&m| m == GradMode::Backprop);
    // A backprop run is compared with the adjoint, which needs a depth-scaled stack.
    if !memory::is_counting() || (all_backprop && result.model.stack_depths().is_empty()) {
        return;
    }
    let other = if all_backprop {
        GradMode::Adjoint
    } else {
        GradMode::Backprop
    };
    let i = result.input;
    let b = config.batch_size;
    let batch = Batch {
        images: Rng::new(1)
            .normals(b * i.channels * i.height * i.width)
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        labels: (0..b).map(|k| k % i.classes).collect(),
        batch: b,
        channels: i.channels,
        height: i.height,
        width: i.width,
    };
    let measure =
        |modes: &[GradMode]| step_memory(&result.model, p, &batch, i.classes, modes, config.bn);
    let names: Vec<String> = ours.iter().map(|m| m.to_string()).collect();
    let (ours, theirs) = (measure(ours), measure(&[other]));
    let mib = |bytes: usize| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "activation memory of one step (batch {b}, measured): {} {:.2} MiB; {} would need {:.2} MiB ({:.1}×)",
        names.join("/"),
        mib(ours),
        other,
        mib(theirs),
        theirs as f64 / ours.max(1) as f64
    );
}

pub fn eval(a: &EvalArgs) -> anyhow::Result<()> {
    let run = match (&a.run, &a.init.init) {
        (Some(run), _) => {
            anyhow::ensure!(
                a.data.is_none() && !a.init.partial && !a.model.original && !a.model.tied,
                "--data, --partial, --original and --tied apply with --init only (a run is evaluated on its own test set)"
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
    let r = eval_run(run, a.depth, &placement)
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
