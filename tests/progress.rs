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
