//! Start-up: from a configuration to a running gateway, failing early and clearly.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::audit::ship::{ShipStats, Shipper};
use crate::audit::{Auditor, OpenError};
use crate::config::{Config, ConfigError};
use crate::route::{RouteError, RouteTable};
use crate::spec::{Spec, SpecError};
use crate::token::{TokenError, TokenStore};
use crate::upstream::{self, SetupError, Upstream};
use crate::{server, stack};

/// Why specgate did not start. Each renders as one line naming what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is missing or malformed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The spec or an overlay is unusable.
    #[error("spec {0}")]
    Spec(#[from] SpecError),
    /// The spec's paths do not form a route table.
    #[error("spec: {0}")]
    Route(#[from] RouteError),
    /// The token could not be read.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The upstream client could not be set up.
    #[error(transparent)]
    Upstream(#[from] SetupError),
    /// The audit log cannot be opened, or is damaged.
    #[error("SPECGATE_AUDIT_LOG {0}")]
    Audit(#[from] OpenError),
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

/// A gateway built from its configuration, ready to serve.
#[derive(Debug)]
pub struct App {
    /// The configuration it was built from.
    pub config: Config,
    /// The compiled spec.
    pub spec: Arc<Spec>,
    /// What the stack is built from.
    pub parts: stack::Parts,
    /// The audit shipper's counters and lag, when shipping to PostgreSQL is on.
    pub ship_stats: Option<Arc<ShipStats>>,
}

impl App {
    /// Loads the spec, token, audit log and upstream client. Nothing is bound yet.
    pub fn build(config: Config) -> Result<App, StartError> {
        let spec = Arc::new(Spec::load(&config.spec)?);
        let routes = Arc::new(RouteTable::new(&spec)?);
        let tokens = Arc::new(TokenStore::load(config.token.clone())?);
        ignore_file_size_signal();
        let mut audit_options = config.audit.options()?;
        // With shipping on, retention keeps the files the database does not have yet.
        let ship_stats = config.audit.ship.as_ref().map(|_| ShipStats::new());
        audit_options.shipped = ship_stats.as_ref().map(|s| s.watermark());
        let audit_key = audit_options.key.clone();
        let auditor = Auditor::open(audit_options)?;
        if let (Some(ship), Some(stats)) = (&config.audit.ship, &ship_stats) {
            Shipper::new(ship.clone(), &config.audit.path, audit_key, stats.clone())
                .spawn()
                .map_err(|source| OpenError::Io {
                    path: "audit shipper thread".into(),
                    source,
                })?;
        }
        let client = upstream::client(&config.upstream)?;
        let parts = stack::Parts {
            routes,
            credential_header: config
                .credential_header
                .clone()
                .unwrap_or_else(|| spec.credential_header.clone()),
            tokens,
            auditor,
            max_body_bytes: config.max_body_bytes,
            upstream: Upstream::new(client, &config.upstream),
        };
        Ok(App {
            config,
            spec,
            parts,
            ship_stats,
        })
    }

    /// Binds the proxy listener, logs the start-up summary, and serves until SIGTERM/SIGINT.
    pub async fn run(self) -> Result<(), StartError> {
        let listener = TcpListener::bind(self.config.listen)
            .await
            .map_err(|source| StartError::Bind {
                setting: "SPECGATE_LISTEN",
                addr: self.config.listen,
                source,
            })?;
        let listen = listener.local_addr().map_err(|source| StartError::Bind {
            setting: "SPECGATE_LISTEN",
            addr: self.config.listen,
            source,
        })?;
        tracing::info!(
            listen = %listen,
            upstream = %self.config.upstream.base,
            spec = %self.spec.origin,
            overlays = ?self.spec.overlays,
            operations = self.spec.operations.len(),
            credential_header = %self.parts.credential_header,
            audit_log = %self.config.audit.path.display(),
            "specgate ready"
        );
        let service = stack::build(self.parts.clone());
        server::serve(
            listener,
            service,
            shutdown_signal(),
            Duration::from_secs(20),
        )
        .await;
        tracing::info!("specgate stopped");
        Ok(())
    }
}

/// A file-size limit (`ulimit -f`, `LimitFSIZE=`) reached by the audit log must fail the write,
/// which refuses creates, not kill the sidecar: SIGXFSZ's default action is to terminate. A
/// registered handler replaces that default for the life of the process.
fn ignore_file_size_signal() {
    #[cfg(unix)]
    if let Err(error) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ))
    {
        tracing::warn!(%error, "cannot handle SIGXFSZ; a file-size limit will stop the process");
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
