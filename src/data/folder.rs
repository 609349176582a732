//! Folders of PNG/JPEG images, one sub-folder per class (the torchvision `ImageFolder` layout).
//!
//! ```text
//! dir/cat/001.png  dir/dog/001.png …                 split with seed, 20 % for testing
//! dir/train/cat/…  dir/test/cat/…                    used as given
//! ```
//! Class names are sorted, so the label of a class does not depend on the file system's order.

use super::{split, Dataset, Split, FOLDER_TEST_FRACTION};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// File extensions decoded (case-insensitive); other files such as notes are skipped.
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Loads an image folder; returns the split and the class names (sorted). Labels are the
/// positions of the class folders in that order, except when every class folder is named by
/// an integer (`0/`, `3/`, `10/`): those integers are then the labels (and the class count is
/// the largest plus one), so a pretrained model's output index is the folder name even when
/// some classes have no image. Gray images give 1 channel, colour images 3 (alpha is dropped);
/// every image must have the channel count and size of the first one. Values are scaled to
/// [0, 1].
pub fn load_image_folder(dir: &Path, seed: u64) -> Result<(Split, Vec<String>)> {
    let (train_dir, test_dir) = (dir.join("train"), dir.join("test"));
    let mut loader = Loader::new(dir);
    if train_dir.is_dir() && test_dir.is_dir() {
        let names = class_names(&train_dir)?;
        let mut train = loader.load(&train_dir, &names, &names)?;
        let mut test = loader.load(&test_dir, &class_names(&test_dir)?, &names)?;
        numeric_labels(&mut train, &names);
        numeric_labels(&mut test, &names);
        Ok((Split { train, test }, names))
    } else {
        let names = class_names(dir)?;
        let mut all = loader.load(dir, &names, &names)?;
        numeric_labels(&mut all, &names);
        Ok((split(&all, FOLDER_TEST_FRACTION, seed)?, names))
    }
}

/// Loads an image folder to evaluate a model on: every image, or only `test/` when the folder
/// has `train/` and `test/`; labels as in [`load_image_folder`].
pub fn load_image_folder_eval(dir: &Path) -> Result<Dataset> {
    if dir.join("train").is_dir() && dir.join("test").is_dir() {
        return Ok(load_image_folder(dir, 0)?.0.test);
    }
    let names = class_names(dir)?;
    let mut ds = Loader::new(dir).load(dir, &names, &names)?;
    numeric_labels(&mut ds, &names);
    Ok(ds)
}

/// Relabels `ds` (labels: positions in `names`) by the class names when all are integers.
fn numeric_labels(ds: &mut Dataset, names: &[String]) {
    let numbers: Option<Vec<usize>> = names.iter().map(|n| n.parse().ok()).collect();
    if let Some(numbers) = numbers {
        ds.labels = ds.labels.iter().map(|&l| numbers[l]).collect();
        ds.classes = numbers.iter().max().map_or(0, |m| m + 1);
    }
}

/// The sorted names of the visible sub-folders of `dir`; at least one is required.
fn class_names(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(Error::file(
            dir,
            "no class sub-folders found, expected DIR/CLASS/IMAGE.png",
        ));
    }
    Ok(names)
}

/// All entries of `dir`, sorted by path so loading order is reproducible.
fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let read_err = |e: std::io::Error| Error::file(dir, format!("cannot list folder: {e}"));
    let mut paths = std::fs::read_dir(dir)
        .map_err(read_err)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(read_err)?;
    paths.sort();
    Ok(paths)
}

fn is_image(path: &Path) -> bool {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    path.is_file() && ext.is_some_and(|e| EXTENSIONS.contains(&e.as_str()))
}

/// The most pixels one image may have (4096 × 4096): far above what a classifier trains on,
/// and its decoded floats (192 MiB in RGB) still fit beside the data set.
pub const MAX_PIXELS: u64 = 4096 * 4096;

/// The most the decoder may allocate for one image.
pub const MAX_DECODE_BYTES: u64 = 256 << 20;

/// Channels, height and width every image must share, and the file that set them.
struct Shape {
    channels: usize,
    height: usize,
    width: usize,
    file: PathBuf,
}

impl Shape {
    /// The error for `file`, of `width`×`height` (and `channels`, once decoded), unlike this
    /// first image.
    fn mismatch(&self, file: &Path, width: usize, height: usize, channels: Option<usize>) -> Error {
        let found = match channels {
            Some(c) => format!("{width}×{height} with {c} channel(s)"),
            None => format!("{width}×{height}"),
        };
        Error::file(
            file,
            format!(
                "is {found}, expected {}×{} with {} like {}; all images must share size and channel count",
                self.width,
                self.height,
                self.channels,
                self.file.display()
            ),
        )
    }
}

/// Loads class folders, checking every image against the first one seen (across train and test).
struct Loader {
    name: String,
    first: Option<Shape>,
}

impl Loader {
    /// A loader naming its datasets after `dir`.
    fn new(dir: &Path) -> Self {
        let name = dir.file_name().map_or_else(
            || "images".to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Self { name, first: None }
    }

    /// Loads `root/CLASS/*` for each class in `present`; labels are positions in `all`.
    fn load(&mut self, root: &Path, present: &[String], all: &[String]) -> Result<Dataset> {
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for class in present {
            let class_dir = root.join(class);
            let label = all.iter().position(|c| c == class).ok_or_else(|| {
                Error::file(
                    &class_dir,
                    format!("class '{class}' is not among the training classes {all:?}"),
                )
            })?;
            let files: Vec<PathBuf> = entries(&class_dir)?
                .into_iter()
                .filter(|p| is_image(p))
                .collect();
            if files.is_empty() {
                return Err(Error::file(
                    &class_dir,
                    "class folder holds no .png/.jpg/.jpeg images",
                ));
            }
            for file in files {
                images.extend(self.decode(&file)?);
                labels.push(label);
            }
        }
        let first = self
            .first
            .as_ref()
            .ok_or_else(|| Error::file(root, "holds no images"))?;
        let ds = Dataset {
            images,
            labels,
            channels: first.channels,
            height: first.height,
            width: first.width,
            classes: all.len(),
            name: self.name.clone(),
        };
        ds.validate()?;
        Ok(ds)
    }

    /// Decodes one image to C×H×W floats in [0, 1], checking it against the first image. The
    /// header is read first, so an image of another size, or one larger than
    /// [`MAX_PIXELS`], is refused before anything is decoded; the decoder may allocate at
    /// most [`MAX_DECODE_BYTES`] (a hostile file's header cannot make it take gigabytes).
    fn decode(&mut self, file: &Path) -> Result<Vec<f32>> {
        let open = || {
            image::ImageReader::open(file)
                .map_err(|e| Error::file(file, format!("cannot open: {e}")))?
                .with_guessed_format()
                .map_err(|e| Error::file(file, format!("cannot read: {e}")))
        };
        let (w, h) = open()?
            .into_dimensions()
            .map_err(|e| Error::file(file, format!("cannot decode image: {e}")))?;
        let (width, height) = (w as usize, h as usize);
        if let Some(first) = self
            .first
            .as_ref()
            .filter(|f| (f.width, f.height) != (width, height))
        {
            return Err(first.mismatch(file, width, height, None));
        }
        if (width as u64) * (height as u64) > MAX_PIXELS {
            return Err(Error::file(
                file,
                format!("is {width}×{height}: larger than the {MAX_PIXELS} pixels an image may have here; resize the images (a classifier's inputs are small)"),
            ));
        }
        let mut reader = open()?;
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(MAX_DECODE_BYTES);
        reader.limits(limits);
        let img = reader
            .decode()
            .map_err(|e| Error::file(file, format!("cannot decode image: {e}")))?;
        let (channels, interleaved) = if img.color().has_color() {
            (3, img.to_rgb32f().into_raw())
        } else {
            (1, img.to_luma32f().into_raw())
        };
        let first = self.first.get_or_insert_with(|| Shape {
            channels,
            height,
            width,
            file: file.to_path_buf(),
        });
        if (first.channels, first.height, first.width) != (channels, height, width) {
            return Err(first.mismatch(file, width, height, Some(channels)));
        }
        Ok(planar(&interleaved, channels))
    }
}

/// H×W×C (as decoders store pixels) to C×H×W.
fn planar(interleaved: &[f32], channels: usize) -> Vec<f32> {
    (0..channels)
        .flat_map(|c| interleaved.iter().skip(c).step_by(channels).copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::test_util::TempDir;
    use super::*;
    use image::{Rgb, RgbImage, Rgba, RgbaImage};

    /// A 3×2 RGB image whose red channel is `v`, green `2v`, blue 255.
    fn save_rgb(path: &Path, v: u8) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        RgbImage::from_pixel(3, 2, Rgb([v, 2 * v, 255]))
            .save(path)
            .unwrap();
    }

    #[test]
    fn two_classes_load_with_sorted_labels_and_split() {
        let dir = TempDir::new("folder");
        for (class, v) in [("zebra", 10), ("ant", 20)] {
            save_rgb(&dir.path().join(class).join("a.png"), v);
            save_rgb(&dir.path().join(class).join("b.PNG"), v + 1);
        }
        std::fs::write(dir.path().join("ant").join("notes.txt"), "skip me").unwrap();
        let (s, names) = load_image_folder(dir.path(), 4).unwrap();
        assert_eq!(names, ["ant", "zebra"]);
        assert_eq!((s.train.len(), s.test.len()), (3, 1));
        assert_eq!((s.train.channels, s.train.height, s.train.width), (3, 2, 3));
        let both = [s.train.clone(), s.test.clone()];
        for ds in &both {
            for i in 0..ds.len() {
                let px = ds.image(i);
                let red = (px[0] * 255.0).round() as u8;
                assert_eq!(ds.labels[i], usize::from(red < 20), "red {red}");
                assert!(
                    (px[6] - 2.0 * red as f32 / 255.0).abs() < 1e-6,
                    "green plane"
                );
                assert_eq!(&px[12..], &[1.0; 6], "blue plane");
            }
        }
        assert_eq!(load_image_folder(dir.path(), 4).unwrap().0, s);
    }

    #[test]
    fn train_test_folders_are_used_and_alpha_is_dropped() {
        let dir = TempDir::new("folder-tt");
        for class in ["a", "b"] {
            save_rgb(&dir.path().join("train").join(class).join("x.png"), 1);
        }
        let test_file = dir.path().join("test").join("b").join("y.png");
        std::fs::create_dir_all(test_file.parent().unwrap()).unwrap();
        RgbaImage::from_pixel(3, 2, Rgba([0, 0, 0, 7]))
            .save(&test_file)
            .unwrap();
        let (s, names) = load_image_folder(dir.path(), 0).unwrap();
        assert_eq!(names, ["a", "b"]);
        assert_eq!((s.train.labels, s.test.labels), (vec![0, 1], vec![1]));
        assert_eq!(s.test.channels, 3);

        save_rgb(&dir.path().join("test").join("c").join("z.png"), 1);
        let err = load_image_folder(dir.path(), 0).unwrap_err().to_string();
        assert!(err.contains("class 'c'"), "{err}");
    }

    #[test]
    fn mixed_sizes_and_channels_name_the_offending_file() {
        let dir = TempDir::new("folder-mixed");
        save_rgb(&dir.path().join("a").join("1.png"), 1);
        RgbImage::new(4, 2)
            .save(dir.path().join("a").join("2.png"))
            .unwrap();
        let err = load_image_folder(dir.path(), 0).unwrap_err().to_string();
        assert!(
            err.contains("2.png") && err.contains("4×2") && err.contains("1.png"),
            "{err}"
        );

        image::GrayImage::new(3, 2)
            .save(dir.path().join("a").join("2.png"))
            .unwrap();
        let err = load_image_folder(dir.path(), 0).unwrap_err().to_string();
        assert!(err.contains("2.png") && err.contains("1 channel"), "{err}");

        std::fs::write(dir.path().join("a").join("2.png"), b"not a png").unwrap();
        let err = load_image_folder(dir.path(), 0).unwrap_err().to_string();
        assert!(err.contains("2.png") && err.contains("decode"), "{err}");
    }

    #[test]
    fn an_image_beyond_the_pixel_limit_is_refused_before_decoding() {
        let dir = TempDir::new("folder-huge");
        let file = dir.path().join("a").join("1.png");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        image::GrayImage::new(4097, 4096).save(&file).unwrap();
        let err = load_image_folder(dir.path(), 0).unwrap_err().to_string();
        assert!(
            err.contains("1.png") && err.contains("4097×4096") && err.contains("resize"),
            "{err}"
        );
    }

    #[test]
    fn numeric_class_folders_are_labels_in_eval() {
        let dir = TempDir::new("folder-eval");
        save_rgb(&dir.path().join("3").join("a.png"), 1);
        save_rgb(&dir.path().join("10").join("b.png"), 2);
        save_rgb(&dir.path().join("10").join("c.png"), 3);
        let ds = load_image_folder_eval(dir.path()).unwrap();
        assert_eq!(
            (ds.labels.clone(), ds.classes, ds.len()),
            (vec![10, 10, 3], 11, 3)
        );
        save_rgb(&dir.path().join("cat").join("d.png"), 4);
        let ds = load_image_folder_eval(dir.path()).unwrap();
        assert_eq!((ds.labels, ds.classes), (vec![0, 0, 1, 2], 3));
    }

    #[test]
    fn empty_folders_are_errors() {
        let dir = TempDir::new("folder-empty");
        assert!(load_image_folder(dir.path(), 0)
            .unwrap_err()
            .to_string()
            .contains("no class"));
        std::fs::create_dir(dir.path().join("a")).unwrap();
        let err = load_image_folder(dir.path(), 0).unwrap_err().to_string();
        assert!(err.contains("no .png"), "{err}");
    }
}
