//! Logs to stderr with tracing: text or JSON, a filter that SIGHUP can change.

use crate::config::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::{layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter, Registry};

/// Changes the live log filter.
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    /// RUST_LOG, when set, wins over the configured level (also on reload).
    rust_log: Option<String>,
}

/// Install the global subscriber. `level` is the configured `log_level`.
pub fn init(level: &str, format: &LogFormat) -> Result<LogControl, String> {
    let rust_log = std::env::var("RUST_LOG").ok().filter(|s| !s.trim().is_empty());
    let filter = parse_filter(rust_log.as_deref().unwrap_or(level))?;
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let result = match format {
        LogFormat::Text => tracing_subscriber::registry().with(filter).with(fmt).try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(fmt.json())
            .try_init(),
    };
    result.map_err(|e| format!("could not install the logger: {e}"))?;
    Ok(LogControl { handle, rust_log })
}

impl LogControl {
    /// Apply a new configured level. Returns what was done, for the log.
    pub fn set_level(&self, level: &str) -> Result<String, String> {
        if let Some(rust_log) = &self.rust_log {
            return Ok(format!(
                "log_level unchanged: RUST_LOG={rust_log} takes precedence"
            ));
        }
        let filter = parse_filter(level)?;
        self.handle
            .reload(filter)
            .map_err(|e| format!("could not change the log filter: {e}"))?;
        Ok(format!("log_level = {level}"))
    }
}

/// A bare level ("debug") applies to pycom's own code; dependencies stay
/// at warn (openraft at error: it warns ten times a second while a peer is
/// down, which pycomd's own role changes already say). Anything else is a full tracing directive list.
fn parse_filter(spec: &str) -> Result<EnvFilter, String> {
    let level = spec.trim();
    let directives = if !level.is_empty() && level.chars().all(|c| c.is_ascii_alphabetic()) {
        format!("warn,openraft=error,pycomd={level},pycom_client={level}")
    } else {
        level.to_string()
    };
    EnvFilter::builder()
        .parse(&directives)
        .map_err(|e| format!("invalid log level '{spec}': {e}"))
}
