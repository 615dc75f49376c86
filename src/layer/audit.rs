//! Records every create, and holds its 2xx until the record is on disk.
//!
//! For an operation that creates (a POST with a request body): an `attempted` record is written
//! before the request is forwarded, so a crash mid-create leaves evidence; if it cannot be
//! written, the create is refused with 503 and never leaves the machine
//! (`audit.on_error = "reject"`, the default). After the upstream answers, a `created` (2xx),
//! `rejected` (other status) or `failed` (no answer) record follows, names the attempt it
//! closes, and is synced before the response is released. Other operations pass straight
//! through.
//!
//! Once forwarded, a create runs to its record on a task of its own: a client that hangs up, or
//! a shutdown's grace running out mid-request, cannot leave a create upstream without its
//! outcome in the log.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::BodyExt;
use tower_layer::Layer;
use tower_service::Service;

use super::BoxFuture;
use super::auth::ClientName;
use super::drift::DriftFound;
use super::request_id::RequestId;
use super::validate::{ParsedBody, Reported};
use crate::audit::{Auditor, Entry, OnError, Outcome, ResourceFields, resource_id};
use crate::body::{Body, BoxError};
use crate::error::{Chain, Error};
use crate::route::Routed;

/// Most of an upstream response to a create that is held to find the new resource's id; a
/// larger one is streamed through and recorded without it.
const MAX_CREATE_RESPONSE: usize = 1024 * 1024;

/// What the audit records of one create share, taken from the request before it is forwarded.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    request_id: Option<String>,
    operation_id: String,
    method: String,
    path: String,
    client: Option<String>,
    resource_key: Option<String>,
    resource: Option<ResourceFields>,
    violations: Option<Arc<serde_json::Value>>,
}

impl CreateRequest {
    /// Takes what the records need from a request about to be forwarded.
    pub fn of<B>(req: &Request<B>, routed: &Routed) -> Self {
        let resource_key = routed
            .operation
            .body
            .as_ref()
            .and_then(|b| b.resource_key.clone());
        CreateRequest {
            request_id: req
                .extensions()
                .get::<RequestId>()
                .map(|id| id.as_str().to_owned()),
            operation_id: routed.operation.id.to_string(),
            method: req.method().to_string(),
            path: req.uri().path().to_owned(),
            client: req
                .extensions()
                .get::<ClientName>()
                .map(|c| c.0.to_string()),
            resource: req
                .extensions()
                .get::<ParsedBody>()
                .map(|b| ResourceFields::new(&b.0, resource_key.as_deref())),
            resource_key,
            violations: req
                .extensions()
                .get::<Reported>()
                .map(|r| Arc::new(r.audit_value())),
        }
    }

    /// A record of this create with `outcome`.
    pub fn entry(&self, outcome: Outcome) -> Entry {
        Entry {
            request_id: self.request_id.clone(),
            operation_id: Some(self.operation_id.clone()),
            method: Some(self.method.clone()),
            path: Some(self.path.clone()),
            client: self.client.clone(),
            resource: self.resource.clone(),
            violations: self.violations.clone(),
            ..Entry::new(outcome)
        }
    }

    /// The record of how the upstream answered: `status` and, for a 2xx, its `body` (`None`
    /// when it was too large or unreadable to look into).
    pub fn answered(&self, status: u16, body: Option<&[u8]>, latency_ms: f64) -> Entry {
        let success = (200..300).contains(&status);
        let mut entry = self.entry(if success {
            Outcome::Created
        } else {
            Outcome::Rejected
        });
        entry.upstream_status = Some(status);
        entry.latency_ms = Some(latency_ms);
        if success {
            entry.resource_id = body.and_then(|b| resource_id(b, self.resource_key.as_deref()));
        }
        entry
    }

    /// The record of a create the upstream never answered.
    pub fn failed(&self, error: &Error, latency_ms: f64) -> Entry {
        let mut entry = self.entry(Outcome::Failed);
        entry.latency_ms = Some(latency_ms);
        entry.detail = Some(error.kind().to_owned());
        entry
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

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let create = match req.extensions().get::<Routed>() {
            Some(routed) if routed.operation.creates => CreateRequest::of(&req, routed),
            _ => return Box::pin(self.inner.call(req)),
        };
        // The response is read for the new resource's id: ask for it uncompressed.
        req.headers_mut().insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        // The ready inner service serves this request; a fresh clone waits for the next one.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let auditor = self.auditor.clone();
        Box::pin(async move {
            let attempt = before_forwarding(&auditor, &create).await?;
            let forwarded = auditor.spawn_create(forward_and_record(
                inner,
                req,
                auditor.clone(),
                create,
                attempt,
            ));
            forwarded.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "the task forwarding a create ended abnormally");
                Err(Error::UpstreamProtocol(e.into()))
            })
        })
    }
}

/// Forwards a create and records how it ended, whatever becomes of the client meanwhile.
async fn forward_and_record<S>(
    mut inner: S,
    req: Request<Body>,
    auditor: Auditor,
    create: CreateRequest,
    attempt: Option<u64>,
) -> Result<Response<Body>, Error>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    let started = Instant::now();
    let result = inner.call(req).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            // Awaited so the log is complete when the client hears of the failure.
            let mut entry = create.failed(&error, latency_ms);
            entry.attempt = attempt;
            let _ = auditor.append(entry).await;
            return Err(error);
        }
    };
    let status = response.status();
    if !status.is_success() {
        let mut entry = create.answered(status.as_u16(), None, latency_ms);
        entry.attempt = attempt;
        let _ = auditor.append(entry).await;
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let (held, rest) = match hold(body, MAX_CREATE_RESPONSE).await {
        Ok(read) => read,
        Err(e) => {
            // The resource exists upstream: record it, even without its id, before failing.
            let mut entry = create.answered(status.as_u16(), None, latency_ms);
            entry.attempt = attempt;
            record_created(&auditor, &create, entry, status).await?;
            tracing::warn!(error = %Chain(&*e), "upstream create response unreadable");
            return Err(Error::UpstreamProtocol(e));
        }
    };
    let whole = rest.is_none().then_some(&held[..]);
    let mut entry = create.answered(status.as_u16(), whole, latency_ms);
    entry.attempt = attempt;
    // Checked as the body was read to its end, above.
    entry.drift = parts
        .extensions
        .get::<DriftFound>()
        .and_then(DriftFound::audit_value);
    if entry.resource_id.is_none() {
        tracing::warn!(
            request_id = create.request_id.as_deref(),
            upstream_status = status.as_u16(),
            "a create's response names no resource id; recorded without one"
        );
    }
    record_created(&auditor, &create, entry, status).await?;
    let body = match rest {
        None => Body::full(held),
        Some(rest) => Body::new(Prefixed {
            prefix: Some(held),
            rest,
        }),
    };
    Ok(Response::from_parts(parts, body))
}

/// Writes a create's `created` record and waits for its sync; with `audit.on_error = "reject"`
/// a failure withholds the 2xx.
async fn record_created(
    auditor: &Auditor,
    create: &CreateRequest,
    entry: Entry,
    status: StatusCode,
) -> Result<(), Error> {
    if let Err(error) = auditor.append(entry).await {
        tracing::error!(
            error = %error,
            request_id = create.request_id.as_deref(),
            upstream_status = status.as_u16(),
            "a create the upstream accepted could not be audited"
        );
        if auditor.on_error() == OnError::Reject {
            return Err(Error::AuditFailedAfterCreate {
                upstream_status: status,
            });
        }
    }
    Ok(())
}

/// Reads `body` up to `cap` bytes: all of it, or the first part and the rest still to stream.
async fn hold(mut body: Body, cap: usize) -> Result<(Bytes, Option<Body>), BoxError> {
    let mut held = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            held.extend_from_slice(&data);
            if held.len() > cap {
                return Ok((held.freeze(), Some(body)));
            }
        }
    }
    Ok((held.freeze(), None))
}

/// The part of a body already read, then the rest of it.
struct Prefixed {
    prefix: Option<Bytes>,
    rest: Body,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }
}

/// The `attempted` record, and the decision whether the create may go ahead: only once that
/// record is in the file (written; the outcome record's sync makes both durable; synced, while
/// the log is failing), or, with `audit.on_error = "allow"`, with a loud log line when it is
/// not. Returns the attempt's seq, for the outcome record to name.
async fn before_forwarding(
    auditor: &Auditor,
    create: &CreateRequest,
) -> Result<Option<u64>, Error> {
    let attempted = create.entry(Outcome::Attempted);
    // While the log is failing, only a synced record proves it has recovered (a sync can fail
    // where a write succeeded).
    let recorded = if auditor.health().writable() {
        auditor.write(attempted).await
    } else {
        auditor.append(attempted).await
    };
    match recorded {
        Ok(seq) => Ok(Some(seq)),
        Err(_) if auditor.on_error() == OnError::Reject => Err(Error::AuditUnavailable),
        Err(error) => {
            tracing::error!(
                error = %error,
                request_id = create.request_id.as_deref(),
                operation_id = %create.operation_id,
                "forwarding a create the audit log cannot record (audit.on_error = \"allow\")"
            );
            Ok(None)
        }
    }
}
