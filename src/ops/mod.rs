//! Fused and hand-written operations with one composed default (burn's generic ops, every
//! backend) and per-backend fast paths, through burn's backend extensions (issue 12).
//! Model code calls the functions here instead of burn's; nothing above them changes.

pub mod conv3x3;

pub use conv3x3::conv3x3;
pub mod batch_norm;
pub mod simd;
