//! The command line: `clap` parsing of the real `Cli` (the binary's `src/cli`, compiled into
//! this target), and every value parser the commands apply after clap (`--grad`, `--scheme`,
//! `--data`, `--device`, `--dtype`, …). Input: arguments separated by NUL bytes (any bytes:
//! non-UTF-8 arguments included). A returned error is fine; a panic is a bug.

use clap::Parser;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::str::FromStr;

fn each<T: FromStr>(s: &str)
where
    T::Err: std::fmt::Display,
{
    if let Err(e) = T::from_str(s) {
        assert!(!e.to_string().is_empty());
    }
}

/// One command line: an error is fine, a panic is a bug.
pub fn check(data: &[u8]) {
    let mut argv = vec![OsString::from("resnet-ode")];
    argv.extend(
        data.split(|&b| b == 0)
            .map(|a| OsString::from_vec(a.to_vec())),
    );
    if argv.len() > 64 {
        return;
    }
    let _ = crate::cli::Cli::try_parse_from(&argv);
    for arg in &argv[1..] {
        let s = arg.to_string_lossy();
        // The value may follow `--flag=`.
        let v = s.split_once('=').map_or(&*s, |(_, v)| v);
        each::<resnet_ode::grad::GradMode>(v);
        each::<resnet_ode::scheme::Scheme>(v);
        each::<resnet_ode::train::OptimizerKind>(v);
        each::<resnet_ode::train::AutoGrad>(v);
        each::<resnet_ode::train::Schedule>(v);
        each::<resnet_ode::models::Arch>(v);
        each::<resnet_ode::data::DataSpec>(v);
        each::<resnet_ode::family::Family>(v);
        each::<resnet_ode::bench_train::BenchModel>(v);
        each::<resnet_ode::bench::Workload>(v);
        each::<resnet_ode::analysis::neural_ode::Interpolation>(v);
        each::<resnet_ode::residual::Activation>(v);
        each::<resnet_ode::norm::BnMode>(v);
        each::<resnet_ode::device::Precision>(v);
        each::<resnet_ode::device::DeviceSpec>(v);
    }
}
