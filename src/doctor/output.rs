//! Doctor's outputs: the terminal table, `doctor.md`, `doctor.json` and the per-stage error
//! figure `doctor.{png,svg}`, all written atomically.

use super::{Form, Report, SchemeReport, StageReport};
use crate::grad::GradMode;
use crate::plot::{lines, Series, SeriesStyle};
use crate::report::{write_atomic, write_json};
use crate::Result;
use std::path::Path;

fn pct(v: f64) -> String {
    format!("{:.1}%", 100.0 * v)
}

fn sci(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.2e}"))
}

fn mib(bytes: Option<usize>) -> String {
    bytes.map_or("n/a".into(), |b| {
        format!("{:.2}", b as f64 / (1024.0 * 1024.0))
    })
}

fn form(s: &StageReport) -> String {
    match (s.form, s.relu_clipped) {
        (Form::PostRelu, Some(c)) => format!("relu(x+g(x)) clips {}", pct(c.mean)),
        (Form::PostRelu, None) => "relu(x+g(x))".into(),
        (Form::Scaled, _) if s.tied => "x+f(x)/N tied".into(),
        (Form::Scaled, _) => "x+f(x)/N".into(),
    }
}

/// Columns of the table: a header and one row per stage.
fn rows(r: &Report) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let header = vec![
        "stage",
        "form",
        "N",
        "scheme",
        "move mean/max",
        "smooth",
        "1-step E/H",
        "chained E/H",
        "grad err med/max (E)",
        "cos (E)",
        "grad err max (H)",
        "mem MiB bp/adj/ckpt",
        "verdict",
    ];
    let recon = |e: &SchemeReport, h: &Option<SchemeReport>, f: fn(&SchemeReport) -> f64| {
        format!(
            "{} / {}",
            pct(f(e)),
            h.as_ref().map_or("n/a".into(), |h| pct(f(h)))
        )
    };
    let rows = r
        .stages
        .iter()
        .map(|s| {
            let g = s.euler.gradient;
            vec![
                s.stage.to_string(),
                form(s),
                s.n.to_string(),
                s.scheme.to_string(),
                format!("{} / {}", pct(s.moves.mean), pct(s.moves.max)),
                format!("{:.3}", s.smoothness),
                recon(&s.euler, &s.heun, |r| r.one_step_max),
                recon(&s.euler, &s.heun, |r| r.chained_max),
                format!(
                    "{} / {}",
                    sci(g.map(|g| g.median_rel_sq_error)),
                    sci(g.map(|g| g.max_rel_sq_error))
                ),
                g.map_or("n/a".into(), |g| format!("{:.4}", g.min_cosine)),
                sci(s
                    .heun
                    .as_ref()
                    .and_then(|h| h.gradient)
                    .map(|g| g.max_rel_sq_error)),
                format!(
                    "{} / {} / {}",
                    mib(s.memory.backprop),
                    mib(s.memory.adjoint),
                    mib(s.memory.checkpoint)
                ),
                s.verdict.label(s.scheme),
            ]
        })
        .collect();
    (header, rows)
}

/// One line per stage: the recommendation, its reason and the memory it saves.
fn verdict_lines(r: &Report) -> Vec<String> {
    r.stages
        .iter()
        .map(|s| {
            let saves = match (s.verdict.saves, s.memory.backprop) {
                _ if s.verdict.mode == GradMode::Backprop => String::new(),
                (Some(d), Some(b)) if d < 0 => format!(
                    "; needs {} MiB more than backprop's {}",
                    mib(Some(d.unsigned_abs() as usize)),
                    mib(Some(b))
                ),
                (Some(d), Some(b)) if b > 0 => format!(
                    "; saves {} MiB of {} ({:.0}%) over backprop",
                    mib(Some(d as usize)),
                    mib(Some(b)),
                    100.0 * d as f64 / b as f64
                ),
                _ => String::new(),
            };
            format!(
                "stage {}: {} — {}{saves}",
                s.stage,
                s.verdict.label(s.scheme),
                s.verdict.reason
            )
        })
        .collect()
}

fn setting(r: &Report) -> String {
    format!(
        "{} on {} (one batch of {}), BN {}, tolerance {:.0e} on the largest per-tensor mean((g_b−g_a)²)/mean(g_b²)",
        r.model, r.data, r.batch, r.bn, r.tol
    )
}

/// The terminal table followed by the verdicts.
pub fn table(r: &Report) -> String {
    let (header, rows) = rows(r);
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|row| row[c].chars().count())
                .chain([header[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = format!("doctor: {}\n", setting(r));
    out.push_str(&line(header.iter().map(|h| h.to_string()).collect()));
    out.push('\n');
    for row in rows {
        out.push_str(&line(row));
        out.push('\n');
    }
    for v in verdict_lines(r) {
        out.push_str(&v);
        out.push('\n');
    }
    out
}

fn markdown(r: &Report) -> String {
    let (header, rows) = rows(r);
    let mut md = format!("# doctor\n\n{}.\n\n", setting(r));
    md.push_str(&format!("| {} |\n", header.join(" | ")));
    md.push_str(&format!("|{}\n", "---|".repeat(header.len())));
    for row in rows {
        md.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    md.push_str("\nReconstruction errors are relative, max over steps (one-step: each x_n from the true x_{n+1}; chained: from x_N down). Memory: the measured activation peak of one training step of the stage (loss mean(x_N²)).\n\n## Verdicts\n\n");
    for v in verdict_lines(r) {
        md.push_str(&format!("- {v}\n"));
    }
    md.push_str("\n![per-stage errors](doctor.png)\n");
    md
}

/// The per-stage errors on a log axis (stages without a value are skipped).
fn figure(r: &Report, stem: &Path) -> Result<()> {
    type Pick = fn(&StageReport) -> Option<f64>;
    let picks: [(&str, Pick, usize, bool); 6] = [
        (
            "one-step reconstruction, Euler",
            |s| Some(s.euler.one_step_max),
            0,
            false,
        ),
        (
            "chained reconstruction, Euler",
            |s| Some(s.euler.chained_max),
            0,
            true,
        ),
        (
            "one-step reconstruction, Heun",
            |s| s.heun.as_ref().map(|h| h.one_step_max),
            1,
            false,
        ),
        (
            "chained reconstruction, Heun",
            |s| s.heun.as_ref().map(|h| h.chained_max),
            1,
            true,
        ),
        (
            "gradient error (max), Euler",
            |s| s.euler.gradient.map(|g| g.max_rel_sq_error),
            2,
            false,
        ),
        (
            "gradient error (max), Heun",
            |s| {
                s.heun
                    .as_ref()
                    .and_then(|h| h.gradient)
                    .map(|g| g.max_rel_sq_error)
            },
            2,
            true,
        ),
    ];
    let series: Vec<Series> = picks
        .iter()
        .map(|&(label, pick, colour, dashed)| {
            let pts = r
                .stages
                .iter()
                .filter_map(|s| Some((s.stage as f64, pick(s)?)))
                .collect();
            let style = SeriesStyle::palette(colour).markers();
            Series::new(label, pts, if dashed { style.dashed() } else { style })
        })
        .collect();
    let title = format!("doctor: {} (tolerance {:.0e})", r.model, r.tol);
    lines(stem, &title, "stage", "relative error", &series, true)
}

/// Writes `doctor.md`, `doctor.json` and `doctor.{png,svg}` into `dir`.
pub fn write(r: &Report, dir: &Path) -> Result<()> {
    write_json(&dir.join("doctor.json"), r)?;
    write_atomic(&dir.join("doctor.md"), markdown(r).as_bytes())?;
    figure(r, &dir.join("doctor"))
}
