//! Offline mock mode: the innermost service answers each operation with the spec's own example
//! response instead of forwarding it. Everything above it (routing, validation, credential,
//! audit) is the same stack, so an app developer sees exactly the refusals, headers and audit
//! records production gives, without an account, a token or a network.
//!
//! Dynamic answers (Prism's `Prefer: dynamic=true`, or `upstream.mock_dynamic` for every
//! request) follow the request: the example's fields that the request also sends take the
//! request's values, and the created resource gets a fresh id, so a test flow that creates two
//! things sees two resources, and the audit records the id the app was given.

use std::future::{Ready, ready};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response};
use serde_json::{Map, Value};
use tower_service::Service;

use crate::body::Body;
use crate::error::Error;
use crate::layer::upstream_metrics::Mocked;
use crate::layer::validate::ParsedBody;
use crate::route::Routed;
use crate::spec::Example;

/// Marks every mocked response, so nobody mistakes one for the real API's.
pub const X_SPECGATE_MOCK: HeaderName = HeaderName::from_static("x-specgate-mock");

/// RFC 7240's answer to `Prefer`: which preference was honoured.
const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// Ids handed out by dynamic answers: numbers from the start-up time in milliseconds on, so
/// they differ from the example's and from those of an earlier run, and stay below 2^53 for
/// JavaScript clients.
static NEXT_ID: LazyLock<AtomicU64> = LazyLock::new(|| {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64);
    AtomicU64::new(now)
});

/// Whether a request's `Prefer` header asks for a dynamic answer: `Some(true)` for
/// `dynamic=true`, `Some(false)` for `dynamic=false`, `None` when it says nothing.
pub fn prefers_dynamic(headers: &HeaderMap) -> Option<bool> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .find_map(|preference| {
            let (name, value) = preference.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("dynamic") {
                return None;
            }
            match value.trim().trim_matches('"').to_ascii_lowercase().as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            }
        })
}

/// The example `example` answered dynamically to a request whose checked body is `request`:
/// each field the example has and the request sends takes the request's value (objects
/// merged field by field), and, for a create, the resource's id (`<resource_key>.id`, else a
/// top-level `id`) is a fresh one of the same kind. `None` when the example is not a JSON
/// object.
pub fn dynamic_body(
    example: &[u8],
    request: Option<&Value>,
    resource_key: Option<&str>,
    create: bool,
) -> Option<Value> {
    let mut body: Value = serde_json::from_slice(example).ok()?;
    let object = body.as_object_mut()?;
    if let Some(Value::Object(request)) = request {
        merge(object, request);
    }
    if !create {
        return Some(body);
    }
    let resource = match resource_key.and_then(|key| object.get_mut(key)) {
        Some(Value::Object(resource)) if resource.contains_key("id") => resource,
        _ => object,
    };
    if let Some(id) = resource.get_mut("id") {
        *id = fresh_id(id);
    }
    Some(body)
}

/// Copies the fields of `request` that `example` has into it, merging objects.
fn merge(example: &mut Map<String, Value>, request: &Map<String, Value>) {
    for (key, sent) in request {
        match (example.get_mut(key), sent) {
            (Some(Value::Object(into)), Value::Object(from)) => merge(into, from),
            (Some(slot), sent) => *slot = sent.clone(),
            (None, _) => {}
        }
    }
}

/// A fresh id shaped like `example`: a number, a string of digits, a UUID, or a string with
/// the example's prefix up to its last `_` (`ch_…`, `cus_…`) and a unique tail.
fn fresh_id(example: &Value) -> Value {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    match example {
        Value::Number(_) => Value::from(n),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Value::String(n.to_string())
        }
        Value::String(s) if uuid::Uuid::parse_str(s).is_ok() => {
            Value::String(uuid::Uuid::now_v7().to_string())
        }
        Value::String(s) => {
            let prefix = s.rfind('_').map_or("", |i| &s[..=i]);
            Value::String(format!("{prefix}{n}"))
        }
        other => other.clone(),
    }
}

/// The response mock mode gives for `example`.
pub fn respond(example: &Example) -> Response<Body> {
    respond_with(example, example.body.clone())
}

/// The response mock mode gives for `example`, with `body` instead of the example's own.
fn respond_with(example: &Example, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = example.status;
    let headers = response.headers_mut();
    if let Some(media_type) = &example.content_type
        && let Ok(value) = HeaderValue::from_str(media_type)
    {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(X_SPECGATE_MOCK, HeaderValue::from_static("true"));
    response.extensions_mut().insert(Mocked);
    response
}

/// Answers routed requests from the spec's examples.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mock {
    /// Answer dynamically unless a request's `Prefer` says `dynamic=false`.
    pub dynamic: bool,
}

impl Service<Request<Body>> for Mock {
    type Response = Response<Body>;
    type Error = Error;
    type Future = Ready<Result<Response<Body>, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let routed = req
            .extensions()
            .get::<Routed>()
            .expect("only routed requests reach the innermost service");
        let Some(example) = &routed.operation.example else {
            return ready(Err(Error::MockNoExample {
                operation_id: routed.operation.id.to_string(),
            }));
        };
        if !prefers_dynamic(req.headers()).unwrap_or(self.dynamic) {
            return ready(Ok(respond(example)));
        }
        let request = req.extensions().get::<ParsedBody>().map(|b| &*b.0);
        let resource_key = routed
            .operation
            .body
            .as_ref()
            .and_then(|b| b.resource_key.as_deref());
        let create = routed.operation.creates;
        let Some(body) = dynamic_body(&example.body, request, resource_key, create) else {
            return ready(Ok(respond(example)));
        };
        let body = serde_json::to_vec(&body).expect("a JSON value serialises");
        let mut response = respond_with(example, Bytes::from(body));
        response
            .headers_mut()
            .insert(PREFERENCE_APPLIED, HeaderValue::from_static("dynamic=true"));
        ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::RouteTable;
    use crate::spec::{Spec, SpecSource};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_routed_create_gets_the_specs_example() {
        let spec = Spec::load(&SpecSource::default()).unwrap();
        let routed = RouteTable::new(&spec)
            .route(&http::Method::POST, "/api/3/connections")
            .unwrap();
        let mut req = Request::post("/api/3/connections")
            .body(Body::empty())
            .unwrap();
        req.extensions_mut().insert(routed);
        let response = Mock::default().oneshot(req).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()[X_SPECGATE_MOCK], "true");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["connection"]["id"], "1");
    }

    #[test]
    fn dynamic_answers_take_the_requests_fields_and_a_fresh_id() {
        let example = br#"{"connection":{"service":"fooCommerce","name":"Example","id":"1","links":{"a":"b"}},"meta":{"n":1}}"#;
        let request =
            serde_json::json!({"connection": {"service": "shop", "name": "Mine", "extra": true}});
        let first = dynamic_body(example, Some(&request), Some("connection"), true).unwrap();
        let second = dynamic_body(example, Some(&request), Some("connection"), true).unwrap();
        assert_eq!(first["connection"]["service"], "shop");
        assert_eq!(first["connection"]["name"], "Mine");
        assert_eq!(
            first["connection"]["links"]["a"], "b",
            "the example's own fields stay"
        );
        assert!(
            first["connection"].get("extra").is_none(),
            "nothing the answer does not have"
        );
        let (a, b) = (&first["connection"]["id"], &second["connection"]["id"]);
        assert_ne!(a, b);
        assert_ne!(a, "1");
        assert!(
            a.as_str().unwrap().bytes().all(|c| c.is_ascii_digit()),
            "{a}"
        );
        // A top-level id keeps its kind.
        for (id, check) in [
            (serde_json::json!(7), Value::is_u64 as fn(&Value) -> bool),
            (serde_json::json!("ch_3MmlLrLkdIwHu7ix"), |v: &Value| {
                v.as_str().unwrap().starts_with("ch_")
            }),
            (
                serde_json::json!("0193a5b2-7c1d-7def-8a00-000000000000"),
                |v: &Value| uuid::Uuid::parse_str(v.as_str().unwrap()).is_ok(),
            ),
        ] {
            let example = serde_json::to_vec(&serde_json::json!({"id": id, "amount": 1})).unwrap();
            let body = dynamic_body(
                &example,
                Some(&serde_json::json!({"amount": 2000})),
                None,
                true,
            )
            .unwrap();
            assert!(check(&body["id"]), "{id} -> {}", body["id"]);
            assert_ne!(body["id"], id);
            assert_eq!(body["amount"], 2000);
        }
        assert!(dynamic_body(b"[1]", None, None, true).is_none());
        // Not a create (an update, a read): the request's fields, the example's id.
        let update = dynamic_body(example, Some(&request), Some("connection"), false).unwrap();
        assert_eq!(update["connection"]["id"], "1");
        assert_eq!(update["connection"]["name"], "Mine");
    }

    #[test]
    fn prefer_says_dynamic_or_not() {
        let mut headers = HeaderMap::new();
        assert_eq!(prefers_dynamic(&headers), None);
        headers.insert("prefer", HeaderValue::from_static("code=200, dynamic=true"));
        assert_eq!(prefers_dynamic(&headers), Some(true));
        headers.insert("prefer", HeaderValue::from_static("Dynamic=\"false\""));
        assert_eq!(prefers_dynamic(&headers), Some(false));
    }
}
