//! `resnet-ode experiment …` (being written).

use clap::Subcommand;

/// The paper's experiments.
#[derive(Subcommand, Debug)]
pub enum Experiment {}

pub fn run(e: &Experiment) -> anyhow::Result<()> {
    match *e {}
}
