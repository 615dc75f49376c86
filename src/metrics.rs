//! The metrics `/metrics` exposes, in the Prometheus text format.
//!
//! Every label has a small, bounded set of values: an operation id from the spec (or
//! `unmatched`), a method, a status class, an error kind. No label ever holds a request id, a
//! body, a client key, a path parameter or the token.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::audit::ship::ShipStats;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The operation label of a request that matched no operation.
pub const UNMATCHED: &str = "unmatched";

/// The commit specgate was built from (`unknown` outside a git checkout).
pub const GIT_SHA: &str = env!("SPECGATE_GIT_SHA");

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: Arc<str>,
    method: &'static str,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ValidationLabels {
    operation: Arc<str>,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    operation: Arc<str>,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriftLabels {
    operation: Arc<str>,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RemovedLabels {
    operation: Arc<str>,
    parameter: Arc<str>,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric, and the registry that renders them. Cheap to clone: one `Arc`, because every
/// request's stack holds a few clones and each clone of a dozen shared metrics was a dozen
/// atomic increments on cache lines both cores write.
#[derive(Clone, Debug)]
pub struct Metrics(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    validation_failures: Family<ValidationLabels, Counter>,
    unvalidated: Family<ValidationLabels, Counter>,
    query_credentials_removed: Family<RemovedLabels, Counter>,
    request_violations: Family<ModeLabels, Counter>,
    response_drift: Family<DriftLabels, Counter>,
    drift_skipped: Family<ReasonLabels, Counter>,
    drift_sample_rate: Gauge<f64, std::sync::atomic::AtomicU64>,
    upstream_latency: HistogramFamily<OperationLabels>,
    upstream_errors: Family<KindLabels, Counter>,
    in_flight: Gauge,
    token_reloads: Family<ResultLabels, Counter>,
    config_reloads: Family<ResultLabels, Counter>,
    audit: AuditMetrics,
    shipping: Arc<OnceLock<Arc<ShipStats>>>,
}

/// What the audit writer reports: records made durable, how long each sync took, and writes
/// that failed.
#[derive(Clone, Debug)]
pub struct AuditMetrics {
    records: Counter,
    sync_latency: Histogram,
    errors: Counter,
}

impl AuditMetrics {
    /// `records` records reached the disk in one write and sync.
    pub fn written(&self, records: u64) {
        self.records.inc_by(records);
    }

    /// One write-and-`fdatasync` took `elapsed` (successful or not).
    pub fn synced(&self, elapsed: Duration) {
        self.sync_latency.observe(elapsed.as_secs_f64());
    }

    /// A write or sync failed.
    pub fn failed(&self) {
        self.errors.inc();
    }
}

/// The audit shipper's figures, read from its atomics at each scrape; nothing when shipping is
/// off. Lag is visible here, never in readiness: a slow database is not the app's problem.
#[derive(Debug)]
struct ShipCollector(Arc<OnceLock<Arc<ShipStats>>>);

impl Collector for ShipCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = self.0.get() else {
            return Ok(());
        };
        let counters = [
            (
                "audit_ship_records",
                "Audit records shipped to PostgreSQL",
                stats.shipped_records(),
            ),
            (
                "audit_ship_batches",
                "Batches of audit records committed to PostgreSQL",
                stats.shipped_batches(),
            ),
            (
                "audit_ship_errors",
                "Failed attempts to ship audit records",
                stats.errors(),
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "audit_ship_lag_records",
                "Audit records written locally but not yet in PostgreSQL",
                stats.lag_records() as f64,
            ),
            (
                "audit_ship_lag_seconds",
                "Age of the oldest audit record not yet in PostgreSQL",
                stats.lag_seconds(),
            ),
            (
                "audit_ship_stalled",
                "1 when shipping has stopped on a conflict someone must resolve",
                f64::from(u8::from(stats.stalled())),
            ),
            (
                "audit_ship_connected",
                "1 while the shipper holds a PostgreSQL connection",
                f64::from(u8::from(stats.connected())),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// The audit writer reports here.
impl crate::audit::Observer for AuditMetrics {
    fn synced(&self, records: usize, took: Duration) {
        self.written(records as u64);
        self.synced(took);
    }

    fn failed(&self) {
        AuditMetrics::failed(self);
    }
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~33 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

fn sync_histogram() -> Histogram {
    // 50 µs to ~3.3 s: an fdatasync on a healthy disk is well under a millisecond to a few.
    Histogram::new(exponential_buckets(0.00005, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, all at zero, with the build info set.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("specgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by operation, method and status class",
            requests.clone(),
        );
        let validation_failures = Family::<ValidationLabels, Counter>::default();
        registry.register(
            "validation_failures",
            "Request bodies refused before forwarding, by operation and reason",
            validation_failures.clone(),
        );
        let unvalidated = Family::<ValidationLabels, Counter>::default();
        registry.register(
            "unvalidated",
            "Request bodies forwarded unchecked because specgate cannot read their declared \
             media type (XML, YAML, binary), by operation and reason",
            unvalidated.clone(),
        );
        let query_credentials_removed = Family::<RemovedLabels, Counter>::default();
        registry.register(
            "query_credentials_removed",
            "Credential-looking query parameters a client sent (api_key, access_token, a query \
             scheme's name), removed before forwarding, by operation and parameter name",
            query_credentials_removed.clone(),
        );
        let request_violations = Family::<ModeLabels, Counter>::default();
        registry.register(
            "request_violations",
            "Requests validation would refuse that were forwarded anyway, by operation and \
             enforcement mode (report)",
            request_violations.clone(),
        );
        let response_drift = Family::<DriftLabels, Counter>::default();
        registry.register(
            "response_drift",
            "Differences between upstream responses and what the document declares, by \
             operation and kind (undeclared_status, undeclared_content_type, schema, \
             missing_header)",
            response_drift.clone(),
        );
        let drift_skipped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "response_drift_skipped",
            "Upstream responses not checked for drift, or whose body was not parsed, by reason \
             (sampled_out, queue_full, body_not_parsed)",
            drift_skipped.clone(),
        );
        let drift_sample_rate = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "response_drift_sample_rate",
            "The share of upstream responses checked for drift now (lowered while the check \
             falls behind)",
            drift_sample_rate.clone(),
        );
        let upstream_latency: HistogramFamily<OperationLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "upstream_duration_seconds",
            "Time from forwarding to the upstream's response headers, by operation",
            upstream_latency.clone(),
        );
        let upstream_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream exchanges that failed, by kind (connect, tls, timeout, protocol)",
            upstream_errors.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Requests being handled now",
            in_flight.clone(),
        );
        let audit = AuditMetrics {
            records: Counter::default(),
            sync_latency: sync_histogram(),
            errors: Counter::default(),
        };
        registry.register(
            "audit_records",
            "Audit records written and synced to disk",
            audit.records.clone(),
        );
        registry.register(
            "audit_sync_duration_seconds",
            "Time to fdatasync one batch of audit records (the count is the number of syncs)",
            audit.sync_latency.clone(),
        );
        registry.register(
            "audit_errors",
            "Audit writes or syncs that failed",
            audit.errors.clone(),
        );
        let shipping = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(ShipCollector(shipping.clone())));
        let token_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "token_reloads",
            "Attempts to reload the API token, by result (success, failure)",
            token_reloads.clone(),
        );
        let config_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Attempts to reload config, spec and overlays, by result (success, failure)",
            config_reloads.clone(),
        );
        registry.register(
            "build",
            "The running build",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("git_sha", GIT_SHA),
            ]),
        );
        Metrics(Arc::new(Shared {
            registry,
            requests,
            validation_failures,
            unvalidated,
            query_credentials_removed,
            request_violations,
            response_drift,
            drift_skipped,
            drift_sample_rate,
            upstream_latency,
            upstream_errors,
            in_flight,
            token_reloads,
            config_reloads,
            audit,
            shipping,
        }))
    }

    /// The audit writer's metrics.
    pub fn audit(&self) -> &AuditMetrics {
        &self.0.audit
    }

    /// Exposes the audit shipper's counters and lag (read at each scrape).
    pub fn watch_shipping(&self, stats: Arc<ShipStats>) {
        let _ = self.0.shipping.set(stats);
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.0.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// A request was answered with `status`.
    pub fn request(&self, operation: &Arc<str>, method: &Method, status: StatusCode) {
        self.0
            .requests
            .get_or_create(&RequestLabels {
                operation: operation.clone(),
                method: method_label(method),
                status_class: status_class(status),
            })
            .inc();
    }

    /// A request body was refused for `reason` (an error kind).
    pub fn validation_failure(&self, operation: &Arc<str>, reason: &'static str) {
        self.0
            .validation_failures
            .get_or_create(&ValidationLabels {
                operation: operation.clone(),
                reason,
            })
            .inc();
    }

    /// A request body was forwarded without being checked, for `reason`.
    pub fn unvalidated(&self, operation: &Arc<str>, reason: &'static str) {
        self.0
            .unvalidated
            .get_or_create(&ValidationLabels {
                operation: operation.clone(),
                reason,
            })
            .inc();
    }

    /// A client's credential-looking query parameter `parameter` was removed.
    pub fn query_credential_removed(&self, operation: &Arc<str>, parameter: &str) {
        self.0
            .query_credentials_removed
            .get_or_create(&RemovedLabels {
                operation: operation.clone(),
                parameter: Arc::from(parameter),
            })
            .inc();
    }

    /// A request validation would refuse was forwarded, in `mode`.
    pub fn request_violation(&self, operation: &Arc<str>, mode: &'static str) {
        self.0
            .request_violations
            .get_or_create(&ModeLabels {
                operation: operation.clone(),
                mode,
            })
            .inc();
    }

    /// An upstream response differed from its declaration in a way of `kind`.
    pub fn response_drift(&self, operation: &Arc<str>, kind: &'static str) {
        self.0
            .response_drift
            .get_or_create(&DriftLabels {
                operation: operation.clone(),
                kind,
            })
            .inc();
    }

    /// A response went unchecked for drift (or its body unparsed), for `reason`.
    pub fn drift_skipped(&self, reason: &'static str) {
        self.0
            .drift_skipped
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// The share of responses the drift check takes now.
    pub fn drift_sample_rate(&self, rate: f64) {
        self.0.drift_sample_rate.set(rate);
    }

    /// The upstream answered (headers) `elapsed` after the request was forwarded.
    pub fn upstream_latency(&self, operation: &Arc<str>, elapsed: Duration) {
        self.0
            .upstream_latency
            .get_or_create(&OperationLabels {
                operation: operation.clone(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// An upstream exchange failed.
    pub fn upstream_error(&self, kind: &'static str) {
        self.0
            .upstream_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// The in-flight gauge, for the guard that counts a request while it is handled.
    pub fn in_flight(&self) -> &Gauge {
        &self.0.in_flight
    }

    /// A token reload was attempted.
    pub fn token_reload(&self, ok: bool) {
        self.0
            .token_reloads
            .get_or_create(&ResultLabels {
                result: result_label(ok),
            })
            .inc();
    }

    /// A config reload was attempted.
    pub fn config_reload(&self, ok: bool) {
        self.0
            .config_reloads
            .get_or_create(&ResultLabels {
                result: result_label(ok),
            })
            .inc();
    }
}

fn result_label(ok: bool) -> &'static str {
    if ok { "success" } else { "failure" }
}

/// A method as a label: the standard ones by name, anything else as `other`, so a client
/// cannot grow the label set.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// `2xx`, `4xx`, ...
pub fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_counts_what_happened_and_keeps_labels_bounded() {
        let metrics = Metrics::new();
        let op: Arc<str> = Arc::from("create-connection");
        metrics.request(&op, &Method::POST, StatusCode::CREATED);
        metrics.request(&op, &Method::POST, StatusCode::OK);
        metrics.request(
            &op,
            &Method::from_bytes(b"BREW").unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
        );
        metrics.validation_failure(&op, "schema-violation");
        metrics.upstream_latency(&op, Duration::from_millis(3));
        metrics.upstream_error("tls");
        metrics.audit().written(2);
        let text = metrics.render();
        for line in [
            r#"specgate_requests_total{operation="create-connection",method="POST",status_class="2xx"} 2"#,
            r#"specgate_requests_total{operation="create-connection",method="other",status_class="4xx"} 1"#,
            r#"specgate_validation_failures_total{operation="create-connection",reason="schema-violation"} 1"#,
            r#"specgate_upstream_duration_seconds_count{operation="create-connection"} 1"#,
            r#"specgate_upstream_errors_total{kind="tls"} 1"#,
            "specgate_requests_in_flight 0",
            "specgate_audit_records_total 2",
            "specgate_audit_sync_duration_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        assert!(
            text.contains(&format!(
                "specgate_build_info{{version=\"{}\",git_sha=\"{GIT_SHA}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(StatusCode::NO_CONTENT), "2xx");
        assert_eq!(status_class(StatusCode::BAD_GATEWAY), "5xx");
    }
}
