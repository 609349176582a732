//! Weights on disk: safetensors files written atomically and read back with every mismatch
//! named (missing, unexpected or mis-shaped tensors), for any module (stacks, models).

use crate::report::write_atomic;
use crate::{Error, Result};
use burn::module::Module;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use std::path::Path;

/// Write `module`'s parameters and running statistics to `path` (safetensors; atomic).
pub fn save_weights<M: Module + ModuleSnapshot>(module: &M, path: &Path) -> Result<()> {
    let mut store = SafetensorsStore::from_bytes(None);
    module
        .save_into(&mut store)
        .map_err(|e| Error::file(path, format!("cannot serialise weights: {e}")))?;
    let bytes = store
        .get_bytes()
        .map_err(|e| Error::file(path, format!("cannot serialise weights: {e}")))?;
    write_atomic(path, &bytes)
}

/// Load weights from `path` into `module`, which must have exactly the same structure.
pub fn load_weights<M: Module + ModuleSnapshot>(mut module: M, path: &Path) -> Result<M> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let mut store = SafetensorsStore::from_bytes(Some(bytes));
    let result = module
        .load_from(&mut store)
        .map_err(|e| Error::file(path, format!("not a readable safetensors file: {e}")))?;
    if !result.is_success() || !result.missing.is_empty() || !result.unused.is_empty() {
        return Err(Error::file(
            path,
            format!("weights do not match the model:\n{result}"),
        ));
    }
    if let Some(name) = crate::params::first_non_finite(&module) {
        return Err(Error::file(
            path,
            format!("tensor `{name}` holds NaN or infinity"),
        ));
    }
    Ok(module)
}
