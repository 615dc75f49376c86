//! Puts the stored API token on the request, and only the stored one: every copy of the
//! credential header the client sent (any case, any count) is removed first. The value is
//! marked sensitive, so hyper's HPACK never indexes it and `Debug` never prints it.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, HeaderValue, Request};
use tower_layer::Layer;
use tower_service::Service;

use crate::token::TokenStore;

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
    tokens: Arc<TokenStore>,
}

impl CredentialLayer {
    /// Injects the token from `tokens` into the `header` header.
    pub fn new(header: HeaderName, tokens: Arc<TokenStore>) -> Self {
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
    tokens: Arc<TokenStore>,
}

impl<S, B> Service<Request<B>> for Credential<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let token = self.tokens.current();
        inject(
            req.headers_mut(),
            &self.header,
            token.header_value().clone(),
        );
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Body;
    use crate::layer::testing::recorder;
    use tower::ServiceExt;

    #[tokio::test]
    async fn every_client_copy_is_replaced_by_the_stored_token() {
        let (seen, inner) = recorder();
        let tokens = Arc::new(TokenStore::fixed("stored-token").unwrap());
        let svc = CredentialLayer::new(HeaderName::from_static("api-token"), tokens).layer(inner);
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
}
