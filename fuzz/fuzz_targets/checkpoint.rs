//! PyTorch checkpoint import (`src/import/checkpoint.rs`): legacy `.th` pickles, zip `.pth`
//! and `.safetensors`, the format found from the content. Input: the file. A state dict read
//! is then offered to He et al.'s CIFAR ResNet-20 layout and TinyResNet's (classes and input
//! shape; building the model is left out: a fuzzed shape may ask for any amount of memory).
#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use resnet_ode::import::Checkpoint;
use resnet_ode::models::{Arch, ModelSpec};

fuzz_target!(|data: &[u8]| {
    let dir = common::fresh_dir("ckpt");
    let file = dir.join("fuzz.pth");
    common::put(&file, data);
    match Checkpoint::open(&file) {
        Ok(ckpt) => {
            assert!(!ckpt.tensors.is_empty());
            for (key, t) in &ckpt.tensors {
                // Every tensor read must hold as many values as its shape says.
                let n: usize = t.shape().as_slice().iter().product();
                assert_eq!(t.num_elements(), n, "{key}");
            }
            let he20 = ModelSpec {
                arch: Arch::CifarResNet(20),
                original: true,
                ..ModelSpec::default()
            };
            for spec in [he20, ModelSpec::default()] {
                if let Err(e) = ckpt.input(&spec, 32, 32) {
                    common::assert_names(&e, &file);
                }
            }
        }
        Err(e) => common::assert_names(&e, &file),
    }
});
