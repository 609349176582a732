//! He et al.'s CIFAR ResNets as PyTorch names them (akamaster/pytorch_resnet_cifar10, the
//! layout of the shared ResNet-20): `conv1`, `bn1`, `layer{1,2,3}.{j}.{conv,bn}{1,2}`,
//! `linear`. The shortcuts are option A, so there are no downsample weights.
//!
//! Only the unscaled form (`--original`) has these weights: the depth-scaled form's blocks
//! compute another function (`x + f(x)/N` with conv biases, no ReLU after the addition), and
//! loading He et al.'s weights into it would give a different network silently.

use super::layout::{index, torch_leaf};

/// The PyTorch key of our parameter `path` (None: no counterpart).
pub(super) fn torch_key(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('.').collect();
    let (module, rest) = match parts.as_slice() {
        ["stem", "conv", rest @ ..] => ("conv1".to_string(), rest),
        ["stem", "bn", rest @ ..] => ("bn1".to_string(), rest),
        ["stages", s, "first", rest @ ..] => (format!("layer{}.0", index(s)? + 1), rest),
        ["stages", s, "rest", j, rest @ ..] => {
            (format!("layer{}.{}", index(s)? + 1, index(j)? + 1), rest)
        }
        ["head", rest @ ..] => ("linear".to_string(), rest),
        _ => return None,
    };
    Some(torch_leaf(&module, rest))
}

/// The key of the classifier's weight, `[classes, features]`.
pub(super) const HEAD: &str = "linear.weight";
