//! `run.json` and `state.json` of a run directory (`train::read_json`). Input: a selector byte
//! (bit 0: state.json instead of run.json), then the file. What reads must write back and read
//! again to the same JSON (non-finite metrics included: issue 13's round-trip promise).

use resnet_ode::train::{read_json, RunRecord, TrainState, RUN_FILE, STATE_FILE};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;

fn round_trip<T: Serialize + DeserializeOwned>(file: &Path) {
    match read_json::<T>(file) {
        Ok(value) => {
            let text = serde_json::to_string_pretty(&value).expect("what was read serialises");
            let again: T = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("written back, it does not read: {e}\n{text}"));
            let text2 = serde_json::to_string_pretty(&again).unwrap();
            assert_eq!(text, text2, "not a fixed point");
        }
        Err(e) => crate::common::assert_names(&e, file),
    }
}

/// One input: a returned error must name its file; a panic or a failed assertion is a bug.
pub fn check(data: &[u8]) {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let dir = crate::common::fresh_dir("json");
    if sel & 1 == 0 {
        let file = dir.join(RUN_FILE);
        crate::common::put(&file, bytes);
        round_trip::<RunRecord>(&file);
    } else {
        let file = dir.join(STATE_FILE);
        crate::common::put(&file, bytes);
        round_trip::<TrainState>(&file);
    }
}
