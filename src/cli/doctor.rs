//! `resnet-ode doctor`: is the adjoint safe for this model on this data? Per-stage numbers and
//! a recommended gradient mode (see `resnet_ode::doctor`).

use super::pretrained::InitArgs;
use super::DeviceArgs;
use anyhow::Context;
use resnet_ode::data::{Batch, DataSpec, Dataset, Normalization};
use resnet_ode::device::Placement;
use resnet_ode::doctor::{diagnose, table, write, DoctorConfig, Report, DEFAULT_TOL};
use resnet_ode::grad::GradMode;
use resnet_ode::models::{Arch, InputShape, Model, ModelSpec};
use resnet_ode::report::ensure_writable_dir;
use resnet_ode::rng::Rng;
use resnet_ode::train::{load_run, DeviceBatch, RunRecord};
use std::path::PathBuf;

/// Per-stage diagnosis of a model on one batch of real data.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run directory written by `resnet-ode train` (its last checkpoint).
    #[arg(long, conflicts_with_all = ["model", "tied", "original", "depth", "scheme", "init"])]
    run: Option<PathBuf>,
    /// Or a pretrained PyTorch checkpoint (--init PATH, with --model/--original naming its
    /// architecture and --normalize its input normalisation).
    #[command(flatten)]
    init: InitArgs,
    /// Or a freshly initialised model: tiny or cifar-resnet20/32/44/56/110/1202.
    #[arg(long)]
    model: Option<String>,
    /// CIFAR ResNets: He et al.'s unscaled relu(x + f(x)) blocks.
    #[arg(long)]
    original: bool,
    /// One residual function per stack.
    #[arg(long)]
    tied: bool,
    /// Residual functions per stack (TinyResNet; CIFAR ResNets: fixed by the name).
    #[arg(long)]
    depth: Option<usize>,
    /// euler or heun.
    #[arg(long)]
    scheme: Option<String>,
    /// Seed of the fresh model's weights and of the split of unsplit data (digits, image
    /// folders); a run uses its own.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Data the batch is taken from (any source `train` reads); default: the run's, or digits.
    #[arg(long)]
    data: Option<String>,
    /// Images in the batch: the first ones of the training split, then of the test split.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Batch-norm policy of the training the verdict is for; default: the run's, or cached.
    #[arg(long)]
    bn: Option<String>,
    /// Tolerance on the adjoint's gradient error (largest per-tensor mean((g_b−g_a)²)/mean(g_b²)).
    #[arg(long, default_value_t = DEFAULT_TOL)]
    tol: f64,
    /// Repetitions of each memory measurement (the largest peak is kept).
    #[arg(long, default_value_t = 2)]
    memory_reps: usize,
    /// Directory for doctor.md, doctor.json and doctor.{png,svg}.
    #[arg(long, default_value = "doctor")]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    let p = a.device.placement()?;
    if a.batch_size == 0 {
        anyhow::bail!("invalid --batch-size: must be at least 1");
    }
    resnet_ode::doctor::check_tol(a.tol, "--tol")?;
    ensure_writable_dir(&a.out)?;
    let run = match &a.run {
        Some(dir) => {
            let (record, _, model) = load_run(dir, &p)
                .with_context(|| format!("reading the run in {}", dir.display()))?;
            Some((record, model))
        }
        None => None,
    };
    let record = run.as_ref().map(|r| &r.0);
    let data = a
        .data
        .clone()
        .or(record.map(|r| r.config.data.clone()))
        .unwrap_or_else(|| "digits".into());
    // A run's digits split is the one it was trained with (its seed).
    let seed = record.map_or(a.seed, |r| r.config.seed);
    let split = data.parse::<DataSpec>()?.load(seed)?;
    let norm = match (record, &a.init.init) {
        (Some(r), _) => r.normalization.clone(),
        // A checkpoint expects the normalisation it was trained with.
        (None, Some(_)) => Normalization::preset(&a.init.normalize, split.train.channels)?,
        (None, None) => Normalization::compute(&split.train),
    };
    let bn = a.bn.clone().or(record.map(|r| r.config.bn.to_string()));
    let input = InputShape {
        channels: split.train.channels,
        height: split.train.height,
        width: split.train.width,
        classes: split.train.classes,
    };
    let (model, name) = load_model(a, &p, input, run)?;
    let batch = first_images(split.train, split.test, &norm, a.batch_size)?;
    let cfg = DoctorConfig {
        tol: a.tol,
        bn: bn.as_deref().unwrap_or("cached").parse()?,
        memory_reps: a.memory_reps,
    };
    let stages = diagnose(&model, &DeviceBatch::new(&p, &batch, input.classes), &cfg)?;
    let report = Report {
        model: name,
        data,
        batch: batch.batch,
        bn: cfg.bn,
        tol: cfg.tol,
        stages,
    };
    print!("{}", table(&report));
    write(&report, &a.out)?;
    println!("wrote {}/doctor.{{md,json,png,svg}}", a.out.display());
    Ok(())
}

/// The one place the model comes from, with its name for the report: `--run DIR` (the run's
/// last checkpoint, loaded by the caller as `run`), `--init PATH` (a PyTorch checkpoint of
/// `--model`) or `--model NAME …` (fresh, seeded).
fn load_model(
    a: &Args,
    p: &Placement,
    input: InputShape,
    run: Option<(RunRecord, Model)>,
) -> anyhow::Result<(Model, String)> {
    if let Some((record, model)) = run {
        let dir = a.run.as_deref().unwrap_or(std::path::Path::new("?"));
        if record.input != input {
            let i = |s: InputShape| {
                format!(
                    "{}×{}×{}, {} classes",
                    s.channels, s.height, s.width, s.classes
                )
            };
            anyhow::bail!(
                "invalid --data: its images ({}) are not those the run in {} was trained on ({})",
                i(input),
                dir.display(),
                i(record.input)
            );
        }
        let m = &record.config.model;
        let tied = if m.tied { ", tied" } else { "" };
        return Ok((
            model,
            format!("run {} ({}{tied}, {})", dir.display(), m.arch, m.scheme),
        ));
    }
    let spec = model_spec(a)?;
    if let Some(path) = &a.init.init {
        let image = [input.channels, input.height, input.width];
        let model = a.init.load(path, &spec, image, p)?.model;
        if matches!(model, Model::Torchvision(_)) {
            anyhow::bail!(
                "invalid --model: {}: doctor measures the stages of tiny, cifar-resnet and authors-resnet models so far (torchvision's unscaled bottleneck stages are not yet covered)",
                spec.arch
            );
        }
        return Ok((
            model,
            format!("checkpoint {} ({})", path.display(), spec.arch),
        ));
    }
    let model = spec.init(p, input, &mut Rng::derive(a.seed, "model init"))?;
    let flags = [(a.original, " --original"), (a.tied, " --tied")];
    let extra: String = flags.iter().filter(|f| f.0).map(|f| f.1).collect();
    Ok((
        model,
        format!("fresh {}{extra} (seed {})", spec.arch, a.seed),
    ))
}

/// The architecture `--model`, `--original`, `--tied`, `--depth` and `--scheme` name.
fn model_spec(a: &Args) -> anyhow::Result<ModelSpec> {
    let Some(name) = &a.model else {
        anyhow::bail!("invalid --model: give --run DIR or --model NAME");
    };
    let spec = ModelSpec {
        arch: name.parse::<Arch>()?,
        depth: a.depth,
        scheme: a.scheme.as_deref().unwrap_or("euler").parse()?,
        tied: a.tied,
        original: a.original,
        ..ModelSpec::default()
    };
    spec.check(GradMode::Backprop)?;
    Ok(spec)
}

/// The first `n` images of `train` then `test`, normalised with `norm`.
fn first_images(
    mut train: Dataset,
    mut test: Dataset,
    norm: &Normalization,
    n: usize,
) -> anyhow::Result<Batch> {
    norm.apply(&mut train)?;
    norm.apply(&mut test)?;
    let from_train = n.min(train.len());
    let from_test = (n - from_train).min(test.len());
    let mut images = train.images[..from_train * train.image_len()].to_vec();
    images.extend_from_slice(&test.images[..from_test * test.image_len()]);
    let mut labels = train.labels[..from_train].to_vec();
    labels.extend_from_slice(&test.labels[..from_test]);
    if labels.is_empty() {
        anyhow::bail!("invalid --data: no images");
    }
    Ok(Batch {
        batch: labels.len(),
        images,
        labels,
        channels: train.channels,
        height: train.height,
        width: train.width,
    })
}
