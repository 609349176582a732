//! `experiment depth-sweep` and `bench train` on small configurations: the files a sweep
//! writes, its summary statistics, the benchmark's records, and the errors a user can meet.

use resnet_ode::bench_train::{measure, BenchModel, TrainBench, TrainBenchRecord};
use resnet_ode::device::{Placement, Precision};
use resnet_ode::experiments::depth_sweep::{self, Config, Data, GradRow, RunRow};
use resnet_ode::experiments::write_outcome;
use resnet_ode::grad::GradMode;
use resnet_ode::norm::BnMode;
use resnet_ode::scheme::Scheme;
use resnet_ode::train::TrainConfig;
use std::path::{Path, PathBuf};
use std::process::Command;

fn p32() -> Placement {
    Placement::flex(Precision::F32)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resnet-ode-sweep-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Two depths × one seed × one epoch on a slice of the digits, every scheme and mode.
fn tiny_sweep() -> Config {
    let mut train = TrainConfig {
        epochs: 1,
        batch_size: 32,
        limit_train: Some(128),
        limit_test: Some(64),
        ..TrainConfig::default()
    };
    train.model.planes = 4;
    Config {
        train,
        depths: vec![2, 4],
        seeds: vec![0],
        grad_batch: 32,
        grad_depths: vec![2, 4, 8],
        ..Config::default()
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_resnet-ode"))
}

/// Runs the binary and returns (success, stderr).
fn run_bin(args: &[&str]) -> (bool, String) {
    let out = bin().args(args).output().expect("run resnet-ode");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sweep_writes_its_files() {
    let dir = temp_dir("files");
    let cfg = tiny_sweep();
    let runs = dir.join(depth_sweep::RUNS_FILE);
    let data = depth_sweep::run(&cfg, &p32(), false, Some(&runs)).unwrap();
    assert!(runs.exists(), "the runs are saved as the sweep goes");
    assert_eq!(
        data.runs.len(),
        2 * 2 * 2,
        "depths × schemes × modes × seeds"
    );
    for r in &data.runs {
        assert!((0.0..=100.0).contains(&r.best_test_error), "{r:?}");
        assert!(r.best_test_error <= r.final_test_error + 1e-9);
        assert_eq!(r.test_errors.len(), 1);
    }
    // Gradients are compared on the adjoint-trained depth-4 model (the largest swept) of each
    // scheme, copied to every gradient depth.
    for scheme in ["euler", "heun"] {
        for depth in [2, 4, 8] {
            let rows: Vec<_> = data
                .gradients
                .iter()
                .filter(|g| g.scheme == scheme && g.depth == depth)
                .collect();
            assert!(!rows.is_empty(), "{scheme} N={depth}");
            assert!(rows.iter().all(|g| g.trained_with == "adjoint"
                && g.base_depth == 4
                && !g.tensor.contains("bias")
                && g.rel_sq_error.is_finite()
                && g.rel_sq_error >= 0.0));
        }
    }
    let outcome = depth_sweep::write(&data, &dir).unwrap();
    write_outcome(&dir, &outcome).unwrap();
    for f in [
        "runs.csv",
        "summary.csv",
        "summary.json",
        "gradient_error.csv",
        depth_sweep::RUNS_FILE,
        "test_error.png",
        "test_error.svg",
        "gradient_error.png",
        "gradient_error.svg",
        "report.md",
        "report.json",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("HeunNet + Adjoint Method") && md.contains("ResNet + Backprop"));
    assert_eq!(outcome.claims.len(), 2, "one gradient claim per scheme");
    let summary = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 1 + 2 * 2 * 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn run_row(scheme: &str, mode: &str, depth: usize, seed: u64, err: f64) -> RunRow {
    RunRow {
        scheme: scheme.into(),
        mode: mode.into(),
        depth,
        seed,
        best_test_error: err,
        final_test_error: err,
        test_errors: vec![err],
        train_seconds: 1.0,
        activation_peak_bytes: 0,
    }
}

fn grad_row(scheme: &str, depth: usize, e: f64) -> GradRow {
    GradRow {
        scheme: scheme.into(),
        depth,
        base_depth: 32,
        trained_with: "adjoint".into(),
        seed: 0,
        tensor: "stack.functions.0.conv1.weight".into(),
        rel_sq_error: e,
        cosine: 1.0,
    }
}

#[test]
fn summary_takes_median_and_quartiles_over_seeds() {
    let data = Data {
        setting: String::new(),
        runs: [4.0, 1.0, 3.0, 2.0]
            .iter()
            .enumerate()
            .map(|(s, &e)| run_row("heun", "adjoint", 8, s as u64, e))
            .collect(),
        gradients: [4, 8, 16]
            .iter()
            .map(|&n| grad_row("euler", n, 1.0 / (n * n) as f64))
            .collect(),
    };
    let s = depth_sweep::summarize(&data);
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].seeds, s[0].median), (4, 2.5));
    assert!((s[0].q25 - 1.75).abs() < 1e-12 && (s[0].q75 - 3.25).abs() < 1e-12);
    let claims = depth_sweep::claims(&data);
    assert_eq!(claims.len(), 1);
    assert!((claims[0].measured_slope + 2.0).abs() < 1e-9 && claims[0].holds);
    assert_eq!(
        depth_sweep::label("heun", "adjoint"),
        "HeunNet + Adjoint Method"
    );
    assert_eq!(depth_sweep::label("euler", "backprop"), "ResNet + Backprop");
}

#[test]
fn sweep_rejects_bad_settings() {
    let err = |cfg: Config| {
        depth_sweep::run(&cfg, &p32(), false, None)
            .unwrap_err()
            .to_string()
    };
    let heun_one = Config {
        depths: vec![1, 2],
        ..tiny_sweep()
    };
    assert!(err(heun_one).contains("--depths"));
    let one_depth = Config {
        depths: vec![4, 4],
        ..tiny_sweep()
    };
    assert!(err(one_depth).contains("--depths"));
    let no_seeds = Config {
        seeds: vec![],
        ..tiny_sweep()
    };
    assert!(err(no_seeds).contains("--seeds"));
    let no_batch = Config {
        grad_batch: 0,
        ..tiny_sweep()
    };
    assert!(err(no_batch).contains("--grad-batch"));
    let unswept_base = Config {
        grad_base_depth: Some(8),
        ..tiny_sweep()
    };
    assert!(err(unswept_base).contains("--grad-base-depth"));
    let heun_grad_one = Config {
        grad_depths: vec![1, 4],
        ..tiny_sweep()
    };
    assert!(err(heun_grad_one).contains("--grad-depths"));
    let mut bad_epochs = tiny_sweep();
    bad_epochs.train.epochs = 0;
    assert!(err(bad_epochs).contains("--epochs"));
    let mut missing = tiny_sweep();
    missing.train.data = "mnist:/nonexistent/resnet-ode".into();
    assert!(err(missing).contains("/nonexistent/resnet-ode"));
}

fn bench(model: BenchModel, depth: usize, mode: GradMode) -> TrainBench {
    TrainBench {
        model,
        depth,
        scheme: Scheme::Euler,
        mode,
        batch: 4,
        steps: 2,
        seed: 0,
        device: "flex".into(),
        bn: BnMode::Cached,
        trace: None,
    }
}

#[test]
fn bench_train_records_are_sane() {
    for (model, depth, want) in [
        (BenchModel::Tiny, 4, ("tiny", 4)),
        (BenchModel::CifarResNet(20), 0, ("resnet20", 20)),
    ] {
        for mode in [GradMode::Backprop, GradMode::Adjoint] {
            let r = measure(&p32(), &bench(model, depth, mode)).unwrap();
            assert_eq!((r.model.as_str(), r.depth), want);
            assert_eq!((r.scheme.as_str(), r.batch), ("euler", 4));
            assert_eq!(r.mode, mode.to_string());
            assert!(r.step_ms > 0.0 && r.step_ms.is_finite(), "{r:?}");
            let ips = 4.0 / (r.step_ms / 1e3);
            assert!((r.images_per_sec - ips).abs() < 1e-6 * ips, "{r:?}");
        }
    }
}

#[test]
fn bench_train_rejects_bad_settings() {
    for bad in ["resnet21", "resnet", "vgg16", ""] {
        let e = bad.parse::<BenchModel>().unwrap_err().to_string();
        assert!(e.contains("--models"), "{bad}: {e}");
    }
    assert_eq!(
        "resnet110".parse::<BenchModel>().unwrap(),
        BenchModel::CifarResNet(110)
    );
    let no_steps = TrainBench {
        steps: 0,
        ..bench(BenchModel::Tiny, 4, GradMode::Backprop)
    };
    assert!(no_steps
        .check()
        .unwrap_err()
        .to_string()
        .contains("--steps"));
    let heun_one = TrainBench {
        scheme: Scheme::Heun,
        ..bench(BenchModel::Tiny, 1, GradMode::Adjoint)
    };
    assert!(heun_one
        .check()
        .unwrap_err()
        .to_string()
        .contains("--tiny-depths"));
    // PyTorch's profiler sees only LibTorch devices: flex is refused before any step runs.
    let traced = TrainBench {
        trace: Some("traces".into()),
        ..bench(BenchModel::Tiny, 4, GradMode::Backprop)
    };
    let e = traced.check().unwrap_err().to_string();
    assert!(e.contains("--trace") && e.contains("libtorch"), "{e}");
}

/// Trace files keep session 15's names under the default batch-norm policy and say any other.
#[test]
fn bench_train_trace_names_say_a_non_default_batch_norm() {
    let cached = bench(BenchModel::Tiny, 16, GradMode::Adjoint);
    assert_eq!(cached.name(), "tiny16-euler-adjoint");
    let recompute = TrainBench {
        bn: BnMode::Recompute,
        ..cached
    };
    assert_eq!(recompute.name(), "tiny16-euler-adjoint-recompute");
}

/// The binary (with its counting allocator) writes records with exactly the fields
/// `bench/pytorch/compare.py` reads and the batch-norm policy asked (through the child
/// processes), and the adjoint needs less activation memory.
#[test]
fn bench_train_cli_writes_json() {
    let dir = temp_dir("bench");
    let json = dir.join("ours.json");
    let (ok, stderr) = run_bin(&[
        "bench",
        "train",
        "--models",
        "tiny",
        "--tiny-depths",
        "16",
        "--batch",
        "8",
        "--steps",
        "1",
        "--bn",
        "recompute",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let text = std::fs::read_to_string(&json).unwrap();
    let records: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(records.len(), 2);
    let mut keys: Vec<&str> = records[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut want = [
        "model",
        "depth",
        "scheme",
        "mode",
        "batch",
        "step_ms",
        "images_per_sec",
        "activation_peak_bytes",
        "device",
        "bn",
    ];
    want.sort_unstable();
    assert_eq!(keys, want);
    let typed: Vec<TrainBenchRecord> = serde_json::from_str(&text).unwrap();
    let (bp, adj) = (&typed[0], &typed[1]);
    assert_eq!(
        (bp.mode.as_str(), adj.mode.as_str()),
        ("backprop", "adjoint")
    );
    assert_eq!((bp.bn, adj.bn), (BnMode::Recompute, BnMode::Recompute));
    // Records written before the policy was a choice read as the default.
    let mut old = records[0].clone();
    old.as_object_mut().unwrap().remove("bn");
    let old: TrainBenchRecord = serde_json::from_value(old).unwrap();
    assert_eq!(old.bn, BnMode::Cached);
    assert!(
        adj.activation_peak_bytes > 0 && adj.activation_peak_bytes < bp.activation_peak_bytes,
        "{bp:?} {adj:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `bench memory` measures each configuration in a child process; the records are those of the
/// same configurations measured in process (the deterministic modes' peaks to the byte).
#[test]
fn bench_memory_children_match_in_process() {
    let dir = temp_dir("bench-memory");
    let records = |extra: &[&str], name: &str| {
        let json = dir.join(name);
        let mut args = vec![
            "bench",
            "memory",
            "--workloads",
            "mlp",
            "--schemes",
            "euler,heun",
            "--modes",
            "backprop,adjoint-serial",
            "--depths",
            "3",
            "--reps",
            "1",
            "--json",
            json.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let (ok, stderr) = run_bin(&args);
        assert!(ok, "{stderr}");
        let text = std::fs::read_to_string(&json).unwrap();
        let v: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        v.into_iter()
            .map(|r| {
                let field = |k: &str| r[k].to_string();
                let keys = ["workload", "scheme", "mode", "depth"];
                let bytes = ["activation_peak_bytes", "gradient_bytes", "parameter_bytes"];
                assert!(r["step_ms"].as_f64().unwrap() > 0.0, "{r}");
                keys.iter()
                    .chain(&bytes)
                    .map(|k| field(k))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let children = records(&[], "children.json");
    let in_process = records(&["--in-process"], "in-process.json");
    assert_eq!(children.len(), 4);
    assert_eq!(children, in_process);
    assert!(children.iter().all(|r| r[4] != "0"), "{children:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Bad flags and unwritable outputs fail at once, naming the flag, before any training.
#[test]
fn cli_errors_before_work() {
    let dir = temp_dir("cli");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let file_s = file.to_str().unwrap();
    let inside = Path::new(file_s).join("out.json");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["experiment", "depth-sweep", "--out", file_s], "--out"),
        (
            vec![
                "experiment",
                "depth-sweep",
                "--out",
                file_s,
                "--schemes",
                "rk4",
            ],
            "rk4",
        ),
        (
            vec!["experiment", "depth-sweep", "--data", "nope"],
            "--data",
        ),
        (vec!["bench", "train", "--models", "vgg"], "--models"),
        (vec!["bench", "train", "--modes", "magic"], "--modes"),
        (
            vec!["bench", "train", "--json", inside.to_str().unwrap()],
            "--json",
        ),
        (
            vec!["bench", "memory", "--json", inside.to_str().unwrap()],
            "--json",
        ),
        (
            vec!["bench", "speed", "--workloads", "conv0"],
            "--workloads",
        ),
    ];
    for (args, want) in cases {
        let (ok, stderr) = run_bin(&args);
        assert!(!ok && stderr.contains(want), "{args:?}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
