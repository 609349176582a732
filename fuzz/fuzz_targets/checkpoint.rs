//! libFuzzer target `checkpoint`: the check is in `checks/checkpoint.rs` (shared with the corpus replay
//! test, `tests/fuzz_corpus.rs`).
#![no_main]

#[path = "checks/common.rs"]
mod common;
#[path = "checks/checkpoint.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::check(data));
