//! Progress when the output is not a terminal (nohup, slurm, `> log 2>&1`): one line per epoch
//! with the test metrics, no progress bars (the audit saw the header and then nothing).

use std::process::Command;

#[test]
fn a_logged_run_prints_one_line_per_epoch() {
    let dir = std::env::temp_dir().join(format!("resnet-ode-progress-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_resnet-ode"))
        .args([
            "train",
            "--epochs",
            "2",
            "--limit-train",
            "128",
            "--limit-test",
            "64",
            "--out",
        ])
        .arg(&dir)
        .output()
        .expect("run resnet-ode");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for epoch in 1..=2 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("epoch {epoch}/2:")))
            .unwrap_or_else(|| panic!("no line for epoch {epoch}: {text}"));
        assert!(line.contains("test loss") && line.contains("ETA"), "{line}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains('['),
        "no bar when stderr is not a terminal: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The after-training memory report (issue 13 #3): capped at the training set's size, measured on
/// small batches and extrapolated (it once allocated backprop's full need after an adjoint run),
/// and optional.
#[test]
fn the_memory_report_is_capped_extrapolated_and_optional() {
    let dir = std::env::temp_dir().join(format!("resnet-ode-memreport-{}", std::process::id()));
    let train = |extra: &[&str]| {
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new(env!("CARGO_BIN_EXE_resnet-ode"))
            .args([
                "train",
                "--epochs",
                "1",
                "--limit-train",
                "40",
                "--limit-test",
                "20",
            ])
            .args(["--batch-size", "100000", "--out"])
            .arg(&dir)
            .args(extra)
            .output()
            .expect("run resnet-ode");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = train(&[]);
    let line = text
        .lines()
        .find(|l| l.starts_with("activation memory"))
        .unwrap_or_else(|| panic!("no memory line: {text}"));
    assert!(
        line.contains("batch 40, measured") && line.contains("extrapolated"),
        "{line}"
    );
    assert!(!train(&["--no-memory-report"]).contains("activation memory"));
    let _ = std::fs::remove_dir_all(&dir);
}
