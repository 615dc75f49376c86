//! Records every created resource before the client hears of it.
//!
//! For an operation that creates (a POST with a request body): when the audit log is not
//! writable the request is refused (503) before it is forwarded; when the upstream answers
//! 2xx, the response body is read, the record (with the new resource's id) is written and
//! synced, and only then is the response released. Other operations pass straight through.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use time::OffsetDateTime;
use tower_layer::Layer;
use tower_service::Service;

use super::BoxFuture;
use super::request_id::RequestId;
use super::validate::ParsedBody;
use crate::audit::{Auditor, Entry, Outcome, ResourceFields, resource_id};
use crate::body::Body;
use crate::error::{Chain, Error};
use crate::route::Routed;

/// Largest upstream response to a create that is read to find the new resource's id.
const MAX_CREATE_RESPONSE: usize = 16 * 1024 * 1024;

/// What the audit record needs from the request, taken before it is forwarded.
#[derive(Debug)]
pub struct CreateRequest {
    /// The request id.
    pub request_id: String,
    /// The operation.
    pub routed: Routed,
    /// The method.
    pub method: String,
    /// The path as received.
    pub path: String,
    /// The validated body.
    pub body: Option<Arc<serde_json::Value>>,
}

impl CreateRequest {
    /// Takes what the record needs from a request about to be forwarded.
    pub fn of<B>(req: &Request<B>, routed: Routed) -> Self {
        CreateRequest {
            request_id: req
                .extensions()
                .get::<RequestId>()
                .map(|id| id.as_str().to_owned())
                .unwrap_or_default(),
            routed,
            method: req.method().to_string(),
            path: req.uri().path().to_owned(),
            body: req.extensions().get::<ParsedBody>().map(|b| b.0.clone()),
        }
    }

    /// The record of a create the upstream confirmed with `status` and `response` body.
    pub fn created(self, status: u16, response: &[u8], latency_ms: f64) -> Entry {
        let key = self
            .routed
            .operation
            .body
            .as_ref()
            .and_then(|b| b.json.as_ref())
            .and_then(|j| j.resource_key.clone());
        let parsed: Option<serde_json::Value> = serde_json::from_slice(response).ok();
        Entry {
            ts: OffsetDateTime::now_utc(),
            request_id: self.request_id,
            operation_id: self.routed.operation.id.clone(),
            method: self.method,
            path: self.path,
            client: self.routed.client.as_deref().map(str::to_owned),
            upstream_status: Some(status),
            outcome: Outcome::Created,
            resource_id: parsed.as_ref().and_then(|v| resource_id(v, key.as_deref())),
            resource: self.body.map(|body| ResourceFields::new(body, key)),
            latency_ms,
        }
    }
}

/// Adds [`Audit`].
#[derive(Clone, Debug)]
pub struct AuditLayer {
    auditor: Auditor,
}

impl AuditLayer {
    /// Audits through `auditor`.
    pub fn new(auditor: Auditor) -> Self {
        AuditLayer { auditor }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Audit {
            inner,
            auditor: self.auditor.clone(),
        }
    }
}

/// Audits creates.
#[derive(Clone, Debug)]
pub struct Audit<S> {
    inner: S,
    auditor: Auditor,
}

impl<S> Service<Request<Body>> for Audit<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let routed = req.extensions().get::<Routed>().cloned();
        let Some(routed) = routed.filter(|r| r.operation.creates) else {
            return Box::pin(self.inner.call(req));
        };
        if !self.auditor.health().writable() {
            return Box::pin(async { Err(Error::AuditUnavailable) });
        }
        let create = CreateRequest::of(&req, routed);
        let auditor = self.auditor.clone();
        let forwarded = self.inner.call(req);
        Box::pin(async move {
            let started = Instant::now();
            let response = forwarded.await?;
            if !response.status().is_success() {
                return Ok(response);
            }
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            let status = response.status();
            let (parts, body) = response.into_parts();
            let (bytes, unreadable) = match Limited::new(body, MAX_CREATE_RESPONSE).collect().await
            {
                Ok(collected) => (collected.to_bytes(), None),
                Err(e) => (Bytes::new(), Some(e)),
            };
            // The resource exists upstream whatever happens next: record it first.
            let entry = create.created(status.as_u16(), &bytes, latency_ms);
            if let Err(error) = auditor.append(entry).await {
                tracing::error!(error = %error, upstream_status = status.as_u16(), "create not audited");
                return Err(Error::AuditFailedAfterCreate {
                    upstream_status: status,
                });
            }
            match unreadable {
                None => Ok(Response::from_parts(parts, Body::full(bytes))),
                Some(e) => {
                    tracing::warn!(error = %Chain(&*e), "upstream create response unreadable");
                    Err(Error::UpstreamProtocol(e))
                }
            }
        })
    }
}
