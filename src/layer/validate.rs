//! Checks the request body against the operation's schema before anything leaves the machine.
//!
//! For an operation that takes JSON: the `Content-Type` must be JSON (415), the body must parse
//! (400) with no object holding a key twice and no nesting past the limit (400, see
//! [`crate::json`]), and satisfy the compiled schema (422, one entry per violation). The body is read once,
//! behind the limit layer, and forwarded as the very bytes the client sent. Operations without
//! a JSON body pass through unread.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower_layer::Layer;
use tower_service::Service;

use super::BoxFuture;
use super::limit::{MaxBody, is_limit_error};
use super::observe::OperationSlot;
use crate::body::Body;
use crate::error::{Error, Source, Violation};
use crate::route::Routed;
use crate::spec::{JsonBody, Operation, RequestBody, is_json, media_essence};

/// The parsed, valid JSON body, in the request's extensions (for the audit record).
#[derive(Clone, Debug)]
pub struct ParsedBody(pub Arc<Value>);

/// What a request's `Content-Type` says about its body, for an operation that declares one.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// JSON, to be read and validated.
    Json,
    /// A declared non-JSON media type, forwarded unread.
    Other,
    /// No `Content-Type` at all: acceptable only for an empty body.
    Unlabelled,
}

/// Decides what kind of body the request carries, or refuses it with 415.
pub fn body_kind(body: &RequestBody, headers: &HeaderMap) -> Result<BodyKind, Error> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let Some(value) = values.next() else {
        return Ok(BodyKind::Unlabelled);
    };
    if values.next().is_some() {
        // Whichever one the upstream reads, it may not be the one checked here.
        return Err(Error::UnsupportedMediaType {
            got: Some("more than one Content-Type".to_owned()),
        });
    }
    let got = || Error::UnsupportedMediaType {
        got: Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
    };
    let text = value.to_str().map_err(|_| got())?;
    let essence = media_essence(text);
    if body.json.is_some() && is_json(&essence) {
        // JSON is UTF-8 (RFC 8259): a body labelled otherwise could be decoded upstream into
        // something other than what was validated here.
        if !charset_is_utf8(text) {
            return Err(got());
        }
        return Ok(BodyKind::Json);
    }
    let declared = body
        .media_types
        .iter()
        .any(|declared| media_matches(declared, &essence));
    match (declared, is_json(&essence)) {
        (true, false) => Ok(BodyKind::Other),
        _ => Err(got()),
    }
}

/// Whether a `Content-Type` value has no `charset` parameter, or says UTF-8.
fn charset_is_utf8(content_type: &str) -> bool {
    content_type.split(';').skip(1).all(|param| {
        let Some((name, value)) = param.split_once('=') else {
            return true;
        };
        if !name.trim().eq_ignore_ascii_case("charset") {
            return true;
        }
        let value = value.trim().trim_matches('"');
        value.eq_ignore_ascii_case("utf-8") || value.eq_ignore_ascii_case("utf8")
    })
}

fn media_matches(declared: &str, essence: &str) -> bool {
    match declared.split_once('/') {
        Some(("*", "*")) => true,
        Some((kind, "*")) => essence.split_once('/').is_some_and(|(k, _)| k == kind),
        _ => declared == essence,
    }
}

/// Parses and validates a JSON body. An empty body is a missing one; a body with a repeated key
/// or nesting deeper than `max_depth` is refused before the schema sees it.
pub fn validate_json(
    operation: &Operation,
    json: &JsonBody,
    required: bool,
    bytes: &[u8],
    max_depth: usize,
) -> Result<Option<Value>, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        if !required {
            return Ok(None);
        }
        return Err(Error::SchemaViolations {
            operation_id: operation.id.to_string(),
            violations: vec![Violation {
                title: "body: a JSON request body is required".into(),
                code: "required",
                source: Source {
                    pointer: String::new(),
                },
            }],
        });
    }
    let value = crate::json::parse(bytes, max_depth)?;
    let Some(schema) = &json.schema else {
        return Ok(Some(value));
    };
    // The fast check first: a valid body (the common case) never builds error messages.
    match schema.check(value) {
        Ok(value) => Ok(Some(value)),
        Err(violations) => Err(Error::SchemaViolations {
            operation_id: operation.id.to_string(),
            violations,
        }),
    }
}

/// Checks an already read body against `operation`: the parsed JSON body, if it has one, or
/// the refusal.
pub fn check_body(
    operation: &Operation,
    headers: &HeaderMap,
    bytes: &[u8],
    max_depth: usize,
) -> Result<Option<Value>, Error> {
    let Some(body) = &operation.body else {
        return match bytes.is_empty() {
            true => Ok(None),
            false => Err(Error::BodyNotAllowed),
        };
    };
    match body_kind(body, headers)? {
        BodyKind::Other => Ok(None),
        BodyKind::Unlabelled if !bytes.is_empty() => Err(Error::UnsupportedMediaType { got: None }),
        _ => match &body.json {
            Some(json) => validate_json(operation, json, body.required, bytes, max_depth),
            None if body.required && bytes.is_empty() => {
                Err(Error::UnsupportedMediaType { got: None })
            }
            None => Ok(None),
        },
    }
}

/// Adds [`Validate`].
#[derive(Clone, Copy, Debug)]
pub struct ValidateLayer {
    max_depth: usize,
}

impl ValidateLayer {
    /// Validates bodies, refusing JSON nested deeper than `max_depth`.
    pub fn new(max_depth: usize) -> Self {
        ValidateLayer { max_depth }
    }
}

impl Default for ValidateLayer {
    fn default() -> Self {
        ValidateLayer::new(crate::json::DEFAULT_MAX_DEPTH)
    }
}

impl<S> Layer<S> for ValidateLayer {
    type Service = Validate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Validate {
            inner,
            max_depth: self.max_depth,
        }
    }
}

/// Validates request bodies of routed operations.
#[derive(Clone, Debug)]
pub struct Validate<S> {
    inner: S,
    max_depth: usize,
}

impl<S> Service<Request<Body>> for Validate<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The ready inner service serves this request; a fresh clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let max_depth = self.max_depth;
        Box::pin(async move {
            let routed = req
                .extensions()
                .get::<Routed>()
                .expect("the route layer runs before validation")
                .clone();
            if routed.candidates.len() > 1 {
                return choose(inner, req, &routed, max_depth).await;
            }
            let operation = &routed.operation;
            let Some(body) = &operation.body else {
                if routed.unspecified || http_body::Body::is_end_stream(req.body()) {
                    return inner.call(req).await;
                }
                // The spec declares no body: one that is there is read (behind the limit) to
                // see that it is empty, and refused if not, rather than sent on unchecked.
                let (parts, incoming) = req.into_parts();
                let limit = parts.extensions.get::<MaxBody>().map_or(0, |m| m.0);
                if !read(incoming, limit).await?.is_empty() {
                    return Err(Error::BodyNotAllowed);
                }
                return inner.call(Request::from_parts(parts, Body::empty())).await;
            };
            let kind = body_kind(body, req.headers())?;
            if kind == BodyKind::Other {
                return inner.call(req).await;
            }
            let (mut parts, incoming) = req.into_parts();
            let limit = parts.extensions.get::<MaxBody>().map_or(0, |m| m.0);
            let bytes = read(incoming, limit).await?;
            if kind == BodyKind::Unlabelled && !bytes.is_empty() {
                return Err(Error::UnsupportedMediaType { got: None });
            }
            let parsed = match &body.json {
                Some(json) => validate_json(operation, json, body.required, &bytes, max_depth)?,
                None if body.required && bytes.is_empty() => {
                    return Err(Error::UnsupportedMediaType { got: None });
                }
                None => None,
            };
            if let Some(value) = parsed {
                parts.extensions.insert(ParsedBody(Arc::new(value)));
            }
            inner
                .call(Request::from_parts(parts, Body::full(bytes)))
                .await
        })
    }
}

/// Several operations share the request's path and method: the body is read once and the
/// first operation it is valid for is the request's, recorded in its [`Routed`] (so the audit
/// names it). Valid for none, the first one's refusal is the answer.
async fn choose<S>(
    mut inner: S,
    req: Request<Body>,
    routed: &Routed,
    max_depth: usize,
) -> Result<Response<Body>, Error>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    let (mut parts, incoming) = req.into_parts();
    let limit = parts.extensions.get::<MaxBody>().map_or(0, |m| m.0);
    let bytes = read(incoming, limit).await?;
    let mut refusal = None;
    for operation in routed.candidates.iter() {
        match check_body(operation, &parts.headers, &bytes, max_depth) {
            Ok(parsed) => {
                if let Some(slot) = parts.extensions.get::<OperationSlot>() {
                    slot.set(operation.clone());
                }
                parts.extensions.insert(routed.chosen(operation));
                if let Some(value) = parsed {
                    parts.extensions.insert(ParsedBody(Arc::new(value)));
                }
                return inner
                    .call(Request::from_parts(parts, Body::full(bytes)))
                    .await;
            }
            Err(error) => {
                refusal.get_or_insert(error);
            }
        }
    }
    if let Some(slot) = parts.extensions.get::<OperationSlot>() {
        slot.set(routed.operation.clone());
    }
    Err(refusal.expect("a route has at least one operation"))
}

async fn read(body: Body, limit: u64) -> Result<Bytes, Error> {
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if is_limit_error(&*e) => Err(Error::BodyTooLarge { limit }),
        Err(e) => Err(Error::BodyRead(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::route::RouteLayer;
    use crate::layer::testing::recorder;
    use crate::route::RouteTable;
    use crate::spec::{Spec, SpecSource};
    use http::StatusCode;
    use tower::ServiceExt;

    const VALID: &str = r#"{"connection":{"service":"fooCommerce","externalid":"toystore123","name":"Toystore, Inc.","logoUrl":"http://example.com/i/foo.png","linkUrl":"http://example.com/foo/","listId":"1"}}"#;

    async fn send(
        content_type: Option<&str>,
        body: &'static str,
    ) -> (Result<Response<Body>, Error>, usize) {
        let spec = Spec::load(&SpecSource::default()).unwrap();
        let route = RouteLayer::new(Arc::new(RouteTable::new(&spec)));
        let (seen, inner) = recorder();
        let mut req = Request::post("/api/3/connections");
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let result = route
            .layer(ValidateLayer::default().layer(inner))
            .oneshot(req.body(Body::from(body)).unwrap())
            .await;
        let forwarded = seen.lock().unwrap().len();
        (result, forwarded)
    }

    fn status(result: &Result<Response<Body>, Error>) -> StatusCode {
        match result {
            Ok(r) => r.status(),
            Err(e) => e.status(),
        }
    }

    #[tokio::test]
    async fn a_valid_body_is_forwarded_unchanged() {
        let (seen, inner) = recorder();
        let spec = Spec::load(&SpecSource::default()).unwrap();
        let stack = RouteLayer::new(Arc::new(RouteTable::new(&spec)))
            .layer(ValidateLayer::default().layer(inner));
        let req = Request::post("/connections")
            .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
            .body(Body::from(VALID))
            .unwrap();
        stack.oneshot(req).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(&seen[0].body()[..], VALID.as_bytes());
        assert_eq!(
            seen[0].extensions().get::<ParsedBody>().unwrap().0["connection"]["listId"],
            "1"
        );
    }

    #[tokio::test]
    async fn each_kind_of_bad_body_gets_its_status_and_is_not_forwarded() {
        let cases: [(Option<&str>, &'static str, u16); 10] = [
            (Some("text/plain"), VALID, 415),
            (None, VALID, 415),
            (Some("application/json"), "{\"connection\":", 400),
            (Some("application/json"), "{}", 422),
            (Some("application/json"), "{\"connection\": null}", 422),
            (Some("application/json"), "", 422),
            (Some("application/json"), "[1,2]", 422),
            (
                Some("application/json"),
                r#"{"connection":{"service":"a","service":"b"}}"#,
                400,
            ),
            (
                Some("application/json"),
                r#"{"connection":{},"connection":{}}"#,
                400,
            ),
            (
                Some("application/json"),
                r#"{"connection":{"name":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}"#,
                400,
            ),
        ];
        for (content_type, body, expected) in cases {
            let (result, forwarded) = send(content_type, body).await;
            assert_eq!(
                status(&result).as_u16(),
                expected,
                "{content_type:?} {body:?}"
            );
            assert_eq!(forwarded, 0, "{content_type:?} {body:?} was forwarded");
        }
    }

    #[tokio::test]
    async fn violations_name_each_missing_field() {
        let (result, _) = send(
            Some("application/json"),
            r#"{"connection":{"service":"s","externalid":1}}"#,
        )
        .await;
        let Err(Error::SchemaViolations { violations, .. }) = result else {
            panic!("expected 422")
        };
        let titles: Vec<&str> = violations.iter().map(|v| v.title.as_str()).collect();
        assert!(
            titles.contains(&"/connection: missing required property 'name'"),
            "{titles:?}"
        );
        assert!(
            titles.contains(&"/connection/externalid: expected string, got integer"),
            "{titles:?}"
        );
        let pointers: Vec<&str> = violations
            .iter()
            .map(|v| v.source.pointer.as_str())
            .collect();
        assert!(pointers.contains(&"/connection/logoUrl"), "{pointers:?}");
    }

    #[test]
    fn json_labelled_in_another_charset_is_refused() {
        assert!(charset_is_utf8("application/json"));
        assert!(charset_is_utf8("application/json; charset=UTF-8"));
        assert!(charset_is_utf8("application/json;charset=\"utf-8\""));
        assert!(!charset_is_utf8("application/json; charset=utf-16"));
        assert!(!charset_is_utf8("application/json; charset=latin1"));
        assert!(!charset_is_utf8("application/json; a=b; charset=utf-7"));
    }

    #[tokio::test]
    async fn a_body_in_another_charset_is_415_and_not_forwarded() {
        let (result, forwarded) = send(Some("application/json; charset=utf-16"), VALID).await;
        assert_eq!(status(&result), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(forwarded, 0);
    }

    #[test]
    fn media_types_match_with_wildcards() {
        assert!(media_matches("*/*", "text/plain"));
        assert!(media_matches("image/*", "image/png"));
        assert!(!media_matches("image/*", "text/png"));
        assert!(!media_matches("application/json", "application/jsonx"));
    }
}
