//! The request path, top to bottom, in one place.
//!
//! ```text
//! client ─▶ request id ─▶ observe ─▶ rescue ─▶ shed ─▶ timeout ─▶ head check ─▶ authenticate
//!        ─▶ rate limit ─▶ body limit ─▶ route ─▶ authorize ─▶ validate ─▶ credential ─▶ audit
//!        ─▶ drift ─▶ upstream metrics ─▶ upstream (or, in mock mode, the spec's examples)
//! ```
//!
//! In a `ServiceBuilder` the first layer added is the outermost: it sees the request first and
//! the response last.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Request, Response, header};
use tower::{Service, ServiceBuilder};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

use crate::audit::Auditor;
use crate::body::Body;
use crate::drift::DriftMonitor;
use crate::layer::audit::AuditLayer;
use crate::layer::auth::{AuthenticateLayer, Clients, X_SPECGATE_KEY};
use crate::layer::authorize::AuthorizeLayer;
use crate::layer::credential::{CredentialLayer, CredentialPlan};
use crate::layer::drift::DriftLayer;
use crate::layer::head::{HeadCheckLayer, HeadLimits};
use crate::layer::limit::BodyLimitLayer;
use crate::layer::observe::ObserveLayer;
use crate::layer::rate::RateLimitLayer;
use crate::layer::request_id::RequestIdLayer;
use crate::layer::rescue::RescueLayer;
use crate::layer::route::RouteLayer;
use crate::layer::shed::ShedLayer;
use crate::layer::timeout::RequestTimeoutLayer;
use crate::layer::upstream_metrics::UpstreamMetricsLayer;
use crate::layer::validate::ValidateLayer;
use crate::metrics::Metrics;
use crate::mock::Mock;
use crate::route::RouteTable;
use crate::scheme::Place;
use crate::spec::Enforce;
use crate::upstream::Upstream;

/// The innermost service: the upstream, or the mock that answers from the spec's examples.
pub type Backend = tower::util::Either<Upstream, Mock>;

/// Everything the stack is built from.
#[derive(Clone, Debug)]
pub struct Parts {
    /// The spec's operations.
    pub routes: Arc<RouteTable>,
    /// How the stored secret goes upstream.
    pub credentials: CredentialPlan,
    /// The audit log.
    pub auditor: Auditor,
    /// Request bodies over this are refused.
    pub max_body_bytes: u64,
    /// The apps allowed to call (none: no client authentication).
    pub clients: Arc<Clients>,
    /// Requests in flight before shedding.
    pub max_concurrent_requests: usize,
    /// Time for a whole request.
    pub request_timeout: Duration,
    /// Limits on the request head.
    pub head_limits: HeadLimits,
    /// Deepest JSON nesting accepted.
    pub max_json_depth: usize,
    /// What happens to a request validation would refuse, where its operation does not say.
    pub enforce: Enforce,
    /// The check of upstream responses against the document; `None` when it is off.
    pub drift: Option<Arc<DriftMonitor>>,
    /// The innermost service.
    pub upstream: Backend,
    /// Where requests are counted.
    pub metrics: Metrics,
}

/// Builds the request path for one listener.
pub fn build<B>(
    parts: Parts,
) -> impl Service<Request<B>, Response = Response<Body>, Error = Infallible, Future = impl Send>
+ Clone
+ Send
+ 'static
where
    B: Into<Body> + Send + 'static,
{
    ServiceBuilder::new()
        // From here on every request is the crate's one body type.
        .map_request(|req: Request<B>| req.map(Into::into))
        // Any credential a client sends prints as `Sensitive` in any Debug output below.
        .layer(SetSensitiveRequestHeadersLayer::new(sensitive_headers(
            &parts.credentials.places,
        )))
        // Outermost of ours: every response, errors included, carries the request id.
        .layer(RequestIdLayer)
        // Counts and logs every answer as the client gets it, refusals included.
        .layer(ObserveLayer::new(parts.metrics.clone()))
        // The one place errors become problem+json; inside the id so the body can name it.
        .layer(RescueLayer)
        // Before any work: past the concurrency limit a request costs one 503, not a queue slot.
        .layer(ShedLayer::new(parts.max_concurrent_requests))
        // Inside the shed, so a request that runs out of time also gives its slot back.
        .layer(RequestTimeoutLayer::new(parts.request_timeout))
        // Cheap checks of the head alone (method, target form, sizes), before anyone parses it.
        .layer(HeadCheckLayer::new(parts.head_limits))
        // Before routing, so a caller without a key learns nothing about the spec (401, not
        // 404/405); strips the client's own credentials whatever the outcome.
        .layer(AuthenticateLayer::new(parts.clients))
        // Needs the client; before the body is read, so a limited client costs nothing more.
        .layer(RateLimitLayer)
        // Bound the body before anything can read it.
        .layer(BodyLimitLayer::new(parts.max_body_bytes))
        // Only spec operations go further (or, when configured, unknown paths marked as such).
        .layer(RouteLayer::new(parts.routes))
        // Needs the operation; before the body is read, so a forbidden call reads nothing.
        .layer(AuthorizeLayer)
        // A bad body stops here, before the token is anywhere near the request.
        // (In report mode it goes on anyway, its refusal logged, counted and audited.)
        .layer(ValidateLayer::new(
            parts.max_json_depth,
            parts.enforce,
            parts.metrics.clone(),
        ))
        // The stored token replaces whatever the client sent.
        .layer(CredentialLayer::new(parts.credentials))
        // Sees exactly what the upstream answered, and holds a create's 2xx until its record
        // is on disk.
        .layer(AuditLayer::new(parts.auditor))
        // Inside the audit, so a create's record can say where its response drifted; tees the
        // body, never holds it.
        .layer(DriftLayer::new(parts.drift))
        // Times the upstream exchange alone and counts its failures by kind.
        .layer(UpstreamMetricsLayer::new(parts.metrics))
        .service(parts.upstream)
}

/// The request headers that can carry a credential: every header a scheme puts one in, and
/// those that carry one whatever the document says.
fn sensitive_headers(places: &[Place]) -> Vec<HeaderName> {
    let mut names = vec![
        header::AUTHORIZATION,
        X_SPECGATE_KEY,
        header::COOKIE,
        header::PROXY_AUTHORIZATION,
    ];
    for place in places {
        if let Place::Header(name) = place
            && !names.contains(name)
        {
            names.push(name.clone());
        }
    }
    names
}
