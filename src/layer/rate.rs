//! Per-client rate limits: a token bucket per configured client that has one. A request over
//! the limit is answered 429 with `Retry-After` (whole seconds until a token is back) and goes
//! no further. Clients without a rate, and requests with no client, pass.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::RefuseOr;
use crate::body::Body;
use crate::client::{Authenticated, Limiter};
use crate::error::Error;

/// Adds [`RateLimit`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RateLimitLayer;

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit { inner }
    }
}

/// Enforces each client's rate limit.
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Error>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = RefuseOr<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let limited = req
            .extensions()
            .get::<Authenticated>()
            .and_then(|client| client.0.limiter())
            .map(Limiter::admit);
        match limited {
            Some(Err(error)) => RefuseOr::refuse(error),
            _ => RefuseOr::inner(self.inner.call(req)),
        }
    }
}
