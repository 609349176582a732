//! Fault injection: a training run SIGKILLed at many seeded random moments and resumed each time
//! ends with exactly the uninterrupted run's numbers and weights (byte for byte), and no stray
//! files. Each kill can land anywhere: before `run.json`, inside an atomic write, between
//! `state.json` and `metrics.jsonl`, during evaluation.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ARGS: &[&str] = &[
    "train",
    "--epochs",
    "3",
    "--limit-train",
    "256",
    "--limit-test",
    "128",
];

fn train(dir: &Path, resume: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_resnet-ode"));
    c.args(ARGS).arg("--out").arg(dir);
    if resume {
        c.arg("--resume");
    }
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// The numbers of `metrics.jsonl`, without the timing-dependent fields.
fn numbers(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let m = v.as_object_mut().unwrap();
            for timing in ["seconds", "images_per_sec", "activation_peak_bytes"] {
                m.remove(timing);
            }
            v
        })
        .collect()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn killed_runs_resume_to_the_uninterrupted_result() {
    let base = std::env::temp_dir().join(format!("resnet-ode-faults-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (whole, killed) = (base.join("whole"), base.join("killed"));
    let t0 = Instant::now();
    let out = train(&whole, false).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_time = t0.elapsed().as_secs_f64();

    // Seeded kill moments (LCG), short enough that most land before the run ends; the loop
    // ends when a run finishes on its own.
    let mut state: u64 = 0x5eed;
    let (mut kills, mut finished) = (0, false);
    for _ in 0..40 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = (state >> 11) as f64 / (1u64 << 53) as f64 * run_time / 3.0;
        let resume = killed.join("run.json").exists();
        let mut child = train(&killed, resume).spawn().unwrap();
        std::thread::sleep(Duration::from_secs_f64(delay));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
        } else {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            finished = true;
            break;
        }
    }
    if !finished {
        let resume = killed.join("run.json").exists();
        let out = train(&killed, resume).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("{kills} kills before the run finished");
    assert!(kills >= 5, "only {kills} kills landed");

    assert_eq!(
        numbers(&killed),
        numbers(&whole),
        "metrics after {kills} kills"
    );
    for f in ["model-0003.safetensors", "optimizer-0003.safetensors"] {
        assert_eq!(
            std::fs::read(killed.join(f)).unwrap(),
            std::fs::read(whole.join(f)).unwrap(),
            "{f} byte for byte"
        );
    }
    assert_eq!(files(&killed), files(&whole), "no stray files");
    let _ = std::fs::remove_dir_all(&base);
}
