//! The built-in 8×8 handwritten digits (UCI optdigits test set as shipped by scikit-learn;
//! provenance in `assets/DIGITS-PROVENANCE.md`). Embedded so the crate trains with no download.

use super::Dataset;
use crate::error::{Error, Result};
use std::io::Read;

/// Gzip CSV, no header: 64 pixels 0..16 (row-major) then the label, 1797 rows.
const DIGITS_GZ: &[u8] = include_bytes!("../../assets/digits.csv.gz");
/// Name used in errors about the embedded file.
const SOURCE: &str = "assets/digits.csv.gz";
const SIDE: usize = 8;
const PIXELS: usize = SIDE * SIDE;
/// Pixel counts lie in 0..=16 (4×4 blocks of a 32×32 bitmap); dividing maps them to [0, 1].
const MAX_PIXEL: f32 = 16.0;

/// The built-in digits: 1797 gray 8×8 images scaled to [0, 1], 10 classes.
pub fn digits() -> Result<Dataset> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_GZ)
        .read_to_string(&mut text)
        .map_err(|e| Error::file(SOURCE, format!("cannot decompress: {e}")))?;
    let mut ds = Dataset {
        images: Vec::new(),
        labels: Vec::new(),
        channels: 1,
        height: SIDE,
        width: SIDE,
        classes: 10,
        name: "digits".into(),
    };
    for (line_no, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        parse_row(line, &mut ds)
            .map_err(|msg| Error::file(SOURCE, format!("line {}: {msg}", line_no + 1)))?;
    }
    ds.validate()?;
    Ok(ds)
}

/// Appends one CSV row (64 pixels, then the label) to `ds`.
fn parse_row(line: &str, ds: &mut Dataset) -> std::result::Result<(), String> {
    let values = line
        .split(',')
        .map(|f| f.trim().parse::<f32>().map_err(|e| format!("'{f}': {e}")))
        .collect::<std::result::Result<Vec<f32>, String>>()?;
    if values.len() != PIXELS + 1 {
        return Err(format!(
            "expected {} fields, found {}",
            PIXELS + 1,
            values.len()
        ));
    }
    let label = values[PIXELS];
    if label.fract() != 0.0 || !(0.0..ds.classes as f32).contains(&label) {
        return Err(format!(
            "label {label} is not an integer in 0..{}",
            ds.classes
        ));
    }
    ds.images
        .extend(values[..PIXELS].iter().map(|v| v / MAX_PIXEL));
    ds.labels.push(label as usize);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_have_the_known_shape_counts_and_range() {
        let ds = digits().unwrap();
        assert_eq!(
            (ds.len(), ds.channels, ds.height, ds.width),
            (1797, 1, 8, 8)
        );
        let mut counts = vec![0; 10];
        ds.labels.iter().for_each(|&l| counts[l] += 1);
        assert_eq!(counts, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
        assert!(ds.images.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(ds.images.iter().cloned().fold(0.0, f32::max), 1.0);
    }
}
