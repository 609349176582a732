//! IDX files as written (raw, or gzip when the bytes start with the gzip magic: corrupt gzip
//! streams land here). Input: u16 split point, image-file bytes, label-file bytes; the same two
//! files serve as `train-*` and `t10k-*`.

use resnet_ode::data::load_idx_dir;

/// One input: a returned error must name its file; a panic or a failed assertion is a bug.
pub fn check(data: &[u8]) {
    let (images, labels) = crate::common::split2(data);
    let dir = crate::common::fresh_dir("idx");
    for prefix in ["train", "t10k"] {
        crate::common::put(&dir.join(format!("{prefix}-images-idx3-ubyte")), images);
        crate::common::put(&dir.join(format!("{prefix}-labels-idx1-ubyte")), labels);
    }
    match load_idx_dir(&dir, "fuzz") {
        Ok(split) => {
            for ds in [&split.train, &split.test] {
                ds.validate().expect("a loaded IDX set is valid");
                assert_eq!(ds.images.len(), ds.len() * ds.height * ds.width);
                assert!(ds.images.iter().all(|p| (0.0..=1.0).contains(p)));
            }
        }
        Err(e) => crate::common::assert_names(&e, &dir),
    }
}
