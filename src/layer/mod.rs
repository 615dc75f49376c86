//! The layers of the request path, one concern each. `stack.rs` puts them in order.

pub mod audit;
pub mod auth;
pub mod authorize;
pub mod credential;
pub mod drift;
pub mod head;
pub mod limit;
pub mod observe;
pub mod rate;
pub mod request_id;
pub mod rescue;
pub mod route;
pub mod shed;
pub mod timeout;
pub mod upstream_metrics;
pub mod validate;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use crate::body::Body;
use crate::error::Error;

/// A boxed response future, for layers that must await something of their own (reading a
/// body, writing an audit record) before or after the inner service.
pub type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Error>> + Send>>;

pin_project! {
    /// The response future of a layer that either refuses a request on the spot or passes it on
    /// untouched: no allocation on either path.
    pub struct RefuseOr<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Refused { error: Option<Error> },
        Inner { #[pin] future: F },
    }
}

impl<F> RefuseOr<F> {
    /// Refuses with `error`.
    pub fn refuse(error: Error) -> Self {
        RefuseOr {
            state: State::Refused { error: Some(error) },
        }
    }

    /// Passes on to `future`.
    pub fn inner(future: F) -> Self {
        RefuseOr {
            state: State::Inner { future },
        }
    }
}

impl<F> Future for RefuseOr<F>
where
    F: Future<Output = Result<Response<Body>, Error>>,
{
    type Output = Result<Response<Body>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Refused { error } => {
                Poll::Ready(Err(error.take().expect("RefuseOr polled after completion")))
            }
            StateProj::Inner { future } => future.poll(cx),
        }
    }
}

/// Test helpers shared by the layers' tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::{Arc, Mutex};

    use http::{Request, Response};
    use tower::{BoxError, service_fn};

    use crate::body::Body;
    use crate::error::Error;

    /// What an inner service saw.
    pub(crate) type Seen = Arc<Mutex<Vec<Request<bytes::Bytes>>>>;

    /// An inner service that records each request (body collected) and answers 200 `ok`.
    pub(crate) fn recorder() -> (
        Seen,
        impl tower::Service<Request<Body>, Response = Response<Body>, Error = Error, Future = impl Send>
        + Clone,
    ) {
        let seen: Seen = Arc::default();
        let log = seen.clone();
        let svc = service_fn(move |req: Request<Body>| {
            let log = log.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = http_body_util::BodyExt::collect(body)
                    .await
                    .map_err(|e: BoxError| Error::BodyRead(e))?
                    .to_bytes();
                log.lock().unwrap().push(Request::from_parts(parts, bytes));
                Ok::<_, Error>(Response::new(Body::from("ok")))
            }
        });
        (seen, svc)
    }
}
