//! PyTorch checkpoint import and export: the shared pretrained ResNet-20 (skipped with a message
//! when `../shared` is absent), export → import round trips of seeded random models of each
//! layout, and the strictness errors (missing, unexpected, mis-shaped, non-finite, corrupt).

use resnet_ode::data::{load_image_folder_eval, Dataset, Normalization};
use resnet_ode::device::{Placement, Precision};
use resnet_ode::import::{export, write_safetensors, Checkpoint, ImportOptions};
use resnet_ode::models::{Arch, InputShape, Model, ModelSpec};
use resnet_ode::rng::Rng;
use resnet_ode::train::score_images;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// A state dict to edit: (key, shape, row-major values).
type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

const PRETRAINED: &str = "../shared/data/pretrained";
const STEM: &str = "resnet20-12fca82f";

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("resnet-ode-import-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn placement(precision: Precision) -> Placement {
    Placement::flex(precision)
}

fn he20() -> ModelSpec {
    ModelSpec {
        arch: Arch::CifarResNet(20),
        original: true,
        ..ModelSpec::default()
    }
}

fn shape(classes: usize) -> InputShape {
    InputShape {
        channels: 3,
        height: 32,
        width: 32,
        classes,
    }
}

/// The shared folder, or None after printing why the test is skipped.
fn shared() -> Option<PathBuf> {
    let dir = PathBuf::from(PRETRAINED);
    if dir.join(format!("{STEM}.th")).exists() {
        Some(dir)
    } else {
        eprintln!("skipped: {PRETRAINED} is absent (the shared pretrained ResNet-20)");
        None
    }
}

/// The 20 PNGs in one sub-folder per label (`cifar10_<index>_<label>.png`).
fn image_folder(shared: &Path, into: &Path) {
    for entry in std::fs::read_dir(shared).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".png") else {
            continue;
        };
        let label = stem.rsplit('_').next().unwrap();
        std::fs::create_dir_all(into.join(label)).unwrap();
        std::fs::copy(&path, into.join(label).join(&name)).unwrap();
    }
}

/// The reference logits in the loader's order (by label, then file name).
fn reference_logits(shared: &Path) -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(shared.join("resnet20_cifar10_test20.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut images: Vec<(u64, String, Vec<f64>)> = json["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let logits = i["logits"].as_array().unwrap();
            (
                i["label"].as_u64().unwrap(),
                i["file"].as_str().unwrap().to_string(),
                logits.iter().map(|v| v.as_f64().unwrap()).collect(),
            )
        })
        .collect();
    images.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    images.into_iter().map(|i| i.2).collect()
}

fn images(dir: &Path) -> Arc<Dataset> {
    let mut ds = load_image_folder_eval(dir).unwrap();
    Normalization::preset("imagenet", 3)
        .unwrap()
        .apply(&mut ds)
        .unwrap();
    Arc::new(ds)
}

fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(u, v)| (u - v).abs()))
        .fold(0.0, f64::max)
}

#[test]
fn shared_resnet20_scores_20_of_20_in_every_format_and_dtype() {
    let Some(shared) = shared() else { return };
    let dir = TempDir::new("shared");
    image_folder(&shared, &dir.0);
    let data = images(&dir.0);
    let reference = reference_logits(&shared);
    for (ext, precision) in [
        ("th", Precision::F32),
        ("pth", Precision::F32),
        ("safetensors", Precision::F32),
        ("th", Precision::F64),
    ] {
        let p = placement(precision);
        let ck = Checkpoint::open(&shared.join(format!("{STEM}.{ext}"))).unwrap();
        assert_eq!(ck.input(&he20(), 32, 32).unwrap(), shape(10));
        let imported = ck
            .load(&he20(), shape(10), &p, &ImportOptions::default())
            .unwrap();
        assert_eq!(imported.loaded, 97);
        let scores = score_images(&imported.model, &data, &p).unwrap();
        assert_eq!(scores.correct, 20, "{ext} {precision:?}");
        let diff = max_diff(&scores.logits, &reference);
        assert!(diff < 1e-4, "{ext} {precision:?}: max |Δlogit| {diff}");
    }
}

#[test]
fn cli_eval_init_prints_20_of_20() {
    let Some(shared) = shared() else { return };
    let dir = TempDir::new("cli");
    image_folder(&shared, &dir.0);
    let th = shared.join(format!("{STEM}.th"));
    let out = Command::new(env!("CARGO_BIN_EXE_resnet-ode"))
        .args(["eval", "--init", th.to_str().unwrap()])
        .args(["--model", "cifar-resnet20", "--original", "--data"])
        .arg(format!("images:{}", dir.0.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("accuracy 100.00% (20/20)"), "{stdout}");

    // export converts it, and the export scores the same.
    let exported = dir.0.join("r20.safetensors");
    let out = Command::new(env!("CARGO_BIN_EXE_resnet-ode"))
        .args(["export", "--init", th.to_str().unwrap()])
        .args(["--model", "cifar-resnet20", "--original", "--out"])
        .arg(&exported)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_resnet-ode"))
        .args(["eval", "--init", exported.to_str().unwrap()])
        .args(["--model", "cifar-resnet20", "--original", "--data"])
        .arg(format!("images:{}", dir.0.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("97 tensors): accuracy 100.00% (20/20)"),
        "{stdout}"
    );
}

/// doctor on the shared pretrained ResNet-20 (He et al.'s post-addition ReLUs): every stage is
/// reported not invertible and checkpointing is recommended, with the clipping measured.
#[test]
fn doctor_recommends_checkpointing_for_the_shared_resnet20() {
    let Some(shared) = shared() else { return };
    let dir = TempDir::new("doctor");
    image_folder(&shared, &dir.0.join("images"));
    let th = shared.join(format!("{STEM}.th"));
    let out_dir = dir.0.join("report");
    let out = Command::new(env!("CARGO_BIN_EXE_resnet-ode"))
        .args(["doctor", "--init", th.to_str().unwrap()])
        .args([
            "--model",
            "cifar-resnet20",
            "--original",
            "--batch-size",
            "20",
        ])
        .arg("--data")
        .arg(format!("images:{}", dir.0.join("images").display()))
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("doctor.json")).unwrap())
            .unwrap();
    let text = report.to_string();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.matches("checkpoint:").count() >= 3, "{stdout}");
    assert!(stdout.contains("not invertible"), "{stdout}");
    assert!(text.contains("checkpoint"), "{text}");
}

/// A seeded random model whose batch norms have non-trivial running statistics (one
/// training-mode forward on random images), so a round trip checks them too.
fn random_model(spec: &ModelSpec, input: InputShape, p: &Placement) -> Model {
    let model = spec.init(p, input, &mut Rng::new(7)).unwrap();
    let n = 2 * input.channels * input.height * input.width;
    let x = p.tensor(
        Rng::new(8).normals(n),
        [2, input.channels, input.height, input.width],
    );
    let _ = model.forward_train(x, resnet_ode::grad::GradMode::Backprop, Default::default());
    model
}

fn random_images(input: InputShape, p: &Placement) -> burn::tensor::Tensor<4> {
    let n = 2 * input.channels * input.height * input.width;
    p.tensor(
        Rng::new(9).normals(n),
        [2, input.channels, input.height, input.width],
    )
}

fn logits(model: &Model, x: burn::tensor::Tensor<4>) -> Vec<f64> {
    resnet_ode::device::to_vec(&model.forward_eval(x))
}

/// Export → import gives the same logits, and the file holds `keys` tensors.
fn round_trip(spec: &ModelSpec, input: InputShape, precision: Precision, keys: usize) {
    let p = placement(precision);
    let model = random_model(spec, input, &p);
    let dir = TempDir::new(&format!("rt-{}-{precision:?}", spec.arch));
    let path = dir.0.join("model.safetensors");
    assert_eq!(export(&model, spec, &path).unwrap(), keys);
    let ck = Checkpoint::open(&path).unwrap();
    assert_eq!(ck.input(spec, input.height, input.width).unwrap(), input);
    let back = ck.load(spec, input, &p, &ImportOptions::default()).unwrap();
    let x = random_images(input, &p);
    let (a, b) = (logits(&model, x.clone()), logits(&back.model, x));
    let scale = a.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0.0f64, |m, (u, v)| m.max((u - v).abs()));
    // The export is F32: exact in f32, within f32 rounding in f64.
    assert!(
        diff <= 1e-5 * scale,
        "{}: max |Δ| {diff} of {scale}",
        spec.arch
    );
}

#[test]
fn he_resnet_round_trips_in_f32_and_f64() {
    round_trip(&he20(), shape(10), Precision::F32, 97);
    round_trip(&he20(), shape(10), Precision::F64, 97);
}

fn torchvision(layers: usize) -> ModelSpec {
    ModelSpec {
        arch: Arch::Torchvision(layers),
        ..ModelSpec::default()
    }
}

#[test]
fn torchvision_resnets_round_trip_with_torchvision_names() {
    // torchvision's state dicts without the num_batches_tracked counters: 102 and 267 tensors.
    round_trip(&torchvision(18), shape(7), Precision::F32, 102);
    round_trip(&torchvision(50), shape(3), Precision::F32, 267);
    let p = placement(Precision::F32);
    let model = torchvision(18)
        .init(&p, shape(7), &mut Rng::new(1))
        .unwrap();
    let dir = TempDir::new("tv-names");
    let path = dir.0.join("r18.safetensors");
    export(&model, &torchvision(18), &path).unwrap();
    let ck = Checkpoint::open(&path).unwrap();
    for (key, dims) in [
        ("conv1.weight", vec![64, 3, 7, 7]),
        ("bn1.running_var", vec![64]),
        ("layer1.1.conv2.weight", vec![64, 64, 3, 3]),
        ("layer2.0.downsample.0.weight", vec![128, 64, 1, 1]),
        ("layer4.0.downsample.1.bias", vec![512]),
        ("fc.weight", vec![7, 512]),
        ("fc.bias", vec![7]),
    ] {
        let t = ck.tensors.get(key).unwrap_or_else(|| panic!("no {key}"));
        assert_eq!(t.shape().as_slice(), dims.as_slice(), "{key}");
    }
    assert!(!ck.tensors.contains_key("layer1.0.downsample.0.weight"));
}

/// The He et al. ResNet-20 of a seeded random model, as (key, shape, values) to edit.
fn he_tensors(dir: &Path) -> Tensors {
    let p = placement(Precision::F32);
    let model = random_model(&he20(), shape(10), &p);
    let path = dir.join("base.safetensors");
    export(&model, &he20(), &path).unwrap();
    Checkpoint::open(&path)
        .unwrap()
        .tensors
        .into_iter()
        .map(|(k, t)| {
            let dims = t.shape().as_slice().to_vec();
            (k, dims, t.convert::<f32>().try_to_vec::<f32>().unwrap())
        })
        .collect()
}

/// Writes `tensors` and imports them as a ResNet-20 (strict unless `partial`).
fn import_edited(
    dir: &Path,
    name: &str,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    partial: bool,
) -> resnet_ode::Result<resnet_ode::import::Imported> {
    let path = dir.join(name);
    write_safetensors(&path, tensors).unwrap();
    Checkpoint::open(&path)?.load(
        &he20(),
        shape(10),
        &placement(Precision::F32),
        &ImportOptions { partial },
    )
}

#[test]
fn every_mismatch_is_an_error_naming_the_key_and_shapes() {
    let dir = TempDir::new("strict");
    let base = he_tensors(&dir.0);
    let edit = |f: &dyn Fn(&mut Tensors)| {
        let mut t = base.clone();
        f(&mut t);
        t
    };
    let err = |name: &str, t: &[(String, Vec<usize>, Vec<f32>)]| {
        import_edited(&dir.0, name, t, false)
            .unwrap_err()
            .to_string()
    };

    let missing = edit(&|t| t.retain(|(k, _, _)| k != "layer2.1.conv1.weight"));
    let e = err("missing.safetensors", &missing);
    assert!(
        e.contains("missing.safetensors") && e.contains("1 missing"),
        "{e}"
    );
    assert!(
        e.contains("missing layer2.1.conv1.weight [32, 32, 3, 3]"),
        "{e}"
    );

    let extra = edit(&|t| t.push(("layer3.3.conv1.weight".into(), vec![2], vec![0.0; 2])));
    let e = err("extra.safetensors", &extra);
    assert!(e.contains("unexpected layer3.3.conv1.weight [2]"), "{e}");

    let misshaped = edit(&|t| {
        let fc = t.iter_mut().find(|(k, _, _)| k == "linear.weight").unwrap();
        *fc = (fc.0.clone(), vec![5, 128], vec![0.0; 640]);
    });
    let e = err("shape.safetensors", &misshaped);
    assert!(
        e.contains("mis-shaped linear.weight: expected [10, 64], found [5, 128]"),
        "{e}"
    );

    let nan = edit(&|t| {
        let bn = t
            .iter_mut()
            .find(|(k, _, _)| k == "bn1.running_var")
            .unwrap();
        bn.2[3] = f32::NAN;
    });
    let e = err("nan.safetensors", &nan);
    assert!(e.contains("`bn1.running_var` holds NaN"), "{e}");

    // --partial loads the rest and lists what it skipped.
    let both = edit(&|t| {
        t.retain(|(k, _, _)| k != "layer2.1.conv1.weight");
        t.push(("extra".into(), vec![1], vec![0.0]));
    });
    let imported = import_edited(&dir.0, "partial.safetensors", &both, true).unwrap();
    assert_eq!(imported.loaded, 96);
    assert_eq!(
        imported.skipped,
        [
            "missing layer2.1.conv1.weight [32, 32, 3, 3]",
            "unexpected extra [1]"
        ]
    );
}

#[test]
fn wrapped_and_prefixed_keys_load() {
    let dir = TempDir::new("wrapped");
    let wrapped: Vec<_> = he_tensors(&dir.0)
        .into_iter()
        .map(|(k, s, v)| (format!("net.module.{k}"), s, v))
        .collect();
    let imported = import_edited(&dir.0, "wrapped.safetensors", &wrapped, false).unwrap();
    assert_eq!(imported.loaded, 97);
}

#[test]
fn corrupt_files_and_wrong_forms_are_clear_errors() {
    let dir = TempDir::new("corrupt");
    let junk = dir.0.join("junk.pth");
    std::fs::write(&junk, b"certainly not a checkpoint").unwrap();
    let e = Checkpoint::open(&junk).err().unwrap().to_string();
    assert!(
        e.contains("junk.pth") && e.contains("not a readable"),
        "{e}"
    );

    // A pickle whose root is a call of `os.system`, not a dict of tensors.
    let evil = dir.0.join("evil.pth");
    std::fs::write(
        &evil,
        b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.",
    )
    .unwrap();
    let e = Checkpoint::open(&evil).err().unwrap().to_string();
    assert!(e.contains("evil.pth") && e.contains("os.system"), "{e}");

    let base = he_tensors(&dir.0);
    let path = dir.0.join("whole.safetensors");
    write_safetensors(&path, &base).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.0.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = Checkpoint::open(&cut).err().unwrap().to_string();
    assert!(
        e.contains("cut.safetensors") && e.contains("not a readable"),
        "{e}"
    );

    if let Some(shared) = shared() {
        let th = std::fs::read(shared.join(format!("{STEM}.th"))).unwrap();
        let cut = dir.0.join("cut.th");
        std::fs::write(&cut, &th[..th.len() / 3]).unwrap();
        let e = Checkpoint::open(&cut).err().unwrap().to_string();
        assert!(e.contains("cut.th"), "{e}");
    }

    let scaled = ModelSpec {
        original: false,
        ..he20()
    };
    let e = Checkpoint::open(&path)
        .unwrap()
        .load(
            &scaled,
            shape(10),
            &placement(Precision::F32),
            &ImportOptions::default(),
        )
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--original"), "{e}");
}

#[test]
fn fine_tuning_trains_only_the_chosen_stages() {
    use resnet_ode::data::Split;
    use resnet_ode::grad::GradMode;
    use resnet_ode::train::{train_on, Pretrained, TrainConfig, TrainOptions};
    let dir = TempDir::new("finetune");
    let p = placement(Precision::F32);
    let start = dir.0.join("start.safetensors");
    export(&random_model(&he20(), shape(10), &p), &he20(), &start).unwrap();
    let dataset = |n: usize, seed: u64| Dataset {
        images: Rng::new(seed)
            .normals(n * 3 * 32 * 32)
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        labels: (0..n).map(|i| i % 10).collect(),
        channels: 3,
        height: 32,
        width: 32,
        classes: 10,
        name: "random".into(),
    };
    let config = TrainConfig {
        model: he20(),
        grad: GradMode::Backprop,
        epochs: 1,
        batch_size: 8,
        pretrained: Some(Pretrained {
            path: start.clone(),
            partial: false,
            normalize: "none".into(),
            untie: false,
        }),
        train_stages: Some(vec!["layer3".into(), "head".into()]),
        ..TrainConfig::default()
    };
    let split = Split {
        train: dataset(16, 1),
        test: dataset(8, 2),
    };
    let result = train_on(split, &config, &p, &TrainOptions::default()).unwrap();
    let end = dir.0.join("end.safetensors");
    export(&result.model, &he20(), &end).unwrap();
    let (a, b) = (
        Checkpoint::open(&start).unwrap(),
        Checkpoint::open(&end).unwrap(),
    );
    for (key, before) in &a.tensors {
        if key.contains("running_") {
            continue; // batch statistics update in every stage's forward
        }
        let trains = key.starts_with("layer3.") || key.starts_with("linear.");
        assert_eq!(&b.tensors[key] != before, trains, "{key}");
    }
}

fn authors(layers: [usize; 4], planes: usize, tied: bool) -> ModelSpec {
    ModelSpec {
        arch: Arch::Authors(layers),
        planes,
        tied,
        ..ModelSpec::default()
    }
}

#[test]
fn authors_models_round_trip_with_their_names() {
    // IResNetAuto2(10, [4,4,32,4]) at the paper's width: 176 entries, 29 of them counters.
    let tied = authors([4, 4, 32, 4], 64, true);
    round_trip(&tied, shape(10), Precision::F32, 147);
    let p = placement(Precision::F32);
    let dir = TempDir::new("authors-names");
    let path = dir.0.join("tied.safetensors");
    export(
        &tied.init(&p, shape(10), &mut Rng::new(1)).unwrap(),
        &tied,
        &path,
    )
    .unwrap();
    let ck = Checkpoint::open(&path).unwrap();
    for (key, dims) in [
        ("conv1.weight", vec![64, 3, 3, 3]),
        ("layer1.0.downsample.0.weight", vec![256, 64, 1, 1]),
        ("layer3.0.conv1.weight", vec![256, 512, 1, 1]),
        ("layer3.1.1.conv1.weight", vec![256, 1024, 1, 1]),
        ("layer3.1.1.bn3.running_mean", vec![1024]),
        ("fc.weight", vec![10, 2048]),
    ] {
        let t = ck.tensors.get(key).unwrap_or_else(|| panic!("no {key}"));
        assert_eq!(t.shape().as_slice(), dims.as_slice(), "{key}");
    }
    // ResNetMemoryCustom, CPU-sized: layer3 holds functions network.0 … network.4.
    let untied = authors([3, 2, 6, 2], 4, false);
    round_trip(&untied, shape(10), Precision::F32, 5 + 4 * 20 + 9 * 15 + 2);
    let path = dir.0.join("untied.safetensors");
    export(
        &untied.init(&p, shape(10), &mut Rng::new(1)).unwrap(),
        &untied,
        &path,
    )
    .unwrap();
    let ck = Checkpoint::open(&path).unwrap();
    assert!(ck.tensors.contains_key("layer3.1.network.4.conv3.weight"));
    assert!(!ck.tensors.contains_key("layer3.1.network.5.conv3.weight"));
    // A tied checkpoint does not load into the untied model, and says why.
    let e = Checkpoint::open(&dir.0.join("tied.safetensors"))
        .unwrap()
        .load(
            &authors([4, 4, 32, 4], 64, false),
            shape(10),
            &p,
            &ImportOptions::default(),
        )
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing layer1.1.network.0.conv1.weight"), "{e}");
    assert!(
        e.contains("600 missing, 0 mis-shaped, 60 unexpected"),
        "{e}"
    );
}

#[test]
fn authors_stacks_train_in_every_gradient_mode() {
    use resnet_ode::data::Batch;
    use resnet_ode::grad::GradMode;
    use resnet_ode::params::{flat_grads, independent_copy};
    use resnet_ode::train::{step_gradients, DeviceBatch};
    let p = placement(Precision::F32);
    let input = InputShape {
        channels: 3,
        height: 8,
        width: 8,
        classes: 4,
    };
    let batch = Batch {
        images: Rng::new(3)
            .normals(4 * 3 * 64)
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        labels: vec![0, 1, 2, 3],
        batch: 4,
        channels: 3,
        height: 8,
        width: 8,
    };
    let b = DeviceBatch::new(&p, &batch, 4);
    for tied in [true, false] {
        let model = authors([2, 3, 4, 2], 2, tied)
            .init(&p, input, &mut Rng::new(5))
            .unwrap();
        let grads = |mode| {
            let m = independent_copy(&model);
            let step = step_gradients(&m, &b, mode, Default::default());
            assert!(step.loss.is_finite(), "{mode}");
            flat_grads(&m, &step.grads)
        };
        let reference = grads(GradMode::Backprop);
        assert!(reference.iter().any(|(_, g)| g.iter().any(|v| *v != 0.0)));
        for mode in [GradMode::Checkpoint(2), GradMode::Adjoint] {
            let other = grads(mode);
            assert_eq!(other.len(), reference.len());
            for ((name, a), (_, b)) in reference.iter().zip(&other) {
                let norm = a.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                let diff = a
                    .iter()
                    .zip(b)
                    .map(|(u, v)| (u - v).powi(2))
                    .sum::<f64>()
                    .sqrt();
                assert!(
                    b.iter().any(|v| *v != 0.0) || norm < 1e-9,
                    "{mode} {name}: no gradient"
                );
                if mode != GradMode::Adjoint {
                    assert!(diff <= 1e-3 * norm, "{mode} {name}: {diff} of {norm}");
                }
            }
        }
    }
}

#[test]
fn tiny_resnet_round_trips_in_the_authors_naming() {
    let tiny = ModelSpec {
        depth: Some(4),
        planes: 4,
        ..ModelSpec::default()
    };
    round_trip(&tiny, shape(10), Precision::F32, 5 + 4 * 12 + 2);
    let tied = ModelSpec { tied: true, ..tiny };
    let p = placement(Precision::F32);
    let dir = TempDir::new("tiny-tied");
    let e = export(
        &tied.init(&p, shape(10), &mut Rng::new(0)).unwrap(),
        &tied,
        &dir.0.join("t.safetensors"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--tied") && e.contains("untied"), "{e}");
}

#[test]
fn a_tied_checkpoint_fine_tunes_untied_and_runs_at_any_depth() {
    use resnet_ode::data::Split;
    use resnet_ode::grad::GradMode;
    use resnet_ode::train::{train_on, Pretrained, TrainConfig, TrainOptions};
    let p = placement(Precision::F32);
    let input = InputShape {
        channels: 3,
        height: 8,
        width: 8,
        classes: 10,
    };
    let tied = authors([3, 3, 4, 3], 2, true);
    let dir = TempDir::new("untie");
    let path = dir.0.join("tied.safetensors");
    export(&random_model(&tied, input, &p), &tied, &path).unwrap();
    // The ODE-like test: the tied functions at another depth.
    let model = Checkpoint::open(&path)
        .unwrap()
        .load(&tied, input, &p, &ImportOptions::default())
        .unwrap()
        .model
        .with_depth(8)
        .unwrap();
    assert_eq!(model.stack_depths(), [8, 8, 8, 8]);
    let dataset = |n: usize, seed: u64| Dataset {
        images: Rng::new(seed)
            .normals(n * 3 * 64)
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        labels: (0..n).map(|i| i % 10).collect(),
        channels: 3,
        height: 8,
        width: 8,
        classes: 10,
        name: "random".into(),
    };
    let config = TrainConfig {
        model: authors([3, 3, 4, 3], 2, false),
        grad: GradMode::Adjoint,
        epochs: 1,
        batch_size: 8,
        pretrained: Some(Pretrained {
            path,
            partial: false,
            normalize: "none".into(),
            untie: true,
        }),
        train_stages: Some(vec!["layer3".into()]),
        ..TrainConfig::default()
    };
    let split = Split {
        train: dataset(16, 1),
        test: dataset(8, 2),
    };
    let result = train_on(split, &config, &p, &TrainOptions::default()).unwrap();
    let stacks = result.model.bottleneck_stacks();
    assert_eq!(result.model.stack_depths(), [2, 2, 3, 2]);
    assert!(
        stacks.iter().all(|s| s.functions.len() == s.depth),
        "untied"
    );
}

#[test]
fn shared_resnet20_with_batch_statistics_gives_18_of_20() {
    use resnet_ode::data::Batch;
    use resnet_ode::grad::GradMode;
    use resnet_ode::norm::BnMode;
    use resnet_ode::train::DeviceBatch;
    let Some(shared) = shared() else { return };
    let dir = TempDir::new("trap");
    image_folder(&shared, &dir.0);
    let data = images(&dir.0);
    let p = placement(Precision::F32);
    let ck = Checkpoint::open(&shared.join(format!("{STEM}.th"))).unwrap();
    let model = ck
        .load(&he20(), shape(10), &p, &ImportOptions::default())
        .unwrap()
        .model;
    let batch = Batch {
        images: data.images.clone(),
        labels: data.labels.clone(),
        batch: data.len(),
        channels: 3,
        height: 32,
        width: 32,
    };
    let b = DeviceBatch::new(&p, &batch, 10);
    let (logits, _) = model.forward_train(b.images, GradMode::Backprop, BnMode::Recompute);
    let rows = resnet_ode::device::to_vec(&logits);
    let correct = rows
        .chunks(10)
        .zip(&data.labels)
        .filter(|(row, &label)| {
            let best = (0..10).fold(0, |b, i| if row[i] > row[b] { i } else { b });
            best == label
        })
        .count();
    // The shared README's trap: train-mode batch norm (statistics of these 20 images) gets 18/20.
    assert_eq!(correct, 18);
}
