//! Checks each upstream response against what its operation declares, without changing or
//! delaying it.
//!
//! The response body is teed as it streams to the client: each chunk is a reference-counted
//! slice, so keeping it copies nothing (up to `drift.max_body_bytes` a response, and a budget
//! for all of them), and nothing waits for the check. When the body ends, the response goes on
//! the drift check's queue ([`DriftMonitor`]). An audited create's 2xx is checked on the spot
//! instead, as the audit layer reads that response to its end before releasing it (it is
//! held for its record's sync anyway): the check adds its few microseconds there, so the
//! record can say where the response drifted ([`DriftFound`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use serde_json::{Value, json};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::{Body, BoxError};
use crate::drift::{DriftMonitor, Finding, Job, KeptBody};
use crate::error::Error;
use crate::route::Routed;
use crate::spec::Operation;

/// Adds [`Drift`]; with no monitor (the check is off, or mock mode) it adds nothing.
#[derive(Clone, Debug)]
pub struct DriftLayer {
    monitor: Option<Arc<DriftMonitor>>,
}

impl DriftLayer {
    /// Checks responses with `monitor`, if there is one.
    pub fn new(monitor: Option<Arc<DriftMonitor>>) -> Self {
        DriftLayer { monitor }
    }
}

impl<S> Layer<S> for DriftLayer {
    type Service = Drift<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Drift {
            inner,
            monitor: self.monitor.clone(),
        }
    }
}

/// Tees upstream responses to the drift check.
#[derive(Clone, Debug)]
pub struct Drift<S> {
    inner: S,
    monitor: Option<Arc<DriftMonitor>>,
}

/// What the drift check found in a create's response, for its audit record: set when the
/// body has been read to its end.
#[derive(Clone, Debug, Default)]
pub struct DriftFound(Arc<OnceLock<Vec<Finding>>>);

impl DriftFound {
    /// The record's `drift` field: each finding's kind and pointer; `None` when the body was
    /// not checked (not sampled, or not read to its end) or nothing differed.
    pub fn audit_value(&self) -> Option<Value> {
        let findings = self.0.get().filter(|f| !f.is_empty())?;
        Some(Value::Array(
            findings
                .iter()
                .map(|f| json!({"kind": f.kind.name(), "at": f.pointer}))
                .collect(),
        ))
    }
}

impl<S> Service<Request<Body>> for Drift<S>
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
        // A HEAD's answer has no body to compare.
        let watch = self
            .monitor
            .as_ref()
            .filter(|_| req.method() != Method::HEAD);
        let watch = watch.and_then(|monitor| {
            let routed = req.extensions().get::<Routed>()?;
            if routed.unspecified
                || routed.operation.responses.is_none()
                || !monitor.sample(routed.operation.creates)
            {
                return None;
            }
            Some(Watch {
                monitor: monitor.clone(),
                operation: routed.operation.clone(),
            })
        });
        ResponseFuture {
            future: self.inner.call(req),
            watch,
        }
    }
}

/// A response to be checked once it has arrived.
struct Watch {
    monitor: Arc<DriftMonitor>,
    operation: Arc<Operation>,
}

pin_project! {
    /// [`Drift`]'s response future: the inner one, its response's body teed.
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        watch: Option<Watch>,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, Error>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.future.poll(cx))?;
        let Some(Watch { monitor, operation }) = this.watch.take() else {
            return Poll::Ready(Ok(response));
        };
        let (mut parts, body) = response.into_parts();
        // Only a create's 2xx is held for its record; anything else goes on the queue.
        let found = (operation.creates && parts.status.is_success()).then(|| {
            let found = DriftFound::default();
            parts.extensions.insert(found.clone());
            found
        });
        let job = Job {
            status: parts.status.as_u16(),
            headers: parts.headers.clone(),
            operation,
            body: None,
        };
        let tee = Tee {
            inner: body,
            kept: Some(monitor.keep_body()),
            max: monitor.max_body_bytes(),
            job: Some(job),
            monitor,
            found,
        };
        Poll::Ready(Ok(Response::from_parts(parts, Body::new(tee))))
    }
}

/// A response body passed through unchanged, its chunks kept for the check.
struct Tee {
    inner: Body,
    /// `None` once the body passed `max`, the monitor's budget ran out, or the body failed:
    /// it will not be parsed.
    kept: Option<KeptBody>,
    max: usize,
    /// Taken when the body ends (or the tee is dropped).
    job: Option<Job>,
    monitor: Arc<DriftMonitor>,
    found: Option<DriftFound>,
}

impl Tee {
    /// Hands the response to the check: with its body if all of it was kept.
    fn finish(&mut self, whole: bool) {
        let Some(mut job) = self.job.take() else {
            return;
        };
        // Joined (where it came in several chunks) by the check, not here.
        job.body = match self.kept.take() {
            Some(kept) if whole => Some(kept),
            _ => {
                self.monitor.body_skipped();
                None
            }
        };
        match &self.found {
            Some(found) => {
                let _ = found.0.set(self.monitor.check_now(&job));
            }
            None => self.monitor.submit(job),
        }
    }
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(data), Some(kept)) = (frame.data_ref(), &mut this.kept)
                    && (kept.len() + data.len() > this.max || !kept.keep(data))
                {
                    this.kept = None;
                }
            }
            Some(Err(_)) => {
                this.kept = None;
                this.finish(false);
            }
            None => this.finish(true),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        // Dropped without being read to its end: whole only if nothing was left to read (a
        // client that stops at `is_end_stream`); otherwise the head is still checked.
        let whole = http_body::Body::is_end_stream(&self.inner);
        self.finish(whole);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use http::{HeaderValue, StatusCode, header};
    use http_body_util::BodyExt;
    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::drift::Settings;
    use crate::metrics::Metrics;
    use crate::route::RouteTable;
    use crate::spec::Spec;

    /// A body that arrives in the given chunks.
    struct Chunks(VecDeque<Bytes>);

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
        }
    }

    fn routed() -> Routed {
        let doc = serde_json::json!({
            "openapi": "3.0.3", "info": {"title": "t", "version": "1"},
            "paths": {"/users": {"post": {
                "requestBody": {"content": {"application/json": {"schema": {}}}},
                "responses": {"201": {"description": "made",
                    "content": {"application/json": {"schema": {
                        "type": "object", "required": ["id"],
                        "properties": {"id": {"type": "string"}}}}}}}
            }}}
        });
        let spec = Spec::compile("t.json", doc).unwrap();
        RouteTable::new(&spec)
            .route(&Method::POST, "/users")
            .unwrap()
    }

    /// The drift layer over an upstream answering `status` with `chunks`, checking bodies up
    /// to `max` bytes; the response, and the metrics.
    async fn through(
        status: StatusCode,
        chunks: &[&'static str],
        max: usize,
    ) -> (Response<Body>, Metrics) {
        let metrics = Metrics::new();
        let settings = Settings {
            sample_rate: 1.0,
            max_body_bytes: max,
        };
        let monitor = DriftMonitor::start(settings, 4, metrics.clone()).unwrap();
        let chunks: VecDeque<Bytes> = chunks
            .iter()
            .map(|c| Bytes::from_static(c.as_bytes()))
            .collect();
        let upstream = service_fn(move |_req: Request<Body>| {
            let chunks = chunks.clone();
            async move {
                let mut response = Response::new(Body::new(Chunks(chunks)));
                *response.status_mut() = status;
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Ok::<_, Error>(response)
            }
        });
        let mut request = Request::new(Body::empty());
        request.extensions_mut().insert(routed());
        let response = DriftLayer::new(Some(monitor))
            .layer(upstream)
            .oneshot(request)
            .await
            .unwrap();
        (response, metrics)
    }

    fn found(response: &Response<Body>) -> DriftFound {
        response.extensions().get::<DriftFound>().unwrap().clone()
    }

    #[tokio::test]
    async fn a_body_in_chunks_passes_unchanged_and_is_checked_whole() {
        let (response, _) = through(StatusCode::CREATED, &[r#"{"id""#, ":", "7}"], 1024).await;
        let found = found(&response);
        assert_eq!(found.audit_value(), None, "not checked before its end");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"id":7}"#);
        assert_eq!(
            found.audit_value(),
            Some(serde_json::json!([{"kind": "schema", "at": "/id"}]))
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_passes_unchanged_and_is_not_parsed() {
        let (response, metrics) = through(StatusCode::CREATED, &[r#"{"id":"#, "7}"], 6).await;
        let found = found(&response);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"id":7}"#);
        assert_eq!(
            found.audit_value(),
            None,
            "only its head was checked, and it is fine"
        );
        assert!(
            metrics
                .render()
                .contains(r#"specgate_response_drift_skipped_total{reason="body_not_parsed"} 1"#)
        );
    }

    #[tokio::test]
    async fn a_body_dropped_unread_still_has_its_head_checked() {
        // 200 is not the 201 the operation declares.
        let (response, metrics) = through(StatusCode::OK, &[r#"{"id":7}"#], 1024).await;
        let found = found(&response);
        drop(response);
        assert_eq!(
            found.audit_value(),
            Some(serde_json::json!([{"kind": "undeclared_status", "at": "200"}]))
        );
        assert!(
            metrics
                .render()
                .contains(r#"specgate_response_drift_skipped_total{reason="body_not_parsed"} 1"#)
        );
    }
}
