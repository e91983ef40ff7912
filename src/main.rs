//! The `tripwire` binary: see `tripwire --help`.

/// mimalloc rather than the system allocator: in a profile of batched ingest, glibc's
/// malloc and free were 15% of the single writer's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tripwire::cli::main()
}
