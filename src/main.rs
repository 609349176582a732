//! The `resnet-ode` command: a thin layer over the library.

mod cli;

/// Counts heap bytes so `bench memory` and the trainer can report activation memory exactly.
#[global_allocator]
static ALLOCATOR: resnet_ode::memory::CountingAllocator = resnet_ode::memory::CountingAllocator;

fn main() {
    quit_on_closed_pipe();
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
