//! The request path, top to bottom, in one place.
//!
//! ```text
//! client ─▶ request id ─▶ rescue ─▶ body limit ─▶ route ─▶ validate ─▶ credential ─▶ audit ─▶ upstream
//! ```
//!
//! In a `ServiceBuilder` the first layer added is the outermost: it sees the request first and
//! the response last.

use std::convert::Infallible;
use std::sync::Arc;

use http::{HeaderName, Request, Response, header};
use tower::{Service, ServiceBuilder};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

use crate::audit::Auditor;
use crate::body::Body;
use crate::layer::audit::AuditLayer;
use crate::layer::credential::CredentialLayer;
use crate::layer::limit::BodyLimitLayer;
use crate::layer::request_id::RequestIdLayer;
use crate::layer::rescue::RescueLayer;
use crate::layer::route::RouteLayer;
use crate::layer::validate::ValidateLayer;
use crate::route::RouteTable;
use crate::token::TokenStore;
use crate::upstream::Upstream;

/// Everything the stack is built from.
#[derive(Clone, Debug)]
pub struct Parts {
    /// The spec's operations.
    pub routes: Arc<RouteTable>,
    /// The header the token goes in.
    pub credential_header: HeaderName,
    /// The token.
    pub tokens: Arc<TokenStore>,
    /// The audit log.
    pub auditor: Auditor,
    /// Request bodies over this are refused.
    pub max_body_bytes: u64,
    /// The innermost service.
    pub upstream: Upstream,
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
        .layer(SetSensitiveRequestHeadersLayer::new([
            parts.credential_header.clone(),
            header::AUTHORIZATION,
            header::COOKIE,
            header::PROXY_AUTHORIZATION,
        ]))
        // Outermost of ours: every response, errors included, carries the request id.
        .layer(RequestIdLayer)
        // The one place errors become problem+json; inside the id so the body can name it.
        .layer(RescueLayer)
        // Bound the body before anything can read it.
        .layer(BodyLimitLayer::new(parts.max_body_bytes))
        // Only spec operations go further.
        .layer(RouteLayer::new(parts.routes))
        // A bad body stops here, before the token is anywhere near the request.
        .layer(ValidateLayer::default())
        // The stored token replaces whatever the client sent.
        .layer(CredentialLayer::new(parts.credential_header, parts.tokens))
        // Innermost: sees exactly what the upstream answered, and holds a create's 2xx until
        // its record is on disk.
        .layer(AuditLayer::new(parts.auditor))
        .service(parts.upstream)
}
