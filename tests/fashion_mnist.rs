//! Real-data integration test: TinyResNet trained with the memory-free adjoint on a subset of
//! Fashion-MNIST must reach an accuracy far above chance (10 %). CI installs the data with
//! `apt-get install -y dataset-fashion-mnist`; without it the test prints a note and passes.

use resnet_ode::device::{Placement, Precision};
use resnet_ode::grad::GradMode;
use resnet_ode::models::ModelSpec;
use resnet_ode::train::{train, TrainConfig, TrainOptions};
use std::path::Path;

const DIR: &str = "/usr/share/datasets/fashion-mnist";

#[test]
fn tiny_resnet_learns_fashion_mnist_with_the_adjoint() {
    if !Path::new(DIR).is_dir() {
        eprintln!("skipped: {DIR} is absent (apt-get install -y dataset-fashion-mnist)");
        return;
    }
    // 3 epochs of 3000 images in batches of 32: 282 steps.
    let config = TrainConfig {
        data: format!("fashion-mnist:{DIR}"),
        model: ModelSpec {
            depth: Some(4),
            ..ModelSpec::default()
        },
        grad: GradMode::Adjoint,
        epochs: 3,
        batch_size: 32,
        lr: 0.05,
        limit_train: Some(3000),
        limit_test: Some(1000),
        ..TrainConfig::default()
    };
    let placement = Placement::flex(Precision::F32);
    let result = train(&config, &placement, &TrainOptions::default()).unwrap();
    let acc = result.best_test_acc();
    eprintln!(
        "fashion-mnist test accuracy per epoch: {:?}",
        result
            .history
            .iter()
            .map(|m| m.test_acc)
            .collect::<Vec<_>>()
    );
    assert!(acc > 0.6, "test accuracy {acc}");
}
