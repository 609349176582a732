//! The paper's TinyResNet as the authors name it (`iTinyResnet`, resnet_cifar/models/resnet.py,
//! paper.md §3.4): `conv1`, `bn1`, `residual_layers.{n}.{conv1,bn1,conv2,bn2}` (convolutions with
//! biases), `linear`. Their model is untied, so only the untied one has this layout.

use super::layout::{index, torch_leaf};

/// The PyTorch key of our parameter `path` (None: no counterpart).
pub(super) fn torch_key(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('.').collect();
    let (module, rest) = match parts.as_slice() {
        ["stem", "conv", rest @ ..] => ("conv1".to_string(), rest),
        ["stem", "bn", rest @ ..] => ("bn1".to_string(), rest),
        ["stack", "functions", n, rest @ ..] => (format!("residual_layers.{}", index(n)?), rest),
        ["head", rest @ ..] => ("linear".to_string(), rest),
        _ => return None,
    };
    Some(torch_leaf(&module, rest))
}

/// The key of the classifier's weight, `[classes, features]`.
pub(super) const HEAD: &str = "linear.weight";
