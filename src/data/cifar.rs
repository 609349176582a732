//! CIFAR-10 and CIFAR-100, "binary version" files.
//!
//! Each record is the label byte(s) then 3072 pixel bytes: the 32×32 red plane, then green, then
//! blue, i.e. already C×H×W. CIFAR-100 records carry a coarse (20-class) and a fine (100-class)
//! label; the fine one is the usual benchmark.

use super::{read_file, Dataset, Split};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

const SIDE: usize = 32;
const CHANNELS: usize = 3;
const PIXELS: usize = CHANNELS * SIDE * SIDE;

/// How one variant lays out its records.
struct Layout {
    name: &'static str,
    /// Label bytes before the pixels; the last one is the label used.
    label_bytes: usize,
    classes: usize,
    train_files: &'static [&'static str],
    test_file: &'static str,
    /// The folder the official archive unpacks to, accepted in place of `dir`.
    archive_dir: &'static str,
}

const CIFAR10: Layout = Layout {
    name: "cifar10",
    label_bytes: 1,
    classes: 10,
    train_files: &[
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
    ],
    test_file: "test_batch.bin",
    archive_dir: "cifar-10-batches-bin",
};

const CIFAR100: Layout = Layout {
    name: "cifar100",
    label_bytes: 2,
    classes: 100,
    train_files: &["train.bin"],
    test_file: "test.bin",
    archive_dir: "cifar-100-binary",
};

/// CIFAR-10 from `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin` in `dir` (or in
/// `dir/cifar-10-batches-bin`). Pixels scaled by 1/255; 3×32×32, 10 classes.
pub fn load_cifar10_dir(dir: &Path) -> Result<Split> {
    load(dir, &CIFAR10)
}

/// CIFAR-100 from `train.bin` and `test.bin` in `dir` (or in `dir/cifar-100-binary`), with the
/// fine labels. Pixels scaled by 1/255; 3×32×32, 100 classes.
pub fn load_cifar100_dir(dir: &Path) -> Result<Split> {
    load(dir, &CIFAR100)
}

fn load(dir: &Path, layout: &Layout) -> Result<Split> {
    let dir = resolve_dir(dir, layout);
    let mut train = empty(layout);
    for file in layout.train_files {
        read_records(&dir.join(file), layout, &mut train)?;
    }
    let mut test = empty(layout);
    read_records(&dir.join(layout.test_file), layout, &mut test)?;
    Ok(Split { train, test })
}

/// `dir`, unless the files are one level down in the archive's own folder.
fn resolve_dir(dir: &Path, layout: &Layout) -> PathBuf {
    let nested = dir.join(layout.archive_dir);
    if !dir.join(layout.test_file).is_file() && nested.join(layout.test_file).is_file() {
        nested
    } else {
        dir.to_path_buf()
    }
}

fn empty(layout: &Layout) -> Dataset {
    Dataset {
        images: Vec::new(),
        labels: Vec::new(),
        channels: CHANNELS,
        height: SIDE,
        width: SIDE,
        classes: layout.classes,
        name: layout.name.into(),
    }
}

/// Appends the records of one file to `ds`, checking the length and every label.
fn read_records(path: &Path, layout: &Layout, ds: &mut Dataset) -> Result<()> {
    let bytes = read_file(path)?;
    let record = layout.label_bytes + PIXELS;
    if bytes.is_empty() || bytes.len() % record != 0 {
        return Err(Error::file(
            path,
            format!(
                "{} bytes is not a positive multiple of the {record}-byte {} record (truncated or not a {} binary file)",
                bytes.len(),
                layout.name,
                layout.name
            ),
        ));
    }
    for (i, rec) in bytes.chunks_exact(record).enumerate() {
        let label = rec[layout.label_bytes - 1] as usize;
        if label >= layout.classes {
            return Err(Error::file(
                path,
                format!(
                    "record {i} has label {label}, expected 0..{}",
                    layout.classes
                ),
            ));
        }
        ds.labels.push(label);
        ds.images
            .extend(rec[layout.label_bytes..].iter().map(|&p| p as f32 / 255.0));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{write, TempDir};
    use super::*;

    /// `labels.len()` records whose pixels are `k + record index` (mod 256).
    fn records(labels: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, l) in labels.iter().enumerate() {
            out.extend_from_slice(l);
            out.extend((0..PIXELS).map(|k| ((k + i) % 256) as u8));
        }
        out
    }

    #[test]
    fn cifar10_loads_back_and_rejects_bad_files() {
        let dir = TempDir::new("cifar10");
        for (b, file) in CIFAR10.train_files.iter().enumerate() {
            write(&dir.path().join(file), &records(&[&[b as u8], &[9]]), false);
        }
        write(&dir.path().join("test_batch.bin"), &records(&[&[3]]), false);
        let s = load_cifar10_dir(dir.path()).unwrap();
        assert_eq!(s.train.labels, vec![0, 9, 1, 9, 2, 9, 3, 9, 4, 9]);
        assert_eq!(s.test.labels, vec![3]);
        assert_eq!(
            (s.train.channels, s.train.height, s.train.width),
            (3, 32, 32)
        );
        assert_eq!(s.train.image(1)[0..2], [1.0 / 255.0, 2.0 / 255.0]);
        assert_eq!(s.test.image(0)[PIXELS - 1], (3071 % 256) as f32 / 255.0);
        s.train.validate().unwrap();

        let bad = dir.path().join("data_batch_3.bin");
        write(&bad, &records(&[&[1]])[..PIXELS], false);
        let err = load_cifar10_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("data_batch_3.bin") && err.contains("3073-byte"),
            "{err}"
        );
        write(&bad, &records(&[&[1], &[10]]), false);
        let err = load_cifar10_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("data_batch_3.bin") && err.contains("label 10"),
            "{err}"
        );
        std::fs::remove_file(&bad).unwrap();
        let err = load_cifar10_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("data_batch_3.bin"), "{err}");
    }

    #[test]
    fn cifar100_uses_fine_labels_from_the_archive_folder() {
        let top = TempDir::new("cifar100");
        let dir = top.path().join("cifar-100-binary");
        std::fs::create_dir(&dir).unwrap();
        write(
            &dir.join("train.bin"),
            &records(&[&[19, 99], &[0, 42]]),
            false,
        );
        write(&dir.join("test.bin"), &records(&[&[5, 7]]), false);
        let s = load_cifar100_dir(top.path()).unwrap();
        assert_eq!(
            (s.train.labels.clone(), s.test.labels),
            (vec![99, 42], vec![7])
        );
        assert_eq!(s.train.classes, 100);
        write(&dir.join("test.bin"), &records(&[&[5, 100]]), false);
        let err = load_cifar100_dir(&dir).unwrap_err().to_string();
        assert!(
            err.contains("test.bin") && err.contains("label 100"),
            "{err}"
        );
    }
}
