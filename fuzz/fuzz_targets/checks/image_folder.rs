//! The image-folder loader (PNG/JPEG through the `image` crate). Input: a selector byte (bits
//! 0–1: extension of the first image, 2–3: of the second; bit 4: `train/` + `test/` layout),
//! u16 split point, then two images' bytes, in class folders `0/` and `1/`.

use resnet_ode::data::{load_image_folder, load_image_folder_eval};

const EXT: [&str; 4] = ["png", "jpg", "jpeg", "PNG"];

/// One input: a returned error must name its file; a panic or a failed assertion is a bug.
pub fn check(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let (a, b) = crate::common::split2(rest);
    let dir = crate::common::fresh_dir("folder");
    let (ea, eb) = (EXT[(sel & 3) as usize], EXT[((sel >> 2) & 3) as usize]);
    if sel & 16 == 16 {
        crate::common::put(&dir.join(format!("train/0/a.{ea}")), a);
        crate::common::put(&dir.join(format!("train/1/b.{eb}")), b);
        crate::common::put(&dir.join(format!("test/0/a.{ea}")), a);
        crate::common::put(&dir.join(format!("test/1/b.{eb}")), b);
        match load_image_folder(&dir, 0) {
            Ok((split, names)) => {
                assert_eq!(names, ["0", "1"]);
                split.train.validate().expect("valid train set");
                split.test.validate().expect("valid test set");
            }
            Err(e) => crate::common::assert_names(&e, &dir),
        }
    } else {
        crate::common::put(&dir.join(format!("0/a.{ea}")), a);
        crate::common::put(&dir.join(format!("1/b.{eb}")), b);
        match load_image_folder_eval(&dir) {
            Ok(ds) => {
                ds.validate().expect("valid set");
                assert_eq!(ds.len(), 2);
                assert!(ds.images.iter().all(|p| (0.0..=1.0).contains(p)));
            }
            Err(e) => crate::common::assert_names(&e, &dir),
        }
    }
}
