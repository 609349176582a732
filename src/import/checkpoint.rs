//! Checkpoint files as a flat state dict: PyTorch's legacy `.th` pickle and zip `.pth` (read by
//! burn-store's `PytorchStore`), and `.safetensors` (`SafetensorsStore`); and the safetensors
//! writer of the export.
//!
//! Whatever wraps the state dict is peeled off here, so the layouts only see PyTorch's module
//! keys: a wrapping key (`state_dict`, `net`, `model`: the trainers' checkpoints, whose other
//! entries such as `optimizer` or `best_prec1` are ignored), then a DataParallel `module.`
//! prefix. `num_batches_tracked` counters are dropped: they carry no weight (PyTorch's batch
//! norm only uses them without a momentum, which no layout here has).

use crate::report::write_atomic;
use crate::{Error, Result};
use burn::store::{bridge, ModuleStore, PytorchStore, SafetensorsStore};
use burn::tensor::TensorData;
use std::collections::BTreeMap;
use std::path::Path;

/// Keys under which trainers wrap the state dict, tried in this order.
const WRAPPERS: [&str; 3] = ["state_dict", "net", "model"];
/// The prefix `nn.DataParallel` adds to every key.
const DATA_PARALLEL: &str = "module.";
/// PyTorch's batch-norm step counter, dropped on reading.
const BATCH_COUNTER: &str = ".num_batches_tracked";

/// Tensors by PyTorch key, wrappers and prefixes removed.
pub type StateDict = BTreeMap<String, TensorData>;

/// Reads the state dict of the checkpoint at `path` (format found from its first bytes).
pub fn read(path: &Path) -> Result<StateDict> {
    let head = first_bytes(path)?;
    let raw = if is_safetensors(&head) {
        let mut store = SafetensorsStore::from_file(path);
        all_tensors(path, store.get_all_tensors(), "safetensors file")?
    } else {
        let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
        all_tensors(
            path,
            store.get_all_tensors(),
            "PyTorch checkpoint (.th/.pth)",
        )?
    };
    if raw.is_empty() {
        return Err(Error::file(path, "holds no tensors"));
    }
    Ok(strip_prefix(unwrap(raw)))
}

fn first_bytes(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(16).read_to_end(&mut head))
        .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    Ok(head)
}

/// A safetensors file starts with its header's length (u64, little endian) and then `{`.
fn is_safetensors(head: &[u8]) -> bool {
    head.len() > 8 && head[8] == b'{'
}

/// Every tensor of a store, as data, or an error naming the file in a line or two.
fn all_tensors<E: std::fmt::Display>(
    path: &Path,
    read: std::result::Result<&BTreeMap<String, burn::store::burn_pack::Tensor>, E>,
    kind: &str,
) -> Result<StateDict> {
    let tensors = read.map_err(|e| {
        Error::file(
            path,
            format!("not a readable {kind} (truncated, corrupt or holding objects other than tensors and plain values): {}", brief(&e)),
        )
    })?;
    tensors
        .iter()
        .filter(|(key, _)| !key.ends_with(BATCH_COUNTER))
        .map(|(key, t)| {
            let data = bridge::to_data(t).map_err(|e| {
                Error::file(
                    path,
                    format!("tensor `{key}` cannot be read: {}", brief(&e)),
                )
            })?;
            Ok((key.clone(), data))
        })
        .collect()
}

/// The first 200 characters of an error (burn's listings of every key are long).
fn brief(e: &impl std::fmt::Display) -> String {
    let text = e.to_string();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// The entries under the first wrapping key present, if any; else everything.
fn unwrap(raw: StateDict) -> StateDict {
    for wrapper in WRAPPERS {
        let prefix = format!("{wrapper}.");
        if raw.keys().any(|k| k.starts_with(&prefix)) {
            return raw
                .into_iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), v)))
                .collect();
        }
    }
    raw
}

/// Removes DataParallel's `module.` when every key has it.
fn strip_prefix(sd: StateDict) -> StateDict {
    if !sd.keys().all(|k| k.starts_with(DATA_PARALLEL)) {
        return sd;
    }
    sd.into_iter()
        .map(|(k, v)| (k[DATA_PARALLEL.len()..].to_string(), v))
        .collect()
}

/// Writes `tensors` (name, shape, row-major values) as a safetensors file of F32 tensors,
/// atomically. The header is padded with spaces to a multiple of 8 bytes, as `safetensors`
/// itself does, so the data stays aligned.
pub fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<()> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape, values) in tensors {
        let end = offset + 4 * values.len();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    header.insert(
        "__metadata__".into(),
        serde_json::json!({"format": "pt", "written_by": "resnet-ode export"}),
    );
    let mut json = serde_json::to_vec(&header)
        .map_err(|e| Error::file(path, format!("cannot encode the header: {e}")))?;
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut bytes = Vec::with_capacity(8 + json.len() + offset);
    bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&json);
    for (_, _, values) in tensors {
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(keys: &[&str]) -> StateDict {
        keys.iter()
            .map(|k| (k.to_string(), TensorData::new(vec![0f32], [1])))
            .collect()
    }

    #[test]
    fn wrappers_and_data_parallel_prefix_are_removed() {
        let sd = strip_prefix(unwrap(dict(&[
            "best_prec1",
            "optimizer.state.0.momentum_buffer",
            "net.module.conv1.weight",
            "net.module.fc.bias",
        ])));
        assert_eq!(sd.keys().collect::<Vec<_>>(), ["conv1.weight", "fc.bias"]);
        let plain = strip_prefix(unwrap(dict(&["module.a", "b"])));
        assert_eq!(plain.keys().collect::<Vec<_>>(), ["b", "module.a"]);
    }

    #[test]
    fn written_safetensors_read_back() {
        let dir = std::env::temp_dir().join(format!("resnet-ode-st-{}", std::process::id()));
        let path = dir.join("w.safetensors");
        let tensors = vec![
            (
                "a.weight".to_string(),
                vec![2, 3],
                (0..6).map(|v| v as f32).collect(),
            ),
            ("b".to_string(), vec![1], vec![-1.5]),
        ];
        write_safetensors(&path, &tensors).unwrap();
        let sd = read(&path).unwrap();
        assert_eq!(sd["a.weight"].shape().as_slice(), &[2, 3]);
        assert_eq!(sd["a.weight"].as_slice::<f32>().unwrap()[5], 5.0);
        assert_eq!(sd["b"].as_slice::<f32>().unwrap(), &[-1.5]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
