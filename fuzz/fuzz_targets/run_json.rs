//! libFuzzer target `run_json`: the check is in `checks/run_json.rs` (shared with the corpus replay
//! test, `tests/fuzz_corpus.rs`).
#![no_main]

#[path = "checks/common.rs"]
mod common;
#[path = "checks/run_json.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::check(data));
