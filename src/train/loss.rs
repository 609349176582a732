//! Mini-batches as tensors, cross-entropy and accuracy.

use crate::data::Batch;
use crate::device::{to_vec, Placement};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Tensor, TensorData};

/// A batch on the device: images N×C×H×W in the run's precision and one-hot labels N×K.
pub struct DeviceBatch {
    pub images: Tensor<4>,
    pub one_hot: Tensor<2>,
    pub labels: Vec<usize>,
}

impl DeviceBatch {
    /// Uploads `batch` (labels below `classes`, as the data loaders guarantee).
    pub fn new(p: &Placement, batch: &Batch, classes: usize) -> Self {
        let shape = [batch.batch, batch.channels, batch.height, batch.width];
        let data = TensorData::new(batch.images.clone(), shape);
        let mut hot = vec![0.0f32; batch.batch * classes];
        for (row, &l) in batch.labels.iter().enumerate() {
            hot[row * classes + l] = 1.0;
        }
        let hot = TensorData::new(hot, [batch.batch, classes]);
        Self {
            images: Tensor::from_data(data, p.options()),
            one_hot: Tensor::from_data(hot, p.options()),
            labels: batch.labels.clone(),
        }
    }
}

/// Mean cross-entropy `−Σ_k y_k log softmax(z)_k` over the batch (one-hot `y`), with a graph.
pub fn cross_entropy(logits: Tensor<2>, one_hot: Tensor<2>) -> Tensor<1> {
    let one_hot = crate::norm::like(one_hot, &logits);
    let n = logits.dims()[0] as f64;
    (log_softmax(logits, 1) * one_hot).sum().neg() / n
}

/// Summed cross-entropy and number of correct predictions of `logits` (computed on the host in
/// f64, for evaluation).
pub fn score(logits: &Tensor<2>, labels: &[usize]) -> (f64, usize) {
    let k = logits.dims()[1];
    let values = to_vec(logits);
    let (mut loss, mut correct) = (0.0, 0);
    for (row, &label) in values.chunks_exact(k.max(1)).zip(labels) {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        loss += lse - row[label];
        if argmax(row) == label {
            correct += 1;
        }
    }
    (loss, correct)
}

/// Index of the largest value (the first one on ties; NaN never wins).
fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}
