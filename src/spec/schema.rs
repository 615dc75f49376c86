//! Compiling an operation's request schema, and explaining its violations to a person.

use std::collections::HashSet;
use std::sync::LazyLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{Draft, Registry, Resource, ValidationError, Validator};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::{Value, json};

use super::{SpecError, pointer_push};
use crate::error::{Source, Violation};

/// The URI the whole spec document is registered under, so that `$ref`s between its schemas
/// resolve exactly as they would inside the document.
const SPEC_URI: &str = "urn:specgate:spec";

/// What a JSON pointer must percent-encode to be a URI fragment (RFC 3986 §3.5, RFC 6901 §6).
const FRAGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// More violations than this in one body are not listed; the first ones are what a person fixes.
pub const MAX_VIOLATIONS: usize = 32;

/// A compiled request body schema.
pub struct RequestSchema {
    validator: Validator,
}

impl std::fmt::Debug for RequestSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSchema").finish_non_exhaustive()
    }
}

impl RequestSchema {
    /// Compiles the schema at `pointer` inside `doc`.
    ///
    /// Every local `$ref` reachable from it must resolve, and the schema and everything it
    /// references must be valid for `draft`; otherwise the error names the JSON pointer at fault.
    pub fn compile(
        doc: &Value,
        pointer: &str,
        draft: Draft,
        file: &str,
    ) -> Result<Self, SpecError> {
        check_reachable(doc, pointer, draft, file)?;
        let registry = Registry::new()
            .add(SPEC_URI, Resource::from_contents(doc.clone()))
            .and_then(|r| r.prepare())
            .map_err(|e| SpecError::new(file, pointer, e.to_string()))?;
        let validator = jsonschema::options()
            .with_draft(draft)
            .with_registry(&registry)
            // Formats are annotations: the vendor does not enforce `email` or `uri` strictly, and
            // a gateway stricter than its upstream refuses requests that would have worked.
            // Tighten with `pattern` in an overlay instead.
            .should_validate_formats(false)
            .build(&json!({ "$ref": format!("{SPEC_URI}#{}", utf8_percent_encode(pointer, FRAGMENT)) }))
            .map_err(|e| SpecError::new(file, pointer, e.to_string()))?;
        Ok(RequestSchema { validator })
    }

    /// Whether `body` satisfies the schema.
    pub fn is_valid(&self, body: &Value) -> bool {
        self.validator.is_valid(body)
    }

    /// Every violation in `body` (at most [`MAX_VIOLATIONS`]), each with a pointer and a message.
    pub fn violations(&self, body: &Value) -> Vec<Violation> {
        let mut out = Vec::new();
        for error in self.validator.iter_errors(body) {
            explain(&error, &mut out);
            if out.len() >= MAX_VIOLATIONS {
                out.truncate(MAX_VIOLATIONS);
                break;
            }
        }
        out
    }
}

/// Walks every schema reachable from `pointer` through local `$ref`s: each `$ref` must resolve
/// and each schema must be valid for `draft`. Errors name the exact pointer.
fn check_reachable(doc: &Value, pointer: &str, draft: Draft, file: &str) -> Result<(), SpecError> {
    let mut seen = HashSet::new();
    let mut todo = vec![pointer.to_owned()];
    while let Some(at) = todo.pop() {
        if !seen.insert(at.clone()) {
            continue;
        }
        let schema = doc
            .pointer(&at)
            .ok_or_else(|| SpecError::new(file, &at, "no such location in the spec"))?;
        let meta = match draft {
            Draft::Draft4 => jsonschema::draft4::meta::validate(schema),
            _ => jsonschema::draft202012::meta::validate(schema),
        };
        if let Err(e) = meta {
            let inner = e.instance_path().as_str().to_owned();
            return Err(SpecError::new(file, format!("{at}{inner}"), e.to_string()));
        }
        collect_refs(schema, &at, &mut |ref_at, target| {
            let Some(fragment) = target.strip_prefix('#') else {
                return Err(SpecError::new(
                    file,
                    ref_at,
                    format!(
                        "$ref {target:?} is not local; only references into this document (#/...) are supported"
                    ),
                ));
            };
            let fragment = percent_encoding::percent_decode_str(fragment).decode_utf8_lossy();
            if doc.pointer(&fragment).is_none() {
                return Err(SpecError::new(
                    file,
                    ref_at,
                    format!("$ref {target:?} points at nothing in the document"),
                ));
            }
            todo.push(fragment.into_owned());
            Ok(())
        })?;
    }
    Ok(())
}

fn collect_refs(
    value: &Value,
    at: &str,
    found: &mut dyn FnMut(String, &str) -> Result<(), SpecError>,
) -> Result<(), SpecError> {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let child_at = pointer_push(at, key);
                match (key.as_str(), child) {
                    ("$ref", Value::String(target)) => found(child_at, target)?,
                    // Examples and defaults are data, not schemas: a `$ref` key inside them is
                    // just a property name.
                    ("example" | "examples" | "default" | "const" | "enum", _) => {}
                    _ => collect_refs(child, &child_at, found)?,
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_refs(child, &format!("{at}/{i}"), found)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Turns one validation error into the violations a person reads.
fn explain(error: &ValidationError<'_>, out: &mut Vec<Violation>) {
    let at = error.instance_path().as_str();
    let violation = |pointer: String, code: &'static str, what: String| Violation {
        title: format!("{}: {what}", if at.is_empty() { "body" } else { at }),
        code,
        source: Source { pointer },
    };
    match error.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            out.push(violation(
                pointer_push(at, name),
                "required",
                format!("missing required property '{name}'"),
            ));
        }
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            for name in unexpected {
                out.push(violation(
                    pointer_push(at, name),
                    "unexpected_property",
                    format!("property '{name}' is not allowed"),
                ));
            }
        }
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => t.to_string(),
                TypeKind::Multiple(set) => set
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            out.push(violation(
                at.to_owned(),
                "type",
                format!("expected {expected}, got {}", type_name(error.instance())),
            ));
        }
        ValidationErrorKind::Enum { options } => out.push(violation(
            at.to_owned(),
            "enum",
            format!("must be one of {}", clip(&options.to_string())),
        )),
        ValidationErrorKind::Constant { expected_value } => out.push(violation(
            at.to_owned(),
            "const",
            format!("must be {}", clip(&expected_value.to_string())),
        )),
        ValidationErrorKind::MinLength { limit } => out.push(violation(
            at.to_owned(),
            "min_length",
            format!("must be at least {limit} characters long"),
        )),
        ValidationErrorKind::MaxLength { limit } => out.push(violation(
            at.to_owned(),
            "max_length",
            format!("must be at most {limit} characters long"),
        )),
        ValidationErrorKind::Pattern { pattern } => out.push(violation(
            at.to_owned(),
            "pattern",
            format!("must match the pattern {}", clip(pattern)),
        )),
        ValidationErrorKind::Minimum { limit } => out.push(violation(
            at.to_owned(),
            "minimum",
            format!("must be at least {limit}"),
        )),
        ValidationErrorKind::Maximum { limit } => out.push(violation(
            at.to_owned(),
            "maximum",
            format!("must be at most {limit}"),
        )),
        ValidationErrorKind::MinItems { limit } => out.push(violation(
            at.to_owned(),
            "min_items",
            format!("must have at least {limit} items"),
        )),
        ValidationErrorKind::MaxItems { limit } => out.push(violation(
            at.to_owned(),
            "max_items",
            format!("must have at most {limit} items"),
        )),
        other => out.push(violation(
            at.to_owned(),
            "schema",
            format!("fails '{}': {}", other.keyword(), clip(&error.to_string())),
        )),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Keeps echoed spec or body text short: a message is for reading, not for dumping data.
fn clip(s: &str) -> String {
    const MAX: usize = 120;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Compiles nothing, but makes sure the meta-schemas are loaded before the first request.
pub(super) fn warm_up() {
    static WARM: LazyLock<bool> = LazyLock::new(|| {
        jsonschema::draft4::meta::is_valid(&json!({}))
            && jsonschema::draft202012::meta::is_valid(&json!({}))
    });
    let _ = *WARM;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(doc: Value) -> Result<RequestSchema, SpecError> {
        RequestSchema::compile(&doc, "/s", Draft::Draft202012, "spec.json")
    }

    #[test]
    fn local_refs_resolve_inside_the_document() {
        let doc = json!({
            "s": {"$ref": "#/components/schemas/Thing"},
            "components": {"schemas": {"Thing": {"type": "object", "required": ["a"]}}}
        });
        let schema = compile(doc).unwrap();
        assert!(schema.is_valid(&json!({"a": 1})));
        let v = schema.violations(&json!({}));
        assert_eq!(v[0].title, "body: missing required property 'a'");
        assert_eq!(v[0].source.pointer, "/a");
    }

    #[test]
    fn a_dangling_ref_names_where_it_is() {
        let doc = json!({"s": {"properties": {"x": {"$ref": "#/components/schemas/Nope"}}}});
        let e = compile(doc).unwrap_err();
        assert_eq!(e.pointer, "/s/properties/x/$ref");
        assert!(e.message.contains("points at nothing"), "{e}");
    }

    #[test]
    fn an_invalid_schema_names_the_keyword_at_fault() {
        let doc = json!({"s": {"properties": {"x": {"type": "strin"}}}});
        let e = compile(doc).unwrap_err();
        assert!(e.pointer.starts_with("/s/properties/x/type"), "{e}");
    }

    #[test]
    fn violations_explain_type_and_nesting() {
        let doc = json!({"s": {"properties": {"c": {"properties": {"n": {"type": "string"}}}}}});
        let v = compile(doc).unwrap().violations(&json!({"c": {"n": 5}}));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].title, "/c/n: expected string, got integer");
        assert_eq!(v[0].code, "type");
        assert_eq!(v[0].source.pointer, "/c/n");
    }

    #[test]
    fn property_names_are_escaped_in_pointers() {
        let doc = json!({"s": {"required": ["a/b~c"]}});
        let v = compile(doc).unwrap().violations(&json!({}));
        assert_eq!(v[0].source.pointer, "/a~1b~0c");
    }
}
