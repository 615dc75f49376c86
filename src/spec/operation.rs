//! One operation of the document: what a request to it may carry (parameters, a body in each
//! declared media type) and what specgate does with it (audit, mock).
//!
//! Building an operation only reads the document and notes where each schema is; the schemas
//! are compiled afterwards, all of the document's together ([`super::schemas`]), and filled in
//! by [`Operation::fill`].

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;
use serde_json::Value;

use super::schemas::Compiled;
use super::shape::Shape;
use super::{Example, RequestSchema, SpecError, deref, is_json, media_essence, pointer_push, walk};
use crate::router::Template;
use crate::scheme::Scheme;

/// The operation extension that says whether an operation's 2xx is audited as a create.
pub const AUDIT_EXTENSION: &str = "x-specgate-audit";

/// The operation extension that sets how strictly its requests are checked (see [`Enforce`]).
pub const ENFORCE_EXTENSION: &str = "x-specgate-enforce";

/// What happens to a request that validation would refuse: a body or parameter that breaks
/// the schema, a media type the operation does not take. Never relaxed whatever the mode:
/// client authentication, path abuse, limits, a body that cannot be read or decoded, JSON that
/// does not parse, a JSON key given twice, nesting too deep. Ordered strictest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Enforce {
    /// Refused (the default).
    Enforce,
    /// Forwarded anyway; the refusal it would have got is logged, counted and audited.
    Report,
    /// Not checked at all (still routed, authenticated, injected and audited).
    Off,
}

impl Enforce {
    /// Every mode by its name, as settings and `x-specgate-enforce` write it.
    pub const NAMED: [(&'static str, Enforce); 3] = [
        ("enforce", Enforce::Enforce),
        ("report", Enforce::Report),
        ("off", Enforce::Off),
    ];

    /// The mode named `text`, in any case.
    pub fn parse(text: &str) -> Option<Enforce> {
        let text = text.trim();
        Enforce::NAMED
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text))
            .map(|(_, mode)| *mode)
    }

    /// Its name, for logs and metric labels.
    pub fn name(self) -> &'static str {
        Enforce::NAMED
            .iter()
            .find(|(_, mode)| *mode == self)
            .map_or("enforce", |(name, _)| name)
    }
}

/// One operation of the spec.
#[derive(Debug)]
pub struct Operation {
    /// The `operationId`, or `METHOD /path` when the spec gives none.
    pub id: Arc<str>,
    /// The HTTP method.
    pub method: Method,
    /// The path template (`/connections/{id}`), without any `#fragment` or `?query` its key
    /// has.
    pub template: String,
    /// The template parsed, to read path parameters with.
    pub path: Template,
    /// What the key has after the template (`?Action=Create`, `#add_shared_link`), if anything.
    pub variant: Option<Variant>,
    /// Where the operation is in the document (`/paths/~1connections/post`).
    pub pointer: String,
    /// Its parameters: the path item's and its own (which win for the same name and place).
    pub parameters: Vec<Parameter>,
    /// The request body, if the operation declares one.
    pub body: Option<RequestBody>,
    /// How strictly its requests are checked, when its `x-specgate-enforce` says; else the
    /// `enforce` setting decides.
    pub enforce: Option<Enforce>,
    /// Whether a 2xx means a resource was created: those are audited. By default a POST with a
    /// request body; the operation's `x-specgate-audit: true|false` (set in an overlay) says
    /// otherwise, for a POST that only searches, or a PUT that creates.
    pub creates: bool,
    /// The spec's example 2xx response, which mock mode answers with.
    pub example: Option<Example>,
    /// How the stored credential can go upstream, from the operation's `security` (or the
    /// document's): its alternatives in order of preference; `None` when it takes none
    /// (`security: []`).
    pub credential: Option<Arc<[Scheme]>>,
    /// What it says it answers, for the drift check; `None` when responses were not read (the
    /// check is off) or it declares none.
    pub responses: Option<Responses>,
}

/// What an operation declares it answers: each status (a code, a class like `4XX`, or
/// `default`) with its media types and required headers.
#[derive(Debug, Default)]
pub struct Responses {
    /// In the document's order.
    pub declared: Vec<Response>,
}

impl Responses {
    /// The declaration an answer with `status` falls under: its own code, else its class,
    /// else `default`.
    pub fn for_status(&self, status: u16) -> Option<&Response> {
        let find = |key: StatusKey| self.declared.iter().find(|r| r.status == key);
        find(StatusKey::Code(status))
            .or_else(|| find(StatusKey::Class(status / 100)))
            .or_else(|| find(StatusKey::Default))
    }
}

/// A key of an operation's `responses`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusKey {
    /// `201`.
    Code(u16),
    /// `2XX`: the hundreds digit.
    Class(u16),
    /// `default`.
    Default,
}

impl StatusKey {
    fn parse(key: &str) -> Option<StatusKey> {
        if key == "default" {
            return Some(StatusKey::Default);
        }
        match key.as_bytes() {
            [digit @ b'1'..=b'5', b'X' | b'x', b'X' | b'x'] => {
                Some(StatusKey::Class(u16::from(digit - b'0')))
            }
            _ => key
                .parse()
                .ok()
                .filter(|code| (100..600).contains(code))
                .map(StatusKey::Code),
        }
    }
}

/// One declared response.
#[derive(Debug)]
pub struct Response {
    /// Its key.
    pub status: StatusKey,
    /// Its media types (a JSON one with its compiled schema); empty when it declares no
    /// content, which leaves nothing to compare a body with.
    pub media: Vec<Media>,
    /// The headers it declares `required` (never `Content-Type`, which `content` governs).
    pub required_headers: Vec<http::HeaderName>,
}

/// The part of a path key after its template: `?Action=CreateUser&Version=2010-05-08` or
/// `#X-Amz-Target=Service.Op`. Its `name=value` pairs say which requests it is meant for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    /// As written, with its leading `?` or `#`.
    pub text: String,
    /// Each `name` or `name=value` it lists.
    pub params: Vec<(String, Option<String>)>,
}

impl Variant {
    pub(super) fn parse(text: &str) -> Variant {
        let params = text[1..]
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (pair.to_owned(), None),
            })
            .collect();
        Variant {
            text: text.to_owned(),
            params,
        }
    }
}

/// An operation's request body.
#[derive(Debug)]
pub struct RequestBody {
    /// Whether the body must be present.
    pub required: bool,
    /// Each media type the document declares, in its order.
    pub media: Vec<Media>,
    /// When the schema of the (first) JSON media type has exactly one top-level property
    /// (`connection`), its name: the resource's fields live under it in the request, and its
    /// `id` under it in the response.
    pub resource_key: Option<String>,
}

impl RequestBody {
    /// Whether any of its media types is checked against a schema.
    pub fn validated(&self) -> bool {
        self.media.iter().any(|m| m.schema.is_some())
    }

    /// The schema of its (first) JSON media type, if it has one.
    pub fn json_schema(&self) -> Option<&Arc<RequestSchema>> {
        self.media
            .iter()
            .find(|m| is_json(&m.range))
            .and_then(|m| m.schema.as_ref())
    }
}

/// One media type of a request body.
#[derive(Debug)]
pub struct Media {
    /// The media range as declared, lower-cased, without parameters: `application/json`,
    /// `application/*`, `*/*`.
    pub range: String,
    /// Where its schema is in the document, if it has one.
    pub schema_at: Option<String>,
    /// The compiled schema; `None` when the document gives none (anything is accepted).
    pub schema: Option<Arc<RequestSchema>>,
    /// How form fields and multipart parts are read: the schema's shape and the media type's
    /// `encoding`. Present for every media range a form can be sent to.
    pub fields: Option<Fields>,
}

impl Media {
    /// Whether a request with the media type `essence` may be sent as this one.
    pub fn admits(&self, essence: &str) -> bool {
        match self.range.split_once('/') {
            Some(("*", "*")) => true,
            Some((kind, "*")) => essence.split_once('/').is_some_and(|(k, _)| k == kind),
            _ => self.range == essence,
        }
    }
}

/// How the fields of a form or multipart body are read.
#[derive(Debug)]
pub struct Fields {
    /// What the schema says each field holds.
    pub shape: Arc<Shape>,
    /// Per field, the media type's `encoding`.
    pub encoding: HashMap<String, Encoding>,
}

/// One field's `encoding`.
#[derive(Clone, Debug, Default)]
pub struct Encoding {
    /// The content types a multipart part may have (`image/png, image/*`), if declared.
    pub content_types: Vec<String>,
    /// How a form field is serialised, if declared.
    pub style: Option<Style>,
    /// Whether arrays and objects are spread over several fields, if declared.
    pub explode: Option<bool>,
}

/// Where a parameter travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    /// A templated segment of the path.
    Path,
    /// The query string.
    Query,
    /// A header.
    Header,
    /// A cookie.
    Cookie,
}

impl Location {
    fn parse(text: &str) -> Option<Location> {
        Some(match text {
            "path" => Location::Path,
            "query" => Location::Query,
            "header" => Location::Header,
            "cookie" => Location::Cookie,
            _ => return None,
        })
    }

    /// As the document writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Location::Path => "path",
            Location::Query => "query",
            Location::Header => "header",
            Location::Cookie => "cookie",
        }
    }
}

/// How a parameter's value is written (OpenAPI's `style`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// `a=1&a=2`, `a=1,2` (query and cookie by default).
    Form,
    /// `a=1%202`.
    SpaceDelimited,
    /// `a=1|2`.
    PipeDelimited,
    /// `a[x]=1&a[y]=2`.
    DeepObject,
    /// `1,2` (path and header by default).
    Simple,
    /// `.1.2`.
    Label,
    /// `;a=1,2`.
    Matrix,
}

impl Style {
    fn parse(text: &str) -> Option<Style> {
        Some(match text {
            "form" => Style::Form,
            "spaceDelimited" => Style::SpaceDelimited,
            "pipeDelimited" => Style::PipeDelimited,
            "deepObject" => Style::DeepObject,
            "simple" => Style::Simple,
            "label" => Style::Label,
            "matrix" => Style::Matrix,
            _ => return None,
        })
    }
}

/// One parameter of an operation.
#[derive(Debug)]
pub struct Parameter {
    /// Its name (for a header, as written; headers compare without case).
    pub name: String,
    /// Where it travels.
    pub location: Location,
    /// Whether a request must carry it (path parameters always must).
    pub required: bool,
    /// How its value is written.
    pub style: Style,
    /// Whether arrays and objects are spread over several fields.
    pub explode: bool,
    /// Its value is JSON text (a `content` map with a JSON media type instead of `schema`).
    pub json: bool,
    /// Where its schema is in the document, if it has one.
    pub schema_at: Option<String>,
    /// The compiled schema.
    pub schema: Option<Arc<RequestSchema>>,
    /// What the schema says its value holds, to read its text.
    pub shape: Option<Arc<Shape>>,
}

/// Headers whose parameter definitions OpenAPI says to ignore: HTTP itself governs them.
const IGNORED_HEADERS: [&str; 3] = ["accept", "content-type", "authorization"];

/// The schemas a document's operations need compiled: every schema root, and those of them
/// whose shape is also needed.
#[derive(Debug, Default)]
pub(super) struct Roots {
    pub schemas: Vec<String>,
    pub shaped: Vec<String>,
    /// Whether responses are read at all (for the drift check).
    pub read_responses: bool,
    /// The response schemas to compile, each of a JSON media type.
    pub responses: Vec<String>,
    /// What the drift check cannot compare, by pointer: warnings for the caller to report.
    pub unchecked: Vec<(String, String)>,
}

/// What an operation is built from.
pub(super) struct Source<'a> {
    pub doc: &'a Value,
    pub file: &'a str,
    pub template: &'a str,
    pub variant: Option<Variant>,
    pub method: Method,
    /// The path item's parameters, and where they are.
    pub shared: Option<(&'a str, &'a Value)>,
}

impl Operation {
    /// Reads the operation at `op_at`, adding the schemas it needs to `roots`.
    pub(super) fn read(
        source: Source<'_>,
        op_at: &str,
        op: &Value,
        roots: &mut Roots,
    ) -> Result<Operation, SpecError> {
        let Source {
            doc,
            file,
            template,
            variant,
            method,
            shared,
        } = source;
        let id = match op.get("operationId") {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            _ => match &variant {
                Some(variant) => format!("{method} {template}{}", variant.text),
                None => format!("{method} {template}"),
            },
        };
        let path = Template::parse(template);
        let mut parameters = Vec::new();
        let lists = shared
            .into_iter()
            .chain(op.get("parameters").map(|p| (op_at, p)));
        for (at, list) in lists {
            let list_at = pointer_push(at, "parameters");
            for (i, parameter) in list.as_array().into_iter().flatten().enumerate() {
                let (at, parameter) = deref(doc, &format!("{list_at}/{i}"), parameter, file)?;
                let Some(parameter) = read_parameter(doc, &at, parameter, roots) else {
                    continue;
                };
                // The operation's own definition replaces the path item's.
                parameters.retain(|p: &Parameter| {
                    p.location != parameter.location || !same_name(p, &parameter.name)
                });
                parameters.push(parameter);
            }
        }
        let body = match op.get("requestBody") {
            None => None,
            Some(body) => {
                let (body_at, body) = deref(doc, &pointer_push(op_at, "requestBody"), body, file)?;
                Some(read_body(doc, file, &body_at, body, roots)?)
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
        let enforce = match op.get(ENFORCE_EXTENSION) {
            None => None,
            Some(value) => Some(value.as_str().and_then(Enforce::parse).ok_or_else(|| {
                SpecError::new(
                    file,
                    pointer_push(op_at, ENFORCE_EXTENSION),
                    format!("{ENFORCE_EXTENSION} must be \"enforce\", \"report\" or \"off\""),
                )
            })?),
        };
        let responses = match op.get("responses") {
            Some(Value::Object(map)) if roots.read_responses => {
                Some(read_responses(doc, file, op_at, map, roots)?)
            }
            _ => None,
        }
        // Declaring nothing (or only extensions) is not declaring that nothing is answered.
        .filter(|responses| !responses.declared.is_empty());
        Ok(Operation {
            id: id.into(),
            responses,
            creates,
            enforce,
            method,
            template: template.to_owned(),
            path,
            variant,
            pointer: op_at.to_owned(),
            parameters,
            body,
            example: super::response_example(doc, op),
            // Set by the caller, which holds the document's schemes.
            credential: None,
        })
    }

    /// Fills in its response schemas.
    pub(super) fn fill_responses(&mut self, compiled: &Compiled) {
        let media = self
            .responses
            .iter_mut()
            .flat_map(|r| r.declared.iter_mut())
            .flat_map(|r| r.media.iter_mut());
        for media in media {
            if let Some(at) = &media.schema_at {
                media.schema = compiled.schemas.get(at).cloned();
            }
        }
    }

    /// Fills in the compiled schemas and shapes it needs.
    pub(super) fn fill(&mut self, compiled: &Compiled) {
        for parameter in &mut self.parameters {
            if let Some(at) = &parameter.schema_at {
                parameter.schema = compiled.schemas.get(at).cloned();
                parameter.shape = compiled.shapes.get(at).cloned();
            }
        }
        for media in self.body.iter_mut().flat_map(|b| b.media.iter_mut()) {
            if let Some(at) = &media.schema_at {
                media.schema = compiled.schemas.get(at).cloned();
                if let (Some(fields), Some(shape)) = (&mut media.fields, compiled.shapes.get(at)) {
                    fields.shape = shape.clone();
                }
            }
        }
    }
}

fn same_name(parameter: &Parameter, name: &str) -> bool {
    match parameter.location {
        Location::Header => parameter.name.eq_ignore_ascii_case(name),
        _ => parameter.name == name,
    }
}

/// A parameter; `None` for one OpenAPI says to ignore, or whose location is not OpenAPI 3's
/// (a Swagger 2.0 `body` or `formData` parameter, which is the request body).
fn read_parameter(
    doc: &Value,
    at: &str,
    parameter: &Value,
    roots: &mut Roots,
) -> Option<Parameter> {
    let name = parameter.get("name")?.as_str()?.to_owned();
    let location = Location::parse(parameter.get("in")?.as_str()?)?;
    if location == Location::Header && IGNORED_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h))
    {
        return None;
    }
    let style = parameter
        .get("style")
        .and_then(Value::as_str)
        .and_then(Style::parse)
        .unwrap_or(match location {
            Location::Query | Location::Cookie => Style::Form,
            Location::Path | Location::Header => Style::Simple,
        });
    let explode = parameter
        .get("explode")
        .and_then(Value::as_bool)
        .unwrap_or(style == Style::Form);
    // `content` instead of `schema`: one media type, whose schema applies to the value.
    let (schema, schema_at, json) = match (parameter.get("schema"), parameter.get("content")) {
        (Some(schema), _) => (Some(schema), pointer_push(at, "schema"), false),
        (None, Some(Value::Object(content))) => {
            let (media_type, media) = content.iter().next()?;
            let at = pointer_push(
                &pointer_push(&pointer_push(at, "content"), media_type),
                "schema",
            );
            (media.get("schema"), at, is_json(&media_essence(media_type)))
        }
        _ => (None, String::new(), false),
    };
    let schema_at = schema.map(|schema| {
        let root = shared_root(doc, schema).unwrap_or(schema_at);
        roots.schemas.push(root.clone());
        roots.shaped.push(root.clone());
        root
    });
    Some(Parameter {
        name,
        location,
        required: location == Location::Path
            || parameter.get("required") == Some(&Value::Bool(true)),
        style,
        explode,
        json,
        schema_at,
        schema: None,
        shape: None,
    })
}

/// A request body: each media type, with where its schema is.
fn read_body(
    doc: &Value,
    file: &str,
    body_at: &str,
    body: &Value,
    roots: &mut Roots,
) -> Result<RequestBody, SpecError> {
    let content_at = pointer_push(body_at, "content");
    let content = body
        .get("content")
        .and_then(Value::as_object)
        .ok_or_else(|| SpecError::new(file, &content_at, "a request body needs a content map"))?;
    let mut media = Vec::new();
    let mut resource = None;
    for (media_type, declared) in content {
        let range = media_essence(media_type);
        let schema = declared.get("schema");
        if resource.is_none() && is_json(&range) {
            resource = Some(schema.and_then(|s| resource_key(doc, s)));
        }
        let schema_at = schema.map(|schema| {
            let at = pointer_push(&pointer_push(&content_at, media_type), "schema");
            shared_root(doc, schema).unwrap_or(at)
        });
        // A form may be sent to any range but a JSON one; its fields need the schema's shape.
        let fields = (!is_json(&range)).then(|| Fields {
            shape: super::shape::any(),
            encoding: encodings(declared),
        });
        if let Some(at) = &schema_at {
            roots.schemas.push(at.clone());
            if fields.is_some() {
                roots.shaped.push(at.clone());
            }
        }
        media.push(Media {
            range,
            schema_at,
            schema: None,
            fields,
        });
    }
    Ok(RequestBody {
        required: body
            .get("required")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        media,
        resource_key: resource.flatten(),
    })
}

/// An operation's `responses` map. A `$ref` to nowhere refuses the document, as anywhere
/// else; a key that is not a status is skipped (`x-` extensions).
fn read_responses(
    doc: &Value,
    file: &str,
    op_at: &str,
    map: &serde_json::Map<String, Value>,
    roots: &mut Roots,
) -> Result<Responses, SpecError> {
    let responses_at = pointer_push(op_at, "responses");
    let mut declared = Vec::new();
    for (key, response) in map {
        let Some(status) = StatusKey::parse(key) else {
            continue;
        };
        let (at, response) = deref(doc, &pointer_push(&responses_at, key), response, file)?;
        let content_at = pointer_push(&at, "content");
        let mut media = Vec::new();
        for (media_type, declared) in response
            .get("content")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let range = media_essence(media_type);
            let schema_at = match declared.get("schema") {
                Some(schema) if is_json(&range) => {
                    let at = pointer_push(&pointer_push(&content_at, media_type), "schema");
                    let at = shared_root(doc, schema).unwrap_or(at);
                    roots.responses.push(at.clone());
                    Some(at)
                }
                _ => None,
            };
            media.push(Media {
                range,
                schema_at,
                schema: None,
                fields: None,
            });
        }
        let headers_at = pointer_push(&at, "headers");
        let mut required_headers = Vec::new();
        for (name, header) in response
            .get("headers")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let header_at = pointer_push(&headers_at, name);
            let (_, header) = deref(doc, &header_at, header, file)?;
            if header.get("required") != Some(&Value::Bool(true))
                || name.eq_ignore_ascii_case("content-type")
            {
                continue;
            }
            match http::HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => required_headers.push(name),
                Err(_) => roots.unchecked.push((
                    header_at,
                    format!("{name:?} is not a valid header name; the drift check skips it"),
                )),
            }
        }
        declared.push(Response {
            status,
            media,
            required_headers,
        });
    }
    Ok(Responses { declared })
}

/// A media type's `encoding` map.
fn encodings(media: &Value) -> HashMap<String, Encoding> {
    media
        .get("encoding")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(field, encoding)| {
            let content_types = encoding
                .get("contentType")
                .and_then(Value::as_str)
                .map(|types| types.split(',').map(media_essence).collect())
                .unwrap_or_default();
            let encoding = Encoding {
                content_types,
                style: encoding
                    .get("style")
                    .and_then(Value::as_str)
                    .and_then(Style::parse),
                explode: encoding.get("explode").and_then(Value::as_bool),
            };
            (field.clone(), encoding)
        })
        .collect()
}

/// The target of a schema that is only a `$ref` (when it resolves), so operations that name
/// the same component share one compiled validator.
fn shared_root(doc: &Value, schema: &Value) -> Option<String> {
    let map = schema.as_object()?;
    match (map.len(), map.get("$ref")) {
        (1, Some(Value::String(target))) => {
            walk::local_target(target).filter(|at| doc.pointer(at).is_some())
        }
        _ => None,
    }
}

/// The single top-level property of a body schema, following `$ref`s: `connection` for the
/// seed. That is where ActiveCampaign (and most JSON APIs of its style) put the resource.
fn resource_key<'a>(doc: &'a Value, mut schema: &'a Value) -> Option<String> {
    for _ in 0..8 {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(target) => schema = doc.pointer(&walk::local_target(target)?)?,
            None => break,
        }
    }
    let properties = schema.get("properties")?.as_object()?;
    match properties.keys().collect::<Vec<_>>().as_slice() {
        [only] => Some((*only).clone()),
        _ => None,
    }
}
