//! What the layouts share: choosing one for a model, and the names PyTorch gives to the
//! layers inside a block.

use super::{authors, he, tiny, torchvision};
use crate::models::{Arch, ModelSpec};
use crate::{Error, Result};

/// A family of PyTorch state-dict names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// He et al.'s CIFAR ResNets (`cifar-resnetL --original`).
    He,
    /// torchvision's ImageNet ResNets (`torchvision-resnetL`).
    Torchvision,
    /// The paper authors' models (`authors-resnet-A-B-C-D`): `IResNetAuto2` when tied,
    /// `ResNetMemoryCustom` when not.
    Authors { tied: bool },
    /// The paper's TinyResNet as the authors name it (`tiny`, untied).
    Tiny,
}

impl Layout {
    /// The layout of `spec`'s checkpoints, or an error naming the flag that rules one out.
    pub fn of(spec: &ModelSpec) -> Result<Self> {
        match spec.arch {
            Arch::CifarResNet(_) if spec.original => Ok(Layout::He),
            Arch::CifarResNet(_) => Err(Error::invalid(
                "--original",
                format!("{}: the depth-scaled form has no PyTorch layout; He et al.'s checkpoints hold the unscaled blocks relu(x + f(x)): add --original (the scaled form computes another function, so their weights do not fit it)", spec.arch),
            )),
            Arch::Torchvision(_) => Ok(Layout::Torchvision),
            Arch::Authors(_) => Ok(Layout::Authors { tied: spec.tied }),
            Arch::Tiny if spec.tied => Err(Error::invalid(
                "--tied",
                "the authors' TinyResNet (iTinyResnet) is untied: its checkpoints hold N functions",
            )),
            Arch::Tiny => Ok(Layout::Tiny),
        }
    }

    /// The PyTorch key of our parameter `path` (named with enum variants skipped).
    pub fn torch_key(self, path: &str) -> Option<String> {
        match self {
            Layout::He => he::torch_key(path),
            Layout::Torchvision => torchvision::torch_key(path),
            Layout::Authors { tied } => authors::torch_key(path, tied),
            Layout::Tiny => tiny::torch_key(path),
        }
    }

    /// The key of the first convolution's weight (`[out, in, kh, kw]`).
    pub fn stem_key(self) -> &'static str {
        "conv1.weight"
    }

    /// The key of the classifier weight (`[classes, features]` in PyTorch).
    pub fn head_key(self) -> &'static str {
        match self {
            Layout::He => he::HEAD,
            Layout::Torchvision => torchvision::HEAD,
            Layout::Authors { .. } => authors::HEAD,
            Layout::Tiny => tiny::HEAD,
        }
    }
}

/// Our path of the classifier weight, stored `[features, classes]` (transposed from PyTorch).
pub const HEAD_WEIGHT: &str = "head.weight";

/// A list index in a path.
pub(super) fn index(s: &str) -> Option<usize> {
    s.parse().ok()
}

/// `module` followed by PyTorch's names for the rest of our path inside it: a
/// [`crate::models::StridedConv`]'s inner `conv` disappears, a batch norm's γ and β are
/// `weight` and `bias`, the option-B shortcut is the `downsample` Sequential `{0: conv, 1: bn}`.
pub(super) fn torch_leaf(module: &str, rest: &[&str]) -> String {
    let mut out = vec![module.to_string()];
    let mut parts = rest.iter().peekable();
    while let Some(&part) = parts.next() {
        let next = parts.peek().copied().copied();
        match (part, next) {
            ("conv", Some("weight" | "bias")) => {}
            ("conv", Some("conv")) => out.push("0".into()),
            ("bn", _) if out.last().is_some_and(|l| l == "downsample") => out.push("1".into()),
            ("gamma", None) => out.push("weight".into()),
            ("beta", None) => out.push("bias".into()),
            _ => out.push(part.to_string()),
        }
    }
    out.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn he_keys() {
        let k = |p: &str| Layout::He.torch_key(p);
        assert_eq!(k("stem.conv.conv.weight").as_deref(), Some("conv1.weight"));
        assert_eq!(k("stem.bn.gamma").as_deref(), Some("bn1.weight"));
        assert_eq!(
            k("stages.1.first.bn2.beta").as_deref(),
            Some("layer2.0.bn2.bias")
        );
        assert_eq!(
            k("stages.2.rest.1.conv1.conv.weight").as_deref(),
            Some("layer3.2.conv1.weight")
        );
        assert_eq!(
            k("stages.0.rest.0.bn1.running_var").as_deref(),
            Some("layer1.1.bn1.running_var")
        );
        assert_eq!(k("head.bias").as_deref(), Some("linear.bias"));
        assert_eq!(k("stages.0.rest.functions.0.conv1.weight"), None);
    }

    #[test]
    fn authors_keys() {
        let tied = |p: &str| Layout::Authors { tied: true }.torch_key(p);
        let untied = |p: &str| Layout::Authors { tied: false }.torch_key(p);
        assert_eq!(
            tied("stages.2.stack.functions.0.conv1.weight").as_deref(),
            Some("layer3.1.1.conv1.weight")
        );
        assert_eq!(
            untied("stages.2.stack.functions.5.bn3.gamma").as_deref(),
            Some("layer3.1.network.5.bn3.weight")
        );
        assert_eq!(
            untied("stages.0.first.downsample.bn.running_var").as_deref(),
            Some("layer1.0.downsample.1.running_var")
        );
        assert_eq!(tied("head.bias").as_deref(), Some("fc.bias"));
    }

    #[test]
    fn tiny_keys() {
        let k = |p: &str| Layout::Tiny.torch_key(p);
        assert_eq!(
            k("stack.functions.7.conv2.bias").as_deref(),
            Some("residual_layers.7.conv2.bias")
        );
        assert_eq!(
            k("stack.functions.0.bn2.gamma").as_deref(),
            Some("residual_layers.0.bn2.weight")
        );
        assert_eq!(k("stem.conv.conv.weight").as_deref(), Some("conv1.weight"));
        assert_eq!(k("head.weight").as_deref(), Some("linear.weight"));
    }

    #[test]
    fn torchvision_keys() {
        let k = |p: &str| Layout::Torchvision.torch_key(p);
        assert_eq!(
            k("stages.1.0.downsample.conv.conv.weight").as_deref(),
            Some("layer2.0.downsample.0.weight")
        );
        assert_eq!(
            k("stages.1.0.downsample.bn.running_mean").as_deref(),
            Some("layer2.0.downsample.1.running_mean")
        );
        assert_eq!(
            k("stages.3.2.conv3.conv.weight").as_deref(),
            Some("layer4.2.conv3.weight")
        );
        assert_eq!(
            k("stages.0.1.bn3.gamma").as_deref(),
            Some("layer1.1.bn3.weight")
        );
        assert_eq!(k("head.weight").as_deref(), Some("fc.weight"));
    }
}
