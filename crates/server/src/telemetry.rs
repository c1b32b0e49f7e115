//! Structured logs: `RUST_LOG` wins over the configured filter.

use tracing_subscriber::{fmt, EnvFilter};

pub fn init(default_filter: &str) {
    // PostgreSQL's notices ("relation _sqlx_migrations already exists, skipping" at every
    // start) are noise for operators; its warnings still show. Named filters decide for
    // themselves.
    let default_filter = if default_filter.contains("sqlx") {
        default_filter.to_string()
    } else {
        format!("{default_filter},sqlx::postgres::notice=warn")
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&default_filter));
    // Colour codes only help on a terminal; in files and journals they are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}
