//! Bounds the time of a whole request: reading its body, checking it, and the upstream's
//! response head. A request still unanswered at the deadline is answered 408 and its
//! connection closed, so a client that trickles its body (slowloris on the body) holds a
//! request slot for a bounded time only.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::Error;

/// Adds [`RequestTimeout`].
#[derive(Clone, Copy, Debug)]
pub struct RequestTimeoutLayer {
    timeout: Duration,
}

impl RequestTimeoutLayer {
    /// Gives each request `timeout`.
    pub fn new(timeout: Duration) -> Self {
        RequestTimeoutLayer { timeout }
    }
}

impl<S> Layer<S> for RequestTimeoutLayer {
    type Service = RequestTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestTimeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// Times out whole requests.
#[derive(Clone, Debug)]
pub struct RequestTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S, B> Service<Request<B>> for RequestTimeout<S>
where
    S: Service<Request<B>, Error = Error>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(req),
            sleep: tokio::time::sleep(self.timeout),
            timeout: self.timeout,
        }
    }
}

pin_project! {
    /// The inner response, or 408 at the deadline.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
        timeout: Duration,
    }
}

impl<F, R> Future for ResponseFuture<F>
where
    F: Future<Output = Result<R, Error>>,
{
    type Output = Result<R, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result);
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Error::RequestTimeout {
                timeout_ms: this.timeout.as_millis() as u64,
            })),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Body;
    use http::Response;
    use tower::{ServiceExt, service_fn};

    #[tokio::test(start_paused = true)]
    async fn a_request_past_its_deadline_is_408() {
        let inner = service_fn(|_req: Request<Body>| async {
            std::future::pending::<()>().await;
            Ok::<Response<Body>, Error>(Response::new(Body::empty()))
        });
        let result = RequestTimeoutLayer::new(Duration::from_secs(5))
            .layer(inner)
            .oneshot(Request::new(Body::empty()))
            .await;
        let Err(error) = result else { panic!() };
        assert_eq!(error.status(), 408);
    }

    #[tokio::test(start_paused = true)]
    async fn a_prompt_request_is_untouched() {
        let inner = service_fn(|_req: Request<Body>| async {
            Ok::<_, Error>(Response::new(Body::from("ok")))
        });
        let response = RequestTimeoutLayer::new(Duration::from_secs(5))
            .layer(inner)
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}
