//! The paper authors' models (michaelsdr/resnet_nodes, `../shared/data/authors-state-dicts.md`):
//! `conv1`, `bn1`, `layerX.0.*` (a torchvision bottleneck with `downsample.{0,1}`), the stack of
//! pre-activation `MBottleneck`s — tied (`IResNetAuto2`): the one function as child `1` of the
//! stage's `ImplicitNet`, `layerX.1.1.*`; untied (`ResNetMemoryCustom`): `layerX.1.network.K.*`
//! — and `fc`.

use super::layout::{index, torch_leaf};

/// The PyTorch key of our parameter `path` (None: no counterpart).
pub(super) fn torch_key(path: &str, tied: bool) -> Option<String> {
    let parts: Vec<&str> = path.split('.').collect();
    let (module, rest) = match parts.as_slice() {
        ["stem", "conv", rest @ ..] => ("conv1".to_string(), rest),
        ["stem", "bn", rest @ ..] => ("bn1".to_string(), rest),
        ["stages", s, "first", rest @ ..] => (format!("layer{}.0", index(s)? + 1), rest),
        ["stages", s, "stack", "functions", k, rest @ ..] => {
            let stage = index(s)? + 1;
            let module = if tied {
                format!("layer{stage}.1.1")
            } else {
                format!("layer{stage}.1.network.{}", index(k)?)
            };
            (module, rest)
        }
        ["head", rest @ ..] => ("fc".to_string(), rest),
        _ => return None,
    };
    Some(torch_leaf(&module, rest))
}

/// The key of the classifier's weight, `[classes, features]`.
pub(super) const HEAD: &str = "fc.weight";
