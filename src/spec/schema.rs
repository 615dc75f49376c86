//! Compiling an operation's request schema, and explaining its violations to a person.

use std::sync::Arc;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{Draft, Registry, ValidationError, Validator};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::{Value, json};

use super::pointer_push;
use crate::error::{Source, Violation};

/// The URI the document's schemas are registered under, so that `$ref`s between them resolve
/// exactly as they would inside the document.
pub(super) const SPEC_URI: &str = "urn:specgate:spec";

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
///
/// All of a document's request schemas are compiled together into one validator, so a
/// component they share is compiled once however many operations use it: its `properties`
/// name each schema by a key (`{"7": {"$ref": "...#/s/7"}}`), and a body is checked as the
/// value of its schema's key (`{"7": body}`).
pub struct RequestSchema {
    set: Arc<Validator>,
    key: Box<str>,
}

impl std::fmt::Debug for RequestSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSchema")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The URI of the schema at `pointer` of the registered document.
fn uri(pointer: &str) -> String {
    format!("{SPEC_URI}#{}", utf8_percent_encode(pointer, FRAGMENT))
}

fn options() -> jsonschema::ValidationOptions<'static> {
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        // Formats are annotations: the vendor does not enforce `email` or `uri` strictly, and a
        // gateway stricter than its upstream refuses requests that would have worked. Tighten
        // with `pattern` in an overlay instead.
        .should_validate_formats(false)
}

impl RequestSchema {
    /// Compiles the schemas at `pointers` of the document `registry` holds under [`SPEC_URI`],
    /// together; one [`RequestSchema`] for each, in order.
    ///
    /// The caller has checked that every `$ref` below them resolves and that they are valid
    /// JSON Schema. An error here is the engine's own: the pointer of a schema that fails on
    /// its own, and why.
    pub(super) fn compile_all(
        registry: &Registry<'_>,
        pointers: &[String],
    ) -> Result<Vec<Self>, (String, String)> {
        let properties: serde_json::Map<String, Value> = pointers
            .iter()
            .enumerate()
            .map(|(i, pointer)| (i.to_string(), json!({ "$ref": uri(pointer) })))
            .collect();
        let set = match options()
            .with_registry(registry)
            .build(&json!({ "properties": properties }))
        {
            Ok(set) => Arc::new(set),
            Err(error) => {
                // Find the schema at fault, to name it.
                for pointer in pointers {
                    if let Err(e) = options()
                        .with_registry(registry)
                        .build(&json!({ "$ref": uri(pointer) }))
                    {
                        return Err((pointer.clone(), e.to_string()));
                    }
                }
                return Err((String::new(), error.to_string()));
            }
        };
        Ok((0..pointers.len())
            .map(|i| RequestSchema {
                set: set.clone(),
                key: i.to_string().into(),
            })
            .collect())
    }

    /// Checks `body`: handed back if it is valid, its violations if not.
    pub fn check(&self, body: Value) -> Result<Value, Vec<Violation>> {
        self.check_as(body, Subject::Body)
    }

    /// Checks `value`, the value of `subject`: handed back if it is valid, its violations (in
    /// `subject`'s terms) if not.
    pub fn check_as(&self, value: Value, subject: Subject<'_>) -> Result<Value, Vec<Violation>> {
        let wrapped = self.wrap(value);
        if self.set.is_valid(&wrapped) {
            let Value::Object(mut wrapper) = wrapped else {
                unreachable!("wrap makes an object")
            };
            return Ok(wrapper.swap_remove(&*self.key).expect("wrap put it there"));
        }
        Err(self.violations_of(&wrapped, subject))
    }

    /// Checks `value` as an upstream's response body, keeping it either way: it, with its
    /// violations (none when it is valid), whose titles hold no value from it. A valid value
    /// takes only the fast check.
    pub fn check_keeping(&self, value: Value) -> (Value, Vec<Violation>) {
        let wrapped = self.wrap(value);
        let violations = if self.set.is_valid(&wrapped) {
            Vec::new()
        } else {
            self.violations_of(&wrapped, Subject::Response)
        };
        let Value::Object(mut wrapper) = wrapped else {
            unreachable!("wrap makes an object")
        };
        let value = wrapper.swap_remove(&*self.key).expect("wrap put it there");
        (value, violations)
    }

    /// Whether `body` satisfies the schema.
    pub fn is_valid(&self, body: &Value) -> bool {
        self.set.is_valid(&self.wrap(body.clone()))
    }

    /// Every violation in `body` (at most [`MAX_VIOLATIONS`]), each with a pointer and a message.
    pub fn violations(&self, body: &Value) -> Vec<Violation> {
        self.violations_of(&self.wrap(body.clone()), Subject::Body)
    }

    fn wrap(&self, body: Value) -> Value {
        let mut wrapper = serde_json::Map::with_capacity(1);
        wrapper.insert(self.key.to_string(), body);
        Value::Object(wrapper)
    }

    fn violations_of(&self, wrapped: &Value, subject: Subject<'_>) -> Vec<Violation> {
        let prefix = format!("/{}", self.key);
        let mut out = Vec::new();
        for error in self.set.iter_errors(wrapped) {
            let path = error.instance_path().as_str();
            explain(
                &error,
                path.strip_prefix(&prefix).unwrap_or(path),
                subject,
                &mut out,
            );
            if out.len() >= MAX_VIOLATIONS {
                out.truncate(MAX_VIOLATIONS);
                break;
            }
        }
        out
    }
}

/// What a checked value is: the request body, or a parameter's value.
#[derive(Clone, Copy, Debug)]
pub enum Subject<'a> {
    /// The request body: violations point into it.
    Body,
    /// An upstream's response body: violations point into it, and their titles say what the
    /// document expects without the pointer or any value from the body (they are logged).
    Response,
    /// A parameter: violations name it.
    Parameter {
        /// Where it travels (`query`, `path`, `header`, `cookie`).
        location: &'a str,
        /// Its name.
        name: &'a str,
    },
}

impl Subject<'_> {
    /// What a violation at `at` (a pointer inside the value) is about, for its title.
    fn title(&self, at: &str) -> String {
        match (self, at.is_empty()) {
            (Subject::Body | Subject::Response, true) => "body".to_owned(),
            (Subject::Body | Subject::Response, false) => at.to_owned(),
            (Subject::Parameter { location, name }, true) => {
                format!("{location} parameter '{name}'")
            }
            (Subject::Parameter { location, name }, false) => {
                format!("{location} parameter '{name}' at {at}")
            }
        }
    }

    fn source(&self, pointer: String) -> Source {
        match self {
            Subject::Body | Subject::Response => Source::body(pointer),
            Subject::Parameter { name, .. } => Source::parameter(*name),
        }
    }
}

/// Turns one validation error into the violations a person reads.
fn explain(error: &ValidationError<'_>, at: &str, subject: Subject<'_>, out: &mut Vec<Violation>) {
    let violation = |pointer: String, code: &'static str, what: String| Violation {
        title: match subject {
            Subject::Response => what,
            _ => format!("{}: {what}", subject.title(at)),
        },
        code,
        source: subject.source(pointer),
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
                // A response's property names are its data too (maps keyed by ids, emails).
                let what = match subject {
                    Subject::Response => "a property the schema does not allow".to_owned(),
                    _ => format!("property '{name}' is not allowed"),
                };
                out.push(violation(
                    pointer_push(at, name),
                    "unexpected_property",
                    what,
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
        ValidationErrorKind::FalseSchema => out.push(violation(
            at.to_owned(),
            "not_allowed",
            "is not allowed here (the API document makes it read-only, or excludes it)".to_owned(),
        )),
        // The engine's own message quotes the value: not for a response, whose is logged.
        other if matches!(subject, Subject::Response) => out.push(violation(
            at.to_owned(),
            "schema",
            format!("fails '{}'", other.keyword()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(schema: Value) -> RequestSchema {
        let doc = json!({ "s": schema });
        let registry = Registry::new()
            .add(SPEC_URI, Draft::Draft202012.create_resource(doc))
            .and_then(|r| r.prepare())
            .unwrap();
        RequestSchema::compile_all(&registry, &["/s".to_owned()])
            .unwrap()
            .remove(0)
    }

    #[test]
    fn violations_explain_required_with_the_missing_pointer() {
        let v = compile(json!({"type": "object", "required": ["a"]})).violations(&json!({}));
        assert_eq!(v[0].title, "body: missing required property 'a'");
        assert_eq!(v[0].source, Source::body("/a"));
    }

    #[test]
    fn violations_explain_type_and_nesting() {
        let schema = json!({"properties": {"c": {"properties": {"n": {"type": "string"}}}}});
        let v = compile(schema).violations(&json!({"c": {"n": 5}}));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].title, "/c/n: expected string, got integer");
        assert_eq!(v[0].code, "type");
        assert_eq!(v[0].source, Source::body("/c/n"));
    }

    #[test]
    fn property_names_are_escaped_in_pointers() {
        let v = compile(json!({"required": ["a/b~c"]})).violations(&json!({}));
        assert_eq!(v[0].source, Source::body("/a~1b~0c"));
    }
}
