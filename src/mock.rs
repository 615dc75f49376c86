//! Offline mock mode: the innermost service answers each operation with the spec's own example
//! response instead of forwarding it. Everything above it (routing, validation, credential,
//! audit) is the same stack, so an app developer sees exactly the refusals, headers and audit
//! records production gives, without an account, a token or a network.

use std::future::{Ready, ready};
use std::task::{Context, Poll};

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response};
use tower_service::Service;

use crate::body::Body;
use crate::error::Error;
use crate::layer::upstream_metrics::Mocked;
use crate::route::Routed;
use crate::spec::Example;

/// Marks every mocked response, so nobody mistakes one for the real API's.
pub const X_SPECGATE_MOCK: HeaderName = HeaderName::from_static("x-specgate-mock");

/// The response mock mode gives for `example`.
pub fn respond(example: &Example) -> Response<Body> {
    let mut response = Response::new(Body::full(example.body.clone()));
    *response.status_mut() = example.status;
    let headers = response.headers_mut();
    if let Some(media_type) = &example.content_type
        && let Ok(value) = HeaderValue::from_str(media_type)
    {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(X_SPECGATE_MOCK, HeaderValue::from_static("true"));
    response.extensions_mut().insert(Mocked);
    response
}

/// Answers routed requests from the spec's examples.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mock;

impl Service<Request<Body>> for Mock {
    type Response = Response<Body>;
    type Error = Error;
    type Future = Ready<Result<Response<Body>, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let routed = req
            .extensions()
            .get::<Routed>()
            .expect("only routed requests reach the innermost service");
        ready(match &routed.operation.example {
            Some(example) => Ok(respond(example)),
            None => Err(Error::MockNoExample {
                operation_id: routed.operation.id.to_string(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::RouteTable;
    use crate::spec::{Spec, SpecSource};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_routed_create_gets_the_specs_example() {
        let spec = Spec::load(&SpecSource::default()).unwrap();
        let routed = RouteTable::new(&spec)
            .route(&http::Method::POST, "/api/3/connections")
            .unwrap();
        let mut req = Request::post("/api/3/connections")
            .body(Body::empty())
            .unwrap();
        req.extensions_mut().insert(routed);
        let response = Mock.oneshot(req).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()[X_SPECGATE_MOCK], "true");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["connection"]["id"], "1");
    }
}
