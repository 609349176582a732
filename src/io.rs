//! Weights on disk: safetensors files written atomically and read back with every mismatch
//! named (missing, unexpected or mis-shaped tensors), for any module (stacks, models).

use crate::device::Precision;
use crate::report::write_atomic;
use crate::{Error, Result};
use burn::module::Module;
use burn::store::{FloatCastAdapter, ModuleSnapshot, SafetensorsStore};
use std::collections::{BTreeMap, BTreeSet};
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
    write_atomic(path, &canonical_header(bytes, path)?)
}

/// The same safetensors file with its JSON header's keys sorted. burn-store keeps the header's
/// `__metadata__` in a hash map, so two saves of the same weights differed in its order; with
/// sorted keys identical runs write byte-identical checkpoints (a checksum proves a
/// reproduction). The tensor data is untouched: its offsets count from the end of the header.
fn canonical_header(bytes: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    let bad = |why: &str| Error::file(path, format!("serialised weights: {why}"));
    let (header, data) = split_header(&bytes).map_err(bad)?;
    // serde_json's map is ordered by key (no `preserve_order` feature).
    let value: serde_json::Value =
        serde_json::from_slice(header).map_err(|_| bad("the header is not JSON"))?;
    let mut sorted = serde_json::to_vec(&value).map_err(|_| bad("cannot re-serialise"))?;
    // Safetensors pads the header with spaces to a multiple of 8 bytes.
    sorted.resize(sorted.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + sorted.len() + data.len());
    out.extend_from_slice(&(sorted.len() as u64).to_le_bytes());
    out.extend_from_slice(&sorted);
    out.extend_from_slice(data);
    Ok(out)
}

/// A safetensors file's JSON header and the tensor data after it, or what is wrong.
fn split_header(bytes: &[u8]) -> std::result::Result<(&[u8], &[u8]), &'static str> {
    let len = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or("shorter than its 8-byte header length")?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| len.checked_add(8))
        .filter(|&end| end <= bytes.len())
        .ok_or("its header runs past the end of the file")?;
    Ok((&bytes[8..end], &bytes[end..]))
}

/// Load weights from `path` into `module`, which must have exactly the same structure, cast to
/// `precision` (the module's): weights saved in f32 evaluate in f64 and the other way round,
/// instead of a dtype mismatch deep in the backend. A file of another structure is an error
/// listing the missing, unexpected and mis-shaped tensors in plain words.
pub fn load_weights<M: Module + ModuleSnapshot>(
    mut module: M,
    path: &Path,
    precision: Precision,
) -> Result<M> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let problems = structure_problems(&module, &header_shapes(&bytes, path)?);
    if !problems.is_empty() {
        return Err(Error::file(
            path,
            format!(
                "the weights do not match the model ({} problems):\n{}",
                problems.len(),
                list_problems(&problems)
            ),
        ));
    }
    let mut store = SafetensorsStore::from_bytes(Some(bytes))
        .with_from_adapter(FloatCastAdapter::to(precision.dtype()));
    let result = module
        .load_from(&mut store)
        .map_err(|e| Error::file(path, format!("cannot load the weights: {e}")))?;
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

/// The tensors a safetensors file holds, by name, with their shapes (read from its header).
fn header_shapes(bytes: &[u8], path: &Path) -> Result<BTreeMap<String, Vec<usize>>> {
    let bad = |why: &str| Error::file(path, format!("not a safetensors file: {why}"));
    let (header, _) = split_header(bytes).map_err(bad)?;
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| bad(&format!("its header is not JSON: {e}")))?;
    Ok(header
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, v)| {
            let shape = v["shape"]
                .as_array()
                .map(|dims| {
                    dims.iter()
                        .filter_map(|d| d.as_u64())
                        .map(|d| d as usize)
                        .collect()
                })
                .unwrap_or_default();
            (name, shape)
        })
        .collect())
}

/// One line per tensor of `module` missing from `file` or of another shape there, and per
/// tensor of `file` the module does not have.
fn structure_problems<M: ModuleSnapshot>(
    module: &M,
    file: &BTreeMap<String, Vec<usize>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    // With enum variants in the paths, as the store writes them ("Tiny.stem…").
    for t in module.collect(None, None, false) {
        let expected = t.shape.as_slice().to_vec();
        match file.get(&t.name) {
            None => problems.push(format!("missing {} {expected:?}", t.name)),
            Some(found) if *found != expected => problems.push(format!(
                "mis-shaped {}: expected {expected:?}, found {found:?}",
                t.name
            )),
            Some(_) => {}
        }
        seen.insert(t.name);
    }
    for (name, shape) in file {
        if !seen.contains(name) {
            problems.push(format!("unexpected {name} {shape:?}"));
        }
    }
    problems
}

/// How many problems an error lists before counting the rest.
const LISTED: usize = 8;

/// The first [`LISTED`] of `lines`, indented, then how many more there are.
pub fn list_problems(lines: &[String]) -> String {
    let mut out: Vec<String> = lines
        .iter()
        .take(LISTED)
        .map(|l| format!("  {l}"))
        .collect();
    if lines.len() > LISTED {
        out.push(format!("  … and {} more", lines.len() - LISTED));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Placement;
    use crate::residual::{Activation, MlpConfig};
    use crate::rng::Rng;

    #[test]
    fn saved_weights_are_byte_identical_and_load_back() {
        let p = Placement::flex(Precision::F32);
        let cfg = MlpConfig {
            dim: 4,
            hidden: 3,
            activation: Activation::Tanh,
        };
        let m = cfg.init(&p, &mut Rng::new(3));
        let dir = std::env::temp_dir().join(format!("resnet-ode-io-{}", std::process::id()));
        let files: Vec<_> = (0..4)
            .map(|i| dir.join(format!("w{i}.safetensors")))
            .collect();
        for f in &files {
            save_weights(&m, f).unwrap();
        }
        let first = std::fs::read(&files[0]).unwrap();
        for f in &files[1..] {
            assert_eq!(std::fs::read(f).unwrap(), first, "{}", f.display());
        }
        let again = load_weights(cfg.init(&p, &mut Rng::new(4)), &files[0], Precision::F32);
        assert!(again.is_ok(), "{:?}", again.err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
