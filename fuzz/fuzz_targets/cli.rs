//! libFuzzer target `cli`: the check is in `checks/cli.rs` (shared with the corpus replay
//! test, `tests/fuzz_corpus.rs`).
#![no_main]

#[path = "checks/common.rs"]
mod common;
#[path = "checks/cli.rs"]
mod target;
#[allow(dead_code)]
#[path = "../../src/cli/mod.rs"]
mod cli;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::check(data));
