//! Which operations a client may call. Sits after routing, since the answer depends on the
//! operation: a configured client calling an operation outside its `allow` list is answered 403
//! and nothing is forwarded. Requests with no authenticated client (no clients configured) pass.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::RefuseOr;
use super::observe::OperationSlot;
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

/// Whether the request's client (if any) may call its routed operation. Where the request
/// could still be any of several operations (told apart only by its body, which the upstream
/// reads its own way), the client must be allowed every one of them.
pub fn check<B>(req: &Request<B>) -> Result<(), Error> {
    let (Some(Authenticated(client)), Some(routed)) = (
        req.extensions().get::<Authenticated>(),
        req.extensions().get::<Routed>(),
    ) else {
        return Ok(());
    };
    if !client.may_call(routed) {
        return Err(Error::Forbidden {
            client: client.name().clone(),
            operation_id: routed.operation.id.to_string(),
        });
    }
    match routed
        .candidates
        .iter()
        .find(|op| !client.may_call_id(&op.id))
    {
        Some(op) if !routed.unspecified => {
            // The route left the choice open; the refusal is counted under the one it names.
            if let Some(slot) = req.extensions().get::<OperationSlot>() {
                slot.set(op.clone());
            }
            Err(Error::Forbidden {
                client: client.name().clone(),
                operation_id: op.id.to_string(),
            })
        }
        _ => Ok(()),
    }
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

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match check(&req) {
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
        assert!(check(&request(None, false)).is_ok(), "no list: all");
        assert!(check(&request(Some(&["create-connection"]), false)).is_ok());
        let e = check(&request(Some(&["list-contacts"]), false)).unwrap_err();
        assert_eq!(e.status(), 403);
        assert_eq!(
            e.to_string(),
            "client \"billing\" may not call operation \"create-connection\""
        );
    }

    #[test]
    fn unknown_routes_need_an_unrestricted_client_or_star() {
        assert!(check(&request(None, true)).is_ok());
        assert!(check(&request(Some(&["*"]), true)).is_ok());
        assert!(check(&request(Some(&["create-connection"]), true)).is_err());
    }

    #[test]
    fn no_client_means_no_check() {
        let mut req = request(Some(&[]), false);
        req.extensions_mut().remove::<Authenticated>();
        assert!(check(&req).is_ok());
    }

    #[tokio::test]
    async fn operations_told_apart_by_the_query_are_authorised_and_validated_as_named() {
        use crate::layer::route::RouteLayer;
        use crate::layer::testing::recorder;
        use crate::layer::validate::ValidateLayer;
        use tower::{Layer, ServiceExt};

        let body = |schema: serde_json::Value| serde_json::json!({"required": true, "content": {"application/json": {"schema": schema}}});
        let spec = Spec::compile(
            "t",
            serde_json::json!({"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {
                "/?Action=CreateUser": {"post": {"operationId": "create-user",
                    "requestBody": body(serde_json::json!({"type": "object"}))}},
                "/?Action=DeleteUser": {"post": {"operationId": "delete-user",
                    "requestBody": body(serde_json::json!({"type": "object", "required": ["UserName"]}))}}
            }}),
        )
        .unwrap();
        let send = |uri: &'static str, allow: &'static [&'static str]| {
            let (seen, inner) = recorder();
            let stack = RouteLayer::new(Arc::new(RouteTable::new(&spec)))
                .layer(AuthorizeLayer.layer(ValidateLayer::default().layer(inner)));
            let client = Client::new(&ClientConfig {
                name: Arc::from("c"),
                key_sha256: None,
                allow: Some(allow.iter().map(|s| s.to_string()).collect()),
                rate: None,
            });
            let mut req = Request::post(uri)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from("{}"))
                .unwrap();
            req.extensions_mut().insert(Authenticated(Arc::new(client)));
            async move { (stack.oneshot(req).await, seen) }
        };
        // The body would fit create-user, but the request names delete-user: never create-user.
        let (result, seen) = send("/?Action=DeleteUser", &["create-user"]).await;
        assert_eq!(result.unwrap_err().status(), 403);
        assert!(seen.lock().unwrap().is_empty());
        let (result, _) = send("/?Action=DeleteUser", &["delete-user"]).await;
        assert_eq!(result.unwrap_err().status(), 422, "checked as delete-user");
        let (result, seen) = send("/?Action=CreateUser", &["create-user"]).await;
        assert!(result.is_ok());
        let seen = seen.lock().unwrap();
        assert_eq!(
            &*seen[0].extensions().get::<Routed>().unwrap().operation.id,
            "create-user"
        );
    }
}
