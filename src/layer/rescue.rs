//! The one place an [`Error`] becomes a response: problem+json (or the same body as
//! `application/json` for a client that accepts only that), with the request id, and a log
//! line. Everything inside this layer refuses by returning `Err`; nothing outside it sees an
//! error.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::auth::{ClientName, ClientSlot};
use super::request_id::RequestId;
use crate::body::Body;
use crate::error::{Chain, Error, error_media_type};

/// Adds [`Rescue`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RescueLayer;

impl<S> Layer<S> for RescueLayer {
    type Service = Rescue<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Rescue { inner }
    }
}

/// Renders errors from the inner service as problem+json responses.
#[derive(Clone, Debug)]
pub struct Rescue<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for Rescue<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Error>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The inner services of this crate are always ready; one that fails readiness has no
        // request to answer, so the error can only be logged.
        match self.inner.poll_ready(cx) {
            Poll::Ready(Err(error)) => {
                tracing::error!(error = %Chain(&error), "service not ready");
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = req.extensions().get::<RequestId>().cloned();
        let media_type = error_media_type(req.headers().get(http::header::ACCEPT));
        // The authenticate layer, further in, leaves the client's name here (in the slot the
        // observe layer put outside, if it is there).
        let client = match req.extensions().get::<ClientSlot>() {
            Some(slot) => slot.clone(),
            None => {
                let slot = ClientSlot::default();
                req.extensions_mut().insert(slot.clone());
                slot
            }
        };
        ResponseFuture {
            future: self.inner.call(req),
            id,
            client,
            media_type,
        }
    }
}

pin_project! {
    /// Turns the inner error into a response.
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        id: Option<RequestId>,
        client: ClientSlot,
        // What an error body is sent as, by the request's Accept.
        media_type: &'static str,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, Error>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.future.poll(cx));
        let client = this.client.get().cloned();
        let mut response = match result {
            Ok(response) => response,
            Err(error) => {
                let id = this.id.as_ref().map(RequestId::as_str);
                log(&error, id, client.as_ref());
                let mut response = error.to_response(id, this.media_type);
                response.extensions_mut().insert(ErrorKind(error.kind()));
                response
            }
        };
        if let Some(client) = client {
            response.extensions_mut().insert(client);
        }
        Poll::Ready(Ok(response))
    }
}

/// Marks a response as one specgate produced for an error (for the access log and metrics).
#[derive(Clone, Copy, Debug)]
pub struct ErrorKind(pub &'static str);

fn log(error: &Error, request_id: Option<&str>, client: Option<&ClientName>) {
    let status = error.status().as_u16();
    let kind = error.kind();
    let client = client.map(|c| &*c.0);
    if error.status().is_server_error() {
        tracing::warn!(request_id, client, status, kind, error = %Chain(error), "request failed");
    } else {
        tracing::debug!(request_id, client, status, kind, error = %error, "request refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use tower::{ServiceExt, service_fn};

    #[tokio::test]
    async fn errors_become_problem_responses_with_the_request_id() {
        let inner = service_fn(|_req: Request<Body>| async {
            Err::<Response<Body>, _>(Error::RouteNotFound)
        });
        let stack = super::super::request_id::RequestIdLayer.layer(RescueLayer.layer(inner));
        let mut req = Request::new(Body::empty());
        req.headers_mut()
            .insert("x-request-id", "rid-7".parse().unwrap());
        let response = stack.oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()["x-request-id"], "rid-7");
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["request_id"], "rid-7");
    }
}
