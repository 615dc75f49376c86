//! OAuth2 access tokens for the client-credentials flow: fetched from the token endpoint with
//! the stored `client_id:client_secret`, cached until shortly before they expire, and fetched
//! once for every request waiting on them.
//!
//! One cache entry per token URL and set of scopes. Its lock is held across a fetch, so the
//! requests that arrive meanwhile wait for that fetch instead of starting their own; a request
//! whose access token the upstream refused asks for a token other than that one, so of many
//! refused at once only the first fetches again. No error or log line here holds a secret:
//! a failed fetch is described by the endpoint's status and its OAuth `error` code at most.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::BodyExt;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::body::Body;
use crate::error::Error;
use crate::token::Token;
use crate::upstream::HttpsClient;

/// An access token is fetched again this long before the endpoint said it expires, so that
/// none expires on its way upstream; for short-lived tokens, half their life instead.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// The most of a token endpoint's answer that is read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// One access token, ready to send.
#[derive(Debug)]
pub struct AccessToken {
    /// `Bearer <access token>`, marked sensitive.
    authorization: HeaderValue,
    /// When to fetch another; `None` when the endpoint gave no lifetime (until refused).
    refresh_at: Option<Instant>,
}

impl AccessToken {
    /// The `Authorization` value to send.
    pub fn authorization(&self) -> &HeaderValue {
        &self.authorization
    }

    fn is_fresh(&self, now: Instant) -> bool {
        self.refresh_at.is_none_or(|at| now < at)
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Arc<AccessToken>>>>;

/// The cache of access tokens, and the client that fetches them.
#[derive(Debug)]
pub struct TokenCache {
    client: HttpsClient,
    timeout: Duration,
    slots: Mutex<HashMap<(String, Vec<String>), Slot>>,
}

impl TokenCache {
    /// Fetches through `client` (the upstream's, so the same trust roots), each fetch given
    /// `timeout`.
    pub fn new(client: HttpsClient, timeout: Duration) -> Self {
        TokenCache {
            client,
            timeout,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// A fresh access token for `scopes` from `url`, fetched with `client` if none is cached.
    pub async fn get(
        &self,
        url: &str,
        scopes: &[String],
        client: &Token,
    ) -> Result<Arc<AccessToken>, Error> {
        self.obtain(url, scopes, client, None).await
    }

    /// An access token other than `refused`, which the upstream answered 401 to: fetched unless
    /// another request already has.
    pub async fn replace(
        &self,
        url: &str,
        scopes: &[String],
        client: &Token,
        refused: &Arc<AccessToken>,
    ) -> Result<Arc<AccessToken>, Error> {
        self.obtain(url, scopes, client, Some(refused)).await
    }

    async fn obtain(
        &self,
        url: &str,
        scopes: &[String],
        client: &Token,
        refused: Option<&Arc<AccessToken>>,
    ) -> Result<Arc<AccessToken>, Error> {
        let slot = self
            .slots
            .lock()
            .expect("the slot map is never left half-changed")
            .entry((url.to_owned(), scopes.to_vec()))
            .or_default()
            .clone();
        // Held across the fetch: whoever waits here gets what it fetched.
        let mut cached = slot.lock().await;
        if let Some(token) = cached.as_ref()
            && token.is_fresh(Instant::now())
            && !refused.is_some_and(|refused| Arc::ptr_eq(refused, token))
        {
            return Ok(token.clone());
        }
        let fetched = Arc::new(self.fetch(url, scopes, client).await?);
        *cached = Some(fetched.clone());
        Ok(fetched)
    }

    async fn fetch(
        &self,
        url: &str,
        scopes: &[String],
        client: &Token,
    ) -> Result<AccessToken, Error> {
        let uri: Uri = url
            .parse()
            .ok()
            .filter(|u: &Uri| u.scheme().is_some() && u.host().is_some())
            .ok_or_else(|| {
                Error::TokenEndpoint(format!(
                    "the token URL {url:?} is not absolute; set oauth2.token_url"
                ))
            })?;
        let basic = client.basic().ok_or(Error::TokenUnusable(
            "OAuth2 needs the stored secret to be client_id:client_secret",
        ))?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(AUTHORIZATION, basic.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(Body::full(grant(scopes)))
            .expect("a request of valid parts");
        let exchange = async {
            let response =
                self.client.request(request).await.map_err(|e| {
                    Error::TokenEndpoint(format!("{url}: {}", crate::error::Chain(&e)))
                })?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|_| {
                    Error::TokenEndpoint(format!("{url} answered {status} with an unreadable body"))
                })?
                .to_bytes();
            Ok::<_, Error>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                Error::TokenEndpoint(format!(
                    "{url} did not answer within {} ms",
                    self.timeout.as_millis()
                ))
            })??;
        read_answer(status, &body, Instant::now())
            .map_err(|why| Error::TokenEndpoint(format!("{url}: {why}")))
    }
}

/// The form body of a client-credentials grant.
fn grant(scopes: &[String]) -> Bytes {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "client_credentials");
    if !scopes.is_empty() {
        form.append_pair("scope", &scopes.join(" "));
    }
    Bytes::from(form.finish())
}

#[derive(Deserialize)]
struct Answer {
    access_token: Option<Zeroizing<String>>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    error: Option<String>,
}

/// Reads a token endpoint's answer (RFC 6749 §5.1, §5.2) received at `now`. The error names
/// the status and OAuth error code, never anything that could be a secret.
fn read_answer(status: http::StatusCode, body: &[u8], now: Instant) -> Result<AccessToken, String> {
    let answer: Option<Answer> = serde_json::from_slice(body).ok();
    if !status.is_success() {
        let code = answer
            .and_then(|a| a.error)
            .filter(|e| e.len() <= 64 && e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        return Err(match code {
            Some(code) => format!("answered {status} ({code})"),
            None => format!("answered {status}"),
        });
    }
    let answer = answer.ok_or("answered with a body that is not a JSON token response")?;
    let access_token = answer
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or("answered without an access_token")?;
    if let Some(kind) = &answer.token_type
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(format!(
            "answered a {kind:?} token; only bearer tokens can be sent"
        ));
    }
    let lifetime = match &answer.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        // Some endpoints send it as a string.
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .map(Duration::from_secs);
    let authorization = crate::token::sensitive([b"Bearer ", access_token.as_bytes()].concat())
        .map_err(|_| "answered an access token that cannot be sent in a header")?;
    Ok(AccessToken {
        authorization,
        refresh_at: lifetime.map(|life| now + life - EXPIRY_MARGIN.min(life / 2)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn a_token_answer_is_cached_until_shortly_before_it_expires() {
        let now = Instant::now();
        let body = br#"{"access_token":"at-1","token_type":"Bearer","expires_in":3600}"#;
        let token = read_answer(StatusCode::OK, body, now).unwrap();
        assert_eq!(token.authorization(), "Bearer at-1");
        assert!(token.authorization().is_sensitive());
        assert_eq!(token.refresh_at, Some(now + Duration::from_secs(3570)));
        let short = read_answer(
            StatusCode::OK,
            br#"{"access_token":"a","expires_in":"20"}"#,
            now,
        );
        assert_eq!(
            short.unwrap().refresh_at,
            Some(now + Duration::from_secs(10))
        );
        let forever = read_answer(StatusCode::OK, br#"{"access_token":"a"}"#, now).unwrap();
        assert!(forever.is_fresh(now + Duration::from_secs(86_400 * 365)));
    }

    #[test]
    fn a_refusal_names_its_status_and_code_and_nothing_else() {
        let now = Instant::now();
        let refused = br#"{"error":"invalid_client","error_description":"secret s3cr3t is wrong"}"#;
        let why = read_answer(StatusCode::UNAUTHORIZED, refused, now).unwrap_err();
        assert_eq!(why, "answered 401 Unauthorized (invalid_client)");
        let odd = br#"{"error":"<b>s3cr3t</b>"}"#;
        assert_eq!(
            read_answer(StatusCode::BAD_REQUEST, odd, now).unwrap_err(),
            "answered 400 Bad Request"
        );
        let mac = br#"{"access_token":"a","token_type":"mac"}"#;
        assert!(
            read_answer(StatusCode::OK, mac, now)
                .unwrap_err()
                .contains("bearer")
        );
        assert!(
            read_answer(StatusCode::OK, b"<html>", now)
                .unwrap_err()
                .contains("not a JSON")
        );
        assert!(
            read_answer(StatusCode::OK, b"{}", now)
                .unwrap_err()
                .contains("access_token")
        );
    }

    #[test]
    fn the_grant_asks_for_client_credentials_and_the_scopes() {
        assert_eq!(grant(&[]), "grant_type=client_credentials");
        let scopes = ["read:a".to_owned(), "write".to_owned()];
        assert_eq!(
            grant(&scopes),
            "grant_type=client_credentials&scope=read%3Aa+write"
        );
    }
}
