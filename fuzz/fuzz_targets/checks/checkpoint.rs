//! PyTorch checkpoint import (`src/import/checkpoint.rs`): legacy `.th` pickles, zip `.pth`
//! and `.safetensors`, the format found from the content. Input: the file. A state dict read
//! is then offered to He et al.'s CIFAR ResNet-20 layout and TinyResNet's (classes and input
//! shape; building the model is left out: a fuzzed shape may ask for any amount of memory).

use resnet_ode::import::Checkpoint;
use resnet_ode::models::{Arch, ModelSpec};

/// One input: a returned error must name its file; a panic or a failed assertion is a bug.
pub fn check(data: &[u8]) {
    let dir = crate::common::fresh_dir("ckpt");
    let file = dir.join("fuzz.pth");
    crate::common::put(&file, data);
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
                    crate::common::assert_names(&e, &file);
                }
            }
        }
        Err(e) => crate::common::assert_names(&e, &file),
    }
}
