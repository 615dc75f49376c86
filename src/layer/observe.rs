//! Observes every request, refused or forwarded: keeps the in-flight gauge, counts the answer
//! by operation, method and status class (and refused bodies by reason), and writes one access
//! log event when the response head is ready. Sensitive headers never reach the log.
//!
//! It sits outside the rescue layer, so it sees every status exactly as the client does. The
//! operation is learnt from the route layer through an [`OperationSlot`] it leaves in the
//! request's extensions.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Method, Request, Response, header};
use pin_project_lite::pin_project;
use prometheus_client::metrics::gauge::Gauge;
use tower_layer::Layer;
use tower_service::Service;

use super::auth::ClientSlot;
use super::request_id::RequestId;
use super::rescue::ErrorKind;
use crate::body::Body;
use crate::metrics::{Metrics, UNMATCHED};
use crate::spec::Operation;

/// The peer a request came from, put in its extensions by the server.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// Where the route layer records the operation a request matched, for this layer to read once
/// the response is ready.
#[derive(Clone, Debug, Default)]
pub struct OperationSlot(Arc<OnceLock<Arc<Operation>>>);

impl OperationSlot {
    /// Records the operation (the first one recorded stays).
    pub fn set(&self, operation: Arc<Operation>) {
        let _ = self.0.set(operation);
    }

    /// The operation, if the request matched one.
    pub fn get(&self) -> Option<&Arc<Operation>> {
        self.0.get()
    }
}

/// The error kinds that are a refused request body, counted as validation failures.
const VALIDATION_KINDS: [&str; 11] = [
    "schema-violation",
    "parameter-violation",
    "malformed-json",
    "malformed-multipart",
    "unsupported-media-type",
    "unsupported-content-encoding",
    "malformed-content-encoding",
    "body-not-allowed",
    "body-too-large",
    "duplicate-key",
    "json-too-deep",
];

/// Headers whose values never reach a log line, whether or not they were marked sensitive.
const ALWAYS_REDACTED: [&str; 6] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "api-token",
    "x-api-key",
];

/// The headers as `name: value` pairs for a log line, with every sensitive value (marked
/// sensitive by the stack, or one of the usual credential headers) shown as `<redacted>`.
pub fn redacted(headers: &HeaderMap) -> String {
    let mut out = String::new();
    for (name, value) in headers {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(name.as_str());
        out.push_str(": ");
        if value.is_sensitive() || ALWAYS_REDACTED.contains(&name.as_str()) {
            out.push_str("<redacted>");
        } else {
            out.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
    }
    out
}

/// Adds [`Observe`].
#[derive(Clone, Debug)]
pub struct ObserveLayer {
    metrics: Metrics,
}

impl ObserveLayer {
    /// Observes into `metrics` and the log.
    pub fn new(metrics: Metrics) -> Self {
        ObserveLayer { metrics }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Counts and logs each request.
#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    metrics: Metrics,
}

/// Counts a request in the in-flight gauge for as long as it lives.
struct InFlight(Gauge);

impl InFlight {
    fn start(gauge: &Gauge) -> Self {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What the access log needs from the request, taken before it is passed on.
struct Seen {
    started: Instant,
    request_id: Option<RequestId>,
    peer: Option<SocketAddr>,
    client: ClientSlot,
    method: Method,
    path: String,
    bytes_in: Option<u64>,
    headers: Option<String>,
    slot: OperationSlot,
}

impl<S> Service<Request<Body>> for Observe<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let slot = OperationSlot::default();
        req.extensions_mut().insert(slot.clone());
        let client = ClientSlot::default();
        req.extensions_mut().insert(client.clone());
        let seen = Seen {
            started: Instant::now(),
            request_id: req.extensions().get::<RequestId>().cloned(),
            peer: req.extensions().get::<PeerAddr>().map(|p| p.0),
            client,
            method: req.method().clone(),
            // Never the query string: it can carry personal data.
            path: req.uri().path().to_owned(),
            bytes_in: content_length(req.headers()),
            headers: tracing::enabled!(tracing::Level::DEBUG).then(|| redacted(req.headers())),
            slot,
        };
        ResponseFuture {
            in_flight: Some(InFlight::start(self.metrics.in_flight())),
            future: self.inner.call(req),
            seen: Some(seen),
            metrics: self.metrics.clone(),
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

pin_project! {
    /// Records the response once its head is ready.
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        seen: Option<Seen>,
        in_flight: Option<InFlight>,
        metrics: Metrics,
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.future.poll(cx));
        drop(this.in_flight.take());
        if let (Ok(response), Some(seen)) = (&result, this.seen.take()) {
            record(this.metrics, seen, response);
        }
        Poll::Ready(result)
    }
}

fn record(metrics: &Metrics, seen: Seen, response: &Response<Body>) {
    let status = response.status();
    let error = response.extensions().get::<ErrorKind>().map(|k| k.0);
    let operation: Arc<str> = match seen.slot.get() {
        Some(op) => op.id.clone(),
        None => Arc::from(UNMATCHED),
    };
    metrics.request(&operation, &seen.method, status);
    if let Some(kind) = error.filter(|k| VALIDATION_KINDS.contains(k)) {
        metrics.validation_failure(&operation, kind);
    }
    let latency_ms = seen.started.elapsed().as_secs_f64() * 1000.0;
    // A response without an error mark is the upstream's (or the mock's), passed through.
    let upstream_status = error.is_none().then_some(status.as_u16());
    let bytes_out = http_body::Body::size_hint(response.body()).exact();
    tracing::info!(
        target: "specgate::access",
        request_id = seen.request_id.as_ref().map(RequestId::as_str),
        client = seen.client.get().map(|c| &*c.0),
        peer = seen.peer.map(tracing::field::display),
        method = %seen.method,
        path = %seen.path,
        operation = %operation,
        status = status.as_u16(),
        upstream_status,
        error,
        latency_ms,
        bytes_in = seen.bytes_in,
        bytes_out,
        headers = seen.headers,
        "request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::layer::rescue::RescueLayer;
    use http::{HeaderValue, StatusCode};
    use tower::{ServiceExt, service_fn};

    #[test]
    fn sensitive_values_are_redacted() {
        let mut headers = HeaderMap::new();
        let mut marked = HeaderValue::from_static("marked-secret");
        marked.set_sensitive(true);
        headers.insert("x-custom-credential", marked);
        headers.insert("api-token", HeaderValue::from_static("client-token"));
        headers.insert("authorization", HeaderValue::from_static("Bearer abc"));
        headers.insert("user-agent", HeaderValue::from_static("curl/8"));
        let line = redacted(&headers);
        for secret in ["marked-secret", "client-token", "Bearer abc"] {
            assert!(!line.contains(secret), "{line}");
        }
        assert!(line.contains("user-agent: curl/8"), "{line}");
        assert!(line.contains("api-token: <redacted>"), "{line}");
    }

    #[tokio::test]
    async fn refusals_count_by_operation_and_the_gauge_returns_to_zero() {
        let metrics = Metrics::new();
        let spec = crate::spec::Spec::load(&Default::default()).unwrap();
        let op = spec.operations[0].clone();
        let inner = service_fn(move |req: Request<Body>| {
            let op = op.clone();
            async move {
                req.extensions().get::<OperationSlot>().unwrap().set(op);
                Err::<Response<Body>, _>(Error::MalformedJson("eof".into()))
            }
        });
        let svc = ObserveLayer::new(metrics.clone()).layer(RescueLayer.layer(inner));
        let response = svc
            .oneshot(Request::post("/connections").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let text = metrics.render();
        assert!(
            text.contains(r#"specgate_validation_failures_total{operation="create-connection",reason="malformed-json"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"specgate_requests_total{operation="create-connection",method="POST",status_class="4xx"} 1"#),
            "{text}"
        );
        assert_eq!(metrics.in_flight().get(), 0);
    }
}
