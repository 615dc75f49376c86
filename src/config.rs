//! Settings: defaults, overridden by the config file, overridden by the environment.
//!
//! Every setting has a key in `config/specgate.toml` and an environment variable; both are
//! listed once, in [`SETTINGS`]. A setting that is missing or malformed stops start-up with one
//! line naming it. The API token's value is never part of any message.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::Uri;

use crate::audit::ship::{PgUrl, ShipConfig, default_node};
use crate::audit::{AuditOptions, MacKey, OnError, SyncMode};
use crate::scheme::Scheme;
use crate::spec::{Enforce, ReadOnly, SpecSource};

/// One setting: its key in the config file and its environment variable.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// The dotted key in the TOML file (`upstream.timeout_ms`).
    pub key: &'static str,
    /// The environment variable (`SPECGATE_UPSTREAM_TIMEOUT_MS`).
    pub env: &'static str,
}

macro_rules! settings {
    ($($name:ident = $key:literal, $env:literal;)*) => {
        $(#[allow(missing_docs)] pub const $name: Setting = Setting { key: $key, env: $env };)*
        /// Every setting specgate reads.
        pub const SETTINGS: &[Setting] = &[$($name),*];
    };
}

settings! {
    LISTEN = "listen", "SPECGATE_LISTEN";
    ADMIN_LISTEN = "admin_listen", "SPECGATE_ADMIN_LISTEN";
    MAX_BODY_BYTES = "max_body_bytes", "SPECGATE_MAX_BODY_BYTES";
    CREDENTIAL = "credential", "SPECGATE_CREDENTIAL";
    CREDENTIAL_HEADER = "credential_header", "SPECGATE_CREDENTIAL_HEADER";
    OAUTH2_TOKEN_URL = "oauth2.token_url", "SPECGATE_OAUTH2_TOKEN_URL";
    API_TOKEN_FILE = "api_token_file", "SPECGATE_API_TOKEN_FILE";
    UPSTREAM = "upstream.url", "SPECGATE_UPSTREAM";
    UPSTREAM_CA = "upstream.ca_file", "SPECGATE_UPSTREAM_CA";
    UPSTREAM_TIMEOUT_MS = "upstream.timeout_ms", "SPECGATE_UPSTREAM_TIMEOUT_MS";
    UPSTREAM_CONNECT_TIMEOUT_MS = "upstream.connect_timeout_ms", "SPECGATE_UPSTREAM_CONNECT_TIMEOUT_MS";
    UPSTREAM_POOL_IDLE_TIMEOUT_MS = "upstream.pool_idle_timeout_ms", "SPECGATE_UPSTREAM_POOL_IDLE_TIMEOUT_MS";
    UPSTREAM_POOL_MAX_IDLE = "upstream.pool_max_idle_per_host", "SPECGATE_UPSTREAM_POOL_MAX_IDLE";
    UPSTREAM_HTTP2 = "upstream.http2", "SPECGATE_UPSTREAM_HTTP2";
    SPEC = "spec.path", "SPECGATE_SPEC";
    OVERLAYS = "spec.overlays", "SPECGATE_OVERLAYS";
    AUDIT_LOG = "audit.path", "SPECGATE_AUDIT_LOG";
    AUDIT_SYNC = "audit.sync", "SPECGATE_AUDIT_SYNC";
    AUDIT_SYNC_INTERVAL_MS = "audit.sync_interval_ms", "SPECGATE_AUDIT_SYNC_INTERVAL_MS";
    AUDIT_ON_ERROR = "audit.on_error", "SPECGATE_AUDIT_ON_ERROR";
    AUDIT_HMAC_KEY_FILE = "audit.hmac_key_file", "SPECGATE_AUDIT_HMAC_KEY_FILE";
    AUDIT_MAX_FILE_BYTES = "audit.max_file_bytes", "SPECGATE_AUDIT_MAX_FILE_BYTES";
    AUDIT_KEEP_FILES = "audit.keep_files", "SPECGATE_AUDIT_KEEP_FILES";
    SHUTDOWN_GRACE_MS = "shutdown_grace_ms", "SPECGATE_SHUTDOWN_GRACE_MS";
    WORKERS = "workers", "SPECGATE_WORKERS";
    UPSTREAM_MODE = "upstream.mode", "SPECGATE_UPSTREAM_MODE";
    MOCK_DYNAMIC = "upstream.mock_dynamic", "SPECGATE_MOCK_DYNAMIC";
    AUDIT_POSTGRES_URL = "audit.postgres_url", "SPECGATE_AUDIT_POSTGRES_URL";
    AUDIT_NODE = "audit.node", "SPECGATE_AUDIT_NODE";
    AUDIT_SHIP_BATCH = "audit.ship_batch", "SPECGATE_AUDIT_SHIP_BATCH";
    AUDIT_SHIP_POLL_MS = "audit.ship_poll_ms", "SPECGATE_AUDIT_SHIP_POLL_MS";
    API_TOKEN_POLL_MS = "api_token_poll_ms", "SPECGATE_API_TOKEN_POLL_MS";
    ALLOW_UNAUTHENTICATED = "allow_unauthenticated", "SPECGATE_ALLOW_UNAUTHENTICATED";
    TLS_CERT = "tls.cert", "SPECGATE_TLS_CERT";
    TLS_KEY = "tls.key", "SPECGATE_TLS_KEY";
    TLS_CLIENT_CA = "tls.client_ca", "SPECGATE_TLS_CLIENT_CA";
    ROUTES_UNKNOWN = "routes.unknown", "SPECGATE_ROUTES_UNKNOWN";
    ROUTES_TRAILING_SLASH = "routes.trailing_slash", "SPECGATE_ROUTES_TRAILING_SLASH";
    HEADER_READ_TIMEOUT_MS = "limits.header_read_timeout_ms", "SPECGATE_HEADER_READ_TIMEOUT_MS";
    REQUEST_TIMEOUT_MS = "limits.request_timeout_ms", "SPECGATE_REQUEST_TIMEOUT_MS";
    MAX_CONCURRENT_REQUESTS = "limits.max_concurrent_requests", "SPECGATE_MAX_CONCURRENT_REQUESTS";
    MAX_CONNECTIONS = "limits.max_connections", "SPECGATE_MAX_CONNECTIONS";
    MAX_URI_BYTES = "limits.max_uri_bytes", "SPECGATE_MAX_URI_BYTES";
    MAX_HEADER_BYTES = "limits.max_header_bytes", "SPECGATE_MAX_HEADER_BYTES";
    MAX_HEADERS = "limits.max_headers", "SPECGATE_MAX_HEADERS";
    MAX_JSON_DEPTH = "limits.max_json_depth", "SPECGATE_MAX_JSON_DEPTH";
    READ_ONLY = "validation.read_only", "SPECGATE_READ_ONLY";
    ENFORCE = "enforce", "SPECGATE_ENFORCE";
    DRIFT = "drift.check", "SPECGATE_DRIFT";
    DRIFT_SAMPLE_RATE = "drift.sample_rate", "SPECGATE_DRIFT_SAMPLE_RATE";
    DRIFT_MAX_BODY_BYTES = "drift.max_body_bytes", "SPECGATE_DRIFT_MAX_BODY_BYTES";
    DRIFT_QUEUE = "drift.queue", "SPECGATE_DRIFT_QUEUE";
}

/// The config-file key of the client list (`[[clients]]`). It has no environment variable:
/// each client is a table.
pub const CLIENTS_KEY: &str = "clients";

/// The environment variable that holds the token itself. It has no config-file key: a token
/// does not belong in a file that is committed or baked into an image.
pub const API_TOKEN_ENV: &str = "SPECGATE_API_TOKEN";
/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "SPECGATE_CONFIG";
/// The environment variable choosing the log format (`json` or `text`).
pub const LOG_FORMAT_ENV: &str = "SPECGATE_LOG_FORMAT";

/// Every environment variable specgate reads, settings and the rest (`RUST_LOG` included).
pub fn env_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = SETTINGS.iter().map(|s| s.env).collect();
    names.extend([API_TOKEN_ENV, CONFIG_ENV, LOG_FORMAT_ENV, "RUST_LOG"]);
    names
}

/// A setting that stops start-up.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    /// The setting, as the user would look for it (`SPECGATE_MAX_BODY_BYTES (max_body_bytes)`).
    pub setting: String,
    /// What is wrong with it.
    pub message: String,
}

/// The whole configuration, parsed and checked.
#[derive(Debug)]
pub struct Config {
    /// Where the proxy listens.
    pub listen: SocketAddr,
    /// Where the admin endpoints listen.
    pub admin_listen: SocketAddr,
    /// Request bodies larger than this are refused with 413.
    pub max_body_bytes: u64,
    /// How the stored secret goes upstream, for every operation that takes a credential,
    /// instead of the scheme the document gives it. An `oauth2` scheme with an empty token URL
    /// takes the document's.
    pub credential: Option<Scheme>,
    /// Where OAuth2 access tokens are fetched, instead of the document's `tokenUrl`.
    pub oauth2_token_url: Option<String>,
    /// Where the API token comes from; `None` only in mock mode with none configured.
    pub token: Option<TokenSource>,
    /// Whether requests are forwarded or answered from the spec's examples.
    pub mode: UpstreamMode,
    /// In mock mode, answer every request dynamically (as `Prefer: dynamic=true` asks).
    pub mock_dynamic: bool,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Serving threads, each a single-threaded runtime with its own upstream connections
    /// (default: the CPUs the process may use). Needs a restart to change.
    pub workers: usize,
    /// The upstream.
    pub upstream: UpstreamConfig,
    /// The spec and its overlays.
    pub spec: SpecSource,
    /// The audit log.
    pub audit: AuditConfig,
    /// How often the token file is checked for a new token.
    pub token_poll: Duration,
    /// The apps allowed to call through specgate; empty when client keys are not required.
    pub clients: Vec<ClientConfig>,
    /// Serve without client authentication on a non-loopback address.
    pub allow_unauthenticated: bool,
    /// Inbound TLS, when configured.
    pub tls: Option<TlsConfig>,
    /// What happens to a request for a path the spec does not have.
    pub unknown_routes: UnknownRoutes,
    /// Whether `/connections/` is the operation at `/connections`.
    pub trailing_slash: TrailingSlash,
    /// What happens to a request validation would refuse, for operations whose
    /// `x-specgate-enforce` does not say.
    pub enforce: Enforce,
    /// Limits on connections, request heads, time and concurrency.
    pub limits: Limits,
    /// The check of upstream responses against the document.
    pub drift: DriftConfig,
}

/// The check of upstream responses against the document (`[drift]`).
#[derive(Clone, Debug, PartialEq)]
pub struct DriftConfig {
    /// Whether responses are checked at all (their schemas are compiled only then, in mock
    /// mode too, so `check --mock` loads the document as `serve` would).
    pub check: bool,
    /// The share of responses checked while the check keeps up, `(0, 1]`.
    pub sample_rate: f64,
    /// Bodies longer than this are not parsed (status, media type and headers still are).
    pub max_body_bytes: usize,
    /// Responses waiting for the check at most; past it they are skipped and sampling
    /// lowered. Needs a restart to change.
    pub queue: usize,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            check: true,
            sample_rate: 1.0,
            max_body_bytes: defaults::DRIFT_MAX_BODY_BYTES as usize,
            queue: defaults::DRIFT_QUEUE as usize,
        }
    }
}

impl DriftConfig {
    /// What a reload can change.
    pub fn settings(&self) -> crate::drift::Settings {
        crate::drift::Settings {
            sample_rate: self.sample_rate,
            max_body_bytes: self.max_body_bytes,
        }
    }
}

/// One app allowed to call through specgate (`[[clients]]`).
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Its name, in logs, metrics and audit records.
    pub name: Arc<str>,
    /// The SHA-256 of its key. `None` for a client known only by its TLS certificate, whose
    /// subject common name is `name`.
    pub key_sha256: Option<[u8; 32]>,
    /// The operationIds it may call; `None` for all. `"*"` also allows unknown routes.
    pub allow: Option<Vec<String>>,
    /// Its rate limit, if any.
    pub rate: Option<Rate>,
}

/// A token-bucket rate limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests allowed at once after a quiet spell.
    pub burst: u32,
}

/// Inbound TLS.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// The server certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to; `None` for no mutual TLS.
    pub client_ca: Option<PathBuf>,
}

/// What happens to a request for a path (or method) the spec does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownRoutes {
    /// 404 or 405, nothing forwarded.
    Reject,
    /// Forwarded with the token, after the path checks, client auth and limits.
    Forward,
}

/// Whether a path with one trailing '/' more than an operation's is that operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrailingSlash {
    /// `/connections/` is `POST /connections` (validated, audited), forwarded as sent.
    Match,
    /// `/connections/` is refused (400) as a path that differs from the document's.
    Reject,
}

/// Limits that keep one client (or a thousand) from holding the gateway.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Time for a connection to send a whole request head (and for a TLS handshake).
    pub header_read_timeout: Duration,
    /// Time for a request to arrive and be checked, until it is forwarded.
    pub request_timeout: Duration,
    /// Requests in flight; more are answered 503 at once.
    pub max_concurrent_requests: usize,
    /// Open client connections; more are closed on accept.
    pub max_connections: usize,
    /// Longest request target.
    pub max_uri_bytes: usize,
    /// Largest header section (names and values).
    pub max_header_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Deepest JSON nesting.
    pub max_json_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_millis(defaults::HEADER_READ_TIMEOUT_MS),
            request_timeout: Duration::from_millis(defaults::REQUEST_TIMEOUT_MS),
            max_concurrent_requests: defaults::MAX_CONCURRENT_REQUESTS as usize,
            max_connections: defaults::MAX_CONNECTIONS as usize,
            max_uri_bytes: defaults::MAX_URI_BYTES as usize,
            max_header_bytes: defaults::MAX_HEADER_BYTES as usize,
            max_headers: defaults::MAX_HEADERS as usize,
            max_json_depth: defaults::MAX_JSON_DEPTH as usize,
        }
    }
}

/// Where requests go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamMode {
    /// Forwarded to the upstream (`upstream.mode = "proxy"`, the default).
    Proxy,
    /// Answered from the spec's example responses; nothing leaves the machine
    /// (`upstream.mode = "mock"`, or `specgate serve --mock`).
    Mock,
}

impl std::fmt::Display for UpstreamMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UpstreamMode::Proxy => "proxy",
            UpstreamMode::Mock => "mock",
        })
    }
}

/// Where the API token is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `SPECGATE_API_TOKEN` (the value is read again from the environment when needed, so it
    /// is held in exactly one place: the token store).
    Env,
    /// `SPECGATE_API_TOKEN_FILE`.
    File(PathBuf),
}

/// The upstream API.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The base URL (`https://myaccount.api-us1.com/api/3`), without a trailing slash.
    pub base: Uri,
    /// Extra PEM roots trusted beside the built-in web roots.
    pub ca_file: Option<PathBuf>,
    /// How long to wait for the upstream's response headers.
    pub timeout: Duration,
    /// How long to wait for a TCP connection.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// How many idle connections are kept.
    pub pool_max_idle_per_host: usize,
    /// Offer HTTP/2 by ALPN (`auto`), or speak only HTTP/1.1 over a pool of connections (`off`).
    pub http2: bool,
}

/// The audit log.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The active audit file.
    pub path: PathBuf,
    /// When records reach the disk.
    pub sync: SyncMode,
    /// What to do with creates while the log cannot be written.
    pub on_error: OnError,
    /// The file holding the HMAC key for records and the head file.
    pub hmac_key_file: Option<PathBuf>,
    /// Rotate the active file at this size.
    pub max_file_bytes: u64,
    /// Rotated files kept (0: all).
    pub keep_files: usize,
    /// Shipping to PostgreSQL, when `audit.postgres_url` is set.
    pub ship: Option<ShipConfig>,
}

impl AuditConfig {
    /// The writer's options, reading the HMAC key if one is configured.
    pub fn options(&self) -> Result<AuditOptions, ConfigError> {
        let key = match &self.hmac_key_file {
            None => None,
            Some(path) => Some(read_mac_key(path)?),
        };
        Ok(AuditOptions {
            path: self.path.clone(),
            sync: self.sync,
            on_error: self.on_error,
            key,
            max_file_bytes: self.max_file_bytes,
            keep_files: self.keep_files,
            shipped: None,
        })
    }
}

/// Reads an HMAC key file: surrounding whitespace trimmed, at least 16 bytes left.
pub fn read_mac_key(path: &Path) -> Result<MacKey, ConfigError> {
    let error = |message: String| ConfigError {
        setting: format!("{} ({})", AUDIT_HMAC_KEY_FILE.env, path.display()),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| error(format!("cannot read: {e}")))?;
    let trimmed = bytes.trim_ascii();
    if trimmed.len() < 16 {
        return Err(error("the key must be at least 16 bytes".into()));
    }
    Ok(MacKey::new(trimmed.to_vec()))
}

/// Most serving threads (`workers`): each holds an upstream pool and a thread.
pub const MAX_WORKERS: usize = 1024;

/// The defaults, as documented in `config/specgate.toml`.
pub mod defaults {
    /// `listen`
    pub const LISTEN: &str = "127.0.0.1:8080";
    /// `admin_listen`
    pub const ADMIN_LISTEN: &str = "127.0.0.1:9090";
    /// `max_body_bytes`: 1 MiB.
    pub const MAX_BODY_BYTES: u64 = 1024 * 1024;
    /// `upstream.timeout_ms`
    pub const UPSTREAM_TIMEOUT_MS: u64 = 30_000;
    /// `upstream.connect_timeout_ms`
    pub const UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 5_000;
    /// `upstream.pool_idle_timeout_ms`
    pub const UPSTREAM_POOL_IDLE_TIMEOUT_MS: u64 = 90_000;
    /// `upstream.pool_max_idle_per_host`
    pub const UPSTREAM_POOL_MAX_IDLE: u64 = 256;
    /// `audit.path`
    pub const AUDIT_LOG: &str = "audit/specgate-audit.jsonl";
    /// `audit.sync_interval_ms`
    pub const AUDIT_SYNC_INTERVAL_MS: u64 = 100;
    /// `audit.max_file_bytes`: 64 MiB.
    pub const AUDIT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
    /// `workers`: the CPUs this process may use (its cgroup's quota included), at least one.
    pub fn workers() -> u64 {
        std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
    }
    /// `shutdown_grace_ms`
    pub const SHUTDOWN_GRACE_MS: u64 = 20_000;
    /// The upstream URL in mock mode when none is configured: nothing is ever sent to it, and
    /// `.invalid` (RFC 6761) can never resolve, should anything try.
    pub const MOCK_UPSTREAM: &str = "https://mock.invalid";
    /// `audit.ship_batch`
    pub const AUDIT_SHIP_BATCH: u64 = 1000;
    /// `audit.ship_poll_ms`
    pub const AUDIT_SHIP_POLL_MS: u64 = 500;
    /// `api_token_poll_ms`
    pub const API_TOKEN_POLL_MS: u64 = 1_000;
    /// `limits.header_read_timeout_ms`
    pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
    /// `limits.request_timeout_ms`
    pub const REQUEST_TIMEOUT_MS: u64 = 60_000;
    /// `limits.max_concurrent_requests`
    pub const MAX_CONCURRENT_REQUESTS: u64 = 2_048;
    /// `limits.max_connections`
    pub const MAX_CONNECTIONS: u64 = 2_048;
    /// `limits.max_uri_bytes`
    pub const MAX_URI_BYTES: u64 = 8 * 1024;
    /// `limits.max_header_bytes`
    pub const MAX_HEADER_BYTES: u64 = 16 * 1024;
    /// `limits.max_headers`
    pub const MAX_HEADERS: u64 = 64;
    /// `limits.max_json_depth`
    pub const MAX_JSON_DEPTH: u64 = 32;
    /// `drift.max_body_bytes`: 256 KiB.
    pub const DRIFT_MAX_BODY_BYTES: u64 = 256 * 1024;
    /// `drift.queue`
    pub const DRIFT_QUEUE: u64 = 64;
}

/// Raw setting values with where each came from.
#[derive(Debug, Default)]
pub struct Sources {
    values: HashMap<&'static str, (Raw, String)>,
    env_token: bool,
    force_mock: bool,
    /// The `[[clients]]` array and the file it came from.
    clients: Option<(toml::Value, String)>,
}

#[derive(Debug)]
enum Raw {
    File(toml::Value),
    Env(String),
}

impl Sources {
    /// Reads the config file (if `file` is given) and the environment.
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut sources = Sources::default();
        if let Some(path) = file {
            sources.read_file(path)?;
        }
        for setting in SETTINGS {
            if let Some(value) = env(setting.env) {
                sources
                    .values
                    .insert(setting.key, (Raw::Env(value), setting.env.to_owned()));
            }
        }
        sources.env_token = env(API_TOKEN_ENV).is_some();
        Ok(sources)
    }

    /// Mock mode whatever the settings say (`specgate serve --mock`).
    pub fn force_mock(mut self) -> Self {
        self.force_mock = true;
        self
    }

    fn read_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let name = path.display().to_string();
        let file_error = |message: String| ConfigError {
            setting: format!("{CONFIG_ENV} ({name})"),
            message,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| file_error(format!("cannot read: {e}")))?;
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| file_error(format!("not valid TOML: {}", e.message())))?;
        if let Some(clients) = table.remove(CLIENTS_KEY) {
            self.clients = Some((clients, name.clone()));
        }
        let mut flat = Vec::new();
        flatten("", toml::Value::Table(table), &mut flat);
        for (key, value) in flat {
            let Some(setting) = SETTINGS.iter().find(|s| s.key == key) else {
                let hint = if key.contains("token") && !key.ends_with("_file") {
                    "; the token itself belongs in SPECGATE_API_TOKEN or the file api_token_file names"
                } else {
                    ""
                };
                return Err(file_error(format!("unknown setting {key:?}{hint}")));
            };
            self.values
                .insert(setting.key, (Raw::File(value), format!("{key} in {name}")));
        }
        Ok(())
    }

    fn error(&self, setting: Setting, message: impl Into<String>) -> ConfigError {
        let from = self.values.get(setting.key).map(|(_, from)| from.as_str());
        ConfigError {
            setting: match from {
                Some(from) if from == setting.env => format!("{} ({})", setting.env, setting.key),
                Some(from) => format!("{} ({from})", setting.key),
                None => format!("{} ({})", setting.env, setting.key),
            },
            message: message.into(),
        }
    }

    fn string(&self, setting: Setting) -> Result<Option<String>, ConfigError> {
        match self.values.get(setting.key) {
            None => Ok(None),
            Some((Raw::Env(s), _)) => Ok(Some(s.clone())),
            Some((Raw::File(toml::Value::String(s)), _)) => Ok(Some(s.clone())),
            Some((Raw::File(other), _)) => Err(self.error(
                setting,
                format!("expected a string, found {}", other.type_str()),
            )),
        }
    }

    fn u64(&self, setting: Setting, default: u64) -> Result<u64, ConfigError> {
        match self.whole(setting, default)? {
            0 => Err(self.error(
                setting,
                format!("{} is not a positive whole number", self.shown(setting)),
            )),
            n => Ok(n),
        }
    }

    fn whole(&self, setting: Setting, default: u64) -> Result<u64, ConfigError> {
        let value = match self.values.get(setting.key) {
            None => return Ok(default),
            Some((Raw::File(toml::Value::Integer(n)), _)) => u64::try_from(*n).ok(),
            Some((Raw::Env(s), _)) => s.trim().replace('_', "").parse().ok(),
            Some((Raw::File(_), _)) => None,
        };
        value.ok_or_else(|| {
            self.error(
                setting,
                format!("{} is not a positive whole number", self.shown(setting)),
            )
        })
    }

    fn choice<T: Copy>(
        &self,
        setting: Setting,
        choices: &[(&str, T)],
        default: T,
    ) -> Result<T, ConfigError> {
        let Some(value) = self.string(setting)? else {
            return Ok(default);
        };
        let wanted = value.trim().to_ascii_lowercase();
        choices
            .iter()
            .find(|(name, _)| *name == wanted)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                self.error(
                    setting,
                    format!("{value:?} is not one of {}", names.join(", ")),
                )
            })
    }

    fn list(&self, setting: Setting) -> Result<Option<Vec<String>>, ConfigError> {
        match self.values.get(setting.key) {
            None => Ok(None),
            Some((Raw::Env(s), _)) => Ok(Some(
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )),
            Some((Raw::File(toml::Value::Array(items)), _)) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(s.clone()),
                    _ => Err(self.error(setting, "expected a list of strings")),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some((Raw::File(_), _)) => Err(self.error(setting, "expected a list of strings")),
        }
    }

    fn shown(&self, setting: Setting) -> String {
        match self.values.get(setting.key) {
            Some((Raw::Env(s), _)) => format!("{s:?}"),
            Some((Raw::File(v), _)) => v.to_string(),
            None => "nothing".to_owned(),
        }
    }

    fn addr(&self, setting: Setting, default: &str) -> Result<SocketAddr, ConfigError> {
        let s = self.string(setting)?.unwrap_or_else(|| default.to_owned());
        s.trim().parse().map_err(|_| {
            self.error(
                setting,
                format!("{s:?} is not an address with a port (such as {default})"),
            )
        })
    }

    fn ms(&self, setting: Setting, default: u64) -> Result<Duration, ConfigError> {
        self.u64(setting, default).map(Duration::from_millis)
    }

    fn usize(&self, setting: Setting, default: u64) -> Result<usize, ConfigError> {
        self.u64(setting, default)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn bool(&self, setting: Setting) -> Result<bool, ConfigError> {
        let value = match self.values.get(setting.key) {
            None => return Ok(false),
            Some((Raw::File(toml::Value::Boolean(b)), _)) => Some(*b),
            Some((Raw::Env(s), _)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Some(true),
                "false" | "0" | "no" | "" => Some(false),
                _ => None,
            },
            Some((Raw::File(_), _)) => None,
        };
        value.ok_or_else(|| {
            self.error(
                setting,
                format!("{} is not true or false", self.shown(setting)),
            )
        })
    }

    fn drift(&self) -> Result<DriftConfig, ConfigError> {
        let sample_rate = match self.values.get(DRIFT_SAMPLE_RATE.key) {
            None => Some(1.0),
            Some((Raw::File(toml::Value::Float(f)), _)) => Some(*f),
            Some((Raw::File(toml::Value::Integer(n)), _)) => Some(*n as f64),
            Some((Raw::Env(s), _)) => s.trim().parse().ok(),
            Some((Raw::File(_), _)) => None,
        }
        .filter(|rate| *rate > 0.0 && *rate <= 1.0)
        .ok_or_else(|| {
            self.error(
                DRIFT_SAMPLE_RATE,
                format!(
                    "{} is not a share of responses above 0 and at most 1",
                    self.shown(DRIFT_SAMPLE_RATE)
                ),
            )
        })?;
        Ok(DriftConfig {
            check: self.choice(DRIFT, &[("on", true), ("off", false)], true)?,
            sample_rate,
            max_body_bytes: self.usize(DRIFT_MAX_BODY_BYTES, defaults::DRIFT_MAX_BODY_BYTES)?,
            queue: self.usize(DRIFT_QUEUE, defaults::DRIFT_QUEUE)?,
        })
    }

    fn limits(&self) -> Result<Limits, ConfigError> {
        let max_json_depth = self.usize(MAX_JSON_DEPTH, defaults::MAX_JSON_DEPTH)?;
        if max_json_depth > crate::json::MAX_MAX_DEPTH {
            return Err(self.error(
                MAX_JSON_DEPTH,
                format!("at most {} is supported", crate::json::MAX_MAX_DEPTH),
            ));
        }
        Ok(Limits {
            header_read_timeout: self
                .ms(HEADER_READ_TIMEOUT_MS, defaults::HEADER_READ_TIMEOUT_MS)?,
            request_timeout: self.ms(REQUEST_TIMEOUT_MS, defaults::REQUEST_TIMEOUT_MS)?,
            max_concurrent_requests: self
                .usize(MAX_CONCURRENT_REQUESTS, defaults::MAX_CONCURRENT_REQUESTS)?,
            max_connections: self.usize(MAX_CONNECTIONS, defaults::MAX_CONNECTIONS)?,
            max_uri_bytes: self.usize(MAX_URI_BYTES, defaults::MAX_URI_BYTES)?,
            max_header_bytes: self.usize(MAX_HEADER_BYTES, defaults::MAX_HEADER_BYTES)?,
            max_headers: self.usize(MAX_HEADERS, defaults::MAX_HEADERS)?,
            max_json_depth,
        })
    }

    fn workers(&self) -> Result<usize, ConfigError> {
        match self.usize(WORKERS, defaults::workers())? {
            n if n > MAX_WORKERS => Err(self.error(
                WORKERS,
                format!("at most {MAX_WORKERS} serving threads are supported"),
            )),
            n => Ok(n),
        }
    }

    fn tls(&self) -> Result<Option<TlsConfig>, ConfigError> {
        let cert = self.string(TLS_CERT)?;
        let key = self.string(TLS_KEY)?;
        let client_ca = self.string(TLS_CLIENT_CA)?;
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(TlsConfig {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
                client_ca: client_ca.map(PathBuf::from),
            })),
            (None, None) if client_ca.is_none() => Ok(None),
            (None, None) => Err(self.error(
                TLS_CLIENT_CA,
                "mutual TLS needs TLS: set tls.cert and tls.key too",
            )),
            (Some(_), None) => Err(self.error(TLS_KEY, "tls.cert is set; set tls.key too")),
            (None, Some(_)) => Err(self.error(TLS_CERT, "tls.key is set; set tls.cert too")),
        }
    }

    fn unknown_routes(&self) -> Result<UnknownRoutes, ConfigError> {
        match self.string(ROUTES_UNKNOWN)?.as_deref().map(str::trim) {
            None | Some("reject") => Ok(UnknownRoutes::Reject),
            Some("forward") => Ok(UnknownRoutes::Forward),
            Some(other) => Err(self.error(
                ROUTES_UNKNOWN,
                format!("{other:?} is neither \"reject\" nor \"forward\""),
            )),
        }
    }

    /// Parses `[[clients]]`. `mtls` says whether a client may go without a key.
    fn clients(&self, mtls: bool) -> Result<Vec<ClientConfig>, ConfigError> {
        let Some((value, file)) = &self.clients else {
            return Ok(Vec::new());
        };
        let error = |at: String, message: String| ConfigError {
            setting: format!("{at} (in {file})"),
            message,
        };
        let toml::Value::Array(items) = value else {
            return Err(error(
                CLIENTS_KEY.into(),
                "expected [[clients]] tables".into(),
            ));
        };
        let mut clients = Vec::new();
        let mut names = HashSet::new();
        let mut keys = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("clients[{i}]");
            let client = parse_client(item, mtls).map_err(|m| error(at.clone(), m))?;
            if !names.insert(client.name.clone()) {
                return Err(error(
                    at,
                    format!("the name {:?} is used twice", client.name),
                ));
            }
            if let Some(key) = client.key_sha256
                && !keys.insert(key)
            {
                return Err(error(
                    at,
                    "key_sha256 is the same as another client's".into(),
                ));
            }
            clients.push(client);
        }
        Ok(clients)
    }
}

fn parse_client(item: &toml::Value, mtls: bool) -> Result<ClientConfig, String> {
    let toml::Value::Table(table) = item else {
        return Err("expected a table".into());
    };
    for key in table.keys() {
        match key.as_str() {
            "name" | "key_sha256" | "allow" | "rate_limit_per_sec" | "rate_limit_burst" => {}
            "key" => {
                return Err(
                    "\"key\" is not a setting: store the key's SHA-256 in key_sha256, \
                            never the key itself"
                        .into(),
                );
            }
            other => return Err(format!("unknown setting {other:?}")),
        }
    }
    let name = match table.get("name") {
        Some(toml::Value::String(n))
            if !n.is_empty() && n.len() <= 128 && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Arc::from(n.as_str())
        }
        Some(_) => return Err("name must be 1 to 128 visible ASCII characters".into()),
        None => return Err("name is required".into()),
    };
    let key_sha256 = match table.get("key_sha256") {
        None if mtls => None,
        None => {
            return Err(
                "key_sha256 is required (or configure tls.client_ca to identify clients by \
                 certificate)"
                    .into(),
            );
        }
        Some(toml::Value::String(hex_digest)) => {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hex_digest.trim(), &mut digest).map_err(|_| {
                "key_sha256 must be 64 hex digits (sha256sum of the key, without a newline)"
                    .to_owned()
            })?;
            Some(digest)
        }
        Some(_) => return Err("key_sha256 must be a string of 64 hex digits".into()),
    };
    let allow = match table.get("allow") {
        None => None,
        Some(toml::Value::Array(items)) => Some(
            items
                .iter()
                .map(|item| match item {
                    toml::Value::String(s) if !s.is_empty() => Ok(s.clone()),
                    _ => Err("allow must be a list of operationIds".to_owned()),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err("allow must be a list of operationIds".into()),
    };
    let per_second = match table.get("rate_limit_per_sec") {
        None => None,
        Some(toml::Value::Integer(n)) if *n > 0 => Some(*n as f64),
        Some(toml::Value::Float(f)) if *f > 0.0 && f.is_finite() => Some(*f),
        Some(_) => return Err("rate_limit_per_sec must be a positive number".into()),
    };
    let burst = match table.get("rate_limit_burst") {
        None => None,
        Some(toml::Value::Integer(n)) if *n > 0 && *n <= i64::from(u32::MAX) => Some(*n as u32),
        Some(_) => return Err("rate_limit_burst must be a positive whole number".into()),
    };
    let rate = match (per_second, burst) {
        (Some(per_second), burst) => Some(Rate {
            per_second,
            burst: burst.unwrap_or_else(|| per_second.ceil().max(1.0) as u32),
        }),
        (None, Some(_)) => return Err("rate_limit_burst needs rate_limit_per_sec".into()),
        (None, None) => None,
    };
    Ok(ClientConfig {
        name,
        key_sha256,
        allow,
        rate,
    })
}

fn flatten(prefix: &str, value: toml::Value, out: &mut Vec<(String, toml::Value)>) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table {
                let key = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&key, value, out);
            }
        }
        value => out.push((prefix.to_owned(), value)),
    }
}

impl Config {
    /// Whether serving the proxy on `ip` with this configuration would let anyone who reaches
    /// it spend the token: not loopback, no client authentication, no explicit opt-out, and a
    /// token to spend (mock mode has none).
    pub fn exposes_token_on(&self, ip: std::net::IpAddr) -> bool {
        let mtls = self.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        !ip.is_loopback()
            && self.clients.is_empty()
            && !mtls
            && !self.allow_unauthenticated
            && self.mode == UpstreamMode::Proxy
    }

    /// Loads the configuration from the process environment and the file `SPECGATE_CONFIG` (or
    /// `file`, if given) names.
    pub fn from_env(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load(file, false)
    }

    /// As [`Config::from_env`], in mock mode if `mock` (whatever the settings say).
    pub fn load(file: Option<&Path>, mock: bool) -> Result<Config, ConfigError> {
        let sources = Sources::load(Config::file(file).as_deref(), &|name| {
            std::env::var(name).ok()
        })?;
        Config::from_sources(&if mock { sources.force_mock() } else { sources })
    }

    /// The config file: `file` if given, else the one `SPECGATE_CONFIG` names.
    pub fn file(file: Option<&Path>) -> Option<PathBuf> {
        file.map(Path::to_path_buf)
            .or_else(|| std::env::var(CONFIG_ENV).ok().map(PathBuf::from))
    }

    /// Builds and checks the configuration from raw sources.
    pub fn from_sources(s: &Sources) -> Result<Config, ConfigError> {
        let mode = match s.string(UPSTREAM_MODE)?.as_deref().map(str::trim) {
            _ if s.force_mock => UpstreamMode::Mock,
            None | Some("proxy") => UpstreamMode::Proxy,
            Some("mock") => UpstreamMode::Mock,
            Some(other) => {
                return Err(s.error(
                    UPSTREAM_MODE,
                    format!("{other:?} is not a mode; use \"proxy\" or \"mock\""),
                ));
            }
        };
        let mock = mode == UpstreamMode::Mock;
        // A first run with nothing set: both problems at once, and the way to try it anyway.
        if !mock
            && !s.env_token
            && s.string(API_TOKEN_FILE)?.is_none()
            && s.string(UPSTREAM)?.is_none()
        {
            return Err(ConfigError {
                setting: format!(
                    "{} ({}) and {} ({})",
                    UPSTREAM.env, UPSTREAM.key, API_TOKEN_FILE.env, API_TOKEN_FILE.key
                ),
                message: "nothing to forward to: set the first to the API's base URL (such as \
                          https://myaccount.api-us1.com/api/3) and the second to a file holding \
                          the token; or run `specgate serve --mock` to answer from the spec \
                          without either"
                    .into(),
            });
        }
        let token = match (s.env_token, s.string(API_TOKEN_FILE)?) {
            (true, Some(_)) => {
                return Err(ConfigError {
                    setting: format!("{API_TOKEN_ENV} / {}", API_TOKEN_FILE.env),
                    message: "both are set; set only one".into(),
                });
            }
            (true, None) => Some(TokenSource::Env),
            (false, Some(path)) => Some(TokenSource::File(PathBuf::from(path))),
            // Mock mode forwards nothing, so it needs no token.
            (false, None) if mock => None,
            (false, None) => {
                return Err(ConfigError {
                    setting: format!("{} ({})", API_TOKEN_FILE.env, API_TOKEN_FILE.key),
                    message: format!(
                        "no API token configured; set it to a file holding the token, or set {API_TOKEN_ENV} (or try `specgate serve --mock`, which needs none)"
                    ),
                });
            }
        };
        let oauth2_token_url = s.string(OAUTH2_TOKEN_URL)?;
        if let Some(url) = &oauth2_token_url {
            match url.parse::<Uri>() {
                Ok(uri) if uri.scheme().is_some() && uri.host().is_some() => {}
                _ => {
                    return Err(
                        s.error(OAUTH2_TOKEN_URL, format!("{url:?} is not an absolute URL"))
                    );
                }
            }
        }
        let credential = match (s.string(CREDENTIAL)?, s.string(CREDENTIAL_HEADER)?) {
            (Some(_), Some(_)) => {
                return Err(s.error(
                    CREDENTIAL_HEADER,
                    format!(
                        "set either {} or this (the older name for {}=header:<Name>), not both",
                        CREDENTIAL.env, CREDENTIAL.env
                    ),
                ));
            }
            (Some(text), None) => Some(
                match Scheme::parse(&text).map_err(|message| s.error(CREDENTIAL, message))? {
                    Scheme::OAuth2 { scopes, .. } => Scheme::OAuth2 {
                        // Empty: the document's.
                        token_url: oauth2_token_url.clone().unwrap_or_default(),
                        scopes,
                    },
                    other => other,
                },
            ),
            (None, Some(name)) => Some(
                Scheme::parse(&format!("header:{name}"))
                    .map_err(|message| s.error(CREDENTIAL_HEADER, message))?,
            ),
            (None, None) => None,
        };
        let listen = s.addr(LISTEN, defaults::LISTEN)?;
        let tls = s.tls()?;
        let mtls = tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        let clients = s.clients(mtls)?;
        let allow_unauthenticated = s.bool(ALLOW_UNAUTHENTICATED)?;
        let drift = s.drift()?;
        let config = Config {
            listen,
            admin_listen: s.addr(ADMIN_LISTEN, defaults::ADMIN_LISTEN)?,
            max_body_bytes: s.u64(MAX_BODY_BYTES, defaults::MAX_BODY_BYTES)?,
            credential,
            oauth2_token_url,
            token,
            mode,
            shutdown_grace: s.ms(SHUTDOWN_GRACE_MS, defaults::SHUTDOWN_GRACE_MS)?,
            workers: s.workers()?,
            upstream: UpstreamConfig {
                base: match upstream_base(s) {
                    Err(_) if mock && s.string(UPSTREAM)?.is_none() => {
                        Uri::from_static(defaults::MOCK_UPSTREAM)
                    }
                    other => other?,
                },
                ca_file: s.string(UPSTREAM_CA)?.map(PathBuf::from),
                timeout: s.ms(UPSTREAM_TIMEOUT_MS, defaults::UPSTREAM_TIMEOUT_MS)?,
                connect_timeout: s.ms(
                    UPSTREAM_CONNECT_TIMEOUT_MS,
                    defaults::UPSTREAM_CONNECT_TIMEOUT_MS,
                )?,
                pool_idle_timeout: s.ms(
                    UPSTREAM_POOL_IDLE_TIMEOUT_MS,
                    defaults::UPSTREAM_POOL_IDLE_TIMEOUT_MS,
                )?,
                pool_max_idle_per_host: s
                    .u64(UPSTREAM_POOL_MAX_IDLE, defaults::UPSTREAM_POOL_MAX_IDLE)?
                    as usize,
                http2: s.choice(UPSTREAM_HTTP2, &[("auto", true), ("off", false)], true)?,
            },
            spec: SpecSource {
                path: s.string(SPEC)?.map(PathBuf::from),
                overlays: s
                    .list(OVERLAYS)?
                    .map(|l| l.into_iter().map(PathBuf::from).collect()),
                read_only: s.choice(
                    READ_ONLY,
                    &[("allow", ReadOnly::Allow), ("refuse", ReadOnly::Refuse)],
                    ReadOnly::Allow,
                )?,
                responses: drift.check,
            },
            audit: audit(s)?,
            token_poll: s.ms(API_TOKEN_POLL_MS, defaults::API_TOKEN_POLL_MS)?,
            clients,
            allow_unauthenticated,
            tls,
            unknown_routes: s.unknown_routes()?,
            mock_dynamic: s.bool(MOCK_DYNAMIC)?,
            enforce: s.choice(ENFORCE, &Enforce::NAMED, Enforce::Enforce)?,
            trailing_slash: s.choice(
                ROUTES_TRAILING_SLASH,
                &[
                    ("match", TrailingSlash::Match),
                    ("reject", TrailingSlash::Reject),
                ],
                TrailingSlash::Match,
            )?,
            limits: s.limits()?,
            drift,
        };
        // Mock mode holds no token and forwards nothing: there is nothing to protect.
        if config.exposes_token_on(listen.ip()) {
            return Err(s.error(
                LISTEN,
                format!(
                    "{listen} is not a loopback address and no client authentication is \
                     configured, so anyone who can reach it could use the API token; configure \
                     [[clients]] or tls.client_ca, or set {} = true ({}=true)",
                    ALLOW_UNAUTHENTICATED.key, ALLOW_UNAUTHENTICATED.env
                ),
            ));
        }
        Ok(config)
    }

    /// Only the audit settings, for `specgate audit`: no upstream or token needed.
    pub fn audit_from_env(file: Option<&Path>) -> Result<AuditConfig, ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| env(CONFIG_ENV).map(PathBuf::from));
        audit(&Sources::load(file.as_deref(), &env)?)
    }
}

fn audit(s: &Sources) -> Result<AuditConfig, ConfigError> {
    let interval = s.ms(AUDIT_SYNC_INTERVAL_MS, defaults::AUDIT_SYNC_INTERVAL_MS)?;
    let sync = s.choice(
        AUDIT_SYNC,
        &[
            ("always", SyncMode::Always),
            ("interval", SyncMode::Interval(interval)),
        ],
        SyncMode::Always,
    )?;
    Ok(AuditConfig {
        path: PathBuf::from(
            s.string(AUDIT_LOG)?
                .unwrap_or_else(|| defaults::AUDIT_LOG.to_owned()),
        ),
        sync,
        on_error: s.choice(
            AUDIT_ON_ERROR,
            &[("reject", OnError::Reject), ("allow", OnError::Allow)],
            OnError::Reject,
        )?,
        hmac_key_file: s.string(AUDIT_HMAC_KEY_FILE)?.map(PathBuf::from),
        max_file_bytes: s.u64(AUDIT_MAX_FILE_BYTES, defaults::AUDIT_MAX_FILE_BYTES)?,
        keep_files: s.whole(AUDIT_KEEP_FILES, 0)? as usize,
        ship: ship(s)?,
    })
}

fn ship(s: &Sources) -> Result<Option<ShipConfig>, ConfigError> {
    let Some(url) = s.string(AUDIT_POSTGRES_URL)? else {
        return Ok(None);
    };
    let url = PgUrl::parse(&url).map_err(|e| s.error(AUDIT_POSTGRES_URL, e))?;
    let node = match s.string(AUDIT_NODE)? {
        Some(node) => node.trim().to_owned(),
        None => default_node()
            .ok_or_else(|| s.error(AUDIT_NODE, "the host name is not usable; set a node name"))?,
    };
    if node.is_empty() || node.len() > 200 || node.chars().any(char::is_control) {
        return Err(s.error(
            AUDIT_NODE,
            format!("{node:?} is not a node name (1 to 200 printable characters)"),
        ));
    }
    Ok(Some(ShipConfig {
        url,
        node,
        batch: s
            .u64(AUDIT_SHIP_BATCH, defaults::AUDIT_SHIP_BATCH)?
            .min(100_000) as usize,
        poll: s.ms(AUDIT_SHIP_POLL_MS, defaults::AUDIT_SHIP_POLL_MS)?,
    }))
}

fn upstream_base(s: &Sources) -> Result<Uri, ConfigError> {
    let Some(url) = s.string(UPSTREAM)? else {
        return Err(s.error(
            UPSTREAM,
            "no upstream configured; set it to the API's base URL, such as https://myaccount.api-us1.com/api/3 (or try `specgate serve --mock`, which needs none)",
        ));
    };
    let uri: Uri = url
        .trim()
        .parse()
        .map_err(|_| s.error(UPSTREAM, format!("{url:?} is not a URL")))?;
    if uri.scheme_str() != Some("https") {
        return Err(s.error(
            UPSTREAM,
            format!("{url:?} must be an https:// URL: the token only travels over TLS"),
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(s.error(UPSTREAM, format!("{url:?} has no host")));
    }
    if uri.query().is_some() {
        return Err(s.error(UPSTREAM, format!("{url:?} must not have a query string")));
    }
    let base = format!(
        "https://{}{}",
        uri.authority().expect("checked a host above"),
        uri.path().trim_end_matches('/')
    );
    Ok(base.parse().expect("rebuilt from a parsed URI"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

    fn load(file: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("specgate.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let sources = Sources::load(file.map(|_| path.as_path()), &|name| env.get(name).cloned())?;
        Config::from_sources(&sources)
    }

    const MINIMAL: &[(&str, &str)] = &[
        ("SPECGATE_UPSTREAM", "https://acct.api-us1.com/api/3/"),
        ("SPECGATE_API_TOKEN", "secret-value-1"),
    ];

    #[test]
    fn defaults_apply_when_only_upstream_and_token_are_set() {
        let c = load(None, MINIMAL).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9090");
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert_eq!(
            c.upstream.base.to_string(),
            "https://acct.api-us1.com/api/3"
        );
        assert_eq!(c.upstream.timeout, Duration::from_secs(30));
        assert_eq!(c.audit.path, PathBuf::from("audit/specgate-audit.jsonl"));
        assert!(matches!(c.token, Some(TokenSource::Env)));
        assert!(c.spec.path.is_none() && c.spec.overlays.is_none());
        assert_eq!(c.mode, UpstreamMode::Proxy);
        assert_eq!(c.shutdown_grace, Duration::from_secs(20));
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let file = "listen = \"127.0.0.1:1000\"\nmax_body_bytes = 10\n[upstream]\ntimeout_ms = 5\n";
        let mut env = MINIMAL.to_vec();
        env.push(("SPECGATE_LISTEN", "127.0.0.1:2000"));
        let c = load(Some(file), &env).unwrap();
        assert_eq!(c.listen.port(), 2000);
        assert_eq!(c.max_body_bytes, 10);
        assert_eq!(c.upstream.timeout, Duration::from_millis(5));
    }

    #[test]
    fn a_missing_upstream_names_the_setting() {
        let e = load(None, &[("SPECGATE_API_TOKEN", "t")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("SPECGATE_UPSTREAM (upstream.url): no upstream"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_token_names_both_ways_to_set_it() {
        let e = load(None, &[("SPECGATE_UPSTREAM", "https://a.example")]).unwrap_err();
        let line = e.to_string();
        assert!(
            line.contains("SPECGATE_API_TOKEN_FILE") && line.contains("SPECGATE_API_TOKEN"),
            "{line}"
        );
    }

    #[test]
    fn bad_values_name_the_setting_and_where_it_came_from() {
        let mut env = MINIMAL.to_vec();
        env.push(("SPECGATE_MAX_BODY_BYTES", "lots"));
        let e = load(None, &env).unwrap_err();
        assert_eq!(
            e.to_string(),
            "SPECGATE_MAX_BODY_BYTES (max_body_bytes): \"lots\" is not a positive whole number"
        );
        let e = load(Some("[upstream]\ntimeout_ms = \"soon\"\n"), MINIMAL).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("upstream.timeout_ms (upstream.timeout_ms in "),
            "{e}"
        );
        let mut env = MINIMAL.to_vec();
        env.push(("SPECGATE_LISTEN", "localhost"));
        assert!(
            load(None, &env)
                .unwrap_err()
                .to_string()
                .starts_with("SPECGATE_LISTEN (listen)")
        );
    }

    #[test]
    fn audit_settings_parse_choices_and_name_bad_ones() {
        let mut env = MINIMAL.to_vec();
        env.extend([
            ("SPECGATE_AUDIT_SYNC", "Interval"),
            ("SPECGATE_AUDIT_SYNC_INTERVAL_MS", "250"),
            ("SPECGATE_AUDIT_KEEP_FILES", "0"),
        ]);
        let c = load(None, &env).unwrap();
        assert_eq!(c.audit.sync, SyncMode::Interval(Duration::from_millis(250)));
        assert_eq!(c.audit.on_error, OnError::Reject);
        assert_eq!(c.audit.keep_files, 0);
        assert_eq!(c.audit.max_file_bytes, 64 << 20);
        let mut env = MINIMAL.to_vec();
        env.push(("SPECGATE_AUDIT_ON_ERROR", "ignore"));
        let e = load(None, &env).unwrap_err();
        assert_eq!(
            e.to_string(),
            "SPECGATE_AUDIT_ON_ERROR (audit.on_error): \"ignore\" is not one of reject, allow"
        );
    }

    #[test]
    fn shipping_is_off_by_default_and_its_url_is_checked_without_echoing_it() {
        let c = load(None, MINIMAL).unwrap();
        assert!(c.audit.ship.is_none());
        let mut env = MINIMAL.to_vec();
        env.push((
            "SPECGATE_AUDIT_POSTGRES_URL",
            "postgresql://specgate:pw-XYZZY@db.internal:5432/audit?sslmode=verify-full",
        ));
        env.push(("SPECGATE_AUDIT_NODE", "web-7"));
        let c = load(None, &env).unwrap();
        let ship = c.audit.ship.as_ref().unwrap();
        assert_eq!(ship.node, "web-7");
        assert_eq!(ship.batch, 1000);
        assert_eq!(ship.poll, Duration::from_millis(500));
        assert!(!format!("{c:?}").contains("pw-XYZZY"), "{c:?}");
        env.pop();
        let c = load(None, &env).unwrap();
        assert_eq!(
            Some(c.audit.ship.unwrap().node),
            default_node(),
            "the node defaults to the host name"
        );
        let mut env = MINIMAL.to_vec();
        env.push((
            "SPECGATE_AUDIT_POSTGRES_URL",
            "postgresql://specgate:pw-XYZZY@db/audit?sslmode=maybe",
        ));
        let e = load(None, &env).unwrap_err().to_string();
        assert!(
            e.starts_with("SPECGATE_AUDIT_POSTGRES_URL (audit.postgres_url): sslmode=maybe"),
            "{e}"
        );
        assert!(!e.contains("pw-XYZZY"), "{e}");
    }

    #[test]
    fn short_hmac_keys_are_refused_without_echoing_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "short-key\n").unwrap();
        let e = read_mac_key(&path).unwrap_err();
        assert!(e.to_string().contains("at least 16 bytes"), "{e}");
        assert!(!e.to_string().contains("short-key"));
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        assert!(read_mac_key(&path).is_ok());
    }

    #[test]
    fn plain_http_upstreams_are_refused() {
        let e = load(
            None,
            &[
                ("SPECGATE_UPSTREAM", "http://a.example"),
                ("SPECGATE_API_TOKEN", "t"),
            ],
        )
        .unwrap_err();
        assert!(e.to_string().contains("https://"), "{e}");
    }

    #[test]
    fn unknown_keys_and_tokens_in_the_file_are_refused() {
        let e = load(Some("listne = \"x\"\n"), MINIMAL).unwrap_err();
        assert!(e.message.contains("unknown setting \"listne\""), "{e}");
        let e = load(Some("api_token = \"abc\"\n"), MINIMAL).unwrap_err();
        assert!(e.message.contains("SPECGATE_API_TOKEN"), "{e}");
        assert!(
            !e.to_string().contains("abc"),
            "the token value is never echoed"
        );
    }

    #[test]
    fn both_token_sources_at_once_are_refused() {
        let mut env = MINIMAL.to_vec();
        env.push(("SPECGATE_API_TOKEN_FILE", "/run/secrets/t"));
        let e = load(None, &env).unwrap_err();
        assert!(e.message.contains("set only one"), "{e}");
        assert!(!e.to_string().contains("secret-value-1"));
    }

    const KEY_HASH: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";

    #[test]
    fn clients_load_with_their_allow_lists_and_rates() {
        let file = format!(
            "[[clients]]\nname = \"billing\"\nkey_sha256 = \"{KEY_HASH}\"\nallow = [\"create-connection\"]\nrate_limit_per_sec = 2.5\n\n[[clients]]\nname = \"crm\"\nkey_sha256 = \"{}\"\n",
            "0".repeat(64)
        );
        let c = load(Some(&file), MINIMAL).unwrap();
        assert_eq!(c.clients.len(), 2);
        assert_eq!(&*c.clients[0].name, "billing");
        assert_eq!(
            hex::encode(c.clients[0].key_sha256.unwrap()),
            KEY_HASH,
            "the digest, not the key"
        );
        assert_eq!(
            c.clients[0].allow.as_deref(),
            Some(&["create-connection".to_owned()][..])
        );
        assert_eq!(
            c.clients[0].rate,
            Some(Rate {
                per_second: 2.5,
                burst: 3
            })
        );
        assert!(c.clients[1].allow.is_none() && c.clients[1].rate.is_none());
    }

    #[test]
    fn bad_clients_are_refused_naming_the_entry() {
        let cases = [
            (
                "name = \"a\"\nkey = \"plain-secret\"",
                "never the key itself",
            ),
            ("name = \"a\"", "key_sha256 is required"),
            ("name = \"a\"\nkey_sha256 = \"abc\"", "64 hex digits"),
            ("key_sha256 = \"KEY\"", "name is required"),
            ("name = \"a b\"\nkey_sha256 = \"KEY\"", "visible ASCII"),
            (
                "name = \"a\"\nkey_sha256 = \"KEY\"\nallow = \"x\"",
                "list of operationIds",
            ),
            (
                "name = \"a\"\nkey_sha256 = \"KEY\"\nrate_limit_burst = 3",
                "needs rate_limit_per_sec",
            ),
            (
                "name = \"a\"\nkey_sha256 = \"KEY\"\nalow = []",
                "unknown setting \"alow\"",
            ),
        ];
        for (entry, expected) in cases {
            let file = format!("[[clients]]\n{}\n", entry.replace("KEY", KEY_HASH));
            let e = load(Some(&file), MINIMAL).unwrap_err();
            assert!(e.setting.starts_with("clients[0] (in "), "{e}");
            assert!(e.message.contains(expected), "{entry}: {e}");
            assert!(!e.to_string().contains("plain-secret"), "{e}");
        }
        let twice = format!(
            "[[clients]]\nname = \"a\"\nkey_sha256 = \"{KEY_HASH}\"\n[[clients]]\nname = \"b\"\nkey_sha256 = \"{KEY_HASH}\"\n"
        );
        let e = load(Some(&twice), MINIMAL).unwrap_err();
        assert!(e.message.contains("same as another client's"), "{e}");
    }

    #[test]
    fn nothing_configured_names_both_settings_and_mock_mode() {
        let e = load(None, &[]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("SPECGATE_UPSTREAM") && text.contains("SPECGATE_API_TOKEN_FILE"),
            "{text}"
        );
        assert!(text.contains("specgate serve --mock"), "{text}");
        let e = load(None, &[("SPECGATE_API_TOKEN", "t")]).unwrap_err();
        assert!(e.to_string().contains("no upstream configured"), "{e}");
    }

    #[test]
    fn a_non_loopback_listener_needs_client_auth_or_an_explicit_opt_out() {
        let mut env = MINIMAL.to_vec();
        env.push(("SPECGATE_LISTEN", "0.0.0.0:8080"));
        let e = load(None, &env).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("SPECGATE_LISTEN (listen): 0.0.0.0:8080 is not a loopback"),
            "{e}"
        );
        assert!(e.message.contains("allow_unauthenticated = true"), "{e}");
        assert!(
            e.message.contains("SPECGATE_ALLOW_UNAUTHENTICATED=true"),
            "a container user sets the environment: {e}"
        );
        // Mock mode holds no token: any address, with a start-up warning.
        let mock = [
            ("SPECGATE_UPSTREAM_MODE", "mock"),
            ("SPECGATE_LISTEN", "0.0.0.0:8080"),
        ];
        assert_eq!(load(None, &mock).unwrap().mode, UpstreamMode::Mock);

        let clients = format!("[[clients]]\nname = \"a\"\nkey_sha256 = \"{KEY_HASH}\"\n");
        assert!(load(Some(&clients), &env).is_ok());
        let mut opted_out = env.clone();
        opted_out.push(("SPECGATE_ALLOW_UNAUTHENTICATED", "true"));
        assert!(load(None, &opted_out).unwrap().allow_unauthenticated);
        let mtls = "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_ca = \"ca.pem\"\n";
        assert!(load(Some(mtls), &env).is_ok());
        let mut v6 = MINIMAL.to_vec();
        v6.push(("SPECGATE_LISTEN", "[::1]:8080"));
        assert!(load(None, &v6).is_ok(), "::1 is loopback");
    }

    #[test]
    fn tls_settings_come_in_pairs_and_mtls_clients_need_no_key() {
        let e = load(Some("[tls]\ncert = \"c.pem\"\n"), MINIMAL).unwrap_err();
        assert!(e.message.contains("set tls.key too"), "{e}");
        let e = load(Some("[tls]\nclient_ca = \"ca.pem\"\n"), MINIMAL).unwrap_err();
        assert!(e.message.contains("mutual TLS needs TLS"), "{e}");
        let file = "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_ca = \"ca.pem\"\n\n[[clients]]\nname = \"billing.internal\"\n";
        let c = load(Some(file), MINIMAL).unwrap();
        assert!(c.clients[0].key_sha256.is_none());
        assert_eq!(c.tls.unwrap().client_ca.unwrap(), PathBuf::from("ca.pem"));
    }

    #[test]
    fn unknown_routes_limits_and_booleans_parse() {
        let mut env = MINIMAL.to_vec();
        env.push(("SPECGATE_ROUTES_UNKNOWN", "forward"));
        env.push(("SPECGATE_MAX_HEADERS", "10"));
        let c = load(None, &env).unwrap();
        assert_eq!(c.unknown_routes, UnknownRoutes::Forward);
        assert_eq!(c.limits.max_headers, 10);
        assert_eq!(
            load(None, MINIMAL).unwrap().unknown_routes,
            UnknownRoutes::Reject
        );
        let mut env = MINIMAL.to_vec();
        env.push(("SPECGATE_ROUTES_UNKNOWN", "allow"));
        assert!(load(None, &env).unwrap_err().message.contains("neither"));
        let mut env = MINIMAL.to_vec();
        env.push(("SPECGATE_ALLOW_UNAUTHENTICATED", "maybe"));
        assert!(
            load(None, &env)
                .unwrap_err()
                .message
                .contains("not true or false")
        );
        let mut env = MINIMAL.to_vec();
        env.push(("SPECGATE_MAX_JSON_DEPTH", "1000"));
        assert!(
            load(None, &env)
                .unwrap_err()
                .message
                .contains("at most 128")
        );
    }

    #[test]
    fn the_shipped_config_file_documents_every_setting_and_loads() {
        let text = include_str!("../config/specgate.toml");
        for setting in SETTINGS {
            let leaf = setting.key.rsplit('.').next().unwrap();
            assert!(
                text.contains(&format!("{leaf} =")),
                "config/specgate.toml lacks {}",
                setting.key
            );
            assert!(
                text.contains(setting.env),
                "config/specgate.toml does not name {}",
                setting.env
            );
        }
        // Uncommented, the documented defaults load as they are.
        let uncommented: String = text
            .lines()
            .map(|l| {
                // A commented setting is `# key = value`, with a bare lower-case key; indented
                // lines are examples (such as [[clients]]), not defaults.
                l.strip_prefix("# ")
                    .filter(|l| {
                        l.split_once(" = ").is_some_and(|(key, _)| {
                            key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                        })
                    })
                    .unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n");
        let c = load(Some(&uncommented), &[]).unwrap();
        assert_eq!(c.listen.to_string(), defaults::LISTEN);
        assert_eq!(c.max_body_bytes, defaults::MAX_BODY_BYTES);
        assert!(matches!(c.token, Some(TokenSource::File(_))));
        assert_eq!(c.audit.sync, SyncMode::Always);
        assert_eq!(c.audit.max_file_bytes, defaults::AUDIT_MAX_FILE_BYTES);
    }

    #[test]
    fn the_credential_setting_names_a_scheme_and_the_old_header_setting_still_works() {
        let with = |extra: &[(&str, &str)]| {
            let mut env = MINIMAL.to_vec();
            env.extend_from_slice(extra);
            load(None, &env)
        };
        let c = with(&[("SPECGATE_CREDENTIAL", "bearer")]).unwrap();
        assert_eq!(c.credential, Some(Scheme::Bearer));
        let c = with(&[("SPECGATE_CREDENTIAL_HEADER", "X-Key")]).unwrap();
        assert_eq!(
            c.credential,
            Some(Scheme::Header(HeaderName::from_static("x-key")))
        );
        let e = with(&[
            ("SPECGATE_CREDENTIAL", "bearer"),
            ("SPECGATE_CREDENTIAL_HEADER", "X-Key"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("not both"), "{e}");
        let e = with(&[("SPECGATE_CREDENTIAL", "digest")]).unwrap_err();
        assert!(e.to_string().starts_with("SPECGATE_CREDENTIAL "), "{e}");
        // oauth2 takes the configured token URL, or (left empty) the document's.
        let url = "https://auth.example/token";
        let c = with(&[
            ("SPECGATE_CREDENTIAL", "oauth2"),
            ("SPECGATE_OAUTH2_TOKEN_URL", url),
        ])
        .unwrap();
        assert_eq!(
            c.credential,
            Some(Scheme::OAuth2 {
                token_url: url.into(),
                scopes: vec![]
            })
        );
        let c = with(&[("SPECGATE_CREDENTIAL", "oauth2")]).unwrap();
        assert_eq!(
            c.credential,
            Some(Scheme::OAuth2 {
                token_url: String::new(),
                scopes: vec![]
            })
        );
        let e = with(&[("SPECGATE_OAUTH2_TOKEN_URL", "/token")]).unwrap_err();
        assert!(e.to_string().contains("not an absolute URL"), "{e}");
    }

    #[test]
    fn mock_mode_needs_neither_upstream_nor_token() {
        let c = load(Some("[upstream]\nmode = \"mock\"\n"), &[]).unwrap();
        assert_eq!(c.mode, UpstreamMode::Mock);
        assert!(c.token.is_none());
        assert_eq!(c.upstream.base, defaults::MOCK_UPSTREAM);
        // Set, they are still checked.
        let e = load(
            Some("[upstream]\nmode = \"mock\"\nurl = \"http://a.example\"\n"),
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("https://"), "{e}");
        let e = load(Some("[upstream]\nmode = \"fake\"\n"), MINIMAL).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("upstream.mode (upstream.mode in "),
            "{e}"
        );
    }
}
