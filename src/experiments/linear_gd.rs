//! `experiment linear-gd` (paper.md §3.1, Figure 2, claim 2): linear ResNets
//! `X = ∏ (I + A_n/N)` trained from zero by gradient descent at learning rate η·N on
//! `mean((X − B)²)`, B = I + randn. The weights stay smooth in depth (`max_n ‖A_{n+1} − A_n‖·N`
//! bounded in N), and the depth-N weights approach a limit θ(t) at rate 1/N uniformly in
//! training time: compared with a much deeper run at the same step and the same depth
//! positions, the distance maxed over training falls like 1/N.

use super::{check_depths, num, powers_of_two, progress, slope, Outcome};
use crate::analysis::linear_resnet::{reachable_target, train, LinearWeights};
use crate::plot::{lines, loglog, RefSlope, Series, SeriesStyle};
use crate::report::{write_csv, write_json, Claim};
use crate::rng::Rng;
use crate::{Error, Result};
use serde::Serialize;
use std::path::Path;

/// Settings. Defaults: d = 2, a Figure-2 run at N = 100, and the sweep N = 16…1024 against a
/// depth-4096 reference, all for 200 steps at η = 0.5 (training time η·steps = 100, as the
/// paper's 100 steps at lr = 100 = η·N with η = 1). At η = 1 gradient descent oscillates for
/// about half of the random targets (the step is at the edge of stability), the runs at
/// different depths then drift apart and the 1/N rate is lost; the claim is about gradient
/// flow, which η = 0.5 follows for every target tried.
#[derive(Debug, Clone)]
pub struct Config {
    pub dim: usize,
    /// Depth of the Figure-2 run (weight curves).
    pub depth: usize,
    /// η: the learning rate is η·N.
    pub eta: f64,
    pub steps: usize,
    pub depths: Vec<usize>,
    /// Depth of the reference run; a multiple of every swept depth.
    pub ref_depth: usize,
    pub seed: u64,
    /// Training steps drawn for the weight-curve figure.
    pub curves: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            dim: 2,
            depth: 100,
            eta: 0.5,
            steps: 200,
            depths: powers_of_two(16, 1024),
            ref_depth: 4096,
            seed: 0,
            curves: 4,
        }
    }
}

/// One depth of the sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub depth: usize,
    /// max over training of max_n ‖A_{n+1} − A_n‖·N.
    pub smoothness: f64,
    pub final_loss: f64,
    /// max over training steps of max_n ‖A^N_n − A^ref(n/N)‖.
    pub distance: f64,
}

/// The Figure-2 run: loss and smoothness per step, and one weight entry over depth at a few
/// steps.
#[derive(Debug, Clone, Serialize)]
pub struct FigureRun {
    pub depth: usize,
    pub loss: Vec<f64>,
    pub smoothness: Vec<f64>,
    /// The plotted entry (i, j) of A_n.
    pub entry: (usize, usize),
    /// (step, values of A_n[i][j] for n = 0..N).
    pub curves: Vec<(usize, Vec<f64>)>,
}

/// All measurements.
#[derive(Debug, Clone, Serialize)]
pub struct Data {
    pub setting: String,
    pub target: Vec<f64>,
    pub figure: FigureRun,
    pub sweep: Vec<SweepRow>,
}

/// Runs the Figure-2 run, the reference run and the sweep.
pub fn run(cfg: &Config, show_progress: bool) -> Result<Data> {
    check_depths(&cfg.depths, 1)?;
    if cfg.depth == 0 || cfg.ref_depth == 0 || cfg.dim == 0 || cfg.steps == 0 {
        return Err(Error::invalid(
            "linear-gd sizes",
            "--depth, --ref-depth, --dim and --steps must be at least 1",
        ));
    }
    if let Some(n) = cfg
        .depths
        .iter()
        .find(|&&n| !cfg.ref_depth.is_multiple_of(n))
    {
        return Err(Error::invalid(
            "--ref-depth",
            format!("{} is not a multiple of the depth {n}", cfg.ref_depth),
        ));
    }
    let mut rng = Rng::derive(cfg.seed, "linear-gd");
    let d = cfg.dim;
    let target = reachable_target(d, &mut rng)?;
    let bar = progress((cfg.depths.len() + 2) as u64, "linear-gd", show_progress);
    let figure = figure_run(cfg, &target, &mut rng)?;
    bar.inc(1);
    let mut reference = Vec::with_capacity(cfg.steps + 1);
    train(d, cfg.ref_depth, &target, cfg.eta, cfg.steps, |_, w, _| {
        reference.push(w.clone())
    })?;
    bar.inc(1);
    let mut sweep = Vec::new();
    for &n in &cfg.depths {
        sweep.push(sweep_row(cfg, n, &target, &reference)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(Data {
        setting: format!(
            "d = {d}, B = I + randn with det B > 0 (seed {}), zero init, {} plain gradient-descent steps at lr = η·N \
             with η = {}; Figure-2 run at N = {}; sweep against a depth-{} reference, f64",
            cfg.seed, cfg.steps, cfg.eta, cfg.depth, cfg.ref_depth
        ),
        target,
        figure,
        sweep,
    })
}

/// The paper's Figure 2: one random entry of the weights over depth, before a few steps spread
/// over the training (random steps mostly fell after the weights had settled, where the curves
/// coincide).
fn figure_run(cfg: &Config, target: &[f64], rng: &mut Rng) -> Result<FigureRun> {
    let entry = (rng.below(cfg.dim), rng.below(cfg.dim));
    let flat = entry.0 * cfg.dim + entry.1;
    let (mut loss, mut smoothness, mut all) = (Vec::new(), Vec::new(), Vec::new());
    train(cfg.dim, cfg.depth, target, cfg.eta, cfg.steps, |k, w, l| {
        loss.push(l);
        smoothness.push(w.smoothness());
        all.push((
            k,
            (0..w.depth)
                .map(|n| w.matrix(n)[flat])
                .collect::<Vec<f64>>(),
        ));
    })?;
    let steps = spread_steps(&all, cfg.curves);
    let curves = all.into_iter().filter(|(k, _)| steps.contains(k)).collect();
    Ok(FigureRun {
        depth: cfg.depth,
        loss,
        smoothness,
        entry,
        curves,
    })
}

/// `n` distinct steps at which the curve has come 1/(n+1), 2/(n+1), … of the way from the first
/// step's to the last step's (largest difference over depth), so the drawn curves differ.
fn spread_steps(curves: &[(usize, Vec<f64>)], n: usize) -> Vec<usize> {
    let Some((_, last)) = curves.last() else {
        return Vec::new();
    };
    let gap = |v: &[f64]| {
        v.iter()
            .zip(last)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    };
    let left: Vec<f64> = curves.iter().map(|(_, v)| gap(v)).collect();
    let start = left.first().copied().unwrap_or(0.0);
    let mut steps: Vec<usize> = Vec::with_capacity(n);
    for j in 1..=n {
        let target = start * (1.0 - j as f64 / (n + 1) as f64);
        let after = steps.last().map_or(0, |&i| i + 1);
        if let Some(i) = (after..left.len()).find(|&i| left[i] <= target) {
            steps.push(i);
        }
    }
    steps.into_iter().map(|i| curves[i].0).collect()
}

/// Trains at depth `n`, comparing with the reference at every step.
fn sweep_row(
    cfg: &Config,
    n: usize,
    target: &[f64],
    reference: &[LinearWeights],
) -> Result<SweepRow> {
    let (mut smoothness, mut distance, mut final_loss) = (0.0f64, 0.0f64, f64::NAN);
    let mut failure = None;
    train(cfg.dim, n, target, cfg.eta, cfg.steps, |k, w, l| {
        smoothness = smoothness.max(w.smoothness());
        match w.distance_to(&reference[k]) {
            Ok(dist) => distance = distance.max(dist),
            Err(e) => failure = Some(e),
        }
        final_loss = l;
    })?;
    match failure {
        Some(e) => Err(e),
        None => Ok(SweepRow {
            depth: n,
            smoothness,
            final_loss,
            distance,
        }),
    }
}

/// Claims: the distance to the limit falls like 1/N; the smoothness does not grow with N.
pub fn claims(data: &Data) -> Vec<Claim> {
    let ns: Vec<usize> = data.sweep.iter().map(|r| r.depth).collect();
    let dist: Vec<f64> = data.sweep.iter().map(|r| r.distance).collect();
    let smooth: Vec<f64> = data.sweep.iter().map(|r| r.smoothness).collect();
    let range = smooth
        .iter()
        .copied()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    vec![
        Claim::new(
            "linear ResNet under GD: distance to the limit ODE O(1/N), uniform in training time",
            slope(&ns, &dist),
            -1.0,
            0.3,
            "max over training steps and depth positions; reference slope −1.08 (Sander, Ablin & Peyré, NeurIPS 2022)",
        ),
        Claim::new(
            "linear ResNet under GD: smoothness max_n ‖A_{n+1} − A_n‖·N stays bounded in N",
            slope(&ns, &smooth),
            0.0,
            0.3,
            format!(
                "max over training between {:.2} and {:.2}; the paper's run stays near 3.1 for every N (lr = N, 100 steps, its own random target), ours at another level (η = 0.5, 200 steps; the difference of level is not yet explained, the parametrisation's scaling of A_n being the suspect): the claim tested is that the value does not grow with N",
                range.0, range.1
            ),
        ),
    ]
}

/// Writes the CSVs, the JSON and the figures `linear_gd_weights` and `linear_gd_distance`.
pub fn write(data: &Data, dir: &Path) -> Result<Outcome> {
    let sweep: Vec<Vec<String>> = data
        .sweep
        .iter()
        .map(|r| {
            vec![
                r.depth.to_string(),
                num(r.smoothness),
                num(r.final_loss),
                num(r.distance),
            ]
        })
        .collect();
    let header = [
        "depth",
        "max_smoothness",
        "final_loss",
        "distance_to_reference",
    ];
    write_csv(&dir.join("linear_gd_sweep.csv"), &header, &sweep)?;
    let f = &data.figure;
    let training: Vec<Vec<String>> = (0..f.loss.len())
        .map(|k| vec![k.to_string(), num(f.loss[k]), num(f.smoothness[k])])
        .collect();
    write_csv(
        &dir.join("linear_gd_training.csv"),
        &["step", "loss", "smoothness"],
        &training,
    )?;
    write_json(&dir.join("linear_gd.json"), data)?;
    write_figures(data, dir)?;
    Ok(Outcome {
        name: "linear-gd".into(),
        claims: claims(data),
        table: table(data),
        markdown: format!(
            "{}.\n\n![weights over depth](linear_gd_weights.png)\n![distance to the limit](linear_gd_distance.png)\n",
            data.setting
        ),
    })
}

fn write_figures(data: &Data, dir: &Path) -> Result<()> {
    let f = &data.figure;
    let curves: Vec<Series> = f
        .curves
        .iter()
        .enumerate()
        .map(|(i, (step, v))| {
            let pts = v.iter().enumerate().map(|(n, &y)| (n as f64, y)).collect();
            Series::new(format!("Step: {step}"), pts, SeriesStyle::palette(i))
        })
        .collect();
    let title = format!(
        "Linear ResNet weights A_n[{}][{}] (N = {})",
        f.entry.0, f.entry.1, f.depth
    );
    lines(
        &dir.join("linear_gd_weights"),
        &title,
        "depth n",
        "weight value",
        &curves,
        false,
    )?;
    let pts = |y: fn(&SweepRow) -> f64| data.sweep.iter().map(|r| (r.depth as f64, y(r))).collect();
    let series = [
        Series::new(
            "distance to the limit",
            pts(|r| r.distance),
            SeriesStyle::palette(0).markers(),
        ),
        Series::new(
            "smoothness",
            pts(|r| r.smoothness),
            SeriesStyle::palette(1).markers(),
        ),
    ];
    let reference = RefSlope {
        slope: -1.0,
        label: "slope −1".into(),
    };
    loglog(
        &dir.join("linear_gd_distance"),
        "Linear ResNets under gradient descent",
        "depth N",
        "max over training",
        &series,
        Some(reference),
    )
}

fn table(data: &Data) -> String {
    let mut s = format!(
        "{:>6} {:>12} {:>12} {:>12}\n",
        "N", "smoothness", "final loss", "distance"
    );
    for r in &data.sweep {
        s.push_str(&format!(
            "{:>6} {:>12.4} {:>12.4e} {:>12.4e}\n",
            r.depth, r.smoothness, r.final_loss, r.distance
        ));
    }
    s
}
