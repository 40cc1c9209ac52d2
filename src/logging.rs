//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`; librdkafka's own log
//! lines come through the `rdkafka` target).

/// Installs the global subscriber (idempotent).
pub fn init() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
