//! The files of a run directory, each written atomically:
//!
//! - `run.json`: the configuration, input shape and normalisation (written once, and again
//!   when `--grad auto` decides; `eval` and `--resume` rebuild the model from it);
//! - `model-EEEE.safetensors`, `optimizer-EEEE.safetensors`: weights (with running statistics)
//!   and optimizer buffers after epoch EEEE;
//! - `state.json`: the epoch, RNG state, optimizer step count, metrics so far and the names of
//!   the two files above. It is written last, so a kill at any point leaves the previous
//!   complete checkpoint in force; the older files are deleted only afterwards;
//! - `metrics.jsonl`: one line per finished epoch (rewritten from `state.json`'s history).

use super::optim::OptimizerState;
use super::{EpochMetrics, TrainConfig};
use crate::data::{DataId, Normalization};
use crate::models::InputShape;
use crate::report::{write_atomic, write_json};
use crate::rng::Rng;
use crate::{Error, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::Path;

pub const RUN_FILE: &str = "run.json";
pub const STATE_FILE: &str = "state.json";
pub const METRICS_FILE: &str = "metrics.jsonl";

/// What a run directory records about how the model was built and fed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub config: TrainConfig,
    pub input: InputShape,
    /// Training-set statistics applied to both sets.
    pub normalization: Normalization,
    /// `--grad auto`'s per-stack decisions, in epoch order (rewritten at each recheck).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grad_decisions: Vec<super::GradDecision>,
    /// The float precision the run trains in (`--dtype`); None in runs of earlier versions.
    #[serde(default)]
    pub dtype: Option<crate::device::Precision>,
    /// The content of the training and test sets (after limits and normalisation): a resume
    /// checks the data by this, not by the `--data` string. None in runs of earlier versions.
    #[serde(default)]
    pub data_ids: Option<[DataId; 2]>,
}

/// Everything besides weights and buffers needed to continue a run exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs finished.
    pub epoch: usize,
    /// The data stream's generator after that epoch.
    pub rng: Rng,
    pub optimizer: OptimizerState,
    pub history: Vec<EpochMetrics>,
    /// File names (in the run directory) of the weights and optimizer buffers.
    pub weights: String,
    pub buffers: String,
}

/// Reads a JSON file, naming it in any error.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::file(path, format!("not a valid {}: {e}", describe(path))))
}

fn describe(path: &Path) -> &'static str {
    match path.file_name().and_then(|n| n.to_str()) {
        Some(RUN_FILE) => "run record",
        Some(STATE_FILE) => "training state",
        _ => "JSON file",
    }
}

/// The checkpoint file names for epoch `epoch`.
pub fn file_names(epoch: usize) -> (String, String) {
    (
        format!("model-{epoch:04}.safetensors"),
        format!("optimizer-{epoch:04}.safetensors"),
    )
}

/// Commits a checkpoint whose files are written: writes `state.json`, which from then on names
/// them. If that fails the previous state stays in force and the new files, which nothing
/// names, are removed. Then call [`tidy`].
pub fn commit(dir: &Path, state: &TrainState, previous: Option<&TrainState>) -> Result<()> {
    if let Err(e) = write_json(&dir.join(STATE_FILE), state) {
        let live =
            |name: &String| previous.is_some_and(|p| *name == p.weights || *name == p.buffers);
        let new: Vec<&String> = [&state.weights, &state.buffers]
            .into_iter()
            .filter(|name| !live(name))
            .collect();
        discard(dir, &new);
        return Err(e);
    }
    Ok(())
}

/// After a [`commit`]: writes `metrics.jsonl`, then removes the files of `previous` (if other
/// than the new ones). A failure here loses nothing: `state.json` is the truth, and a resume's
/// [`repair`] rewrites the metrics and removes the old files.
pub fn tidy(dir: &Path, state: &TrainState, previous: Option<&TrainState>) -> Result<()> {
    write_metrics(dir, &state.history)?;
    if let Some(prev) = previous {
        for name in [&prev.weights, &prev.buffers] {
            if *name != state.weights && *name != state.buffers {
                // Best effort: a leftover file is harmless, the state names the live ones.
                let _ = std::fs::remove_file(dir.join(name));
            }
        }
    }
    Ok(())
}

/// Removes the checkpoint files `names` of a commit that failed (best effort: a read-only
/// directory keeps them, and a resume's [`repair`] removes them then).
pub fn discard(dir: &Path, names: &[&String]) {
    for name in names {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

/// Brings a run directory in line with its `state.json`, which is the truth (it is written
/// last): `metrics.jsonl` rewritten from its history (a kill between the two writes left it a
/// line short), and the files a kill orphaned removed: checkpoints the state does not name and
/// the temporary files of interrupted atomic writes.
pub fn repair(dir: &Path, state: &TrainState) -> Result<()> {
    write_metrics(dir, &state.history)?;
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::file(dir, format!("cannot list: {e}")))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let checkpoint = (name.starts_with("model-") || name.starts_with("optimizer-"))
            && name.ends_with(".safetensors");
        let live = name == state.weights || name == state.buffers;
        let interrupted = name.starts_with('.') && name.contains(".tmp.");
        if (checkpoint && !live) || interrupted {
            // Best effort: a leftover file is harmless, the state names the live ones.
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// `metrics.jsonl`: one JSON object per epoch.
pub fn write_metrics(dir: &Path, history: &[EpochMetrics]) -> Result<()> {
    let path = dir.join(METRICS_FILE);
    let mut text = String::new();
    for m in history {
        let line = serde_json::to_string(m)
            .map_err(|e| Error::file(&path, format!("cannot serialize: {e}")))?;
        text.push_str(&line);
        text.push('\n');
    }
    write_atomic(&path, text.as_bytes())
}

/// The fields where a stored configuration differs from `config` (top-level names).
pub fn config_differences(stored: &TrainConfig, config: &TrainConfig) -> Vec<String> {
    // Both sides go through the same printer and parser, so equal settings compare equal.
    let value = |c: &TrainConfig| {
        serde_json::to_string(c)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
    };
    match (value(stored), value(config)) {
        (Some(serde_json::Value::Object(a)), Some(serde_json::Value::Object(b))) => a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
            .collect(),
        _ => vec!["(unreadable configuration)".into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(epoch: usize) -> TrainState {
        let (weights, buffers) = file_names(epoch);
        TrainState {
            epoch,
            rng: Rng::new(epoch as u64),
            optimizer: OptimizerState {
                steps: epoch as u64,
                first: vec![true],
                second: vec![false],
            },
            history: Vec::new(),
            weights,
            buffers,
        }
    }

    /// A commit whose `state.json` cannot be written (here a folder stands in its place) keeps
    /// the previous checkpoint and removes the new files, which nothing names.
    #[test]
    fn a_failed_commit_keeps_the_previous_checkpoint_and_leaves_no_orphans() {
        let dir = std::env::temp_dir().join(format!("resnet-ode-commit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (old, new) = (state(1), state(2));
        for name in [&old.weights, &old.buffers, &new.weights, &new.buffers] {
            std::fs::write(dir.join(name), name.as_bytes()).unwrap();
        }
        std::fs::create_dir(dir.join(STATE_FILE)).unwrap();
        let err = commit(&dir, &new, Some(&old)).unwrap_err().to_string();
        assert!(err.contains(STATE_FILE), "{err}");
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "model-0001.safetensors",
                "optimizer-0001.safetensors",
                STATE_FILE
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
