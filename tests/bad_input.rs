//! Bad input on the command line, table-driven: every case exits non-zero, never panics, and
//! names the flag at fault (the audit found list flags reported under the single-value flag's
//! name, `--planes 0` reported as `--depth`, and advice about an `--out` that bench lacks).

use std::path::PathBuf;
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "resnet-ode-bad-input-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn bad_flags_name_the_flag() {
    let out = scratch("out");
    let out_s = out.to_string_lossy().to_string();
    let cases: &[(&[&str], &str)] = &[
        (&["bench", "memory", "--modes", "bogus"], "--modes"),
        (&["bench", "speed", "--schemes", "rk4"], "--schemes"),
        (&["bench", "memory", "--workloads", "conv0"], "--workloads"),
        (&["bench", "train", "--modes", "bogus"], "--modes"),
        (&["bench", "train", "--models", "resnet7"], "--models"),
        (
            &["bench", "memory", "--json", "/proc/no/such/dir/x.json"],
            "--json",
        ),
        (
            &[
                "experiment",
                "ode-distance",
                "--families",
                "bogus",
                "--out",
                &out_s,
            ],
            "--families",
        ),
        (
            &[
                "experiment",
                "ode-distance",
                "--seeds",
                "0",
                "--out",
                &out_s,
            ],
            "--seeds",
        ),
        (&["train", "--planes", "0", "--out", &out_s], "--planes"),
        (
            &[
                "experiment",
                "finetune",
                "--deep-depth",
                "8",
                "--out",
                &out_s,
            ],
            "--deep-depth",
        ),
        (
            &[
                "experiment",
                "finetune",
                "--train-stages",
                "layer9",
                "--out",
                &out_s,
            ],
            "--train-stages",
        ),
        (
            &[
                "experiment",
                "finetune",
                "--data",
                "bogus:x",
                "--out",
                &out_s,
            ],
            "--data",
        ),
        (
            &["experiment", "finetune", "--seeds", "0", "--out", &out_s],
            "--seeds",
        ),
    ];
    for (args, flag) in cases {
        let o = Command::new(env!("CARGO_BIN_EXE_resnet-ode"))
            .args(*args)
            .output()
            .expect("run resnet-ode");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        assert!(
            err.contains(flag),
            "{args:?}: the message names {flag}: {err}"
        );
        if *flag == "--json" {
            assert!(!err.contains("--out"), "bench has no --out: {err}");
        }
        assert!(!out.exists(), "{args:?}: a rejected run leaves no {out_s}");
    }
}

/// `resnet-ode … | head` closes the pipe early: the command must end without a panic.
#[test]
fn a_closed_stdout_pipe_is_no_panic() {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_resnet-ode"))
        .args(["gradcheck", "--depth", "64"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run resnet-ode");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}
