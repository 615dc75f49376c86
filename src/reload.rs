//! Live reload: everything that can change without a restart (settings, spec, overlays, token,
//! upstream client) is one [`Generation`], and the served stack is the current generation's.
//!
//! A reload builds a whole new generation beside the running one and swaps it in only if every
//! part of it loaded; a bad new version is refused, logged and counted, and the old one keeps
//! serving. Each request takes the generation that is current when it arrives and keeps it to
//! the end, so in-flight requests finish on the version they started with. The listeners and the
//! audit log are not part of a generation: changing those needs a restart, and a reload says so.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use tower::ServiceExt;
use tower::util::{BoxCloneSyncService, Either, Oneshot};
use tower_service::Service;

use crate::audit::Auditor;
use crate::body::Body;
use crate::client::ALLOW_ANY;
use crate::config::{CREDENTIAL, ConfigError, OAUTH2_TOKEN_URL};
use crate::config::{Config, TokenSource, UpstreamMode};
use crate::drift::DriftMonitor;
use crate::error::Chain;
use crate::layer::auth::Clients;
use crate::layer::credential::{CredentialPlan, Credentials};
use crate::layer::head::HeadLimits;
use crate::metrics::Metrics;
use crate::mock::Mock;
use crate::oauth2::TokenCache;
use crate::route::RouteTable;
use crate::scheme::{Scheme, describe_all};
use crate::spec::{Spec, SpecWarning};
use crate::stack;
use crate::startup::StartError;
use crate::token::TokenStore;
use crate::upstream::{self, Upstream};

/// The request path of one generation, boxed so generations can be swapped.
pub type ProxyService = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// One loaded version of everything a reload can change.
#[derive(Debug)]
pub struct Generation {
    /// The settings it was built from.
    pub config: Config,
    /// The compiled spec.
    pub spec: Arc<Spec>,
    /// The spec's operations, routable.
    pub routes: Arc<RouteTable>,
    /// How requests carry the stored secret upstream.
    pub credentials: CredentialPlan,
    /// The token, or why there is none.
    pub tokens: Credentials,
    /// Why no token is loaded, when none is (for readiness and logs; never the token).
    pub token_problem: Option<String>,
    /// Inbound TLS from `tls.cert`/`tls.key`/`tls.client_ca`, read afresh by each generation
    /// (a renewed certificate is picked up by a reload).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The stack built from all of the above.
    pub service: ProxyService,
}

impl Generation {
    /// Builds a generation from `config`. `previous` is the running generation on a reload:
    /// its token store is reloaded in place when the token source is unchanged, so a failed
    /// token read keeps the old token. At start-up (`previous` is `None`) a token file that
    /// cannot be read is not fatal: the gateway starts unready and refuses requests until a
    /// reload loads it; on a reload it refuses the new generation.
    pub fn build(
        config: Config,
        auditor: Auditor,
        metrics: Metrics,
        drift: &Arc<DriftMonitor>,
        previous: Option<&Generation>,
    ) -> Result<Generation, StartError> {
        let spec = Arc::new(Spec::load(&config.spec)?);
        for warning in &spec.warnings {
            let SpecWarning(at) = warning;
            tracing::warn!(
                file = %at.file,
                pointer = %at.pointer,
                "spec: {}; `specgate check --strict` refuses this",
                at.message
            );
        }
        check_allow_lists(&config, &spec)?;
        let tls = config
            .tls
            .as_ref()
            .map(crate::tls::server_config)
            .transpose()?;
        let routes = Arc::new(
            RouteTable::new(&spec)
                .with_unknown_routes(config.unknown_routes)
                .with_trailing_slash(config.trailing_slash),
        );
        let configured = configured_credential(&config, &spec)?;
        let (backend, oauth2) = match config.mode {
            UpstreamMode::Mock => (
                Either::Right(Mock {
                    dynamic: config.mock_dynamic,
                }),
                None,
            ),
            UpstreamMode::Proxy => {
                // One pool per serving thread, so a request and its upstream connection are
                // served by the same thread.
                let clients = (0..config.workers.max(1))
                    .map(|_| upstream::client(&config.upstream))
                    .collect::<Result<Vec<_>, _>>()?;
                // Token endpoints are reached like the upstream, with the same trust roots
                // (through the first serving thread's pool).
                let oauth2 = TokenCache::new(clients[0].clone(), config.upstream.timeout);
                (
                    Either::Left(Upstream::new(clients, &config.upstream)),
                    Some(Arc::new(oauth2)),
                )
            }
        };
        // The token last: nothing else can fail after it is swapped.
        let (tokens, token_problem) = match (config.mode, &config.token) {
            (UpstreamMode::Mock, _) | (_, None) => (Credentials::NotNeeded, None),
            (UpstreamMode::Proxy, Some(source)) => load_token(source, previous, &metrics)?,
        };
        let mut places = spec.credential_places.clone();
        places.extend(configured.as_ref().map(|scheme| scheme.place()));
        places.dedup();
        let credentials = CredentialPlan {
            places: places.into(),
            configured,
            token_url: config.oauth2_token_url.as_deref().map(Arc::from),
            tokens: tokens.clone(),
            oauth2,
            metrics: Some(metrics.clone()),
        };
        let service = ProxyService::new(stack::build::<Body>(stack::Parts {
            routes: routes.clone(),
            credentials: credentials.clone(),
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
            enforce: config.enforce,
            // Mock answers are the document's own: nothing to compare.
            drift: (config.drift.check && config.mode == UpstreamMode::Proxy)
                .then(|| drift.clone()),
            upstream: backend,
            metrics,
        }));
        Ok(Generation {
            config,
            spec,
            routes,
            credentials,
            tokens,
            token_problem,
            tls,
            service,
        })
    }

    /// How callers are authenticated, for the start-up summary (never a key).
    pub fn client_auth_summary(&self) -> String {
        let mtls = self
            .config
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca.is_some());
        match (self.config.clients.is_empty(), mtls) {
            (false, _) => format!(
                "client keys{} required: {}",
                if mtls { " or certificates" } else { "" },
                self.config
                    .clients
                    .iter()
                    .map(|c| &*c.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (true, true) => "client certificates required (any from tls.client_ca)".to_owned(),
            (true, false) => "none".to_owned(),
        }
    }

    /// How the upstream is authenticated, for the start-up summary (never the token).
    pub fn auth_summary(&self) -> String {
        let schemes = credential_summary(&self.spec, self.credentials.configured.as_deref());
        match (&self.tokens, &self.config.token) {
            (Credentials::NotNeeded, _) => "none: mock mode forwards nothing".to_owned(),
            (Credentials::Missing, _) => format!(
                "{schemes}; token NOT loaded: {}",
                self.token_problem.as_deref().unwrap_or("unknown")
            ),
            (Credentials::Token(_), Some(TokenSource::File(path))) => {
                format!("{schemes}; token from the file {}", path.display())
            }
            (Credentials::Token(_), _) => {
                format!("{schemes}; token from {}", crate::config::API_TOKEN_ENV)
            }
        }
    }
}

/// How many operations take each scheme: `X-Key header (12), none (2)`; a configured scheme
/// stands in for every document scheme.
pub fn credential_summary(spec: &Spec, configured: Option<&Scheme>) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for operation in &spec.operations {
        let name = match (&operation.credential, configured) {
            (None, _) => "none".to_owned(),
            (Some(_), Some(configured)) => configured.describe(),
            (Some(own), None) if own.is_empty() => "none that specgate can fill".to_owned(),
            (Some(own), None) => describe_all(own),
        };
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => *count += 1,
            None => counts.push((name, 1)),
        }
    }
    counts
        .iter()
        .map(|(name, count)| format!("{name} ({count})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `credential` setting, with an `oauth2` one's token URL taken from the document when the
/// settings give none.
fn configured_credential(config: &Config, spec: &Spec) -> Result<Option<Arc<Scheme>>, ConfigError> {
    let Some(configured) = &config.credential else {
        return Ok(None);
    };
    if let Scheme::OAuth2 { token_url, scopes } = configured
        && token_url.is_empty()
    {
        let documented = spec
            .operations
            .iter()
            .flat_map(|op| op.credential.iter().flat_map(|own| own.iter()))
            .find_map(|scheme| match scheme {
                Scheme::OAuth2 { token_url, .. } => Some(token_url.clone()),
                _ => None,
            });
        let Some(token_url) = documented else {
            return Err(ConfigError {
                setting: format!("{} ({})", CREDENTIAL.env, CREDENTIAL.key),
                message: format!(
                    "oauth2 needs a token URL and the document has no clientCredentials flow; \
                     set {} ({})",
                    OAUTH2_TOKEN_URL.env, OAUTH2_TOKEN_URL.key
                ),
            });
        };
        return Ok(Some(Arc::new(Scheme::OAuth2 {
            token_url,
            scopes: scopes.clone(),
        })));
    }
    Ok(Some(Arc::new(configured.clone())))
}

/// Refuses an allow list naming an operation the spec does not have: a typo would otherwise
/// lock a client out of the operation it was meant to reach.
pub fn check_allow_lists(config: &Config, spec: &Spec) -> Result<(), ConfigError> {
    for (i, client) in config.clients.iter().enumerate() {
        for op in client.allow.iter().flatten() {
            if op != ALLOW_ANY && !spec.operations.iter().any(|o| *o.id == **op) {
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

/// Checks the token file every `api_token_poll_ms` and, when it has changed, reloads the token of the
/// generation serving requests: a good new token is used from then on; an empty, unreadable or
/// malformed one is logged and the current token kept. A token file that was missing at start
/// (specgate unready) triggers a full reload once it appears. Does nothing for a token from the
/// environment.
pub async fn watch_token_file(live: Arc<Live>) {
    loop {
        // Read each time, so a reload can change the interval.
        let every = live.current().config.token_poll;
        tokio::time::sleep(every).await;
        let current = live.current();
        match (&current.tokens, &current.config.token) {
            (Credentials::Token(store), _) if store.file_changed() => {
                let result = store.reload();
                live.metrics().token_reload(result.is_ok());
                match result {
                    Ok(()) => tracing::info!(file = ?store.file(), "API token reloaded"),
                    Err(error) => tracing::warn!(
                        %error,
                        "API token file changed but was not usable; keeping the current token"
                    ),
                }
            }
            (Credentials::Missing, Some(TokenSource::File(path))) if path.exists() => {
                drop(current);
                let _ = live.reload("token file appeared").await;
            }
            _ => {}
        }
    }
}

fn load_token(
    source: &TokenSource,
    previous: Option<&Generation>,
    metrics: &Metrics,
) -> Result<(Credentials, Option<String>), StartError> {
    let same_store = previous.and_then(|p| match (&p.tokens, &p.config.token) {
        (Credentials::Token(store), Some(old)) if old == source => Some(store.clone()),
        _ => None,
    });
    let result = match (same_store, previous) {
        (Some(store), _) => store.reload().map(|()| store),
        (None, _) => TokenStore::load(source.clone()).map(Arc::new),
    };
    if previous.is_some() {
        metrics.token_reload(result.is_ok());
    }
    match result {
        Ok(store) => Ok((Credentials::Token(store), None)),
        // At start-up a token file may simply not be there yet (a Secret still being
        // mounted): start unready rather than not at all. The environment cannot change.
        Err(error) if previous.is_none() && matches!(source, TokenSource::File(_)) => {
            tracing::warn!(
                error = %error,
                "no API token loaded; requests are refused (token-unavailable) until the file \
                 can be read: it is looked for every api_token_poll_ms \
                 (SPECGATE_API_TOKEN_POLL_MS), and on a reload"
            );
            Ok((Credentials::Missing, Some(error.to_string())))
        }
        Err(error) => Err(error.into()),
    }
}

/// The settings a reload cannot apply, with the running and the new value, when they differ.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<(&'static str, String, String)> {
    let mut changes = Vec::new();
    let mut check = |setting: &'static str, old: String, new: String| {
        if old != new {
            changes.push((setting, old, new));
        }
    };
    check(
        crate::config::LISTEN.env,
        old.listen.to_string(),
        new.listen.to_string(),
    );
    check(
        crate::config::ADMIN_LISTEN.env,
        old.admin_listen.to_string(),
        new.admin_listen.to_string(),
    );
    check(
        crate::config::AUDIT_LOG.env,
        old.audit.path.display().to_string(),
        new.audit.path.display().to_string(),
    );
    check(
        crate::config::WORKERS.env,
        old.workers.to_string(),
        new.workers.to_string(),
    );
    check(
        crate::config::SHUTDOWN_GRACE_MS.env,
        old.shutdown_grace.as_millis().to_string(),
        new.shutdown_grace.as_millis().to_string(),
    );
    // TLS on or off: the listener is built for one or the other (certificates themselves
    // reload).
    check(
        "SPECGATE_TLS_CERT",
        old.tls.is_some().to_string(),
        new.tls.is_some().to_string(),
    );
    // The listener's limits.
    check(
        crate::config::MAX_CONNECTIONS.env,
        old.limits.max_connections.to_string(),
        new.limits.max_connections.to_string(),
    );
    check(
        crate::config::HEADER_READ_TIMEOUT_MS.env,
        old.limits.header_read_timeout.as_millis().to_string(),
        new.limits.header_read_timeout.as_millis().to_string(),
    );
    // The drift check's queue is made once per process.
    check(
        crate::config::DRIFT_QUEUE.env,
        old.drift.queue.to_string(),
        new.drift.queue.to_string(),
    );
    // The audit writer and shipper are opened once per process.
    check(
        "SPECGATE_AUDIT_*",
        audit_settings(&old.audit),
        audit_settings(&new.audit),
    );
    changes
}

/// Every audit setting but the path, as one comparable string.
fn audit_settings(audit: &crate::config::AuditConfig) -> String {
    format!(
        "sync={:?} on_error={:?} hmac_key_file={:?} max_file_bytes={} keep_files={} shipping={:?}",
        audit.sync,
        audit.on_error,
        audit.hmac_key_file,
        audit.max_file_bytes,
        audit.keep_files,
        audit
            .ship
            .as_ref()
            .map(|ship| (&ship.url, &ship.node, ship.batch, ship.poll))
    )
}

/// What a successful reload loaded.
#[derive(Debug)]
pub struct Reloaded {
    /// Operations in the new spec.
    pub operations: usize,
    /// Settings that changed but wait for a restart.
    pub restart_needed: Vec<&'static str>,
}

/// The running gateway's current generation, and what outlives generations.
#[derive(Debug)]
pub struct Live {
    current: ArcSwap<Generation>,
    /// The inbound TLS configuration new connections are accepted with; a reload swaps in the
    /// new generation's (TLS on or off needs a restart).
    tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    auditor: Auditor,
    metrics: Metrics,
    drift: Arc<DriftMonitor>,
    config_file: Option<PathBuf>,
    mock: bool,
    reloading: tokio::sync::Mutex<()>,
    draining: AtomicBool,
    /// Where the proxy listener was bound: the configuration's `listen` can change by reload
    /// without moving it.
    bound: std::sync::OnceLock<std::net::SocketAddr>,
}

impl Live {
    /// Wraps the first generation. A reload reads `config_file` (and the environment) again,
    /// in mock mode if `mock`.
    pub fn new(
        first: Generation,
        auditor: Auditor,
        metrics: Metrics,
        drift: Arc<DriftMonitor>,
        config_file: Option<PathBuf>,
        mock: bool,
    ) -> Self {
        drift.configure(first.config.drift.settings());
        Live {
            drift,
            tls: first.tls.clone().map(|tls| Arc::new(ArcSwap::new(tls))),
            current: ArcSwap::from_pointee(first),
            auditor,
            metrics,
            config_file,
            mock,
            reloading: tokio::sync::Mutex::new(()),
            draining: AtomicBool::new(false),
            bound: std::sync::OnceLock::new(),
        }
    }

    /// The inbound TLS configuration for new connections, if TLS is on.
    pub fn tls(&self) -> Option<Arc<ArcSwap<rustls::ServerConfig>>> {
        self.tls.clone()
    }

    /// The generation serving new requests.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Replaces the current generation; requests already started keep theirs.
    pub fn swap(&self, next: Generation) {
        self.drift.configure(next.config.drift.settings());
        self.current.store(Arc::new(next));
    }

    /// The check of upstream responses (the same for every generation).
    pub fn drift(&self) -> &Arc<DriftMonitor> {
        &self.drift
    }

    /// The audit log (the same for every generation).
    pub fn auditor(&self) -> &Auditor {
        &self.auditor
    }

    /// The metrics (the same for every generation).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Marks the gateway as shutting down: readiness fails from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Records where the proxy listener was bound (once, at start-up).
    pub fn set_bound(&self, addr: std::net::SocketAddr) {
        let _ = self.bound.set(addr);
    }

    /// Whether the gateway is shutting down.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Reads config, spec, overlays and token again and swaps them in if all of them load.
    /// One reload runs at a time; `trigger` (`SIGHUP`, `POST /reload`) is logged.
    pub async fn reload(self: &Arc<Self>, trigger: &'static str) -> Result<Reloaded, String> {
        let _one_at_a_time = self.reloading.lock().await;
        let live = self.clone();
        let built = tokio::task::spawn_blocking(move || {
            let previous = live.current();
            let config = Config::load(live.config_file.as_deref(), live.mock)?;
            // The listener stays where it was bound: a reload may not leave it open to anyone
            // with a token behind it (say, mock to proxy mode while listening on 0.0.0.0).
            let bound = live
                .bound
                .get()
                .map_or(previous.config.listen.ip(), |addr| addr.ip());
            if config.exposes_token_on(bound) {
                return Err(StartError::Config(crate::config::ConfigError {
                    setting: crate::config::LISTEN.env.to_owned(),
                    message: format!(
                        "the proxy is listening on {bound} (a restart is needed to move it), which \
                         is not loopback, and this configuration forwards with the token but \
                         authenticates no client; configure [[clients]] or tls.client_ca, or set \
                         {} = true",
                        crate::config::ALLOW_UNAUTHENTICATED.key
                    ),
                }));
            }
            let restart = restart_only_changes(&previous.config, &config);
            // The serving threads stay as started: one upstream pool for each.
            let config = Config {
                workers: previous.config.workers,
                ..config
            };
            let next = Generation::build(
                config,
                live.auditor.clone(),
                live.metrics.clone(),
                &live.drift,
                Some(&previous),
            )?;
            Ok::<_, StartError>((next, restart))
        })
        .await
        .map_err(|e| format!("reload task failed: {e}"));
        let result = match built {
            Ok(Ok((next, restart))) => {
                for (setting, old, new) in &restart {
                    tracing::warn!(setting, running = %old, configured = %new, "changed, but takes effect only after a restart");
                }
                let reloaded = Reloaded {
                    operations: next.spec.operations.len(),
                    restart_needed: restart.iter().map(|(s, _, _)| *s).collect(),
                };
                tracing::info!(
                    trigger,
                    operations = reloaded.operations,
                    spec = %next.spec.origin,
                    overlays = ?next.spec.overlays,
                    mode = %next.config.mode,
                    "config reloaded"
                );
                if let (Some(slot), Some(tls)) = (&self.tls, &next.tls) {
                    slot.store(tls.clone());
                }
                self.swap(next);
                Ok(reloaded)
            }
            Ok(Err(error)) => Err(Chain(&error).to_string()),
            Err(error) => Err(error),
        };
        if let Err(error) = &result {
            tracing::error!(trigger, %error, "reload refused; the running version keeps serving");
        }
        self.metrics.config_reload(result.is_ok());
        result
    }
}

/// The proxy's service: each request runs on the generation current when it arrives.
#[derive(Clone, Debug)]
pub struct Serve {
    live: Arc<Live>,
}

impl Serve {
    /// Serves `live`'s current generation.
    pub fn new(live: Arc<Live>) -> Self {
        Serve { live }
    }
}

impl<B> Service<Request<B>> for Serve
where
    B: Into<Body>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Oneshot<ProxyService, Request<Body>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The clone holds this generation's parts until the response is done.
        self.live
            .current
            .load()
            .service
            .clone()
            .oneshot(req.map(Into::into))
    }
}

// hyper's server hands the service `Incoming` bodies; this is the shape it serves.
const _: fn() = || {
    fn serves<S: Service<Request<Incoming>>>() {}
    serves::<Serve>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Sources;
    use http_body_util::BodyExt;
    use tower::service_fn;

    fn test_drift() -> Arc<DriftMonitor> {
        DriftMonitor::start(
            crate::config::DriftConfig::default().settings(),
            1,
            Metrics::new(),
        )
        .unwrap()
    }

    fn mock_generation(dir: &std::path::Path) -> (Generation, Auditor) {
        let sources = Sources::load(None, &|_| None).unwrap().force_mock();
        let config = Config::from_sources(&sources).unwrap();
        let auditor =
            Auditor::open(crate::audit::AuditOptions::new(dir.join("audit.jsonl"))).unwrap();
        let generation =
            Generation::build(config, auditor.clone(), Metrics::new(), &test_drift(), None)
                .unwrap();
        (generation, auditor)
    }

    fn answering(
        text: &'static str,
        wait: Option<tokio::sync::oneshot::Receiver<()>>,
    ) -> ProxyService {
        let wait = Arc::new(std::sync::Mutex::new(wait));
        ProxyService::new(service_fn(move |_req: Request<Body>| {
            let wait = wait.lock().unwrap().take();
            async move {
                if let Some(wait) = wait {
                    let _ = wait.await;
                }
                Ok::<_, Infallible>(Response::new(Body::from(text)))
            }
        }))
    }

    async fn text(response: Response<Body>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn in_flight_requests_finish_on_the_generation_they_started_with() {
        let dir = tempfile::tempdir().unwrap();
        let (mut first, auditor) = mock_generation(dir.path());
        let (release, held) = tokio::sync::oneshot::channel();
        first.service = answering("first", Some(held));
        let live = Arc::new(Live::new(
            first,
            auditor,
            Metrics::new(),
            test_drift(),
            None,
            true,
        ));
        let mut serve = Serve::new(live.clone());

        let in_flight = tokio::spawn(serve.call(Request::new(Body::empty())));
        let (mut second, _) = mock_generation(dir.path());
        second.service = answering("second", None);
        live.swap(second);

        let after = serve.call(Request::new(Body::empty())).await.unwrap();
        assert_eq!(text(after).await, "second");
        release.send(()).unwrap();
        let before = in_flight.await.unwrap().unwrap();
        assert_eq!(text(before).await, "first");
    }

    #[test]
    fn listeners_and_the_audit_log_need_a_restart() {
        let sources = |listen: &str| {
            let listen = listen.to_owned();
            Config::from_sources(
                &Sources::load(None, &move |name| {
                    (name == "SPECGATE_LISTEN").then(|| listen.clone())
                })
                .unwrap()
                .force_mock(),
            )
            .unwrap()
        };
        let changes = restart_only_changes(&sources("127.0.0.1:1"), &sources("127.0.0.1:2"));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].0, "SPECGATE_LISTEN");
        assert!(restart_only_changes(&sources("127.0.0.1:1"), &sources("127.0.0.1:1")).is_empty());
    }

    #[test]
    fn the_serving_threads_need_a_restart_and_are_at_least_one() {
        let workers = |n: &'static str| {
            Config::from_sources(
                &Sources::load(None, &move |name| {
                    (name == "SPECGATE_WORKERS").then(|| n.to_owned())
                })
                .unwrap()
                .force_mock(),
            )
        };
        let changes = restart_only_changes(&workers("1").unwrap(), &workers("4").unwrap());
        assert_eq!(changes, [("SPECGATE_WORKERS", "1".into(), "4".into())]);
        for bad in ["0", "1025", "18446744073709551615"] {
            let refused = workers(bad).unwrap_err().to_string();
            assert!(refused.contains("SPECGATE_WORKERS"), "{bad}: {refused}");
        }
    }
}
