//! `resnet-ode train` and `resnet-ode eval` (being written).

/// Train a model.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {}

/// Evaluate a run.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {}

pub fn train(_a: &TrainArgs) -> anyhow::Result<()> {
    anyhow::bail!("train: not available in this build yet")
}

pub fn eval(_a: &EvalArgs) -> anyhow::Result<()> {
    anyhow::bail!("eval: not available in this build yet")
}
