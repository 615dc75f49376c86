//! Puts the stored credential on the request, and only the stored one.
//!
//! Every copy of a credential the client sent is removed first, wherever any scheme of the
//! document (or the configured one) would carry it: a header in any case or count, a query
//! parameter, a cookie. Then the operation's scheme (from its `security`, or the document's;
//! the `credential` setting replaces it) gets the stored secret: an `apiKey` as it is, `http`
//! `bearer` as `Bearer <secret>`, `basic` as `Basic <base64 of user:password>`, OAuth2 client
//! credentials as an access token fetched with the secret. An operation with `security: []`
//! gets nothing. Values are marked sensitive, so hyper's HPACK never indexes them and `Debug`
//! never prints them.
//!
//! With no secret loaded, a request that needs one is refused (503) rather than forwarded
//! without it; in mock mode nothing is forwarded, so nothing is added. A request sent with an
//! OAuth2 access token that the upstream answers 401 is sent once more with a new token when
//! its body is still held (one that was validated is); a streamed body cannot be sent twice.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use super::{BoxFuture, RefuseOr};
use crate::body::Body;
use crate::error::Error;
use crate::metrics::{Metrics, UNMATCHED};
use crate::oauth2::TokenCache;
use crate::route::Routed;
use crate::scheme::{CREDENTIAL_QUERY_NAMES, Place, Scheme, choose, inject, strip};
use crate::spec::{Location, Operation};
use crate::token::{Token, TokenStore};

/// Where the secret comes from.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// The stored secret.
    Token(Arc<TokenStore>),
    /// None could be loaded: requests that need one are refused until a reload loads one.
    Missing,
    /// Mock mode: nothing is forwarded, so no secret is needed.
    NotNeeded,
}

/// How credentials are handled, the same for every request.
#[derive(Clone, Debug)]
pub struct CredentialPlan {
    /// Every place a client's copy of a credential is removed from.
    pub places: Arc<[Place]>,
    /// The scheme every operation that takes a credential gets instead of the document's.
    pub configured: Option<Arc<Scheme>>,
    /// Where OAuth2 access tokens are fetched instead of the scheme's `tokenUrl`.
    pub token_url: Option<Arc<str>>,
    /// The secret.
    pub tokens: Credentials,
    /// Fetches and caches OAuth2 access tokens (absent in mock mode).
    pub oauth2: Option<Arc<TokenCache>>,
    /// Counts credential-looking query parameters removed.
    pub metrics: Option<Metrics>,
}

/// The scheme a request goes with, for an operation whose alternatives are `own` (`None` when
/// it takes no credential, empty when it takes one specgate cannot fill by itself): the
/// configured one if set, else the first its secret fits.
pub fn scheme_for<'a>(
    own: Option<&'a [Scheme]>,
    configured: Option<&'a Scheme>,
    secret_is_pair: bool,
) -> Option<&'a Scheme> {
    own.and_then(|own| configured.or_else(|| choose(own, secret_is_pair)))
}

/// Where and with which scopes an OAuth2 access token for `scheme` is fetched: the configured
/// token URL first; the scopes of the operation's own OAuth2 alternative, if it has one.
pub fn oauth2_target<'a>(
    scheme: &'a Scheme,
    own: &'a [Scheme],
    token_url: Option<&'a str>,
) -> Option<(&'a str, &'a [String])> {
    let Scheme::OAuth2 {
        token_url: url,
        scopes,
    } = scheme
    else {
        return None;
    };
    let scopes = own
        .iter()
        .find_map(|s| match s {
            Scheme::OAuth2 { scopes, .. } => Some(scopes),
            _ => None,
        })
        .unwrap_or(scopes);
    Some((token_url.unwrap_or(url), scopes))
}

/// Whether a query parameter named `name` looks like a credential a client should not be
/// sending: one of [`CREDENTIAL_QUERY_NAMES`] in any case, also as PHP reads names
/// (ActiveCampaign's v1 API did: `api.key`, `api key` and `api_key[]` are `api_key`), unless
/// `operation` declares a query parameter of exactly that name as its own (an overlay can
/// declare one to keep it). Validation reads declared names by exact case, so only the exact
/// name is exempt.
pub fn credential_looking(name: &str, operation: Option<&Operation>) -> bool {
    CREDENTIAL_QUERY_NAMES.iter().any(|n| php_reads_as(name, n))
        && !operation.is_some_and(|op| {
            op.parameters
                .iter()
                .any(|p| p.location == Location::Query && p.name == name)
        })
}

/// The name a removed query parameter is reported by: the [`CREDENTIAL_QUERY_NAMES`] entry it
/// is read as, else its own (lower-cased) name, a scheme's. Never the client's spelling, which
/// would make the metric's labels as many as the names clients can invent.
fn reported(name: &str) -> &str {
    CREDENTIAL_QUERY_NAMES
        .iter()
        .find(|n| php_reads_as(name, n))
        .copied()
        .unwrap_or(name)
}

/// Whether PHP reads the query parameter name `name` as `wanted` (lower case, with `_`):
/// case aside, `.` and ` ` are `_`, and a trailing `[]` makes an array of the same name. Runs
/// for every query parameter of every request, so it allocates nothing.
fn php_reads_as(name: &str, wanted: &str) -> bool {
    let name = name.trim_end_matches("[]");
    name.len() == wanted.len()
        && name.bytes().zip(wanted.bytes()).all(|(got, want)| {
            let got = match got {
                b'.' | b' ' => b'_',
                other => other.to_ascii_lowercase(),
            };
            got == want
        })
}

/// When a removed query credential was last logged (Unix seconds): a client that sends one on
/// every request gets one warning a second, and the metric counts every one.
static LAST_QUERY_WARNING: AtomicU64 = AtomicU64::new(0);

/// Adds [`Credential`].
#[derive(Clone, Debug)]
pub struct CredentialLayer {
    plan: Arc<CredentialPlan>,
}

impl CredentialLayer {
    /// Handles credentials as `plan` says.
    pub fn new(plan: CredentialPlan) -> Self {
        CredentialLayer {
            plan: Arc::new(plan),
        }
    }
}

impl<S> Layer<S> for CredentialLayer {
    type Service = Credential<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Credential {
            inner,
            plan: self.plan.clone(),
        }
    }
}

/// Replaces the client's credentials with the stored one.
#[derive(Clone, Debug)]
pub struct Credential<S> {
    inner: S,
    plan: Arc<CredentialPlan>,
}

impl<S> Service<Request<Body>> for Credential<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let operation = parts
            .extensions
            .get::<Routed>()
            .map(|routed| routed.operation.clone());
        let stripped = strip(&self.plan.places, &mut parts.headers, &parts.uri, |name| {
            credential_looking(name, operation.as_deref())
        });
        if let Some(uri) = stripped.uri {
            parts.uri = uri;
        }
        if !stripped.query.is_empty() {
            let mut names: Vec<&str> = stripped.query.iter().map(|n| reported(n)).collect();
            names.sort_unstable();
            names.dedup();
            let id = operation.as_ref().map_or(UNMATCHED, |op| &*op.id);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if LAST_QUERY_WARNING.swap(now, Ordering::Relaxed) != now {
                // The names only: a value could be a real key.
                tracing::warn!(
                    operation = id,
                    parameters = ?names,
                    "removed credential-looking query parameters the client sent; the stored \
                     credential is the only one forwarded"
                );
            }
            if let (Some(metrics), Some(op)) = (&self.plan.metrics, &operation) {
                for name in &names {
                    metrics.query_credential_removed(&op.id, name);
                }
            }
        }
        let own = operation.and_then(|operation| operation.credential.clone());
        let configured = self.plan.configured.as_deref();
        let Some(own) = own.filter(|own| !own.is_empty() || configured.is_some()) else {
            // The operation takes no credential, or none specgate can fill.
            let req = Request::from_parts(parts, body);
            return ResponseFuture::direct(RefuseOr::inner(self.inner.call(req)));
        };
        let token = match &self.plan.tokens {
            Credentials::Token(store) => store.current(),
            Credentials::Missing => {
                return ResponseFuture::direct(RefuseOr::refuse(Error::TokenUnavailable));
            }
            Credentials::NotNeeded => {
                let req = Request::from_parts(parts, body);
                return ResponseFuture::direct(RefuseOr::inner(self.inner.call(req)));
            }
        };
        let scheme = scheme_for(Some(&own), configured, token.basic().is_some())
            .expect("an operation with alternatives, or a configured scheme");
        let value = match scheme {
            Scheme::Header(_) | Scheme::Query(_) | Scheme::Cookie(_) => token.header_value(),
            Scheme::Bearer => token.bearer(),
            Scheme::Basic => match token.basic() {
                Some(basic) => basic,
                None => {
                    return ResponseFuture::direct(RefuseOr::refuse(Error::TokenUnusable(
                        "http basic needs the stored secret to be user:password",
                    )));
                }
            },
            Scheme::OAuth2 { .. } => {
                let (url, scopes) = oauth2_target(scheme, &own, self.plan.token_url.as_deref())
                    .expect("an OAuth2 scheme has a target");
                let fetch = OAuth2Request {
                    cache: self.plan.oauth2.clone(),
                    url: url.to_owned(),
                    scopes: scopes.to_vec(),
                    token,
                };
                // The ready inner service serves this request; a fresh clone waits for the next.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let req = Request::from_parts(parts, body);
                return ResponseFuture::fetching(Box::pin(fetch.send(inner, req)));
            }
        };
        if let Some(uri) = inject(scheme, value, &mut parts.headers, &parts.uri) {
            parts.uri = uri;
        }
        let req = Request::from_parts(parts, body);
        ResponseFuture::direct(RefuseOr::inner(self.inner.call(req)))
    }
}

/// A request that goes with an OAuth2 access token.
struct OAuth2Request {
    cache: Option<Arc<TokenCache>>,
    url: String,
    scopes: Vec<String>,
    token: Arc<Token>,
}

impl OAuth2Request {
    async fn send<S>(self, mut inner: S, mut req: Request<Body>) -> Result<Response<Body>, Error>
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
    {
        let cache = self.cache.ok_or_else(|| {
            Error::TokenEndpoint("no client to fetch OAuth2 tokens with in this mode".to_owned())
        })?;
        let access = cache.get(&self.url, &self.scopes, &self.token).await?;
        // What a second attempt needs, taken before the body is sent.
        let again = Body::copy_if_replayable(&req);
        req.headers_mut()
            .insert(AUTHORIZATION, access.authorization().clone());
        let response = inner.ready().await?.call(req).await?;
        let Some(mut again) = again.filter(|_| response.status() == StatusCode::UNAUTHORIZED)
        else {
            return Ok(response);
        };
        // The token was revoked or expired early: one new token, one more attempt.
        drop(response);
        let access = cache
            .replace(&self.url, &self.scopes, &self.token, &access)
            .await?;
        again
            .headers_mut()
            .insert(AUTHORIZATION, access.authorization().clone());
        inner.ready().await?.call(again).await
    }
}

pin_project! {
    /// [`Credential`]'s response future: the inner service's, unboxed, unless an OAuth2 token
    /// has to be awaited first.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Direct { #[pin] future: RefuseOr<F> },
        Fetching { future: BoxFuture },
    }
}

impl<F> ResponseFuture<F> {
    fn direct(future: RefuseOr<F>) -> Self {
        ResponseFuture {
            kind: Kind::Direct { future },
        }
    }

    fn fetching(future: BoxFuture) -> Self {
        ResponseFuture {
            kind: Kind::Fetching { future },
        }
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, Error>>,
{
    type Output = Result<Response<Body>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Direct { future } => future.poll(cx),
            KindProj::Fetching { future } => future.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::testing::recorder;
    use crate::route::RouteTable;
    use crate::spec::Spec;
    use http::{HeaderName, Method};
    use serde_json::{Value, json};

    /// A document with one operation per kind of requirement.
    fn spec() -> Spec {
        let ok = json!({"200": {"description": "ok"}});
        let get = |security: Value| match security {
            Value::Null => json!({"get": {"responses": ok}}),
            security => json!({"get": {"security": security, "responses": ok}}),
        };
        Spec::compile(
            "t",
            json!({
                "openapi": "3.0.3",
                "security": [{"key": []}],
                "components": {"securitySchemes": {
                    "key": {"type": "apiKey", "in": "header", "name": "X-Key"},
                    "token": {"type": "http", "scheme": "bearer"},
                    "login": {"type": "http", "scheme": "basic"},
                    "q": {"type": "apiKey", "in": "query", "name": "api_key"},
                    "c": {"type": "apiKey", "in": "cookie", "name": "session"},
                    "dig": {"type": "http", "scheme": "digest"}
                }},
                "paths": {
                    "/key": get(Value::Null),
                    "/bearer": get(json!([{"token": []}])),
                    "/basic": get(json!([{"login": []}])),
                    "/query": get(json!([{"q": []}])),
                    "/cookie": get(json!([{"c": []}])),
                    "/public": get(json!([])),
                    "/either": get(json!([{"login": []}, {"token": []}])),
                    "/digest": get(json!([{"dig": []}])),
                    "/declares-token": {"get": {"responses": ok, "parameters": [
                        {"name": "token", "in": "query", "schema": {"type": "string"}}
                    ]}}
                }
            }),
        )
        .unwrap()
    }

    /// A request for `target`, routed as the route layer would.
    fn routed(spec: &Spec, target: &str, req: http::request::Builder) -> Request<Body> {
        let mut req = req.uri(target).body(Body::empty()).unwrap();
        let routed = RouteTable::new(spec)
            .route(&Method::GET, req.uri().path())
            .unwrap();
        req.extensions_mut().insert(routed);
        req
    }

    fn plan(spec: &Spec, tokens: Credentials, configured: Option<Scheme>) -> CredentialPlan {
        CredentialPlan {
            places: spec.credential_places.clone().into(),
            configured: configured.map(Arc::new),
            token_url: None,
            tokens,
            oauth2: None,
            metrics: None,
        }
    }

    fn stored(secret: &str) -> Credentials {
        Credentials::Token(Arc::new(TokenStore::fixed(secret).unwrap()))
    }

    /// What the upstream saw of a request for `target` carrying the client's own credentials
    /// everywhere a scheme could put one, with the secret `secret`.
    async fn forwarded(
        target: &str,
        secret: &str,
        configured: Option<Scheme>,
    ) -> Request<bytes::Bytes> {
        let spec = spec();
        let req = routed(
            &spec,
            target,
            Request::get("/")
                .header("X-KEY", "client-1")
                .header("x-key", "client-2")
                .header("Authorization", "Bearer client-3")
                .header("Cookie", "theme=dark; SESSION=client-4"),
        );
        let (seen, inner) = recorder();
        let plan = plan(&spec, stored(secret), configured);
        CredentialLayer::new(plan)
            .layer(inner)
            .oneshot(req)
            .await
            .unwrap();
        seen.lock().unwrap().pop().unwrap()
    }

    #[tokio::test]
    async fn credential_looking_query_parameters_go_unless_the_operation_declares_them() {
        let metrics = Metrics::new();
        let spec = spec();
        let send = |target: &'static str| {
            let spec = &spec;
            let metrics = metrics.clone();
            async move {
                let (seen, inner) = recorder();
                let mut plan = plan(spec, stored("stored"), None);
                plan.metrics = Some(metrics);
                let req = routed(spec, target, Request::get("/"));
                CredentialLayer::new(plan)
                    .layer(inner)
                    .oneshot(req)
                    .await
                    .unwrap();
                let seen = seen.lock().unwrap().pop().unwrap();
                seen.uri().to_string()
            }
        };
        assert_eq!(
            send("/key?page=2&API_KEY=old&access_token=a&Token=t&apikey=k&tokens=1").await,
            "/key?page=2&tokens=1"
        );
        assert_eq!(
            send("/declares-token?token=t&api_key=old&TOKEN=k").await,
            "/declares-token?token=t",
            "a declared parameter is the operation's own, by its exact name"
        );
        assert_eq!(
            send("/key?api.key=1&api%20key=2&api_key%5B%5D=3&page=1").await,
            "/key?page=1",
            "as PHP reads names"
        );
        let rendered = metrics.render();
        for line in [
            r#"specgate_query_credentials_removed_total{operation="GET /key",parameter="api_key"} 2"#,
            r#"specgate_query_credentials_removed_total{operation="GET /key",parameter="token"} 1"#,
            r#"specgate_query_credentials_removed_total{operation="GET /declares-token",parameter="api_key"} 1"#,
            r#"specgate_query_credentials_removed_total{operation="GET /declares-token",parameter="token"} 1"#,
        ] {
            assert!(rendered.contains(line), "{line}\n{rendered}");
        }
        assert!(!rendered.contains("old"), "never a value");
        assert!(
            !rendered.contains("api.key") && !rendered.contains("api_key[]"),
            "labels are the canonical names, not the client's spellings: {rendered}"
        );
    }

    #[test]
    fn every_place_a_scheme_of_the_document_uses_is_stripped() {
        let places = spec().credential_places;
        assert_eq!(
            places.len(),
            4,
            "bearer and basic share Authorization: {places:?}"
        );
        for place in [
            Place::Header(HeaderName::from_static("x-key")),
            Place::Header(AUTHORIZATION),
            Place::Query("api_key".into()),
            Place::Cookie("session".into()),
        ] {
            assert!(places.contains(&place), "{place:?}");
        }
    }

    #[tokio::test]
    async fn each_operation_gets_the_secret_as_its_scheme_says_and_no_client_copy() {
        let seen = forwarded("/key", "stored", None).await;
        let values: Vec<_> = seen.headers().get_all("x-key").iter().collect();
        assert_eq!(values, ["stored"]);
        assert!(values[0].is_sensitive());
        assert!(!seen.headers().contains_key("authorization"));
        assert_eq!(seen.headers()["cookie"], "theme=dark");

        let seen = forwarded("/bearer", "stored", None).await;
        assert_eq!(seen.headers()["authorization"], "Bearer stored");
        assert!(seen.headers()["authorization"].is_sensitive());
        assert!(!seen.headers().contains_key("x-key"));

        let seen = forwarded("/basic", "user:pa55", None).await;
        assert_eq!(seen.headers()["authorization"], "Basic dXNlcjpwYTU1");

        let seen = forwarded("/cookie", "stored", None).await;
        assert_eq!(seen.headers()["cookie"], "theme=dark; session=stored");
        assert!(seen.headers()["cookie"].is_sensitive());

        let seen = forwarded(
            "/query?api_key=client-5&page=2&API_KEY=client-6",
            "stored",
            None,
        )
        .await;
        assert_eq!(seen.uri(), "/query?page=2&api_key=stored");
    }

    #[tokio::test]
    async fn of_several_alternatives_the_first_the_secret_fits() {
        let seen = forwarded("/either", "sk_test_123", None).await;
        assert_eq!(seen.headers()["authorization"], "Bearer sk_test_123");
        let seen = forwarded("/either", "user:pa55", None).await;
        assert_eq!(seen.headers()["authorization"], "Basic dXNlcjpwYTU1");
    }

    #[tokio::test]
    async fn security_none_adds_nothing_and_strips_everything() {
        let seen = forwarded("/public", "stored", None).await;
        assert!(!seen.headers().contains_key("x-key"));
        assert!(!seen.headers().contains_key("authorization"));
        assert_eq!(seen.headers()["cookie"], "theme=dark");
    }

    #[tokio::test]
    async fn the_setting_replaces_the_documents_scheme_but_not_security_none() {
        let seen = forwarded("/key", "stored", Some(Scheme::Bearer)).await;
        assert_eq!(seen.headers()["authorization"], "Bearer stored");
        assert!(!seen.headers().contains_key("x-key"));
        let configured = Scheme::Header(HeaderName::from_static("x-other"));
        let seen = forwarded("/public", "stored", Some(configured.clone())).await;
        assert!(!seen.headers().contains_key("x-other"));
        // A scheme specgate cannot fill (digest): nothing, unless the setting names one.
        let seen = forwarded("/digest", "stored", None).await;
        assert!(!seen.headers().contains_key("authorization"));
        let seen = forwarded("/digest", "stored", Some(configured)).await;
        assert_eq!(seen.headers()["x-other"], "stored");
    }

    #[tokio::test]
    async fn without_a_usable_secret_nothing_that_needs_one_is_forwarded() {
        let spec = spec();
        let (seen, inner) = recorder();
        let call = |path: &str, tokens: Credentials| {
            let req = routed(&spec, path, Request::get("/").header("x-key", "client"));
            CredentialLayer::new(plan(&spec, tokens, None))
                .layer(inner.clone())
                .oneshot(req)
        };
        let error = call("/key", Credentials::Missing).await.unwrap_err();
        assert!(matches!(error, Error::TokenUnavailable));
        let error = call("/basic", stored("no-colon")).await.unwrap_err();
        assert!(matches!(error, Error::TokenUnusable(_)));
        assert!(seen.lock().unwrap().is_empty());
        // An operation that takes none goes without, loaded or not.
        call("/public", Credentials::Missing).await.unwrap();
        // Mock mode: the client's copies are dropped and nothing is added.
        call("/key", Credentials::NotNeeded).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|r| !r.headers().contains_key("x-key")));
    }

    #[test]
    fn oauth2_takes_the_configured_url_and_the_operations_scopes() {
        let own = Scheme::OAuth2 {
            token_url: "https://doc/token".into(),
            scopes: vec!["read".into()],
        };
        let configured = Scheme::OAuth2 {
            token_url: "https://set/token".into(),
            scopes: vec![],
        };
        let own = [own];
        let chosen = scheme_for(Some(&own), Some(&configured), true).unwrap();
        assert_eq!(
            oauth2_target(chosen, &own, None),
            Some(("https://set/token", &["read".to_owned()][..]))
        );
        assert_eq!(
            oauth2_target(&own[0], &own, Some("https://override/token")),
            Some(("https://override/token", &["read".to_owned()][..]))
        );
        assert_eq!(oauth2_target(&Scheme::Bearer, &own, None), None);
        assert_eq!(scheme_for(None, Some(&configured), true), None);
    }
}
