//! Gzipped IDX files: the fuzzed image and label bytes are compressed here (so the decoder
//! sees valid streams and the IDX parser behind it is reached), and optionally cut short.
//! Input: a flag byte (bit 0: truncate the images stream), u16 split point, images, labels.

use flate2::{write::GzEncoder, Compression};
use resnet_ode::data::load_idx_dir;
use std::io::Write;

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// One input: a returned error must name its file; a panic or a failed assertion is a bug.
pub fn check(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (images, labels) = crate::common::split2(rest);
    let mut images = gz(images);
    if flags & 1 == 1 {
        let keep = (flags as usize >> 1) % (images.len() + 1);
        images.truncate(keep.max(2));
    }
    let labels = gz(labels);
    let dir = crate::common::fresh_dir("idx_gz");
    for prefix in ["train", "t10k"] {
        crate::common::put(&dir.join(format!("{prefix}-images-idx3-ubyte.gz")), &images);
        crate::common::put(&dir.join(format!("{prefix}-labels-idx1-ubyte.gz")), &labels);
    }
    match load_idx_dir(&dir, "fuzz") {
        Ok(split) => {
            for ds in [&split.train, &split.test] {
                ds.validate().expect("a loaded IDX set is valid");
                assert_eq!(ds.images.len(), ds.len() * ds.height * ds.width);
            }
        }
        Err(e) => crate::common::assert_names(&e, &dir),
    }
}
