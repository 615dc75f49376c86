//! The admin endpoints, on their own listener apart from the proxy port:
//!
//! - `GET /healthz`: 200 while the process serves at all (liveness).
//! - `GET /readyz`: 200 only when the spec is compiled, a token is loaded, the audit log is
//!   writable, the upstream's name resolves and no shutdown has begun; otherwise 503. The JSON
//!   body names each check and why a failing one fails.
//! - `GET /metrics`: the Prometheus text format.
//! - `GET /drift?minutes=N`: where upstream responses differed from the document in the last
//!   N minutes (default 60, at most a day), as JSON; `specgate drift` prints it. It names
//!   operations, kinds and pointers, never a value.
//! - `POST /reload`: the same as SIGHUP, answered with the outcome. Only from loopback: the
//!   admin port may face the pod network for probes, and a reload is not theirs to ask for.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};

use crate::body::Body;
use crate::config::UpstreamMode;
use crate::layer::credential::Credentials;
use crate::layer::observe::PeerAddr;
use crate::metrics::CONTENT_TYPE as METRICS_CONTENT_TYPE;
use crate::reload::Live;

/// How long `/readyz` waits for the upstream's name to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The outcome of one readiness check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// `spec`, `token`, `audit`, `upstream`, `shutdown`.
    pub name: &'static str,
    /// Whether it passes.
    pub ok: bool,
    /// What was found, for a person.
    pub detail: String,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            ok: true,
            detail: detail.into(),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            ok: false,
            detail: detail.into(),
        }
    }
}

/// The readiness answer for these checks: 200 if all pass, else 503 naming the failing ones.
pub fn verdict(checks: &[Check]) -> (StatusCode, Value) {
    let failing: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    let status = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let details: serde_json::Map<String, Value> = checks
        .iter()
        .map(|c| (c.name.to_owned(), json!({"ok": c.ok, "detail": c.detail})))
        .collect();
    let body = json!({
        "status": if failing.is_empty() { "ready" } else { "not ready" },
        "failing": failing,
        "checks": details,
    });
    (status, body)
}

/// The failing checks as one line for a log, `name: detail; …`; empty when all pass.
pub fn failing(checks: &[Check]) -> String {
    checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs every readiness check against the running gateway.
pub async fn checks(live: &Live) -> Vec<Check> {
    let current = live.current();
    let mut checks = vec![Check::pass(
        "spec",
        format!(
            "{} from {}",
            crate::spec::counted(current.spec.operations.len(), "operation", "operations"),
            current.spec.origin
        ),
    )];
    checks.push(match &current.tokens {
        Credentials::Token(_) => Check::pass("token", "loaded"),
        Credentials::NotNeeded => Check::pass("token", "not needed: mock mode"),
        Credentials::Missing => Check::fail(
            "token",
            current
                .token_problem
                .clone()
                .unwrap_or_else(|| "not loaded".to_owned()),
        ),
    });
    checks.push(if live.auditor().health().writable() {
        Check::pass("audit", "writable")
    } else {
        Check::fail("audit", "the last write failed; creates are refused")
    });
    checks.push(match current.config.mode {
        UpstreamMode::Mock => Check::pass("upstream", "mock mode: nothing is forwarded"),
        UpstreamMode::Proxy => resolve(&current.config.upstream.base).await,
    });
    checks.push(if live.draining() {
        Check::fail("shutdown", "shutting down: finishing in-flight requests")
    } else {
        Check::pass("shutdown", "not shutting down")
    });
    checks
}

async fn resolve(base: &http::Uri) -> Check {
    let host = base.host().unwrap_or_default().trim_matches(['[', ']']);
    let port = base.port_u16().unwrap_or(443);
    let lookup = tokio::net::lookup_host((host, port));
    match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(addrs)) => match addrs.count() {
            0 => Check::fail("upstream", format!("{host} resolves to no address")),
            _ => Check::pass("upstream", format!("{host} resolves")),
        },
        Ok(Err(error)) => Check::fail("upstream", format!("{host} does not resolve: {error}")),
        Err(_) => Check::fail(
            "upstream",
            format!(
                "{host} did not resolve within {} s",
                RESOLVE_TIMEOUT.as_secs()
            ),
        ),
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn text_response(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// Answers one admin request.
pub async fn handle<B>(live: Arc<Live>, req: Request<B>) -> Result<Response<Body>, Infallible> {
    let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => {
            text_response(StatusCode::OK, "text/plain", "ok\n".to_owned())
        }
        (&Method::GET | &Method::HEAD, "/readyz") => {
            let (status, body) = verdict(&checks(&live).await);
            json_response(status, &body)
        }
        (&Method::GET | &Method::HEAD, "/metrics") => text_response(
            StatusCode::OK,
            METRICS_CONTENT_TYPE,
            live.metrics().render(),
        ),
        (&Method::GET | &Method::HEAD, "/drift") => match drift_minutes(req.uri()) {
            Some(minutes) => json_response(StatusCode::OK, &live.drift().report(minutes)),
            None => json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "minutes must be a whole number from 1 to 1440"}),
            ),
        },
        (&Method::POST, "/reload") if !is_loopback(peer) => json_response(
            StatusCode::FORBIDDEN,
            &json!({"reloaded": false, "error": "reloads are accepted from loopback only"}),
        ),
        (&Method::POST, "/reload") => match live.reload("POST /reload").await {
            Ok(reloaded) => json_response(
                StatusCode::OK,
                &json!({
                    "reloaded": true,
                    "operations": reloaded.operations,
                    "restart_needed": reloaded.restart_needed,
                }),
            ),
            Err(error) => json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({"reloaded": false, "error": error}),
            ),
        },
        (_, "/healthz" | "/readyz" | "/metrics" | "/drift" | "/reload") => {
            let allow = if req.uri().path() == "/reload" {
                "POST"
            } else {
                "GET, HEAD"
            };
            let mut response = json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": format!("{} is not allowed here", req.method())}),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allow));
            response
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not an admin endpoint", "endpoints": ["/healthz", "/readyz", "/metrics", "/drift", "/reload"]}),
        ),
    };
    Ok(response)
}

/// The window `GET /drift?minutes=N` asks for: an hour unless it says; `None` for a window
/// that is not one.
fn drift_minutes(uri: &http::Uri) -> Option<u64> {
    let asked = uri
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("minutes="));
    match asked {
        None => Some(60),
        Some(n) => n
            .parse()
            .ok()
            .filter(|n| (1..=crate::drift::MAX_WINDOW_MINUTES).contains(n)),
    }
}

fn is_loopback(peer: Option<SocketAddr>) -> bool {
    peer.is_some_and(|p| p.ip().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failing_check_makes_it_503_and_is_named() {
        let (status, body) = verdict(&[
            Check::pass("spec", "1 operation"),
            Check::fail(
                "token",
                "SPECGATE_API_TOKEN_FILE (/x): the file cannot be read",
            ),
            Check::pass("audit", "writable"),
        ]);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "not ready");
        assert_eq!(body["failing"], json!(["token"]));
        assert_eq!(body["checks"]["token"]["ok"], false);
        assert_eq!(body["checks"]["audit"]["ok"], true);
        let (status, body) = verdict(&[Check::pass("spec", "ok")]);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["failing"], json!([]));
    }

    #[test]
    fn reloads_come_from_loopback_only() {
        assert!(is_loopback(Some("127.0.0.1:5".parse().unwrap())));
        assert!(is_loopback(Some("[::1]:5".parse().unwrap())));
        assert!(!is_loopback(Some("10.0.0.7:5".parse().unwrap())));
        assert!(!is_loopback(None));
    }
}
