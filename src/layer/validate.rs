//! Checks a request against its operation before anything leaves the machine: parameters,
//! then the body in whichever declared media type it comes in.
//!
//! Parameters (path, query, header, cookie) are read and checked as [`crate::params`] says
//! (422 naming the parameter). The body's `Content-Type` selects one of the media types the
//! operation declares, exactly (`application/merge-patch+json`), as JSON for any JSON type, or
//! through a range (`application/*`, `*/*`); none selects 415 listing what is declared. Then
//! the request's own type says how the body is read:
//!
//! - JSON (`application/json`, any `+json`): parsed (400 for malformed JSON, a key given twice
//!   or nesting past the limit, see [`crate::json`]) and checked against the schema (422);
//! - `application/x-www-form-urlencoded`: read into the JSON its schema means
//!   ([`crate::form`]) and checked;
//! - `multipart/form-data`: each part read as a field ([`crate::multipart`]) and checked;
//! - anything else the operation declares (XML, YAML, octet-stream) is forwarded unread and
//!   counted in `specgate_unvalidated_total`: unreadable is not the same as wrong.
//!
//! A body is read once, behind the limit layer, and forwarded as the very bytes the client sent.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower_layer::Layer;
use tower_service::Service;

use super::BoxFuture;
use super::limit::{MaxBody, is_limit_error};
use super::observe::OperationSlot;
use crate::body::Body;
use crate::error::{Error, Source, Violation};
use crate::metrics::Metrics;
use crate::route::Routed;
use crate::spec::{Enforce, Media, Operation, RequestBody, is_json, media_essence};

/// The parsed, valid body (a form's or multipart's fields as JSON), in the request's
/// extensions (for the audit record).
#[derive(Clone, Debug)]
pub struct ParsedBody(pub Arc<Value>);

/// How a body is read, by the request's own media type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reading {
    /// Parsed as JSON.
    Json,
    /// Read as form fields.
    Form,
    /// Read as multipart parts, with this boundary.
    Multipart(String),
    /// Not read: forwarded as it is.
    Unread,
}

/// What a request's `Content-Type` selects, for an operation that declares a body.
#[derive(Debug)]
pub enum Selected<'a> {
    /// No `Content-Type` at all: acceptable only for an empty body.
    Unlabelled,
    /// This declared media type, read this way.
    Media(&'a Media, Reading),
}

/// The declared media type the request's `Content-Type` selects, and how to read the body; or
/// 415.
pub fn select<'a>(body: &'a RequestBody, headers: &HeaderMap) -> Result<Selected<'a>, Error> {
    let refused = |got: String| Error::UnsupportedMediaType {
        got: Some(got),
        declared: declared(body),
    };
    let value = match content_type(headers) {
        Ok(Some(value)) => value,
        Ok(None) => return Ok(Selected::Unlabelled),
        Err(TwoContentTypes) => return Err(refused("more than one Content-Type".to_owned())),
    };
    let text = value
        .to_str()
        .map_err(|_| refused(String::from_utf8_lossy(value.as_bytes()).into_owned()))?;
    let essence = media_essence(text);
    let reading = match essence.as_str() {
        e if is_json(e) => {
            // JSON is UTF-8 (RFC 8259): a body labelled otherwise could be decoded upstream
            // into something other than what was validated here.
            if !charset_is_utf8(text) {
                return Err(refused(text.to_owned()));
            }
            Reading::Json
        }
        "application/x-www-form-urlencoded" => Reading::Form,
        "multipart/form-data" => match parameter(text, "boundary") {
            Some(boundary) => Reading::Multipart(boundary),
            None => return Err(refused(text.to_owned())),
        },
        _ => Reading::Unread,
    };
    let exact = body.media.iter().find(|m| m.range == essence);
    // Any JSON type the operation takes is read as JSON with that type's schema.
    let json = || {
        (reading == Reading::Json)
            .then(|| body.media.iter().find(|m| is_json(&m.range)))
            .flatten()
    };
    let range = || body.media.iter().find(|m| m.admits(&essence));
    match exact.or_else(json).or_else(range) {
        Some(media) => Ok(Selected::Media(media, reading)),
        None => Err(refused(text.to_owned())),
    }
}

fn declared(body: &RequestBody) -> Vec<String> {
    body.media.iter().map(|m| m.range.clone()).collect()
}

/// The value of parameter `name` of a media type (`boundary` of `multipart/form-data; ...`).
fn parameter(content_type: &str, name: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().trim_matches('"').to_owned())
            .filter(|v| !v.is_empty())
    })
}

/// Whether a `Content-Type` value has no `charset` parameter, or says UTF-8.
fn charset_is_utf8(content_type: &str) -> bool {
    parameter(content_type, "charset")
        .is_none_or(|v| v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("utf8"))
}

/// Reads a body of `media` as `reading` and checks it against the schema when `schema` is set:
/// the value read (for the audit record), `None` for an empty body the operation does not
/// require. Without `schema` a JSON body is still read (a key given twice and nesting past
/// `max_depth` are refused in every mode) and other bodies are not read at all.
pub fn check_media(
    operation: &Operation,
    media: &Media,
    reading: &Reading,
    required: bool,
    bytes: &[u8],
    max_depth: usize,
    schema: bool,
) -> Result<Option<Value>, Error> {
    if !schema {
        return match reading {
            Reading::Json if !bytes.iter().all(u8::is_ascii_whitespace) => {
                crate::json::parse(bytes, max_depth).map(Some)
            }
            _ => Ok(None),
        };
    }
    let empty = match reading {
        Reading::Json => bytes.iter().all(u8::is_ascii_whitespace),
        _ => bytes.is_empty(),
    };
    if empty {
        return match required {
            true => Err(body_required(operation)),
            false => Ok(None),
        };
    }
    let (value, mut violations) = match (reading, &media.fields) {
        (Reading::Json, _) => (crate::json::parse(bytes, max_depth)?, Vec::new()),
        (Reading::Form, Some(fields)) => (crate::form::read_urlencoded(bytes, fields), Vec::new()),
        (Reading::Multipart(boundary), Some(fields)) => {
            crate::multipart::read(bytes, boundary, fields)?
        }
        _ => return Ok(None),
    };
    // The fast check first: a valid body (the common case) never builds error messages.
    let checked = match &media.schema {
        Some(schema) => schema.check(value),
        None => Ok(value),
    };
    match checked {
        Ok(value) if violations.is_empty() => return Ok(Some(value)),
        Ok(_) => {}
        Err(found) => violations.extend(found),
    }
    Err(Error::SchemaViolations {
        operation_id: operation.id.to_string(),
        violations,
    })
}

fn body_required(operation: &Operation) -> Error {
    Error::SchemaViolations {
        operation_id: operation.id.to_string(),
        violations: vec![Violation {
            title: "body: a request body is required".into(),
            code: "required",
            source: Source::body(""),
        }],
    }
}

/// Checks a whole request, its body already read: parameters, then the body. The value of the
/// body checked, if one was read.
pub fn check_request(
    routed: &Routed,
    operation: &Operation,
    query: Option<&str>,
    headers: &HeaderMap,
    bytes: &[u8],
    max_depth: usize,
) -> Result<Option<Value>, Error> {
    crate::params::check(operation, &routed.operation_path, query, headers)?;
    let selected = match &operation.body {
        Some(body) => Some((body, select(body, headers)?)),
        None => None,
    };
    check_selected(operation, selected, bytes, max_depth, true)
}

/// Checks a body already read, given what its `Content-Type` selected (`None` for an
/// operation that declares no body); against the schema only when `schema` is set.
fn check_selected(
    operation: &Operation,
    selected: Option<(&RequestBody, Selected<'_>)>,
    bytes: &[u8],
    max_depth: usize,
    schema: bool,
) -> Result<Option<Value>, Error> {
    match selected {
        Some((body, Selected::Media(media, reading))) => check_media(
            operation,
            media,
            &reading,
            body.required,
            bytes,
            max_depth,
            schema,
        ),
        // Without the schema, nothing else here is checked.
        _ if !schema => Ok(None),
        None if bytes.is_empty() => Ok(None),
        None => Err(Error::BodyNotAllowed),
        Some((body, Selected::Unlabelled)) if bytes.is_empty() => match body.required {
            true => Err(body_required(operation)),
            false => Ok(None),
        },
        Some((body, Selected::Unlabelled)) => Err(Error::UnsupportedMediaType {
            got: None,
            declared: declared(body),
        }),
    }
}

/// The longest pointer or parameter name a report keeps, in characters.
const MAX_REPORTED: usize = 256;

/// The refusal a request forwarded in report mode would have got: its kind and where, never
/// a value. In the request's extensions, for the audit record's `violations`.
#[derive(Clone, Debug)]
pub struct Reported {
    /// The kind of refusal (`schema-violation`, `unsupported-media-type`, ...).
    pub kind: &'static str,
    /// Where each violation is: a body pointer or a parameter; empty for a refusal of the
    /// whole body (its media type, its coding).
    pub at: Vec<Source>,
}

impl Reported {
    /// As the audit record's `violations` holds it: `{"kind": …, "at": [{"pointer": …}]}`.
    pub fn audit_value(&self) -> Value {
        serde_json::json!({"kind": self.kind, "at": self.at})
    }

    fn of(error: &Error) -> Reported {
        // A pointer can hold a property name the client made up: kept short.
        let short = |text: &str| text.chars().take(MAX_REPORTED).collect::<String>();
        let at = match error {
            Error::SchemaViolations { violations, .. }
            | Error::ParameterViolations { violations, .. } => violations
                .iter()
                .map(|v| match &v.source {
                    Source::Body { pointer } => Source::body(short(pointer)),
                    Source::Parameter { parameter } => Source::parameter(short(parameter)),
                })
                .collect(),
            _ => Vec::new(),
        };
        Reported {
            kind: error.kind(),
            at,
        }
    }
}

/// Whether `error` is one the `report` and `off` modes forward anyway: what the document says
/// about the request, not what keeps the gateway safe (limits, a body that could not be read
/// or decoded, JSON that does not parse, a key given twice, nesting too deep).
pub fn relaxable(error: &Error) -> bool {
    // Not JSON that does not parse (a key given twice can hide after the first error), nor a
    // Content-Encoding refusal (a body that cannot be decoded within the limit cannot be
    // checked for either).
    matches!(
        error,
        Error::SchemaViolations { .. }
            | Error::ParameterViolations { .. }
            | Error::UnsupportedMediaType { .. }
            | Error::MalformedMultipart(_)
            | Error::BodyNotAllowed
    )
}

/// Adds [`Validate`].
#[derive(Clone, Debug)]
pub struct ValidateLayer {
    max_depth: usize,
    mode: Enforce,
    metrics: Option<Metrics>,
}

impl ValidateLayer {
    /// Validates requests, refusing JSON nested deeper than `max_depth`, in `mode` where an
    /// operation's `x-specgate-enforce` does not say; bodies forwarded unread and requests
    /// forwarded in report mode are counted in `metrics`.
    pub fn new(max_depth: usize, mode: Enforce, metrics: Metrics) -> Self {
        ValidateLayer {
            max_depth,
            mode,
            metrics: Some(metrics),
        }
    }
}

impl Default for ValidateLayer {
    fn default() -> Self {
        ValidateLayer {
            max_depth: crate::json::DEFAULT_MAX_DEPTH,
            mode: Enforce::Enforce,
            metrics: None,
        }
    }
}

impl<S> Layer<S> for ValidateLayer {
    type Service = Validate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Validate {
            inner,
            max_depth: self.max_depth,
            mode: self.mode,
            metrics: self.metrics.clone(),
        }
    }
}

/// Validates routed requests.
#[derive(Clone, Debug)]
pub struct Validate<S> {
    inner: S,
    max_depth: usize,
    mode: Enforce,
    metrics: Option<Metrics>,
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
        let default_mode = self.mode;
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let routed = req
                .extensions()
                .get::<Routed>()
                .expect("the route layer runs before validation")
                .clone();
            if routed.unspecified {
                return inner.call(req).await;
            }
            // Where operations share a path and method, the strictest of theirs.
            let mode = routed
                .candidates
                .iter()
                .map(|op| op.enforce.unwrap_or(default_mode))
                .min()
                .unwrap_or(default_mode);
            let (mut req, verdict) = if routed.candidates.len() > 1 {
                choose(req, &routed, max_depth, mode).await
            } else {
                checked(req, &routed, max_depth, mode, metrics.as_ref()).await
            };
            match verdict {
                Ok(()) => {}
                Err(refusal) if mode == Enforce::Enforce || !relaxable(&refusal) => {
                    return Err(refusal);
                }
                Err(refusal) => {
                    if mode == Enforce::Report {
                        let operation = req
                            .extensions()
                            .get::<Routed>()
                            .map_or(routed.operation.clone(), |r| r.operation.clone());
                        let reported = Reported::of(&refusal);
                        tracing::warn!(
                            operation = &*operation.id,
                            kind = reported.kind,
                            at = ?reported.at,
                            "report mode: forwarded a request enforce mode would refuse"
                        );
                        if let Some(metrics) = &metrics {
                            metrics.request_violation(&operation.id, mode.name());
                        }
                        req.extensions_mut().insert(reported);
                    }
                }
            }
            inner.call(req).await
        })
    }
}

/// A request checked against its one operation in `mode`: what to forward (a body that was
/// read, as the bytes sent) and the refusal validation gives it, if any. `off` checks no
/// parameter and no schema. Outside `enforce`, a request whose parameters or media type fail
/// still has its body read within the limits and, where it is (or the operation takes) JSON,
/// parsed for what every mode refuses: a key given twice, nesting too deep, JSON that is not.
async fn checked(
    req: Request<Body>,
    routed: &Routed,
    max_depth: usize,
    mode: Enforce,
    metrics: Option<&Metrics>,
) -> (Request<Body>, Result<(), Error>) {
    let operation = &routed.operation;
    let enforce = mode == Enforce::Enforce;
    let schema = mode != Enforce::Off;
    let mut refusal = None;
    if schema
        && let Err(error) = crate::params::check(
            operation,
            &routed.operation_path,
            req.uri().query(),
            req.headers(),
        )
    {
        if enforce {
            return (req, Err(error));
        }
        refusal = Some(error);
    }
    let selected = match &operation.body {
        Some(body) => match select(body, req.headers()) {
            Ok(selected) => Some((body, selected)),
            Err(error) if enforce => return (req, Err(error)),
            Err(error) => {
                refusal.get_or_insert(error);
                None
            }
        },
        None => None,
    };
    let unselected = operation.body.is_some() && selected.is_none();
    match &selected {
        Some((_, Selected::Media(_, Reading::Unread))) if refusal.is_none() => {
            // Declared, but not a type specgate reads: forwarded as it streams.
            if let Some(metrics) = metrics {
                metrics.unvalidated(&operation.id, "unreadable_media_type");
            }
            return (req, Ok(()));
        }
        None if !unselected && http_body::Body::is_end_stream(req.body()) => {
            return (req, refusal.map_or(Ok(()), Err));
        }
        // A body the operation does not declare is read (behind the limit) to see that it is
        // empty, and refused if not, rather than sent on unchecked.
        _ => {}
    }
    let (mut parts, bytes, decoded) = match read_body(req).await {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    let verdict = if unselected {
        // Its media type was refused: read as JSON where it could be, for safety alone.
        let label = content_type(&parts.headers).ok().flatten();
        let json = label
            .and_then(|v| v.to_str().ok())
            .is_some_and(|text| is_json(&media_essence(text)))
            || operation
                .body
                .as_ref()
                .is_some_and(|b| b.media.iter().any(|m| is_json(&m.range)));
        match json && !decoded.iter().all(u8::is_ascii_whitespace) {
            true => crate::json::parse(&decoded, max_depth).map(|_| ()),
            false => Ok(()),
        }
    } else {
        check_selected(operation, selected, &decoded, max_depth, schema).map(|parsed| {
            if let Some(value) = parsed {
                parts.extensions.insert(ParsedBody(Arc::new(value)));
            }
        })
    };
    // What every mode refuses wins over what the mode forgives; else the first refusal.
    let verdict = match (refusal, verdict) {
        (_, Err(error)) if !relaxable(&error) => Err(error),
        (Some(first), _) => Err(first),
        (None, verdict) => verdict,
    };
    // A create forwarded despite its schema is still audited with the fields it sent.
    if !enforce
        && matches!(&verdict, Err(error) if relaxable(error))
        && parts.extensions.get::<ParsedBody>().is_none()
        && let Ok(value) = crate::json::parse(&decoded, max_depth)
    {
        parts.extensions.insert(ParsedBody(Arc::new(value)));
    }
    (Request::from_parts(parts, Body::full(bytes)), verdict)
}

/// A request labelled with more than one `Content-Type`: whichever one the upstream reads, it
/// may not be the one checked here.
struct TwoContentTypes;

/// The request's `Content-Type`, if it has one; never one of several.
fn content_type(headers: &HeaderMap) -> Result<Option<&HeaderValue>, TwoContentTypes> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let first = values.next();
    match values.next() {
        Some(_) => Err(TwoContentTypes),
        None => Ok(first),
    }
}

/// Several operations share the request's path and method: the body is read once and the
/// first operation the request is valid for is the request's, recorded in its [`Routed`] (so
/// the audit names it). Valid for none, the first one's refusal is the verdict.
async fn choose(
    req: Request<Body>,
    routed: &Routed,
    max_depth: usize,
    mode: Enforce,
) -> (Request<Body>, Result<(), Error>) {
    let (mut parts, bytes, decoded) = match read_body(req).await {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    let mut refusal = None;
    for operation in routed.candidates.iter() {
        let query = parts.uri.query();
        let checked = check_request(
            routed,
            operation,
            query,
            &parts.headers,
            &decoded,
            max_depth,
        );
        match checked {
            Ok(parsed) => {
                if let Some(slot) = parts.extensions.get::<OperationSlot>() {
                    slot.set(operation.clone());
                }
                parts.extensions.insert(routed.chosen(operation));
                if let Some(value) = parsed {
                    parts.extensions.insert(ParsedBody(Arc::new(value)));
                }
                return (Request::from_parts(parts, Body::full(bytes)), Ok(()));
            }
            // What every mode refuses is the answer, whichever candidate found it.
            Err(error) if !relaxable(&error) => {
                return (Request::from_parts(parts, Body::full(bytes)), Err(error));
            }
            Err(error) => {
                refusal.get_or_insert(error);
            }
        }
    }
    if let Some(slot) = parts.extensions.get::<OperationSlot>() {
        slot.set(routed.operation.clone());
    }
    // Forwarded anyway (report, off), it goes as the first candidate.
    if mode != Enforce::Enforce {
        parts.extensions.insert(routed.chosen(&routed.operation));
    }
    let refusal = refusal.expect("a route has at least one operation");
    (Request::from_parts(parts, Body::full(bytes)), Err(refusal))
}

/// The request's body, read within the body limit: its head, the body as sent (to forward)
/// and with its `Content-Encoding` undone (to check), the decoded size within the same limit.
/// Refused, the request as far as it can still be forwarded: a coding specgate cannot decode
/// is refused before the body is read, one that does not decode after.
#[allow(clippy::result_large_err)]
async fn read_body(
    req: Request<Body>,
) -> Result<(http::request::Parts, Bytes, Bytes), (Request<Body>, Result<(), Error>)> {
    let coding = match crate::encoding::coding(req.headers()) {
        Ok(coding) => coding,
        Err(refusal) => return Err((req, Err(refusal))),
    };
    let (parts, body) = req.into_parts();
    // Without the limit layer (unit tests of this layer alone), nothing is too large.
    let limit = parts.extensions.get::<MaxBody>().map_or(u64::MAX, |m| m.0);
    let sent = match read(body, limit).await {
        Ok(sent) => sent,
        Err(refusal) => return Err((Request::from_parts(parts, Body::empty()), Err(refusal))),
    };
    if coding.is_none() || sent.is_empty() {
        return Ok((parts, sent.clone(), sent));
    }
    let _permit = crate::encoding::DECODING
        .acquire()
        .await
        .expect("the semaphore is never closed");
    match crate::encoding::decode(coding, &sent, limit) {
        Ok(decoded) => {
            let decoded = Bytes::from(decoded.into_owned());
            Ok((parts, sent, decoded))
        }
        Err(refusal) => Err((Request::from_parts(parts, Body::full(sent)), Err(refusal))),
    }
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

    /// The bad bodies of the test above, and whether the report and off modes forward each:
    /// all but JSON that does not parse, the key given twice and the nesting too deep.
    const BAD: [(Option<&str>, &str, bool); 8] = [
        (Some("text/plain"), VALID, true),
        (None, VALID, true),
        (Some("application/json"), "{\"connection\":", false),
        (Some("application/json"), "{}", true),
        (Some("application/json"), "", true),
        (Some("application/json"), "[1,2]", true),
        (
            Some("application/json"),
            r#"{"connection":{"service":"a","service":"b"}}"#,
            false,
        ),
        (
            Some("application/json"),
            r#"{"connection":{"name":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}"#,
            false,
        ),
    ];

    async fn send_in(
        mode: Enforce,
        content_type: Option<&str>,
        body: &'static str,
    ) -> (Result<Response<Body>, Error>, Vec<Request<Bytes>>) {
        let spec = Spec::load(&SpecSource::default()).unwrap();
        let route = RouteLayer::new(Arc::new(RouteTable::new(&spec)));
        let (seen, inner) = recorder();
        let layer = ValidateLayer {
            mode,
            ..ValidateLayer::default()
        };
        let mut req = Request::post("/api/3/connections");
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let result = route
            .layer(layer.layer(inner))
            .oneshot(req.body(Body::from(body)).unwrap())
            .await;
        let forwarded = std::mem::take(&mut *seen.lock().unwrap());
        (result, forwarded)
    }

    #[tokio::test]
    async fn report_and_off_forward_what_enforce_refuses_except_what_keeps_the_gateway_safe() {
        for (content_type, body, relaxed) in BAD {
            let (enforced, forwarded) = send_in(Enforce::Enforce, content_type, body).await;
            assert!(enforced.is_err() && forwarded.is_empty(), "{body:?}");
            for mode in [Enforce::Report, Enforce::Off] {
                let (result, forwarded) = send_in(mode, content_type, body).await;
                assert_eq!(forwarded.len(), usize::from(relaxed), "{mode:?} {body:?}");
                if !relaxed {
                    assert_eq!(
                        status(&result),
                        status(&enforced),
                        "{mode:?} {body:?}: the same refusal"
                    );
                    continue;
                }
                let sent = &forwarded[0];
                assert_eq!(&sent.body()[..], body.as_bytes(), "forwarded as sent");
                let reported = sent.extensions().get::<Reported>();
                match mode {
                    Enforce::Report => {
                        let Err(refusal) = &enforced else {
                            unreachable!()
                        };
                        assert_eq!(reported.unwrap().kind, refusal.kind(), "{body:?}");
                    }
                    _ => assert!(reported.is_none(), "off reports nothing"),
                }
            }
        }
        // A valid body is forwarded alike, with nothing reported.
        let (_, forwarded) = send_in(Enforce::Report, Some("application/json"), VALID).await;
        assert!(forwarded[0].extensions().get::<Reported>().is_none());
        assert!(forwarded[0].extensions().get::<ParsedBody>().is_some());
    }

    #[tokio::test]
    async fn a_forgiven_refusal_never_hides_what_every_mode_refuses() {
        let doc = serde_json::json!({"openapi": "3.1.0", "info": {"title": "t", "version": "1"},
            "paths": {"/things/{id}": {"put": {
                "parameters": [{"name": "id", "in": "path", "required": true,
                                "schema": {"type": "integer"}}],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "ok"}}}}}});
        let spec = Spec::compile("t", doc).unwrap();
        let send = |path: &'static str,
                    content_type: &'static str,
                    encoding: Option<&'static str>,
                    body: &'static [u8]| {
            let spec = &spec;
            async move {
                let route = RouteLayer::new(Arc::new(RouteTable::new(spec)));
                let (seen, inner) = recorder();
                let layer = ValidateLayer {
                    mode: Enforce::Report,
                    ..ValidateLayer::default()
                };
                let mut req = Request::put(path).header(header::CONTENT_TYPE, content_type);
                if let Some(encoding) = encoding {
                    req = req.header(header::CONTENT_ENCODING, encoding);
                }
                let result = route
                    .layer(layer.layer(inner))
                    .oneshot(req.body(Body::full(Bytes::from_static(body))).unwrap())
                    .await;
                let forwarded = seen.lock().unwrap().len();
                (
                    result.map(|r| r.status()).unwrap_or_else(|e| e.status()),
                    forwarded,
                )
            }
        };
        let twice: &[u8] = br#"{"a":1,"a":2}"#;
        // A bad parameter or media type is forgiven; the key given twice behind it is not.
        assert_eq!(
            send("/things/7", "application/json", None, b"{}").await,
            (StatusCode::OK, 1)
        );
        assert_eq!(
            send("/things/abc", "application/json", None, b"{}").await,
            (StatusCode::OK, 1)
        );
        for (path, content_type) in [
            ("/things/abc", "application/json"),
            ("/things/7", "text/plain"),
        ] {
            let (status, forwarded) = send(path, content_type, None, twice).await;
            assert_eq!(
                (status, forwarded),
                (StatusCode::BAD_REQUEST, 0),
                "{path} {content_type}"
            );
        }
        // So are codings it cannot decode, and streams with something after them.
        let (status, forwarded) = send("/things/7", "application/json", Some("zstd"), b"{}").await;
        assert_eq!((status, forwarded), (StatusCode::UNSUPPORTED_MEDIA_TYPE, 0));
        let (status, forwarded) = send("/things/7", "application/json", Some("gzip"), b"{}").await;
        assert_eq!((status, forwarded), (StatusCode::BAD_REQUEST, 0));
    }

    #[tokio::test]
    async fn a_reported_violation_names_where_never_what() {
        let (_, forwarded) = send_in(
            Enforce::Report,
            Some("application/json"),
            r#"{"connection":{"service":"s3cr3t-looking","externalid":1}}"#,
        )
        .await;
        let reported = forwarded[0].extensions().get::<Reported>().unwrap();
        let value = reported.audit_value().to_string();
        assert!(value.contains("/connection/externalid"), "{value}");
        assert!(!value.contains("s3cr3t"), "{value}");
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
        let sources: Vec<&Source> = violations.iter().map(|v| &v.source).collect();
        assert!(
            sources.contains(&&Source::body("/connection/logoUrl")),
            "{sources:?}"
        );
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

    /// A stack of route and validate over a recorder, for a small document.
    async fn send_to(
        doc: serde_json::Value,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &'static [u8],
    ) -> (Result<Response<Body>, Error>, Vec<Bytes>) {
        let spec = Spec::compile("t", doc).unwrap();
        let (seen, inner) = recorder();
        let stack = RouteLayer::new(Arc::new(RouteTable::new(&spec)))
            .layer(ValidateLayer::default().layer(inner));
        let mut req = Request::builder().method(method).uri(path);
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let result = stack
            .oneshot(req.body(Body::full(Bytes::from_static(body))).unwrap())
            .await;
        let forwarded = seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.body().clone())
            .collect();
        (result, forwarded)
    }

    fn document(operation: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"openapi": "3.0.3", "info": {"title": "t", "version": "1"},
            "paths": {"/things": {"post": operation}}})
    }

    fn pointers(result: &Result<Response<Body>, Error>) -> Vec<String> {
        match result {
            Err(Error::SchemaViolations { violations, .. }) => violations
                .iter()
                .map(|v| match &v.source {
                    Source::Body { pointer } => pointer.clone(),
                    other => format!("{other:?}"),
                })
                .collect(),
            other => panic!("expected 422, got {:?}", other.as_ref().map(|r| r.status())),
        }
    }

    #[tokio::test]
    async fn json_sent_to_a_wildcard_media_type_is_validated_and_other_types_pass_unread() {
        // Kubernetes declares `*/*` for its creates.
        let doc = document(
            serde_json::json!({"requestBody": {"required": true, "content": {"*/*": {"schema":
            {"type": "object", "required": ["kind"], "properties": {"kind": {"type": "string"}}}}}}}),
        );
        let (result, forwarded) = send_to(
            doc.clone(),
            "POST",
            "/things",
            Some("application/json"),
            b"{}",
        )
        .await;
        assert_eq!(pointers(&result), ["/kind"]);
        assert!(forwarded.is_empty());
        let (result, forwarded) = send_to(
            doc.clone(),
            "POST",
            "/things",
            Some("application/json"),
            br#"{"kind":"Pod"}"#,
        )
        .await;
        assert!(result.is_ok());
        assert_eq!(&forwarded[0][..], br#"{"kind":"Pod"}"#);
        // Not a type specgate reads: forwarded as it is, byte for byte.
        let (result, forwarded) = send_to(
            doc,
            "POST",
            "/things",
            Some("application/yaml"),
            b"kind: [unclosed",
        )
        .await;
        assert!(result.is_ok());
        assert_eq!(&forwarded[0][..], b"kind: [unclosed");
    }

    #[tokio::test]
    async fn each_json_type_is_checked_against_its_own_schema() {
        let doc = document(serde_json::json!({"requestBody": {"content": {
            "application/json-patch+json": {"schema": {"type": "array"}},
            "application/merge-patch+json": {"schema": {"type": "object"}}
        }}}));
        let (result, _) = send_to(
            doc.clone(),
            "POST",
            "/things",
            Some("application/merge-patch+json"),
            b"{}",
        )
        .await;
        assert!(result.is_ok(), "an object is a merge patch");
        let (result, _) = send_to(
            doc.clone(),
            "POST",
            "/things",
            Some("application/json-patch+json"),
            b"{}",
        )
        .await;
        assert_eq!(pointers(&result), [""], "a JSON patch is an array");
        let (result, _) = send_to(doc, "POST", "/things", Some("text/plain"), b"x").await;
        let error = result.unwrap_err();
        assert_eq!(error.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let detail = error.detail();
        assert!(
            detail.contains("application/json-patch+json, application/merge-patch+json")
                && detail.contains("\"text/plain\""),
            "{detail}"
        );
    }

    /// Stripe's payment-intent create, as its document declares it.
    fn stripe() -> serde_json::Value {
        document(
            serde_json::json!({"requestBody": {"required": true, "content": {
                "application/x-www-form-urlencoded": {
                    "encoding": {"metadata": {"explode": true, "style": "deepObject"},
                                 "expand": {"explode": true, "style": "deepObject"}},
                    "schema": {"type": "object", "required": ["amount", "currency"], "properties": {
                        "amount": {"type": "integer"},
                        "currency": {"type": "string"},
                        "metadata": {"anyOf": [{"type": "object", "additionalProperties": {"type": "string"}}, {"enum": [""], "type": "string"}]},
                        "expand": {"type": "array", "items": {"type": "string", "maxLength": 5000}}
                    }}
                }
            }}}),
        )
    }

    #[tokio::test]
    async fn form_bodies_are_read_by_their_schema_and_forwarded_as_sent() {
        const FORM: &str = "application/x-www-form-urlencoded";
        let (result, forwarded) =
            send_to(stripe(), "POST", "/things", Some(FORM), b"currency=usd").await;
        assert_eq!(pointers(&result), ["/amount"]);
        assert!(forwarded.is_empty());
        let (result, _) = send_to(
            stripe(),
            "POST",
            "/things",
            Some(FORM),
            b"amount=lots&currency=usd",
        )
        .await;
        assert_eq!(pointers(&result), ["/amount"]);
        const VALID: &[u8] = b"amount=2000&currency=usd&metadata[order]=7&expand[]=customer";
        let (result, forwarded) = send_to(stripe(), "POST", "/things", Some(FORM), VALID).await;
        assert!(result.is_ok(), "{:?}", result.err());
        assert_eq!(&forwarded[0][..], VALID);
    }

    #[tokio::test]
    async fn multipart_parts_are_fields_and_files() {
        let doc = document(
            serde_json::json!({"requestBody": {"content": {"multipart/form-data": {
                "encoding": {"file": {"contentType": "image/png, image/jpeg"}},
                "schema": {"type": "object", "required": ["purpose", "file"], "properties": {
                    "purpose": {"type": "string", "enum": ["logo"]},
                    "size": {"type": "integer"},
                    "file": {"type": "string", "format": "binary"}
                }}
            }}}}),
        );
        const CT: &str = "multipart/form-data; boundary=b0";
        const VALID: &[u8] = b"--b0\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nlogo\r\n--b0\r\nContent-Disposition: form-data; name=\"size\"\r\n\r\n12\r\n--b0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"l.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n--b0--\r\n";
        let (result, forwarded) = send_to(doc.clone(), "POST", "/things", Some(CT), VALID).await;
        assert!(result.is_ok(), "{:?}", result.err());
        assert_eq!(&forwarded[0][..], VALID);
        const WRONG: &[u8] = b"--b0\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nicon\r\n--b0\r\nContent-Disposition: form-data; name=\"size\"\r\n\r\nbig\r\n--b0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"l.gif\"\r\nContent-Type: image/gif\r\n\r\nGIF\r\n--b0--\r\n";
        let (result, _) = send_to(doc.clone(), "POST", "/things", Some(CT), WRONG).await;
        assert_eq!(pointers(&result), ["/file", "/purpose", "/size"]);
        const NO_FILE: &[u8] =
            b"--b0\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nlogo\r\n--b0--\r\n";
        let (result, _) = send_to(doc.clone(), "POST", "/things", Some(CT), NO_FILE).await;
        assert_eq!(pointers(&result), ["/file"]);
        let (result, _) = send_to(doc, "POST", "/things", Some("multipart/form-data"), VALID).await;
        assert_eq!(
            result.unwrap_err().status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "no boundary"
        );
    }

    #[tokio::test]
    async fn a_read_only_id_is_not_demanded_of_a_create() {
        let doc = serde_json::json!({"openapi": "3.0.3", "info": {"title": "t", "version": "1"},
            "paths": {"/planets": {"post": {"requestBody": {"content": {"application/json":
                {"schema": {"$ref": "#/components/schemas/Planet"}}}}}}},
            "components": {"schemas": {"Planet": {"type": "object", "required": ["id", "name"],
                "properties": {"id": {"type": "integer", "readOnly": true}, "name": {"type": "string"}}}}}});
        let (result, _) = send_to(
            doc,
            "POST",
            "/planets",
            Some("application/json"),
            br#"{"name":"Mars"}"#,
        )
        .await;
        assert!(result.is_ok(), "{:?}", result.err());
    }
}
