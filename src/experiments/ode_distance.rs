//! `experiment ode-distance` (paper.md §2, claim 1): how far a depth-N ResNet is from the
//! Neural ODE its weights define, for each family of weights over depth.
//!
//! The bound `‖x_N − x(1)‖ ≤ C/N·(1 + Σ‖θ_{n+1} − θ_n‖)` gives O(1/N) for weights sampled from a
//! smooth θ(t) and for K-piece constant weights once N ≫ K, and nothing for i.i.d. weights
//! (they do converge, slowly, as independent discrepancies cancel like a random walk); the
//! alternating weights θ_n = (−1)^n θ keep a gap that never closes, so the bound is tight.

use super::Outcome;
use super::{check_depths, f64_placement, normal_input, num, powers_of_two, progress, slope};
use crate::analysis::neural_ode::{resnet_to_ode, Distance, Interpolation, OdeSolver};
use crate::family::Family;
use crate::plot::{loglog, RefSlope, Series, SeriesStyle};
use crate::report::{write_csv, write_json, Claim};
use crate::residual::{Activation, MlpConfig};
use crate::rng::Rng;
use crate::scheme::Scheme;
use crate::stack::Stack;
use crate::Result;
use serde::Serialize;
use std::path::Path;

/// Settings of the sweep. The defaults are the reference setting of paper.md §2 (MLP d = 16,
/// hidden 16, tanh; 3 seeds) over N = 8…1024.
#[derive(Debug, Clone)]
pub struct Config {
    pub families: Vec<Family>,
    pub depths: Vec<usize>,
    /// Seeds `seed, seed + 1, …`: the results are averaged over them.
    pub seed: u64,
    pub seeds: usize,
    pub dim: usize,
    pub hidden: usize,
    /// Inputs per seed (the distance is averaged over them).
    pub batch: usize,
    pub interpolation: Interpolation,
    pub solver: OdeSolver,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            families: vec![
                Family::Smooth,
                Family::Iid,
                Family::Piecewise(4),
                Family::Alternating,
            ],
            depths: powers_of_two(8, 1024),
            seed: 0,
            seeds: 3,
            dim: 16,
            hidden: 16,
            batch: 16,
            interpolation: Interpolation::Linear,
            solver: OdeSolver::default(),
        }
    }
}

/// One (family, depth) point, averaged over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub family: String,
    pub depth: usize,
    pub final_distance: f64,
    pub trajectory_distance: f64,
}

/// The measurements and the setting they came from.
#[derive(Debug, Clone, Serialize)]
pub struct Data {
    pub setting: String,
    pub rows: Vec<Row>,
}

/// Runs the sweep (f64). Errors on a bad setting before any work.
pub fn run(cfg: &Config, show_progress: bool) -> Result<Data> {
    check_depths(&cfg.depths, 1)?;
    super::check_sizes(&[
        ("--seeds", cfg.seeds),
        ("--batch", cfg.batch),
        ("the MLP width (Config::dim)", cfg.dim),
        ("the MLP hidden width (Config::hidden)", cfg.hidden),
    ])?;
    let jobs = cfg.families.len() * cfg.depths.len() * cfg.seeds;
    let bar = progress(jobs as u64, "ode-distance", show_progress);
    let mut rows = Vec::new();
    for &family in &cfg.families {
        for &depth in &cfg.depths {
            let mut sum = (0.0, 0.0);
            for s in 0..cfg.seeds as u64 {
                let d = one(cfg, family, depth, cfg.seed + s)?;
                sum = (sum.0 + d.final_distance, sum.1 + d.trajectory_distance);
                bar.inc(1);
            }
            let k = cfg.seeds as f64;
            rows.push(Row {
                family: family.to_string(),
                depth,
                final_distance: sum.0 / k,
                trajectory_distance: sum.1 / k,
            });
        }
    }
    bar.finish_and_clear();
    Ok(Data {
        setting: setting(cfg),
        rows,
    })
}

fn setting(cfg: &Config) -> String {
    format!(
        "MLP residuals (d = {}, hidden {}, tanh), Euler ResNet vs the ODE with {} interpolation of θ_n \
         at t_n = n/N, solved by {:?}; distances relative to ‖x(t)‖, averaged over {} inputs × {} seeds \
         (from seed {}), f64",
        cfg.dim, cfg.hidden, cfg.interpolation, cfg.solver, cfg.batch, cfg.seeds, cfg.seed
    )
}

/// One stack of `family` at `depth` for `seed`, against its ODE. The smooth family's θ(t) is
/// the same for every depth (its two draws come first from the seeded generator).
fn one(cfg: &Config, family: Family, depth: usize, seed: u64) -> Result<Distance> {
    let p = f64_placement();
    let mlp = MlpConfig {
        dim: cfg.dim,
        hidden: cfg.hidden,
        activation: Activation::Tanh,
    };
    let mut rng = Rng::derive(seed, "weights");
    let functions = family.functions(depth, &mut rng, |r| mlp.init(&p, r));
    let stack = Stack::new(functions, Scheme::Euler)?;
    let x0 = normal_input(&p, [cfg.batch, cfg.dim], seed);
    resnet_to_ode(&stack, x0, cfg.interpolation, cfg.solver)
}

/// The rows of one family, in depth order.
fn family_rows<'a>(data: &'a Data, family: &str) -> Vec<&'a Row> {
    data.rows.iter().filter(|r| r.family == family).collect()
}

fn families(data: &Data) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for r in &data.rows {
        if !v.contains(&r.family) {
            v.push(r.family.clone());
        }
    }
    v
}

/// The fitted rate of one family: piecewise weights only once N ≥ 4K (the claim is for N ≫ K).
pub fn family_slope(data: &Data, family: &str, trajectory: bool) -> f64 {
    let min_depth = match family.parse::<Family>() {
        Ok(Family::Piecewise(k)) => 4 * k,
        _ => 1,
    };
    let rows: Vec<&Row> = family_rows(data, family)
        .into_iter()
        .filter(|r| r.depth >= min_depth)
        .collect();
    let ns: Vec<usize> = rows.iter().map(|r| r.depth).collect();
    let ys: Vec<f64> = rows
        .iter()
        .map(|r| {
            if trajectory {
                r.trajectory_distance
            } else {
                r.final_distance
            }
        })
        .collect();
    slope(&ns, &ys)
}

/// The claims: smooth and piecewise at rate 1/N (tight), i.i.d. within the O(1) bound,
/// alternating not vanishing.
pub fn claims(data: &Data) -> Vec<Claim> {
    let tol = 0.3;
    let mut out = Vec::new();
    for family in families(data) {
        let s = family_slope(data, &family, false);
        let gap = family_rows(data, &family)
            .last()
            .map_or(f64::NAN, |r| r.final_distance);
        let claim = match family.parse::<Family>() {
            Ok(Family::Smooth) => Claim::new(
                "ResNet→ODE distance, smooth weights: O(1/N)",
                s,
                -1.0,
                tol,
                "final distance; reference −1.03 (Sander, Ablin & Peyré, NeurIPS 2022)",
            ),
            Ok(Family::Piecewise(k)) => Claim::new(
                format!("ResNet→ODE distance, piecewise:{k} weights: O(1/N) once N ≫ K"),
                s,
                -1.0,
                tol,
                format!("final distance, fitted over N ≥ {}", 4 * k),
            ),
            Ok(Family::Iid) => Claim::bound(
                "ResNet→ODE distance, i.i.d. weights: bound O(1) only",
                s,
                0.0,
                tol,
                "vanishes slowly like a random walk; reference −0.53 (Sander, Ablin & Peyré, NeurIPS 2022)",
            ),
            _ => Claim::new(
                "ResNet→ODE distance, alternating weights: does not vanish (tight)",
                s,
                0.0,
                tol,
                format!("gap {gap:.3} at the largest N; reference slope +0.04, gap ≈ 0.37"),
            ),
        };
        out.push(claim);
    }
    if families(data).iter().any(|f| f == "smooth") {
        out.push(Claim::new(
            "ResNet→ODE trajectory distance max_n, smooth weights: O(1/N)",
            family_slope(data, "smooth", true),
            -1.0,
            tol,
            "max over n of the distance at t_n = n/N",
        ));
    }
    out
}

/// Writes `ode_distance.{csv,json}` and the figures `ode_distance_final` and
/// `ode_distance_trajectory` (PNG and SVG) into `dir`; returns the outcome (not yet reported).
pub fn write(data: &Data, dir: &Path) -> Result<Outcome> {
    let header = ["family", "depth", "final_distance", "trajectory_distance"];
    let rows: Vec<Vec<String>> = data
        .rows
        .iter()
        .map(|r| {
            vec![
                r.family.clone(),
                r.depth.to_string(),
                num(r.final_distance),
                num(r.trajectory_distance),
            ]
        })
        .collect();
    write_csv(&dir.join("ode_distance.csv"), &header, &rows)?;
    write_json(&dir.join("ode_distance.json"), data)?;
    for (stem, trajectory, what) in [
        ("ode_distance_final", false, "‖x_N − x(1)‖ / ‖x(1)‖"),
        (
            "ode_distance_trajectory",
            true,
            "max_n ‖x_n − x(n/N)‖ / ‖x‖",
        ),
    ] {
        let series: Vec<Series> = families(data)
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let pts = family_rows(data, f)
                    .iter()
                    .map(|r| {
                        let y = if trajectory {
                            r.trajectory_distance
                        } else {
                            r.final_distance
                        };
                        (r.depth as f64, y)
                    })
                    .collect();
                Series::new(f.clone(), pts, SeriesStyle::palette(i).markers())
            })
            .collect();
        let reference = RefSlope {
            slope: -1.0,
            label: "slope −1".into(),
        };
        loglog(
            &dir.join(stem),
            "ResNet vs its Neural ODE",
            "depth N",
            what,
            &series,
            Some(reference),
        )?;
    }
    let claims = claims(data);
    Ok(Outcome {
        name: "ode-distance".into(),
        table: table(data),
        markdown: format!(
            "{}.\n\n![final distance](ode_distance_final.png)\n![trajectory distance](ode_distance_trajectory.png)\n",
            data.setting
        ),
        claims,
    })
}

fn table(data: &Data) -> String {
    let mut s = format!(
        "{:<14} {:>6} {:>14} {:>14}\n",
        "family", "N", "final", "trajectory"
    );
    for r in &data.rows {
        s.push_str(&format!(
            "{:<14} {:>6} {:>14.4e} {:>14.4e}\n",
            r.family, r.depth, r.final_distance, r.trajectory_distance
        ));
    }
    s
}
