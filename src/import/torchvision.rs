//! torchvision's ResNets (`torchvision.models.resnet18` … `resnet152`): `conv1`, `bn1`,
//! `layer{1..4}.{j}.{conv,bn}{1,2,3}`, `layer{k}.0.downsample.{0,1}` (the option-B shortcut:
//! 1×1 convolution, batch norm) and `fc`.

use super::layout::{index, torch_leaf};

/// The PyTorch key of our parameter `path` (None: no counterpart).
pub(super) fn torch_key(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('.').collect();
    let (module, rest) = match parts.as_slice() {
        ["stem", "conv", rest @ ..] => ("conv1".to_string(), rest),
        ["stem", "bn", rest @ ..] => ("bn1".to_string(), rest),
        ["stages", s, j, rest @ ..] => (format!("layer{}.{}", index(s)? + 1, index(j)?), rest),
        ["head", rest @ ..] => ("fc".to_string(), rest),
        _ => return None,
    };
    Some(torch_leaf(&module, rest))
}

/// The key of the classifier's weight, `[classes, features]`.
pub(super) const HEAD: &str = "fc.weight";
