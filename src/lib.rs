//! resnet-ode: do residual networks discretize Neural ODEs?
//!
//! A ResNet updates its hidden state as `x_{n+1} = x_n + f(x_n, θ_n)/N`, the Euler scheme of
//! `dx/dt = f(x, θ(t))` on [0, 1] (Sander, Ablin & Peyré, NeurIPS 2022). This crate provides the
//! pieces to use that link: [`scheme`]s (Euler, Heun) with their inverse steps, [`residual`]
//! functions, depth-scaled residual [`stack`]s, [`grad`]ient modes (backprop, the memory-free
//! adjoint, checkpointing), the [`ode`] solvers and the analyses built on them.

pub mod analysis;
pub mod bench;
pub mod bench_train;
pub mod data;
pub mod error;
pub mod experiments;
pub mod family;
pub mod ode;
pub mod plot;
pub mod report;
pub mod rng;

pub use error::{Error, Result};
pub mod device;
pub mod doctor;
pub mod grad;
pub mod import;
pub mod io;
pub mod memory;
pub mod metrics;
pub mod models;
pub mod norm;
pub mod ops;
pub mod params;
pub mod residual;
pub mod scheme;
pub mod stack;
pub mod trace;
pub mod train;
