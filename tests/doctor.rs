//! `doctor` and `--grad auto` (issue 10, parts 3 and 4): the verdict flips between a smooth
//! tied stack and He et al.'s ReLU blocks, the outputs are written, bad flags are errors, the
//! hybrid policy picks per stack and trains and resumes, and per-stack gradient modes change
//! nothing when every stack shares one; the authors' bottleneck stages are measured too.

use resnet_ode::data::{batches, DataSpec, Split};
use resnet_ode::device::{Placement, Precision};
use resnet_ode::doctor::{self, auto_modes, diagnose, DoctorConfig, Form, Report};
use resnet_ode::grad::GradMode;
use resnet_ode::models::{Arch, Model, ModelSpec};
use resnet_ode::norm::BnMode;
use resnet_ode::params::{flat_grads, independent_copy};
use resnet_ode::rng::Rng;
use resnet_ode::train::{
    prepare, step_gradients, step_gradients_modes, train_on, AutoGrad, DeviceBatch, RunRecord,
    TrainConfig, TrainOptions, RUN_FILE,
};
use std::path::PathBuf;

fn p32() -> Placement {
    Placement::flex(Precision::F32)
}

fn digits() -> Split {
    DataSpec::Digits.load(0).expect("built-in digits")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resnet-ode-doctor-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn config(model: ModelSpec, epochs: usize) -> TrainConfig {
    TrainConfig {
        model,
        epochs,
        batch_size: 32,
        limit_train: Some(384),
        limit_test: Some(100),
        ..TrainConfig::default()
    }
}

fn tied_tiny() -> ModelSpec {
    ModelSpec {
        tied: true,
        planes: 8,
        ..ModelSpec::default()
    }
}

fn cifar(original: bool) -> ModelSpec {
    ModelSpec {
        arch: Arch::CifarResNet(20),
        original,
        ..ModelSpec::default()
    }
}

/// The first 64 normalised training digits.
fn batch(p: &Placement) -> DeviceBatch {
    let data = prepare(digits(), &config(tied_tiny(), 1)).unwrap();
    let b = batches(data.train, 64, false, None, &mut Rng::new(0), false)
        .unwrap()
        .next()
        .unwrap();
    DeviceBatch::new(p, &b, 10)
}

fn fresh(spec: &ModelSpec) -> Model {
    let data = prepare(digits(), &config(spec.clone(), 1)).unwrap();
    spec.init(&p32(), data.input, &mut Rng::new(3)).unwrap()
}

fn quiet(out: Option<PathBuf>) -> TrainOptions {
    TrainOptions {
        out,
        ..TrainOptions::default()
    }
}

/// A tied TinyResNet trained by the project for a few seconds is found safe for the adjoint;
/// He et al.'s ReLU blocks are not (not invertible), whatever their weights.
#[test]
fn the_verdict_flips_between_a_trained_tied_stack_and_relu_blocks() {
    let p = p32();
    let trained = train_on(digits(), &config(tied_tiny(), 2), &p, &quiet(None)).unwrap();
    let x = batch(&p);
    let cfg = DoctorConfig::default();
    let tied = diagnose(&trained.model, &x, &cfg).unwrap();
    assert_eq!(tied.len(), 1);
    let s = &tied[0];
    let g = s.euler.gradient.unwrap();
    assert_eq!(s.form, Form::Scaled);
    assert!(s.tied && s.smoothness == 0.0 && s.n == 8);
    assert!(
        s.moves.max > 0.0,
        "training moved the block off zero: {:?}",
        s.moves
    );
    assert!(
        g.max_rel_sq_error < doctor::DEFAULT_TOL && g.min_cosine > 0.99,
        "{g:?}"
    );
    assert_eq!(s.verdict.mode, GradMode::Adjoint, "{}", s.verdict.reason);
    assert!(s.heun.as_ref().unwrap().chained_max < s.euler.chained_max);

    let relu = diagnose(&fresh(&cifar(true)), &x, &cfg).unwrap();
    assert_eq!(relu.len(), 3, "every stage's unscaled blocks are reported");
    for s in &relu {
        let clipped = s.relu_clipped.unwrap();
        assert_eq!(s.form, Form::PostRelu);
        assert!(clipped.mean > 0.1 && clipped.max < 0.9, "{clipped:?}");
        assert!(s.euler.one_step_max > 0.3, "{}", s.euler.one_step_max);
        assert!(s.euler.gradient.is_none());
        assert_eq!(
            s.verdict.mode,
            GradMode::Checkpoint(1),
            "{}",
            s.verdict.reason
        );
        assert!(s.verdict.reason.contains("not invertible"));
    }
}

/// The authors' bottleneck ResNet (tied, their `IResNetAuto2`): every stage is reported as a
/// depth-scaled stack of its bottlenecks (none were before), with the N the stage's first,
/// downsampling block leaves, and the gradient error measured where N > 1.
#[test]
fn doctor_measures_the_authors_bottleneck_stages() {
    let p = p32();
    let spec = ModelSpec {
        arch: Arch::Authors([2, 3, 5, 2]),
        tied: true,
        planes: 4,
        ..ModelSpec::default()
    };
    let stages = diagnose(&fresh(&spec), &batch(&p), &DoctorConfig::default()).unwrap();
    let n: Vec<usize> = stages.iter().map(|s| s.n).collect();
    assert_eq!(n, [1, 2, 4, 1]);
    for s in &stages {
        assert_eq!(s.form, Form::Scaled);
        assert!(
            s.moves.max > 0.0 && s.moves.max.is_finite(),
            "{:?}",
            s.moves
        );
        let g = s.euler.gradient.expect("adjoint vs backprop measured");
        assert!(g.max_rel_sq_error.is_finite(), "{g:?}");
        if s.n == 1 {
            assert_eq!(s.verdict.mode, GradMode::Backprop, "{}", s.verdict.reason);
        } else {
            assert!(s.tied && s.smoothness == 0.0);
            assert!(s.euler.chained_max > 0.0);
        }
    }
}

#[test]
fn doctor_writes_its_table_markdown_json_and_figure() {
    let p = p32();
    let stages = diagnose(&fresh(&cifar(false)), &batch(&p), &DoctorConfig::default()).unwrap();
    let report = Report {
        model: "fresh cifar-resnet20".into(),
        data: "digits".into(),
        batch: 64,
        bn: BnMode::Cached,
        tol: doctor::DEFAULT_TOL,
        stages,
    };
    let dir = temp_dir("out");
    doctor::write(&report, &dir).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("doctor.json")).unwrap()).unwrap();
    let stages = json["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 3);
    assert!(
        stages[0]["euler"]["gradient"]["max_rel_sq_error"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(stages[0]["verdict"]["reason"]
        .as_str()
        .unwrap()
        .contains("gradient error"));
    for f in ["doctor.md", "doctor.png", "doctor.svg"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let table = doctor::table(&report);
    assert!(
        table.contains("verdict") && table.lines().count() >= 7,
        "{table}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_tolerances_and_policies_name_their_flag() {
    let p = p32();
    let cfg = DoctorConfig {
        tol: 0.0,
        ..DoctorConfig::default()
    };
    let err = diagnose(&fresh(&tied_tiny()), &batch(&p), &cfg).unwrap_err();
    assert!(err.to_string().contains("--tol"), "{err}");
    for bad in ["auto:", "auto:x", "auto:-1", "auto:inf", "autox"] {
        let err = bad.parse::<AutoGrad>().unwrap_err().to_string();
        assert!(err.contains("--grad"), "{bad}: {err}");
    }
    assert_eq!("auto".parse::<AutoGrad>().unwrap().tol, doctor::DEFAULT_TOL);
    assert_eq!("auto:0.5".parse::<AutoGrad>().unwrap().tol, 0.5);
    let auto = |recheck| {
        Some(AutoGrad {
            tol: 1e-2,
            recheck_epochs: recheck,
        })
    };
    let original = TrainConfig {
        auto: auto(None),
        ..config(cifar(true), 1)
    };
    assert!(original.check().unwrap_err().to_string().contains("--grad"));
    let zero = TrainConfig {
        auto: auto(Some(0)),
        ..config(tied_tiny(), 1)
    };
    assert!(zero
        .check()
        .unwrap_err()
        .to_string()
        .contains("--auto-recheck"));
}

/// The same model through the binary: errors name the flag, a good call writes the files.
#[test]
fn the_doctor_command_checks_its_flags() {
    let bin = env!("CARGO_BIN_EXE_resnet-ode");
    let dir = temp_dir("cli");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .arg("doctor")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let out = dir.to_str().unwrap();
    for (args, flag) in [
        (vec!["--out", out], "--model"),
        (
            vec!["--model", "tiny", "--original", "--out", out],
            "--original",
        ),
        (vec!["--model", "cifar-resnet21", "--out", out], "--model"),
        (vec!["--model", "tiny", "--tol", "0", "--out", out], "--tol"),
        (
            vec!["--model", "tiny", "--batch-size", "0", "--out", out],
            "--batch-size",
        ),
        (
            vec!["--model", "tiny", "--data", "nope:x", "--out", out],
            "--data",
        ),
        (vec!["--model", "tiny", "--bn", "odd", "--out", out], "--bn"),
        (
            vec!["--run", "/nonexistent-run", "--out", out],
            "/nonexistent-run",
        ),
        (
            vec!["--run", out, "--model", "tiny", "--out", out],
            "--model",
        ),
    ] {
        let (ok, err) = run(&args);
        assert!(!ok && err.contains(flag), "{args:?}: {err}");
    }
    let (ok, err) = run(&[
        "--model",
        "cifar-resnet20",
        "--original",
        "--batch-size",
        "16",
        "--out",
        out,
    ]);
    assert!(ok, "{err}");
    let md = std::fs::read_to_string(dir.join("doctor.md")).unwrap();
    assert!(
        md.contains("checkpoint:1") && md.contains("not invertible"),
        "{md}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `--grad auto` takes the adjoint for a smooth stack (a zero-initialised tied TinyResNet) and
/// checkpointing for rough ones (a CIFAR ResNet's random N = 2 stacks), records the decision in
/// run.json, trains, and resumes to the numbers of an uninterrupted run.
#[test]
fn grad_auto_picks_per_stack_trains_and_resumes() {
    let p = p32();
    let x = batch(&p);
    let smooth = auto_modes(&fresh(&tied_tiny()), &x, BnMode::Cached, 1e-2).unwrap();
    assert_eq!(smooth.len(), 1);
    assert_eq!(smooth[0].mode, GradMode::Adjoint);
    let rough = auto_modes(&fresh(&cifar(false)), &x, BnMode::Cached, 1e-2).unwrap();
    assert_eq!(rough.len(), 3);
    assert!(
        rough.iter().all(|c| c.mode == GradMode::Checkpoint(1)),
        "{rough:?}"
    );

    let auto = TrainConfig {
        auto: Some("auto".parse().unwrap()),
        limit_train: Some(96),
        limit_test: Some(32),
        ..config(cifar(false), 2)
    };
    let (whole, killed) = (temp_dir("whole"), temp_dir("killed"));
    let a = train_on(digits(), &auto, &p, &quiet(Some(whole.clone()))).unwrap();
    assert_eq!(a.grad_modes, vec![GradMode::Checkpoint(1); 3]);
    assert!(a.history.iter().all(|m| m.train_loss.is_finite()));
    let record: RunRecord = resnet_ode::train::read_json(&whole.join(RUN_FILE)).unwrap();
    assert_eq!(record.grad_decisions.len(), 1);
    assert_eq!(record.grad_decisions[0].modes(), a.grad_modes);
    let first = TrainOptions {
        stop_after: Some(1),
        ..quiet(Some(killed.clone()))
    };
    train_on(digits(), &auto, &p, &first).unwrap();
    let resume = TrainOptions {
        resume: true,
        ..quiet(Some(killed.clone()))
    };
    let b = train_on(digits(), &auto, &p, &resume).unwrap();
    assert_eq!(a.history.len(), b.history.len());
    for (x, y) in a.history.iter().zip(&b.history) {
        assert_eq!((x.train_loss, x.test_acc), (y.train_loss, y.test_acc));
    }
    for dir in [whole, killed] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// With `--auto-recheck 1` a decision is recorded before every epoch.
#[test]
fn grad_auto_rechecks_on_request() {
    let p = p32();
    let auto = TrainConfig {
        auto: Some(AutoGrad {
            tol: 1e-2,
            recheck_epochs: Some(1),
        }),
        ..config(tied_tiny(), 2)
    };
    let dir = temp_dir("recheck");
    let r = train_on(digits(), &auto, &p, &quiet(Some(dir.clone()))).unwrap();
    let record: RunRecord = resnet_ode::train::read_json(&dir.join(RUN_FILE)).unwrap();
    let epochs: Vec<usize> = record.grad_decisions.iter().map(|d| d.epoch).collect();
    assert_eq!(epochs, vec![0, 1]);
    assert_eq!(r.grad_modes, record.grad_decisions[1].modes());
    let _ = std::fs::remove_dir_all(dir);
}

/// Per-stack modes: all stacks in one mode give that mode's gradients bit for bit; an exact
/// mode (checkpointing) in one stack gives backprop's gradients to rounding.
#[test]
fn per_stack_modes_match_a_single_mode() {
    let p = Placement::flex(Precision::F64);
    let data = prepare(digits(), &config(cifar(false), 1)).unwrap();
    let model = cifar(false).init(&p, data.input, &mut Rng::new(5)).unwrap();
    let b = batches(data.train, 16, false, None, &mut Rng::new(0), false)
        .unwrap()
        .next()
        .unwrap();
    let x = DeviceBatch::new(&p, &b, 10);
    let grads = |modes: &[GradMode]| {
        let copy = independent_copy(&model);
        let step = if let [m] = modes {
            step_gradients(&copy, &x, *m, BnMode::Cached)
        } else {
            step_gradients_modes(&copy, &x, modes, BnMode::Cached)
        };
        (step.loss, flat_grads(&copy, &step.grads))
    };
    for m in [
        GradMode::Backprop,
        GradMode::Adjoint,
        GradMode::Checkpoint(1),
    ] {
        assert_eq!(grads(&[m]), grads(&[m, m, m]), "{m}");
    }
    let (_, exact) = grads(&[GradMode::Backprop]);
    let (_, mixed) = grads(&[
        GradMode::Backprop,
        GradMode::Checkpoint(1),
        GradMode::Backprop,
    ]);
    let e = resnet_ode::metrics::gradient_error(&exact, &mixed);
    assert!(e.relative_error < 1e-10, "{e:?}");
    let (_, adjoint_mid) = grads(&[GradMode::Backprop, GradMode::Adjoint, GradMode::Backprop]);
    assert!(resnet_ode::metrics::gradient_error(&exact, &adjoint_mid).relative_error > 1e-6);
}

/// He et al.'s unscaled blocks train with `checkpoint:K` (doctor's recommendation for them):
/// backprop's gradients to rounding, for K = 1 and 2; the adjoint stays refused.
#[test]
fn original_blocks_train_with_checkpointing() {
    let p = Placement::flex(Precision::F64);
    let spec = ModelSpec {
        arch: Arch::CifarResNet(32),
        original: true,
        ..ModelSpec::default()
    };
    let data = prepare(digits(), &config(spec.clone(), 1)).unwrap();
    let model = spec.init(&p, data.input, &mut Rng::new(5)).unwrap();
    assert_eq!(model.segments().len(), 3);
    let b = batches(data.train, 16, false, None, &mut Rng::new(0), false)
        .unwrap()
        .next()
        .unwrap();
    let x = DeviceBatch::new(&p, &b, 10);
    let grads = |mode| {
        let copy = independent_copy(&model);
        let step = step_gradients(&copy, &x, mode, BnMode::Cached);
        flat_grads(&copy, &step.grads)
    };
    let exact = grads(GradMode::Backprop);
    for k in [1, 2] {
        let e = resnet_ode::metrics::gradient_error(&exact, &grads(GradMode::Checkpoint(k)));
        assert!(e.relative_error < 1e-10, "checkpoint:{k}: {e:?}");
    }
    assert!(spec.check(GradMode::Checkpoint(2)).is_ok());
    let err = spec.check(GradMode::Adjoint).unwrap_err().to_string();
    assert!(
        err.contains("--grad") && err.contains("checkpoint:K"),
        "{err}"
    );
    let trained = train_on(
        digits(),
        &TrainConfig {
            grad: GradMode::Checkpoint(2),
            limit_train: Some(64),
            ..config(cifar(true), 1)
        },
        &p32(),
        &quiet(None),
    )
    .unwrap();
    assert!(trained.history[0].train_loss.is_finite());
}
