//! libFuzzer target `idx_gz`: the check is in `checks/idx_gz.rs` (shared with the corpus replay
//! test, `tests/fuzz_corpus.rs`).
#![no_main]

#[path = "checks/common.rs"]
mod common;
#[path = "checks/idx_gz.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::check(data));
