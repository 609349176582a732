//! Models, trainer and run directories: shapes, untying, adjoint vs backprop gradients on a
//! trained TinyResNet, exact resume, seeded determinism and the errors a user can meet.

use burn::tensor::Tensor;
use resnet_ode::data::{batches, DataSpec, Split};
use resnet_ode::device::{to_vec, Placement, Precision};
use resnet_ode::family::Family;
use resnet_ode::grad::GradMode;
use resnet_ode::models::{Arch, InputShape, Model, ModelSpec};
use resnet_ode::norm::BnMode;
use resnet_ode::params::{flat_grads, independent_copy};
use resnet_ode::residual::ConvBlockConfig;
use resnet_ode::rng::Rng;
use resnet_ode::scheme::Scheme;
use resnet_ode::stack::Stack;
use resnet_ode::train::{
    eval_run, load_run, lr_scales, prepare, step_gradients, train_on, DeviceBatch, EpochMetrics,
    Optimizer, OptimizerConfig, TrainConfig, TrainOptions, TrainState, STATE_FILE,
};
use std::path::PathBuf;

fn p32() -> Placement {
    Placement::flex(Precision::F32)
}

fn digits() -> Split {
    DataSpec::Digits.load(0).expect("built-in digits")
}

fn images(p: &Placement, shape: [usize; 4], seed: u64) -> Tensor<4> {
    p.tensor(Rng::new(seed).normals(shape.iter().product()), shape)
}

fn input(channels: usize, size: usize) -> InputShape {
    InputShape {
        channels,
        height: size,
        width: size,
        classes: 10,
    }
}

fn model(spec: &ModelSpec, shape: InputShape, seed: u64) -> Model {
    spec.init(&p32(), shape, &mut Rng::new(seed)).unwrap()
}

/// A small, fast configuration on a subset of the digits.
fn small(depth: usize) -> TrainConfig {
    TrainConfig {
        model: ModelSpec {
            depth: Some(depth),
            planes: 8,
            ..ModelSpec::default()
        },
        epochs: 2,
        batch_size: 32,
        limit_train: Some(256),
        limit_test: Some(120),
        ..TrainConfig::default()
    }
}

fn quiet(out: Option<PathBuf>) -> TrainOptions {
    TrainOptions {
        out,
        ..TrainOptions::default()
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resnet-ode-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn max_abs_diff(a: &Tensor<2>, b: &Tensor<2>) -> f64 {
    let (a, b) = (to_vec(a), to_vec(b));
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn models_have_the_documented_shapes() {
    let p = p32();
    let cases = [
        (ModelSpec::default(), input(1, 8), 8),
        (ModelSpec::default(), input(1, 28), 8),
        (
            ModelSpec {
                scheme: Scheme::Heun,
                tied: true,
                ..ModelSpec::default()
            },
            input(3, 32),
            8,
        ),
        (
            ModelSpec {
                arch: Arch::CifarResNet(20),
                ..ModelSpec::default()
            },
            input(3, 32),
            2,
        ),
    ];
    for (spec, shape, depth) in cases {
        let m = model(&spec, shape, 1);
        let x = images(&p, [3, shape.channels, shape.height, shape.width], 2);
        let (logits, runs) = m.forward_train(x.clone(), GradMode::Adjoint, BnMode::Cached);
        assert_eq!(logits.dims(), [3, 10], "{spec:?}");
        assert_eq!(m.forward_eval(x).dims(), [3, 10]);
        assert_eq!(runs.len(), m.stacks().len());
        assert!(m.stacks().iter().all(|s| s.depth == depth), "{spec:?}");
    }
    // The paper's stem: 32×32 → 10×10, avg_pool2d(4) → 2×2, Linear(4P, 10).
    let Model::Tiny(t) = model(&ModelSpec::default(), input(3, 32), 1) else {
        unreachable!()
    };
    assert_eq!(t.stem.conv.out_size(32), 10);
    assert_eq!(t.head.weight.dims(), [4 * 16, 10]);
    let original = ModelSpec {
        arch: Arch::CifarResNet(20),
        original: true,
        ..ModelSpec::default()
    };
    let m = model(&original, input(3, 32), 1);
    assert!(m.stacks().is_empty());
    let (logits, _) = m.forward_train(
        images(&p, [2, 3, 32, 32], 3),
        GradMode::Backprop,
        BnMode::Cached,
    );
    assert_eq!(logits.dims(), [2, 10]);
    assert!(original
        .check(GradMode::Adjoint)
        .unwrap_err()
        .to_string()
        .contains("--grad"));
    assert!("cifar-resnet21"
        .parse::<Arch>()
        .unwrap_err()
        .to_string()
        .contains("--model"));
    let wrong_depth = ModelSpec {
        arch: Arch::CifarResNet(20),
        depth: Some(5),
        ..ModelSpec::default()
    };
    assert!(wrong_depth
        .stack_depth()
        .unwrap_err()
        .to_string()
        .contains("--depth"));
}

#[test]
fn untying_keeps_the_outputs_and_gives_independent_functions() {
    let p = p32();
    let spec = ModelSpec {
        arch: Arch::CifarResNet(32),
        tied: true,
        ..ModelSpec::default()
    };
    let tied = model(&spec, input(3, 16), 4);
    let untied = tied.untie();
    assert!(tied.is_tied() && !untied.is_tied());
    assert!(untied.stacks().iter().all(|s| s.functions.len() == 4));
    let x = images(&p, [4, 3, 16, 16], 5);
    let diff = max_abs_diff(
        &tied.forward_eval(x.clone()),
        &untied.forward_eval(x.clone()),
    );
    assert!(diff < 1e-5, "untied output differs by {diff}");
    // A tied model runs at any depth; an untied one only at its own.
    let deeper = independent_copy(&tied).with_depth(12).unwrap();
    assert!(deeper.stacks().iter().all(|s| s.depth == 12));
    assert_eq!(deeper.forward_eval(x).dims(), [4, 10]);
    assert!(untied
        .with_depth(12)
        .unwrap_err()
        .to_string()
        .contains("--depth"));
}

/// Per-parameter gradients of one step in `mode` on a copy of `model`.
fn grads_in(model: &Model, batch: &DeviceBatch, mode: GradMode) -> Vec<(String, Vec<f64>)> {
    let copy = independent_copy(model);
    let step = step_gradients(&copy, batch, mode, BnMode::Cached);
    flat_grads(&copy, &step.grads)
}

fn stack_only(g: &[(String, Vec<f64>)]) -> Vec<(String, Vec<f64>)> {
    g.iter()
        .filter(|(n, _)| n.contains("functions"))
        .cloned()
        .collect()
}

fn cosine(a: &[(String, Vec<f64>)], b: &[(String, Vec<f64>)]) -> f64 {
    let flat = |g: &[(String, Vec<f64>)]| g.iter().flat_map(|(_, v)| v.clone()).collect::<Vec<_>>();
    let (a, b) = (flat(a), flat(b));
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(u, v)| u * v).sum::<f64>();
    dot(&a, &b) / (dot(&a, &a) * dot(&b, &b)).sqrt()
}

/// TinyResNet with residual functions that are not zero (no zero-init, piecewise-constant
/// in depth as the paper's initialisation), so the adjoint's reconstruction has work to do.
fn active_tiny(depth: usize, scheme: Scheme) -> Model {
    let p = p32();
    let spec = ModelSpec {
        depth: Some(depth),
        planes: 8,
        scheme,
        ..ModelSpec::default()
    };
    let Model::Tiny(mut t) = model(&spec, input(1, 8), 6) else {
        unreachable!("a tiny spec builds a TinyResNet")
    };
    let block = ConvBlockConfig {
        channels: 8,
        zero_init: false,
    };
    let functions = Family::Piecewise(8).functions(depth, &mut Rng::new(7), |r| block.init(&p, r));
    t.stack = Stack::new(functions, scheme).unwrap();
    Model::Tiny(t)
}

#[test]
fn adjoint_gradients_match_backprop_on_tiny_resnet() {
    let p = p32();
    let data = prepare(digits(), &small(16)).unwrap();
    let batch = batches(data.train, 64, false, None, &mut Rng::new(0), false)
        .unwrap()
        .next()
        .unwrap();
    let batch = DeviceBatch::new(&p, &batch, 10);
    for scheme in [Scheme::Euler, Scheme::Heun] {
        let m = active_tiny(16, scheme);
        let backprop = grads_in(&m, &batch, GradMode::Backprop);
        for mode in [
            GradMode::Adjoint,
            GradMode::AdjointPerStep,
            GradMode::Checkpoint(4),
        ] {
            let approx = grads_in(&m, &batch, mode);
            let c = cosine(&stack_only(&backprop), &stack_only(&approx));
            let e = resnet_ode::metrics::gradient_error(&backprop, &approx);
            assert!(
                c > 0.99 && e.relative_error < 0.1,
                "{scheme} {mode}: cosine {c}, {e:?}"
            );
        }
    }
}

/// The parameter values of `m`, flattened per tensor, with their names.
fn values(m: &Model) -> Vec<(String, Vec<f64>)> {
    let names = resnet_ode::params::named(m).into_iter().map(|p| p.name);
    names.zip(flat_values(m)).collect()
}

fn flat_values(m: &Model) -> Vec<Vec<f64>> {
    use burn::module::{Module, ModuleVisitor, Param};
    struct Values(Vec<Vec<f64>>);
    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if p.is_require_grad() {
                self.0.push(to_vec(&p.val().flatten::<1>(0, D - 1)));
            }
        }
    }
    let mut v = Values(Vec::new());
    m.visit(&mut v);
    v.0
}

#[test]
fn adaptive_lr_moves_each_stack_function_n_times_further() {
    let depth = 4;
    let p = p32();
    let data = prepare(digits(), &small(depth)).unwrap();
    let batch = batches(data.train, 32, false, None, &mut Rng::new(0), false)
        .unwrap()
        .next()
        .unwrap();
    let batch = DeviceBatch::new(&p, &batch, 10);
    let m = active_tiny(depth, Scheme::Euler);
    let before = values(&m);
    // Plain gradient descent, so a parameter's move is exactly its rate times its gradient.
    let plain = OptimizerConfig {
        momentum: 0.0,
        weight_decay: 0.0,
        ..OptimizerConfig::default()
    };
    let moved = |adaptive: bool| {
        let copy = independent_copy(&m);
        let step = step_gradients(&copy, &batch, GradMode::Backprop, BnMode::Cached);
        let scales = lr_scales(&copy, adaptive);
        let after = Optimizer::new(plain.clone()).step_scaled(copy, step.grads, 0.01, &scales);
        values(&after)
            .into_iter()
            .zip(&before)
            .map(|((n, a), (_, b))| (n, a.iter().zip(b).map(|(x, y)| x - y).collect()))
            .collect::<Vec<(String, Vec<f64>)>>()
    };
    let (fixed, adaptive) = (moved(false), moved(true));
    let mut stack_tensors = 0;
    for ((name, f), (_, a)) in fixed.iter().zip(&adaptive) {
        let ratio = if name.contains("functions") {
            stack_tensors += 1;
            depth as f64
        } else {
            1.0
        };
        for (x, y) in f.iter().zip(a) {
            assert!(
                (y - ratio * x).abs() <= 1e-5 * (1.0 + y.abs()),
                "{name}: {y} vs {ratio}×{x}"
            );
        }
    }
    assert!(stack_tensors > 0, "the stack's parameters were compared");
}

fn scores(h: &[EpochMetrics]) -> Vec<[f64; 4]> {
    h.iter()
        .map(|m| [m.train_loss, m.train_acc, m.test_loss, m.test_acc])
        .collect()
}

#[test]
fn resume_equals_an_uninterrupted_run_and_seeds_fix_the_numbers() {
    let p = p32();
    let config = small(4);
    let (whole, killed) = (temp_dir("whole"), temp_dir("killed"));
    let a = train_on(digits(), &config, &p, &quiet(Some(whole.clone()))).unwrap();
    let first = TrainOptions {
        stop_after: Some(1),
        ..quiet(Some(killed.clone()))
    };
    assert_eq!(
        train_on(digits(), &config, &p, &first)
            .unwrap()
            .history
            .len(),
        1
    );
    let again = train_on(digits(), &config, &p, &quiet(Some(killed.clone())));
    assert!(
        again.err().unwrap().to_string().contains("--resume"),
        "an existing run is not overwritten"
    );
    let resume = TrainOptions {
        resume: true,
        ..quiet(Some(killed.clone()))
    };
    let b = train_on(digits(), &config, &p, &resume).unwrap();
    assert_eq!(scores(&a.history), scores(&b.history));
    assert!(a.history[1].train_loss < a.history[0].train_loss * 1.5);
    let lines = std::fs::read_to_string(killed.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2);
    assert!(lines.contains("activation_peak_bytes") && lines.contains("images_per_sec"));

    let c = train_on(digits(), &config, &p, &quiet(None)).unwrap();
    assert_eq!(
        scores(&a.history),
        scores(&c.history),
        "same seed, same numbers"
    );
    let other = TrainConfig {
        seed: 1,
        ..config.clone()
    };
    let d = train_on(digits(), &other, &p, &quiet(None)).unwrap();
    assert_ne!(scores(&a.history), scores(&d.history));

    let changed = TrainConfig { lr: 0.05, ..config };
    let err = train_on(digits(), &changed, &p, &resume)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("run.json") && err.contains("lr"), "{err}");
    for dir in [whole, killed] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn bad_checkpoints_are_errors_naming_the_file() {
    let p = p32();
    let (run, other) = (temp_dir("bad"), temp_dir("other"));
    let config = TrainConfig {
        epochs: 1,
        ..small(2)
    };
    train_on(digits(), &config, &p, &quiet(Some(run.clone()))).unwrap();
    let deeper = TrainConfig {
        epochs: 1,
        ..small(3)
    };
    train_on(digits(), &deeper, &p, &quiet(Some(other.clone()))).unwrap();
    let state: TrainState = resnet_ode::train::read_json(&run.join(STATE_FILE)).unwrap();
    let weights = run.join(&state.weights);

    // A checkpoint of another model.
    let other_state: TrainState = resnet_ode::train::read_json(&other.join(STATE_FILE)).unwrap();
    std::fs::copy(other.join(&other_state.weights), &weights).unwrap();
    let err = load_run(&run, &p).err().unwrap().to_string();
    assert!(
        err.contains(&weights.display().to_string()) && err.contains("match"),
        "{err}"
    );

    // A corrupt one.
    std::fs::write(&weights, b"not safetensors").unwrap();
    let err = eval_run(&run, None, &p).err().unwrap().to_string();
    assert!(err.contains(&weights.display().to_string()), "{err}");
    std::fs::write(run.join(STATE_FILE), b"{").unwrap();
    let resume = TrainOptions {
        resume: true,
        ..quiet(Some(run.clone()))
    };
    let err = train_on(digits(), &config, &p, &resume)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains(STATE_FILE), "{err}");
    for dir in [run, other] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn a_non_finite_loss_stops_naming_the_step() {
    let config = TrainConfig {
        epochs: 1,
        lr: 1e12,
        ..small(2)
    };
    let err = train_on(digits(), &config, &p32(), &quiet(None))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("non-finite") && err.contains("step"), "{err}");
}

#[test]
fn a_tied_run_evaluates_at_other_depths() {
    let p = p32();
    let run = temp_dir("tied");
    let mut config = TrainConfig {
        epochs: 1,
        ..small(4)
    };
    config.model.tied = true;
    config.model.scheme = Scheme::Heun;
    config.optimizer.kind = resnet_ode::train::OptimizerKind::AdamW;
    config.lr = 0.01;
    let trained = train_on(digits(), &config, &p, &quiet(Some(run.clone()))).unwrap();
    let same = eval_run(&run, None, &p).unwrap();
    assert_eq!(same.test_acc, trained.history[0].test_acc);
    let deep = eval_run(&run, Some(16), &p).unwrap();
    assert_eq!(
        (deep.depth, deep.trained_depth, deep.examples),
        (16, 4, 120)
    );
    assert!(deep.test_acc > 0.1, "{deep:?}");
    let _ = std::fs::remove_dir_all(run);
}
