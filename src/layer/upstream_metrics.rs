//! Measures the upstream exchange itself: the time from forwarding to the upstream's response
//! headers, by operation, and each failed exchange by kind (connect, tls, timeout, protocol).
//! It wraps the innermost service only, so nothing specgate does before forwarding is counted
//! as upstream time. Answers from the mock carry [`Mocked`] and are not counted.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::Body;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::route::Routed;

/// Marks a response the mock made up: nothing was forwarded.
#[derive(Clone, Copy, Debug)]
pub struct Mocked;

/// The `kind` label of an upstream failure, or `None` for an error that is not the upstream's.
pub fn failure_kind(error: &Error) -> Option<&'static str> {
    match error {
        Error::UpstreamConnect(_) => Some("connect"),
        Error::UpstreamTls(_) => Some("tls"),
        Error::UpstreamTimeout { .. } => Some("timeout"),
        Error::UpstreamProtocol(_) => Some("protocol"),
        _ => None,
    }
}

/// Adds [`UpstreamMetrics`].
#[derive(Clone, Debug)]
pub struct UpstreamMetricsLayer {
    metrics: Metrics,
}

impl UpstreamMetricsLayer {
    /// Records into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        UpstreamMetricsLayer { metrics }
    }
}

impl<S> Layer<S> for UpstreamMetricsLayer {
    type Service = UpstreamMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UpstreamMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Times upstream exchanges.
#[derive(Clone, Debug)]
pub struct UpstreamMetrics<S> {
    inner: S,
    metrics: Metrics,
}

impl<S> Service<Request<Body>> for UpstreamMetrics<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let operation = req
            .extensions()
            .get::<Routed>()
            .map(|r| r.operation.id.clone());
        ResponseFuture {
            future: self.inner.call(req),
            started: Instant::now(),
            operation,
            metrics: self.metrics.clone(),
        }
    }
}

pin_project! {
    /// Records the exchange when it completes.
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        started: Instant,
        operation: Option<Arc<str>>,
        metrics: Metrics,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, Error>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.future.poll(cx));
        match &result {
            Ok(response) if response.extensions().get::<Mocked>().is_none() => {
                if let Some(operation) = this.operation.as_ref() {
                    this.metrics
                        .upstream_latency(operation, this.started.elapsed());
                }
            }
            Ok(_) => {}
            Err(error) => {
                if let Some(kind) = failure_kind(error) {
                    this.metrics.upstream_error(kind);
                }
            }
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_upstream_failure_has_its_kind() {
        assert_eq!(
            failure_kind(&Error::UpstreamConnect("refused".into())),
            Some("connect")
        );
        assert_eq!(
            failure_kind(&Error::UpstreamTls("bad cert".into())),
            Some("tls")
        );
        assert_eq!(
            failure_kind(&Error::UpstreamTimeout { timeout_ms: 1 }),
            Some("timeout")
        );
        assert_eq!(failure_kind(&Error::RouteNotFound), None);
    }
}
