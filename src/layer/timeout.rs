//! Bounds the time a request takes to arrive and be checked: reading its body and every check
//! before it is forwarded. A request not yet forwarded at the deadline is answered 408 and its
//! connection closed, so a client that trickles its body (slowloris on the body) holds a
//! request slot for a bounded time only.
//!
//! Once a request has been forwarded, this deadline no longer applies: the upstream timeout
//! (504) bounds it instead. Answering 408 ("not forwarded") for a request already in the
//! upstream's hands would be untrue, and would cut a create off from its audit record.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::Error;

/// Put in a request's extensions by this layer; the innermost service marks it when the
/// request is forwarded.
#[derive(Clone, Debug, Default)]
pub struct Forwarding(Arc<AtomicBool>);

impl Forwarding {
    /// Marks the request as forwarded: from now on the upstream timeout bounds it.
    pub fn start(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn started(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

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

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let forwarding = Forwarding::default();
        req.extensions_mut().insert(forwarding.clone());
        ResponseFuture {
            inner: self.inner.call(req),
            sleep: tokio::time::sleep(self.timeout),
            timeout: self.timeout,
            forwarding,
            expired: false,
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
        forwarding: Forwarding,
        expired: bool,
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
        if *this.expired {
            return Poll::Pending;
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) if this.forwarding.started() => {
                // Forwarded already: the upstream's own timeout will end it.
                *this.expired = true;
                Poll::Pending
            }
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
    async fn a_forwarded_request_is_not_cut_off_by_the_deadline() {
        let inner = service_fn(|req: Request<Body>| async move {
            req.extensions().get::<Forwarding>().unwrap().start();
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, Error>(Response::new(Body::from("late but answered")))
        });
        let response = RequestTimeoutLayer::new(Duration::from_secs(5))
            .layer(inner)
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
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
