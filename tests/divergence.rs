//! A run whose test loss turns NaN while its training loss is still finite (found by the
//! new-user audit: `train --lr 10 --warmup 5 --epochs 6` on the digits) must stop as diverged,
//! keep a checkpoint that loads, and leave files that read back.

use std::process::Command;

#[test]
fn a_diverged_run_keeps_a_loadable_checkpoint() {
    let dir = std::env::temp_dir().join(format!("resnet-ode-diverge-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bin = env!("CARGO_BIN_EXE_resnet-ode");
    let out = Command::new(bin)
        .args([
            "train", "--lr", "10", "--warmup", "5", "--epochs", "6", "--out",
        ])
        .arg(&dir)
        .output()
        .expect("run resnet-ode");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "lr 10 diverges: {err}");
    assert!(
        err.contains("non-finite") && !err.contains("panicked"),
        "{err}"
    );
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
    for line in metrics.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("metrics line is JSON");
        let test_loss = v["test_loss"]
            .as_f64()
            .expect("a kept epoch has a numeric test loss");
        assert!(test_loss.is_finite(), "kept epochs are finite: {line}");
    }
    if dir.join("state.json").exists() {
        let eval = Command::new(bin)
            .args(["eval", "--run"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            eval.status.success(),
            "the kept checkpoint loads: {}",
            String::from_utf8_lossy(&eval.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A run that fails before its first checkpoint (a setting the model rejects, divergence in
/// epoch 1) leaves no directory holding only `run.json`.
#[test]
fn a_run_failing_before_its_first_checkpoint_leaves_nothing() {
    let bin = env!("CARGO_BIN_EXE_resnet-ode");
    let cases: &[&[&str]] = &[
        &["--depth", "1", "--scheme", "heun"],
        &[
            "--lr",
            "1e12",
            "--epochs",
            "1",
            "--limit-train",
            "128",
            "--limit-test",
            "64",
        ],
    ];
    for (i, extra) in cases.iter().enumerate() {
        let dir =
            std::env::temp_dir().join(format!("resnet-ode-unfinished-{}-{i}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new(bin)
            .arg("train")
            .args(*extra)
            .arg("--out")
            .arg(&dir)
            .output()
            .expect("run resnet-ode");
        assert!(!out.status.success(), "{extra:?}");
        assert!(!dir.exists(), "{extra:?} left {}", dir.display());
    }
}
