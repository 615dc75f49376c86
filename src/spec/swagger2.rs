//! Swagger 2.0, converted in-process into the OpenAPI 3.0 shape the rest of the loader reads.
//!
//! Only the OpenAPI 3 objects are added (`servers`, `components`, each operation's
//! `requestBody`, each response's `content`); the Swagger originals stay where they are, and
//! the new objects point back into them with `$ref`s. So a schema is still found, checked and
//! reported at its pointer in the vendor's file (`/definitions/Pet`,
//! `/paths/~1pets/post/parameters/0/schema`), never at one the conversion made up.
//!
//! What maps: `host` + `basePath` + `schemes` to `servers`; `body` parameters to a JSON (or
//! `consumes`) request body; `formData` parameters to a form or multipart body whose schema is
//! built from them; other parameters to 3.0 parameters (`collectionFormat` to `style` and
//! `explode`); response `schema` and `examples` to `content` per `produces`;
//! `securityDefinitions` to `securitySchemes`. `x-nullable` is read by the dialect as
//! `nullable`.

use serde_json::{Map, Value, json};

use super::walk::{local_target, push};

/// A problem in the Swagger document: its pointer and what is wrong.
pub(super) type Problem = (String, String);

/// Converts a Swagger 2.0 document (already known to say `swagger: "2.0"`), with what it
/// works around by checking less (warnings).
pub(super) fn convert(mut doc: Value) -> Result<(Value, Vec<Problem>), Problem> {
    let mut warnings = Vec::new();
    let root = doc.as_object().cloned().unwrap_or_default();
    let global_consumes = media_list(root.get("consumes"));
    let global_produces = media_list(root.get("produces"));
    let mut components = Map::new();
    if let Some(Value::Object(schemes)) = root.get("securityDefinitions") {
        let converted: Map<String, Value> = schemes
            .iter()
            .map(|(name, scheme)| (name.clone(), security_scheme(scheme)))
            .collect();
        components.insert("securitySchemes".into(), Value::Object(converted));
    }
    if let Some(Value::Object(parameters)) = root.get("parameters") {
        let converted: Map<String, Value> = parameters
            .iter()
            .filter(|(_, p)| !matches!(location(p), Some("body" | "formData")))
            .map(|(name, p)| (name.clone(), parameter(p)))
            .collect();
        components.insert("parameters".into(), Value::Object(converted));
    }
    if let Some(Value::Object(responses)) = root.get("responses") {
        let converted: Map<String, Value> = responses
            .iter()
            .map(|(name, r)| {
                (
                    name.clone(),
                    response(r, &push("/responses", name), &global_produces),
                )
            })
            .collect();
        components.insert("responses".into(), Value::Object(converted));
    }
    let mut paths = Map::new();
    for (key, item) in root
        .get("paths")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let Value::Object(item) = item else {
            paths.insert(key.clone(), item.clone());
            continue;
        };
        let item_at = push("/paths", key);
        let shared: Vec<Value> = item
            .get("parameters")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut converted = Map::new();
        for (field, value) in item {
            let converted_value = match (field.as_str(), value) {
                (
                    "get" | "put" | "post" | "delete" | "options" | "head" | "patch",
                    Value::Object(op),
                ) => {
                    let op_at = push(&item_at, field);
                    Value::Object(operation(
                        &doc,
                        op,
                        &op_at,
                        &shared,
                        &global_consumes,
                        &global_produces,
                        &mut warnings,
                    )?)
                }
                ("parameters", Value::Array(list)) => {
                    Value::Array(list.iter().map(|p| parameter_in_place(&doc, p)).collect())
                }
                _ => value.clone(),
            };
            converted.insert(field.clone(), converted_value);
        }
        paths.insert(key.clone(), Value::Object(converted));
    }
    let servers = servers(&root);
    let map = doc
        .as_object_mut()
        .expect("a Swagger document is an object");
    map.insert("paths".into(), Value::Object(paths));
    map.insert("components".into(), Value::Object(components));
    map.insert("servers".into(), servers);
    Ok((doc, warnings))
}

fn media_list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

fn location(parameter: &Value) -> Option<&str> {
    parameter.get("in").and_then(Value::as_str)
}

/// `in` of a parameter, through a `$ref` to `#/parameters/...`.
fn resolved_location<'a>(doc: &'a Value, parameter: &'a Value) -> Option<&'a str> {
    match parameter.get("$ref").and_then(Value::as_str) {
        Some(target) => location(doc.pointer(&local_target(target)?)?),
        None => location(parameter),
    }
}

fn servers(root: &Map<String, Value>) -> Value {
    let base = root.get("basePath").and_then(Value::as_str).unwrap_or("");
    let url = match root.get("host").and_then(Value::as_str) {
        Some(host) => {
            let scheme = root
                .get("schemes")
                .and_then(Value::as_array)
                .and_then(|s| {
                    s.iter()
                        .filter_map(Value::as_str)
                        .find(|s| *s == "https")
                        .or_else(|| s.first().and_then(Value::as_str))
                })
                .unwrap_or("https");
            format!("{scheme}://{host}{base}")
        }
        None => base.to_owned(),
    };
    json!([{ "url": url }])
}

fn security_scheme(scheme: &Value) -> Value {
    let field = |name: &str| scheme.get(name).cloned().unwrap_or(Value::Null);
    match scheme.get("type").and_then(Value::as_str) {
        Some("basic") => json!({"type": "http", "scheme": "basic"}),
        Some("oauth2") => {
            let flow = match scheme.get("flow").and_then(Value::as_str) {
                Some("application") => "clientCredentials",
                Some("accessCode") => "authorizationCode",
                Some("password") => "password",
                _ => "implicit",
            };
            let mut details = Map::new();
            for (from, to) in [
                ("authorizationUrl", "authorizationUrl"),
                ("tokenUrl", "tokenUrl"),
            ] {
                if let Some(url) = scheme.get(from) {
                    details.insert(to.into(), url.clone());
                }
            }
            details.insert(
                "scopes".into(),
                scheme.get("scopes").cloned().unwrap_or_else(|| json!({})),
            );
            json!({"type": "oauth2", "flows": {flow: details}})
        }
        _ => json!({"type": field("type"), "in": field("in"), "name": field("name")}),
    }
}

/// The schema keywords a non-body Swagger parameter (or form field) carries.
const SCHEMA_FIELDS: [&str; 16] = [
    "type",
    "format",
    "items",
    "default",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "enum",
    "multipleOf",
];

/// A parameter's or form field's own fields as a schema; `file` is a binary string.
fn field_schema(parameter: &Value) -> Value {
    let mut schema = Map::new();
    for field in SCHEMA_FIELDS {
        if let Some(value) = parameter.get(field) {
            schema.insert(field.into(), value.clone());
        }
    }
    if schema.get("type") == Some(&json!("file")) {
        schema.insert("type".into(), json!("string"));
        schema.insert("format".into(), json!("binary"));
    }
    if let Some(Value::Object(items)) = schema.get_mut("items") {
        // Nested `items` use the same fields; collectionFormat is not a schema keyword.
        items.remove("collectionFormat");
    }
    Value::Object(schema)
}

/// A parameter of a list, converted where it stands: a `body` or `formData` one stays as it is
/// (its schema is referenced there by the request body, and OpenAPI 3 has no such location),
/// any other becomes a 3.0 parameter. Keeping every item keeps every index, and so every
/// pointer into the list.
fn parameter_in_place(doc: &Value, p: &Value) -> Value {
    match resolved_location(doc, p) {
        Some("body" | "formData") => p.clone(),
        _ => parameter(p),
    }
}

/// A non-body parameter in 3.0 form; a `$ref` to `#/parameters/X` becomes one to
/// `#/components/parameters/X`.
fn parameter(parameter: &Value) -> Value {
    if let Some(target) = parameter.get("$ref").and_then(Value::as_str) {
        return json!({ "$ref": target.replacen("#/parameters/", "#/components/parameters/", 1) });
    }
    let mut out = Map::new();
    for field in ["name", "in", "description", "required", "allowEmptyValue"] {
        if let Some(value) = parameter.get(field) {
            out.insert(field.into(), value.clone());
        }
    }
    let (style, explode) = match parameter.get("collectionFormat").and_then(Value::as_str) {
        Some("ssv") => ("spaceDelimited", false),
        Some("pipes") => ("pipeDelimited", false),
        Some("multi") => ("form", true),
        Some("tsv") | Some("csv") | None => match location(parameter) {
            Some("query" | "cookie") => ("form", false),
            _ => ("simple", false),
        },
        Some(_) => ("simple", false),
    };
    if parameter.get("type") == Some(&json!("array")) {
        out.insert("style".into(), json!(style));
        out.insert("explode".into(), json!(explode));
    }
    out.insert("schema".into(), field_schema(parameter));
    for (key, value) in parameter.as_object().into_iter().flatten() {
        if key.starts_with("x-") {
            out.insert(key.clone(), value.clone());
        }
    }
    Value::Object(out)
}

/// A response in 3.0 form: its schema (by `$ref` to where it is) and examples under each
/// produced media type.
fn response(response: &Value, at: &str, produces: &[String]) -> Value {
    if let Some(target) = response.get("$ref").and_then(Value::as_str) {
        return json!({ "$ref": target.replacen("#/responses/", "#/components/responses/", 1) });
    }
    let mut out = Map::new();
    out.insert(
        "description".into(),
        response
            .get("description")
            .cloned()
            .unwrap_or_else(|| json!("")),
    );
    if let Some(headers) = response.get("headers").and_then(Value::as_object) {
        let converted: Map<String, Value> = headers
            .iter()
            .map(|(name, header)| (name.clone(), json!({"schema": field_schema(header)})))
            .collect();
        out.insert("headers".into(), Value::Object(converted));
    }
    let examples = response.get("examples").and_then(Value::as_object);
    let schema = response
        .get("schema")
        .map(|_| json!({ "$ref": format!("#{}", push(at, "schema")) }));
    // Kept where it was, for the content's `$ref` to find (OpenAPI 3 readers ignore it).
    if let Some(original) = response.get("schema") {
        out.insert("schema".into(), original.clone());
    }
    if schema.is_some() || examples.is_some() {
        let mut types: Vec<String> = if produces.is_empty() {
            vec!["application/json".to_owned()]
        } else {
            produces.to_vec()
        };
        for example_type in examples.into_iter().flat_map(|e| e.keys()) {
            if !types.contains(example_type) {
                types.push(example_type.clone());
            }
        }
        let content: Map<String, Value> = types
            .into_iter()
            .map(|media_type| {
                let mut media = Map::new();
                if let Some(schema) = &schema {
                    media.insert("schema".into(), schema.clone());
                }
                if let Some(example) = examples.and_then(|e| e.get(&media_type)) {
                    media.insert("example".into(), example.clone());
                }
                (media_type, Value::Object(media))
            })
            .collect();
        out.insert("content".into(), Value::Object(content));
    }
    Value::Object(out)
}

fn operation(
    doc: &Value,
    op: &Map<String, Value>,
    op_at: &str,
    shared: &[Value],
    global_consumes: &[String],
    global_produces: &[String],
    warnings: &mut Vec<Problem>,
) -> Result<Map<String, Value>, Problem> {
    let consumes = match op.get("consumes") {
        Some(list) => media_list(Some(list)),
        None => global_consumes.to_vec(),
    };
    let produces = match op.get("produces") {
        Some(list) => media_list(Some(list)),
        None => global_produces.to_vec(),
    };
    let item_at = op_at.rsplit_once('/').map_or("", |(item, _)| item);
    // Path-level parameters apply unless the operation redefines the same name and location.
    let own: Vec<(String, &Value)> = op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, p)| (format!("{op_at}/parameters/{i}"), p))
        .collect();
    let key = |p: &Value| {
        let p = resolve(doc, p);
        (
            p.get("name").cloned().unwrap_or(Value::Null),
            p.get("in").cloned().unwrap_or(Value::Null),
        )
    };
    let inherited = shared
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("{item_at}/parameters/{i}"), p))
        .filter(|(_, p)| own.iter().all(|(_, o)| key(o) != key(p)));
    let all: Vec<(String, &Value)> = inherited.chain(own.iter().cloned()).collect();

    let mut body = None;
    let mut form_fields = Vec::new();
    for (at, p) in &all {
        // Where the parameter really is: through a `$ref` to `#/parameters/...`.
        let (at, resolved) = match p.get("$ref").and_then(Value::as_str) {
            Some(target) => {
                let target_at = local_target(target).ok_or_else(|| {
                    (
                        push(at, "$ref"),
                        format!("$ref {target:?} is not local (#/...)"),
                    )
                })?;
                let resolved = doc.pointer(&target_at).ok_or_else(|| {
                    (
                        push(at, "$ref"),
                        format!("$ref {target:?} points at nothing"),
                    )
                })?;
                (target_at, resolved)
            }
            None => (at.clone(), *p),
        };
        match location(resolved) {
            Some("body") => body = Some((at, resolved)),
            Some("formData") => form_fields.push(resolved),
            _ => {}
        }
    }

    let mut out = Map::new();
    for (field, value) in op {
        match field.as_str() {
            "parameters" => {
                let converted: Vec<Value> = own
                    .iter()
                    .map(|(_, p)| parameter_in_place(doc, p))
                    .collect();
                out.insert("parameters".into(), Value::Array(converted));
            }
            "responses" => {
                let converted: Map<String, Value> = value
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(code, r)| {
                        let at = push(&push(op_at, "responses"), code);
                        (code.clone(), response(r, &at, &produces))
                    })
                    .collect();
                out.insert("responses".into(), Value::Object(converted));
            }
            "consumes" | "produces" | "schemes" => {}
            _ => {
                out.insert(field.clone(), value.clone());
            }
        }
    }
    if let Some((at, body)) = body {
        let types = if consumes.is_empty() {
            vec!["application/json".to_owned()]
        } else {
            consumes.clone()
        };
        let media = if body.get("schema").is_some() {
            json!({ "schema": { "$ref": format!("#{}", push(&at, "schema")) } })
        } else {
            warnings.push((
                at.clone(),
                "a body parameter needs a schema; without one its body is not checked".to_owned(),
            ));
            json!({})
        };
        let content: Map<String, Value> = types.into_iter().map(|t| (t, media.clone())).collect();
        out.insert(
            "requestBody".into(),
            json!({
                "content": content,
                "required": body.get("required").cloned().unwrap_or(json!(false)),
            }),
        );
    } else if !form_fields.is_empty() {
        let multipart = consumes
            .iter()
            .any(|c| c.starts_with("multipart/form-data"))
            || form_fields
                .iter()
                .any(|f| f.get("type") == Some(&json!("file")));
        let media_type = if multipart {
            "multipart/form-data"
        } else {
            "application/x-www-form-urlencoded"
        };
        let mut properties = Map::new();
        let mut required = Vec::new();
        for field in &form_fields {
            let Some(name) = field.get("name").and_then(Value::as_str) else {
                continue;
            };
            properties.insert(name.to_owned(), field_schema(field));
            if field.get("required") == Some(&Value::Bool(true)) {
                required.push(json!(name));
            }
        }
        let mut schema = json!({"type": "object", "properties": properties});
        if !required.is_empty() {
            schema["required"] = Value::Array(required.clone());
        }
        out.insert(
            "requestBody".into(),
            json!({
                "content": { media_type: { "schema": schema } },
                "required": !required.is_empty(),
            }),
        );
    }
    Ok(out)
}

/// A parameter through its `$ref`, or itself.
fn resolve<'a>(doc: &'a Value, parameter: &'a Value) -> &'a Value {
    parameter
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(local_target)
        .and_then(|at| doc.pointer(&at))
        .unwrap_or(parameter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn petstore() -> Value {
        json!({
            "swagger": "2.0",
            "info": {"title": "Petstore", "version": "1"},
            "host": "petstore.example.com",
            "basePath": "/v2",
            "schemes": ["http", "https"],
            "consumes": ["application/json"],
            "securityDefinitions": {
                "key": {"type": "apiKey", "in": "header", "name": "X-Key"},
                "login": {"type": "basic"},
                "oauth": {"type": "oauth2", "flow": "application", "tokenUrl": "https://t.example/token", "scopes": {"a": "b"}}
            },
            "parameters": {
                "PetBody": {"in": "body", "name": "pet", "required": true, "schema": {"$ref": "#/definitions/Pet"}},
                "Limit": {"in": "query", "name": "limit", "type": "integer", "maximum": 100}
            },
            "paths": {
                "/pets": {
                    "parameters": [{"$ref": "#/parameters/Limit"}],
                    "post": {
                        "parameters": [{"$ref": "#/parameters/PetBody"}],
                        "responses": {"201": {"description": "made", "schema": {"$ref": "#/definitions/Pet"},
                                              "examples": {"application/json": {"id": 1}}}}
                    },
                    "get": {"parameters": [{"in": "query", "name": "tags", "type": "array", "items": {"type": "string"}, "collectionFormat": "multi"}],
                            "responses": {"200": {"description": "ok"}}}
                },
                "/pets/{id}/photo": {
                    "post": {
                        "consumes": ["multipart/form-data"],
                        "parameters": [
                            {"in": "path", "name": "id", "required": true, "type": "integer"},
                            {"in": "formData", "name": "file", "type": "file", "required": true},
                            {"in": "formData", "name": "note", "type": "string", "maxLength": 10}
                        ],
                        "responses": {"200": {"description": "ok"}}
                    }
                }
            },
            "definitions": {"Pet": {"type": "object", "required": ["name"], "x-nullable": true}}
        })
    }

    #[test]
    fn servers_and_security_schemes() {
        let (doc, _) = convert(petstore()).unwrap();
        assert_eq!(
            doc["servers"],
            json!([{"url": "https://petstore.example.com/v2"}])
        );
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(
            schemes["key"],
            json!({"type": "apiKey", "in": "header", "name": "X-Key"})
        );
        assert_eq!(schemes["login"], json!({"type": "http", "scheme": "basic"}));
        assert_eq!(
            schemes["oauth"]["flows"]["clientCredentials"]["tokenUrl"],
            "https://t.example/token"
        );
    }

    #[test]
    fn a_body_parameter_becomes_a_request_body_pointing_at_its_schema() {
        let (doc, _) = convert(petstore()).unwrap();
        let post = &doc["paths"]["/pets"]["post"];
        assert_eq!(
            post["requestBody"],
            json!({"content": {"application/json": {"schema": {"$ref": "#/parameters/PetBody/schema"}}}, "required": true})
        );
        assert_eq!(
            post["parameters"],
            json!([{"$ref": "#/parameters/PetBody"}])
        );
        let created = &post["responses"]["201"]["content"]["application/json"];
        assert_eq!(created["example"], json!({"id": 1}));
        assert_eq!(
            created["schema"]["$ref"],
            "#/paths/~1pets/post/responses/201/schema"
        );
        assert!(
            doc.pointer("/paths/~1pets/post/responses/201/schema")
                .is_some()
        );
        // The Swagger originals are still there for those references.
        assert!(doc.pointer("/definitions/Pet").is_some());
        assert!(doc.pointer("/parameters/PetBody/schema").is_some());
    }

    #[test]
    fn form_fields_become_a_multipart_schema_and_parameters_take_3_0_form() {
        let (doc, _) = convert(petstore()).unwrap();
        let photo = &doc["paths"]["/pets/{id}/photo"]["post"];
        let schema = &photo["requestBody"]["content"]["multipart/form-data"]["schema"];
        assert_eq!(
            schema["properties"]["file"],
            json!({"type": "string", "format": "binary"})
        );
        assert_eq!(
            schema["properties"]["note"],
            json!({"type": "string", "maxLength": 10})
        );
        assert_eq!(schema["required"], json!(["file"]));
        assert_eq!(
            photo["parameters"][0],
            json!({"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}})
        );
        assert_eq!(
            photo["parameters"][1]["in"], "formData",
            "left where it was"
        );
        let tags = &doc["paths"]["/pets"]["get"]["parameters"][0];
        assert_eq!(
            (&tags["style"], &tags["explode"]),
            (&json!("form"), &json!(true))
        );
        assert_eq!(
            doc["paths"]["/pets"]["parameters"],
            json!([{"$ref": "#/components/parameters/Limit"}])
        );
        assert_eq!(
            doc["components"]["parameters"]["Limit"]["schema"],
            json!({"type": "integer", "maximum": 100})
        );
    }

    #[test]
    fn a_body_parameter_without_a_schema_takes_any_body_with_a_warning() {
        let mut doc = petstore();
        doc["paths"]["/pets"]["post"]["parameters"] = json!([{"in": "body", "name": "pet"}]);
        let (doc, warnings) = convert(doc).unwrap();
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].0, "/paths/~1pets/post/parameters/0");
        let content = &doc["paths"]["/pets"]["post"]["requestBody"]["content"];
        assert_eq!(content["application/json"], json!({}));
    }

    #[test]
    fn a_dangling_parameter_ref_names_its_pointer() {
        let mut doc = petstore();
        doc["paths"]["/pets"]["post"]["parameters"] = json!([{"$ref": "#/parameters/Nope"}]);
        let (at, message) = convert(doc).unwrap_err();
        assert_eq!(at, "/paths/~1pets/post/parameters/0/$ref");
        assert!(message.contains("points at nothing"));
    }
}
