//! Gives every request an id: the client's `x-request-id` when it is a sane one, else a new
//! UUIDv7. The id is set on the request (so it travels upstream), stored in its extensions (so
//! errors, logs and the audit record carry it) and echoed on the response.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// The request id header.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-sent id that is honoured.
const MAX_LEN: usize = 128;

/// A request's id, in its extensions.
#[derive(Clone, Debug)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        self.0.to_str().expect("ids are checked or generated ASCII")
    }
}

/// The id for a request with these headers: the client's own if it is 1 to 128 visible ASCII
/// characters (it reaches logs and the audit log, so nothing else is trusted), else a UUIDv7.
pub fn choose(headers: &HeaderMap) -> HeaderValue {
    let mut values = headers.get_all(X_REQUEST_ID).iter();
    match (values.next(), values.next()) {
        (Some(id), None)
            if !id.is_empty()
                && id.len() <= MAX_LEN
                && id.as_bytes().iter().all(|b| b.is_ascii_graphic()) =>
        {
            id.clone()
        }
        _ => {
            // No shared counter (a lock both cores take) and a thread-local RNG (no getrandom
            // syscall per request): ids need to be unique and time-ordered to the millisecond,
            // not monotonic within it.
            let id = uuid::Uuid::new_v7(uuid::Timestamp::now(uuid::NoContext));
            let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
            HeaderValue::from_bytes(id.hyphenated().encode_lower(&mut text).as_bytes())
                .expect("a uuid is a valid header value")
        }
    }
}

/// Adds [`SetRequestId`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = SetRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetRequestId { inner }
    }
}

/// Sets and echoes the request id.
#[derive(Clone, Debug)]
pub struct SetRequestId<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for SetRequestId<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = choose(req.headers());
        req.headers_mut().insert(X_REQUEST_ID, id.clone());
        req.extensions_mut().insert(RequestId(id.clone()));
        ResponseFuture {
            future: self.inner.call(req),
            id: Some(id),
        }
    }
}

pin_project! {
    /// Echoes the id on the response.
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        id: Option<HeaderValue>,
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<R>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.future.poll(cx))?;
        if let Some(id) = this.id.take() {
            response.headers_mut().insert(X_REQUEST_ID, id);
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Body;
    use crate::layer::testing::recorder;
    use tower::ServiceExt;

    #[test]
    fn a_sane_client_id_is_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(choose(&headers), "abc-123");
    }

    #[test]
    fn odd_or_repeated_client_ids_are_replaced() {
        let long = "a".repeat(MAX_LEN + 1);
        for bad in ["", "has space", long.as_str()] {
            let mut headers = HeaderMap::new();
            headers.insert(X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            assert_ne!(choose(&headers), bad);
        }
        let mut headers = HeaderMap::new();
        headers.append(X_REQUEST_ID, HeaderValue::from_static("a"));
        headers.append(X_REQUEST_ID, HeaderValue::from_static("b"));
        let id = choose(&headers);
        assert_eq!(
            uuid::Uuid::parse_str(id.to_str().unwrap())
                .unwrap()
                .get_version_num(),
            7
        );
    }

    #[tokio::test]
    async fn the_id_goes_upstream_and_comes_back() {
        let (seen, inner) = recorder();
        let response = RequestIdLayer
            .layer(inner)
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        let sent = seen.lock().unwrap()[0].headers()[X_REQUEST_ID].clone();
        assert_eq!(response.headers()[X_REQUEST_ID], sent);
        assert_eq!(
            seen.lock().unwrap()[0]
                .extensions()
                .get::<RequestId>()
                .unwrap()
                .as_str(),
            sent
        );
    }
}
