//! `resnet-ode gradcheck` (being written).

/// Gradcheck flags.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_a: &Args) -> anyhow::Result<()> {
    anyhow::bail!("gradcheck: not available in this build yet")
}
