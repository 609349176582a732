//! Fused and hand-written operations with one composed default (burn's generic ops, every
//! backend) and per-backend fast paths, through burn's backend extensions (issue 12).
//! Model code calls the functions here instead of burn's; nothing above them changes.

#[cfg(feature = "tch")]
pub(crate) mod aten;
// burn 0.22 marks its LibTorch backend deprecated; it is PyTorch's own kernels, and the
// LibTorch fast paths below are what match PyTorch's speed there.
#[cfg_attr(feature = "tch", allow(deprecated))]
pub mod batch_norm;
#[cfg_attr(feature = "tch", allow(deprecated))]
pub mod conv3x3;
#[cfg_attr(feature = "tch", allow(deprecated))]
pub mod dot;
mod flex_data;
#[cfg_attr(feature = "tch", allow(deprecated))]
pub mod relu;
#[cfg_attr(feature = "tch", allow(deprecated))]
pub mod sgd;
pub mod simd;

pub use conv3x3::conv3x3;
pub use dot::scaled_dot;
pub use relu::relu;
pub use sgd::{sgd_steps, SgdRule};
