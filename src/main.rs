//! The `tripwire` binary: see `tripwire --help`.

fn main() -> std::process::ExitCode {
    tripwire::cli::main()
}
