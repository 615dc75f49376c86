//! Where a JSON Schema keeps its subschemas, and JSON pointers to get there.
//!
//! Every pass over the document's schemas (collecting `$ref`s, normalising the dialect,
//! skipping what the engine cannot read) must tell a subschema from data: `properties` holds
//! schemas by name, `enum` and `example` hold values that merely look like schemas. This is the
//! one place that knows which is which.

use std::borrow::Cow;

use serde_json::Value;

/// How a keyword's value holds subschemas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Holds {
    /// The value is one schema.
    One,
    /// The value is an array of schemas.
    List,
    /// The value is an object of schemas by name.
    Map,
    /// The value is data or an annotation.
    Nothing,
}

/// What `keyword` holds, given its value (`items` is a schema or, in older drafts, a list).
pub(super) fn holds(keyword: &str, value: &Value) -> Holds {
    match keyword {
        "not"
        | "additionalProperties"
        | "additionalItems"
        | "contains"
        | "propertyNames"
        | "if"
        | "then"
        | "else"
        | "unevaluatedItems"
        | "unevaluatedProperties"
        | "contentSchema" => Holds::One,
        "items" if value.is_array() => Holds::List,
        "items" => Holds::One,
        "allOf" | "anyOf" | "oneOf" | "prefixItems" => Holds::List,
        "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas"
        | "dependencies" => Holds::Map,
        _ => Holds::Nothing,
    }
}

/// Whether a value can be a schema at all: an object or a boolean.
pub(super) fn is_schema(value: &Value) -> bool {
    value.is_object() || value.is_boolean()
}

/// Calls `visit` on `schema` and then on every subschema below it, parents first, each with its
/// pointer (`at` is `schema`'s). `visit` may change the schema it is given; its children are
/// found afterwards. It returns whether to go below that schema. Values that are not schemas
/// where a schema belongs are visited too (so they can be reported) but have no children;
/// `$ref`s are not followed.
pub(super) fn each_schema_mut(
    schema: &mut Value,
    at: &str,
    visit: &mut dyn FnMut(&str, &mut Value) -> bool,
) {
    if !visit(at, schema) {
        return;
    }
    let Value::Object(map) = schema else { return };
    for (keyword, value) in map.iter_mut() {
        let keyword_at = push(at, keyword);
        match (holds(keyword, value), value) {
            (Holds::One, value) => each_schema_mut(value, &keyword_at, visit),
            (Holds::List, Value::Array(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    each_schema_mut(item, &format!("{keyword_at}/{i}"), visit);
                }
            }
            (Holds::Map, Value::Object(entries)) => {
                for (name, entry) in entries.iter_mut() {
                    // `dependencies` also holds lists of property names; those are not schemas.
                    if keyword == "dependencies" && !is_schema(entry) {
                        continue;
                    }
                    each_schema_mut(entry, &push(&keyword_at, name), visit);
                }
            }
            _ => {}
        }
    }
}

/// Appends one reference token to a JSON pointer, escaping `~` and `/` as RFC 6901 says.
pub fn push(pointer: &str, token: &str) -> String {
    let mut out = String::with_capacity(pointer.len() + token.len() + 1);
    out.push_str(pointer);
    out.push('/');
    for c in token.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
    out
}

/// The reference tokens of a JSON pointer, unescaped (`/a~1b/c` → `a/b`, `c`).
pub(super) fn tokens(pointer: &str) -> impl Iterator<Item = Cow<'_, str>> {
    pointer.split('/').skip(1).map(|token| {
        if token.contains('~') {
            Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
        } else {
            Cow::Borrowed(token)
        }
    })
}

/// The local JSON pointer a `$ref` names (`#/components/schemas/A%20B` → `/components/schemas/A B`),
/// or `None` if it points outside the document.
pub(super) fn local_target(reference: &str) -> Option<String> {
    let fragment = reference.strip_prefix('#')?;
    Some(
        percent_encoding::percent_decode_str(fragment)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn visits_schemas_and_never_data() {
        let mut schema = json!({
            "properties": {"$ref": {"type": "string"}, "enum": {"items": [{"type": "integer"}]}},
            "enum": [{"type": "object"}],
            "example": {"properties": {}},
            "dependencies": {"a": ["b"], "c": {"not": true}},
            "allOf": [false]
        });
        let mut seen = Vec::new();
        each_schema_mut(&mut schema, "/s", &mut |at, _| {
            seen.push(at.to_owned());
            true
        });
        seen.sort();
        assert_eq!(
            seen,
            [
                "/s",
                "/s/allOf/0",
                "/s/dependencies/c",
                "/s/dependencies/c/not",
                "/s/properties/$ref",
                "/s/properties/enum",
                "/s/properties/enum/items/0",
            ]
        );
    }

    #[test]
    fn pointers_round_trip_through_tokens() {
        assert_eq!(push("/paths", "/a/{b}~"), "/paths/~1a~1{b}~0");
        let at = "/paths/~1a~1{b}~0/get/parameters/0/schema";
        assert_eq!(
            tokens(at).collect::<Vec<_>>(),
            ["paths", "/a/{b}~", "get", "parameters", "0", "schema"]
        );
        assert_eq!(
            local_target("#/components/schemas/A%20B").as_deref(),
            Some("/components/schemas/A B")
        );
        assert_eq!(local_target("other.json#/A"), None);
    }
}
