//! Start-up: from a configuration to a running gateway, failing early and clearly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::Signal;

use crate::audit::ship::{ShipStats, Shipper};
use crate::audit::{Auditor, OpenError};
use crate::config::{Config, UpstreamMode};
use crate::drift::DriftMonitor;
use crate::metrics::Metrics;
use crate::reload::{Generation, Live, Serve};
use crate::shard::Shards;
pub use crate::startup::StartError;
use crate::{admin, server};

/// A gateway built from its configuration, ready to serve.
#[derive(Debug)]
pub struct App {
    live: Arc<Live>,
    /// The audit shipper's counters and lag, when shipping to PostgreSQL is on.
    pub ship_stats: Option<Arc<ShipStats>>,
    /// Called by each serving thread when it goes idle.
    on_park: fn(),
}

impl App {
    /// Opens the audit log and loads the first generation (spec, token, upstream client).
    /// Nothing is bound yet. `config_file` and `mock` are what reloads read again.
    pub fn build(
        config: Config,
        config_file: Option<PathBuf>,
        mock: bool,
    ) -> Result<App, StartError> {
        let metrics = Metrics::new();
        ignore_file_size_signal();
        let mut audit_options = config.audit.options()?;
        // With shipping on, retention keeps the files the database does not have yet.
        let ship_stats = config.audit.ship.as_ref().map(|_| ShipStats::new());
        audit_options.shipped = ship_stats.as_ref().map(|s| s.watermark());
        let audit_key = audit_options.key.clone();
        let auditor = Auditor::open_observed(audit_options, Arc::new(metrics.audit().clone()))?;
        if let (Some(ship), Some(stats)) = (&config.audit.ship, &ship_stats) {
            metrics.watch_shipping(stats.clone());
            Shipper::new(ship.clone(), &config.audit.path, audit_key, stats.clone())
                .spawn()
                .map_err(|source| OpenError::Io {
                    path: "audit shipper thread".into(),
                    source,
                })?;
        }
        // One check of upstream responses for the process; each generation sets its rate.
        let drift =
            DriftMonitor::start(config.drift.settings(), config.drift.queue, metrics.clone())
                .map_err(|source| OpenError::Io {
                    path: "drift check thread".into(),
                    source,
                })?;
        let first = Generation::build(config, auditor.clone(), metrics.clone(), &drift, None)?;
        Ok(App {
            live: Arc::new(Live::new(first, auditor, metrics, drift, config_file, mock)),
            ship_stats,
            on_park: || {},
        })
    }

    /// Has each serving thread call `hook` when it goes idle (the binary's allocator policy).
    pub fn on_worker_park(mut self, hook: fn()) -> Self {
        self.on_park = hook;
        self
    }

    /// The running gateway's state.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Binds both listeners, logs the start-up summary, and serves until SIGTERM/SIGINT;
    /// SIGHUP reloads. On shutdown readiness fails first, then new connections are refused and
    /// in-flight requests get `shutdown_grace` to finish.
    pub async fn run(self) -> Result<(), StartError> {
        // Before anyone can learn the gateway is up, so no signal meets the default action.
        let mut signals = Signals::install();
        let current = self.live.current();
        let config = &current.config;
        let (proxy, listen) = bind("SPECGATE_LISTEN", config.listen).await?;
        self.live.set_bound(listen);
        let (admin, admin_listen) = bind("SPECGATE_ADMIN_LISTEN", config.admin_listen).await?;
        // Proxy connections are served on these; everything else (admin, signals, reloads,
        // background tasks) stays on the runtime this runs on.
        let shards = Shards::start(config.workers, self.on_park).map_err(StartError::Workers)?;
        let limits = &config.limits;
        let listening = server::Listening {
            header_read_timeout: limits.header_read_timeout,
            max_connections: limits.max_connections,
            // hyper's backstops sit well above the stack's limits, so a head just over them
            // gets the stack's problem+json rather than hyper's bare 431.
            max_head_bytes: 2 * (limits.max_uri_bytes + limits.max_header_bytes),
            max_headers: 2 * limits.max_headers,
            tls: self.live.tls(),
        };
        let client_auth = current.client_auth_summary();
        if client_auth == "none" {
            if listen.ip().is_loopback() {
                tracing::warn!(
                    listen = %listen,
                    "no clients configured: any process on this host can call the API through \
                     specgate; listening on loopback only"
                );
            } else if config.mode == UpstreamMode::Mock {
                tracing::warn!(
                    listen = %listen,
                    "mock mode on a non-loopback address without client authentication: anyone \
                     who can reach it gets the mock's answers (no token is held, nothing is \
                     forwarded)"
                );
            } else {
                tracing::warn!(
                    listen = %listen,
                    "no clients configured and allow_unauthenticated = true: anyone who can reach \
                     this address can call the API with the stored token"
                );
            }
        }
        let upstream = match config.mode {
            UpstreamMode::Proxy => config.upstream.base.to_string(),
            UpstreamMode::Mock => {
                "mock: answering from the spec's examples; no upstream or token needed".to_owned()
            }
        };
        // One summary line: `specgate ready` only when /readyz would answer 200.
        macro_rules! summary {
            ($level:ident, $($message:tt)+) => {
                tracing::$level!(
                    listen = %listen,
                    admin_listen = %admin_listen,
                    mode = %config.mode,
                    upstream = %upstream,
                    spec = %current.spec.origin,
                    overlays = ?current.spec.overlays,
                    operations = current.spec.operations.len(),
                    spec_warnings = current.spec.warnings.len(),
                    auth = %current.auth_summary(),
                    tls = listening.tls.is_some(),
                    client_auth = %client_auth,
                    unknown_routes = ?config.unknown_routes,
                    audit_log = %config.audit.path.display(),
                    shutdown_grace_ms = config.shutdown_grace.as_millis() as u64,
                    workers = shards.len(),
                    $($message)+
                )
            };
        }
        let failing = admin::failing(&admin::checks(&self.live).await);
        if failing.is_empty() {
            summary!(info, "specgate ready");
        } else {
            summary!(warn, "specgate serving, not ready: {failing}");
            tokio::spawn(announce_ready(self.live.clone(), listen, admin_listen));
        }
        let grace = config.shutdown_grace;
        drop(current);
        // A rotated or late token file is picked up without a restart (SIGHUP reloads it too).
        let token_watch = tokio::spawn(crate::reload::watch_token_file(self.live.clone()));

        let admin_stop = Arc::new(tokio::sync::Notify::new());
        let admin_task = {
            let live = self.live.clone();
            let stop = admin_stop.clone();
            let service = tower::service_fn(move |req| admin::handle(live.clone(), req));
            tokio::spawn(async move {
                let listening = server::Listening::default();
                server::serve(
                    admin,
                    service,
                    &listening,
                    None,
                    stop.notified(),
                    Duration::from_secs(1),
                )
                .await;
            })
        };
        let reloads = {
            let live = self.live.clone();
            let mut hangups = signals.hangup.take();
            tokio::spawn(async move {
                while let Some(hangups) = hangups.as_mut() {
                    if hangups.recv().await.is_none() {
                        break;
                    }
                    let _ = live.reload("SIGHUP").await;
                }
            })
        };

        let live = self.live.clone();
        // When shutdown began: one grace period covers both in-flight requests and forwarded
        // creates still waiting for their record.
        let stopping = Arc::new(std::sync::OnceLock::new());
        let stopping_at = stopping.clone();
        let shutdown = async move {
            let signal = signals.terminate().await;
            let _ = stopping_at.set(std::time::Instant::now());
            // Readiness fails before anything else changes, so traffic drains first.
            live.start_draining();
            tracing::info!(
                signal,
                grace_ms = grace.as_millis() as u64,
                "shutting down: refusing new connections, finishing in-flight requests"
            );
        };
        server::serve(
            proxy,
            Serve::new(self.live.clone()),
            &listening,
            Some(&shards),
            shutdown,
            grace,
        )
        .await;
        reloads.abort();
        token_watch.abort();

        // Each create's record is synced before its response is released, so once no request
        // is in flight every acknowledged record is on disk; the flush also leaves the head
        // file naming the last record (and syncs an `interval` log).
        let left = stopping
            .get()
            .map_or(grace, |started: &std::time::Instant| {
                grace.saturating_sub(started.elapsed())
            });
        match self.live.auditor().finish(left).await {
            Ok(0) => {}
            Ok(unfinished) => tracing::warn!(
                unfinished,
                "creates still waiting for the upstream after the grace period: their outcome \
                 is not recorded (query --outcome unknown shows them)"
            ),
            Err(error) => tracing::error!(%error, "audit log not flushed at shutdown"),
        }
        let in_flight = self.live.metrics().in_flight().get();
        if in_flight == 0 {
            tracing::info!(
                audit_log_writable = self.live.auditor().health().writable(),
                "in-flight requests finished; every acknowledged audit record is synced"
            );
        } else {
            tracing::warn!(
                in_flight,
                "grace period over with requests in flight; they are cut off unanswered"
            );
        }
        admin_stop.notify_one();
        let _ = admin_task.await;
        tracing::info!("specgate stopped");
        Ok(())
    }
}

/// How often a gateway that started unready looks again, to say when it is ready.
const READY_POLL: Duration = Duration::from_millis(500);

/// Logs `specgate ready` once the readiness checks all pass (a token file mounted late, an
/// upstream name that starts to resolve), so the log never leaves "not ready" as the last word.
async fn announce_ready(live: Arc<Live>, listen: SocketAddr, admin_listen: SocketAddr) {
    loop {
        tokio::time::sleep(READY_POLL).await;
        if live.draining() {
            return;
        }
        if admin::failing(&admin::checks(&live).await).is_empty() {
            tracing::info!(listen = %listen, admin_listen = %admin_listen, "specgate ready");
            return;
        }
    }
}

async fn bind(
    setting: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), StartError> {
    let error = |source| StartError::Bind {
        setting,
        addr,
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let local = listener.local_addr().map_err(error)?;
    Ok((listener, local))
}

/// A file-size limit (`ulimit -f`, `LimitFSIZE=`) reached by the audit log must fail the write,
/// which refuses creates, not kill the sidecar: SIGXFSZ's default action is to terminate. A
/// registered handler replaces that default for the life of the process.
fn ignore_file_size_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    if let Err(error) = signal(SignalKind::from_raw(libc::SIGXFSZ)) {
        tracing::warn!(%error, "cannot handle SIGXFSZ; a file-size limit will stop the process");
    }
}

/// The signals specgate acts on (a Unix sidecar), registered before start-up completes.
struct Signals {
    terminate: Option<Signal>,
    interrupt: Option<Signal>,
    hangup: Option<Signal>,
}

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let install = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(error) => {
                tracing::error!(%error, signal = name, "cannot handle the signal");
                None
            }
        };
        Signals {
            terminate: install(SignalKind::terminate(), "SIGTERM"),
            interrupt: install(SignalKind::interrupt(), "SIGINT"),
            hangup: install(SignalKind::hangup(), "SIGHUP"),
        }
    }

    /// Completes on SIGTERM or SIGINT, naming which.
    async fn terminate(&mut self) -> &'static str {
        async fn next(signal: &mut Option<Signal>) {
            match signal {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = next(&mut self.terminate) => "SIGTERM",
            () = next(&mut self.interrupt) => "SIGINT",
        }
    }
}
