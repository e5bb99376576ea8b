//! Log setup: one line per event on stderr, filtered by `RUST_LOG`
//! (default `info` for `serve`, `warn` for one-shot commands).

/// Installs the global tracing subscriber with `default` as the level when
/// `RUST_LOG` is unset; safe to call more than once.
pub fn init(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // hickory-proto warns about odd packets it decodes: per query, so
        // far too much for a DNS server under load.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{default},hickory_proto=error"))
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
