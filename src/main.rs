//! The `resnet-ode` command: a thin layer over the library.

mod cli;

/// Counts heap bytes so `bench memory` and the trainer can report activation memory exactly.
#[global_allocator]
static ALLOCATOR: resnet_ode::memory::CountingAllocator = resnet_ode::memory::CountingAllocator;

fn main() {
    quit_on_closed_pipe();
    separate_tuning_without_tf32();
    resnet_ode::memory::keep_freed_memory();
    if let Err(e) = cli::run() {
        // The chain of contexts names the flag or file at fault; no backtrace for user errors.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// `resnet-ode … | head` must end quietly when `head` closes the pipe, as Unix tools do. Rust
/// ignores SIGPIPE, so the next `println!` panicked ("failed printing to stdout: Broken pipe");
/// the default action ends the process instead.
fn quit_on_closed_pipe() {
    #[cfg(unix)]
    {
        const SIGPIPE: i32 = 13;
        const SIG_DFL: usize = 0;
        unsafe extern "C" {
            fn signal(signum: i32, handler: usize) -> usize;
        }
        // SAFETY: restores the default disposition of SIGPIPE before any other thread exists.
        unsafe { signal(SIGPIPE, SIG_DFL) };
    }
}

/// CubeCL keeps its tuned kernel choices on disk per environment (`CUBECL_ENVIRONMENT`), keyed
/// by device but not by whether TF32 is on, and runs a remembered choice without checking it:
/// a tensor-core kernel tuned with TF32 declines f32 once `CUBECL_CUDA_TF32=0` (our patched
/// cubecl-cuda, `scripts/gpu/patches/`) has turned TF32 off, and CubeCL then panics ("Should
/// run when selected by autotune"). So without TF32, and unless an environment is named, the
/// choices go to an environment of their own.
fn separate_tuning_without_tf32() {
    let tf32_off = std::env::var_os("CUBECL_CUDA_TF32").is_some_and(|v| v == "0");
    if tf32_off && std::env::var_os("CUBECL_ENVIRONMENT").is_none() {
        // Before any other thread exists (nothing else reads the environment concurrently).
        std::env::set_var("CUBECL_ENVIRONMENT", "no-tf32");
    }
}
