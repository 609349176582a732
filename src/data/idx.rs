//! MNIST-style IDX files (MNIST, Fashion-MNIST, KMNIST, …), raw or gzipped.
//!
//! Format: a big-endian u32 magic (2051 for unsigned-byte 3-D image arrays, 2049 for 1-D label
//! arrays), one big-endian u32 per dimension, then the bytes. Everything is checked against the
//! header, so a truncated download fails here with the file name instead of later as a shape
//! error.

use super::{read_maybe_gz, Dataset, Split};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

const IMAGES_MAGIC: u32 = 2051;
const LABELS_MAGIC: u32 = 2049;
/// MNIST and its drop-in replacements have ten classes.
const CLASSES: usize = 10;

/// Loads `train-*` and `t10k-*` image/label IDX files (each raw or `.gz`) from `dir`; `name`
/// becomes the datasets' name. Pixels are scaled by 1/255 to [0, 1]; images are 1×rows×cols.
pub fn load_idx_dir(dir: &Path, name: &str) -> Result<Split> {
    Ok(Split {
        train: load_pair(dir, "train", name)?,
        test: load_pair(dir, "t10k", name)?,
    })
}

/// One image file and its label file, which must hold the same number of examples.
fn load_pair(dir: &Path, prefix: &str, name: &str) -> Result<Dataset> {
    let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let (n, rows, cols, pixels) = read_images(&images_path)?;
    let labels = read_labels(&labels_path)?;
    if labels.len() != n {
        return Err(Error::file(
            &labels_path,
            format!(
                "holds {} labels but {} holds {n} images",
                labels.len(),
                images_path.display()
            ),
        ));
    }
    Ok(Dataset {
        images: pixels,
        labels,
        channels: 1,
        height: rows,
        width: cols,
        classes: CLASSES,
        name: name.into(),
    })
}

/// `dir/stem`, or `dir/stem.gz` when only that exists.
fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    let raw = dir.join(stem);
    let gz = dir.join(format!("{stem}.gz"));
    [raw, gz].into_iter().find(|p| p.is_file()).ok_or_else(|| {
        Error::file(
            dir.join(stem),
            format!("missing: expected {stem} or {stem}.gz in {}", dir.display()),
        )
    })
}

/// Checks the magic and dimension count and returns the dimensions and the payload, which must
/// be exactly as long as the dimensions say.
fn parse<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: u32,
    dims: usize,
) -> Result<(Vec<usize>, &'a [u8])> {
    let header = 4 * (1 + dims);
    if bytes.len() < header {
        return Err(Error::file(
            path,
            format!(
                "truncated: {} bytes, shorter than the {header}-byte IDX header",
                bytes.len()
            ),
        ));
    }
    let word = |k: usize| {
        u32::from_be_bytes([
            bytes[4 * k],
            bytes[4 * k + 1],
            bytes[4 * k + 2],
            bytes[4 * k + 3],
        ])
    };
    if word(0) != magic {
        return Err(Error::file(
            path,
            format!("bad IDX magic number {}, expected {magic}", word(0)),
        ));
    }
    let shape: Vec<usize> = (1..=dims).map(|k| word(k) as usize).collect();
    let expected = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|payload| payload.checked_add(header));
    match expected {
        Some(len) if len == bytes.len() => Ok((shape, &bytes[header..])),
        Some(len) => Err(Error::file(
            path,
            format!(
                "{} bytes, expected exactly {len} for shape {shape:?} (truncated or corrupt file)",
                bytes.len()
            ),
        )),
        None => Err(Error::file(path, format!("impossible shape {shape:?}"))),
    }
}

/// Images file: returns (count, rows, cols, pixels scaled to [0, 1]).
fn read_images(path: &Path) -> Result<(usize, usize, usize, Vec<f32>)> {
    let bytes = read_maybe_gz(path)?;
    let (shape, pixels) = parse(path, &bytes, IMAGES_MAGIC, 3)?;
    if shape.contains(&0) {
        return Err(Error::file(
            path,
            format!("empty image array {shape:?}, expected count, rows and cols all positive"),
        ));
    }
    let scaled = pixels.iter().map(|&p| p as f32 / 255.0).collect();
    Ok((shape[0], shape[1], shape[2], scaled))
}

/// Labels file: every label must be a digit class.
fn read_labels(path: &Path) -> Result<Vec<usize>> {
    let bytes = read_maybe_gz(path)?;
    let (_, labels) = parse(path, &bytes, LABELS_MAGIC, 1)?;
    if let Some((i, &l)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= CLASSES)
    {
        return Err(Error::file(
            path,
            format!("label {l} at index {i} is out of range, expected 0..{CLASSES}"),
        ));
    }
    Ok(labels.iter().map(|&l| l as usize).collect())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{write, TempDir};
    use super::*;

    fn idx(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
        let header = std::iter::once(magic).chain(dims.iter().copied());
        header
            .flat_map(u32::to_be_bytes)
            .chain(payload.iter().copied())
            .collect()
    }

    /// Writes a 3-image train set and a 2-image test set of 2×3 images; returns the pixels.
    fn write_set(dir: &Path, gz: bool) -> (Vec<u8>, Vec<u8>) {
        let ext = if gz { ".gz" } else { "" };
        let train: Vec<u8> = (0..18).map(|k| (k * 14) as u8).collect();
        let test: Vec<u8> = (0..12).map(|k| 255 - k as u8).collect();
        let file = |stem: &str| dir.join(format!("{stem}{ext}"));
        write(
            &file("train-images-idx3-ubyte"),
            &idx(IMAGES_MAGIC, &[3, 2, 3], &train),
            gz,
        );
        write(
            &file("train-labels-idx1-ubyte"),
            &idx(LABELS_MAGIC, &[3], &[7, 0, 9]),
            gz,
        );
        write(
            &file("t10k-images-idx3-ubyte"),
            &idx(IMAGES_MAGIC, &[2, 2, 3], &test),
            gz,
        );
        write(
            &file("t10k-labels-idx1-ubyte"),
            &idx(LABELS_MAGIC, &[2], &[1, 2]),
            gz,
        );
        (train, test)
    }

    fn scaled(bytes: &[u8]) -> Vec<f32> {
        bytes.iter().map(|&b| b as f32 / 255.0).collect()
    }

    #[test]
    fn raw_and_gzipped_idx_load_back_exactly() {
        for gz in [false, true] {
            let dir = TempDir::new("idx");
            let (train, test) = write_set(dir.path(), gz);
            let s = load_idx_dir(dir.path(), "toy").unwrap();
            assert_eq!((s.train.channels, s.train.height, s.train.width), (1, 2, 3));
            assert_eq!(s.train.images, scaled(&train));
            assert_eq!(s.train.labels, vec![7, 0, 9]);
            assert_eq!(s.test.images, scaled(&test));
            assert_eq!(s.test.labels, vec![1, 2]);
            assert_eq!((s.test.name.as_str(), s.test.classes), ("toy", 10));
        }
    }

    /// Loading after `corrupt` rewrote one file fails with an error naming that file.
    fn assert_error_names(file: &str, corrupt: impl Fn(&mut Vec<u8>), expect: &str) {
        let dir = TempDir::new("idx-bad");
        write_set(dir.path(), false);
        let path = dir.path().join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        corrupt(&mut bytes);
        write(&path, &bytes, false);
        let err = load_idx_dir(dir.path(), "toy").unwrap_err().to_string();
        assert!(err.contains(file) && err.contains(expect), "{err}");
    }

    #[test]
    fn truncated_wrong_magic_bad_label_and_count_mismatch_name_the_file() {
        assert_error_names(
            "train-images-idx3-ubyte",
            |b| b.truncate(b.len() - 1),
            "expected exactly 34",
        );
        assert_error_names("t10k-images-idx3-ubyte", |b| b.truncate(10), "header");
        assert_error_names("t10k-labels-idx1-ubyte", |b| b[2] = 9, "magic");
        assert_error_names(
            "train-labels-idx1-ubyte",
            |b| b[9] = 10,
            "label 10 at index 1",
        );
        assert_error_names(
            "t10k-labels-idx1-ubyte",
            |b| {
                b[7] = 1;
                b.pop();
            },
            "1 labels",
        );
        let dir = TempDir::new("idx-gz");
        write_set(dir.path(), true);
        let path = dir.path().join("train-images-idx3-ubyte.gz");
        let bytes = std::fs::read(&path).unwrap();
        write(&path, &bytes[..bytes.len() / 2], false);
        let err = load_idx_dir(dir.path(), "toy").unwrap_err().to_string();
        assert!(
            err.contains("train-images-idx3-ubyte.gz") && err.contains("gzip"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_is_named() {
        let dir = TempDir::new("idx-missing");
        let err = load_idx_dir(dir.path(), "toy").unwrap_err().to_string();
        assert!(err.contains("train-images-idx3-ubyte.gz"), "{err}");
    }

    /// The Debian `dataset-fashion-mnist` package, when installed.
    #[test]
    fn real_fashion_mnist_when_installed() {
        let dir = Path::new("/usr/share/datasets/fashion-mnist");
        if !dir.is_dir() {
            return;
        }
        let s = load_idx_dir(dir, "fashion-mnist").unwrap();
        assert_eq!((s.train.len(), s.test.len()), (60000, 10000));
        assert_eq!(
            (s.train.channels, s.train.height, s.train.width),
            (1, 28, 28)
        );
    }
}
