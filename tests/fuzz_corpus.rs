//! The fuzz targets' checks (`fuzz/fuzz_targets/checks/`, the very code libFuzzer runs) on the
//! seeds `fuzz/make_seeds.py` writes at test time (from Fashion-MNIST where installed, the run in
//! `fuzz/fixtures`, checkpoints written without torch, command lines), on any minimised corpus
//! committed in `fuzz/replay/TARGET/`, and on seeded mutations of them. Seeds are generated, not
//! committed: they hold dataset images, and the repository holds no data. CI runs this instead
//! of libFuzzer itself: the instrumented fuzz build takes 17 min cold on 2 cores
//! (fuzz/README.md), this one rides on the normal test build. An input that now panics or breaks
//! a reader's promise (an error names its file, what loads is valid) fails here; the input is
//! written to `target/fuzz-replay-failures/` so that `cargo fuzz run TARGET FILE` replays it.

#[path = "../fuzz/fuzz_targets/checks/common.rs"]
mod common;

#[allow(dead_code)]
#[path = "../src/cli/mod.rs"]
mod cli;

#[path = "../fuzz/fuzz_targets/checks/checkpoint.rs"]
mod checkpoint;
#[path = "../fuzz/fuzz_targets/checks/cifar.rs"]
mod cifar;
#[path = "../fuzz/fuzz_targets/checks/cli.rs"]
mod cli_args;
#[path = "../fuzz/fuzz_targets/checks/idx.rs"]
mod idx;
#[path = "../fuzz/fuzz_targets/checks/idx_gz.rs"]
mod idx_gz;
#[path = "../fuzz/fuzz_targets/checks/image_folder.rs"]
mod image_folder;
#[path = "../fuzz/fuzz_targets/checks/run_json.rs"]
mod run_json;
#[path = "../fuzz/fuzz_targets/checks/safetensors.rs"]
mod safetensors;

use resnet_ode::rng::Rng;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// A fuzz target's check of one input.
type Check = fn(&[u8]);

/// Mutated inputs per target (`FUZZ_REPLAY_MUTATIONS` overrides): a few seconds in all.
const MUTATIONS: usize = 2000;

/// The inputs of `target`: its generated seeds (in `seeds`) and its committed corpus, if any.
fn corpus(seeds: &Path, target: &str) -> Vec<(String, Vec<u8>)> {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/replay");
    let mut files: Vec<PathBuf> = [seeds, &committed]
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir.join(target)).ok())
        .flatten()
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&f).expect("corpus file"))
        })
        .collect()
}

/// Runs `fuzz/make_seeds.py` into a fresh folder; None (with a message) without python3.
fn make_seeds() -> Option<PathBuf> {
    let dir = std::env::temp_dir().join(format!("resnet-ode-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/make_seeds.py");
    match std::process::Command::new("python3")
        .arg(&script)
        .arg(&dir)
        .output()
    {
        Ok(out) => {
            assert!(out.status.success(), "{}: {out:?}", script.display());
            Some(dir)
        }
        Err(e) => {
            eprintln!("skipped: python3 is needed to write the fuzz seeds ({e})");
            None
        }
    }
}

/// One of libFuzzer's simple mutations, chosen by `rng`: flip a bit, write a boundary byte,
/// cut the tail, drop, duplicate or insert a run of bytes.
fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = input.to_vec();
    let at = |rng: &mut Rng, len: usize| rng.below(len.max(1));
    match rng.below(6) {
        0 if !v.is_empty() => {
            let i = at(rng, v.len());
            v[i] ^= 1 << rng.below(8);
        }
        1 if !v.is_empty() => {
            let i = at(rng, v.len());
            v[i] = [0x00, 0x01, 0x7f, 0x80, 0xff][rng.below(5)];
        }
        2 => v.truncate(at(rng, v.len())),
        3 if !v.is_empty() => {
            let i = at(rng, v.len());
            let n = 1 + rng.below((v.len() - i).min(64));
            v.drain(i..i + n);
        }
        4 if !v.is_empty() => {
            let i = at(rng, v.len());
            let n = 1 + rng.below((v.len() - i).min(64));
            let run: Vec<u8> = v[i..i + n].to_vec();
            v.splice(i..i, run);
        }
        _ => {
            let i = at(rng, v.len() + 1).min(v.len());
            let run: Vec<u8> = (0..1 + rng.below(16))
                .map(|_| rng.below(256) as u8)
                .collect();
            v.splice(i..i, run);
        }
    }
    v
}

/// Runs `check` on every corpus input of `target` and on seeded mutations of them.
fn replay(seeds: &Path, target: &str, check: Check) {
    let inputs = corpus(seeds, target);
    if inputs.is_empty() {
        eprintln!("skipped {target}: no seeds (Fashion-MNIST is absent: apt-get install -y dataset-fashion-mnist)");
        return;
    }
    let mutations = std::env::var("FUZZ_REPLAY_MUTATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(MUTATIONS);
    let mut rng = Rng::derive(0, target);
    let mutated = (0..mutations).map(|k| {
        let (name, bytes) = &inputs[rng.below(inputs.len())];
        (format!("{name}+mutation{k}"), mutate(bytes, &mut rng))
    });
    let mut runs = 0;
    for (name, bytes) in inputs.clone().into_iter().chain(mutated) {
        if catch_unwind(AssertUnwindSafe(|| check(&bytes))).is_err() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-replay-failures");
            std::fs::create_dir_all(&dir).expect("failure folder");
            let file = dir.join(format!("{target}-{name}"));
            std::fs::write(&file, &bytes).expect("failure file");
            panic!(
                "fuzz target {target} fails on {name}: input saved to {}",
                file.display()
            );
        }
        runs += 1;
    }
    eprintln!("{target}: {} corpus inputs, {runs} runs", inputs.len());
}

/// Every target in turn (one process-wide scratch folder and the seeds, removed at the end).
#[test]
fn every_target_on_its_corpus() {
    let Some(seeds) = make_seeds() else {
        return;
    };
    let targets: [(&str, Check); 8] = [
        ("idx", idx::check),
        ("idx_gz", idx_gz::check),
        ("cifar", cifar::check),
        ("image_folder", image_folder::check),
        ("safetensors", safetensors::check),
        ("checkpoint", checkpoint::check),
        ("run_json", run_json::check),
        ("cli", cli_args::check),
    ];
    for (target, check) in targets {
        replay(&seeds, target, check);
    }
    std::fs::remove_dir_all(common::scratch()).expect("scratch folder removed");
    std::fs::remove_dir_all(&seeds).expect("seeds folder removed");
}

/// The mutator reaches every kind of change, and the same seed gives the same inputs.
#[test]
fn mutations_are_varied_and_seeded() {
    let input: Vec<u8> = (0..100).collect();
    let run = |seed| {
        let mut rng = Rng::new(seed);
        (0..200)
            .map(|_| mutate(&input, &mut rng))
            .collect::<Vec<_>>()
    };
    let a = run(7);
    assert_eq!(a, run(7));
    assert!(a.iter().any(|m| m.len() < input.len()));
    assert!(a.iter().any(|m| m.len() > input.len()));
    assert!(a.iter().any(|m| m.len() == input.len() && *m != input));
}
