//! The example response of an operation, taken from the spec at load time, for mock mode.
//!
//! The first 2xx response (lowest code; `2XX` counts as 200) that has an example wins. Within
//! it the JSON media type is preferred, and its `example`, or else the first of its
//! `examples.*.value` (following local `$ref`s). A string example of a JSON media type is
//! parsed as JSON when it is JSON, as vendors often paste the body in as a string (the seed
//! does). A 2xx without content (a 204) is an empty answer. With no example anywhere, the
//! lowest 2xx answers with a value made from its schema, as Prism does.

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;

use super::{is_json, media_essence};

/// A canned response.
#[derive(Clone, Debug)]
pub struct Example {
    /// The response code.
    pub status: StatusCode,
    /// The media type, if the response has content.
    pub content_type: Option<String>,
    /// The body.
    pub body: Bytes,
    /// Made from the response's schema, the document giving no example.
    pub from_schema: bool,
}

/// Follows local `$ref`s; `None` if one points at nothing or the chain does not end.
fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> Option<&'a Value> {
    for _ in 0..8 {
        match value.get("$ref").and_then(Value::as_str) {
            None => return Some(value),
            Some(target) => {
                let fragment = target.strip_prefix('#')?;
                let fragment = percent_encoding::percent_decode_str(fragment).decode_utf8_lossy();
                value = doc.pointer(&fragment)?;
            }
        }
    }
    None
}

fn status_of(code: &str) -> Option<StatusCode> {
    if code.eq_ignore_ascii_case("2XX") {
        return Some(StatusCode::OK);
    }
    code.parse::<u16>()
        .ok()
        .filter(|c| (200..300).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
}

/// The example response of operation `op` in `doc`: the first 2xx that has an example; else
/// the lowest 2xx, empty if it has no content and otherwise with a value made from its schema
/// ([`super::generate`]). `None` only for an operation without a 2xx.
pub fn response_example(doc: &Value, op: &Value) -> Option<Example> {
    let responses = op.get("responses")?.as_object()?;
    let mut codes: Vec<(StatusCode, &Value)> = responses
        .iter()
        .filter_map(|(code, response)| Some((status_of(code)?, response)))
        .collect();
    codes.sort_by_key(|(status, _)| *status);
    let mut made: Option<Example> = None;
    for (status, response) in codes {
        let Some(response) = resolve(doc, response) else {
            continue;
        };
        let content = response.get("content").and_then(Value::as_object);
        let Some(content) = content.filter(|c| !c.is_empty()) else {
            made.get_or_insert(Example {
                status,
                content_type: None,
                body: Bytes::new(),
                from_schema: false,
            });
            continue;
        };
        let mut media: Vec<(&String, &Value)> = content.iter().collect();
        // JSON first, then the document's order.
        media.sort_by_key(|(media_type, _)| !is_json(&media_essence(media_type)));
        for (media_type, media) in &media {
            let Some(value) = media_example(doc, media) else {
                continue;
            };
            return Some(Example {
                status,
                content_type: Some((*media_type).clone()),
                body: encode(&media_essence(media_type), value),
                from_schema: false,
            });
        }
        if made.is_none() {
            let (media_type, media) = media[0];
            let value = media
                .get("schema")
                .map_or(Value::Null, |schema| super::generate::value(doc, schema));
            made = Some(Example {
                status,
                content_type: Some(media_type.clone()),
                body: encode(&media_essence(media_type), &value),
                from_schema: true,
            });
        }
    }
    made
}

fn media_example<'a>(doc: &'a Value, media: &'a Value) -> Option<&'a Value> {
    if let Some(example) = media.get("example") {
        return Some(example);
    }
    media
        .get("examples")?
        .as_object()?
        .values()
        .filter_map(|example| resolve(doc, example)?.get("value"))
        .next()
}

fn encode(essence: &str, value: &Value) -> Bytes {
    match value {
        Value::String(text) if is_json(essence) => match serde_json::from_str::<Value>(text) {
            Ok(parsed) => Bytes::from(serde_json::to_vec(&parsed).expect("a JSON value encodes")),
            Err(_) => Bytes::from(serde_json::to_vec(value).expect("a JSON value encodes")),
        },
        Value::String(text) => Bytes::from(text.clone()),
        other => Bytes::from(serde_json::to_vec(other).expect("a JSON value encodes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_seeds_string_example_is_parsed_as_json() {
        let doc: Value = serde_json::from_str(super::super::EMBEDDED_SPEC.1).unwrap();
        let op = &doc["paths"]["/connections"]["post"];
        let example = response_example(&doc, op).unwrap();
        assert_eq!(example.status, StatusCode::OK);
        assert_eq!(example.content_type.as_deref(), Some("application/json"));
        let body: Value = serde_json::from_slice(&example.body).unwrap();
        assert_eq!(body["connection"]["id"], "1");
        assert_eq!(body["connection"]["listId"], "1");
    }

    #[test]
    fn the_lowest_2xx_with_an_example_wins_and_refs_are_followed() {
        let doc = json!({
            "components": {
                "examples": {"made": {"value": {"thing": {"id": "7"}}}},
                "responses": {"Created": {"content": {
                    "text/plain": {"example": "made"},
                    "application/hal+json": {"examples": {"a": {"$ref": "#/components/examples/made"}}}
                }}}
            },
            "paths": {"/things": {"post": {"responses": {
                "400": {"content": {"application/json": {"example": {"error": 1}}}},
                "202": {"$ref": "#/components/responses/Created"},
                "201": {"description": "no example here", "content": {"application/json": {}}}
            }}}}
        });
        let op = &doc["paths"]["/things"]["post"];
        let example = response_example(&doc, op).unwrap();
        assert_eq!(example.status, StatusCode::ACCEPTED);
        assert_eq!(
            example.content_type.as_deref(),
            Some("application/hal+json")
        );
        assert_eq!(&example.body[..], br#"{"thing":{"id":"7"}}"#);
    }

    #[test]
    fn a_204_is_an_empty_answer_and_no_2xx_is_no_example() {
        let doc = json!({"responses": {"204": {"description": "gone"}}});
        let example = response_example(&doc, &doc).unwrap();
        assert_eq!(example.status, StatusCode::NO_CONTENT);
        assert!(example.body.is_empty() && example.content_type.is_none());
        let doc = json!({"responses": {"404": {"content": {"application/json": {"example": {}}}}}});
        assert!(response_example(&doc, &doc).is_none());
    }

    #[test]
    fn without_an_example_the_lowest_2xx_is_made_from_its_schema() {
        let doc = json!({"responses": {
            "201": {"content": {"application/json": {"schema": {"type": "object", "required": ["id"],
                "properties": {"id": {"type": "string", "format": "uuid"}}}}}},
            "202": {"content": {"text/plain": {"example": "later"}}}
        }});
        let example = response_example(&doc, &doc).unwrap();
        assert_eq!(example.status, StatusCode::ACCEPTED, "a given example wins");
        let doc = json!({"responses": {"201": doc["responses"]["201"].clone()}});
        let example = response_example(&doc, &doc).unwrap();
        assert_eq!(example.status, StatusCode::CREATED);
        assert!(example.from_schema);
        assert_eq!(
            &example.body[..],
            br#"{"id":"00000000-0000-4000-8000-000000000000"}"#
        );
    }
}
