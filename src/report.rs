//! Result files and rate fits: atomic CSV/JSON writers, log-log slope fits, and the
//! `report.md`/`report.json` pair that sets each measured slope next to the paper's.
//!
//! Every file is written atomically (temp file in the same directory, fsync, rename) so an
//! interrupted run never leaves a truncated result that looks complete.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically: readers see either the old file or the complete new one.
///
/// Parent directories are created. The data goes to a temp file in the same directory (a rename
/// is only atomic within one file system), is fsynced, then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    fs::create_dir_all(&dir).map_err(|e| {
        Error::file(
            path,
            format!("cannot create directory {}: {e}", dir.display()),
        )
    })?;
    let tmp = temp_path(path)?;
    let written = write_synced(&tmp, bytes).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        // Best effort: the original error is the one worth reporting.
        let _ = fs::remove_file(&tmp);
        return Err(Error::file(path, format!("cannot write: {e}")));
    }
    sync_dir(&dir);
    Ok(())
}

/// Serde for an `f64` that may be NaN or infinite (a diverged loss): JSON has no such numbers
/// and serde_json writes them as `null`, which then fails to read back as `f64`. Finite values
/// stay numbers; the others are the strings `"NaN"`, `"inf"` and `"-inf"`. `null` (written by
/// earlier versions) reads back as NaN. Use with `#[serde(with = "crate::report::float_json")]`.
pub mod float_json {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        match *v {
            v if v.is_finite() => s.serialize_f64(v),
            v if v.is_nan() => s.serialize_str("NaN"),
            v if v > 0.0 => s.serialize_str("inf"),
            _ => s.serialize_str("-inf"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Number(f64),
            Text(String),
            Null(()),
        }
        match Stored::deserialize(d)? {
            Stored::Number(v) => Ok(v),
            Stored::Null(()) => Ok(f64::NAN),
            Stored::Text(t) => match t.as_str() {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                other => Err(serde::de::Error::custom(format!(
                    "`{other}`: expected a number, \"NaN\", \"inf\" or \"-inf\""
                ))),
            },
        }
    }
}

/// Serializes `value` as pretty-printed JSON and writes it atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::file(path, format!("cannot serialize JSON: {e}")))?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Writes an RFC 4180 CSV file atomically; fields holding commas, quotes or newlines are quoted.
///
/// Every row must have as many fields as `header`, so columns can never silently shift.
pub fn write_csv(path: &Path, header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut text = csv_line(header.iter().copied());
    for (i, row) in rows.iter().enumerate() {
        if row.len() != header.len() {
            return Err(Error::invalid(
                format!("CSV row {i} of {}", path.display()),
                format!("{} fields, header has {}", row.len(), header.len()),
            ));
        }
        text.push_str(&csv_line(row.iter().map(String::as_str)));
    }
    write_atomic(path, text.as_bytes())
}

/// Creates `dir` and proves it is writable by creating and removing a probe file, so that a bad
/// `--out` fails before an experiment runs rather than after.
pub fn ensure_writable_dir(dir: &Path) -> Result<()> {
    ensure_writable_dir_for(dir, "--out")
}

/// [`ensure_writable_dir`] for a directory that `flag` named.
pub fn ensure_writable_dir_for(dir: &Path, flag: &str) -> Result<()> {
    let fail = |e: std::io::Error| {
        Error::file(
            dir,
            format!("directory of {flag} is not usable: {e}; pass a writable path with {flag}"),
        )
    };
    let existed = dir.exists();
    fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(format!(".resnet-ode-probe-{}", std::process::id()));
    let probed = File::create(&probe)
        .and_then(|mut f| f.write_all(b"probe"))
        .and_then(|()| fs::remove_file(&probe));
    if let Err(e) = probed {
        // A full disk: leave nothing behind, not even the (empty) folder this call made.
        let _ = fs::remove_file(&probe);
        if !existed {
            let _ = fs::remove_dir(dir);
        }
        return Err(fail(e));
    }
    Ok(())
}

/// Least-squares slope of `ln y` against `ln x`: the observed rate `p` in `y ≈ C·x^p`.
///
/// Errors (naming the offending entry) on fewer than two points, mismatched lengths,
/// non-positive or non-finite values, or all `x` equal.
pub fn loglog_slope(xs: &[f64], ys: &[f64]) -> Result<f64> {
    if xs.len() != ys.len() {
        return Err(Error::invalid(
            "log-log fit",
            format!("{} x values but {} y values", xs.len(), ys.len()),
        ));
    }
    if xs.len() < 2 {
        return Err(Error::invalid(
            "log-log fit",
            format!("needs at least 2 points, got {}", xs.len()),
        ));
    }
    let lx = logs("x", xs)?;
    let ly = logs("y", ys)?;
    let n = lx.len() as f64;
    let mx = lx.iter().sum::<f64>() / n;
    let my = ly.iter().sum::<f64>() / n;
    let sxx: f64 = lx.iter().map(|x| (x - mx).powi(2)).sum();
    let sxy: f64 = lx.iter().zip(&ly).map(|(x, y)| (x - mx) * (y - my)).sum();
    if sxx <= 0.0 {
        return Err(Error::invalid("log-log fit", "all x values are equal"));
    }
    Ok(sxy / sxx)
}

/// One checked claim of the paper: a measured rate set against the expected one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Claim {
    /// What is claimed, in words.
    pub claim: String,
    /// Slope fitted to the measurements.
    pub measured_slope: f64,
    /// Slope predicted by the paper (or the bound it proves).
    pub expected_slope: f64,
    /// Allowed deviation.
    pub tolerance: f64,
    /// Whether the measurement supports the claim.
    pub holds: bool,
    /// A one-sided claim: the measured slope must not exceed `expected_slope + tolerance`
    /// (reports show it as "≤ bound", not "± tolerance").
    #[serde(default)]
    pub upper_bound: bool,
    /// How it was measured (setting, depths, seeds).
    pub detail: String,
}

impl Claim {
    /// A claimed rate: holds when `|measured - expected| <= tol`. A NaN measurement never holds.
    pub fn new(
        claim: impl Into<String>,
        measured: f64,
        expected: f64,
        tol: f64,
        detail: impl Into<String>,
    ) -> Self {
        Self::with_holds(
            claim,
            measured,
            expected,
            tol,
            detail,
            (measured - expected).abs() <= tol,
            false,
        )
    }

    /// A claimed upper bound on an error's slope: holds when the measured error decays at least
    /// as fast as the bound, `measured <= bound_slope + tol` (slopes are negative for decay).
    pub fn bound(
        claim: impl Into<String>,
        measured: f64,
        bound_slope: f64,
        tol: f64,
        detail: impl Into<String>,
    ) -> Self {
        Self::with_holds(
            claim,
            measured,
            bound_slope,
            tol,
            detail,
            measured <= bound_slope + tol,
            true,
        )
    }

    /// The expected value and tolerance as shown in reports: `-1.000` and `0.300` for a rate,
    /// `≤ -0.700` and `one-sided` for a bound.
    pub fn expected_cells(&self) -> (String, String) {
        if self.upper_bound {
            (
                format!("≤ {:.3}", self.expected_slope + self.tolerance),
                "one-sided".into(),
            )
        } else {
            (
                format!("{:.3}", self.expected_slope),
                format!("{:.3}", self.tolerance),
            )
        }
    }

    fn with_holds(
        claim: impl Into<String>,
        measured: f64,
        expected: f64,
        tol: f64,
        detail: impl Into<String>,
        holds: bool,
        upper_bound: bool,
    ) -> Self {
        Claim {
            claim: claim.into(),
            measured_slope: measured,
            expected_slope: expected,
            tolerance: tol,
            holds,
            upper_bound,
            detail: detail.into(),
        }
    }
}

/// Writes `report.md` (a table of the claims, then `extra_markdown`) and `report.json` (the
/// claims as an array) into `dir`, both atomically.
pub fn write_report(dir: &Path, title: &str, claims: &[Claim], extra_markdown: &str) -> Result<()> {
    write_atomic(
        &dir.join("report.md"),
        markdown(title, claims, extra_markdown).as_bytes(),
    )?;
    write_json(&dir.join("report.json"), &claims)
}

fn markdown(title: &str, claims: &[Claim], extra: &str) -> String {
    let mut md = format!("# {title}\n\n");
    md.push_str("| claim | measured slope | expected slope | tolerance | holds |\n");
    md.push_str("|---|---:|---:|---:|---|\n");
    for c in claims {
        let (expected, tolerance) = c.expected_cells();
        md.push_str(&format!(
            "| {} | {:.3} | {expected} | {tolerance} | {} |\n",
            c.claim.replace('|', "\\|"),
            c.measured_slope,
            if c.holds { "yes" } else { "**no**" }
        ));
    }
    let details: Vec<_> = claims.iter().filter(|c| !c.detail.is_empty()).collect();
    if !details.is_empty() {
        md.push('\n');
        for c in details {
            md.push_str(&format!("- *{}*: {}\n", c.claim, c.detail));
        }
    }
    if !extra.is_empty() {
        md.push('\n');
        md.push_str(extra);
        if !extra.ends_with('\n') {
            md.push('\n');
        }
    }
    md
}

fn logs(name: &str, values: &[f64]) -> Result<Vec<f64>> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v.is_finite() && v > 0.0 {
                Ok(v.ln())
            } else {
                Err(Error::invalid(
                    "log-log fit",
                    format!("{name}[{i}] = {v} is not positive and finite"),
                ))
            }
        })
        .collect()
}

fn csv_line<'a>(fields: impl Iterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = fields.map(csv_field).collect();
    quoted.join(",") + "\n"
}

fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A temp name unique within this process (counter) and across processes (pid).
pub(crate) fn temp_path(path: &Path) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| Error::file(path, "not a file path"))?
        .to_string_lossy();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = format!(".{name}.tmp.{}.{n}", std::process::id());
    Ok(parent_dir(path).join(tmp))
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Makes the rename durable. Best effort: not every platform can open a directory for syncing.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn non_finite_floats_round_trip_through_json() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct M {
            #[serde(with = "super::float_json")]
            v: f64,
        }
        for v in [1.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let text = serde_json::to_string(&M { v }).unwrap();
            assert!(!text.contains("null"), "{text}");
            let back: M = serde_json::from_str(&text).unwrap();
            assert!(back.v == v || (v.is_nan() && back.v.is_nan()), "{text}");
        }
        let old: M = serde_json::from_str(r#"{"v":null}"#).unwrap();
        assert!(old.v.is_nan(), "null from earlier versions reads as NaN");
        assert!(serde_json::from_str::<M>(r#"{"v":"x"}"#).is_err());
    }

    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("resnet-ode-report-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn slope_of_power_law() {
        let xs: Vec<f64> = (1..=6).map(|k| 2f64.powi(k)).collect();
        let ys: Vec<f64> = xs.iter().map(|x| 3.0 * x.powf(-1.5)).collect();
        let p = loglog_slope(&xs, &ys).unwrap();
        assert!((p + 1.5).abs() < 1e-12, "slope {p}");
    }

    #[test]
    fn slope_rejects_bad_input() {
        let msg = |r: Result<f64>| r.unwrap_err().to_string();
        assert!(msg(loglog_slope(&[1.0], &[1.0])).contains("at least 2"));
        assert!(msg(loglog_slope(&[1.0, 2.0], &[1.0, 0.0])).contains("y[1]"));
        assert!(msg(loglog_slope(&[1.0, f64::NAN], &[1.0, 2.0])).contains("x[1]"));
        assert!(msg(loglog_slope(&[2.0, 2.0], &[1.0, 2.0])).contains("equal"));
        assert!(loglog_slope(&[1.0, 2.0], &[1.0]).is_err());
    }

    #[test]
    fn atomic_write_leaves_no_temp_file() {
        let dir = temp_dir("atomic");
        let path = dir.join("sub").join("a.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.txt")]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn csv_quotes_and_checks_width() {
        let dir = temp_dir("csv");
        let path = dir.join("t.csv");
        let rows = vec![vec!["1".to_string(), "a,\"b\"".to_string()]];
        write_csv(&path, &["n", "label"], &rows).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "n,label\n1,\"a,\"\"b\"\"\"\n"
        );
        let bad = vec![vec!["1".to_string()]];
        assert!(write_csv(&path, &["n", "label"], &bad).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writable_dir_check() {
        let dir = temp_dir("probe");
        ensure_writable_dir(&dir.join("out")).unwrap();
        assert_eq!(fs::read_dir(dir.join("out")).unwrap().count(), 0);
        // A regular file cannot be an output directory.
        let file = dir.join("file");
        fs::write(&file, b"x").unwrap();
        let err = ensure_writable_dir(&file).unwrap_err().to_string();
        assert!(err.contains("--out") && err.contains("file"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn claim_logic() {
        assert!(Claim::new("rate", -1.05, -1.0, 0.1, "").holds);
        assert!(!Claim::new("rate", -1.2, -1.0, 0.1, "").holds);
        assert!(!Claim::new("rate", f64::NAN, -1.0, 0.1, "").holds);
        // Faster decay than the bound holds; slower does not.
        assert!(Claim::bound("bound", -2.0, -1.0, 0.1, "").holds);
        assert!(Claim::bound("bound", -0.95, -1.0, 0.1, "").holds);
        assert!(!Claim::bound("bound", -0.5, -1.0, 0.1, "").holds);
    }

    #[test]
    fn report_files() {
        let dir = temp_dir("report");
        let claims = vec![
            Claim::new("a | b", -1.0, -1.0, 0.1, "N in 4..64"),
            Claim::bound("c", 0.0, -1.0, 0.1, ""),
        ];
        write_report(&dir, "Title", &claims, "Notes.").unwrap();
        let md = fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(md.starts_with("# Title\n"));
        assert!(md.contains("| a \\| b | -1.000 | -1.000 | 0.100 | yes |"));
        assert!(md.contains("**no**") && md.ends_with("Notes.\n"));
        // A bound is shown as one: "≤ -0.900", never "-1.000 ± 0.100".
        assert!(
            md.contains("| c | 0.000 | ≤ -0.900 | one-sided | **no** |"),
            "{md}"
        );
        let back: Vec<Claim> =
            serde_json::from_str(&fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
        assert_eq!(back, claims);
        fs::remove_dir_all(&dir).unwrap();
    }
}
