//! `resnet-ode bench memory|speed`: one training step per configuration, table and JSON.

use super::{parse_list, DeviceArgs};
use anyhow::Context;
use clap::{Args, Subcommand};
use resnet_ode::bench::{measure, BenchConfig, BenchRecord, Workload};
use resnet_ode::bench_train::{measure as measure_train, BenchModel, TrainBench, TrainBenchRecord};
use resnet_ode::grad::GradMode;
use resnet_ode::scheme::Scheme;
use std::path::PathBuf;

/// Benchmarks of one training step through a residual stack.
#[derive(Subcommand, Debug)]
pub enum Bench {
    /// Peak activation memory vs depth, per gradient mode and scheme (one step each).
    Memory(BenchArgs),
    /// Median step time vs depth, per gradient mode and scheme.
    Speed(BenchArgs),
    /// Images/s and activation memory of whole training steps: TinyResNet, CIFAR ResNet-56/110.
    Train(TrainBenchArgs),
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Depths N (comma-separated). Default: 8,64,512,4096 (memory) or 8,64,512 (speed).
    #[arg(long, value_delimiter = ',')]
    depths: Vec<usize>,
    /// Workloads: mlp (batch 500, one MLP 500→8→500 tanh shared by all layers, as the paper),
    /// mlp-untied (N independent MLPs), convC (TinyResNet block, batch 128, C channels, 10×10).
    #[arg(long, value_delimiter = ',', default_value = "mlp,conv16")]
    workloads: Vec<String>,
    /// Gradient modes: backprop, adjoint, adjoint-serial, adjoint-per-step, checkpoint:K.
    #[arg(long, value_delimiter = ',', default_value = "backprop,adjoint")]
    modes: Vec<String>,
    /// Schemes: euler, heun.
    #[arg(long, value_delimiter = ',', default_value = "euler,heun")]
    schemes: Vec<String>,
    /// Batch-norm policy of the conv workloads: cached, frozen, recompute.
    #[arg(long, default_value = "cached")]
    bn: String,
    /// Deepest conv stack to run (conv steps are ~100× an MLP step).
    #[arg(long, default_value_t = 512)]
    max_conv_depth: usize,
    /// Timed repetitions per configuration (after one warm-up). Default: memory, as many layer
    /// steps at every depth as 3 repetitions of the workload's deepest stack (the peak is the
    /// largest over them: the adjoint's two threads make it depend on their timing); speed, 5.
    #[arg(long)]
    reps: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write one JSON record per run to FILE.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Measure every configuration in this process instead of a fresh child process each (then
    /// one configuration's allocator state and thread timing carry into the next).
    #[arg(long)]
    in_process: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(b: &Bench) -> anyhow::Result<()> {
    // The adjoint's peak depends on its two threads' timing (whether the next step's graph is
    // complete at a backward's peak: a rare event), and a peak is the largest over the steps
    // sampled. So the memory bench samples as many layer steps at every depth as three steps
    // of the deepest stack of the workload: a shallow stack gets as many chances to show its
    // peak as a deep one, and a ratio of peaks compares like with like. Each configuration runs
    // in its own process (`in_child`), so none inherits another's heap.
    let (args, default_depths, default_reps): (_, _, fn(usize, usize) -> usize) = match b {
        Bench::Memory(a) => (a, vec![8, 64, 512, 4096], |depth, deepest| {
            (3 * deepest).div_ceil(depth)
        }),
        Bench::Speed(a) => (a, vec![8, 64, 512], |_, _| 5),
        Bench::Train(a) => return train(a),
    };
    let p = args.device.placement()?;
    let depths = if args.depths.is_empty() {
        default_depths
    } else {
        args.depths.clone()
    };
    if depths.contains(&0) {
        anyhow::bail!("invalid --depths: 0: every depth must be at least 1");
    }
    let workloads: Vec<Workload> = parse_list("--workloads", &args.workloads)?;
    let modes: Vec<GradMode> = parse_list("--modes", &args.modes)?;
    let schemes: Vec<Scheme> = parse_list("--schemes", &args.schemes)?;
    let bn: resnet_ode::norm::BnMode = args.bn.parse()?;
    check_json_dir(args.json.as_deref())?;
    memory_note(&args.device.device, matches!(b, Bench::Memory(_)))?;
    println!("minus the gradients still held when it returns; step time: median over repetitions.");
    println!("device {} dtype {}", args.device.device, args.device.dtype);
    println!(
        "{:<10} {:<6} {:<17} {:>6} {:>12} {:>11} {:>11} {:>10}",
        "workload", "scheme", "mode", "depth", "activ. MiB", "grads MiB", "params MiB", "step ms"
    );
    let mut records: Vec<BenchRecord> = Vec::new();
    // Modes innermost: the gradient modes of one depth run back to back, under the same machine
    // state, so their time ratio is not skewed by drift between distant runs.
    for &w in &workloads {
        let runs = |depth: usize| !matches!(w, Workload::Conv(_)) || depth <= args.max_conv_depth;
        let deepest = depths
            .iter()
            .copied()
            .filter(|&d| runs(d))
            .max()
            .unwrap_or(1);
        for &scheme in &schemes {
            for &depth in &depths {
                if !runs(depth) {
                    continue;
                }
                for &mode in &modes {
                    let cfg = BenchConfig {
                        scheme,
                        mode,
                        bn,
                        depth,
                        reps: args.reps.unwrap_or(default_reps(depth, deepest)),
                        seed: args.seed,
                        device: args.device.device.clone(),
                    };
                    let r = if args.in_process {
                        Ok(measure(&p, w, &cfg)?)
                    } else {
                        in_child(&stack_child_args(b, args, w, &cfg))
                    }
                    .with_context(|| format!("{w} {scheme} {mode} depth {depth}"))?;
                    print_row(&r);
                    records.push(r);
                }
            }
        }
    }
    if let Some(path) = &args.json {
        resnet_ode::report::write_json(path, &records)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The command line that measures `cfg` on `w` alone, as `run` would in process.
fn stack_child_args(b: &Bench, a: &BenchArgs, w: Workload, cfg: &BenchConfig) -> Vec<String> {
    let kind = if matches!(b, Bench::Memory(_)) {
        "memory"
    } else {
        "speed"
    };
    let depth = cfg.depth.to_string();
    let flags = [
        ("--workloads", w.to_string()),
        ("--schemes", cfg.scheme.to_string()),
        ("--modes", cfg.mode.to_string()),
        ("--depths", depth.clone()),
        ("--max-conv-depth", depth),
        ("--bn", cfg.bn.to_string()),
        ("--reps", cfg.reps.to_string()),
        ("--seed", cfg.seed.to_string()),
    ];
    child_args(kind, flags, &a.device)
}

/// The command line that measures `cfg` alone, as `train` would in process.
fn train_child_args(a: &TrainBenchArgs, cfg: &TrainBench) -> Vec<String> {
    let flags = [
        ("--models", cfg.model.to_string()),
        ("--tiny-depths", cfg.depth.to_string()),
        ("--schemes", cfg.scheme.to_string()),
        ("--modes", cfg.mode.to_string()),
        ("--batch", cfg.batch.to_string()),
        ("--steps", cfg.steps.to_string()),
        ("--seed", cfg.seed.to_string()),
        ("--bn", cfg.bn.to_string()),
    ];
    let trace = cfg
        .trace
        .iter()
        .map(|d| ("--trace", d.display().to_string()));
    child_args("train", flags.into_iter().chain(trace), &a.device)
}

/// `bench KIND`, then each flag and its value, then the device flags.
fn child_args(
    kind: &str,
    flags: impl IntoIterator<Item = (&'static str, String)>,
    device: &DeviceArgs,
) -> Vec<String> {
    let device = [
        ("--device", device.device.clone()),
        ("--dtype", device.dtype.clone()),
    ];
    ["bench", kind]
        .map(String::from)
        .into_iter()
        .chain(
            flags
                .into_iter()
                .chain(device)
                .flat_map(|(flag, value)| [flag.to_string(), value]),
        )
        .collect()
}

/// Run this binary with `args` plus `--in-process --json FILE` and return the one record it
/// writes. A fresh process per configuration makes each measurement independent of the ones
/// before it: in one process the adjoint's peak (which depends on its two threads' timing) read
/// 6.85 MiB at N = 8–512 after backprop runs and 7.72 MiB when measured alone.
fn in_child<R: serde::de::DeserializeOwned>(args: &[String]) -> anyhow::Result<R> {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let json = std::env::temp_dir().join(format!(
        "resnet-ode-bench-{}-{run}.json",
        std::process::id()
    ));
    let exe = std::env::current_exe().context("cannot locate this executable")?;
    let out = std::process::Command::new(exe)
        .args(args)
        .arg("--in-process")
        .arg("--json")
        .arg(&json)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .context("cannot start the child process")?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&json);
        anyhow::bail!(
            "child process `{}` failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = std::fs::read_to_string(&json);
    let _ = std::fs::remove_file(&json);
    let text = text.with_context(|| format!("cannot read {}", json.display()))?;
    let mut records: Vec<R> = serde_json::from_str(&text)
        .with_context(|| format!("unexpected records in {}", json.display()))?;
    match (records.pop(), records.is_empty()) {
        (Some(r), true) => Ok(r),
        _ => anyhow::bail!("{} holds not exactly one record", json.display()),
    }
}

/// Fail before any measurement when `--json`'s folder cannot take the file.
fn check_json_dir(json: Option<&std::path::Path>) -> anyhow::Result<()> {
    if let Some(dir) = json.and_then(std::path::Path::parent) {
        if !dir.as_os_str().is_empty() {
            resnet_ode::report::ensure_writable_dir_for(dir, "--json")?;
        }
    }
    Ok(())
}

fn print_row(r: &BenchRecord) {
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    println!(
        "{:<10} {:<6} {:<17} {:>6} {:>12.2} {:>11.2} {:>11.2} {:>10.1}",
        r.workload,
        r.scheme,
        r.mode,
        r.depth,
        mib(r.activation_peak_bytes),
        mib(r.gradient_bytes),
        mib(r.parameter_bytes),
        r.step_ms
    );
}

/// `bench train` flags.
#[derive(Args, Debug)]
pub struct TrainBenchArgs {
    /// Models: tiny (the paper's TinyResNet, P = 16, at each --tiny-depths) and resnetL (He et
    /// al.'s CIFAR ResNet-L with 1/N-scaled stages, e.g. resnet56, resnet110).
    #[arg(long, value_delimiter = ',', default_value = "tiny,resnet56,resnet110")]
    models: Vec<String>,
    /// TinyResNet stack depths N.
    #[arg(long, value_delimiter = ',', default_value = "16,64,256")]
    tiny_depths: Vec<usize>,
    /// Gradient modes: backprop, adjoint, adjoint-serial, adjoint-per-step, checkpoint:K.
    #[arg(long, value_delimiter = ',', default_value = "backprop,adjoint")]
    modes: Vec<String>,
    /// Schemes for TinyResNet (euler, heun); the CIFAR ResNets run Euler, as He et al.'s blocks.
    #[arg(long, value_delimiter = ',', default_value = "euler")]
    schemes: Vec<String>,
    /// Images per step (random 3×32×32 inputs, random labels).
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Timed steps per configuration (median reported), after one warm-up step.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Batch-norm policy under the adjoint: cached (default: the forward's statistics,
    /// straight-through), frozen, recompute (the paper's adjoint: batch statistics of the
    /// reconstructed input).
    #[arg(long, default_value = "cached")]
    bn: String,
    /// Write the records (model, depth, scheme, mode, batch, step_ms, images_per_sec,
    /// activation_peak_bytes, device, bn) as a JSON array to FILE.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Measure every configuration in this process instead of a fresh child process each.
    #[arg(long)]
    in_process: bool,
    /// LibTorch devices: after the timed steps, run one more under PyTorch's profiler and write
    /// its Chrome trace (every ATen operation; on libtorch-cuda every CUDA kernel) to
    /// DIR/MODEL-SCHEME-MODE.json, e.g. tiny16-euler-adjoint.json. Summarise with
    /// scripts/trace-summary.py, beside bench/pytorch/bench_train.py --trace.
    #[arg(long, value_name = "DIR")]
    trace: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Every configuration `a` names: each model × scheme × mode (× depth for TinyResNet).
fn train_configs(a: &TrainBenchArgs) -> anyhow::Result<Vec<TrainBench>> {
    let models: Vec<BenchModel> = parse_list("--models", &a.models)?;
    let modes: Vec<GradMode> = parse_list("--modes", &a.modes)?;
    let schemes: Vec<Scheme> = parse_list("--schemes", &a.schemes)?;
    let bn: resnet_ode::norm::BnMode = a.bn.parse()?;
    let mut out = Vec::new();
    for &model in &models {
        let (depths, schemes) = match model {
            BenchModel::Tiny => (a.tiny_depths.clone(), schemes.clone()),
            BenchModel::CifarResNet(layers) => (vec![layers], vec![Scheme::Euler]),
        };
        for &scheme in &schemes {
            for &mode in &modes {
                for &depth in &depths {
                    out.push(TrainBench {
                        model,
                        depth,
                        scheme,
                        mode,
                        batch: a.batch,
                        steps: a.steps,
                        seed: a.seed,
                        device: a.device.device.clone(),
                        bn,
                        trace: a.trace.clone(),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Says what the memory columns count on `device`, and warns where they cannot see its buffers;
/// an error where memory is what was asked for (`needed`) and this device's cannot be read.
fn memory_note(device: &str, needed: bool) -> anyhow::Result<()> {
    let meter = resnet_ode::memory::Meter::for_device(device)?;
    if let resnet_ode::memory::Meter::Unread(why) = &meter {
        if needed {
            anyhow::bail!(
                "invalid --device {device}: {why}; `bench memory` reads GPU memory through NVML \
                 (NVIDIA) or CubeCL's memory pools, and this device has neither"
            );
        }
        eprintln!("note: memory columns read 0: {why}");
    } else if !meter.is_reading() {
        eprintln!("note: heap counting is off; memory columns read 0");
    }
    if device == "libtorch" {
        eprintln!(
            "note: memory columns count Rust heap allocations; LibTorch's CPU buffers are not seen"
        );
    }
    println!("Activation memory: {},", meter.describe());
    Ok(())
}

fn train(a: &TrainBenchArgs) -> anyhow::Result<()> {
    let p = a.device.placement()?;
    let configs = train_configs(a)?;
    for cfg in &configs {
        cfg.check()?;
    }
    check_json_dir(a.json.as_deref())?;
    println!("Training steps (forward, backward, SGD update) on random 3×32×32 images; step time:");
    println!("median over {} steps after a warm-up.", a.steps);
    memory_note(&a.device.device, false)?;
    println!(
        "minus the gradients. device {} dtype {}, batch norm {}",
        a.device.device, a.device.dtype, a.bn
    );
    println!(
        "{:<10} {:>6} {:<6} {:<17} {:>6} {:>10} {:>10} {:>12}",
        "model", "depth", "scheme", "mode", "batch", "step ms", "images/s", "activ. MiB"
    );
    let mut records: Vec<TrainBenchRecord> = Vec::new();
    for cfg in &configs {
        let r = if a.in_process {
            Ok(measure_train(&p, cfg)?)
        } else {
            in_child(&train_child_args(a, cfg))
        }
        .with_context(|| {
            format!(
                "{} depth {} {} {}",
                cfg.model, cfg.depth, cfg.scheme, cfg.mode
            )
        })?;
        println!(
            "{:<10} {:>6} {:<6} {:<17} {:>6} {:>10.1} {:>10.1} {:>12.2}",
            r.model,
            r.depth,
            r.scheme,
            r.mode,
            r.batch,
            r.step_ms,
            r.images_per_sec,
            r.activation_peak_bytes as f64 / (1024.0 * 1024.0)
        );
        records.push(r);
    }
    if let Some(path) = &a.json {
        resnet_ode::report::write_json(path, &records)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
