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

/// Weights of another structure are named in plain words (issue 13 #5: a 41-line burn
/// diagnostic advising `.allow_partial(true)` under the headline "not a readable safetensors
/// file"): which tensors are missing, unexpected or mis-shaped, the first few then a count.
#[test]
fn wrong_weights_are_listed_in_plain_words() {
    let dir = scratch("weights");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("w.safetensors");
    let f = file.to_str().unwrap();
    let bin = env!("CARGO_BIN_EXE_resnet-ode");
    let saved = Command::new(bin)
        .args(["gradcheck", "--depth", "8", "--weights-file", f])
        .output()
        .unwrap();
    assert!(saved.status.success());
    for (args, expect) in [
        (vec!["--depth", "16"], "missing functions.8.w1 [16, 16]"),
        (vec!["--depth", "4"], "unexpected functions.4.w1 [16, 16]"),
    ] {
        let out = Command::new(bin)
            .args(["gradcheck", "--weights-file", f])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(f) && err.contains(expect), "{args:?}: {err}");
        assert!(
            !err.contains("allow_partial") && err.lines().count() <= 12,
            "{err}"
        );
    }
    // The same names, one of another shape (the header edited; our check reads shapes only).
    let bytes = std::fs::read(&file).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    header["functions.0.b1"]["shape"] = serde_json::json!([8]);
    let mut text = serde_json::to_vec(&header).unwrap();
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut edited = (text.len() as u64).to_le_bytes().to_vec();
    edited.extend_from_slice(&text);
    edited.extend_from_slice(&bytes[8 + len..]);
    std::fs::write(&file, edited).unwrap();
    let out = Command::new(bin)
        .args(["gradcheck", "--depth", "8", "--weights-file", f])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mis-shaped functions.0.b1: expected [16], found [8]"),
        "{err}"
    );
    std::fs::write(&file, b"garbage").unwrap();
    let out = Command::new(bin)
        .args(["gradcheck", "--depth", "8", "--weights-file", f])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a safetensors file"));
    let _ = std::fs::remove_dir_all(&dir);
}
