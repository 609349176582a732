//! `experiment reconstruction` and `experiment gradient-error` (paper.md §2 claims 3–4, §3.4,
//! §3.7): the memory-free adjoint rebuilds x_n by reverse steps chained from x_N; how far the
//! reconstruction x̃_0 lands from x_0, and how far the adjoint's gradient is from backprop's, as
//! the depth grows, for Euler and Heun and for weights smooth, i.i.d. or piecewise constant in
//! depth, on MLP stacks and on conv stacks fed with real images.
//!
//! The paper's bounds: Euler O(1/N) whenever f is Lipschitz in x; Heun O(1/N²) when the weights
//! are smooth in depth (otherwise only O(1/N)). Reference slopes (paper.md §2, MLP): Euler −1.0
//! smooth / −1.5 i.i.d.; Heun −3.0 smooth / −1.5 i.i.d.

use super::Outcome;
use super::{check_depths, f64_placement, normal_input, num, powers_of_two, progress, slope};
use crate::data::digits;
use crate::device::Placement;
use crate::family::Family;
use crate::grad::GradMode;
use crate::metrics::gradient_error;
use crate::norm::BnMode;
use crate::params::flat_grads;
use crate::plot::{loglog, RefSlope, Series, SeriesStyle};
use crate::report::{write_csv, write_json, Claim};
use crate::residual::{Activation, Conv, ConvBlockConfig, MlpConfig, Residual};
use crate::rng::Rng;
use crate::scheme::Scheme;
use crate::stack::Stack;
use crate::{Error, Result};
use burn::module::ModuleDisplay;
use burn::tensor::Tensor;
use serde::Serialize;
use std::path::Path;

/// Which quantity the sweep measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Measure {
    /// ‖x̃_0 − x_0‖ / ‖x_0‖ after the chained reversal.
    Reconstruction,
    /// Adjoint vs backprop gradients of mean(x_N²).
    Gradient,
}

impl Measure {
    /// The experiment's command name.
    pub fn name(self) -> &'static str {
        match self {
            Measure::Reconstruction => "reconstruction",
            Measure::Gradient => "gradient-error",
        }
    }

    fn quantity(self) -> &'static str {
        match self {
            Measure::Reconstruction => "reconstruction error ‖x̃₀ − x₀‖/‖x₀‖",
            Measure::Gradient => "adjoint gradient error ‖g_a − g_b‖/‖g_b‖",
        }
    }
}

/// Residual kinds swept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
    /// MLP d = 16, hidden 16, tanh, on Gaussian inputs (the reference setting).
    Mlp,
    /// TinyResNet's conv block on the built-in digits lifted to a few channels.
    Conv,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Mlp => "mlp",
            Kind::Conv => "conv",
        })
    }
}

/// Settings of the sweep; the defaults follow the reference (N = 16…256, batch 32, f64).
#[derive(Debug, Clone)]
pub struct Config {
    pub kinds: Vec<Kind>,
    pub schemes: Vec<Scheme>,
    pub families: Vec<Family>,
    pub depths: Vec<usize>,
    pub seed: u64,
    /// Inputs (MLP) or images (conv) in the batch.
    pub batch: usize,
    pub mlp_dim: usize,
    pub mlp_hidden: usize,
    /// Channels the digits are lifted to for the conv stacks.
    pub channels: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            kinds: vec![Kind::Mlp, Kind::Conv],
            schemes: vec![Scheme::Euler, Scheme::Heun],
            families: vec![Family::Smooth, Family::Iid, Family::Piecewise(4)],
            depths: powers_of_two(16, 256),
            seed: 0,
            batch: 32,
            mlp_dim: 16,
            mlp_hidden: 16,
            channels: 4,
        }
    }
}

/// One (kind, scheme, family, depth) measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub kind: String,
    pub scheme: String,
    pub family: String,
    pub depth: usize,
    /// The reconstruction error, or the gradient's relative error.
    pub error: f64,
    /// Gradient only: the smallest per-tensor cosine and the largest per-tensor
    /// `mean((g_b − g_a)²)/mean(g_b²)` (absent for the reconstruction, which has no gradient).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_cosine: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rel_sq_error: Option<f64>,
}

/// The measurements and their setting.
#[derive(Debug, Clone, Serialize)]
pub struct Data {
    pub measure: Measure,
    pub setting: String,
    pub rows: Vec<Row>,
}

/// Runs the sweep for `measure`. Errors on a bad setting before any work.
pub fn run(cfg: &Config, measure: Measure, show_progress: bool) -> Result<Data> {
    let min = if cfg.schemes.contains(&Scheme::Heun) {
        2
    } else {
        1
    };
    check_depths(&cfg.depths, min)?;
    super::check_sizes(&[
        ("--batch", cfg.batch),
        ("the MLP width (Config::mlp_dim)", cfg.mlp_dim),
        ("the MLP hidden width (Config::mlp_hidden)", cfg.mlp_hidden),
        ("--channels", cfg.channels),
    ])?;
    let p = f64_placement();
    let images = if cfg.kinds.contains(&Kind::Conv) {
        Some(lifted_digits(&p, cfg)?)
    } else {
        None
    };
    let jobs = cfg.kinds.len() * cfg.schemes.len() * cfg.families.len() * cfg.depths.len();
    let bar = progress(jobs as u64, measure.name(), show_progress);
    let mut rows = Vec::new();
    for &kind in &cfg.kinds {
        for &scheme in &cfg.schemes {
            for &family in &cfg.families {
                for &depth in &cfg.depths {
                    let at = At {
                        scheme,
                        family,
                        depth,
                        measure,
                    };
                    let m = match (kind, &images) {
                        (Kind::Conv, Some(x)) => conv_point(&p, cfg, &at, x)?,
                        _ => mlp_point(&p, cfg, &at)?,
                    };
                    rows.push(row(kind, &at, m));
                    bar.inc(1);
                }
            }
        }
    }
    bar.finish_and_clear();
    Ok(Data {
        measure,
        setting: setting(cfg),
        rows,
    })
}

fn setting(cfg: &Config) -> String {
    format!(
        "chained adjoint (reverse steps from x_N), loss mean(x_N²), f64, seed {}. MLP stacks: d = {}, \
         hidden {}, tanh, {} Gaussian inputs. Conv stacks: TinyResNet blocks (conv3×3 → BN → ReLU → \
         conv3×3 → BN, batch norm `cached`) on the first {} built-in 8×8 digits, lifted from 1 to {} \
         channels by a fixed random 1×1 convolution (PyTorch default init, seed {})",
        cfg.seed, cfg.mlp_dim, cfg.mlp_hidden, cfg.batch, cfg.batch, cfg.channels, cfg.seed
    )
}

/// The first `batch` digits (N×1×8×8) through a fixed random 1×1 convolution to `channels`.
fn lifted_digits(p: &Placement, cfg: &Config) -> Result<Tensor<4>> {
    let ds = digits()?;
    let n = cfg.batch.min(ds.len());
    let ds = ds.take(n);
    let values = ds.images.iter().map(|&v| v as f64).collect();
    let x = p.tensor(values, [n, ds.channels, ds.height, ds.width]);
    let mut rng = Rng::derive(cfg.seed, "lift");
    let lift = Conv::new(p, &mut rng, ds.channels, cfg.channels, 1, true);
    Ok(lift.forward(x).detach())
}

/// Where one measurement is taken.
struct At {
    scheme: Scheme,
    family: Family,
    depth: usize,
    measure: Measure,
}

/// One measurement: the reconstruction error or the gradient's relative error, with the
/// gradient's per-tensor extremes (none for the reconstruction).
struct Point {
    error: f64,
    min_cosine: Option<f64>,
    max_rel_sq_error: Option<f64>,
}

fn row(kind: Kind, at: &At, p: Point) -> Row {
    Row {
        kind: kind.to_string(),
        scheme: at.scheme.to_string(),
        family: at.family.to_string(),
        depth: at.depth,
        error: p.error,
        min_cosine: p.min_cosine,
        max_rel_sq_error: p.max_rel_sq_error,
    }
}

/// The weights of a stack at one point: the same seed for every depth, so the smooth family
/// samples one θ(t).
fn functions<F>(at: &At, seed: u64, draw: impl FnMut(&mut Rng) -> F) -> Result<Stack<F>>
where
    F: burn::module::Module + ModuleDisplay,
{
    let mut rng = Rng::derive(seed, "weights");
    Stack::new(at.family.functions(at.depth, &mut rng, draw), at.scheme)
}

fn mlp_point(p: &Placement, cfg: &Config, at: &At) -> Result<Point> {
    let mlp = MlpConfig {
        dim: cfg.mlp_dim,
        hidden: cfg.mlp_hidden,
        activation: Activation::Tanh,
    };
    let stack = functions(at, cfg.seed, |r| mlp.init(p, r))?;
    let x0 = normal_input(p, [cfg.batch, cfg.mlp_dim], cfg.seed);
    measure(&stack, x0, at.measure)
}

fn conv_point(p: &Placement, cfg: &Config, at: &At, images: &Tensor<4>) -> Result<Point> {
    // Not zero-initialised: a block that starts as exactly 0 has nothing to reconstruct.
    let block = ConvBlockConfig {
        channels: cfg.channels,
        zero_init: false,
    };
    let stack = functions(at, cfg.seed, |r| block.init(p, r))?;
    measure(&stack, images.clone(), at.measure)
}

/// Reconstruction error, or adjoint vs backprop gradients of mean(x_N²).
fn measure<F, const D: usize>(stack: &Stack<F>, x0: Tensor<D>, m: Measure) -> Result<Point>
where
    F: Residual<D> + ModuleDisplay,
{
    let point = match m {
        Measure::Reconstruction => Point {
            error: stack.reconstruction_error(x0, BnMode::Cached),
            min_cosine: None,
            max_rel_sq_error: None,
        },
        Measure::Gradient => {
            let loss = |x: Tensor<D>| x.square().mean();
            let b = stack.loss_grads(x0.clone(), GradMode::Backprop, BnMode::Cached, loss);
            let a = stack.loss_grads(x0, GradMode::Adjoint, BnMode::Cached, loss);
            let e = gradient_error(&flat_grads(stack, &b.params), &flat_grads(stack, &a.params));
            Point {
                error: e.relative_error,
                min_cosine: Some(e.min_cosine),
                max_rel_sq_error: Some(e.max_rel_sq_error),
            }
        }
    };
    if !point.error.is_finite() {
        return Err(Error::NonFinite {
            what: format!("{} of a depth-{} stack", m.name(), stack.depth),
        });
    }
    Ok(point)
}

/// The paper's bound on the error's slope: Heun −2 when the weights are smooth in depth
/// (f_{n+1} − f_n = O(1/N) at every layer), −1 otherwise (Euler, or weights that jump:
/// piecewise-constant weights jump K − 1 times, which already costs O(K/N²) in the
/// reconstruction and more in the gradient of ReLU/BN conv blocks).
pub fn bound(scheme: Scheme, family: Family) -> f64 {
    match (scheme, family) {
        (Scheme::Heun, Family::Smooth) => -2.0,
        _ => -1.0,
    }
}

/// The reference slope measured on MLPs (paper.md §2), where there is one.
pub fn reference(scheme: Scheme, family: Family) -> Option<f64> {
    match (scheme, family) {
        (Scheme::Euler, Family::Smooth) => Some(-1.0),
        (Scheme::Heun, Family::Smooth) => Some(-3.0),
        (_, Family::Iid) => Some(-1.5),
        _ => None,
    }
}

/// Groups of rows sharing (kind, scheme, family), in sweep order.
fn groups(data: &Data) -> Vec<(String, String, String, Vec<&Row>)> {
    let mut out: Vec<(String, String, String, Vec<&Row>)> = Vec::new();
    for r in &data.rows {
        match out
            .iter_mut()
            .find(|g| g.0 == r.kind && g.1 == r.scheme && g.2 == r.family)
        {
            Some(g) => g.3.push(r),
            None => out.push((r.kind.clone(), r.scheme.clone(), r.family.clone(), vec![r])),
        }
    }
    out
}

/// One claim per (kind, scheme, family): the measured slope within the paper's bound.
pub fn claims(data: &Data) -> Vec<Claim> {
    groups(data)
        .into_iter()
        .filter_map(|(kind, scheme, family, rows)| {
            let (s, f) = (
                scheme.parse::<Scheme>().ok()?,
                family.parse::<Family>().ok()?,
            );
            let ns: Vec<usize> = rows.iter().map(|r| r.depth).collect();
            let ys: Vec<f64> = rows.iter().map(|r| r.error).collect();
            let reference = match (kind.as_str(), reference(s, f)) {
                ("mlp", Some(v)) => {
                    format!("; reference slope {v:.1} (Sander, Ablin & Peyré, NeurIPS 2022)")
                }
                _ => String::new(),
            };
            Some(Claim::bound(
                format!(
                    "{}, {kind} {scheme} {family}: slope ≤ bound",
                    data.measure.name()
                ),
                slope(&ns, &ys),
                bound(s, f),
                0.3,
                format!("N = {:?}{reference}", ns),
            ))
        })
        .collect()
}

/// Writes `<name>.{csv,json}` and one log-log figure per residual kind into `dir`.
pub fn write(data: &Data, dir: &Path) -> Result<Outcome> {
    let name = data.measure.name().replace('-', "_");
    // The gradient's columns only where there is a gradient (no all-NaN columns).
    let gradient = data.measure == Measure::Gradient;
    let mut header = vec!["kind", "scheme", "family", "depth", "error"];
    if gradient {
        header.extend(["min_cosine", "max_rel_sq_error"]);
    }
    let rows: Vec<Vec<String>> = data
        .rows
        .iter()
        .map(|r| {
            let mut row = vec![
                r.kind.clone(),
                r.scheme.clone(),
                r.family.clone(),
                r.depth.to_string(),
                num(r.error),
            ];
            row.extend(
                [r.min_cosine, r.max_rel_sq_error]
                    .into_iter()
                    .flatten()
                    .map(num),
            );
            row
        })
        .collect();
    write_csv(&dir.join(format!("{name}.csv")), &header, &rows)?;
    write_json(&dir.join(format!("{name}.json")), data)?;
    let mut figures = String::new();
    for kind in [Kind::Mlp, Kind::Conv] {
        let series = kind_series(data, &kind.to_string());
        if series.is_empty() {
            continue;
        }
        let stem = format!("{name}_{kind}");
        let reference = RefSlope {
            slope: -1.0,
            label: "slope −1 (Euler bound)".into(),
        };
        let title = format!("{} ({kind} stacks)", data.measure.name());
        loglog(
            &dir.join(&stem),
            &title,
            "depth N",
            data.measure.quantity(),
            &series,
            Some(reference),
        )?;
        figures.push_str(&format!("![{kind}]({stem}.png)\n"));
    }
    Ok(Outcome {
        name: data.measure.name().into(),
        claims: claims(data),
        table: table(data),
        markdown: format!("{}.\n\n{figures}", data.setting),
    })
}

/// One series per (scheme, family) of `kind`: Euler solid, Heun dashed, a colour per family.
fn kind_series(data: &Data, kind: &str) -> Vec<Series> {
    let mut families: Vec<String> = Vec::new();
    groups(data)
        .into_iter()
        .filter(|g| g.0 == kind)
        .map(|(_, scheme, family, rows)| {
            let i = families
                .iter()
                .position(|f| *f == family)
                .unwrap_or_else(|| {
                    families.push(family.clone());
                    families.len() - 1
                });
            let style = SeriesStyle::palette(i).markers();
            let style = if scheme == "heun" {
                style.dashed()
            } else {
                style
            };
            let pts = rows.iter().map(|r| (r.depth as f64, r.error)).collect();
            Series::new(format!("{scheme} {family}"), pts, style)
        })
        .collect()
}

fn table(data: &Data) -> String {
    let mut s = format!(
        "{:<5} {:<6} {:<12} {:>5} {:>12}",
        "kind", "scheme", "family", "N", "error"
    );
    let gradient = data.measure == Measure::Gradient;
    if gradient {
        s.push_str(&format!(" {:>10} {:>12}", "min cos", "max rel sq"));
    }
    s.push('\n');
    for r in &data.rows {
        s.push_str(&format!(
            "{:<5} {:<6} {:<12} {:>5} {:>12.4e}",
            r.kind, r.scheme, r.family, r.depth, r.error
        ));
        if let (Some(c), Some(e)) = (r.min_cosine, r.max_rel_sq_error) {
            s.push_str(&format!(" {c:>10.6} {e:>12.4e}"));
        }
        s.push('\n');
    }
    s
}
