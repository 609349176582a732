//! Image classification datasets as plain Rust buffers (no burn types here).
//!
//! Every loader returns images as `f32` in N×C×H×W order with labels in `0..classes`, already
//! checked: a truncated, corrupt or inconsistent file is an [`Error`] naming the file and what was
//! expected, never a panic. All randomness (the train/test split, shuffling, augmentation) comes
//! from [`Rng`], so a seed fixes every number and a trainer can checkpoint the generator.
//!
//! Sources: the built-in 8×8 [`digits`] (embedded, no file needed), MNIST / Fashion-MNIST IDX
//! files ([`load_idx_dir`]), the CIFAR-10/100 binary versions ([`load_cifar10_dir`],
//! [`load_cifar100_dir`]) and folders of PNG/JPEG images ([`load_image_folder`]); [`DataSpec`]
//! parses the `--data` strings that pick one. [`batches`] iterates over an epoch, preparing the
//! next batch on a background thread.
//!
//! Changes from the first sketch of this API, all for correctness:
//! - [`batches`] returns `Result<Batches>`: a zero batch size (a user setting) is an error, not a
//!   panic, and so is failing to start the worker thread. It draws the whole epoch's random
//!   numbers before returning, so `rng` already holds the post-epoch state.
//! - [`Normalization::apply`] returns `Result<()>`: statistics for another channel count are an
//!   error. [`Normalization`] is `Serialize + Deserialize` so a checkpoint can keep the
//!   training-set statistics.
//! - [`load_cifar10_dir`] / [`load_cifar100_dir`] also accept the parent of the archives'
//!   `cifar-10-batches-bin/` / `cifar-100-binary/` folder.

mod batches;
mod cifar;
mod digits;
mod folder;
mod idx;
#[cfg(test)]
mod test_util;

pub use batches::{batches, Augment, Batch, Batches};
pub use cifar::{load_cifar100_dir, load_cifar10_dir};
pub use digits::digits;
pub use folder::{load_image_folder, load_image_folder_eval};
pub use idx::load_idx_dir;

use crate::error::{Error, Result};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Fraction of the built-in digits held out for testing (scikit-learn's `train_test_split`
/// default, so results are comparable with the usual digits examples).
pub const DIGITS_TEST_FRACTION: f64 = 0.25;

/// Fraction held out when an image folder has no `train/` and `test/` sub-folders.
pub const FOLDER_TEST_FRACTION: f64 = 0.2;

/// Images as f32 in N×C×H×W order (values as loaded, e.g. 0..1 for 8-bit images scaled by 1/255,
/// digits 0..16 scaled by 1/16), labels in 0..classes.
#[derive(Clone, PartialEq)]
pub struct Dataset {
    pub images: Vec<f32>,
    pub labels: Vec<usize>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
    pub name: String,
}

/// What identifies a data set's content, so a run resumes on the same data however it is
/// named (a trailing slash, a relative path, a moved folder): the sizes and an FNV-1a checksum
/// of the pixels and labels.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataId {
    pub examples: usize,
    pub shape: [usize; 3],
    pub classes: usize,
    pub checksum: String,
}

impl Dataset {
    /// The identity of this set's content.
    pub fn id(&self) -> DataId {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0100_0000_01b3;
        let mut h = OFFSET;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h = (h ^ u64::from(b)).wrapping_mul(PRIME);
            }
        };
        for v in &self.images {
            eat(&v.to_le_bytes());
        }
        for &l in &self.labels {
            eat(&(l as u64).to_le_bytes());
        }
        DataId {
            examples: self.labels.len(),
            shape: [self.channels, self.height, self.width],
            classes: self.classes,
            checksum: format!("{h:016x}"),
        }
    }
}

/// A summary rather than the pixels, which would flood any log.
impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Dataset({}: {} × {}×{}×{}, {} classes)",
            self.name,
            self.len(),
            self.channels,
            self.height,
            self.width,
            self.classes
        )
    }
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image, C·H·W.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Pixels of example `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// The examples at `indices`, in that order (repeats allowed). Indices come from the program,
    /// not the user, so one out of range panics like slice indexing.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut images = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        Dataset {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            ..self.with_no_examples()
        }
    }

    /// The first `n` examples (all of them if there are fewer).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            images: self.images[..n * self.image_len()].to_vec(),
            labels: self.labels[..n].to_vec(),
            ..self.with_no_examples()
        }
    }

    /// Same shape, classes and name, no examples.
    fn with_no_examples(&self) -> Dataset {
        Dataset {
            images: Vec::new(),
            labels: Vec::new(),
            name: self.name.clone(),
            ..*self
        }
    }

    /// Checks that the buffers agree with the shape, labels are below `classes` and every value
    /// is finite, so later code may index without checks.
    pub fn validate(&self) -> Result<()> {
        let what = |field: &str| format!("dataset {} {field}", self.name);
        if self.image_len() == 0 || self.classes == 0 {
            return Err(Error::invalid(
                what("shape"),
                format!(
                    "channels, height, width and classes must be positive, found {}×{}×{} with {} classes",
                    self.channels, self.height, self.width, self.classes
                ),
            ));
        }
        if self.images.len() != self.len() * self.image_len() {
            return Err(Error::Shape {
                what: what("images"),
                expected: format!(
                    "{} values ({} labels × {}×{}×{})",
                    self.len() * self.image_len(),
                    self.len(),
                    self.channels,
                    self.height,
                    self.width
                ),
                found: format!("{} values", self.images.len()),
            });
        }
        if let Some((i, &l)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l >= self.classes)
        {
            return Err(Error::invalid(
                what("labels"),
                format!(
                    "label {l} of example {i} is not below {} classes",
                    self.classes
                ),
            ));
        }
        if self.images.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: what("images"),
            });
        }
        Ok(())
    }
}

/// A training set and a test set with the same shape and classes.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    pub train: Dataset,
    pub test: Dataset,
}

/// Seeded, stratified train/test split. The test set gets `round(len · test_fraction)` examples
/// (at least one, and at least one left for training), shared among the classes in proportion to
/// their sizes by largest remainder, so even small datasets keep their class balance; which
/// examples of a class go to the test set is drawn from `Rng::derive(seed, "data split")`. Both
/// parts keep the original order; shuffling is the batch iterator's job.
pub fn split(ds: &Dataset, test_fraction: f64, seed: u64) -> Result<Split> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(Error::invalid(
            "test fraction",
            format!("must be strictly between 0 and 1, found {test_fraction}"),
        ));
    }
    ds.validate()?;
    let n = ds.len();
    if n < 2 {
        return Err(Error::invalid(
            format!("dataset {}", ds.name),
            format!("{n} examples cannot be split into a training and a test set"),
        ));
    }
    let n_test = ((n as f64 * test_fraction).round() as usize).clamp(1, n - 1);
    let mut by_class = vec![Vec::new(); ds.classes];
    for (i, &l) in ds.labels.iter().enumerate() {
        by_class[l].push(i);
    }
    let quotas = class_quotas(&by_class, n, n_test);
    let mut rng = Rng::derive(seed, "data split");
    let mut in_test = vec![false; n];
    for (members, quota) in by_class.iter_mut().zip(quotas) {
        rng.shuffle(members);
        members[..quota].iter().for_each(|&i| in_test[i] = true);
    }
    let (test, train): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| in_test[i]);
    Ok(Split {
        train: ds.subset(&train),
        test: ds.subset(&test),
    })
}

/// Splits `total` among classes in proportion to their sizes: each gets the floor of its exact
/// share, and the leftover units go to the largest remainders (ties to the lower class). Exact
/// integer arithmetic, so the result cannot depend on rounding.
fn class_quotas(by_class: &[Vec<usize>], n: usize, total: usize) -> Vec<usize> {
    let shares: Vec<usize> = by_class.iter().map(|m| m.len() * total).collect();
    let mut quotas: Vec<usize> = shares.iter().map(|s| s / n).collect();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by_key(|&c| std::cmp::Reverse(shares[c] % n));
    let leftover = total - quotas.iter().sum::<usize>();
    order.iter().take(leftover).for_each(|&c| quotas[c] += 1);
    quotas
}

/// Per-channel normalisation, computed on the training set and applied to both sets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// Mean and (population) standard deviation of each channel over all pixels of all images,
    /// accumulated in f64. A constant channel gets std 1 so applying it never divides by zero.
    pub fn compute(ds: &Dataset) -> Normalization {
        let plane = ds.height * ds.width;
        let mut sum = vec![0f64; ds.channels];
        let mut sum_sq = vec![0f64; ds.channels];
        for image in ds.images.chunks_exact(ds.image_len().max(1)) {
            for (c, values) in image.chunks_exact(plane.max(1)).enumerate() {
                for &v in values {
                    sum[c] += v as f64;
                    sum_sq[c] += (v as f64) * (v as f64);
                }
            }
        }
        let count = (ds.len() * plane) as f64;
        let (mut mean, mut std) = (Vec::new(), Vec::new());
        for (s, s2) in sum.iter().zip(&sum_sq) {
            let m = if count > 0.0 { s / count } else { 0.0 };
            let var = if count > 0.0 {
                (s2 / count - m * m).max(0.0)
            } else {
                1.0
            };
            mean.push(m as f32);
            std.push(if var > 1e-12 { var.sqrt() as f32 } else { 1.0 });
        }
        Normalization { mean, std }
    }

    /// A fixed normalisation by name, as a pretrained model was trained with: `imagenet`
    /// (torchvision's and He et al.'s CIFAR checkpoints), `cifar10` (the paper authors'
    /// resnet_nodes) or `none` (pixels in [0, 1]), for images of `channels` channels.
    pub fn preset(name: &str, channels: usize) -> Result<Normalization> {
        let (mean, std) = match name {
            "imagenet" => ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            "cifar10" => ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]),
            "none" => {
                return Ok(Normalization {
                    mean: vec![0.0; channels],
                    std: vec![1.0; channels],
                })
            }
            _ => {
                return Err(Error::invalid(
                    "--normalize",
                    format!("`{name}`: expected imagenet, cifar10 or none"),
                ))
            }
        };
        if channels != 3 {
            return Err(Error::invalid(
                "--normalize",
                format!(
                    "{name} holds statistics of 3 channels; the images have {channels} (use none)"
                ),
            ));
        }
        Ok(Normalization {
            mean: mean.to_vec(),
            std: std.to_vec(),
        })
    }

    /// `x ← (x − mean_c) / std_c` in place; the dataset must have as many channels as the
    /// statistics.
    pub fn apply(&self, ds: &mut Dataset) -> Result<()> {
        if self.mean.len() != ds.channels || self.std.len() != ds.channels {
            return Err(Error::Shape {
                what: format!("normalisation of {}", ds.name),
                expected: format!("{} channels", ds.channels),
                found: format!("{} means and {} stds", self.mean.len(), self.std.len()),
            });
        }
        let plane = (ds.height * ds.width).max(1);
        for (k, values) in ds.images.chunks_exact_mut(plane).enumerate() {
            let c = k % ds.channels;
            let (m, s) = (self.mean[c], self.std[c]);
            values.iter_mut().for_each(|v| *v = (*v - m) / s);
        }
        Ok(())
    }
}

/// Which dataset to use, as given to `--data`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSpec {
    Digits,
    Mnist(PathBuf),
    FashionMnist(PathBuf),
    Cifar10(PathBuf),
    Cifar100(PathBuf),
    Images(PathBuf),
}

const DATA_KINDS: &str =
    "digits, mnist:DIR, fashion-mnist:DIR, cifar10:DIR, cifar100:DIR, images:DIR";

impl FromStr for DataSpec {
    type Err = Error;

    /// `"digits"` or `"KIND:DIR"`; only the first `:` separates, so DIR may contain colons.
    fn from_str(s: &str) -> Result<Self> {
        if s == "digits" {
            return Ok(DataSpec::Digits);
        }
        let (kind, dir) = s.split_once(':').unwrap_or((s, ""));
        let make: fn(PathBuf) -> DataSpec = match kind {
            "mnist" => DataSpec::Mnist,
            "fashion-mnist" => DataSpec::FashionMnist,
            "cifar10" => DataSpec::Cifar10,
            "cifar100" => DataSpec::Cifar100,
            "images" => DataSpec::Images,
            _ => {
                return Err(Error::invalid(
                    "--data",
                    format!("unknown dataset '{s}'; expected one of {DATA_KINDS}"),
                ))
            }
        };
        if dir.is_empty() {
            return Err(Error::invalid(
                "--data",
                format!("'{s}' needs a directory, as in {kind}:DIR"),
            ));
        }
        Ok(make(PathBuf::from(dir)))
    }
}

/// The `--data` string that parses back to the same spec, for logs and run records.
impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, dir) = match self {
            DataSpec::Digits => return f.write_str("digits"),
            DataSpec::Mnist(d) => ("mnist", d),
            DataSpec::FashionMnist(d) => ("fashion-mnist", d),
            DataSpec::Cifar10(d) => ("cifar10", d),
            DataSpec::Cifar100(d) => ("cifar100", d),
            DataSpec::Images(d) => ("images", d),
        };
        write!(f, "{kind}:{}", dir.display())
    }
}

impl DataSpec {
    /// Loads the train and test sets; `seed` fixes the split where the source has none
    /// (digits, image folders without `train/` and `test/`).
    pub fn load(&self, seed: u64) -> Result<Split> {
        match self {
            DataSpec::Digits => split(&digits()?, DIGITS_TEST_FRACTION, seed),
            DataSpec::Mnist(dir) => load_idx_dir(dir, "mnist"),
            DataSpec::FashionMnist(dir) => load_idx_dir(dir, "fashion-mnist"),
            DataSpec::Cifar10(dir) => load_cifar10_dir(dir),
            DataSpec::Cifar100(dir) => load_cifar100_dir(dir),
            DataSpec::Images(dir) => Ok(load_image_folder(dir, seed)?.0),
        }
    }

    /// The images to evaluate a model on: the test set; an image folder is used whole (see
    /// [`load_image_folder_eval`]).
    pub fn load_eval(&self, seed: u64) -> Result<Dataset> {
        match self {
            DataSpec::Images(dir) => load_image_folder_eval(dir),
            other => Ok(other.load(seed)?.test),
        }
    }

    /// Whether training should augment by default: CIFAR models overfit without crop + flip,
    /// while flipping digits would change their meaning.
    pub fn default_augment(&self) -> bool {
        matches!(self, DataSpec::Cifar10(_) | DataSpec::Cifar100(_))
    }
}

/// Reads a whole file, naming it in the error.
fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))
}

/// Reads a file and gunzips it when it starts with the gzip magic bytes, so `.gz` and raw copies
/// of the same data load alike whatever their names.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_file(path)?;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| Error::file(path, format!("corrupt or truncated gzip data: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Example `i` has every pixel equal to `i` and label `i % classes`.
    fn numbered(n: usize, classes: usize) -> Dataset {
        Dataset {
            images: (0..n).flat_map(|i| vec![i as f32; 2 * 3 * 3]).collect(),
            labels: (0..n).map(|i| i % classes).collect(),
            channels: 2,
            height: 3,
            width: 3,
            classes,
            name: "numbered".into(),
        }
    }

    fn ids(ds: &Dataset) -> Vec<usize> {
        (0..ds.len()).map(|i| ds.image(i)[0] as usize).collect()
    }

    #[test]
    fn subset_take_and_validate() {
        let ds = numbered(10, 3);
        assert_eq!(ds.image_len(), 18);
        assert_eq!(ids(&ds.subset(&[4, 1, 4])), vec![4, 1, 4]);
        assert_eq!(ds.subset(&[4, 1]).labels, vec![1, 1]);
        assert_eq!(ids(&ds.take(3)), vec![0, 1, 2]);
        assert_eq!(ds.take(99).len(), 10);
        ds.validate().unwrap();

        let mut bad = ds.clone();
        bad.labels[7] = 3;
        assert!(bad.validate().unwrap_err().to_string().contains("label 3"));
        let mut bad = ds.clone();
        bad.images.pop();
        assert!(matches!(bad.validate(), Err(Error::Shape { .. })));
        let mut bad = ds;
        bad.images[5] = f32::NAN;
        assert!(matches!(bad.validate(), Err(Error::NonFinite { .. })));
    }

    #[test]
    fn split_is_seeded_disjoint_stratified_and_complete() {
        let ds = numbered(103, 4);
        let a = split(&ds, 0.25, 11).unwrap();
        assert_eq!(a, split(&ds, 0.25, 11).unwrap());
        assert_ne!(ids(&a.test), ids(&split(&ds, 0.25, 12).unwrap().test));
        let mut all = [ids(&a.train), ids(&a.test)].concat();
        all.sort_unstable();
        assert_eq!(all, (0..103).collect::<Vec<_>>());
        assert_eq!(a.test.len(), 26);
        for c in 0..4 {
            let count = |d: &Dataset| d.labels.iter().filter(|&&l| l == c).count() as f64;
            assert!(
                (count(&a.test) - count(&ds) * 0.25).abs() < 1.0,
                "class {c}"
            );
        }
        let tiny = split(&numbered(4, 2), 0.2, 1).unwrap();
        assert_eq!((tiny.train.len(), tiny.test.len()), (3, 1));
        for bad in [0.0, 1.0, f64::NAN] {
            assert!(split(&ds, bad, 1).is_err());
        }
        assert!(split(&numbered(1, 1), 0.25, 1).is_err());
    }

    #[test]
    fn normalization_gives_zero_mean_unit_std_per_channel() {
        let mut rng = Rng::new(5);
        let mut ds = numbered(50, 2);
        for (k, v) in ds.images.iter_mut().enumerate() {
            let channel = (k / 9) % 2;
            *v = (3.0 + 5.0 * channel as f64 + (1.0 + channel as f64) * rng.normal()) as f32;
        }
        let norm = Normalization::compute(&ds);
        assert!((norm.mean[1] - 8.0).abs() < 0.3 && (norm.std[1] - 2.0).abs() < 0.3);
        norm.apply(&mut ds).unwrap();
        let after = Normalization::compute(&ds);
        for c in 0..2 {
            assert!(after.mean[c].abs() < 1e-5, "{after:?}");
            assert!((after.std[c] - 1.0).abs() < 1e-4, "{after:?}");
        }
        let mut constant = numbered(3, 1);
        constant.images.fill(2.0);
        assert_eq!(Normalization::compute(&constant).std, vec![1.0, 1.0]);
        let mut gray = numbered(2, 1);
        gray.channels = 1;
        gray.height = 6;
        assert!(norm.apply(&mut gray).is_err());
    }

    #[test]
    fn data_spec_parses_round_trips_and_rejects_unknown_kinds() {
        let specs = [
            ("digits", DataSpec::Digits),
            ("mnist:/d/m", DataSpec::Mnist("/d/m".into())),
            ("fashion-mnist:f", DataSpec::FashionMnist("f".into())),
            ("cifar10:c:x", DataSpec::Cifar10("c:x".into())),
            ("cifar100:c", DataSpec::Cifar100("c".into())),
            ("images:i", DataSpec::Images("i".into())),
        ];
        for (text, spec) in specs {
            assert_eq!(text.parse::<DataSpec>().unwrap(), spec);
            assert_eq!(spec.to_string(), text);
        }
        assert!(DataSpec::Cifar10("c".into()).default_augment());
        assert!(!DataSpec::Digits.default_augment());
        let err = "svhn:/x".parse::<DataSpec>().unwrap_err().to_string();
        assert!(
            err.contains("--data") && err.contains("cifar100:DIR"),
            "{err}"
        );
        assert!("mnist".parse::<DataSpec>().is_err());
        assert!("mnist:".parse::<DataSpec>().is_err());
    }

    #[test]
    fn digits_spec_loads_a_quarter_for_testing() {
        let s = DataSpec::Digits.load(3).unwrap();
        assert_eq!(s.train.len() + s.test.len(), 1797);
        assert!((s.test.len() as f64 - 1797.0 * 0.25).abs() < 6.0);
    }
}
