//! Every credential scheme a document can declare, end to end: the real binary, a real HTTP
//! client, a real HTTPS upstream (which, for OAuth2, is also the token endpoint).

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::StatusCode;
use serde_json::Value;
use support::*;

/// Writes `spec` into the CA's directory and returns the environment of a gateway serving it
/// in front of `upstream`, with `secret` as the stored secret.
fn env_with(ca: &TestCa, upstream: &Upstream, spec: &str, secret: &str) -> Vec<(String, String)> {
    let mut env = env_for(ca, upstream);
    let path = ca.dir.path().join("spec.yaml");
    std::fs::write(&path, spec).unwrap();
    let token = ca.dir.path().join("secret");
    std::fs::write(&token, format!("{secret}\n")).unwrap();
    env.retain(|(k, _)| k != "SPECGATE_API_TOKEN_FILE");
    env.push((
        "SPECGATE_API_TOKEN_FILE".into(),
        token.display().to_string(),
    ));
    env.push(("SPECGATE_SPEC".into(), path.display().to_string()));
    env
}

/// Stripe's shape: form-encoded bodies, and `basicAuth` or `bearerAuth` on every operation.
const STRIPE_LIKE: &str = r##"openapi: 3.0.0
info: {title: stripe-like, version: "1"}
servers: [{url: "https://api.stripe.com/"}]
security: [{basicAuth: []}, {bearerAuth: []}]
components:
  securitySchemes:
    basicAuth: {type: http, scheme: basic}
    bearerAuth: {type: http, scheme: bearer}
paths:
  /v1/charges:
    post:
      operationId: PostCharges
      requestBody:
        required: true
        content:
          application/x-www-form-urlencoded:
            encoding:
              metadata: {style: deepObject, explode: true}
              expand: {style: deepObject, explode: true}
            schema:
              type: object
              required: [amount, currency]
              properties:
                amount: {type: integer}
                currency: {type: string}
                metadata: {type: object, additionalProperties: {type: string}}
                expand: {type: array, items: {type: string}}
      responses:
        "200":
          description: the charge
          content: {application/json: {schema: {type: object}}}
"##;

#[tokio::test]
async fn a_stripe_form_create_is_checked_and_reaches_the_upstream_byte_for_byte_as_bearer() {
    let ca = TestCa::new();
    let upstream = Upstream::start(&ca, |_| Reply::json(200, r#"{"id":"ch_1"}"#)).await;
    let gw = Gateway::start(&env_with(&ca, &upstream, STRIPE_LIKE, CANARY_TOKEN));
    let post = |body: &'static str| {
        client()
            .post(gw.url("/v1/charges"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", "Bearer sk_client_copy")
            .body(body)
            .send()
    };

    let missing = post("currency=usd").await.unwrap();
    assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = missing.json().await.unwrap();
    assert_eq!(
        problem["errors"][0]["source"]["pointer"], "/amount",
        "{problem}"
    );
    let lots = post("amount=lots&currency=usd").await.unwrap();
    assert_eq!(lots.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(upstream.requests().is_empty(), "nothing bad was forwarded");

    let valid = "amount=2000&currency=usd&metadata[order]=6735&expand[]=customer";
    let response = post(valid).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(&seen[0].body[..], valid.as_bytes(), "byte for byte");
    let authorization: Vec<_> = seen[0].headers.get_all("authorization").iter().collect();
    // The key is no `user:password`, so of basic and bearer it goes as bearer.
    assert_eq!(authorization, [format!("Bearer {CANARY_TOKEN}").as_str()]);
    assert!(!gw.logs().contains(CANARY_TOKEN));
}

/// A stand-in OAuth2 server in front of an API: it issues `at-1`, `at-2`, … and the API
/// accepts only tokens issued after `revoked` (a count of tokens).
struct Issuer {
    issued: AtomicUsize,
    revoked: AtomicUsize,
}

impl Issuer {
    fn reply(&self, seen: &Seen) -> Reply {
        if seen.uri.path() == "/oauth/token" {
            let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
            let body =
                format!(r#"{{"access_token":"at-{n}","token_type":"Bearer","expires_in":3600}}"#);
            return Reply::json(200, &body);
        }
        let presented = seen
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let accepted = presented
            .and_then(|v| v.strip_prefix("Bearer at-"))
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n > self.revoked.load(Ordering::SeqCst));
        match accepted {
            true => Reply::json(201, r#"{"thing":{"id":"7"}}"#),
            false => Reply::json(401, r#"{"error":"invalid_token"}"#),
        }
    }
}

fn oauth2_spec(port: u16) -> String {
    format!(
        r##"openapi: 3.1.0
info: {{title: things, version: "1"}}
servers: [{{url: "https://things.example/api/3"}}]
security: [{{cc: ["things:write"]}}]
components:
  securitySchemes:
    cc:
      type: oauth2
      flows:
        clientCredentials:
          tokenUrl: https://localhost:{port}/oauth/token
          scopes: {{"things:write": "write things"}}
paths:
  /things:
    get:
      operationId: list-things
      responses: {{"200": {{description: ok}}}}
    post:
      operationId: create-thing
      requestBody:
        content:
          application/json:
            schema: {{type: object, required: [name], properties: {{name: {{type: string}}}}}}
      responses: {{"201": {{description: made}}}}
    put:
      operationId: upload-thing
      requestBody:
        content:
          application/octet-stream: {{schema: {{type: string, format: binary}}}}
      responses: {{"200": {{description: ok}}}}
"##
    )
}

#[tokio::test]
async fn oauth2_tokens_are_fetched_once_cached_and_replaced_once_when_refused() {
    let ca = TestCa::new();
    let issuer = Arc::new(Issuer {
        issued: AtomicUsize::new(0),
        revoked: AtomicUsize::new(0),
    });
    let answer = issuer.clone();
    let upstream = Upstream::start(&ca, move |seen| answer.reply(seen)).await;
    let secret = "client-7:CANARY-client-secret-9f2";
    let gw = Gateway::start(&env_with(
        &ca,
        &upstream,
        &oauth2_spec(upstream.addr.port()),
        secret,
    ));
    let things = gw.url("/api/3/things");
    // `n` requests at once; the status of each.
    let at_once = |n: usize, post: bool| {
        let requests: Vec<_> = (0..n)
            .map(|_| {
                let request = match post {
                    true => client()
                        .post(&things)
                        .header("content-type", "application/json")
                        .body(r#"{"name":"a"}"#),
                    false => client()
                        .get(&things)
                        .header("authorization", "Bearer client-copy"),
                };
                tokio::spawn(async move { request.send().await.unwrap().status() })
            })
            .collect();
        async move {
            let mut statuses = Vec::new();
            for request in requests {
                statuses.push(request.await.unwrap());
            }
            statuses
        }
    };

    // Five at once: one fetch, which all five wait for.
    assert_eq!(at_once(5, false).await, [StatusCode::CREATED; 5]);
    let seen = upstream.requests();
    let fetches: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.uri.path() == "/oauth/token")
        .collect();
    assert_eq!(fetches.len(), 1);
    let fetch = fetches[0];
    assert_eq!(fetch.method, "POST");
    assert_eq!(
        fetch.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    // base64("client-7:CANARY-client-secret-9f2")
    assert_eq!(
        fetch.headers["authorization"],
        "Basic Y2xpZW50LTc6Q0FOQVJZLWNsaWVudC1zZWNyZXQtOWYy"
    );
    assert_eq!(
        &fetch.body[..],
        b"grant_type=client_credentials&scope=things%3Awrite"
    );
    let api: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.uri.path() == "/api/3/things")
        .collect();
    assert_eq!(api.len(), 5);
    assert!(
        api.iter()
            .all(|s| s.headers["authorization"] == "Bearer at-1")
    );

    // The token is revoked: three creates at once are each refused, and retried once with the
    // one new token that the first of them fetched.
    issuer.revoked.store(1, Ordering::SeqCst);
    assert_eq!(at_once(3, true).await, [StatusCode::CREATED; 3]);
    assert_eq!(
        issuer.issued.load(Ordering::SeqCst),
        2,
        "one refresh for all three"
    );
    let retried: Vec<Seen> = upstream
        .requests()
        .into_iter()
        .filter(|s| s.method == "POST" && s.uri.path() == "/api/3/things")
        .collect();
    assert_eq!(retried.len(), 6);
    assert!(
        retried.iter().all(|s| &s.body[..] == br#"{"name":"a"}"#),
        "the same body again"
    );
    let with = |token: &str| {
        retried
            .iter()
            .filter(|s| s.headers["authorization"] == token)
            .count()
    };
    assert_eq!((with("Bearer at-1"), with("Bearer at-2")), (3, 3));

    // A body forwarded as it streams in (a type specgate does not read) cannot be sent twice:
    // the upstream's 401 is the answer.
    issuer.revoked.store(2, Ordering::SeqCst);
    let upload = client()
        .put(&things)
        .header("content-type", "application/octet-stream")
        .body("raw bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        issuer.issued.load(Ordering::SeqCst),
        2,
        "no fetch for a request not retried"
    );

    let logs = gw.logs();
    for secret in ["CANARY-client-secret-9f2", "at-1", "at-2"] {
        assert!(
            !logs.contains(secret),
            "a log line carries {secret}:\n{logs}"
        );
    }
}

#[tokio::test]
async fn an_api_key_in_the_query_replaces_the_clients_and_appears_nowhere_else() {
    let ca = TestCa::new();
    let upstream = Upstream::start(&ca, |_| Reply::json(200, "{}")).await;
    let spec = r##"openapi: 3.0.3
info: {title: q, version: "1"}
servers: [{url: "https://q.example/api/3"}]
security: [{key: []}]
components:
  securitySchemes: {key: {type: apiKey, in: query, name: api_key}}
paths:
  /items:
    get:
      parameters: [{name: page, in: query, schema: {type: integer}}]
      responses: {"200": {description: ok}}
"##;
    let gw = Gateway::start(&env_with(&ca, &upstream, spec, CANARY_TOKEN));
    let response = client()
        .get(gw.url("/api/3/items?API_KEY=client-copy&page=2&api_key=again"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.text().await.unwrap();
    let bad = client()
        .get(gw.url("/api/3/items?page=lots&api_key=client-copy"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem = bad.text().await.unwrap();

    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].uri.query(),
        Some(format!("page=2&api_key={CANARY_TOKEN}").as_str())
    );
    for text in [
        body,
        problem,
        gw.logs(),
        std::fs::read_to_string(&gw.audit_log).unwrap_or_default(),
    ] {
        assert!(!text.contains(CANARY_TOKEN), "the key leaked: {text}");
        assert!(
            !text.contains("client-copy"),
            "the client's key leaked: {text}"
        );
    }
}
