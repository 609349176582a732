//! The GPU devices from the command line on a machine or build that lacks them: a clear error
//! naming `--device` and what is missing (the cargo feature, or the driver/device), never a panic.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_resnet-ode"))
        .args(args)
        .output()
        .expect("run resnet-ode");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether this machine could run `device` in this build (then the check does not apply).
fn available(device: &str) -> bool {
    run(&["gradcheck", "--depth", "2", "--device", device]).0
}

#[test]
fn missing_gpu_devices_fail_with_a_clear_message() {
    for device in ["cuda:0", "libtorch-cuda:0", "vulkan", "vulkan:1"] {
        if available(device) {
            eprintln!("skipping {device}: this machine and build run it");
            continue;
        }
        let (ok, err) = run(&["gradcheck", "--depth", "2", "--device", device]);
        assert!(!ok, "{device}");
        assert!(!err.contains("panicked"), "{device} panicked: {err}");
        assert!(
            err.contains("--device") && err.contains(device),
            "{device}: {err}"
        );
        assert!(
            err.contains("needs a build with `--features") || err.contains("could not be started"),
            "{device}: the message says what is missing: {err}"
        );
    }
}

#[test]
fn unknown_devices_list_the_known_ones() {
    let (ok, err) = run(&["gradcheck", "--depth", "2", "--device", "tpu:0"]);
    assert!(!ok);
    assert!(
        err.contains("--device") && err.contains("vulkan:N"),
        "{err}"
    );
    let (ok, err) = run(&["gradcheck", "--depth", "2", "--device", "vulkan:x"]);
    assert!(!ok);
    assert!(err.contains("expected a device index"), "{err}");
}
