//! The `resnet-ode` command: a thin layer over the library.

mod cli;

/// Counts heap bytes so `bench memory` and the trainer can report activation memory exactly.
#[global_allocator]
static ALLOCATOR: resnet_ode::memory::CountingAllocator = resnet_ode::memory::CountingAllocator;

fn main() {
    resnet_ode::memory::keep_freed_memory();
    if let Err(e) = cli::run() {
        // The chain of contexts names the flag or file at fault; no backtrace for user errors.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
