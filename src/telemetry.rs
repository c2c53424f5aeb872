//! Tracing setup: pretty logs on a terminal, plain lines otherwise, JSON when configured.
//! `RUST_LOG` overrides `telemetry.filter`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetryConfig};

/// Installs the global subscriber. A second call (tests starting several services) is a no-op.
pub fn init(config: &TelemetryConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.filter));
    let format = match config.format {
        LogFormat::Auto if std::io::stdout().is_terminal() => LogFormat::Pretty,
        LogFormat::Auto => LogFormat::Plain,
        other => other,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.with_ansi(true).try_init(),
        LogFormat::Plain | LogFormat::Auto => builder.with_ansi(false).try_init(),
    };
}
