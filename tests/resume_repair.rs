//! `--resume` repairs what a kill can leave (issue 13 #7): `metrics.jsonl` a line short when the
//! kill fell between `state.json` and it, orphaned checkpoints and temporary files; and it
//! refuses a directory that holds no run instead of silently starting one.

use std::path::Path;
use std::process::Command;

fn train(dir: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_resnet-ode"))
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
        .arg(dir)
        .args(extra)
        .output()
        .expect("run resnet-ode")
}

#[test]
fn resume_restores_metrics_and_removes_orphans() {
    let dir = std::env::temp_dir().join(format!("resnet-ode-repair-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(train(&dir, &[]).status.success());
    let metrics = dir.join("metrics.jsonl");
    let full = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(full.lines().count(), 2);
    let first_line = format!("{}\n", full.lines().next().unwrap());
    std::fs::write(&metrics, first_line).unwrap();
    let orphans = [
        "model-0099.safetensors",
        "optimizer-0099.safetensors",
        ".state.json.tmp.1.0",
    ];
    for o in orphans {
        std::fs::write(dir.join(o), b"x").unwrap();
    }
    let out = train(&dir, &["--resume"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&metrics).unwrap(),
        full,
        "metrics restored"
    );
    for o in orphans {
        assert!(!dir.join(o).exists(), "{o} removed");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resume_of_nothing_is_refused() {
    let dir = std::env::temp_dir().join(format!("resnet-ode-nothing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = train(&dir, &["--resume"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--resume") && err.contains("no run"), "{err}");
    assert!(!dir.exists(), "nothing created");
}
