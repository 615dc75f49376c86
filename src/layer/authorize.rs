//! Which operations a client may call. Sits after routing, since the answer depends on the
//! operation: a configured client calling an operation outside its `allow` list is answered 403
//! and nothing is forwarded. Requests with no authenticated client (no clients configured) pass.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::RefuseOr;
use crate::body::Body;
use crate::client::Authenticated;
use crate::error::Error;
use crate::route::Routed;

/// Adds [`Authorize`].
#[derive(Clone, Copy, Debug, Default)]
pub struct AuthorizeLayer;

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize { inner }
    }
}

/// Checks the client's allow list against the routed operation.
#[derive(Clone, Debug)]
pub struct Authorize<S> {
    inner: S,
}

/// Whether the request's client (if any) may call its routed operation. Where several
/// operations share the path and method, the route keeps those the client may call.
pub fn check<B>(req: &mut Request<B>) -> Result<(), Error> {
    let (Some(Authenticated(client)), Some(routed)) = (
        req.extensions().get::<Authenticated>(),
        req.extensions().get::<Routed>(),
    ) else {
        return Ok(());
    };
    if routed.candidates.len() > 1 && !routed.unspecified {
        if let Some(allowed) = routed.narrowed(|op| client.may_call_id(&op.id)) {
            req.extensions_mut().insert(allowed);
            return Ok(());
        }
    } else if client.may_call(routed) {
        return Ok(());
    }
    Err(Error::Forbidden {
        client: client.name().clone(),
        operation_id: routed.operation.id.to_string(),
    })
}

impl<S, B> Service<Request<B>> for Authorize<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Error>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = RefuseOr<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match check(&mut req) {
            Ok(()) => RefuseOr::inner(self.inner.call(req)),
            Err(error) => RefuseOr::refuse(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Body;
    use crate::client::{Authenticated, Client};
    use crate::config::ClientConfig;
    use crate::route::RouteTable;
    use crate::spec::{Spec, SpecSource};
    use std::sync::Arc;

    fn request(allow: Option<&[&str]>, unspecified: bool) -> Request<Body> {
        let spec = Spec::load(&SpecSource::default()).unwrap();
        let table = RouteTable::new(&spec);
        let mut routed = table
            .route(&http::Method::POST, "/api/3/connections")
            .unwrap();
        routed.unspecified = unspecified;
        let client = Client::new(&ClientConfig {
            name: Arc::from("billing"),
            key_sha256: None,
            allow: allow.map(|a| a.iter().map(|s| s.to_string()).collect()),
            rate: None,
        });
        let mut req = Request::new(Body::empty());
        req.extensions_mut().insert(routed);
        req.extensions_mut().insert(Authenticated(Arc::new(client)));
        req
    }

    #[test]
    fn an_operation_outside_the_allow_list_is_403() {
        assert!(check(&mut request(None, false)).is_ok(), "no list: all");
        assert!(check(&mut request(Some(&["create-connection"]), false)).is_ok());
        let e = check(&mut request(Some(&["list-contacts"]), false)).unwrap_err();
        assert_eq!(e.status(), 403);
        assert_eq!(
            e.to_string(),
            "client \"billing\" may not call operation \"create-connection\""
        );
    }

    #[test]
    fn unknown_routes_need_an_unrestricted_client_or_star() {
        assert!(check(&mut request(None, true)).is_ok());
        assert!(check(&mut request(Some(&["*"]), true)).is_ok());
        assert!(check(&mut request(Some(&["create-connection"]), true)).is_err());
    }

    #[test]
    fn no_client_means_no_check() {
        let mut req = request(Some(&[]), false);
        req.extensions_mut().remove::<Authenticated>();
        assert!(check(&mut req).is_ok());
    }
}
