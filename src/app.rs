//! Start-up: from a configuration to a running gateway, failing early and clearly.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::audit::Auditor;
use crate::config::{Config, ConfigError};
use crate::layer::auth::{ALLOW_ANY, Clients};
use crate::layer::head::HeadLimits;
use crate::route::{RouteError, RouteTable};
use crate::spec::{Spec, SpecError};
use crate::tls::TlsSetupError;
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
    /// Inbound TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The audit log cannot be opened.
    #[error("SPECGATE_AUDIT_LOG ({path}): {source}")]
    Audit {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
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
    /// How connections are accepted and bounded.
    pub listening: server::Listening,
}

impl App {
    /// Loads the spec, token, audit log and upstream client. Nothing is bound yet.
    pub fn build(config: Config) -> Result<App, StartError> {
        let spec = Arc::new(Spec::load(&config.spec)?);
        let routes = Arc::new(RouteTable::new(&spec)?.with_unknown_routes(config.unknown_routes));
        check_allow_lists(&config, &spec)?;
        let tokens = Arc::new(TokenStore::load(config.token.clone())?);
        let auditor = Auditor::open(&config.audit.path).map_err(|source| StartError::Audit {
            path: config.audit.path.display().to_string(),
            source,
        })?;
        let client = upstream::client(&config.upstream)?;
        let limits = &config.limits;
        let listening = server::Listening {
            header_read_timeout: limits.header_read_timeout,
            max_connections: limits.max_connections,
            // hyper's backstops sit well above the stack's limits, so a head just over them
            // gets the stack's problem+json rather than hyper's bare 431.
            max_head_bytes: 2 * (limits.max_uri_bytes + limits.max_header_bytes),
            max_headers: 2 * limits.max_headers,
            tls: config
                .tls
                .as_ref()
                .map(crate::tls::server_config)
                .transpose()?,
        };
        let parts = stack::Parts {
            routes,
            credential_header: config
                .credential_header
                .clone()
                .unwrap_or_else(|| spec.credential_header.clone()),
            tokens,
            auditor,
            max_body_bytes: config.max_body_bytes,
            clients: Arc::new(Clients::new(&config.clients)),
            max_concurrent_requests: config.limits.max_concurrent_requests,
            request_timeout: config.limits.request_timeout,
            head_limits: HeadLimits {
                max_uri_bytes: config.limits.max_uri_bytes,
                max_header_bytes: config.limits.max_header_bytes,
                max_headers: config.limits.max_headers,
            },
            max_json_depth: config.limits.max_json_depth,
            upstream: Upstream::new(client, &config.upstream),
        };
        Ok(App {
            config,
            spec,
            parts,
            listening,
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
        let clients = &self.parts.clients;
        let mtls = self
            .config
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca.is_some());
        let client_auth = match (clients.is_empty(), mtls) {
            (false, _) => format!(
                "client keys{} required: {}",
                if mtls { " or certificates" } else { "" },
                clients.names().collect::<Vec<_>>().join(", ")
            ),
            (true, true) => "client certificates required (any from tls.client_ca)".to_owned(),
            (true, false) => "none".to_owned(),
        };
        if clients.is_empty() && !mtls {
            if listen.ip().is_loopback() {
                tracing::warn!(
                    listen = %listen,
                    "no clients configured: any process on this host can call the API through \
                     specgate; listening on loopback only"
                );
            } else {
                tracing::warn!(
                    listen = %listen,
                    "no clients configured and allow_unauthenticated = true: anyone who can reach \
                     this address can call the API with the stored token"
                );
            }
        }
        tracing::info!(
            listen = %listen,
            tls = self.listening.tls.is_some(),
            client_auth = %client_auth,
            unknown_routes = ?self.config.unknown_routes,
            upstream = %self.config.upstream.base,
            spec = %self.spec.origin,
            overlays = ?self.spec.overlays,
            operations = self.spec.operations.len(),
            credential_header = %self.parts.credential_header,
            audit_log = %self.config.audit.path.display(),
            "specgate ready"
        );
        // A rotated token file is picked up without a restart (SIGHUP reloads it too).
        let _token_watch = crate::token::watch(&self.parts.tokens, self.config.token_poll);
        let service = stack::build(self.parts.clone());
        server::serve(
            listener,
            service,
            &self.listening,
            shutdown_signal(),
            Duration::from_secs(20),
        )
        .await;
        tracing::info!("specgate stopped");
        Ok(())
    }
}

/// Refuses an allow list naming an operation the spec does not have: a typo would otherwise
/// lock a client out of the operation it was meant to reach.
fn check_allow_lists(config: &Config, spec: &Spec) -> Result<(), ConfigError> {
    for (i, client) in config.clients.iter().enumerate() {
        for op in client.allow.iter().flatten() {
            if op != ALLOW_ANY && !spec.operations.iter().any(|o| &o.id == op) {
                return Err(ConfigError {
                    setting: format!("clients[{i}].allow"),
                    message: format!(
                        "{op:?} is not an operationId in the spec (see `specgate routes`)"
                    ),
                });
            }
        }
    }
    Ok(())
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
