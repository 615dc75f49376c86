//! The OpenAPI document: loaded, overlaid and compiled into routable operations at start-up.
//!
//! The vendor's document is the single source of truth. It is read verbatim (JSON or YAML;
//! OpenAPI 3.0, 3.1, or Swagger 2.0 converted in-process), overlays in the Overlay 1.0 format
//! are applied on top, each operation is placed in the route table, and every JSON request
//! body gets a validator, compiled once per distinct schema. Nothing here runs per request.
//!
//! Real documents are messy. What only makes specgate more lenient is a [`SpecWarning`] with
//! the file and JSON pointer, and the document loads: a `pattern` the regex engine cannot
//! read, a keyword whose value is not JSON Schema, two operations with the same method and path
//! shape. What leaves the document without a meaning is a [`SpecError`] and it does not load:
//! a `$ref` to nowhere, a schema that is `null`, no `paths`.

mod bundle;
mod dialect;
mod document;
mod example;
mod generate;
mod operation;
mod overlay;
mod pattern;
mod schema;
mod schemas;
mod security;
mod shape;
mod swagger2;
mod walk;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{HeaderValue, Method};
use serde_json::Value;

use crate::router::{Router, Template};
use crate::scheme::{Place, Scheme};
pub use dialect::Dialect;
pub use example::{Example, response_example};
pub use operation::{
    AUDIT_EXTENSION, ENFORCE_EXTENSION, Encoding, Enforce, Fields, Location, Media, Operation,
    Parameter, RequestBody, Response, Responses, StatusKey, Style, Variant,
};
pub use schema::{MAX_VIOLATIONS, RequestSchema, Subject};
pub use schemas::ReadOnly;
pub use shape::{Shape, Types, any as any_shape};
pub use walk::push as pointer_push;

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

/// The header the credential goes in when the document declares no usable scheme at all.
pub const DEFAULT_CREDENTIAL_HEADER: &str = "api-token";

/// A spec that cannot be used, with the file and the JSON pointer of the problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
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

/// Something in the document specgate works around by enforcing less than it says, or by not
/// serving an operation. `check --strict` refuses a document with any.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecWarning(pub SpecError);

/// Where the spec comes from.
#[derive(Clone, Debug)]
pub struct SpecSource {
    /// The spec file; `None` for the embedded one.
    pub path: Option<PathBuf>,
    /// The overlay files, applied in order; `None` means the default: the embedded overlay for
    /// the embedded spec, or `<stem>.overlay.{yaml,yml,json}` beside a spec file if present.
    pub overlays: Option<Vec<PathBuf>>,
    /// How requests may treat `readOnly` properties.
    pub read_only: ReadOnly,
    /// Whether operations' responses are read and their JSON schemas compiled, for the drift
    /// check (on by default).
    pub responses: bool,
}

impl Default for SpecSource {
    fn default() -> Self {
        SpecSource {
            path: None,
            overlays: None,
            read_only: ReadOnly::default(),
            responses: true,
        }
    }
}

/// The compiled spec.
#[derive(Debug)]
pub struct Spec {
    /// Where it came from, for logs.
    pub origin: String,
    /// The overlays applied, for logs.
    pub overlays: Vec<String>,
    /// The document's version as it says (`3.0.3`, `2.0`).
    pub version: String,
    /// The path of the first server URL (`/api/3`), under which paths are also served.
    pub base_path: String,
    /// How a request for a path the document does not have (forwarded when unknown routes
    /// are) carries the credential: as one with no `security` of its own would.
    pub unknown_credential: Option<Arc<[Scheme]>>,
    /// Every place a scheme of the document puts a credential: a client's copy is removed
    /// from all of them, whatever the operation takes.
    pub credential_places: Vec<Place>,
    /// Every operation, in document order.
    pub operations: Vec<Arc<Operation>>,
    /// The operations by path template, for routing.
    pub paths: Arc<Router<PathOperations>>,
    /// What loads but is not enforced as written; see [`SpecWarning`].
    pub warnings: Vec<SpecWarning>,
}

/// The operations of the path templates that share one shape (equal up to parameter names).
#[derive(Debug)]
pub struct PathOperations {
    /// Each method's operations. More than one only where the document has several path keys
    /// that differ by a `#fragment` or `?query` (Box, AWS): the request chooses among them.
    pub methods: Vec<(Method, Arc<[Arc<Operation>]>)>,
    /// The methods, for a 405's `Allow`.
    pub allow: HeaderValue,
}

impl PathOperations {
    /// The operations for `method`.
    pub fn get(&self, method: &Method) -> Option<&Arc<[Arc<Operation>]>> {
        self.methods
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, ops)| ops)
    }
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

/// `n` and the noun, singular or plural: "1 operation", "2 operations".
pub fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl Spec {
    /// Loads, overlays and compiles the spec from `source`.
    pub fn load(source: &SpecSource) -> Result<Spec, SpecError> {
        let (origin, mut doc) = match &source.path {
            None => (
                format!("{} (embedded)", EMBEDDED_SPEC.0),
                document::parse(EMBEDDED_SPEC.0, EMBEDDED_SPEC.1)?,
            ),
            Some(path) => {
                let name = path.display().to_string();
                let doc = document::read(path, &name)?;
                (name, doc)
            }
        };
        let mut applied = Vec::new();
        let mut apply_file = |doc: &mut Value, file: &Path| {
            let name = file.display().to_string();
            overlay::apply(doc, document::read(file, &name)?, &name)?;
            applied.push(name);
            Ok::<_, SpecError>(())
        };
        match (&source.overlays, &source.path) {
            (Some(files), _) => {
                for file in files {
                    apply_file(&mut doc, file)?;
                }
            }
            (None, None) => {
                let (name, text) = EMBEDDED_OVERLAY;
                overlay::apply(&mut doc, document::parse(name, text)?, name)?;
                applied.push(format!("{name} (embedded)"));
            }
            (None, Some(path)) => {
                if let Some(file) = overlay_beside(path) {
                    apply_file(&mut doc, &file)?;
                }
            }
        }
        // After the overlays, so a `$ref` an overlay adds is resolved too.
        let bundle = match &source.path {
            Some(path) => bundle::Bundle::resolve(&mut doc, path)?,
            None => bundle::Bundle::default(),
        };
        let mut spec = Spec::compile_with(&origin, doc, source.read_only, source.responses)
            .map_err(|mut error| {
                bundle.locate(&mut error);
                error
            })?;
        for warning in &mut spec.warnings {
            bundle.locate(&mut warning.0);
        }
        spec.overlays = applied;
        Ok(spec)
    }

    /// Compiles an already parsed (and overlaid) document; `file` names it in errors.
    pub fn compile(file: &str, doc: Value) -> Result<Spec, SpecError> {
        Spec::compile_with(file, doc, ReadOnly::default(), true)
    }

    /// [`Spec::compile`], with how requests may treat `readOnly` properties, and whether
    /// responses are read for the drift check.
    pub fn compile_with(
        file: &str,
        doc: Value,
        read_only: ReadOnly,
        responses: bool,
    ) -> Result<Spec, SpecError> {
        let mut warnings = Vec::new();
        let (version, dialect, doc) = match version_of(&doc) {
            Version::OpenApi(version, dialect) => (version, dialect, doc),
            Version::Swagger2 => {
                let (converted, problems) = swagger2::convert(doc)
                    .map_err(|(pointer, message)| SpecError::new(file, pointer, message))?;
                warnings.extend(
                    problems
                        .iter()
                        .map(|(at, message)| warning(file, at, message)),
                );
                ("2.0".to_owned(), Dialect::Oas30, converted)
            }
            Version::Unsupported(pointer, message) => {
                return Err(SpecError::new(file, pointer, message));
            }
        };
        let paths = doc
            .get("paths")
            .and_then(Value::as_object)
            .ok_or_else(|| SpecError::new(file, "/paths", "the spec has no paths object"))?;
        let mut operations = Vec::new();
        let mut roots = operation::Roots {
            read_responses: responses,
            ..operation::Roots::default()
        };
        let mut security = security::Security::read(&doc, file, &mut warnings);
        for (key, item) in paths {
            if key.starts_with("x-") {
                continue;
            }
            let key_at = pointer_push("/paths", key);
            if !key.starts_with('/') {
                warnings.push(warning(
                    file,
                    &key_at,
                    "a path must start with '/'; its operations are not served",
                ));
                continue;
            }
            let (template, variant) = match key.find(['#', '?']) {
                Some(at) => (&key[..at], Some(Variant::parse(&key[at..]))),
                None => (key.as_str(), None),
            };
            let (item_at, item) = deref(&doc, &key_at, item, file)?;
            for (name, method) in &METHODS {
                let Some(op) = item.get(*name) else { continue };
                let source = operation::Source {
                    doc: &doc,
                    file,
                    template,
                    variant: variant.clone(),
                    method: method.clone(),
                    shared: item.get("parameters").map(|p| (item_at.as_str(), p)),
                };
                let op_at = pointer_push(&item_at, name);
                let mut operation = Operation::read(source, &op_at, op, &mut roots)?;
                operation.credential =
                    security.for_operation(op.get("security"), &op_at, &mut warnings);
                operations.push(operation);
            }
        }
        let compiled = schemas::compile(
            &doc,
            &roots.schemas,
            &roots.shaped,
            dialect,
            schemas::View::Request(read_only),
            file,
            &mut warnings,
        )?;
        let answers = compile_responses(&doc, &roots.responses, dialect, file, &mut warnings);
        warnings.extend(
            roots
                .unchecked
                .iter()
                .map(|(at, message)| warning(file, at, message)),
        );
        let operations: Vec<Arc<Operation>> = operations
            .into_iter()
            .map(|mut operation| {
                operation.fill(&compiled);
                operation.fill_responses(&answers);
                Arc::new(operation)
            })
            .collect();
        let paths = Arc::new(route(&operations, file, &mut warnings));
        let unknown_credential = security.for_unknown(&mut warnings);
        Ok(Spec {
            origin: file.to_owned(),
            overlays: Vec::new(),
            version,
            base_path: base_path(&doc),
            unknown_credential,
            credential_places: security.places(),
            operations,
            paths,
            warnings,
        })
    }
}

/// The response schemas, compiled as responses see them. They only feed the drift check, which
/// never refuses a request: a set that will not compile is a warning, and bodies go unchecked.
/// A warning at a pointer the request schemas already warned about is not repeated.
fn compile_responses(
    doc: &Value,
    roots: &[String],
    dialect: Dialect,
    file: &str,
    warnings: &mut Vec<SpecWarning>,
) -> schemas::Compiled {
    let mut found = Vec::new();
    let compiled = schemas::compile(
        doc,
        roots,
        &[],
        dialect,
        schemas::View::Response,
        file,
        &mut found,
    )
    .unwrap_or_else(|error| {
        found.push(SpecWarning(SpecError {
            message: format!(
                "response bodies are not checked for drift: {}",
                error.message
            ),
            ..error
        }));
        schemas::Compiled::default()
    });
    let seen: std::collections::HashSet<String> =
        warnings.iter().map(|w| w.0.pointer.clone()).collect();
    warnings.extend(found.into_iter().filter(|w| !seen.contains(&w.0.pointer)));
    compiled
}

enum Version {
    OpenApi(String, Dialect),
    Swagger2,
    Unsupported(&'static str, String),
}

/// Which version a document is, by its `openapi` (or `swagger`) field.
fn version_of(doc: &Value) -> Version {
    let text = |field: &str| match doc.get(field) {
        Some(Value::String(version)) => Some(version.clone()),
        // YAML reads `openapi: 3.0` as a number.
        Some(Value::Number(version)) => Some(version.to_string()),
        _ => None,
    };
    if let Some(version) = text("openapi") {
        let dialect = match version.split('.').take(2).collect::<Vec<_>>().as_slice() {
            ["3", "0"] => Some(Dialect::Oas30),
            // 3.2 keeps 3.1's schema dialect, JSON Schema 2020-12.
            ["3", "1" | "2"] => Some(Dialect::Oas31),
            _ => None,
        };
        return match dialect {
            Some(dialect) => Version::OpenApi(version, dialect),
            None if version.trim().is_empty() => Version::Unsupported(
                "/openapi",
                "the \"openapi\" field is empty: it says which OpenAPI version the document is \
                 (3.0, 3.1 and 3.2 are supported, and Swagger 2.0)"
                    .to_owned(),
            ),
            None => Version::Unsupported(
                "/openapi",
                format!(
                    "OpenAPI version {version:?} is not supported (3.0, 3.1 and 3.2 are, and Swagger 2.0)"
                ),
            ),
        };
    }
    match text("swagger").as_deref() {
        Some("2.0") => Version::Swagger2,
        Some(other) => Version::Unsupported(
            "/swagger",
            format!("Swagger version {other:?} is not supported (2.0 is)"),
        ),
        None => Version::Unsupported(
            "",
            "no \"openapi\" or \"swagger\" field: this is not an OpenAPI document \
             (OpenAPI 3.0, 3.1, 3.2 and Swagger 2.0 are supported)"
                .to_owned(),
        ),
    }
}

fn warning(file: &str, pointer: &str, message: impl Into<String>) -> SpecWarning {
    SpecWarning(SpecError::new(file, pointer, message))
}

/// The route table: operations by path shape and method. Two operations with the same method
/// and shape and no `#`/`?` variant to tell them apart are ambiguous: the first in document
/// order is served, with a warning naming both.
fn route(
    operations: &[Arc<Operation>],
    file: &str,
    warnings: &mut Vec<SpecWarning>,
) -> Router<PathOperations> {
    let mut router: Router<Vec<(Method, Vec<Arc<Operation>>)>> = Router::new();
    for op in operations {
        let template = Template::parse(&op.template);
        let path_at = op.pointer.rsplit_once('/').map_or("", |(path, _)| path);
        if template.has_unbalanced_braces() && !warnings.iter().any(|w| w.0.pointer == path_at) {
            warnings.push(warning(
                file,
                path_at,
                "unbalanced '{' or '}' in the path template; read as literal text",
            ));
        }
        let methods = router.entry(template.shape(), Vec::new);
        let Some((_, candidates)) = methods.iter_mut().find(|(m, _)| *m == op.method) else {
            methods.push((op.method.clone(), vec![op.clone()]));
            continue;
        };
        // Told apart by its `?query` or `#fragment` from every one already there, it is one
        // more the request chooses among; otherwise no request can ever reach it.
        let variant = |o: &Operation| o.variant.as_ref().map(|v| v.text.clone());
        let Some(twin) = candidates.iter().find(|c| variant(c) == variant(op)) else {
            candidates.push(op.clone());
            continue;
        };
        warnings.push(warning(
            file,
            &op.pointer,
            format!(
                "{} {} has the same method and path shape as {} at {}, and nothing tells their \
                 requests apart: that one is served, this one never is",
                op.method, op.template, twin.template, twin.pointer
            ),
        ));
    }
    router.map(|methods| {
        let allow: Vec<&str> = methods.iter().map(|(m, _)| m.as_str()).collect();
        PathOperations {
            allow: HeaderValue::from_str(&allow.join(", ")).expect("method names are tokens"),
            methods: methods
                .into_iter()
                .map(|(method, ops)| (method, Arc::from(ops)))
                .collect(),
        }
    })
}

/// Follows a chain of local `$ref`s on an OpenAPI object (path item, request body).
pub(super) fn deref<'a>(
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
        let fragment = walk::local_target(target).ok_or_else(|| {
            SpecError::new(
                file,
                &ref_at,
                format!("$ref {target:?} is not local (#/...)"),
            )
        })?;
        value = doc.pointer(&fragment).ok_or_else(|| {
            SpecError::new(file, &ref_at, format!("$ref {target:?} points at nothing"))
        })?;
        at = fragment;
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

/// `<dir>/<stem>.overlay.{yaml,yml,json}` beside a spec file, if one exists.
fn overlay_beside(spec: &Path) -> Option<PathBuf> {
    let stem = spec.file_stem()?.to_str()?;
    let dir = spec.parent().unwrap_or(Path::new("."));
    ["yaml", "yml", "json"]
        .iter()
        .map(|ext| dir.join(format!("{stem}.overlay.{ext}")))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests;
