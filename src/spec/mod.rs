//! The OpenAPI document: loaded, overlaid and compiled into operations at start-up.
//!
//! The vendor's document is the single source of truth. It is read verbatim (JSON or YAML,
//! OpenAPI 3.0 or 3.1), overlays in the Overlay 1.0 format are applied on top, and every
//! operation with a JSON request body gets a compiled validator. Nothing here runs per request.

mod example;
mod overlay;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{HeaderName, Method};
use jsonschema::Draft;
use serde_json::Value;

pub use example::{Example, response_example};
pub use schema::{MAX_VIOLATIONS, RequestSchema};

/// The spec compiled into the binary: the vendor's document as shipped in `schemas/`.
pub const EMBEDDED_SPEC: (&str, &str) = (
    "schemas/activecampaign-v3.json",
    include_str!("../../schemas/activecampaign-v3.json"),
);

/// The overlay compiled into the binary beside [`EMBEDDED_SPEC`].
pub const EMBEDDED_OVERLAY: (&str, &str) = (
    "schemas/activecampaign-v3.overlay.yaml",
    include_str!("../../schemas/activecampaign-v3.overlay.yaml"),
);

/// The operation extension that says whether an operation's 2xx is audited as a create.
pub const AUDIT_EXTENSION: &str = "x-specgate-audit";

/// The credential header used when the spec declares no `apiKey` scheme in a header.
pub const DEFAULT_CREDENTIAL_HEADER: &str = "api-token";

/// A spec that cannot be used, with the file and the JSON pointer of the problem.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", if pointer.is_empty() { String::new() } else { format!(" at {pointer}") })]
pub struct SpecError {
    /// The spec or overlay file.
    pub file: String,
    /// An RFC 6901 pointer into that file (empty for the whole file).
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

impl SpecError {
    fn new(file: &str, pointer: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            file: file.to_owned(),
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

/// Where the spec comes from.
#[derive(Clone, Debug, Default)]
pub struct SpecSource {
    /// The spec file; `None` for the embedded one.
    pub path: Option<PathBuf>,
    /// The overlay files, applied in order; `None` means the default: the embedded overlay for
    /// the embedded spec, or `<stem>.overlay.{yaml,yml,json}` beside a spec file if present.
    pub overlays: Option<Vec<PathBuf>>,
}

/// The compiled spec.
#[derive(Debug)]
pub struct Spec {
    /// Where it came from, for logs.
    pub origin: String,
    /// The overlays applied, for logs.
    pub overlays: Vec<String>,
    /// The path of the first server URL (`/api/3`), under which paths are also served.
    pub base_path: String,
    /// The header the API key goes in, from the spec's `apiKey` security scheme.
    pub credential_header: HeaderName,
    /// Every operation, in document order.
    pub operations: Vec<Arc<Operation>>,
}

/// One operation of the spec.
#[derive(Debug)]
pub struct Operation {
    /// The `operationId`, or `METHOD /path` when the spec gives none.
    pub id: Arc<str>,
    /// The HTTP method.
    pub method: Method,
    /// The path template, as in the spec (`/connections/{id}`).
    pub template: String,
    /// The request body, if the operation declares one.
    pub body: Option<RequestBody>,
    /// Whether a 2xx means a resource was created: those are audited. By default a POST with a
    /// request body; the operation's `x-specgate-audit: true|false` (set in an overlay) says
    /// otherwise, for a POST that only searches, or a PUT that creates.
    pub creates: bool,
    /// The spec's example 2xx response, which mock mode answers with.
    pub example: Option<Example>,
}

/// An operation's request body.
#[derive(Debug)]
pub struct RequestBody {
    /// Whether the body must be present.
    pub required: bool,
    /// The media types the spec declares, lower-cased, without parameters.
    pub media_types: Vec<String>,
    /// The compiled schema of the JSON media type, if the operation takes JSON.
    pub json: Option<JsonBody>,
}

/// The JSON form of a request body.
#[derive(Debug)]
pub struct JsonBody {
    /// The compiled schema; `None` when the spec gives no schema (any JSON is accepted).
    pub schema: Option<RequestSchema>,
    /// When the schema's top level has exactly one property (`connection`), its name: the
    /// resource's fields live under it in the request, and its `id` under it in the response.
    pub resource_key: Option<String>,
}

const METHODS: [(&str, Method); 8] = [
    ("get", Method::GET),
    ("put", Method::PUT),
    ("post", Method::POST),
    ("delete", Method::DELETE),
    ("options", Method::OPTIONS),
    ("head", Method::HEAD),
    ("patch", Method::PATCH),
    ("trace", Method::TRACE),
];

impl Spec {
    /// Loads, overlays and compiles the spec from `source`.
    pub fn load(source: &SpecSource) -> Result<Spec, SpecError> {
        let (origin, mut doc) = match &source.path {
            None => (
                format!("{} (embedded)", EMBEDDED_SPEC.0),
                parse_document(EMBEDDED_SPEC.0, EMBEDDED_SPEC.1)?,
            ),
            Some(path) => {
                let name = path.display().to_string();
                let text = std::fs::read_to_string(path)
                    .map_err(|e| SpecError::new(&name, "", format!("cannot read: {e}")))?;
                (name.clone(), parse_document(&name, &text)?)
            }
        };
        let mut applied = Vec::new();
        match (&source.overlays, &source.path) {
            (Some(files), _) => {
                for file in files {
                    let name = file.display().to_string();
                    let text = std::fs::read_to_string(file)
                        .map_err(|e| SpecError::new(&name, "", format!("cannot read: {e}")))?;
                    overlay::apply(&mut doc, parse_document(&name, &text)?, &name)?;
                    applied.push(name);
                }
            }
            (None, None) => {
                let (name, text) = EMBEDDED_OVERLAY;
                overlay::apply(&mut doc, parse_document(name, text)?, name)?;
                applied.push(format!("{name} (embedded)"));
            }
            (None, Some(path)) => {
                if let Some(file) = overlay_beside(path) {
                    let name = file.display().to_string();
                    let text = std::fs::read_to_string(&file)
                        .map_err(|e| SpecError::new(&name, "", format!("cannot read: {e}")))?;
                    overlay::apply(&mut doc, parse_document(&name, &text)?, &name)?;
                    applied.push(name);
                }
            }
        }
        let mut spec = Spec::compile(&origin, doc)?;
        spec.overlays = applied;
        Ok(spec)
    }

    /// Compiles an already parsed (and overlaid) document; `file` names it in errors.
    pub fn compile(file: &str, mut doc: Value) -> Result<Spec, SpecError> {
        let version = doc
            .get("openapi")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let draft = if version.starts_with("3.1.") {
            Draft::Draft202012
        } else if version.starts_with("3.0.") {
            openapi30_to_json_schema(&mut doc);
            Draft::Draft4
        } else {
            return Err(SpecError::new(
                file,
                "/openapi",
                format!("OpenAPI version {version:?} is not supported (3.0.x and 3.1.x are)"),
            ));
        };
        schema::warm_up();
        let paths = doc
            .get("paths")
            .and_then(Value::as_object)
            .ok_or_else(|| SpecError::new(file, "/paths", "the spec has no paths object"))?;
        let mut operations = Vec::new();
        for (template, item) in paths {
            let item_at = pointer_push("/paths", template);
            if !template.starts_with('/') {
                return Err(SpecError::new(file, &item_at, "a path must start with '/'"));
            }
            let (item_at, item) = deref(&doc, &item_at, item, file)?;
            for (name, method) in &METHODS {
                let Some(op) = item.get(*name) else { continue };
                let op_at = pointer_push(&item_at, name);
                operations.push(Arc::new(compile_operation(
                    &doc,
                    file,
                    template,
                    method.clone(),
                    &op_at,
                    op,
                    draft,
                )?));
            }
        }
        Ok(Spec {
            origin: file.to_owned(),
            overlays: Vec::new(),
            base_path: base_path(&doc),
            credential_header: credential_header(&doc, file)?,
            operations,
        })
    }
}

fn compile_operation(
    doc: &Value,
    file: &str,
    template: &str,
    method: Method,
    op_at: &str,
    op: &Value,
    draft: Draft,
) -> Result<Operation, SpecError> {
    let id = match op.get("operationId") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        _ => format!("{method} {template}"),
    };
    let body = match op.get("requestBody") {
        None => None,
        Some(body) => {
            let (body_at, body) = deref(doc, &pointer_push(op_at, "requestBody"), body, file)?;
            Some(compile_body(doc, file, &body_at, body, draft)?)
        }
    };
    let creates = match op.get(AUDIT_EXTENSION) {
        None => method == Method::POST && body.is_some(),
        Some(Value::Bool(audited)) => *audited,
        Some(_) => {
            return Err(SpecError::new(
                file,
                pointer_push(op_at, AUDIT_EXTENSION),
                format!("{AUDIT_EXTENSION} must be true or false"),
            ));
        }
    };
    Ok(Operation {
        id: id.into(),
        creates,
        method,
        template: template.to_owned(),
        body,
        example: response_example(doc, op),
    })
}

fn compile_body(
    doc: &Value,
    file: &str,
    body_at: &str,
    body: &Value,
    draft: Draft,
) -> Result<RequestBody, SpecError> {
    let content_at = pointer_push(body_at, "content");
    let content = body
        .get("content")
        .and_then(Value::as_object)
        .ok_or_else(|| SpecError::new(file, &content_at, "a request body needs a content map"))?;
    let mut media_types = Vec::new();
    let mut json = None;
    for (media_type, media) in content {
        let essence = media_essence(media_type);
        if json.is_none() && is_json(&essence) {
            let media_at = pointer_push(&content_at, media_type);
            json = Some(match media.get("schema") {
                None => JsonBody {
                    schema: None,
                    resource_key: None,
                },
                Some(schema) => {
                    let schema_at = pointer_push(&media_at, "schema");
                    JsonBody {
                        resource_key: resource_key(doc, schema),
                        schema: Some(RequestSchema::compile(doc, &schema_at, draft, file)?),
                    }
                }
            });
        }
        media_types.push(essence);
    }
    Ok(RequestBody {
        required: body
            .get("required")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        media_types,
        json,
    })
}

/// The single top-level property of a body schema, following `$ref`s: `connection` for the
/// seed. That is where ActiveCampaign (and most JSON APIs of its style) put the resource.
fn resource_key<'a>(doc: &'a Value, mut schema: &'a Value) -> Option<String> {
    for _ in 0..8 {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(target) => schema = doc.pointer(target.strip_prefix('#')?)?,
            None => break,
        }
    }
    let properties = schema.get("properties")?.as_object()?;
    match properties.keys().collect::<Vec<_>>().as_slice() {
        [only] => Some((*only).clone()),
        _ => None,
    }
}

/// Follows a chain of local `$ref`s on an OpenAPI object (path item, request body).
fn deref<'a>(
    doc: &'a Value,
    at: &str,
    mut value: &'a Value,
    file: &str,
) -> Result<(String, &'a Value), SpecError> {
    let mut at = at.to_owned();
    for _ in 0..8 {
        let Some(target) = value.get("$ref").and_then(Value::as_str) else {
            return Ok((at, value));
        };
        let ref_at = pointer_push(&at, "$ref");
        let fragment = target.strip_prefix('#').ok_or_else(|| {
            SpecError::new(
                file,
                &ref_at,
                format!("$ref {target:?} is not local (#/...)"),
            )
        })?;
        let fragment = percent_encoding::percent_decode_str(fragment).decode_utf8_lossy();
        value = doc.pointer(&fragment).ok_or_else(|| {
            SpecError::new(file, &ref_at, format!("$ref {target:?} points at nothing"))
        })?;
        at = fragment.into_owned();
    }
    Err(SpecError::new(
        file,
        at,
        "$ref chain is too long or circular",
    ))
}

/// The path part of the first server URL, with server variables at their defaults.
fn base_path(doc: &Value) -> String {
    let Some(server) = doc.pointer("/servers/0") else {
        return String::new();
    };
    let mut url = server
        .get("url")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if let Some(vars) = server.get("variables").and_then(Value::as_object) {
        for (name, var) in vars {
            if let Some(default) = var.get("default").and_then(Value::as_str) {
                url = url.replace(&format!("{{{name}}}"), default);
            }
        }
    }
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
        None => url.as_str(),
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    path.trim_end_matches('/').to_owned()
}

/// The header named by the spec's `apiKey` security scheme in a header: the one the top-level
/// `security` requirement uses if it names one, else the first declared.
fn credential_header(doc: &Value, file: &str) -> Result<HeaderName, SpecError> {
    let schemes = doc
        .pointer("/components/securitySchemes")
        .and_then(Value::as_object);
    let is_header_key = |s: &Value| {
        s.get("type").and_then(Value::as_str) == Some("apiKey")
            && s.get("in").and_then(Value::as_str) == Some("header")
    };
    let required: Vec<&str> = doc
        .get("security")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|req| req.keys().map(String::as_str))
        .collect();
    let chosen = schemes.and_then(|schemes| {
        required
            .iter()
            .filter_map(|name| schemes.get_key_value(*name))
            .chain(schemes.iter())
            .find(|(_, s)| is_header_key(s))
    });
    match chosen {
        None => Ok(HeaderName::from_static(DEFAULT_CREDENTIAL_HEADER)),
        Some((name, scheme)) => {
            let header = scheme
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            HeaderName::try_from(header).map_err(|_| {
                SpecError::new(
                    file,
                    pointer_push(&pointer_push("/components/securitySchemes", name), "name"),
                    format!("{header:?} is not a valid header name"),
                )
            })
        }
    }
}

/// Rewrites OpenAPI 3.0's `nullable: true` into the JSON Schema it means, so a draft 4
/// validator enforces the document as 3.0 tools read it.
fn openapi30_to_json_schema(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("nullable") == Some(&Value::Bool(true)) {
                map.remove("nullable");
                match map.get_mut("type") {
                    Some(Value::String(t)) => {
                        let t = std::mem::take(t);
                        map.insert("type".into(), Value::from(vec![t, "null".to_owned()]));
                    }
                    Some(_) => {}
                    None => {}
                }
                if let Some(Value::Array(options)) = map.get_mut("enum")
                    && !options.contains(&Value::Null)
                {
                    options.push(Value::Null);
                }
            }
            for (key, child) in map.iter_mut() {
                if !matches!(key.as_str(), "example" | "examples" | "default" | "enum") {
                    openapi30_to_json_schema(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(openapi30_to_json_schema),
        _ => {}
    }
}

/// `application/json; charset=utf-8` → `application/json`.
pub fn media_essence(media_type: &str) -> String {
    media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether a media type essence is JSON (`application/json` or any `+json` suffix).
pub fn is_json(essence: &str) -> bool {
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Appends one reference token to a JSON pointer, escaping `~` and `/` as RFC 6901 says.
pub fn pointer_push(pointer: &str, token: &str) -> String {
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

/// `<dir>/<stem>.overlay.{yaml,yml,json}` beside a spec file, if one exists.
fn overlay_beside(spec: &Path) -> Option<PathBuf> {
    let stem = spec.file_stem()?.to_str()?;
    let dir = spec.parent().unwrap_or(Path::new("."));
    ["yaml", "yml", "json"]
        .iter()
        .map(|ext| dir.join(format!("{stem}.overlay.{ext}")))
        .find(|p| p.is_file())
}

/// Parses a JSON or YAML document; JSON by extension or by a leading `{`.
fn parse_document(name: &str, text: &str) -> Result<Value, SpecError> {
    let json = name.ends_with(".json")
        || (!name.ends_with(".yaml")
            && !name.ends_with(".yml")
            && text.trim_start().starts_with('{'));
    if json {
        serde_json::from_str(text)
            .map_err(|e| SpecError::new(name, "", format!("not valid JSON: {e}")))
    } else {
        let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)
            .map_err(|e| SpecError::new(name, "", format!("not valid YAML: {e}")))?;
        Ok(yaml_to_json(yaml))
    }
}

/// YAML allows non-string keys (`200:` for a response code); JSON, and OpenAPI, mean strings.
fn yaml_to_json(yaml: serde_yaml_ng::Value) -> Value {
    use serde_yaml_ng::Value as Y;
    match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(&n).unwrap_or(Value::Null),
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s,
                        other => serde_yaml_ng::to_string(&other)
                            .unwrap_or_default()
                            .trim_end()
                            .to_owned(),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => yaml_to_json(tagged.value),
    }
}

#[cfg(test)]
mod tests;
