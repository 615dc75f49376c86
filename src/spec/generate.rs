//! A value made from a response schema, for mock mode when the document gives no example.
//!
//! Deterministic (the same document gives the same answer every time) and as plausible as a
//! schema allows: a schema's own `example`, `default`, `const` or first `enum` value first;
//! then, by type, a string shaped by its `format` and length bounds, a number inside its
//! bounds, one array item (or `minItems` of them), and an object with every `required`
//! property (and, at the top, the others too). `writeOnly` properties, which a response never
//! carries, are left out. `$ref`s are followed; nesting stops at a few levels, so recursive
//! schemas end.

use serde_json::{Map, Value, json};

use super::walk::local_target;

/// How deep objects and arrays nest in a made-up value.
const MAX_DEPTH: usize = 5;

/// Optional properties of the top-level object included, at most.
const MAX_OPTIONAL: usize = 24;

/// A value for `schema` (inside `doc`, whose `$ref`s it may use).
pub(super) fn value(doc: &Value, schema: &Value) -> Value {
    make(doc, schema, 0)
}

fn make(doc: &Value, schema: &Value, depth: usize) -> Value {
    let schema = resolve(doc, schema);
    let Some(map) = schema.as_object() else {
        return Value::Null;
    };
    for keyword in ["example", "default", "const"] {
        if let Some(given) = map.get(keyword) {
            return given.clone();
        }
    }
    for keyword in ["examples", "enum"] {
        if let Some(first) = map
            .get(keyword)
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            return first.clone();
        }
    }
    if let Some(all) = map.get("allOf").and_then(Value::as_array) {
        // Each part describes the same value: their objects merge.
        let mut merged = Map::new();
        let mut other = None;
        for part in all {
            match make(doc, part, depth) {
                Value::Object(fields) => merged.extend(fields),
                value => other = other.or(Some(value)),
            }
        }
        return match other {
            Some(value) if merged.is_empty() => value,
            _ => Value::Object(merged),
        };
    }
    for keyword in ["oneOf", "anyOf"] {
        if let Some(first) = map
            .get(keyword)
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            return make(doc, first, depth);
        }
    }
    let declared = match map.get("type") {
        Some(Value::String(t)) => Some(t.as_str()),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null"),
        _ => None,
    };
    let kind = declared.unwrap_or(if map.contains_key("properties") {
        "object"
    } else if map.contains_key("items") {
        "array"
    } else {
        "string"
    });
    let number = |key: &str| map.get(key).and_then(Value::as_f64);
    match kind {
        "object" if depth >= MAX_DEPTH => json!({}),
        "object" => object(doc, map, depth),
        "array" if depth >= MAX_DEPTH => json!([]),
        "array" => {
            let count = number("minItems").map_or(1, |n| n.clamp(0.0, 5.0) as usize);
            let item = map
                .get("items")
                .map_or(Value::Null, |items| make(doc, items, depth + 1));
            Value::Array(vec![item; count])
        }
        "integer" | "number" => {
            let low = number("minimum").or(number("exclusiveMinimum").map(|n| n + 1.0));
            let high = number("maximum").or(number("exclusiveMaximum").map(|n| n - 1.0));
            // Zero, moved into the bounds.
            let mut n = 0.0_f64;
            if let Some(low) = low.filter(|low| *low > n) {
                n = low;
            }
            if let Some(high) = high.filter(|high| *high < n) {
                n = high;
            }
            if let Some(step) = number("multipleOf").filter(|s| *s > 0.0) {
                n = (n / step).ceil() * step;
            }
            if kind == "integer" {
                json!(n.ceil() as i64)
            } else {
                json!(n)
            }
        }
        "boolean" => json!(true),
        "null" => Value::Null,
        _ => string(map),
    }
}

fn object(doc: &Value, map: &Map<String, Value>, depth: usize) -> Value {
    let required: Vec<&str> = map
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut out = Map::new();
    let properties = map.get("properties").and_then(Value::as_object);
    let mut optional = 0;
    for (name, property) in properties.into_iter().flatten() {
        let property_schema = resolve(doc, property);
        if property_schema.get("writeOnly") == Some(&Value::Bool(true)) {
            continue;
        }
        let wanted = required.contains(&name.as_str()) || (depth == 0 && optional < MAX_OPTIONAL);
        if !wanted {
            continue;
        }
        if !required.contains(&name.as_str()) {
            optional += 1;
        }
        out.insert(name.clone(), make(doc, property, depth + 1));
    }
    Value::Object(out)
}

fn string(map: &Map<String, Value>) -> Value {
    let text = match map.get("format").and_then(Value::as_str) {
        Some("date-time") => "2024-01-01T00:00:00Z",
        Some("date") => "2024-01-01",
        Some("time") => "00:00:00Z",
        Some("email") => "user@example.com",
        Some("uri" | "url" | "uri-reference" | "iri") => "https://example.com/",
        Some("uuid") => "00000000-0000-4000-8000-000000000000",
        Some("ipv4") => "192.0.2.1",
        Some("ipv6") => "2001:db8::1",
        Some("hostname") => "example.com",
        Some("byte") => "ZXhhbXBsZQ==",
        Some("binary") => "",
        _ => "string",
    };
    let length = |key: &str| {
        map.get(key)
            .and_then(Value::as_u64)
            .map(|n| n.min(1024) as usize)
    };
    let mut text = text.to_owned();
    if let Some(min) = length("minLength") {
        while text.chars().count() < min {
            text.push('x');
        }
    }
    if let Some(max) = length("maxLength") {
        text = text.chars().take(max).collect();
    }
    Value::String(text)
}

/// Follows `$ref`s (a few at most; a chain that does not end is the schema as it is).
fn resolve<'a>(doc: &'a Value, mut schema: &'a Value) -> &'a Value {
    for _ in 0..8 {
        let Some(target) = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(local_target)
            .and_then(|at| doc.pointer(&at))
        else {
            break;
        };
        schema = target;
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_follow_the_schema() {
        let doc = json!({"components": {"schemas": {
            "Charge": {"type": "object", "required": ["id", "amount", "status"], "properties": {
                "id": {"type": "string", "minLength": 10},
                "amount": {"type": "integer", "minimum": 50},
                "status": {"type": "string", "enum": ["succeeded", "failed"]},
                "created": {"type": "string", "format": "date-time"},
                "secret": {"type": "string", "writeOnly": true},
                "refunds": {"type": "array", "items": {"$ref": "#/components/schemas/Refund"}},
                "parent": {"$ref": "#/components/schemas/Charge"},
                "currency": {"type": "string", "example": "usd"}
            }},
            "Refund": {"allOf": [{"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
                                 {"properties": {"ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}}}]}
        }}});
        let made = value(&doc, &json!({"$ref": "#/components/schemas/Charge"}));
        assert_eq!(made["id"], "stringxxxx");
        assert_eq!(made["amount"], 50);
        assert_eq!(made["status"], "succeeded");
        assert_eq!(made["created"], "2024-01-01T00:00:00Z");
        assert_eq!(made["currency"], "usd");
        assert!(
            made.get("secret").is_none(),
            "writeOnly: never in a response"
        );
        assert_eq!(made["refunds"], json!([{"id": "string"}]));
        assert!(made["parent"].is_object(), "recursion ends");
        assert_eq!(
            value(&doc, &json!({"type": "integer", "maximum": -3})),
            json!(-3)
        );
        assert_eq!(
            value(&doc, &json!({"type": ["null", "boolean"]})),
            json!(true)
        );
    }
}
