//! A run is tied to its data's content, not to the `--data` string (issue 13 #6): a trailing
//! slash, a relative path or a moved folder resume and evaluate; other images are refused.

use std::path::Path;
use std::process::Command;

fn folder(dir: &Path, seed: u32) {
    for class in 0..2u32 {
        let sub = dir.join(class.to_string());
        std::fs::create_dir_all(&sub).unwrap();
        for k in 0..8u32 {
            let img = image::GrayImage::from_fn(8, 8, |x, y| {
                image::Luma([((x * 31 + y * 17 + k * 13 + class * 101 + seed * 7) % 256) as u8])
            });
            img.save(sub.join(format!("{k}.png"))).unwrap();
        }
    }
}

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_resnet-ode"))
        .args(args)
        .output()
        .expect("run resnet-ode");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    (out.status.success(), err)
}

#[test]
fn runs_follow_their_data_by_content() {
    let base = std::env::temp_dir().join(format!("resnet-ode-dataid-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (data, moved, other, out) = (
        base.join("data"),
        base.join("moved"),
        base.join("other"),
        base.join("run"),
    );
    folder(&data, 0);
    folder(&other, 1);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let train = |data: String, resume: bool| {
        let mut args = vec!["train".to_string(), "--epochs".into(), "1".into()];
        args.extend(["--batch-size".into(), "4".into(), "--data".into(), data]);
        args.extend(["--out".into(), s(&out)]);
        if resume {
            args.push("--resume".into());
        }
        run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    assert!(train(format!("images:{}", s(&data)), false).0);
    let (ok, err) = train(format!("images:{}/", s(&data)), true);
    assert!(ok, "a trailing slash: {err}");
    std::fs::rename(&data, &moved).unwrap();
    let (ok, err) = train(format!("images:{}", s(&moved)), true);
    assert!(ok, "a moved folder: {err}");
    let (ok, err) = run(&[
        "eval",
        "--run",
        &s(&out),
        "--data",
        &format!("images:{}", s(&moved)),
    ]);
    assert!(ok, "eval --data: {err}");
    let (ok, err) = train(format!("images:{}", s(&other)), true);
    assert!(!ok && err.contains("--data"), "other images: {err}");
    let (ok, err) = run(&[
        "eval",
        "--run",
        &s(&out),
        "--data",
        &format!("images:{}", s(&other)),
    ]);
    assert!(!ok && err.contains("--data"), "eval on other images: {err}");
    let _ = std::fs::remove_dir_all(&base);
}
