//! The audit record and its encoding: one JSON object per line, sealed into a hash chain.
//!
//! A sealed line is the record's JSON with `seq` first and `prev` (the previous record's hash)
//! last, followed by `"hash"` (SHA-256 of the bytes before it, closed with `}`) and, when a key
//! is configured, `"mac"` (HMAC-SHA256 of the hash under that key). The seal sits at a fixed
//! place at the end of the line, so checking it needs no JSON canonicalisation: the bytes that
//! were hashed are the bytes on disk.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::macros::format_description;

/// What a record says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A create is about to be forwarded (written before it leaves the machine).
    Attempted,
    /// The upstream answered 2xx: the resource exists.
    Created,
    /// The upstream answered with something other than 2xx.
    Rejected,
    /// The upstream could not be reached or did not answer (502/504).
    Failed,
    /// specgate found and cut a torn last line at start-up.
    Recovered,
}

impl Outcome {
    /// The name used in the log and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Attempted => "attempted",
            Outcome::Created => "created",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
            Outcome::Recovered => "recovered",
        }
    }
}

/// One audit record, as the request path hands it to the writer (which seals it).
#[derive(Clone, Debug)]
pub struct Entry {
    /// When it happened.
    pub ts: OffsetDateTime,
    /// What happened.
    pub outcome: Outcome,
    /// The request id.
    pub request_id: Option<String>,
    /// For an outcome record, the seq of the create's `attempted` record (request ids come
    /// from clients and may repeat; this pairing cannot).
    pub attempt: Option<u64>,
    /// The spec operation.
    pub operation_id: Option<String>,
    /// The HTTP method.
    pub method: Option<String>,
    /// The request path as received (no query string).
    pub path: Option<String>,
    /// The authenticated client, once client identity exists.
    pub client: Option<String>,
    /// What the upstream answered.
    pub upstream_status: Option<u16>,
    /// The created resource's id, from the upstream's response.
    pub resource_id: Option<String>,
    /// The request's resource fields (the object under the resource key).
    pub resource: Option<ResourceFields>,
    /// Time from forwarding to the upstream's response, in milliseconds.
    pub latency_ms: Option<f64>,
    /// Why a create failed, or what recovery did.
    pub detail: Option<String>,
    /// The refusal a create forwarded in report mode would have got: `{"kind", "at"}`.
    pub violations: Option<Arc<Value>>,
    /// Where the upstream's response differed from what the document declares:
    /// `{"kind", "at"}`.
    pub drift: Option<Value>,
}

impl Entry {
    /// A record of `outcome` now, with every other field empty.
    pub fn new(outcome: Outcome) -> Self {
        Entry {
            ts: OffsetDateTime::now_utc(),
            outcome,
            request_id: None,
            attempt: None,
            operation_id: None,
            method: None,
            path: None,
            client: None,
            upstream_status: None,
            resource_id: None,
            resource: None,
            latency_ms: None,
            detail: None,
            violations: None,
            drift: None,
        }
    }
}

/// The resource fields a create sent (the object under the resource key, or the whole body),
/// rendered as JSON once and shared by the create's records.
#[derive(Clone, Debug)]
pub struct ResourceFields(Arc<Box<serde_json::value::RawValue>>);

impl ResourceFields {
    /// The object under `key` in `body`, or the whole body when there is no key.
    pub fn new(body: &Value, key: Option<&str>) -> Self {
        let value = match key {
            Some(key) => body.get(key).unwrap_or(&Value::Null),
            None => body,
        };
        let json = serde_json::value::to_raw_value(value).expect("a JSON value serialises");
        ResourceFields(Arc::new(json))
    }
}

impl Serialize for ResourceFields {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// The fields of a record in the order they appear on a line, before the seal.
#[derive(Serialize)]
struct Unsealed<'a> {
    seq: u64,
    ts: &'a str,
    outcome: Outcome,
    request_id: Option<&'a str>,
    attempt: Option<u64>,
    operation_id: Option<&'a str>,
    method: Option<&'a str>,
    path: Option<&'a str>,
    client: Option<&'a str>,
    upstream_status: Option<u16>,
    resource_id: Option<&'a str>,
    resource: Option<&'a ResourceFields>,
    latency_ms: Option<f64>,
    detail: Option<&'a str>,
    // Absent unless set, so the records written before it existed read the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    violations: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drift: Option<&'a Value>,
    prev: &'a str,
}

/// A record as read back from a line: every field, for queries and the CLI.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Record {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// When, RFC 3339 UTC.
    pub ts: String,
    /// What happened.
    pub outcome: Outcome,
    /// The request id.
    pub request_id: Option<String>,
    /// For an outcome record, the seq of its `attempted` record.
    #[serde(default)]
    pub attempt: Option<u64>,
    /// The spec operation.
    pub operation_id: Option<String>,
    /// The method.
    pub method: Option<String>,
    /// The path.
    pub path: Option<String>,
    /// The client.
    pub client: Option<String>,
    /// The upstream's status.
    pub upstream_status: Option<u16>,
    /// The created resource's id.
    pub resource_id: Option<String>,
    /// The resource fields sent.
    pub resource: Option<Value>,
    /// Upstream latency.
    pub latency_ms: Option<f64>,
    /// Failure or recovery detail.
    pub detail: Option<String>,
    /// What a create forwarded in report mode would have been refused for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violations: Option<Value>,
    /// Where the upstream's response to the create differed from the document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<Value>,
    /// The previous record's hash.
    pub prev: String,
    /// This record's hash.
    pub hash: String,
    /// This record's MAC, when a key is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The `prev` of the first record of a chain.
pub const GENESIS: Hash = [0; 32];

/// The key records and the head file are MACed with (`audit.hmac_key_file`).
#[derive(Clone)]
pub struct MacKey(Arc<secrecy::SecretSlice<u8>>);

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(<redacted>)")
    }
}

impl MacKey {
    /// A key of these bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        MacKey(Arc::new(secrecy::SecretSlice::from(bytes)))
    }

    /// HMAC-SHA256 of `data`.
    pub fn mac(&self, data: &[u8]) -> Hash {
        use secrecy::ExposeSecret;
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.0.expose_secret());
        to_hash(ring::hmac::sign(&key, data).as_ref())
    }
}

/// SHA-256 comes from ring (already in the tree for TLS): its assembly is twice as fast as a
/// portable implementation on CPUs without SHA extensions, and every record is hashed on write
/// and on verify.
pub(crate) fn sha256(parts: &[&[u8]]) -> Hash {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        context.update(part);
    }
    to_hash(context.finish().as_ref())
}

fn to_hash(bytes: &[u8]) -> Hash {
    bytes.try_into().expect("SHA-256 is 32 bytes")
}

/// Formats a timestamp as RFC 3339 UTC with milliseconds: `2026-11-27T23:57:04.123Z`.
pub fn rfc3339(ts: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    ts.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .expect("every UTC time formats")
}

const HASH_FIELD: &[u8] = b",\"hash\":\"";
const MAC_FIELD: &[u8] = b"\",\"mac\":\"";
/// `,"hash":"<64 hex>"}`
const HASH_SUFFIX: usize = HASH_FIELD.len() + 64 + 2;
/// `,"hash":"<64 hex>","mac":"<64 hex>"}`
const MAC_SUFFIX: usize = HASH_FIELD.len() + 64 + MAC_FIELD.len() + 64 + 2;

/// Seals `entry` as record `seq` after `prev` and appends the line (with its newline) to
/// `out`. Returns the record's hash.
pub fn seal(entry: &Entry, seq: u64, prev: &Hash, key: Option<&MacKey>, out: &mut Vec<u8>) -> Hash {
    let start = out.len();
    let ts = rfc3339(entry.ts);
    let prev_hex = hex::encode(prev);
    let unsealed = Unsealed {
        seq,
        ts: &ts,
        outcome: entry.outcome,
        request_id: entry.request_id.as_deref(),
        attempt: entry.attempt,
        operation_id: entry.operation_id.as_deref(),
        method: entry.method.as_deref(),
        path: entry.path.as_deref(),
        client: entry.client.as_deref(),
        upstream_status: entry.upstream_status,
        resource_id: entry.resource_id.as_deref(),
        resource: entry.resource.as_ref(),
        latency_ms: entry.latency_ms.map(|ms| (ms * 1000.0).round() / 1000.0),
        detail: entry.detail.as_deref(),
        violations: entry.violations.as_deref(),
        drift: entry.drift.as_ref(),
        prev: &prev_hex,
    };
    serde_json::to_writer(&mut *out, &unsealed).expect("records of strings and numbers serialise");
    let hash = sha256(&[&out[start..]]);
    out.pop(); // the closing brace: the seal goes inside the object
    out.extend_from_slice(HASH_FIELD);
    out.extend_from_slice(hex::encode(hash).as_bytes());
    if let Some(key) = key {
        out.extend_from_slice(MAC_FIELD);
        out.extend_from_slice(hex::encode(key.mac(&hash)).as_bytes());
    }
    out.extend_from_slice(b"\"}\n");
    hash
}

/// What is wrong with one line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The line does not end in a seal.
    #[error("not a sealed audit record")]
    Unsealed,
    /// The hash does not match the record's bytes: the record was changed.
    #[error("the record's bytes do not match its hash: it was changed")]
    HashMismatch,
    /// The MAC does not match under the configured key.
    #[error("the record's MAC does not match: it was changed or re-chained without the key")]
    MacMismatch,
    /// A key is configured but the record carries no MAC.
    #[error("the record carries no MAC although a key is configured")]
    MacMissing,
    /// The record is not JSON of the expected shape.
    #[error("the record is not valid: {0}")]
    Invalid(String),
}

/// A line whose seal checks out.
#[derive(Clone, Debug)]
pub struct Opened {
    /// The record.
    pub record: Record,
    /// Its hash.
    pub hash: Hash,
    /// The previous record's hash, as the record states it.
    pub prev: Hash,
}

/// Checks a line's seal (and MAC, if `key` is given) and parses it.
pub fn open(line: &[u8], key: Option<&MacKey>) -> Result<Opened, LineError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let (hash_at, mac_hex) = if line.len() > MAC_SUFFIX
        && line[line.len() - MAC_SUFFIX..].starts_with(HASH_FIELD)
        && line[line.len() - MAC_SUFFIX + HASH_FIELD.len() + 64..].starts_with(MAC_FIELD)
    {
        let mac_at = line.len() - 2 - 64;
        (line.len() - MAC_SUFFIX, Some(&line[mac_at..mac_at + 64]))
    } else if line.len() > HASH_SUFFIX && line[line.len() - HASH_SUFFIX..].starts_with(HASH_FIELD) {
        (line.len() - HASH_SUFFIX, None)
    } else {
        return Err(LineError::Unsealed);
    };
    if !line.ends_with(b"\"}") {
        return Err(LineError::Unsealed);
    }
    let stated = decode_hash(&line[hash_at + HASH_FIELD.len()..hash_at + HASH_FIELD.len() + 64])
        .ok_or(LineError::Unsealed)?;
    let hash = sha256(&[&line[..hash_at], b"}"]);
    if hash != stated {
        return Err(LineError::HashMismatch);
    }
    match (key, mac_hex) {
        (Some(key), Some(mac_hex)) => {
            let mac = decode_hash(mac_hex).ok_or(LineError::Unsealed)?;
            if key.mac(&hash) != mac {
                return Err(LineError::MacMismatch);
            }
        }
        (Some(_), None) => return Err(LineError::MacMissing),
        (None, _) => {}
    }
    let record: Record =
        serde_json::from_slice(line).map_err(|e| LineError::Invalid(e.to_string()))?;
    let prev = decode_hash(record.prev.as_bytes())
        .ok_or_else(|| LineError::Invalid("prev is not a hash".into()))?;
    Ok(Opened { record, hash, prev })
}

/// Parses 64 hex digits.
pub fn decode_hash(hex_digits: &[u8]) -> Option<Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut out).ok()?;
    Some(out)
}

/// The created resource's id in an upstream response body: `<key>.id` (string or number), else
/// a top-level `id`. `None` if the body is not a JSON object or carries no such id. As with
/// `body["<key>"]["id"]` on a parsed value: an `id` present under the key decides (a `null` or
/// object there is no id, without falling back), and of duplicate keys the last counts.
///
/// Only the objects on the way to the id are looked into: every other value is skipped as it
/// is read, never built (the response is as large as the resource). Skipped values are not
/// checked further than their syntax needs, so an id next to, say, a very deeply nested field
/// is still found.
pub fn resource_id(body: &[u8], key: Option<&str>) -> Option<String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let found = serde::de::DeserializeSeed::deserialize(IdSeek { key }, &mut de).ok()?;
    de.end().ok()?;
    match found.nested {
        Some(nested) => nested,
        None => found.top.flatten(),
    }
}

/// What [`IdSeek`] found. The outer `Option` says whether the field was there at all, the
/// inner whether it was an id (a string or a number).
#[derive(Default)]
struct FoundIds {
    /// `id` inside the object under the key.
    nested: Option<Option<String>>,
    /// `id` at this level.
    top: Option<Option<String>>,
}

/// Reads one JSON object, noting its `id` and the `id` inside the object under `key`.
struct IdSeek<'k> {
    key: Option<&'k str>,
}

impl<'de> serde::de::DeserializeSeed<'de> for IdSeek<'_> {
    type Value = FoundIds;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<FoundIds, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for IdSeek<'_> {
    type Value = FoundIds;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<FoundIds, A::Error> {
        let mut found = FoundIds::default();
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let is_key = Some(&*name) == self.key;
            if !is_key && name != "id" {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            // Inside the key's object only its own `id` counts.
            let value = map.next_value_seed(FieldValueSeed(IdSeek { key: None }))?;
            if is_key {
                found.nested = match &value {
                    FieldValue::Object(inner) => inner.top.clone(),
                    _ => None,
                };
            }
            if name == "id" {
                found.top = Some(match value {
                    FieldValue::Id(id) => Some(id),
                    _ => None,
                });
            }
        }
        Ok(found)
    }
}

/// A field's value as far as ids go: an object looked into, an id, or anything else (skipped).
enum FieldValue {
    Object(FoundIds),
    Id(String),
    Other,
}

/// Reads a [`FieldValue`], looking into an object with the [`IdSeek`] it carries.
struct FieldValueSeed<'k>(IdSeek<'k>);

impl<'de> serde::de::DeserializeSeed<'de> for FieldValueSeed<'_> {
    type Value = FieldValue;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<FieldValue, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FieldValueSeed<'_> {
    type Value = FieldValue;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<FieldValue, A::Error> {
        self.0.visit_map(map).map(FieldValue::Object)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<FieldValue, A::Error> {
        serde::de::IgnoredAny
            .visit_seq(seq)
            .map(|_| FieldValue::Other)
    }

    fn visit_str<E>(self, text: &str) -> Result<FieldValue, E> {
        Ok(FieldValue::Id(text.to_owned()))
    }

    // Numbers are written as serde_json writes them, as a parsed value's `to_string` would.
    fn visit_u64<E>(self, n: u64) -> Result<FieldValue, E> {
        Ok(FieldValue::Id(serde_json::Number::from(n).to_string()))
    }

    fn visit_i64<E>(self, n: i64) -> Result<FieldValue, E> {
        Ok(FieldValue::Id(serde_json::Number::from(n).to_string()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<FieldValue, E> {
        Ok(serde_json::Number::from_f64(n)
            .map_or(FieldValue::Other, |n| FieldValue::Id(n.to_string())))
    }

    fn visit_bool<E>(self, _: bool) -> Result<FieldValue, E> {
        Ok(FieldValue::Other)
    }

    fn visit_unit<E>(self) -> Result<FieldValue, E> {
        Ok(FieldValue::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn created() -> Entry {
        Entry {
            ts: OffsetDateTime::from_unix_timestamp_nanos(1_795_823_824_123_456_789).unwrap(),
            request_id: Some("r1".into()),
            operation_id: Some("create-connection".into()),
            method: Some("POST".into()),
            path: Some("/api/3/connections".into()),
            upstream_status: Some(201),
            resource_id: Some("42".into()),
            resource: Some(ResourceFields::new(
                &json!({"connection": {"service": "s", "name": "n"}}),
                Some("connection"),
            )),
            latency_ms: Some(12.345_678),
            ..Entry::new(Outcome::Created)
        }
    }

    #[test]
    fn a_sealed_record_is_one_json_line_with_every_field() {
        let mut out = Vec::new();
        let hash = seal(&created(), 7, &GENESIS, None, &mut out);
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        let value: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            value,
            json!({
                "seq": 7,
                "ts": "2026-11-27T23:57:04.123Z",
                "outcome": "created",
                "request_id": "r1",
                "attempt": null,
                "operation_id": "create-connection",
                "method": "POST",
                "path": "/api/3/connections",
                "client": null,
                "upstream_status": 201,
                "resource_id": "42",
                "resource": {"service": "s", "name": "n"},
                "latency_ms": 12.346,
                "detail": null,
                "prev": "0".repeat(64),
                "hash": hex::encode(hash),
            })
        );
        let opened = open(&out, None).unwrap();
        assert_eq!(opened.hash, hash);
        assert_eq!(opened.record.seq, 7);
        assert_eq!(opened.record.outcome, Outcome::Created);
    }

    #[test]
    fn the_hash_covers_every_byte_before_it() {
        let mut out = Vec::new();
        seal(&created(), 1, &GENESIS, None, &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        let edited = text.replace("\"42\"", "\"43\"");
        assert_eq!(
            open(edited.as_bytes(), None).unwrap_err(),
            LineError::HashMismatch
        );
        for i in 0..out.len() - 76 {
            let mut flipped = out.clone();
            flipped[i] ^= 0x01;
            assert!(
                open(&flipped, None).is_err(),
                "a change at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn a_mac_binds_the_record_to_the_key() {
        let key = MacKey::new(b"k1".to_vec());
        let mut out = Vec::new();
        seal(&created(), 1, &GENESIS, Some(&key), &mut out);
        assert!(open(&out, Some(&key)).is_ok());
        assert!(
            open(&out, None).is_ok(),
            "without the key, the chain still checks"
        );
        assert_eq!(
            open(&out, Some(&MacKey::new(b"k2".to_vec()))).unwrap_err(),
            LineError::MacMismatch
        );
        let mut plain = Vec::new();
        seal(&created(), 1, &GENESIS, None, &mut plain);
        assert_eq!(open(&plain, Some(&key)).unwrap_err(), LineError::MacMissing);
    }

    #[test]
    fn a_resource_field_named_hash_does_not_confuse_the_seal() {
        let mut entry = created();
        entry.resource = Some(ResourceFields::new(&json!({"hash": "x", "mac": "y"}), None));
        let mut out = Vec::new();
        seal(&entry, 1, &GENESIS, None, &mut out);
        assert_eq!(
            open(&out, None).unwrap().record.resource,
            Some(json!({"hash": "x", "mac": "y"}))
        );
    }

    #[test]
    fn torn_and_foreign_lines_are_not_records() {
        let mut out = Vec::new();
        seal(&created(), 1, &GENESIS, None, &mut out);
        assert_eq!(
            open(&out[..out.len() / 2], None).unwrap_err(),
            LineError::Unsealed
        );
        assert_eq!(open(b"{\"a\":1}", None).unwrap_err(), LineError::Unsealed);
    }

    #[test]
    fn resource_ids_come_from_under_the_key_or_the_top() {
        let id = |body: &str, key| resource_id(body.as_bytes(), key);
        assert_eq!(
            id(r#"{"connection":{"id":"7"}}"#, Some("connection")).as_deref(),
            Some("7")
        );
        assert_eq!(
            id(r#"{"connection":{"id":7}}"#, Some("connection")).as_deref(),
            Some("7")
        );
        assert_eq!(id(r#"{"id":"9"}"#, None).as_deref(), Some("9"));
        assert_eq!(id(r#"{"x":1}"#, Some("connection")), None);
        // The key's object without an id falls back to the top level.
        assert_eq!(
            id(r#"{"connection":{},"id":3}"#, Some("connection")).as_deref(),
            Some("3")
        );
        // Escapes are decoded; other fields are skipped whatever they hold.
        assert_eq!(
            id(
                r#"{"links":[{"a":[1,{"b":null}]}],"connection":{"name":"x","id":"a\u0062"}}"#,
                Some("connection")
            )
            .as_deref(),
            Some("ab")
        );
        // An id under the key decides, even when it is no id: no fallback to the top level.
        for nested in ["null", "true", r#"{"x":1}"#, "[1]"] {
            let body = format!(r#"{{"connection":{{"id":{nested}}},"id":"5"}}"#);
            assert_eq!(id(&body, Some("connection")), None, "{body}");
        }
        // The key's value not an object: the top level's id.
        assert_eq!(
            id(r#"{"connection":"c","id":5}"#, Some("connection")).as_deref(),
            Some("5")
        );
        // A key named `id` is both the resource object and the top-level id.
        assert_eq!(id(r#"{"id":{"id":"x"}}"#, Some("id")).as_deref(), Some("x"));
        assert_eq!(id(r#"{"id":"y"}"#, Some("id")).as_deref(), Some("y"));
        // Numbers as serde_json writes them.
        assert_eq!(id(r#"{"id":1e3}"#, None).as_deref(), Some("1000.0"));
        assert_eq!(id(r#"{"id":-7}"#, None).as_deref(), Some("-7"));
        assert_eq!(
            id(r#"{"id":18446744073709551615}"#, None).as_deref(),
            Some("18446744073709551615")
        );
        // Trailing bytes after the object: not JSON.
        assert_eq!(id(r#"{"id":1} x"#, None), None);
        // A duplicated key: the last one wins, as serde_json's own map would have it.
        assert_eq!(id(r#"{"id":"1","id":"2"}"#, None).as_deref(), Some("2"));
        for not_an_id in [
            r#"{"id":null}"#,
            r#"{"id":{"x":1}}"#,
            r#"[{"id":1}]"#,
            "not json",
            "",
        ] {
            assert_eq!(id(not_an_id, None), None, "{not_an_id}");
        }
    }

    /// What `resource_id` did before it learnt to skip: parse the whole body, then look.
    fn reference(body: &str, key: Option<&str>) -> Option<String> {
        let v: Value = serde_json::from_str(body).ok()?;
        match key
            .and_then(|k| v.get(k))
            .and_then(|r| r.get("id"))
            .or_else(|| v.get("id"))?
        {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    #[test]
    fn resource_ids_agree_with_a_parse_of_the_whole_body() {
        let values = [
            "null",
            "true",
            "0",
            "-1",
            "2.5",
            "1e3",
            r#""s""#,
            r#""a\"b""#,
            "[]",
            "[1,{}]",
            "{}",
            r#"{"id":1}"#,
            r#"{"id":null}"#,
            r#"{"id":"x","id":2}"#,
            r#"{"x":{"id":3}}"#,
        ];
        let mut bodies = vec!["{}".to_owned(), "[]".to_owned(), "1".to_owned()];
        for a in values {
            for b in values {
                bodies.push(format!(r#"{{"connection":{a},"id":{b}}}"#));
                bodies.push(format!(r#"{{"id":{b},"connection":{a}}}"#));
                bodies.push(format!(
                    r#"{{"connection":{a},"other":{b},"connection":{b}}}"#
                ));
                bodies.push(format!(r#"{{"id":{a},"id":{b}}}"#));
            }
        }
        for body in &bodies {
            for key in [Some("connection"), Some("id"), None] {
                assert_eq!(
                    resource_id(body.as_bytes(), key),
                    reference(body, key),
                    "{body} with key {key:?}"
                );
            }
        }
    }

    #[test]
    fn debug_output_never_shows_the_mac_key() {
        assert_eq!(
            format!("{:?}", MacKey::new(b"sekrit".to_vec())),
            "MacKey(<redacted>)"
        );
    }
}
