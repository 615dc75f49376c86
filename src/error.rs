//! The one error type of the request path, and the one place it becomes a response.
//!
//! Every refusal specgate makes is an [`Error`]; [`Error::to_response`] renders it as an RFC 9457
//! `application/problem+json` body of one shape. Detail strings are written for the app
//! developer reading them: they say what was wrong with the request and never carry internals,
//! upstream addresses or credentials.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use serde::Serialize;

use crate::body::{Body, BoxError};

/// Why specgate refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path matches no operation in the spec.
    #[error("no operation in the spec matches this path")]
    RouteNotFound,
    /// The path matches an operation, but not with this method.
    #[error("{method} is not allowed here")]
    MethodNotAllowed {
        /// The method the client used.
        method: Method,
        /// The methods the spec declares for this path, as an `Allow` header value.
        allow: HeaderValue,
    },
    /// Several operations share the path and method, told apart by a query parameter or header
    /// the request does not carry.
    #[error(
        "several operations share this path and method, told apart by {told_apart_by}; the \
         request names none of them"
    )]
    OperationNotNamed {
        /// The path keys' variants (`?Action=CreateUser`, `#X-Amz-Target=Svc.Run`).
        told_apart_by: String,
    },
    /// A query parameter or header that chooses between operations is given more than once:
    /// the upstream might read the other one.
    #[error("{name} chooses the operation, and the request gives it more than once")]
    ChoosingParameterRepeated {
        /// The parameter or header.
        name: String,
    },
    /// The request target could route around the spec, or is not a path at all.
    #[error("request target refused: {0}")]
    BadTarget(&'static str),
    /// The body is larger than the configured limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The body could not be read from the client (it aborted, or sent a malformed stream).
    #[error("request body could not be read")]
    BodyRead(#[source] BoxError),
    /// The request's `Content-Type` is none the operation declares for its body.
    #[error("unsupported content type")]
    UnsupportedMediaType {
        /// The `Content-Type` the client sent, if any.
        got: Option<String>,
        /// The media types the operation declares.
        declared: Vec<String>,
    },
    /// The body's `Content-Encoding` is one specgate cannot decode, so cannot check.
    #[error("Content-Encoding {got:?} is not supported")]
    UnsupportedContentEncoding {
        /// The coding the client named.
        got: String,
    },
    /// The body is not what its `Content-Encoding` says (not gzip, truncated).
    #[error("request body is not valid {coding} as its Content-Encoding says")]
    MalformedContentEncoding {
        /// The coding that failed to decode.
        coding: &'static str,
    },
    /// The body is not JSON.
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The body is not well-formed `multipart/form-data`.
    #[error("request body is not valid multipart/form-data: {0}")]
    MalformedMultipart(&'static str),
    /// The operation declares no request body and one was sent.
    #[error("this operation takes no request body")]
    BodyNotAllowed,
    /// The body is JSON but does not satisfy the operation's schema.
    #[error("request body does not match the schema of operation {operation_id}")]
    SchemaViolations {
        /// The operation whose schema was applied.
        operation_id: String,
        /// One entry per violation.
        violations: Vec<Violation>,
    },
    /// A path, query, header or cookie parameter is missing or does not satisfy its schema.
    #[error("request parameters do not match operation {operation_id}")]
    ParameterViolations {
        /// The operation whose parameters were applied.
        operation_id: String,
        /// One entry per violation, each naming its parameter.
        violations: Vec<Violation>,
    },
    /// No connection to the upstream could be made.
    #[error("could not connect to the upstream")]
    UpstreamConnect(#[source] BoxError),
    /// A connection was made, but the TLS handshake failed.
    #[error("TLS handshake with the upstream failed")]
    UpstreamTls(#[source] BoxError),
    /// The upstream did not answer in time.
    #[error("the upstream did not respond within {timeout_ms} ms")]
    UpstreamTimeout {
        /// The timeout that expired.
        timeout_ms: u64,
    },
    /// The upstream connection failed mid-exchange or spoke something other than HTTP.
    #[error("the upstream connection failed")]
    UpstreamProtocol(#[source] BoxError),
    /// The audit log cannot take records, so creates are refused before they are forwarded.
    #[error("the audit log is not writable; creates are refused until it is")]
    AuditUnavailable,
    /// No API token is loaded (its file was missing or bad at start-up and has not been
    /// reloaded since), so nothing can be forwarded.
    #[error("no API token is loaded; nothing is forwarded until one is")]
    TokenUnavailable,
    /// The stored secret does not have the form the operation's scheme needs (`user:password`
    /// for `http` `basic`, `client_id:client_secret` for OAuth2), so nothing is forwarded.
    #[error("{0}; nothing is forwarded until it does")]
    TokenUnusable(&'static str),
    /// The OAuth2 token endpoint gave no access token. The text names its status and OAuth
    /// error code at most: never a secret.
    #[error("no OAuth2 access token: {0}")]
    TokenEndpoint(String),
    /// Mock mode, and the operation declares no 2xx response to answer with.
    #[error(
        "mock mode: the document declares no 2xx response for operation {operation_id}; add one \
         (an overlay can) to mock it"
    )]
    MockNoExample {
        /// The operation.
        operation_id: String,
    },
    /// The upstream accepted a create, but its audit record could not be written.
    #[error("the upstream answered {upstream_status} but the audit record could not be written")]
    AuditFailedAfterCreate {
        /// What the upstream answered.
        upstream_status: StatusCode,
    },
    /// Clients are configured and the request carries no key (or certificate) of one of them.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The client is known but may not call this operation.
    #[error("client {client:?} may not call operation {operation_id:?}")]
    Forbidden {
        /// The client's configured name.
        client: Arc<str>,
        /// The operation it asked for.
        operation_id: String,
    },
    /// The client's rate limit is spent for now.
    #[error("rate limit exceeded; retry in {retry_after_secs} s")]
    RateLimited {
        /// Whole seconds until a request would be accepted.
        retry_after_secs: u64,
    },
    /// Too many requests are in flight: this one is shed at once rather than queued.
    #[error("specgate is at its limit of {limit} concurrent requests; retry shortly")]
    Overloaded {
        /// The configured limit.
        limit: usize,
    },
    /// The whole request (head, body and the upstream's answer) took too long.
    #[error("the request was not completed within {timeout_ms} ms")]
    RequestTimeout {
        /// The timeout that expired.
        timeout_ms: u64,
    },
    /// The request target is longer than allowed.
    #[error("the request target is {len} bytes long; the limit is {limit}")]
    UriTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The header section is too large, or has too many fields.
    #[error("{0}")]
    HeadersTooLarge(String),
    /// The JSON body has an object with the same key twice: the upstream may read the other
    /// one than was validated.
    #[error("request body has the key {key:?} twice in the object at {pointer:?}")]
    DuplicateKey {
        /// The object, as an RFC 6901 pointer.
        pointer: String,
        /// The repeated key (shortened if long).
        key: String,
    },
    /// The JSON body nests deeper than allowed.
    #[error("request body nests deeper than {limit} levels")]
    JsonTooDeep {
        /// The limit.
        limit: usize,
    },
}

/// One schema violation in a request body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// What went wrong, for a person: `/connection: missing required property 'name'`.
    pub title: String,
    /// A stable machine-readable code (`required`, `type`, `enum`, ...).
    pub code: &'static str,
    /// Where in the body, as ActiveCampaign's own 422s say it.
    pub source: Source,
}

/// Where a violation is, in JSON:API's terms: `{"pointer": "/connection/name"}` in the body,
/// or `{"parameter": "state"}` for a path, query, header or cookie parameter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Source {
    /// In the request body.
    Body {
        /// An RFC 6901 JSON pointer into the body.
        pointer: String,
    },
    /// In a parameter.
    Parameter {
        /// The parameter's name.
        parameter: String,
    },
}

impl Source {
    /// At `pointer` in the body.
    pub fn body(pointer: impl Into<String>) -> Source {
        Source::Body {
            pointer: pointer.into(),
        }
    }

    /// In the parameter `name`.
    pub fn parameter(name: impl Into<String>) -> Source {
        Source::Parameter {
            parameter: name.into(),
        }
    }
}

/// The `application/problem+json` body every error is rendered as.
#[derive(Debug, Serialize)]
pub struct Problem<'a> {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// A short summary of the kind of problem.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What happened to this request.
    pub detail: String,
    /// The same text as `detail`, where client libraries written for the vendor's own errors
    /// (`{"message": …}`) look for it.
    pub message: &'a str,
    /// The request id, to find the request in logs and the audit log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a str>,
    /// One entry per schema violation.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub errors: &'a [Violation],
}

/// The media type of an error body, unless the client accepts only plain JSON.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The media type an error body is sent as, by the request's `Accept`: problem+json when it
/// names it, `application/json` (the same body) when it names that but not problem+json (client
/// libraries that parse only `application/json` then read the error), problem+json otherwise.
/// A range with `q=0` is not accepted.
pub fn error_media_type(accept: Option<&HeaderValue>) -> &'static str {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return PROBLEM_JSON;
    };
    let accepted = |wanted: &str| {
        accept.split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("q") && v.trim().parse::<f32>() == Ok(0.0)
                })
            });
            media.eq_ignore_ascii_case(wanted) && !refused
        })
    };
    if !accepted(PROBLEM_JSON) && accepted("application/json") {
        "application/json"
    } else {
        PROBLEM_JSON
    }
}

impl Error {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::RouteNotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::BadTarget(_)
            | Error::OperationNotNamed { .. }
            | Error::ChoosingParameterRepeated { .. }
            | Error::BodyRead(_)
            | Error::MalformedJson(_)
            | Error::MalformedMultipart(_)
            | Error::MalformedContentEncoding { .. }
            | Error::DuplicateKey { .. }
            | Error::JsonTooDeep { .. } => StatusCode::BAD_REQUEST,
            Error::BodyNotAllowed => StatusCode::BAD_REQUEST,
            Error::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType { .. } | Error::UnsupportedContentEncoding { .. } => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Error::SchemaViolations { .. } | Error::ParameterViolations { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Error::UpstreamConnect(_) | Error::UpstreamTls(_) | Error::UpstreamProtocol(_) => {
                StatusCode::BAD_GATEWAY
            }
            Error::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::AuditUnavailable | Error::TokenUnavailable | Error::TokenUnusable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::TokenEndpoint(_) => StatusCode::BAD_GATEWAY,
            Error::MockNoExample { .. } => StatusCode::NOT_IMPLEMENTED,
            Error::AuditFailedAfterCreate { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden { .. } => StatusCode::FORBIDDEN,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Error::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            Error::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }

    /// A short name for this kind of error, for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        self.type_and_title()
            .0
            .rsplit(':')
            .next()
            .unwrap_or("error")
    }

    fn type_and_title(&self) -> (&'static str, &'static str) {
        match self {
            Error::RouteNotFound => ("urn:specgate:problem:route-not-found", "No such operation"),
            Error::MethodNotAllowed { .. } => (
                "urn:specgate:problem:method-not-allowed",
                "Method not allowed",
            ),
            Error::BadTarget(_) => ("urn:specgate:problem:bad-target", "Request target refused"),
            Error::OperationNotNamed { .. } => (
                "urn:specgate:problem:operation-not-named",
                "Request does not name its operation",
            ),
            Error::ChoosingParameterRepeated { .. } => (
                "urn:specgate:problem:choosing-parameter-repeated",
                "Operation chosen twice",
            ),
            Error::BodyTooLarge { .. } => ("urn:specgate:problem:body-too-large", "Body too large"),
            Error::BodyRead(_) => ("urn:specgate:problem:body-unreadable", "Body not readable"),
            Error::UnsupportedMediaType { .. } => (
                "urn:specgate:problem:unsupported-media-type",
                "Unsupported media type",
            ),
            Error::UnsupportedContentEncoding { .. } => (
                "urn:specgate:problem:unsupported-content-encoding",
                "Unsupported content encoding",
            ),
            Error::MalformedContentEncoding { .. } => (
                "urn:specgate:problem:malformed-content-encoding",
                "Body does not decode",
            ),
            Error::MalformedJson(_) => ("urn:specgate:problem:malformed-json", "Malformed JSON"),
            Error::MalformedMultipart(_) => (
                "urn:specgate:problem:malformed-multipart",
                "Malformed multipart body",
            ),
            Error::BodyNotAllowed => ("urn:specgate:problem:body-not-allowed", "No body expected"),
            Error::SchemaViolations { .. } => (
                "urn:specgate:problem:schema-violation",
                "Request body does not match the API schema",
            ),
            Error::ParameterViolations { .. } => (
                "urn:specgate:problem:parameter-violation",
                "Request parameters do not match the API schema",
            ),
            Error::UpstreamConnect(_) => (
                "urn:specgate:problem:upstream-connect",
                "Upstream unreachable",
            ),
            Error::UpstreamTls(_) => ("urn:specgate:problem:upstream-tls", "Upstream TLS failed"),
            Error::UpstreamTimeout { .. } => (
                "urn:specgate:problem:upstream-timeout",
                "Upstream timed out",
            ),
            Error::UpstreamProtocol(_) => (
                "urn:specgate:problem:upstream-protocol",
                "Upstream connection failed",
            ),
            Error::AuditUnavailable => (
                "urn:specgate:problem:audit-unavailable",
                "Audit log unavailable",
            ),
            Error::TokenUnavailable => (
                "urn:specgate:problem:token-unavailable",
                "API token not loaded",
            ),
            Error::TokenUnusable(_) => (
                "urn:specgate:problem:token-unusable",
                "API token unusable for this operation",
            ),
            Error::TokenEndpoint(_) => (
                "urn:specgate:problem:token-endpoint",
                "OAuth2 token endpoint failed",
            ),
            Error::MockNoExample { .. } => {
                ("urn:specgate:problem:mock-no-example", "No example to mock")
            }
            Error::AuditFailedAfterCreate { .. } => (
                "urn:specgate:problem:audit-failed-after-create",
                "Created upstream, but not audited",
            ),
            Error::Unauthenticated(_) => (
                "urn:specgate:problem:unauthenticated",
                "Client key required",
            ),
            Error::Forbidden { .. } => ("urn:specgate:problem:forbidden", "Operation not allowed"),
            Error::RateLimited { .. } => ("urn:specgate:problem:rate-limited", "Rate limited"),
            Error::Overloaded { .. } => ("urn:specgate:problem:overloaded", "Overloaded"),
            Error::RequestTimeout { .. } => {
                ("urn:specgate:problem:request-timeout", "Request timed out")
            }
            Error::UriTooLong { .. } => ("urn:specgate:problem:uri-too-long", "URI too long"),
            Error::HeadersTooLarge(_) => (
                "urn:specgate:problem:headers-too-large",
                "Header section too large",
            ),
            Error::DuplicateKey { .. } => (
                "urn:specgate:problem:duplicate-key",
                "Duplicate key in JSON",
            ),
            Error::JsonTooDeep { .. } => ("urn:specgate:problem:json-too-deep", "JSON too deep"),
        }
    }

    /// What happened to this request, for a person: the body's `detail` and `message`.
    pub fn detail(&self) -> String {
        match self {
            Error::RouteNotFound => {
                "no operation in the API spec matches this path; it was not forwarded".to_owned()
            }
            Error::MethodNotAllowed { method, allow } => format!(
                "{method} is not an operation on this path; the spec allows {}",
                allow.to_str().unwrap_or("")
            ),
            Error::UnsupportedMediaType { got, declared } => {
                let takes = match declared.as_slice() {
                    [] => "this operation declares no media type for its body".to_owned(),
                    [one] => format!("this operation takes {one}"),
                    many => format!("this operation takes one of {}", many.join(", ")),
                };
                match got {
                    Some(got) => format!("{takes}; the request's Content-Type is {got:?}"),
                    None => format!("{takes}; the request has no Content-Type"),
                }
            }
            Error::UnsupportedContentEncoding { got } => format!(
                "the request's Content-Encoding {got:?} cannot be decoded to check the body; \
                 send it with one of {} or uncompressed",
                crate::encoding::SUPPORTED
            ),
            Error::SchemaViolations { violations, .. }
            | Error::ParameterViolations { violations, .. } => match violations.as_slice() {
                [one] => one.title.clone(),
                many => format!("{} violations of the API schema; see errors", many.len()),
            },
            Error::AuditFailedAfterCreate { upstream_status } => format!(
                "the upstream answered {} but the audit record could not be written; the \
                 resource may exist upstream, so check before retrying",
                upstream_status.as_u16()
            ),
            other => other.to_string(),
        }
    }

    /// The body of this error's response: the problem, with `message` beside `detail`.
    pub fn body(&self, request_id: Option<&str>) -> Vec<u8> {
        let (kind, title) = self.type_and_title();
        let errors = match self {
            Error::SchemaViolations { violations, .. }
            | Error::ParameterViolations { violations, .. } => violations.as_slice(),
            _ => &[],
        };
        let detail = self.detail();
        let problem = Problem {
            kind,
            title,
            status: self.status().as_u16(),
            message: &detail,
            detail: detail.clone(),
            request_id,
            errors,
        };
        serde_json::to_vec(&problem).expect("a problem of strings and numbers always serialises")
    }

    /// Renders this error as the response the client receives, its body as `media_type`
    /// ([`error_media_type`] of the request's `Accept`).
    pub fn to_response(
        &self,
        request_id: Option<&str>,
        media_type: &'static str,
    ) -> Response<Body> {
        let mut response = Response::new(Body::full(Bytes::from(self.body(request_id))));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
        match self {
            Error::MethodNotAllowed { allow, .. } => {
                headers.insert(header::ALLOW, allow.clone());
            }
            Error::AuditUnavailable | Error::TokenUnavailable | Error::TokenUnusable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Error::Overloaded { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Error::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            // RFC 9110 §15.5.16: a 415 for a content coding lists the ones accepted.
            Error::UnsupportedContentEncoding { .. } => {
                headers.insert(
                    header::ACCEPT_ENCODING,
                    HeaderValue::from_static(crate::encoding::SUPPORTED),
                );
            }
            Error::Unauthenticated(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"specgate\""),
                );
            }
            // The rest of the request may still be on the wire: do not read it as the next one.
            Error::RequestTimeout { .. } | Error::UriTooLong { .. } | Error::HeadersTooLarge(_) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// The first cause of type `T` in an error's chain, looking inside `io::Error`s too (whose
/// `source()` skips the error they wrap).
pub fn find_cause<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && let Some(found) = find_cause::<T>(inner)
        {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// Shows an error with its chain of causes, for logs.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Some errors repeat their cause in their own message: each text is shown once.
        let mut text = self.0.to_string();
        let mut source = self.0.source();
        while let Some(cause) = source {
            let more = cause.to_string();
            if !text.contains(&more) {
                text.push_str(": ");
                text.push_str(&more);
            }
            source = cause.source();
        }
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use serde_json::{Value, json};

    async fn rendered(error: Error) -> (StatusCode, http::HeaderMap, Value) {
        let (parts, body) = error.to_response(Some("req-1"), PROBLEM_JSON).into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    #[tokio::test]
    async fn schema_violations_render_one_entry_each_with_a_pointer() {
        let error = Error::SchemaViolations {
            operation_id: "create-connection".into(),
            violations: vec![Violation {
                title: "/connection: missing required property 'name'".into(),
                code: "required",
                source: Source::body("/connection/name"),
            }],
        };
        let (status, headers, body) = rendered(error).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(headers[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(
            body,
            json!({
                "type": "urn:specgate:problem:schema-violation",
                "title": "Request body does not match the API schema",
                "status": 422,
                "detail": "/connection: missing required property 'name'",
                "message": "/connection: missing required property 'name'",
                "request_id": "req-1",
                "errors": [{
                    "title": "/connection: missing required property 'name'",
                    "code": "required",
                    "source": {"pointer": "/connection/name"}
                }]
            })
        );
    }

    #[test]
    fn errors_are_problem_json_unless_the_client_accepts_only_plain_json() {
        let pick = |accept: &'static str| error_media_type(Some(&HeaderValue::from_static(accept)));
        assert_eq!(error_media_type(None), PROBLEM_JSON);
        assert_eq!(pick("*/*"), PROBLEM_JSON);
        assert_eq!(pick("application/problem+json"), PROBLEM_JSON);
        assert_eq!(
            pick("application/json, application/problem+json"),
            PROBLEM_JSON
        );
        assert_eq!(pick("application/json"), "application/json");
        assert_eq!(
            pick("text/html, Application/JSON;q=0.9"),
            "application/json"
        );
        assert_eq!(
            pick("application/json, application/problem+json;q=0"),
            "application/json"
        );
        assert_eq!(pick("application/json;q=0"), PROBLEM_JSON);
        assert_eq!(pick("text/plain"), PROBLEM_JSON);
    }

    #[tokio::test]
    async fn method_not_allowed_carries_allow() {
        let error = Error::MethodNotAllowed {
            method: Method::GET,
            allow: HeaderValue::from_static("POST"),
        };
        let (status, headers, body) = rendered(error).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::ALLOW], "POST");
        assert_eq!(body["status"], 405);
        assert!(body.get("errors").is_none(), "no errors array outside 422s");
    }

    #[tokio::test]
    async fn upstream_errors_do_not_show_their_causes() {
        let cause: BoxError = "connect to 10.1.2.3:443: connection refused".into();
        let (status, _, body) = rendered(Error::UpstreamConnect(cause)).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(body["detail"], "could not connect to the upstream");
        let (status, _, body) = rendered(Error::UpstreamTimeout { timeout_ms: 250 }).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body["detail"], "the upstream did not respond within 250 ms");
    }

    #[test]
    fn every_status_maps_as_documented() {
        let cases = [
            (Error::RouteNotFound, 404),
            (Error::BadTarget("x"), 400),
            (Error::BodyTooLarge { limit: 1 }, 413),
            (
                Error::UnsupportedMediaType {
                    got: None,
                    declared: vec!["application/json".into()],
                },
                415,
            ),
            (Error::MalformedJson("x".into()), 400),
            (Error::BodyNotAllowed, 400),
            (Error::AuditUnavailable, 503),
            (Error::Unauthenticated("x"), 401),
            (
                Error::Forbidden {
                    client: Arc::from("a"),
                    operation_id: "op".into(),
                },
                403,
            ),
            (
                Error::RateLimited {
                    retry_after_secs: 1,
                },
                429,
            ),
            (Error::Overloaded { limit: 1 }, 503),
            (Error::RequestTimeout { timeout_ms: 1 }, 408),
            (Error::UriTooLong { len: 2, limit: 1 }, 414),
            (Error::HeadersTooLarge("x".into()), 431),
            (
                Error::DuplicateKey {
                    pointer: String::new(),
                    key: "k".into(),
                },
                400,
            ),
            (Error::JsonTooDeep { limit: 1 }, 400),
        ];
        for (error, status) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
        }
        assert_eq!(Error::RouteNotFound.kind(), "route-not-found");
    }
}
