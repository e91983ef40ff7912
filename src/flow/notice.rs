//! Warnings a worker must not keep to itself. The SDK logs through `tracing`; an application
//! that installed no subscriber would see none of it, so its warnings are also printed to
//! stderr then (and only then).

/// Prints `message` to stderr as `tripwire: warning: ...` when no `tracing` subscriber was
/// ever installed in this process (the `tracing::warn!` beside it went nowhere).
pub(crate) fn unheard(message: std::fmt::Arguments<'_>) {
    if !tracing::dispatcher::has_been_set() {
        eprintln!("tripwire: warning: {message}");
    }
}
