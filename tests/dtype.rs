//! Runs and weight files used in another precision than they were written in (issue 13 #2: four
//! panics on a dtype mismatch): evaluation converts, a resume refuses naming --dtype.

use std::path::Path;
use std::process::Command;

fn run(args: &[&str], dir: Option<&Path>) -> (bool, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_resnet-ode"));
    c.args(args);
    if let Some(d) = dir {
        c.arg(d);
    }
    let out = c.output().expect("run resnet-ode");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    (out.status.success(), err)
}

#[test]
fn other_precisions_convert_or_refuse_clearly() {
    let base = std::env::temp_dir().join(format!("resnet-ode-dtype-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (f64_run, f32_run) = (base.join("f64"), base.join("f32"));
    let small = [
        "train",
        "--epochs",
        "1",
        "--limit-train",
        "64",
        "--limit-test",
        "32",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        small.iter().chain(extra).copied().collect()
    };
    assert!(run(&with(&["--dtype", "f64", "--out"]), Some(&f64_run)).0);
    assert!(run(&with(&["--out"]), Some(&f32_run)).0);

    assert!(
        run(&["eval", "--run"], Some(&f64_run)).0,
        "f64 run, f32 eval"
    );
    assert!(
        run(&["eval", "--dtype", "f64", "--run"], Some(&f32_run)).0,
        "f32 run, f64 eval"
    );
    let (ok, err) = run(&with(&["--resume", "--out"]), Some(&f64_run));
    assert!(!ok && err.contains("--dtype f64"), "{err}");

    let weights = base.join("w.safetensors");
    let w = weights.to_str().unwrap();
    assert!(run(&["gradcheck", "--depth", "4", "--weights-file", w], None).0);
    let (ok, err) = run(
        &[
            "gradcheck",
            "--depth",
            "4",
            "--dtype",
            "f64",
            "--weights-file",
            w,
        ],
        None,
    );
    assert!(ok, "f32 weights in an f64 check: {err}");
    let _ = std::fs::remove_dir_all(&base);
}
