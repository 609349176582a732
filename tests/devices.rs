//! The GPU devices from the command line. On a machine or build that lacks them: a clear error
//! naming `--device` and what is missing (the cargo feature, or the driver/device), never a
//! panic. On one that has them (a GPU build, e.g. `cargo test --release --features wgpu --test
//! devices` with Mesa's lavapipe installed): the adjoint's gradient error equal to flex's.

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

/// Every GPU device name, in its first-device form.
const GPU_DEVICES: [&str; 4] = ["cuda:0", "libtorch-cuda:0", "vulkan", "wgpu"];

/// Whether this machine could run `device` in this build (then the check does not apply).
fn available(device: &str) -> bool {
    run(&["gradcheck", "--depth", "2", "--device", device]).0
}

#[test]
fn missing_gpu_devices_fail_with_a_clear_message() {
    for device in GPU_DEVICES.iter().chain(&["vulkan:1", "wgpu:1"]) {
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

/// `gradcheck --depth 64` (adjoint vs backprop, f32) on each GPU device this build and machine
/// run, against flex: the same figures up to f32 rounding. The figures are the relative error
/// of the adjoint's gradient and of its reconstruction of x_0. Where they are the scheme's
/// (Euler: 7e-4 and 1e-3 on the MLP, 2e-2 on the conv block) rounding moves them in the fifth
/// digit at most, so they agree to 1e-3 relative; where they are rounding itself (Heun on the
/// smooth MLP: 2e-7 and 3e-7), the two devices' rounding errors are of one size, within a
/// factor 2.
#[test]
fn gpu_gradients_match_flex() {
    let gpus: Vec<&str> = GPU_DEVICES.into_iter().filter(|d| available(d)).collect();
    if gpus.is_empty() {
        eprintln!("skipping: no GPU device in this build and machine");
        return;
    }
    let dir = std::env::temp_dir().join(format!("resnet-ode-devices-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let check = |device: &str, residual: &str, scheme: &str| {
        let path = dir.join(format!(
            "{}-{residual}-{scheme}.json",
            device.replace(':', "")
        ));
        let path_s = path.to_string_lossy().into_owned();
        let (ok, err) = run(&[
            "gradcheck",
            "--depth",
            "64",
            "--residual",
            residual,
            "--scheme",
            scheme,
            "--device",
            device,
            "--json",
            &path_s,
        ]);
        assert!(ok, "{device} {residual} {scheme}: {err}");
        let text = std::fs::read_to_string(&path).expect("gradcheck json");
        let json: serde_json::Value = serde_json::from_str(&text).expect("gradcheck json parses");
        ["relative_error", "reconstruction_error"].map(|k| json[k].as_f64().expect(k))
    };
    let cases: [(&str, &str, Agrees); 3] = [
        ("mlp", "euler", to_1e3),
        ("conv", "euler", to_1e3),
        ("mlp", "heun", within_2x),
    ];
    for (residual, scheme, agrees) in cases {
        let reference = check("flex", residual, scheme);
        for gpu in &gpus {
            let got = check(gpu, residual, scheme);
            assert!(
                got.iter().zip(&reference).all(|(&g, &r)| agrees(g, r)),
                "{gpu} {residual} {scheme}: [relative, reconstruction] errors {got:?} against flex's {reference:?}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// f64 on the wgpu devices computes exp and tanh wrongly (Vulkan and WGSL define them for
/// 32-bit floats only): refused at once, naming `--dtype`, where the device runs at all.
#[test]
fn wgpu_devices_refuse_f64() {
    for device in ["vulkan", "wgpu"] {
        if !available(device) {
            eprintln!("skipping {device}: not in this build and machine");
            continue;
        }
        let (ok, err) = run(&[
            "gradcheck",
            "--depth",
            "2",
            "--dtype",
            "f64",
            "--device",
            device,
        ]);
        assert!(!ok, "{device}");
        assert!(!err.contains("panicked"), "{device} panicked: {err}");
        assert!(
            err.contains("--dtype") && err.contains("f64"),
            "{device}: {err}"
        );
    }
}

/// CubeCL's tuned kernel choices persist per environment; with `CUBECL_CUDA_TF32=0` and no
/// environment named, the binary keeps them apart (`no-tf32`), since a choice tuned with TF32
/// does not launch without it. Seen in the cache folder CubeCL makes beside the nearest
/// Cargo.toml.
#[test]
fn tuning_without_tf32_has_its_own_cache() {
    let Some(device) = ["cuda:0", "vulkan", "wgpu"]
        .into_iter()
        .find(|d| available(d))
    else {
        eprintln!("skipping: no CubeCL device in this build and machine");
        return;
    };
    let dir = std::env::temp_dir().join(format!("resnet-ode-tf32-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("Cargo.toml"), "").expect("marker Cargo.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_resnet-ode"))
        .args(["gradcheck", "--depth", "2", "--device", device])
        .current_dir(&dir)
        .env("CUBECL_CUDA_TF32", "0")
        .env_remove("CUBECL_ENVIRONMENT")
        .output()
        .expect("run resnet-ode");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = std::fs::read_dir(dir.join("target").join("environment"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        names.iter().any(|n| n.starts_with("no-tf32"))
            && !names.iter().any(|n| n.starts_with("default")),
        "{device}: cache files {names:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// GPU memory is read through NVML or, on CubeCL devices without it (lavapipe, other vendors),
/// through CubeCL's pool statistics: `bench memory` shows backprop's activations growing with
/// depth and the adjoint's flat, or (LibTorch CUDA without NVML) says why it cannot read them,
/// naming `--device`; `bench speed` runs either way.
#[test]
fn gpu_bench_memory_shows_the_adjoint_flat() {
    let gpus: Vec<&str> = GPU_DEVICES.into_iter().filter(|d| available(d)).collect();
    if gpus.is_empty() {
        eprintln!("skipping: no GPU device in this build and machine");
    }
    let dir = std::env::temp_dir().join(format!("rode-gpu-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    for gpu in gpus {
        let json = dir.join(format!("{}.json", gpu.replace(':', "-")));
        let bench = |kind, json: Option<&str>| {
            let mut args = vec![
                "bench",
                kind,
                "--workloads",
                "mlp",
                "--depths",
                "8,32",
                "--modes",
                "backprop,adjoint",
                "--schemes",
                "euler",
                "--reps",
                "1",
                "--device",
                gpu,
            ];
            args.extend(json.map(|j| ["--json", j]).into_iter().flatten());
            run(&args)
        };
        let (ok, err) = bench("speed", None);
        assert!(ok, "{gpu}: bench speed: {err}");
        let (ok, err) = bench("memory", json.to_str());
        if !ok {
            assert!(
                err.contains("NVML") && err.contains("--device"),
                "{gpu}: {err}"
            );
            continue;
        }
        let text = std::fs::read_to_string(&json).expect("bench memory wrote its JSON");
        let records: Vec<serde_json::Value> = serde_json::from_str(&text).expect("a JSON array");
        let peak = |mode: &str, depth: u64| {
            records
                .iter()
                .find(|r| r["mode"] == mode && r["depth"] == depth)
                .and_then(|r| r["activation_peak_bytes"].as_f64())
                .unwrap_or_else(|| panic!("{gpu}: no {mode} record at depth {depth}: {text}"))
        };
        let (b8, b32, a8, a32) = (
            peak("backprop", 8),
            peak("backprop", 32),
            peak("adjoint", 8),
            peak("adjoint", 32),
        );
        assert!(
            b32 > 2.0 * b8 && b8 > 0.0,
            "{gpu}: backprop {b8} -> {b32} bytes"
        );
        assert!(
            a32 <= 1.1 * a8 && a8 > 0.0,
            "{gpu}: adjoint {a8} -> {a32} bytes"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `bench train --trace` on LibTorch devices writes PyTorch's profiler trace of one step: a
/// Chrome trace whose ATen operations include the convolution backward our shim calls (and, on
/// CUDA, the kernels). Skips where this build has no LibTorch.
#[test]
fn libtorch_steps_trace_their_aten_operations() {
    for device in ["libtorch", "libtorch-cuda:0"] {
        if !available(device) {
            eprintln!("skipping {device}: not in this build and machine");
            continue;
        }
        let dir = std::env::temp_dir().join(format!("rode-trace-{}", std::process::id()));
        let args = [
            "bench",
            "train",
            "--models",
            "tiny",
            "--tiny-depths",
            "2",
            "--modes",
            "adjoint",
            "--batch",
            "2",
            "--steps",
            "1",
            "--device",
            device,
            "--trace",
        ];
        let (ok, err) = run(&[&args[..], &[dir.to_str().expect("a UTF-8 temp path")]].concat());
        assert!(ok, "{device}: {err}");
        let file = dir.join("tiny2-euler-adjoint.json");
        let text = std::fs::read_to_string(&file).expect("bench train wrote the trace");
        let _ = std::fs::remove_dir_all(&dir);
        let trace: serde_json::Value = serde_json::from_str(&text).expect("a JSON trace");
        let events = trace["traceEvents"].as_array().expect("traceEvents");
        let named = |cat: &str, name: &str| {
            events
                .iter()
                .filter(|e| e["cat"] == cat && e["name"].as_str().is_some_and(|n| n.contains(name)))
                .count()
        };
        assert!(
            named("cpu_op", "aten::convolution_backward") > 0,
            "{device}"
        );
        assert!(
            named("cpu_op", "aten::native_batch_norm_backward") > 0,
            "{device}"
        );
        if device.starts_with("libtorch-cuda") {
            assert!(named("kernel", "") > 0, "{device}: no CUDA kernel traced");
        }
    }
}

/// Whether a GPU figure `g` agrees with flex's `r`.
type Agrees = fn(f64, f64) -> bool;

fn to_1e3(g: f64, r: f64) -> bool {
    (g - r).abs() <= 1e-3 * r
}

fn within_2x(g: f64, r: f64) -> bool {
    g <= 2.0 * r && r <= 2.0 * g
}
