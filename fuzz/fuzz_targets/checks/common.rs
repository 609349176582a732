//! Shared by the fuzz targets: the library's readers take paths, so each process writes the
//! fuzzed bytes into one scratch folder of its own (`resnet-ode-fuzz-PID` on /dev/shm when it
//! exists), reused for every input. It is left at exit (a few KB; `scripts/fuzz-smoke.sh` and
//! `tests/fuzz_corpus.rs` remove it).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// This process's scratch folder (created once).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("resnet-ode-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir
    })
}

/// An empty sub-folder `name` of the scratch folder (emptied if it exists).
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = scratch().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch sub-folder");
    dir
}

/// Writes `bytes` to `path` (parents created).
pub fn put(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("scratch parent");
    }
    std::fs::write(path, bytes).expect("scratch write");
}

/// Splits `data` in two: a little-endian u16 length prefix (taken modulo what follows) says
/// where the first part ends.
pub fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    if data.len() < 2 {
        return (data, &[]);
    }
    let rest = &data[2..];
    let at = u16::from_le_bytes([data[0], data[1]]) as usize % (rest.len() + 1);
    rest.split_at(at)
}

/// The error text must name the file or folder it is about: every reader promises that.
pub fn assert_names(err: &resnet_ode::Error, dir: &Path) {
    let text = format!("{err}");
    assert!(
        text.contains(&*dir.to_string_lossy()),
        "error does not name the file: {text}"
    );
}
