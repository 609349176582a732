//! `resnet-ode bench …` (being written).

use clap::Subcommand;

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum Bench {}

pub fn run(b: &Bench) -> anyhow::Result<()> {
    match *b {}
}
