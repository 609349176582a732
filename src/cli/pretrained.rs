//! Pretrained PyTorch checkpoints on the command line: `eval --init` and `export`.

use super::DeviceArgs;
use anyhow::Context;
use resnet_ode::data::{DataSpec, Normalization};
use resnet_ode::device::Placement;
use resnet_ode::import::{export, Checkpoint, ImportOptions, Imported};
use resnet_ode::models::{Arch, ModelSpec, AUTHORS_PLANES, DEFAULT_PLANES};
use resnet_ode::train::{load_run, score_images};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The flags that name a pretrained checkpoint and how to read it.
#[derive(clap::Args, Debug, Clone)]
pub struct InitArgs {
    /// PyTorch checkpoint to start from: legacy .th, zip .pth or .safetensors (a wrapping
    /// state_dict/net/model key and a DataParallel `module.` prefix are removed).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Load what fits the model and list the rest, instead of failing on any mismatch.
    #[arg(long)]
    pub partial: bool,
    /// Input normalisation the checkpoint was trained with: imagenet (torchvision, He et al.'s
    /// CIFAR ResNets), cifar10 (the paper authors' models) or none.
    #[arg(long, default_value = "imagenet")]
    pub normalize: String,
}

impl InitArgs {
    /// Reads the checkpoint and loads it into a `spec` model for images of `[channels, height,
    /// width]`, printing what a partial load skipped.
    pub fn load(
        &self,
        path: &Path,
        spec: &ModelSpec,
        image: [usize; 3],
        p: &Placement,
    ) -> anyhow::Result<Imported> {
        let ck = Checkpoint::open(path)?;
        let input = ck.input(spec, image[1], image[2])?;
        anyhow::ensure!(
            input.channels == image[0],
            "{}: the checkpoint's first convolution takes {} channels; the images have {}",
            path.display(),
            input.channels,
            image[0]
        );
        let options = ImportOptions {
            partial: self.partial,
        };
        let imported = ck.load(spec, input, p, &options)?;
        if !imported.skipped.is_empty() {
            eprintln!(
                "--partial: loaded {} tensors; skipped {} (missing ones keep their random initialisation):",
                imported.loaded,
                imported.skipped.len()
            );
            imported.skipped.iter().for_each(|s| eprintln!("  {s}"));
        }
        Ok(imported)
    }
}

/// The flags that fix an imported checkpoint's model.
#[derive(clap::Args, Debug, Clone)]
pub struct ImportModelArgs {
    /// The checkpoint's model: cifar-resnetL (with --original), torchvision-resnet18/34/50/101/152,
    /// authors-resnet-A-B-C-D (the paper authors' models, n_layers per stage) or tiny (their
    /// iTinyResnet).
    #[arg(long, default_value = "cifar-resnet20")]
    pub model: String,
    /// He et al.'s unscaled CIFAR ResNet (their checkpoints' form).
    #[arg(long)]
    pub original: bool,
    /// authors-resnet: tied (IResNetAuto2) instead of untied (ResNetMemoryCustom).
    #[arg(long)]
    pub tied: bool,
    /// authors-resnet: the first stage's base channels (default 64, the paper's); tiny: the
    /// channels P (default 16, the paper's).
    #[arg(long)]
    pub planes: Option<usize>,
    /// tiny and authors-resnet: the depth scheme, euler or heun.
    #[arg(long, default_value = "euler")]
    pub scheme: String,
}

impl ImportModelArgs {
    /// The spec these flags name; `depth` is TinyResNet's N (None: 8) and ignored otherwise.
    pub fn spec(&self, depth: Option<usize>) -> anyhow::Result<ModelSpec> {
        let arch = self.model.parse::<Arch>()?;
        Ok(ModelSpec {
            arch,
            depth: depth.filter(|_| arch == Arch::Tiny),
            original: self.original,
            tied: self.tied,
            planes: self.planes.unwrap_or(match arch {
                Arch::Tiny => DEFAULT_PLANES,
                _ => AUTHORS_PLANES,
            }),
            scheme: self.scheme.parse()?,
            ..ModelSpec::default()
        })
    }
}

/// `eval --init`: a pretrained checkpoint scored on `--data`; a tied model with `depth` runs at
/// that depth (the ODE-like test of paper.md §3.2 on a pretrained model).
pub fn eval_init(
    init: &InitArgs,
    path: &Path,
    spec: &ModelSpec,
    depth: Option<usize>,
    data: &str,
    json: bool,
    device: &DeviceArgs,
) -> anyhow::Result<()> {
    let p = device.placement()?;
    let source: DataSpec = data.parse()?;
    let mut images = source.load_eval(0)?;
    Normalization::preset(&init.normalize, images.channels)?.apply(&mut images)?;
    let shape = [images.channels, images.height, images.width];
    let imported = init.load(path, spec, shape, &p)?;
    let (model, name) = match depth.filter(|_| spec.arch != Arch::Tiny) {
        Some(d) => (
            imported.model.with_depth(d)?,
            format!("{} at depth {d}", model_name(spec)),
        ),
        None => (imported.model, model_name(spec)),
    };
    let scores = score_images(&model, &Arc::new(images), &p)?;
    if json {
        let out = serde_json::json!({
            "checkpoint": path,
            "model": name,
            "data": data,
            "normalize": init.normalize,
            "dtype": device.dtype,
            "loaded": imported.loaded,
            "skipped": imported.skipped,
            "scores": scores,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{} ({}, {} tensors): accuracy {:.2}% ({}/{}), loss {:.4} on {data} ({} normalisation)",
        path.display(),
        name,
        imported.loaded,
        100.0 * scores.accuracy,
        scores.correct,
        scores.examples,
        scores.loss,
        init.normalize
    );
    Ok(())
}

fn model_name(spec: &ModelSpec) -> String {
    let mut name = spec.arch.to_string();
    if spec.original {
        name += " --original";
    }
    if matches!(spec.arch, Arch::Authors(_) | Arch::Tiny) {
        name += &format!(
            " --planes {}{}",
            spec.planes,
            if spec.tied { " --tied" } else { "" }
        );
    }
    name
}

/// Write a model as safetensors with PyTorch's key names (`load_state_dict(strict=True)`).
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Run directory written by `resnet-ode train` (its last checkpoint is exported).
    #[arg(long, required_unless_present = "init", conflicts_with = "init")]
    run: Option<PathBuf>,
    /// …or a checkpoint to convert (e.g. a legacy .th to .safetensors).
    #[arg(long)]
    init: Option<PathBuf>,
    /// With --init: the checkpoint's model.
    #[command(flatten)]
    model: ImportModelArgs,
    /// With --init and tiny: the residual functions N (default 8).
    #[arg(long)]
    depth: Option<usize>,
    /// The safetensors file to write (atomically).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run_export(a: &ExportArgs) -> anyhow::Result<()> {
    let p = a.device.placement()?;
    let (model, spec, from) = match (&a.run, &a.init) {
        (Some(dir), _) => {
            let (record, _, model) = load_run(dir, &p)
                .with_context(|| format!("loading the run in {}", dir.display()))?;
            (model, record.config.model, dir.clone())
        }
        (None, Some(path)) => {
            let spec = a.model.spec(a.depth)?;
            let ck = Checkpoint::open(path)?;
            let input = ck.input(&spec, 32, 32)?;
            let model = ck.load(&spec, input, &p, &ImportOptions::default())?.model;
            (model, spec, path.clone())
        }
        (None, None) => anyhow::bail!("export needs --run DIR or --init PATH"),
    };
    let n = export(&model, &spec, &a.out)?;
    println!(
        "{} ({}) → {}: {n} tensors, PyTorch names",
        from.display(),
        model_name(&spec),
        a.out.display()
    );
    Ok(())
}
