//! Matches each request to a spec operation and records it in the request's extensions (and
//! in the observe layer's slot, for the access log and metrics).
//! A request that matches none goes no further: 400 for a path that could route around the
//! spec, 404 for an unknown path, 405 (with `Allow`) for a known path and another method.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::RefuseOr;
use super::observe::OperationSlot;
use crate::body::Body;
use crate::error::Error;
use crate::route::{RouteTable, candidates};

/// Adds [`Route`].
#[derive(Clone, Debug)]
pub struct RouteLayer {
    table: Arc<RouteTable>,
}

impl RouteLayer {
    /// Routes with `table`.
    pub fn new(table: Arc<RouteTable>) -> Self {
        RouteLayer { table }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Route {
            inner,
            table: self.table.clone(),
        }
    }
}

/// Routes requests to spec operations.
#[derive(Clone, Debug)]
pub struct Route<S> {
    inner: S,
    table: Arc<RouteTable>,
}

impl<S> Service<Request<Body>> for Route<S>
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
        match self.table.route(req.method(), req.uri().path()) {
            Ok(mut routed) => {
                if routed.candidates.iter().any(|op| op.variant.is_some()) {
                    // Path keys told apart by a `?query` or `#fragment`: which the request can
                    // be (validation picks among what is left).
                    match candidates(&routed.candidates, req.uri().query(), req.headers()) {
                        Ok(chosen) => {
                            routed.operation = chosen[0].clone();
                            routed.candidates = chosen;
                        }
                        Err(error) => return RefuseOr::refuse(error),
                    }
                }
                if routed.candidates.len() == 1
                    && let Some(slot) = req.extensions().get::<OperationSlot>()
                {
                    slot.set(routed.operation.clone());
                }
                req.extensions_mut().insert(routed);
                RefuseOr::inner(self.inner.call(req))
            }
            Err(error) => RefuseOr::refuse(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::testing::recorder;
    use crate::route::Routed;
    use crate::spec::{Spec, SpecSource};
    use http::Method;
    use tower::ServiceExt;

    fn layer() -> RouteLayer {
        let spec = Spec::load(&SpecSource::default()).unwrap();
        RouteLayer::new(Arc::new(RouteTable::new(&spec)))
    }

    #[tokio::test]
    async fn a_routed_request_carries_its_operation() {
        let (seen, inner) = recorder();
        let req = Request::post("/api/3/connections?x=1")
            .body(Body::empty())
            .unwrap();
        layer().layer(inner).oneshot(req).await.unwrap();
        let seen = seen.lock().unwrap();
        let routed = seen[0].extensions().get::<Routed>().unwrap();
        assert_eq!(&*routed.operation.id, "create-connection");
    }

    #[tokio::test]
    async fn an_unrouted_request_never_reaches_the_inner_service() {
        let (seen, inner) = recorder();
        let req = Request::builder()
            .method(Method::DELETE)
            .uri("/connections")
            .body(Body::empty())
            .unwrap();
        let error = layer().layer(inner).oneshot(req).await.unwrap_err();
        assert!(matches!(error, Error::MethodNotAllowed { .. }));
        assert!(seen.lock().unwrap().is_empty());
    }
}
