//! Who is calling. When clients are configured, every request must carry one client's key
//! (`Authorization: Bearer <key>` or `X-Specgate-Key: <key>`) or a client certificate whose
//! subject is a configured client; anything else is answered 401 before routing, so a caller
//! without a key learns nothing about the spec. Keys are compared by their SHA-256 against
//! every configured digest, in constant time and without stopping at a match. The client's own
//! credential headers never travel further: they are removed here, whether clients are
//! configured or not.
//!
//! The client is left in the request's extensions ([`Authenticated`], [`ClientName`]) for the
//! rate limit, the operation check and the audit record, and in the [`ClientSlot`] for the
//! layers outside this one (logs, response extensions).

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, header};
use subtle::ConstantTimeEq;
use tower_layer::Layer;
use tower_service::Service;

use super::RefuseOr;
use crate::body::Body;
use crate::client::{Authenticated, Client};
use crate::config::ClientConfig;
use crate::error::Error;

/// The header a client may send its key in, instead of `Authorization: Bearer`.
pub const X_SPECGATE_KEY: HeaderName = HeaderName::from_static("x-specgate-key");

/// Longest key accepted.
const MAX_KEY_LEN: usize = 512;

/// The subject of a verified client certificate, put in each request's extensions by the TLS
/// listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The subject's common name (or the whole subject, when it has no common name).
    pub subject: Arc<str>,
}

/// The authenticated client's name, in the request's extensions (for the audit record) and the
/// response's (for access logs and metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientName(pub Arc<str>);

/// Put in a request's extensions by a layer outside this one, which reads the client's name
/// back once the response is ready.
#[derive(Clone, Debug, Default)]
pub struct ClientSlot(Arc<OnceLock<ClientName>>);

impl ClientSlot {
    /// The client's name, once authenticated.
    pub fn get(&self) -> Option<&ClientName> {
        self.0.get()
    }
}

/// Every configured client.
#[derive(Debug, Default)]
pub struct Clients {
    clients: Vec<Arc<Client>>,
}

impl Clients {
    /// The clients as configured.
    pub fn new(configs: &[ClientConfig]) -> Self {
        Clients {
            clients: configs.iter().map(|c| Arc::new(Client::new(c))).collect(),
        }
    }

    /// Whether any client is configured.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The configured clients' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.clients.iter().map(|c| &**c.name())
    }

    /// Who sent a request with these headers over a connection with this certificate.
    ///
    /// With no clients configured: the certificate's subject if there is one (mutual TLS),
    /// else nobody, and every request passes. With clients: a key must name one (and agree with
    /// the certificate, if any), or the certificate's subject must be one.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: Option<&PeerCertificate>,
    ) -> Result<Option<Arc<Client>>, Error> {
        if self.clients.is_empty() {
            return Ok(peer.map(|p| Arc::new(Client::certified(p.subject.clone()))));
        }
        match (presented_key(headers)?, peer) {
            (Some(key), peer) => {
                let client = self.by_key(key).ok_or(Error::Unauthenticated(
                    "the client key is not that of any configured client",
                ))?;
                if peer.is_some_and(|p| p.subject != *client.name()) {
                    return Err(Error::Unauthenticated(
                        "the client key and the client certificate name different clients",
                    ));
                }
                Ok(Some(client))
            }
            (None, Some(peer)) => self
                .clients
                .iter()
                .find(|c| *c.name() == peer.subject)
                .cloned()
                .map(Some)
                .ok_or(Error::Unauthenticated(
                    "the client certificate's subject is not a configured client",
                )),
            (None, None) => Err(Error::Unauthenticated(
                "a client key is required: send Authorization: Bearer <key> or X-Specgate-Key: <key>",
            )),
        }
    }

    /// The client whose key this is. Every configured digest is compared, in constant time,
    /// whether or not an earlier one matched.
    fn by_key(&self, key: &[u8]) -> Option<Arc<Client>> {
        let digest = crate::audit::sha256(&[key]);
        let mut found = None;
        for client in &self.clients {
            if let Some(expected) = client.key_sha256()
                && bool::from(expected.ct_eq(&digest))
            {
                found = Some(client.clone());
            }
        }
        found
    }
}

/// The key a request presents, from `Authorization: Bearer` or `X-Specgate-Key`. Two copies of
/// either header, two different keys, another scheme or a malformed key are refused rather than
/// guessed at.
pub fn presented_key(headers: &HeaderMap) -> Result<Option<&[u8]>, Error> {
    let bearer = match single(headers, &header::AUTHORIZATION)? {
        None => None,
        Some(value) => {
            let value = value.as_bytes();
            let scheme_ok = value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ");
            if !scheme_ok {
                return Err(Error::Unauthenticated(
                    "Authorization must be Bearer <key> (or send X-Specgate-Key: <key>)",
                ));
            }
            Some(checked_key(value[7..].trim_ascii())?)
        }
    };
    let custom = match single(headers, &X_SPECGATE_KEY)? {
        None => None,
        Some(value) => Some(checked_key(value.as_bytes().trim_ascii())?),
    };
    match (bearer, custom) {
        (Some(a), Some(b)) if a != b => Err(Error::Unauthenticated(
            "Authorization and X-Specgate-Key carry different keys",
        )),
        (a, b) => Ok(a.or(b)),
    }
}

fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a HeaderValue>, Error> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (first, None) => Ok(first),
        _ => Err(Error::Unauthenticated(
            "a client key header is repeated; send one key once",
        )),
    }
}

fn checked_key(key: &[u8]) -> Result<&[u8], Error> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.iter().all(u8::is_ascii_graphic) {
        return Err(Error::Unauthenticated(
            "the client key is empty, too long or not visible ASCII",
        ));
    }
    Ok(key)
}

/// Adds [`Authenticate`].
#[derive(Clone, Debug)]
pub struct AuthenticateLayer {
    clients: Arc<Clients>,
}

impl AuthenticateLayer {
    /// Authenticates against `clients`.
    pub fn new(clients: Arc<Clients>) -> Self {
        AuthenticateLayer { clients }
    }
}

impl<S> Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            clients: self.clients.clone(),
        }
    }
}

/// Authenticates clients and strips their credentials.
#[derive(Clone, Debug)]
pub struct Authenticate<S> {
    inner: S,
    clients: Arc<Clients>,
}

impl<S, B> Service<Request<B>> for Authenticate<S>
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
        let peer = req.extensions().get::<PeerCertificate>();
        let client = match self.clients.authenticate(req.headers(), peer) {
            Ok(client) => client,
            Err(error) => return RefuseOr::refuse(error),
        };
        let headers = req.headers_mut();
        headers.remove(header::AUTHORIZATION);
        headers.remove(X_SPECGATE_KEY);
        if let Some(client) = client {
            let name = ClientName(client.name().clone());
            if let Some(slot) = req.extensions().get::<ClientSlot>() {
                let _ = slot.0.set(name.clone());
            }
            req.extensions_mut().insert(name);
            req.extensions_mut().insert(Authenticated(client));
        }
        RefuseOr::inner(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Body;
    use crate::layer::testing::recorder;
    use tower::ServiceExt;

    fn config(name: &str, key: &str, allow: Option<&[&str]>) -> ClientConfig {
        ClientConfig {
            name: Arc::from(name),
            key_sha256: Some(crate::audit::sha256(&[key.as_bytes()])),
            allow: allow.map(|a| a.iter().map(|s| s.to_string()).collect()),
            rate: None,
        }
    }

    fn clients() -> Clients {
        Clients::new(&[
            config("billing", "key-billing", Some(&["create-connection"])),
            config("crm", "key-crm", None),
        ])
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn who(pairs: &[(&str, &str)]) -> Result<String, u16> {
        clients()
            .authenticate(&headers(pairs), None)
            .map(|c| c.unwrap().name().to_string())
            .map_err(|e| e.status().as_u16())
    }

    #[test]
    fn a_key_in_either_header_names_its_client() {
        assert_eq!(
            who(&[("authorization", "Bearer key-billing")]).unwrap(),
            "billing"
        );
        assert_eq!(
            who(&[("authorization", "bearer  key-crm ")]).unwrap(),
            "crm"
        );
        assert_eq!(who(&[("x-specgate-key", "key-crm")]).unwrap(), "crm");
        assert_eq!(
            who(&[
                ("authorization", "Bearer key-crm"),
                ("x-specgate-key", "key-crm")
            ])
            .unwrap(),
            "crm"
        );
    }

    #[test]
    fn missing_unknown_ambiguous_or_malformed_keys_are_401() {
        for pairs in [
            &[][..],
            &[("authorization", "Bearer key-nobody")],
            &[("authorization", "Bearer KEY-CRM")],
            &[("authorization", "Basic a2V5LWNybTo=")],
            &[("authorization", "Bearer")],
            &[("authorization", "Bearer ")],
            &[("x-specgate-key", "")],
            &[
                ("authorization", "Bearer key-crm"),
                ("x-specgate-key", "key-billing"),
            ],
            &[("x-specgate-key", "key-crm"), ("x-specgate-key", "key-crm")],
            &[
                ("authorization", "Bearer key-crm"),
                ("authorization", "Bearer key-crm"),
            ],
        ] {
            assert_eq!(who(pairs), Err(401), "{pairs:?}");
        }
    }

    #[test]
    fn with_no_clients_everyone_passes_and_a_certificate_names_the_caller() {
        let none = Clients::default();
        assert!(
            none.authenticate(&headers(&[("authorization", "Basic x")]), None)
                .unwrap()
                .is_none()
        );
        let peer = PeerCertificate {
            subject: Arc::from("billing.internal"),
        };
        let client = none.authenticate(&HeaderMap::new(), Some(&peer)).unwrap();
        assert_eq!(&**client.unwrap().name(), "billing.internal");
    }

    #[test]
    fn a_certificate_must_be_a_configured_client_and_agree_with_any_key() {
        let clients = clients();
        let crm = PeerCertificate {
            subject: Arc::from("crm"),
        };
        let stranger = PeerCertificate {
            subject: Arc::from("stranger"),
        };
        let none = HeaderMap::new();
        assert_eq!(
            &**clients
                .authenticate(&none, Some(&crm))
                .unwrap()
                .unwrap()
                .name(),
            "crm"
        );
        assert!(clients.authenticate(&none, Some(&stranger)).is_err());
        let billing_key = headers(&[("x-specgate-key", "key-billing")]);
        assert!(clients.authenticate(&billing_key, Some(&crm)).is_err());
    }

    #[tokio::test]
    async fn credentials_are_stripped_and_the_client_is_recorded() {
        let (seen, inner) = recorder();
        let svc = AuthenticateLayer::new(Arc::new(clients())).layer(inner);
        let slot = ClientSlot::default();
        let mut req = Request::post("/")
            .header("authorization", "Bearer key-crm")
            .header("x-specgate-key", "key-crm")
            .body(Body::empty())
            .unwrap();
        req.extensions_mut().insert(slot.clone());
        svc.oneshot(req).await.unwrap();
        let seen = seen.lock().unwrap();
        assert!(!seen[0].headers().contains_key("authorization"));
        assert!(!seen[0].headers().contains_key("x-specgate-key"));
        assert_eq!(&*seen[0].extensions().get::<ClientName>().unwrap().0, "crm");
        assert_eq!(&*slot.get().unwrap().0, "crm");
    }

    #[tokio::test]
    async fn an_unauthenticated_request_goes_no_further() {
        let (seen, inner) = recorder();
        let svc = AuthenticateLayer::new(Arc::new(clients())).layer(inner);
        let req = Request::post("/").body(Body::empty()).unwrap();
        let error = svc.oneshot(req).await.unwrap_err();
        assert_eq!(error.status(), 401);
        assert!(seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn with_no_clients_a_client_authorization_header_is_still_not_forwarded() {
        let (seen, inner) = recorder();
        let svc = AuthenticateLayer::new(Arc::new(Clients::default())).layer(inner);
        let req = Request::post("/")
            .header("authorization", "Bearer app-secret")
            .body(Body::empty())
            .unwrap();
        svc.oneshot(req).await.unwrap();
        assert!(
            !seen.lock().unwrap()[0]
                .headers()
                .contains_key("authorization")
        );
    }
}
