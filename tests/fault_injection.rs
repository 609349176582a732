//! Fault injection: a training run SIGKILLed at many seeded random moments and resumed each time
//! ends with exactly the uninterrupted run's numbers and weights (byte for byte), and no stray
//! files. Each kill can land anywhere: before `run.json`, inside an atomic write, between
//! `state.json` and `metrics.jsonl`, during evaluation.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ARGS: &[&str] = &[
    "train",
    "--epochs",
    "3",
    "--limit-train",
    "256",
    "--limit-test",
    "128",
];

fn train(dir: &Path, resume: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_resnet-ode"));
    c.args(ARGS).arg("--out").arg(dir);
    if resume {
        c.arg("--resume");
    }
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// The numbers of `metrics.jsonl`, without the timing-dependent fields.
fn numbers(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let m = v.as_object_mut().unwrap();
            for timing in ["seconds", "images_per_sec", "activation_peak_bytes"] {
                m.remove(timing);
            }
            v
        })
        .collect()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn killed_runs_resume_to_the_uninterrupted_result() {
    let base = std::env::temp_dir().join(format!("resnet-ode-faults-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (whole, killed) = (base.join("whole"), base.join("killed"));
    let t0 = Instant::now();
    let out = train(&whole, false).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_time = t0.elapsed().as_secs_f64();

    // Seeded kill moments (LCG), short enough that most land before the run ends; the loop
    // ends when a run finishes on its own.
    let mut state: u64 = 0x5eed;
    let (mut kills, mut finished) = (0, false);
    for _ in 0..40 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = (state >> 11) as f64 / (1u64 << 53) as f64 * run_time / 3.0;
        let resume = killed.join("run.json").exists();
        let mut child = train(&killed, resume).spawn().unwrap();
        std::thread::sleep(Duration::from_secs_f64(delay));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
        } else {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            finished = true;
            break;
        }
    }
    if !finished {
        let resume = killed.join("run.json").exists();
        let out = train(&killed, resume).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("{kills} kills before the run finished");
    assert!(kills >= 5, "only {kills} kills landed");

    assert_eq!(
        numbers(&killed),
        numbers(&whole),
        "metrics after {kills} kills"
    );
    for f in ["model-0003.safetensors", "optimizer-0003.safetensors"] {
        assert_eq!(
            std::fs::read(killed.join(f)).unwrap(),
            std::fs::read(whole.join(f)).unwrap(),
            "{f} byte for byte"
        );
    }
    assert_eq!(files(&killed), files(&whole), "no stray files");
    let _ = std::fs::remove_dir_all(&base);
}

// Full disk and read-only run directory, injected into a run in progress (after its first
// checkpoint) and into a fresh run. A full disk is the file-size limit (RLIMIT_FSIZE, set on
// the running child with prlimit; SIGXFSZ ignored so write() fails with EFBIG as a full disk
// fails with ENOSPC). A read-only run directory is the immutable attribute (`chattr +i`): root,
// as in CI containers, ignores permission bits but not that flag; where it cannot be set (not
// root, or a file system without it) that part says so and is skipped.

#[cfg(target_os = "linux")]
mod sys {
    #[repr(C)]
    pub struct Rlimit {
        pub cur: u64,
        pub max: u64,
    }
    unsafe extern "C" {
        pub fn prlimit(pid: i32, resource: i32, new: *const Rlimit, old: *mut Rlimit) -> i32;
        pub fn signal(signum: i32, handler: usize) -> usize;
        pub fn kill(pid: i32, sig: i32) -> i32;
    }
    pub const RLIMIT_FSIZE: i32 = 1;
    pub const SIGXFSZ: i32 = 25;
    pub const SIGCONT: i32 = 18;
    pub const SIGSTOP: i32 = 19;
    pub const SIG_IGN: usize = 1;

    /// Limits the files process `pid` (0: this one) may write to `bytes`.
    pub fn limit_file_size(pid: i32, bytes: u64) -> std::io::Result<()> {
        let limit = Rlimit {
            cur: bytes,
            max: u64::MAX,
        };
        // SAFETY: plain system call on a valid struct.
        match unsafe { prlimit(pid, RLIMIT_FSIZE, &limit, std::ptr::null_mut()) } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    }
}

/// How a fault is injected.
#[cfg(target_os = "linux")]
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The disk is full: every write of the process fails (EFBIG).
    FullDisk,
    /// The run directory becomes read-only: nothing can be created, renamed or removed in it.
    ReadOnly,
}

/// The immutable attribute on a directory, removed again on drop (also when a test fails, so
/// the temp folder can be deleted).
#[cfg(target_os = "linux")]
struct Immutable(std::path::PathBuf);

#[cfg(target_os = "linux")]
impl Immutable {
    /// Sets it, or says why it cannot be set here.
    fn set(dir: &Path) -> Result<Self, String> {
        let out = Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .output()
            .map_err(|e| format!("chattr: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        // Root bypasses permission bits, not this flag: check that it bites.
        let probe = dir.join("probe");
        if std::fs::write(&probe, b"x").is_ok() {
            let _ = std::fs::remove_file(&probe);
            drop(Self(dir.to_path_buf()));
            return Err("the flag does not stop writes on this file system".into());
        }
        Ok(Self(dir.to_path_buf()))
    }
}

#[cfg(target_os = "linux")]
impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// Can the read-only fault be simulated here (see [`Immutable`])?
#[cfg(target_os = "linux")]
fn read_only_supported(base: &Path) -> Result<(), String> {
    let probe = base.join("immutable-probe");
    std::fs::create_dir_all(&probe).unwrap();
    let result = Immutable::set(&probe).map(drop);
    let _ = std::fs::remove_dir_all(&probe);
    result
}

/// A training command whose process ignores SIGXFSZ (so a file-size limit makes writes fail
/// with an error instead of killing it) and whose files are limited to `limit` bytes, if given.
#[cfg(target_os = "linux")]
fn guarded(dir: &Path, resume: bool, limit: Option<u64>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = train(dir, resume);
    // SAFETY: only async-signal-safe calls (signal, prlimit) between fork and exec.
    unsafe {
        c.pre_exec(move || {
            sys::signal(sys::SIGXFSZ, sys::SIG_IGN);
            if let Some(bytes) = limit {
                sys::limit_file_size(0, bytes)?;
            }
            Ok(())
        });
    }
    c
}

/// `state.json` and the two checkpoint files it names, as bytes (None when one is missing).
#[cfg(target_os = "linux")]
#[derive(Debug, PartialEq)]
struct Checkpoint {
    epoch: u64,
    state: Vec<u8>,
    files: Vec<(String, Vec<u8>)>,
}

#[cfg(target_os = "linux")]
fn checkpoint(dir: &Path) -> Option<Checkpoint> {
    let state = std::fs::read(dir.join("state.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&state).ok()?;
    // None while the run moves on under our feet (the files of an older state removed).
    let files = ["weights", "buffers"]
        .iter()
        .map(|k| {
            let name = v[k].as_str()?.to_string();
            let bytes = std::fs::read(dir.join(&name)).ok()?;
            Some((name, bytes))
        })
        .collect::<Option<_>>()?;
    Some(Checkpoint {
        epoch: v["epoch"].as_u64().unwrap(),
        state,
        files,
    })
}

/// Starts a fresh run in `dir`, injects `fault` once its first checkpoint is committed (the
/// child stopped meanwhile), and returns the checkpoint in force at that moment, the files
/// then in the directory, the faulted run's stderr and the fault's guard (an [`Immutable`] to
/// drop before resuming).
#[cfg(target_os = "linux")]
fn fault_mid_run(dir: &Path, fault: Fault) -> (Checkpoint, Vec<String>, String, Option<Immutable>) {
    let mut child = guarded(dir, false, None).spawn().unwrap();
    let pid = child.id() as i32;
    let t0 = Instant::now();
    loop {
        if let Some(c) = checkpoint(dir) {
            assert!(c.epoch >= 1);
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint was seen"
        );
        assert!(t0.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_micros(500));
    }
    // SAFETY: signals to our own child, which has not been reaped.
    unsafe { sys::kill(pid, sys::SIGSTOP) };
    let guard = match fault {
        Fault::FullDisk => {
            sys::limit_file_size(pid, 0).unwrap();
            None
        }
        Fault::ReadOnly => Some(Immutable::set(dir).unwrap()),
    };
    let before = checkpoint(dir).unwrap();
    let at_fault = files(dir);
    assert!(
        before.epoch < 3,
        "{fault:?}: the run finished before the fault landed"
    );
    unsafe { sys::kill(pid, sys::SIGCONT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{fault:?}: the run succeeded: {stderr}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{fault:?}: not a clean error exit: {stderr}"
    );
    (before, at_fault, stderr, guard)
}

/// The error names a file of the run directory being written, and is not a panic.
#[cfg(target_os = "linux")]
fn assert_names_run_file(stderr: &str, dir: &Path, reason: &str) {
    assert!(!stderr.contains("panicked"), "a panic: {stderr}");
    let named = [
        "model-",
        "optimizer-",
        "state.json",
        "metrics.jsonl",
        "run.json",
    ]
    .iter()
    .any(|f| stderr.contains(&format!("{}/{f}", dir.display())));
    assert!(named, "no run file named: {stderr}");
    assert!(stderr.contains(reason), "expected '{reason}': {stderr}");
}

#[cfg(target_os = "linux")]
#[test]
fn full_disk_and_read_only_directory_keep_the_checkpoint_and_resume_exactly() {
    let base = std::env::temp_dir().join(format!("resnet-ode-disk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let whole = base.join("whole");
    let out = train(&whole, false).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let read_only = read_only_supported(&base);
    if let Err(why) = &read_only {
        eprintln!("read-only run directory not simulated here: {why}");
    }
    let faults = [
        Some((Fault::FullDisk, "File too large")),
        read_only
            .is_ok()
            .then_some((Fault::ReadOnly, "Operation not permitted")),
    ];
    for (fault, reason) in faults.into_iter().flatten() {
        let dir = base.join(format!("{fault:?}"));
        let (before, at_fault, stderr, guard) = fault_mid_run(&dir, fault);
        assert_names_run_file(&stderr, &dir, reason);
        let after = checkpoint(&dir).unwrap_or_else(|| {
            panic!(
                "{fault:?}: no complete checkpoint after the fault (files then {at_fault:?}, now {:?}): {stderr}",
                files(&dir)
            )
        });
        if after != before {
            // The fault landed between a fully written state.json and its rename (possible for
            // the size limit, which does not stop renames): the newer checkpoint is complete.
            assert!(after.epoch > before.epoch, "{fault:?}: checkpoint changed");
            eprintln!(
                "{fault:?}: epoch {} committed as the fault landed",
                after.epoch
            );
        }
        let mut expected = vec!["run.json".to_string(), "state.json".to_string()];
        expected.extend(after.files.iter().map(|(n, _)| n.clone()));
        // metrics.jsonl follows state.json: a fault between the two leaves it behind (a
        // resume rewrites it from state.json).
        // A read-only directory cannot lose the temporary file of a write it stopped midway
        // (nothing can be removed from it): only such files may stay, until a resume.
        let mut found = files(&dir);
        found.retain(|f| f != "metrics.jsonl");
        if let Fault::ReadOnly = fault {
            found.retain(|f| !(f.contains(".tmp.") && at_fault.contains(f)));
        }
        expected.sort();
        assert_eq!(
            found, expected,
            "{fault:?}: stray or missing files after: {stderr}"
        );
        drop(guard);

        let out = train(&dir, true).output().unwrap();
        assert!(
            out.status.success(),
            "{fault:?} resume: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(numbers(&dir), numbers(&whole), "{fault:?}: metrics");
        for f in ["model-0003.safetensors", "optimizer-0003.safetensors"] {
            assert_eq!(
                std::fs::read(dir.join(f)).unwrap(),
                std::fs::read(whole.join(f)).unwrap(),
                "{fault:?}: {f} byte for byte"
            );
        }
        assert_eq!(files(&dir), files(&whole), "{fault:?}: no stray files");
    }

    // A fresh run on a full disk: its check of --out fails, naming the folder and the flag,
    // and leaves nothing (not even the folder it made).
    let fresh = base.join("fresh-full");
    let out = guarded(&fresh, false, Some(0)).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for part in [&*fresh.to_string_lossy(), "--out", "File too large"] {
        assert!(stderr.contains(part), "expected '{part}': {stderr}");
    }
    assert!(
        !fresh.exists(),
        "a failed fresh run left {}",
        fresh.display()
    );

    // A fresh run into an existing read-only directory: the same, and the directory stays empty.
    if read_only.is_ok() {
        let fresh = base.join("fresh-read-only");
        std::fs::create_dir_all(&fresh).unwrap();
        let guard = Immutable::set(&fresh).unwrap();
        let out = guarded(&fresh, false, None).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        for part in [
            &*fresh.to_string_lossy(),
            "--out",
            "Operation not permitted",
        ] {
            assert!(stderr.contains(part), "expected '{part}': {stderr}");
        }
        drop(guard);
        assert_eq!(files(&fresh), Vec::<String>::new(), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&base);
}

/// The same moment made deterministic: `metrics.jsonl` cannot be written (a folder stands in
/// its place), so epoch 1's commit fails just after `state.json`. That checkpoint is in force
/// and must survive: the cleanup of a run that failed before its first checkpoint deleted
/// `run.json` and the files `state.json` names, leaving a run that could not be resumed.
#[test]
fn a_failed_metrics_write_keeps_the_committed_checkpoint() {
    let base = std::env::temp_dir().join(format!("resnet-ode-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (whole, dir) = (base.join("whole"), base.join("blocked"));
    let out = train(&whole, false).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::create_dir_all(dir.join("metrics.jsonl")).unwrap();
    let out = train(&dir, false).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(&*dir.join("metrics.jsonl").to_string_lossy()),
        "{stderr}"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["epoch"], 1, "{stderr}");
    let mut expected = vec![
        "metrics.jsonl".to_string(),
        "run.json".to_string(),
        "state.json".to_string(),
    ];
    for k in ["weights", "buffers"] {
        expected.push(state[k].as_str().unwrap().to_string());
    }
    expected.sort();
    assert_eq!(files(&dir), expected, "{stderr}");

    std::fs::remove_dir(dir.join("metrics.jsonl")).unwrap();
    let out = train(&dir, true).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(numbers(&dir), numbers(&whole));
    for f in ["model-0003.safetensors", "optimizer-0003.safetensors"] {
        assert_eq!(
            std::fs::read(dir.join(f)).unwrap(),
            std::fs::read(whole.join(f)).unwrap(),
            "{f} byte for byte"
        );
    }
    assert_eq!(files(&dir), files(&whole), "no stray files");
    let _ = std::fs::remove_dir_all(&base);
}
