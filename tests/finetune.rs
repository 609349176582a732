//! `experiment finetune`: untying a tied TinyResNet, or the authors' ResNet with its layer3
//! deepened, is exact; a run started from a given model with `train_stages` changes only those
//! stages; the experiment runs end to end on a tiny configuration of either architecture (and
//! resumes); bad settings and an `--init` model of other images or classes fail naming their
//! flag.

use resnet_ode::data::DataSpec;
use resnet_ode::device::{Placement, Precision};
use resnet_ode::experiments::finetune::{self, Architecture, Config};
use resnet_ode::grad::GradMode;
use resnet_ode::import::export;
use resnet_ode::models::{Arch, InputShape, Model, ModelSpec};
use resnet_ode::params::flat_values;
use resnet_ode::rng::Rng;
use resnet_ode::train::{prepare, score_images, train_on, TrainConfig, TrainOptions};
use std::path::PathBuf;

fn p32() -> Placement {
    Placement::flex(Precision::F32)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resnet-ode-ft-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Seconds-sized settings on a subset of the digits.
fn tiny() -> Config {
    let mut cfg = Config::default();
    cfg.train.data = "digits".into();
    cfg.train.model.planes = 4;
    cfg.train.batch_size = 16;
    cfg.train.limit_train = Some(64);
    cfg.train.limit_test = Some(32);
    Config {
        depth: 2,
        deep_depth: 4,
        eval_depths: vec![1, 2, 4],
        pretrain_epochs: 1,
        finetune_epochs: 1,
        scratch_epochs: 1,
        seeds: vec![0],
        grad_batch: 16,
        ..cfg
    }
}

/// `tiny()` on the authors' bottleneck ResNet (base width 2; layer3 deepened and trained).
fn authors_cfg() -> Config {
    let mut cfg = tiny();
    cfg.arch = Architecture::Authors;
    cfg.train.model.planes = 2;
    cfg.train_stages = vec!["layer3".into()];
    cfg
}

/// The largest logit difference of `a` and `b` on the digits' test set, and the largest logit.
fn logit_difference(a: &Model, b: &Model) -> (f64, f64) {
    let split = DataSpec::Digits.load(0).unwrap();
    let data = prepare(split, &TrainConfig::default()).unwrap();
    let a = score_images(a, &data.test, &p32()).unwrap().logits;
    let b = score_images(b, &data.test, &p32()).unwrap().logits;
    let scale = a.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    (diff, scale)
}

/// A TinyResNet of `depth` drawn from `seed` for the digits.
fn tiny_model(spec: &ModelSpec, seed: u64) -> Model {
    let split = DataSpec::Digits.load(0).unwrap();
    let data = prepare(split, &TrainConfig::default()).unwrap();
    spec.init(&p32(), data.input, &mut Rng::new(seed)).unwrap()
}

#[test]
fn untying_a_tied_tiny_resnet_at_a_deeper_depth_keeps_its_logits() {
    let spec = ModelSpec {
        depth: Some(2),
        tied: true,
        planes: 4,
        ..ModelSpec::default()
    };
    let tied = tiny_model(&spec, 3).piecewise_copy(8).unwrap();
    let untied = tied.untie();
    assert!(tied.is_tied() && !untied.is_tied());
    assert_eq!(untied.stack_depths(), vec![8]);
    let (diff, scale) = logit_difference(&tied, &untied);
    assert!(
        diff <= 1e-5 * scale,
        "untied logits differ by {diff} (scale {scale})"
    );
}

#[test]
fn untying_the_authors_model_deepens_layer3_alone_and_keeps_its_logits() {
    let spec = ModelSpec {
        arch: Arch::Authors([3; 4]),
        tied: true,
        planes: 2,
        ..ModelSpec::default()
    };
    let cfg = Config {
        depth: 2,
        ..authors_cfg()
    };
    let tied = tiny_model(&spec, 4)
        .piecewise_copy_each(&cfg.depths(6))
        .unwrap();
    let untied = tied.untie();
    assert!(tied.is_tied() && !untied.is_tied());
    assert_eq!(untied.stack_depths(), vec![2, 2, 6, 2]);
    let (diff, scale) = logit_difference(&tied, &untied);
    assert!(
        scale > 0.0 && diff <= 1e-5 * scale,
        "untied logits differ by {diff} (scale {scale})"
    );
    // A tied model copied to another depth in one stage is another model: the check can fail.
    let (coarse, _) = logit_difference(&tied, &tied.piecewise_copy_each(&[2, 2, 1, 2]).unwrap());
    assert!(
        coarse > 1e-5 * scale,
        "layer3 at depth 1 gives the same logits"
    );
}

#[test]
fn a_run_from_a_given_model_trains_only_the_chosen_stage() {
    let spec = ModelSpec {
        depth: Some(4),
        planes: 4,
        ..ModelSpec::default()
    };
    let start = tiny_model(&spec, 5);
    let config = TrainConfig {
        model: spec,
        grad: GradMode::Adjoint,
        epochs: 1,
        batch_size: 16,
        limit_train: Some(64),
        limit_test: Some(32),
        train_stages: Some(vec!["layer1".into()]),
        ..TrainConfig::default()
    };
    let options = TrainOptions {
        initial: Some(start.clone()),
        ..TrainOptions::default()
    };
    let split = DataSpec::Digits.load(0).unwrap();
    let trained = train_on(split, &config, &p32(), &options).unwrap().model;
    let (Model::Tiny(a), Model::Tiny(b)) = (&start, &trained) else {
        panic!("TinyResNet expected");
    };
    assert_eq!(flat_values(&a.stem), flat_values(&b.stem), "stem is frozen");
    assert_eq!(flat_values(&a.head), flat_values(&b.head), "head is frozen");
    assert_ne!(
        flat_values(&a.stack),
        flat_values(&b.stack),
        "layer1 trains"
    );
}

#[test]
fn a_given_model_of_another_depth_is_refused() {
    let spec = ModelSpec {
        depth: Some(4),
        planes: 4,
        ..ModelSpec::default()
    };
    let other = tiny_model(
        &ModelSpec {
            depth: Some(2),
            ..spec.clone()
        },
        1,
    );
    let config = TrainConfig {
        model: spec,
        epochs: 1,
        limit_train: Some(32),
        ..TrainConfig::default()
    };
    let options = TrainOptions {
        initial: Some(other),
        ..TrainOptions::default()
    };
    let split = DataSpec::Digits.load(0).unwrap();
    let err = train_on(split, &config, &p32(), &options).err().unwrap();
    assert!(err.to_string().contains("--depth"), "{err}");
}

#[test]
fn the_experiment_runs_end_to_end_writes_its_files_and_resumes() {
    let (cfg, out) = (tiny(), temp_dir("e2e"));
    std::fs::create_dir_all(&out).unwrap();
    let data = finetune::run(&cfg, &p32(), &out, false).unwrap();
    assert!(data.untie_rel_diff <= finetune::UNTIE_TOL);
    assert_eq!(data.depths.len(), 3);
    assert_eq!(data.summary.len(), 4);
    assert_eq!(data.curves.len(), 2);
    let outcome = finetune::write(&data, &cfg, &out).unwrap();
    resnet_ode::experiments::write_outcome(&out, &outcome).unwrap();
    for file in [
        "report.md",
        "report.json",
        "finetune.json",
        "table2.json",
        "accuracy_vs_depth.csv",
        "accuracy_vs_depth.png",
        "accuracy_vs_depth.svg",
        "scratch_loss.svg",
        "scratch_accuracy.png",
        "finetune_accuracy.png",
        "table2.png",
        "table2.svg",
        "finetune_runs.csv",
        "memory.csv",
        "doctor.csv",
        "runs/pretrain-tied/run.json",
        "runs/finetune-adjoint-s0/metrics.jsonl",
        "runs/scratch-backprop/run.json",
    ] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    // From scratch as the paper's ResNet-101 (paper.md §3.3): every function drawn on its
    // own (not piecewise-constant, which starts smooth in depth) and trained at the plain lr.
    let run: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("runs/scratch-adjoint/run.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(run["config"]["adaptive_lr"], false);
    assert_eq!(run["config"]["model"]["base_depth"], cfg.deep_depth);
    // Without the counting allocator (tests) the memory ratios are NaN, written as null.
    let json = std::fs::read_to_string(out.join("report.json")).unwrap();
    let claims: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(claims.len(), 9);
    assert_eq!(
        claims[0]["holds"],
        serde_json::Value::Bool(true),
        "untying is exact"
    );
    // Run again: every training is finished, so it is reloaded, not redone.
    let again = finetune::run(&cfg, &p32(), &out, false).unwrap();
    assert_eq!(again.acc_before, data.acc_before);
    let best = |d: &finetune::Data| {
        d.finetune
            .iter()
            .map(|r| r.best_test_acc)
            .collect::<Vec<_>>()
    };
    assert_eq!(best(&again), best(&data));
    let _ = std::fs::remove_dir_all(&out);
}

/// The error of running `cfg`, which must fail before writing anything into `out`.
fn error_of(cfg: Config, name: &str) -> String {
    let out = temp_dir(name);
    std::fs::create_dir_all(&out).unwrap();
    let err = finetune::run(&cfg, &p32(), &out, false).err().unwrap();
    assert!(!out.join("runs").exists(), "{name}: trained before failing");
    let _ = std::fs::remove_dir_all(&out);
    err.to_string()
}

#[test]
fn bad_settings_fail_before_training_naming_the_flag() {
    let err = "resnet18"
        .parse::<Architecture>()
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--model") && err.contains("authors"), "{err}");
    let unreachable = Config {
        deep_depth: 2,
        ..tiny()
    };
    assert!(error_of(unreachable, "depth").contains("--deep-depth"));
    let stage = Config {
        train_stages: vec!["layer7".into()],
        ..tiny()
    };
    let err = error_of(stage, "stage");
    assert!(
        err.contains("--train-stages") && err.contains("layer7"),
        "{err}"
    );
    let seeds = Config {
        seeds: Vec::new(),
        ..tiny()
    };
    assert!(error_of(seeds, "seeds").contains("--seeds"));
    let empty = temp_dir("empty-images");
    std::fs::create_dir_all(&empty).unwrap();
    let mut no_data = tiny();
    no_data.train.data = format!("images:{}", empty.display());
    let err = error_of(no_data, "data");
    assert!(
        err.contains(&empty.display().to_string()) || err.contains("--data"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&empty);
}

/// A one-epoch TinyResNet run of `tiny()`'s size (tied or not) in a fresh directory.
fn pretrained_run(name: &str, tied: bool) -> PathBuf {
    let dir = temp_dir(name);
    let mut config = tiny().train;
    config.model.depth = Some(2);
    config.model.tied = tied;
    config.grad = GradMode::Backprop;
    let options = TrainOptions {
        out: Some(dir.clone()),
        ..TrainOptions::default()
    };
    let split = DataSpec::Digits.load(0).unwrap();
    train_on(split, &config, &p32(), &options).unwrap();
    dir
}

#[test]
fn init_takes_a_tied_run_and_refuses_others_naming_the_flag() {
    let tied = pretrained_run("init-tied", true);
    let out = temp_dir("init-out");
    std::fs::create_dir_all(&out).unwrap();
    let cfg = Config {
        init: Some(tied.clone()),
        ..tiny()
    };
    let data = finetune::run(&cfg, &p32(), &out, false).unwrap();
    assert!(data.untie_rel_diff <= finetune::UNTIE_TOL);
    assert!(
        !out.join("runs/pretrain-tied").exists(),
        "--init replaces the pre-training"
    );
    let _ = std::fs::remove_dir_all(&out);
    let deeper = Config {
        init: Some(tied.clone()),
        depth: 3,
        ..tiny()
    };
    assert!(error_of(deeper, "init-depth-out").contains("--depth"));
    let untied = pretrained_run("init-untied", false);
    let cfg = Config {
        init: Some(untied.clone()),
        ..tiny()
    };
    let err = error_of(cfg, "init-untied-out");
    assert!(err.contains("--init") && err.contains("untied"), "{err}");
    let _ = std::fs::remove_dir_all(&tied);
    let _ = std::fs::remove_dir_all(&untied);
}

/// A tied run directory trained on an 8×8 grey image folder of `classes` classes.
fn run_on_other_classes(name: &str, classes: u32) -> PathBuf {
    let dir = temp_dir(name);
    let data = dir.join("images");
    for class in 0..classes {
        let sub = data.join(format!("c{class}"));
        std::fs::create_dir_all(&sub).unwrap();
        for k in 0..4u32 {
            let img = image::GrayImage::from_fn(8, 8, |x, y| {
                image::Luma([((x * 31 + y * 17 + k * 13 + class * 101) % 256) as u8])
            });
            img.save(sub.join(format!("{k}.png"))).unwrap();
        }
    }
    let mut config = tiny().train;
    config.data = format!("images:{}", data.display());
    config.model.depth = Some(2);
    config.model.tied = true;
    config.grad = GradMode::Backprop;
    config.limit_test = None;
    let options = TrainOptions {
        out: Some(dir.join("run")),
        ..TrainOptions::default()
    };
    let split: DataSpec = config.data.parse().unwrap();
    train_on(split.load(0).unwrap(), &config, &p32(), &options).unwrap();
    dir
}

#[test]
fn init_of_other_classes_is_refused_before_training() {
    let dir = run_on_other_classes("init-classes", 3);
    let cfg = Config {
        init: Some(dir.join("run")),
        ..tiny()
    };
    let err = error_of(cfg, "init-classes-out");
    assert!(
        err.contains("--init") && err.contains("3 classes") && err.contains("10"),
        "{err}"
    );
    // The authors' tied PyTorch checkpoint, exported for 3 classes, on the digits' 10.
    let spec = ModelSpec {
        arch: Arch::Authors([3; 4]),
        tied: true,
        planes: 2,
        ..ModelSpec::default()
    };
    let input = InputShape {
        channels: 1,
        height: 8,
        width: 8,
        classes: 3,
    };
    let model = spec.init(&p32(), input, &mut Rng::new(1)).unwrap();
    let file = dir.join("tied-3.safetensors");
    export(&model, &spec, &file).unwrap();
    let cfg = Config {
        init: Some(file.clone()),
        ..authors_cfg()
    };
    let err = error_of(cfg, "init-file-classes-out");
    assert!(err.contains("--init") && err.contains("3 classes"), "{err}");
    // TinyResNet has no PyTorch layout: a file is refused for --model tiny.
    let cfg = Config {
        init: Some(file),
        ..tiny()
    };
    let err = error_of(cfg, "init-file-tiny-out");
    assert!(
        err.contains("--init") && err.contains("run directory"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_authors_experiment_fine_tunes_layer3_alone_from_their_checkpoint() {
    let dir = temp_dir("authors-ckpt");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = ModelSpec {
        arch: Arch::Authors([3; 4]),
        tied: true,
        planes: 2,
        ..ModelSpec::default()
    };
    let tied = tiny_model(&spec, 6);
    let file = dir.join("tied.safetensors");
    export(&tied, &spec, &file).unwrap();
    let out = dir.join("out");
    let cfg = Config {
        init: Some(file),
        ..authors_cfg()
    };
    let data = finetune::run(&cfg, &p32(), &out, false).unwrap();
    assert!(data.untie_rel_diff <= finetune::UNTIE_TOL);
    assert!(!out.join("runs/pretrain-tied").exists());
    assert!(
        data.doctor.iter().all(|d| d.depth == 4),
        "doctor measures layer3"
    );
    let depths: Vec<usize> = data.memory.iter().map(|m| m.depth).collect();
    assert!(depths.contains(&4) && depths.contains(&8));
    // Only layer3 moved: the other stages, stem and head are the checkpoint's.
    let (_, _, tuned) =
        resnet_ode::train::load_run(&out.join("runs/finetune-adjoint-s0"), &p32()).unwrap();
    let (Model::Authors(a), Model::Authors(b)) = (&tied, &tuned) else {
        panic!("the authors' model expected");
    };
    assert_eq!(flat_values(&a.stem), flat_values(&b.stem), "stem is frozen");
    assert_eq!(flat_values(&a.head), flat_values(&b.head), "head is frozen");
    for k in [0, 1, 3] {
        let stage = |m: &resnet_ode::models::AuthorsResNet| {
            let s = &m.stages[k];
            (flat_values(&s.first), flat_values(&s.stack.functions[0]))
        };
        assert_eq!(stage(a), stage(b), "layer{} is frozen", k + 1);
    }
    assert_ne!(
        flat_values(&a.stages[2].stack.functions[0]),
        flat_values(&b.stages[2].stack.functions[0]),
        "layer3 trains"
    );
    assert_eq!(b.stages[2].stack.functions.len(), 4, "layer3 untied into 4");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_diverging_fine_tuning_is_recorded_and_the_experiment_goes_on() {
    let out = temp_dir("diverge");
    let cfg = Config {
        finetune_lr: 1e30,
        ..tiny()
    };
    let data = finetune::run(&cfg, &p32(), &out, false).unwrap();
    assert_eq!(
        data.finetune.len(),
        4,
        "every method (untied/tied × adjoint/backprop) has its row"
    );
    assert!(
        data.finetune
            .iter()
            .all(|r| r.diverged.is_some() && r.best_test_acc.is_nan()),
        "{:?}",
        data.finetune
    );
    assert_eq!(data.curves.len(), 2, "the scratch runs still ran");
    let _ = std::fs::remove_dir_all(&out);
}
