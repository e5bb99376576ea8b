//! Log setup: one event per line on stderr, filtered by `RUST_LOG`
//! (default `info` for `serve`, `warn` for one-shot commands), as text for
//! people or as JSON for log shippers (`--log-format json`).

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `timestamp LEVEL message key=value ...`, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields` with
    /// `message`), so a log shipper needs no parsing rules.
    Json,
}

/// Installs the global tracing subscriber with `default` as the level when
/// `RUST_LOG` is unset; safe to call more than once.
pub fn init(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // hickory-proto warns about odd packets it decodes: per query, so
        // far too much for a DNS server under load.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{default},hickory_proto=error"))
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// Logs a panic as one error event (thread, location, message) instead of
/// std's default report, which also symbolises a backtrace when
/// `RUST_BACKTRACE` is set: that takes ~100 ms, during which the JS worker
/// that panicked holds its query, past the hard limit.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("(unnamed)"),
            %location,
            panic = %message,
            "panic"
        );
    }));
}
