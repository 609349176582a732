//! `resnet-ode gradcheck`: adjoint vs backprop gradients, tensor by tensor, and the
//! reconstruction error, on one stack.

use super::DeviceArgs;
use burn::module::ModuleDisplay;
use burn::store::ModuleSnapshot;
use burn::tensor::Tensor;
use resnet_ode::device::{check_finite, Placement};
use resnet_ode::family::Family;
use resnet_ode::grad::GradMode;
use resnet_ode::io::{load_weights, save_weights};
use resnet_ode::metrics::{gradient_error, GradientError};
use resnet_ode::norm::BnMode;
use resnet_ode::params::flat_grads;
use resnet_ode::residual::{Activation, ConvBlockConfig, MlpConfig, Residual};
use resnet_ode::rng::Rng;
use resnet_ode::scheme::Scheme;
use resnet_ode::stack::Stack;
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Number of residual functions N.
    #[arg(long, default_value_t = 64)]
    depth: usize,
    /// euler or heun.
    #[arg(long, default_value = "euler")]
    scheme: String,
    /// Weights over depth: smooth, iid, piecewise:K, alternating.
    #[arg(long, default_value = "smooth")]
    weights: String,
    /// Residual function: mlp (d 16, hidden 16, tanh) or conv (TinyResNet block).
    #[arg(long, default_value = "mlp")]
    residual: String,
    /// Approximate gradient to check: adjoint (chained from x_N) or adjoint-per-step.
    #[arg(long, default_value = "adjoint")]
    grad: String,
    /// Batch-norm policy (conv): cached, frozen, recompute.
    #[arg(long, default_value = "cached")]
    bn: String,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Safetensors weights: loaded if the file exists, otherwise the drawn weights are saved there.
    #[arg(long)]
    weights_file: Option<PathBuf>,
    /// Write max_rel_sq_error, min_cosine, reconstruction_error (and per-tensor errors) to FILE.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Serialize)]
struct Output {
    depth: usize,
    scheme: String,
    weights: String,
    residual: String,
    grad: String,
    max_rel_sq_error: f64,
    min_cosine: f64,
    relative_error: f64,
    reconstruction_error: f64,
    tensors: Vec<resnet_ode::metrics::TensorError>,
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    let p = a.device.placement()?;
    let scheme: Scheme = a.scheme.parse()?;
    let family: Family = a.weights.parse()?;
    let mode: GradMode = a.grad.parse()?;
    let bn: BnMode = a.bn.parse()?;
    if !matches!(
        mode,
        GradMode::Adjoint | GradMode::AdjointSerial | GradMode::AdjointPerStep
    ) {
        anyhow::bail!(
            "invalid --grad: `{}`: gradcheck compares adjoint, adjoint-serial or adjoint-per-step against backprop",
            a.grad
        );
    }
    if a.batch == 0 {
        anyhow::bail!("invalid --batch: 0: expected at least 1");
    }
    // The weights the check runs on: a --weights-file that exists replaces the drawn family.
    let weights = match &a.weights_file {
        Some(path) if path.exists() => format!("file {}", path.display()),
        _ => a.weights.clone(),
    };
    let mut rng = Rng::new(a.seed);
    let (err, recon) = match a.residual.as_str() {
        "mlp" => {
            let cfg = MlpConfig {
                dim: 16,
                hidden: 16,
                activation: Activation::Tanh,
            };
            let fs = family.functions(a.depth, &mut rng, |r| cfg.init(&p, r));
            let x = p.tensor(rng.normals(a.batch * 16), [a.batch, 16]);
            check(a, &p, Stack::new(fs, scheme)?, x, mode, bn)?
        }
        "conv" => {
            let cfg = ConvBlockConfig {
                channels: 8,
                zero_init: false,
            };
            let fs = family.functions(a.depth, &mut rng, |r| cfg.init(&p, r));
            let x = p.tensor(rng.normals(a.batch * 8 * 64), [a.batch, 8, 8, 8]);
            check(a, &p, Stack::new(fs, scheme)?, x, mode, bn)?
        }
        other => anyhow::bail!("invalid --residual: `{other}`: expected mlp or conv"),
    };
    print(a, &weights, &err, recon);
    if let Some(path) = &a.json {
        let out = Output {
            depth: a.depth,
            scheme: a.scheme.clone(),
            weights,
            residual: a.residual.clone(),
            grad: a.grad.clone(),
            max_rel_sq_error: err.max_rel_sq_error,
            min_cosine: err.min_cosine,
            relative_error: err.relative_error,
            reconstruction_error: recon,
            tensors: err.tensors,
        };
        resnet_ode::report::write_json(path, &out)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Load or save the weights, then compare the approximate gradient with backprop's.
fn check<F, const D: usize>(
    a: &Args,
    _p: &Placement,
    stack: Stack<F>,
    x: Tensor<D>,
    mode: GradMode,
    bn: BnMode,
) -> anyhow::Result<(GradientError, f64)>
where
    F: Residual<D> + ModuleDisplay,
    Stack<F>: ModuleSnapshot,
{
    let stack = match &a.weights_file {
        Some(path) if path.exists() => {
            println!("loading weights from {}", path.display());
            load_weights(stack, path, _p.precision)?
        }
        Some(path) => {
            save_weights(&stack, path)?;
            println!("saved weights to {}", path.display());
            stack
        }
        None => stack,
    };
    check_finite(&x, "input batch")?;
    let loss = |y: Tensor<D>| y.square().mean();
    let b = stack.loss_grads(x.clone(), GradMode::Backprop, bn, loss);
    let g = stack.loss_grads(x.clone(), mode, bn, loss);
    let (gb, ga) = (flat_grads(&stack, &b.params), flat_grads(&stack, &g.params));
    for (name, v) in gb.iter().chain(&ga) {
        if v.iter().any(|x| !x.is_finite()) {
            anyhow::bail!("non-finite values in the gradient of `{name}`");
        }
    }
    let recon = stack.reconstruction_error(x, bn);
    Ok((gradient_error(&gb, &ga), recon))
}

fn print(a: &Args, weights: &str, e: &GradientError, recon: f64) {
    println!(
        "{} vs backprop: {} residual, N = {}, {} scheme, {} weights, seed {}",
        a.grad, a.residual, a.depth, a.scheme, weights, a.seed
    );
    println!(
        "{:<28} {:>10} {:>22}",
        "parameter tensor", "cosine", "mean(Δg²)/mean(g_b²)"
    );
    for t in &e.tensors {
        println!(
            "{:<28} {:>10.6} {:>22.3e}",
            t.name, t.cosine, t.rel_sq_error
        );
    }
    println!("max_rel_sq_error      {:.3e}", e.max_rel_sq_error);
    println!("min_cosine            {:.6}", e.min_cosine);
    println!(
        "relative_error        {:.3e}  (‖g_a − g_b‖/‖g_b‖ over all parameters)",
        e.relative_error
    );
    println!("reconstruction_error  {recon:.3e}  (‖x̃_0 − x_0‖/‖x_0‖)");
}
