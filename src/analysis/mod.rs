//! Analyses of the ResNet–Neural ODE link (paper.md §2): the ODE a stack's weights define, its
//! distance to the ResNet, and the linear ResNets whose training keeps them close.

pub mod linear_resnet;
pub mod neural_ode;
