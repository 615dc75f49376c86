//! Why specgate could not start, or a reload could not build a new generation: one error type
//! below both, so neither depends on the other for it.

use crate::audit::OpenError;
use crate::config::ConfigError;
use crate::spec::SpecError;
use crate::tls::TlsSetupError;
use crate::token::TokenError;
use crate::upstream::SetupError;

/// Why specgate did not start. Each renders as one line naming what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is missing or malformed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The spec or an overlay is unusable.
    #[error("spec {0}")]
    Spec(#[from] SpecError),
    /// The token could not be read.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The upstream client could not be set up.
    #[error(transparent)]
    Upstream(#[from] SetupError),
    /// The audit log cannot be opened, or is damaged.
    #[error("SPECGATE_AUDIT_LOG {0}")]
    Audit(#[from] OpenError),
    /// Inbound TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The serving threads could not be started.
    #[error("cannot start the serving threads: {0}")]
    Workers(#[source] std::io::Error),
    /// A listener could not be bound.
    #[error("{setting} ({addr}): cannot listen: {source}")]
    Bind {
        /// The setting.
        setting: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}
