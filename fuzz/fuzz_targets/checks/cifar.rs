//! CIFAR-10 / CIFAR-100 binary files. Input: a selector byte (bit 0: CIFAR-100; bit 1: the
//! files in the archive's sub-folder), then the bytes written as every train file and as the
//! test file.

use resnet_ode::data::{load_cifar100_dir, load_cifar10_dir};

/// One input: a returned error must name its file; a panic or a failed assertion is a bug.
pub fn check(data: &[u8]) {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let top = crate::common::fresh_dir("cifar");
    let (hundred, nested) = (sel & 1 == 1, sel & 2 == 2);
    let dir = match (hundred, nested) {
        (false, true) => top.join("cifar-10-batches-bin"),
        (true, true) => top.join("cifar-100-binary"),
        _ => top.clone(),
    };
    let files: &[&str] = if hundred {
        &["train.bin", "test.bin"]
    } else {
        &[
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
            "test_batch.bin",
        ]
    };
    for f in files {
        crate::common::put(&dir.join(f), bytes);
    }
    let loaded = if hundred {
        load_cifar100_dir(&top)
    } else {
        load_cifar10_dir(&top)
    };
    match loaded {
        Ok(split) => {
            for ds in [&split.train, &split.test] {
                ds.validate().expect("a loaded CIFAR set is valid");
                assert!(ds.labels.iter().all(|&l| l < ds.classes));
            }
        }
        Err(e) => crate::common::assert_names(&e, &top),
    }
}
