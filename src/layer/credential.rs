//! Puts the stored API token on the request, and only the stored one: every copy of the
//! credential header the client sent (any case, any count) is removed first. The value is
//! marked sensitive, so hyper's HPACK never indexes it and `Debug` never prints it. With no
//! token loaded the request is refused (503) rather than forwarded without one; in mock mode
//! nothing is forwarded, so the client's copies are dropped and nothing is added.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::RefuseOr;
use crate::body::Body;
use crate::error::Error;
use crate::token::TokenStore;

/// Where the token comes from.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// The stored token.
    Token(Arc<TokenStore>),
    /// None could be loaded: requests are refused until a reload loads one.
    Missing,
    /// Mock mode: nothing is forwarded, so no token is needed.
    NotNeeded,
}

/// Replaces any client-sent credential with `value`.
pub fn inject(headers: &mut HeaderMap, name: &HeaderName, value: HeaderValue) {
    // `insert` removes every existing value of the header before adding the new one; header
    // names are case-insensitive, so `API-TOKEN` and `api-token` are the same entry.
    headers.insert(name.clone(), value);
}

/// Adds [`Credential`].
#[derive(Clone, Debug)]
pub struct CredentialLayer {
    header: HeaderName,
    tokens: Credentials,
}

impl CredentialLayer {
    /// Injects the token from `tokens` into the `header` header.
    pub fn new(header: HeaderName, tokens: Credentials) -> Self {
        CredentialLayer { header, tokens }
    }
}

impl<S> Layer<S> for CredentialLayer {
    type Service = Credential<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Credential {
            inner,
            header: self.header.clone(),
            tokens: self.tokens.clone(),
        }
    }
}

/// Injects the API token.
#[derive(Clone, Debug)]
pub struct Credential<S> {
    inner: S,
    header: HeaderName,
    tokens: Credentials,
}

impl<S> Service<Request<Body>> for Credential<S>
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
        match &self.tokens {
            Credentials::Token(tokens) => {
                let token = tokens.current();
                inject(
                    req.headers_mut(),
                    &self.header,
                    token.header_value().clone(),
                );
            }
            Credentials::Missing => return RefuseOr::refuse(Error::TokenUnavailable),
            Credentials::NotNeeded => {
                req.headers_mut().remove(&self.header);
            }
        }
        RefuseOr::inner(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::testing::recorder;
    use tower::ServiceExt;

    #[tokio::test]
    async fn every_client_copy_is_replaced_by_the_stored_token() {
        let (seen, inner) = recorder();
        let tokens = Arc::new(TokenStore::fixed("stored-token").unwrap());
        let svc = CredentialLayer::new(
            HeaderName::from_static("api-token"),
            Credentials::Token(tokens),
        )
        .layer(inner);
        let req = Request::post("/")
            .header("Api-Token", "client-1")
            .header("API-TOKEN", "client-2")
            .header("api-token", "client-3")
            .body(Body::empty())
            .unwrap();
        svc.oneshot(req).await.unwrap();
        let seen = seen.lock().unwrap();
        let values: Vec<_> = seen[0].headers().get_all("api-token").iter().collect();
        assert_eq!(values, ["stored-token"]);
        assert!(values[0].is_sensitive());
    }

    #[tokio::test]
    async fn without_a_token_nothing_is_forwarded_and_mock_mode_drops_client_copies() {
        let (seen, inner) = recorder();
        let header = HeaderName::from_static("api-token");
        let req = || {
            Request::post("/")
                .header("Api-Token", "client-1")
                .body(Body::empty())
                .unwrap()
        };
        let error = CredentialLayer::new(header.clone(), Credentials::Missing)
            .layer(inner.clone())
            .oneshot(req())
            .await
            .unwrap_err();
        assert!(matches!(error, Error::TokenUnavailable));
        assert!(seen.lock().unwrap().is_empty());
        CredentialLayer::new(header, Credentials::NotNeeded)
            .layer(inner)
            .oneshot(req())
            .await
            .unwrap();
        assert!(!seen.lock().unwrap()[0].headers().contains_key("api-token"));
    }
}
