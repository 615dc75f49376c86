//! The audit record and its encoding: one JSON object per line.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::macros::format_description;

/// What happened to a create.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The upstream answered 2xx: the resource exists.
    Created,
}

/// One audit record, as the request path hands it to the writer.
#[derive(Clone, Debug)]
pub struct Entry {
    /// When the outcome was known.
    pub ts: OffsetDateTime,
    /// The request id.
    pub request_id: String,
    /// The spec operation.
    pub operation_id: String,
    /// The HTTP method.
    pub method: String,
    /// The request path as received (no query string).
    pub path: String,
    /// The authenticated client, once client identity exists.
    pub client: Option<String>,
    /// What the upstream answered.
    pub upstream_status: Option<u16>,
    /// What happened.
    pub outcome: Outcome,
    /// The created resource's id, from the upstream's response.
    pub resource_id: Option<String>,
    /// The request's resource fields (the object under the resource key).
    pub resource: Option<ResourceFields>,
    /// Time from forwarding to the upstream's response, in milliseconds.
    pub latency_ms: f64,
}

/// The part of a parsed request body that is the resource, shared rather than copied.
#[derive(Clone, Debug)]
pub struct ResourceFields {
    body: Arc<Value>,
    key: Option<String>,
}

impl ResourceFields {
    /// The object under `key` in `body`, or the whole body when there is no key.
    pub fn new(body: Arc<Value>, key: Option<String>) -> Self {
        ResourceFields { body, key }
    }

    fn value(&self) -> &Value {
        match &self.key {
            Some(key) => self.body.get(key).unwrap_or(&Value::Null),
            None => &self.body,
        }
    }
}

impl Serialize for ResourceFields {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(serializer)
    }
}

#[derive(Serialize)]
struct Line<'a> {
    ts: &'a str,
    request_id: &'a str,
    operation_id: &'a str,
    method: &'a str,
    path: &'a str,
    client: Option<&'a str>,
    upstream_status: Option<u16>,
    outcome: Outcome,
    resource_id: Option<&'a str>,
    resource: Option<&'a ResourceFields>,
    latency_ms: f64,
}

/// Formats a timestamp as RFC 3339 UTC with milliseconds: `2026-11-27T23:57:04.123Z`.
pub fn rfc3339(ts: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    ts.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .expect("every UTC time formats")
}

/// Appends the record as one JSON line (with its newline) to `out`.
pub fn encode(entry: &Entry, out: &mut Vec<u8>) {
    let ts = rfc3339(entry.ts);
    let line = Line {
        ts: &ts,
        request_id: &entry.request_id,
        operation_id: &entry.operation_id,
        method: &entry.method,
        path: &entry.path,
        client: entry.client.as_deref(),
        upstream_status: entry.upstream_status,
        outcome: entry.outcome,
        resource_id: entry.resource_id.as_deref(),
        resource: entry.resource.as_ref(),
        latency_ms: (entry.latency_ms * 1000.0).round() / 1000.0,
    };
    serde_json::to_writer(&mut *out, &line).expect("records of strings and numbers serialise");
    out.push(b'\n');
}

/// The created resource's id in an upstream response: `<key>.id` (string or number), else a
/// top-level `id`.
pub fn resource_id(response: &Value, key: Option<&str>) -> Option<String> {
    let id = key
        .and_then(|k| response.get(k))
        .and_then(|r| r.get("id"))
        .or_else(|| response.get("id"))?;
    match id {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry() -> Entry {
        Entry {
            ts: OffsetDateTime::from_unix_timestamp_nanos(1_795_823_824_123_456_789).unwrap(),
            request_id: "r1".into(),
            operation_id: "create-connection".into(),
            method: "POST".into(),
            path: "/api/3/connections".into(),
            client: None,
            upstream_status: Some(201),
            outcome: Outcome::Created,
            resource_id: Some("42".into()),
            resource: Some(ResourceFields::new(
                Arc::new(json!({"connection": {"service": "s", "name": "n"}})),
                Some("connection".into()),
            )),
            latency_ms: 12.345_678,
        }
    }

    #[test]
    fn a_record_is_one_json_line_with_every_field() {
        let mut out = Vec::new();
        encode(&entry(), &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        let value: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            value,
            json!({
                "ts": "2026-11-27T23:57:04.123Z",
                "request_id": "r1",
                "operation_id": "create-connection",
                "method": "POST",
                "path": "/api/3/connections",
                "client": null,
                "upstream_status": 201,
                "outcome": "created",
                "resource_id": "42",
                "resource": {"service": "s", "name": "n"},
                "latency_ms": 12.346
            })
        );
    }

    #[test]
    fn resource_ids_come_from_under_the_key_or_the_top() {
        assert_eq!(
            resource_id(&json!({"connection": {"id": "7"}}), Some("connection")).as_deref(),
            Some("7")
        );
        assert_eq!(
            resource_id(&json!({"connection": {"id": 7}}), Some("connection")).as_deref(),
            Some("7")
        );
        assert_eq!(resource_id(&json!({"id": "9"}), None).as_deref(), Some("9"));
        assert_eq!(resource_id(&json!({"x": 1}), Some("connection")), None);
    }
}
