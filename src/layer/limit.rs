//! Bounds the request body. A declared `Content-Length` over the limit is refused with 413
//! before a byte of the body is read; an undeclared (chunked) body is cut off at the limit as
//! it streams, so no layer behind this one can ever hold more than `max` bytes of it.

use std::task::{Context, Poll};

use http::{Request, Response, header};
use http_body_util::{LengthLimitError, Limited};
use tower_layer::Layer;
use tower_service::Service;

use super::RefuseOr;
use crate::body::Body;
use crate::error::Error;

/// Adds [`BodyLimit`].
#[derive(Clone, Copy, Debug)]
pub struct BodyLimitLayer {
    max: u64,
}

impl BodyLimitLayer {
    /// Limits bodies to `max` bytes.
    pub fn new(max: u64) -> Self {
        BodyLimitLayer { max }
    }
}

impl<S> Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyLimit {
            inner,
            max: self.max,
        }
    }
}

/// Enforces the body limit.
#[derive(Clone, Debug)]
pub struct BodyLimit<S> {
    inner: S,
    max: u64,
}

/// The body limit in force, in the request's extensions (for the 413 of a body cut off later).
#[derive(Clone, Copy, Debug)]
pub struct MaxBody(pub u64);

/// Whether a declared length is over the limit. An unparseable length never gets this far:
/// hyper refuses it while reading the request head.
pub fn declared_too_large(req: &Request<Body>, max: u64) -> bool {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len > max)
}

/// Whether a body error is the limit being hit, however deep it is wrapped.
pub fn is_limit_error(error: &(dyn std::error::Error + 'static)) -> bool {
    crate::error::find_cause::<LengthLimitError>(error).is_some()
}

impl<S> Service<Request<Body>> for BodyLimit<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = RefuseOr<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        req.extensions_mut().insert(MaxBody(self.max));
        if declared_too_large(&req, self.max) {
            return RefuseOr::refuse(Error::BodyTooLarge { limit: self.max });
        }
        let req = if http_body::Body::is_end_stream(req.body()) {
            req
        } else {
            let max = usize::try_from(self.max).unwrap_or(usize::MAX);
            req.map(|body| Body::new(Limited::new(body, max)))
        };
        RefuseOr::inner(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::testing::recorder;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_unread() {
        let (seen, inner) = recorder();
        let req = Request::post("/")
            .header(header::CONTENT_LENGTH, "11")
            .body(Body::full("01234567890"))
            .unwrap();
        let error = BodyLimitLayer::new(10)
            .layer(inner)
            .oneshot(req)
            .await
            .unwrap_err();
        assert!(matches!(error, Error::BodyTooLarge { limit: 10 }));
        assert!(seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_undeclared_body_is_cut_off_at_the_limit() {
        let limited = Body::new(Limited::new(Body::full("01234567890"), 10));
        let error = limited.collect().await.unwrap_err();
        assert!(is_limit_error(&*error));
    }

    #[tokio::test]
    async fn bodies_within_the_limit_pass_whole() {
        let (seen, inner) = recorder();
        let req = Request::post("/").body(Body::full("0123456789")).unwrap();
        BodyLimitLayer::new(10)
            .layer(inner)
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(&seen.lock().unwrap()[0].body()[..], b"0123456789");
    }
}
