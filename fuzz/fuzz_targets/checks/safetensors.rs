//! Weights and optimizer buffers of a run (safetensors, `src/io.rs` and the optimizer's
//! loader): the fuzzed bytes are the checkpoint of the small TinyResNet run in `fixtures/`
//! (written by `resnet-ode train`). Input: a selector byte (bit 0: optimizer buffers instead of
//! weights; bit 1: f64 instead of f32), then the file.

use resnet_ode::device::{Placement, Precision};
use resnet_ode::io::load_weights;
use resnet_ode::models::Model;
use resnet_ode::train::{load_model, Optimizer, RunRecord, TrainState};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;

thread_local! {
    static MODELS: RefCell<HashMap<u8, Model>> = RefCell::new(HashMap::new());
}

const RUN: &str = include_str!("../../fixtures/run.json");
const STATE: &str = include_str!("../../fixtures/state.json");
const MODEL: &[u8] = include_bytes!("../../fixtures/model-0002.safetensors");

fn fixtures() -> &'static (RunRecord, TrainState) {
    static F: OnceLock<(RunRecord, TrainState)> = OnceLock::new();
    F.get_or_init(|| {
        (
            serde_json::from_str(RUN).unwrap(),
            serde_json::from_str(STATE).unwrap(),
        )
    })
}

/// One input: a returned error must name its file; a panic or a failed assertion is a bug.
pub fn check(data: &[u8]) {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let (record, state) = fixtures();
    let precision = if sel & 2 == 2 {
        Precision::F64
    } else {
        Precision::F32
    };
    let p = Placement::flex(precision);
    let dir = crate::common::fresh_dir("st");
    let file = dir.join("fuzz.safetensors");
    crate::common::put(&file, bytes);
    // The models are built once per process: burn-autodiff keeps the graph node of every
    // parameter it tracks until a backward pass (about 110 KB per model built here), so building
    // one per input ran out of memory after 15 000 inputs. The reading code is the same. Loading
    // still keeps ~17 KB per valid input, so run this target in short processes (15 s each with
    // -rss_limit_mb=4096; see README.md).
    let model = MODELS.with(|m| {
        m.borrow_mut()
            .entry(sel & 2)
            .or_insert_with(|| {
                let good = crate::common::scratch().join("model.safetensors");
                crate::common::put(&good, MODEL);
                load_model(record, &p, &good).expect("the fixture loads")
            })
            .clone()
    });
    if sel & 1 == 0 {
        if let Err(e) = load_weights(model, &file, precision) {
            crate::common::assert_names(&e, &file);
        }
    } else {
        let config = record.config.optimizer.clone();
        if let Err(e) = Optimizer::load(config, &state.optimizer, &model, &p, &file) {
            crate::common::assert_names(&e, &file);
        }
    }
}
