//! Command-line interface: argument parsing and printing; the work is done by the library.

mod bench;
mod doctor;
mod experiment;
mod gradcheck;
mod pretrained;
mod train;

use clap::{Parser, Subcommand};
use resnet_ode::device::{DeviceSpec, Placement, Precision};

/// Do residual networks discretize Neural ODEs? Measure it, and train with the memory-free adjoint.
#[derive(Parser, Debug)]
#[command(name = "resnet-ode", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Adjoint vs backprop gradients and reconstruction error on one stack.
    Gradcheck(gradcheck::Args),
    /// Memory and speed benchmarks.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// The paper's experiments, with figures and a report.
    #[command(subcommand)]
    Experiment(experiment::Experiment),
    /// Train a ResNet on images in any gradient mode.
    Train(Box<train::TrainArgs>),
    /// Evaluate a trained run (a tied model at another depth: the ODE-like test), or a
    /// pretrained PyTorch checkpoint on images (--init).
    Eval(train::EvalArgs),
    /// Is the adjoint safe for this model on this data? Per-stage numbers and a gradient mode.
    Doctor(doctor::Args),
    /// Write a run or a checkpoint as safetensors with PyTorch's key names.
    Export(pretrained::ExportArgs),
}

/// Device and precision flags shared by every command.
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Compute device: flex (pure-Rust CPU), libtorch, libtorch-cuda:N, cuda:N, vulkan[:N], wgpu[:N].
    #[arg(long, default_value = "flex")]
    pub device: String,
    /// Float precision: f32 or f64.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

impl DeviceArgs {
    /// The placement these flags name, or an error naming the flag.
    pub fn placement(&self) -> anyhow::Result<Placement> {
        let spec: DeviceSpec = self.device.parse()?;
        let precision: Precision = self.dtype.parse()?;
        let device = spec.device()?;
        spec.check_precision(precision)?;
        Ok(Placement::new(device, precision))
    }
}

/// Parses every value of a list flag (`--modes a,b`), naming that flag in the error: the value
/// parsers name the single-value flag they usually serve (`--grad`, `--scheme`, `--weights`).
pub fn parse_list<T: std::str::FromStr<Err = resnet_ode::Error>>(
    flag: &str,
    values: &[String],
) -> anyhow::Result<Vec<T>> {
    let relabel = |e: resnet_ode::Error| match e {
        resnet_ode::Error::Invalid { msg, .. } => resnet_ode::Error::invalid(flag, msg),
        other => other,
    };
    Ok(values
        .iter()
        .map(|s| s.parse::<T>().map_err(relabel))
        .collect::<Result<Vec<T>, _>>()?)
}

/// Parse the command line and run it.
pub fn run() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Gradcheck(a) => gradcheck::run(&a),
        Command::Bench(b) => bench::run(&b),
        Command::Experiment(e) => experiment::run(&e),
        Command::Train(a) => train::train(&a),
        Command::Eval(a) => train::eval(&a),
        Command::Doctor(a) => doctor::run(&a),
        Command::Export(a) => pretrained::run_export(&a),
    }
}
