//! The paper's experiments as library drivers (paper.md §2, §3.1, §3.7): each runs a sweep over
//! depth, returns its measurements as data, and writes them (CSV, JSON, PNG and SVG figures)
//! with the claims they test. The CLI only parses flags and prints; tests call the same code
//! on smaller configurations.
//!
//! Nothing is left half-written: every file is written atomically, and the report, which is
//! what marks a run as complete, is written last.

pub mod adjoint;
pub mod depth_sweep;
pub mod finetune;
pub mod linear_gd;
pub mod ode_distance;

use crate::device::{Placement, Precision};
use crate::report::{ensure_writable_dir, loglog_slope, write_report, Claim};
use crate::rng::Rng;
use crate::{Error, Result};
use burn::tensor::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;

/// What an experiment hands to the report: its claims, a printable table of its measurements,
/// and a markdown section (setting, figures).
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The experiment's command name (`ode-distance`, …), also its folder under `all`.
    pub name: String,
    pub claims: Vec<Claim>,
    /// Plain-text table of the measurements, for the terminal.
    pub table: String,
    /// Markdown for the report: what was run and which figures show it.
    pub markdown: String,
}

/// Rejects depth lists the slope fits cannot use: empty, N < `min`, or fewer than two distinct.
pub fn check_depths(depths: &[usize], min: usize) -> Result<()> {
    if let Some(n) = depths.iter().find(|&&n| n < min.max(1)) {
        return Err(Error::invalid(
            "--depths",
            format!("N = {n}: every depth must be at least {}", min.max(1)),
        ));
    }
    let mut distinct = depths.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 2 {
        return Err(Error::invalid(
            "--depths",
            "need at least two distinct depths to fit a rate",
        ));
    }
    Ok(())
}

/// Rejects the first size below 1, naming it (`("--seeds", 0)` → "invalid --seeds: …").
pub fn check_sizes(sizes: &[(&str, usize)]) -> Result<()> {
    match sizes.iter().find(|(_, v)| *v == 0) {
        Some((name, _)) => Err(Error::invalid(*name, "must be at least 1")),
        None => Ok(()),
    }
}

/// Powers of two from `min` to `max` inclusive (the default depth sweeps).
pub fn powers_of_two(min: usize, max: usize) -> Vec<usize> {
    let mut v = Vec::new();
    let mut n = min.max(1).next_power_of_two();
    while n <= max {
        v.push(n);
        n *= 2;
    }
    v
}

/// Log-log slope of `ys` against depths, NaN when it cannot be fitted (a zero error, say): a
/// NaN never "holds", so the report shows the failure instead of the run aborting.
pub fn slope(depths: &[usize], ys: &[f64]) -> f64 {
    let xs: Vec<f64> = depths.iter().map(|&n| n as f64).collect();
    loglog_slope(&xs, ys).unwrap_or(f64::NAN)
}

/// A progress bar over `len` units of work (hidden when `show` is false, as in tests).
pub fn progress(len: u64, what: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{msg:<28} [{bar:30}] {pos}/{len} {elapsed}<{eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar
}

/// The f64 placement every experiment measures rates in (f32 reaches rounding near N = 256).
pub fn f64_placement() -> Placement {
    Placement::flex(Precision::F64)
}

/// A batch of standard normal inputs of `shape`, fixed by `seed`.
pub fn normal_input<const D: usize>(p: &Placement, shape: [usize; D], seed: u64) -> Tensor<D> {
    let n = shape.iter().product();
    p.tensor(Rng::derive(seed, "inputs").normals(n), shape)
}

/// Formats a number for tables and CSV cells.
pub fn num(v: f64) -> String {
    format!("{v:.6e}")
}

/// Writes one experiment's report (`report.md`, `report.json`) into `dir`, last.
pub fn write_outcome(dir: &Path, outcome: &Outcome) -> Result<()> {
    let title = format!("resnet-ode experiment {}", outcome.name);
    write_report(dir, &title, &outcome.claims, &outcome.markdown)
}

/// Sizes of `experiment all`.
#[derive(Debug, Clone)]
pub struct AllConfig {
    pub ode_distance: ode_distance::Config,
    pub linear_gd: linear_gd::Config,
    pub adjoint: adjoint::Config,
    /// Show progress bars.
    pub show_progress: bool,
}

/// Runs every experiment into `out/<name>/`, then writes `out/report.md` and `out/report.json`
/// with every claim. `announce` sees each outcome as it completes (the CLI prints it).
pub fn run_all(
    out: &Path,
    cfg: &AllConfig,
    mut announce: impl FnMut(&Outcome),
) -> Result<Vec<Outcome>> {
    ensure_writable_dir(out)?;
    let show = cfg.show_progress;
    let mut outcomes = Vec::new();
    let mut finish = |o: Outcome, outcomes: &mut Vec<Outcome>| {
        announce(&o);
        outcomes.push(o);
    };
    let dir = out.join("ode-distance");
    let data = ode_distance::run(&cfg.ode_distance, show)?;
    finish(ode_distance::write(&data, &dir)?, &mut outcomes);
    let dir = out.join("linear-gd");
    let data = linear_gd::run(&cfg.linear_gd, show)?;
    finish(linear_gd::write(&data, &dir)?, &mut outcomes);
    for measure in [adjoint::Measure::Reconstruction, adjoint::Measure::Gradient] {
        let dir = out.join(measure.name());
        let data = adjoint::run(&cfg.adjoint, measure, show)?;
        finish(adjoint::write(&data, &dir)?, &mut outcomes);
    }
    write_all_report(out, &outcomes)?;
    Ok(outcomes)
}

/// `report.md` with every claim and each experiment's section (figure paths made relative to
/// `out`), and `report.json` with every claim.
fn write_all_report(out: &Path, outcomes: &[Outcome]) -> Result<()> {
    let claims: Vec<Claim> = outcomes.iter().flat_map(|o| o.claims.clone()).collect();
    let mut md = String::from(
        "Reproduce with `resnet-ode experiment all --out DIR` (release build, f64).\n",
    );
    for o in outcomes {
        md.push_str(&format!("\n## {}\n\n", o.name));
        md.push_str(&o.markdown.replace("](", &format!("]({}/", o.name)));
    }
    write_report(out, "resnet-ode: the Neural ODE limit", &claims, &md)
}

/// A plain-text table of claims: measured slope beside the expected one.
pub fn claims_table(claims: &[Claim]) -> String {
    let mut s = format!(
        "{:<64} {:>9} {:>9} {:>9}  holds\n",
        "claim", "measured", "expected", "tol"
    );
    for c in claims {
        let (expected, tolerance) = c.expected_cells();
        s.push_str(&format!(
            "{:<64} {:>9.3} {expected:>9} {tolerance:>9}  {}\n",
            c.claim,
            c.measured_slope,
            if c.holds { "yes" } else { "NO" }
        ));
    }
    s
}
