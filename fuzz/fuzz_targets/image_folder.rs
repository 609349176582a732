//! libFuzzer target `image_folder`: the check is in `checks/image_folder.rs` (shared with the corpus replay
//! test, `tests/fuzz_corpus.rs`).
#![no_main]

#[path = "checks/common.rs"]
mod common;
#[path = "checks/image_folder.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::check(data));
