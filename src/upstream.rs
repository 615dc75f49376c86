//! The upstream: a pooled HTTPS client per serving thread, and the innermost service that
//! forwards a routed, validated, credentialed request to it.
//!
//! TLS is rustls (TLS 1.2 and 1.3, ring), trusting the web PKI roots plus any extra CA the
//! operator configures; SNI and certificate checks use the upstream's host. HTTP/2 is used when
//! the upstream offers it by ALPN. Connections are kept alive and reused from the pool.

use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response, Uri, Version};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use crate::body::Body;
use crate::config::UpstreamConfig;
use crate::error::Error;
use crate::layer::BoxFuture;
use crate::layer::limit::{MaxBody, is_limit_error};
use crate::layer::timeout::Forwarding;
use crate::route::Routed;

/// The pooled HTTPS client.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Body>;

/// The upstream TLS or client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The extra CA file could not be used.
    #[error("SPECGATE_UPSTREAM_CA ({path}): {problem}")]
    Ca {
        /// The file.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// rustls refused the configuration.
    #[error("upstream TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// The rustls client configuration: web PKI roots plus `extra_ca`, TLS 1.2 and 1.3.
pub fn tls_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, SetupError> {
    crate::tls::client_config(extra_ca).map_err(|problem| SetupError::Ca {
        path: extra_ca.map_or_else(String::new, |p| p.display().to_string()),
        problem,
    })
}

/// The pooled client for `config`.
pub fn client(config: &UpstreamConfig) -> Result<HttpsClient, SetupError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(config.ca_file.as_deref())?)
        .https_only()
        .enable_http1();
    let https = if config.http2 {
        https.enable_http2().wrap_connector(http)
    } else {
        https.wrap_connector(http)
    };
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .build(https))
}

/// The headers that describe one connection rather than the message (RFC 9110 §7.6.1), which
/// a proxy must not forward.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// The upstream URI: the base URL, the operation path and the client's query string.
pub fn upstream_uri(base: &str, path: &str, query: Option<&str>) -> Result<Uri, Error> {
    let uri = match query {
        Some(q) => format!("{base}{path}?{q}"),
        None => format!("{base}{path}"),
    };
    uri.parse()
        .map_err(|_| Error::BadTarget("the request target does not form a valid upstream URL"))
}

/// Forwards requests to the upstream.
#[derive(Clone, Debug)]
pub struct Upstream {
    // One per serving thread (see `shard`). Shared, not cloned per request: a client is a
    // dozen `Arc`s, and every request's stack is a clone of this service.
    clients: Arc<[HttpsClient]>,
    base: Arc<str>,
    timeout: Duration,
    connect_timeout: Duration,
}

impl Upstream {
    /// Forwards to `config.base` through `clients`, the one of the serving thread a request
    /// is on (the first off those threads). `clients` must not be empty.
    pub fn new(clients: Vec<HttpsClient>, config: &UpstreamConfig) -> Self {
        assert!(!clients.is_empty(), "an upstream needs a client");
        Upstream {
            clients: clients.into(),
            base: Arc::from(config.base.to_string().trim_end_matches('/')),
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
        }
    }
}

impl Service<Request<Body>> for Upstream {
    type Response = Response<Body>;
    type Error = Error;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // The pooled client is always ready; it queues for a connection per request.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let body_limit = parts.extensions.get::<MaxBody>().map_or(0, |m| m.0);
        if let Some(forwarding) = parts.extensions.get::<Forwarding>() {
            forwarding.start();
        }
        let routed = parts
            .extensions
            .get::<Routed>()
            .expect("only routed requests are forwarded");
        let uri = upstream_uri(&self.base, &routed.upstream_path, parts.uri.query());
        strip_hop_by_hop(&mut parts.headers);
        // Host comes from the upstream URL; the length from the body (hyper sets both).
        parts.headers.remove(header::HOST);
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::EXPECT);
        let clients = self.clients.clone();
        let shard = crate::shard::current().unwrap_or(0) % clients.len();
        let (timeout, connect_timeout) = (self.timeout, self.connect_timeout);
        Box::pin(async move {
            let mut outbound = Request::new(body);
            *outbound.method_mut() = parts.method;
            *outbound.uri_mut() = uri?;
            *outbound.version_mut() = Version::HTTP_11; // the client moves to h2 if ALPN says so
            *outbound.headers_mut() = parts.headers;
            let client = &clients[shard];
            // Taken before sending, for the one case where sending again is safe. A request
            // without a body goes out as one HEADERS frame, which hyper can fail with the
            // connection's GOAWAY after sending it when its connection task runs on another
            // thread: only an idempotent one is sent again then. A body is only sent after that
            // point, so a request with one was never complete upstream.
            let again = Body::copy_if_replayable(&outbound).filter(|copy| {
                copy.method().is_idempotent()
                    || http_body::Body::size_hint(copy.body()).exact() != Some(0)
            });
            let exchange = async {
                match client.request(outbound).await {
                    Err(e) if was_not_processed(&e) && again.is_some() => {
                        tracing::debug!(
                            target: "specgate::upstream",
                            error = %crate::error::Chain(&e),
                            "the upstream did not process the request; sending it again"
                        );
                        client.request(again.expect("checked")).await
                    }
                    result => result,
                }
            };
            // One deadline for both attempts.
            let response = match tokio::time::timeout(timeout, exchange).await {
                Err(_) => {
                    return Err(Error::UpstreamTimeout {
                        timeout_ms: timeout.as_millis() as u64,
                    });
                }
                Ok(Err(e)) => return Err(classify(e, connect_timeout, body_limit)),
                Ok(Ok(response)) => response,
            };
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, Body::from(body)))
        })
    }
}

/// Whether the upstream said it did not process the request, so that sending it again cannot
/// do anything twice (RFC 9113 §8.7): its HTTP/2 stream was above the last one a graceful
/// GOAWAY (`NO_ERROR`) said was processed, or it was refused with `REFUSED_STREAM`. Servers
/// send such a GOAWAY routinely (nginx after `keepalive_requests`), and a request crossing it
/// would otherwise fail with a 502. A GOAWAY with an error code is left alone (the connection
/// is being torn down, and the retry keeps to what servers do routinely), and so is a
/// connection that just closes: its open streams may have been processed.
pub fn was_not_processed(error: &(dyn std::error::Error + 'static)) -> bool {
    let Some(h2) = crate::error::find_cause::<h2::Error>(error) else {
        return false;
    };
    h2.is_remote()
        && match h2.reason() {
            Some(h2::Reason::NO_ERROR) => h2.is_go_away(),
            Some(h2::Reason::REFUSED_STREAM) => h2.is_reset(),
            _ => false,
        }
}

/// Names what went wrong with the upstream: TLS, connect, connect timeout, or the exchange.
pub fn classify(
    error: hyper_util::client::legacy::Error,
    connect_timeout: Duration,
    body_limit: u64,
) -> Error {
    if crate::error::find_cause::<rustls::Error>(&error).is_some() {
        return Error::UpstreamTls(error.into());
    }
    if is_limit_error(&error) {
        // The client's streamed body went over the limit on its way upstream.
        return Error::BodyTooLarge { limit: body_limit };
    }
    if error.is_connect() {
        let timed_out = crate::error::find_cause::<std::io::Error>(&error)
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
        if timed_out {
            return Error::UpstreamTimeout {
                timeout_ms: connect_timeout.as_millis() as u64,
            };
        }
        return Error::UpstreamConnect(error.into());
    }
    Error::UpstreamProtocol(error.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        headers.insert("x-request-id", HeaderValue::from_static("keep"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-request-id"));
    }

    #[test]
    fn the_upstream_uri_is_base_plus_path_plus_query() {
        let uri = upstream_uri(
            "https://acct.api-us1.com/api/3",
            "/connections",
            Some("a=1&b=2"),
        )
        .unwrap();
        assert_eq!(uri, "https://acct.api-us1.com/api/3/connections?a=1&b=2");
        assert_eq!(
            upstream_uri("https://h:8443", "/x", None).unwrap(),
            "https://h:8443/x"
        );
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let e = tls_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("SPECGATE_UPSTREAM_CA (/nonexistent/ca.pem)"),
            "{e}"
        );
    }
}
