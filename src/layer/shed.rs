//! Bounds the requests in flight. Past `max`, a request is answered 503 with `Retry-After` at
//! once, before any work is done for it: an overloaded gateway sheds load instead of building
//! an unbounded queue (whose memory, and whose callers' waits, grow without end). A request's
//! slot is held until its response head is ready.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_layer::Layer;
use tower_service::Service;

use super::RefuseOr;
use crate::body::Body;
use crate::error::Error;

/// Adds [`Shed`].
#[derive(Clone, Debug)]
pub struct ShedLayer {
    slots: Arc<Semaphore>,
    max: usize,
}

impl ShedLayer {
    /// Allows `max` requests in flight.
    pub fn new(max: usize) -> Self {
        ShedLayer {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed {
            inner,
            slots: self.slots.clone(),
            max: self.max,
        }
    }
}

/// Sheds requests past the concurrency limit.
#[derive(Clone, Debug)]
pub struct Shed<S> {
    inner: S,
    slots: Arc<Semaphore>,
    max: usize,
}

impl<S, B> Service<Request<B>> for Shed<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Error>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => ResponseFuture {
                inner: RefuseOr::inner(self.inner.call(req)),
                _permit: Some(permit),
            },
            Err(_) => ResponseFuture {
                inner: RefuseOr::refuse(Error::Overloaded { limit: self.max }),
                _permit: None,
            },
        }
    }
}

pin_project! {
    /// Holds the request's slot until the inner service answers.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: RefuseOr<F>,
        _permit: Option<OwnedSemaphorePermit>,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, Error>>,
{
    type Output = Result<Response<Body>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{ServiceExt, service_fn};

    #[tokio::test]
    async fn past_the_limit_requests_are_shed_at_once_and_slots_come_back() {
        let (release, released) = tokio::sync::watch::channel(false);
        let inner = service_fn(move |_req: Request<Body>| {
            let mut released = released.clone();
            async move {
                let _ = released.wait_for(|r| *r).await;
                Ok::<_, Error>(Response::new(Body::empty()))
            }
        });
        let svc = ShedLayer::new(2).layer(inner);
        let first = tokio::spawn(svc.clone().oneshot(Request::new(Body::empty())));
        let second = tokio::spawn(svc.clone().oneshot(Request::new(Body::empty())));
        // Both hold their slots until released, so a third is refused without waiting.
        tokio::task::yield_now().await;
        while svc.slots.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let third = svc.clone().oneshot(Request::new(Body::empty())).await;
        assert!(matches!(third, Err(Error::Overloaded { limit: 2 })));
        release.send(true).unwrap();
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
        assert_eq!(svc.slots.available_permits(), 2);
        svc.oneshot(Request::new(Body::empty())).await.unwrap();
    }
}
