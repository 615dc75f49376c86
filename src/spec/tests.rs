use serde_json::json;

use super::*;
use crate::error::Source;
use crate::scheme::Scheme;
use http::HeaderName;

fn embedded() -> Spec {
    Spec::load(&SpecSource::default()).expect("the embedded spec compiles")
}

fn create_connection(spec: &Spec) -> &Operation {
    spec.operations
        .iter()
        .find(|op| &*op.id == "create-connection")
        .unwrap()
}

/// The schema of the operation's (first) JSON media type.
fn schema(op: &Operation) -> &RequestSchema {
    op.body
        .as_ref()
        .unwrap()
        .media
        .iter()
        .find(|m| is_json(&m.range))
        .and_then(|m| m.schema.as_deref())
        .unwrap()
}

#[test]
fn the_embedded_spec_yields_the_seed_operation() {
    let spec = embedded();
    assert_eq!(spec.base_path, "/api/3");
    assert_eq!(spec.overlays.len(), 1);
    let op = create_connection(&spec);
    assert_eq!(
        op.credential.as_deref(),
        Some(&[Scheme::Header(HeaderName::from_static("api-token"))][..])
    );
    assert_eq!(op.method, Method::POST);
    assert_eq!(op.template, "/connections");
    assert!(op.creates);
    let body = op.body.as_ref().unwrap();
    let ranges: Vec<&str> = body.media.iter().map(|m| m.range.as_str()).collect();
    assert_eq!(ranges, ["application/json"]);
    assert_eq!(body.resource_key.as_deref(), Some("connection"));
}

#[test]
fn the_overlay_makes_the_resource_object_required() {
    let spec = embedded();
    let schema = schema(create_connection(&spec));
    assert!(!schema.is_valid(&json!({})));
    assert!(!schema.is_valid(&json!({"connection": null})));
    assert!(create_connection(&spec).body.as_ref().unwrap().required);
}

#[test]
fn without_the_overlay_the_vendor_schema_lets_an_empty_object_through() {
    let source = SpecSource {
        path: None,
        overlays: Some(Vec::new()),
        ..SpecSource::default()
    };
    let spec = Spec::load(&source).unwrap();
    assert!(schema(create_connection(&spec)).is_valid(&json!({})));
}

#[test]
fn the_seed_example_request_is_valid() {
    let spec = embedded();
    let example = json!({"connection": {"service": "fooCommerce", "externalid": "toystore123",
        "name": "Toystore, Inc.", "logoUrl": "http://example.com/i/foo.png",
        "linkUrl": "http://example.com/foo/", "listId": "1"}});
    assert!(schema(create_connection(&spec)).is_valid(&example));
}

fn doc30() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": "t", "version": "1"},
        "servers": [{"url": "/v1/"}],
        "paths": {
            "/things/{id}": {
                "get": {"operationId": "get-thing"},
                "put": {
                    "requestBody": {"$ref": "#/components/requestBodies/Thing"}
                }
            }
        },
        "components": {
            "requestBodies": {
                "Thing": {"content": {"application/json; charset=utf-8": {
                    "schema": {"$ref": "#/components/schemas/Thing"}}}}
            },
            "schemas": {
                "Thing": {"type": "object", "properties": {
                    "thing": {"type": "object", "properties": {
                        "note": {"type": "string", "nullable": true}}}}}
            }
        }
    })
}

#[test]
fn openapi_30_documents_compile_with_refs_and_nullable() {
    let spec = Spec::compile("t.json", doc30()).unwrap();
    assert_eq!(spec.base_path, "/v1");
    let default = Scheme::Header(HeaderName::from_static(DEFAULT_CREDENTIAL_HEADER));
    assert_eq!(spec.unknown_credential.as_deref(), Some(&[default][..]));
    assert_eq!(spec.operations.len(), 2);
    let put = &spec.operations[1];
    assert_eq!(&*put.id, "PUT /things/{id}");
    assert!(!put.creates, "only POSTs create");
    let body = put.body.as_ref().unwrap();
    assert_eq!(body.resource_key.as_deref(), Some("thing"));
    let schema = schema(put);
    assert!(schema.is_valid(&json!({"thing": {"note": null}})));
    assert!(!schema.is_valid(&json!({"thing": {"note": 5}})));
}

#[test]
fn a_broken_schema_stops_loading_with_file_and_pointer() {
    let mut doc = doc30();
    doc["components"]["schemas"]["Thing"]["properties"]["thing"] = Value::Null;
    let e = Spec::compile("t.json", doc).unwrap_err();
    assert_eq!(e.file, "t.json");
    assert_eq!(e.pointer, "/components/schemas/Thing/properties/thing");
    assert!(
        e.to_string()
            .starts_with("t.json at /components/schemas/Thing/properties/thing: ")
    );
}

#[test]
fn a_keyword_that_is_not_json_schema_loads_with_a_warning() {
    let mut doc = doc30();
    doc["components"]["schemas"]["Thing"]["properties"]["thing"]["type"] = json!(12);
    let spec = Spec::compile("t.json", doc).unwrap();
    assert_eq!(spec.warnings.len(), 1, "{:?}", spec.warnings);
    assert_eq!(
        spec.warnings[0].0.pointer,
        "/components/schemas/Thing/properties/thing/type"
    );
}

#[test]
fn a_document_without_a_version_is_refused_saying_what_is_supported() {
    let e = Spec::compile("t.json", json!({"paths": {}})).unwrap_err();
    assert!(e.message.contains("not an OpenAPI document"), "{e}");
    let e = Spec::compile("t.json", json!({"openapi": "4.0.0", "paths": {}})).unwrap_err();
    assert_eq!(e.pointer, "/openapi");
    let e = Spec::compile("t.json", json!({"openapi": "", "paths": {}})).unwrap_err();
    assert!(e.message.contains("\"openapi\" field is empty"), "{e}");
    let e = Spec::compile("t.json", json!({"swagger": "1.2", "paths": {}})).unwrap_err();
    assert_eq!(e.pointer, "/swagger");
}

#[test]
fn spec_files_pick_up_the_overlay_beside_them() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("api.json");
    std::fs::write(&spec_path, serde_json::to_vec(&doc30()).unwrap()).unwrap();
    std::fs::write(
        dir.path().join("api.overlay.yaml"),
        "overlay: 1.0.0\ninfo: {title: t, version: '1'}\nactions:\n  - target: $.components.schemas.Thing\n    update: {required: [thing]}\n",
    )
    .unwrap();
    let spec = Spec::load(&SpecSource {
        path: Some(spec_path),
        overlays: None,
        ..SpecSource::default()
    })
    .unwrap();
    assert_eq!(spec.overlays.len(), 1);
    let schema = schema(&spec.operations[1]);
    assert!(!schema.is_valid(&json!({})));
}

#[test]
fn each_operation_takes_the_scheme_its_requirement_names() {
    let mut doc = doc30();
    doc["components"]["securitySchemes"] = json!({
        "other": {"type": "apiKey", "in": "query", "name": "key"},
        "a": {"type": "apiKey", "in": "header", "name": "X-First"},
        "b": {"type": "apiKey", "in": "header", "name": "X-Chosen"}
    });
    doc["security"] = json!([{"b": []}]);
    doc["paths"]["/things/{id}"]["put"]["security"] = json!([{"other": []}]);
    let spec = Spec::compile("t", doc).unwrap();
    let chosen = Scheme::Header(HeaderName::from_static("x-chosen"));
    let chosen = [chosen];
    assert_eq!(spec.operations[0].credential.as_deref(), Some(&chosen[..]));
    let key = [Scheme::Query("key".into())];
    assert_eq!(spec.operations[1].credential.as_deref(), Some(&key[..]));
    assert_eq!(spec.unknown_credential.as_deref(), Some(&chosen[..]));
    // A client's copy is stripped wherever any of them would travel.
    assert_eq!(spec.credential_places.len(), 3);
}

#[test]
fn media_types_compare_by_essence() {
    assert_eq!(
        media_essence("Application/JSON; charset=UTF-8"),
        "application/json"
    );
    assert!(is_json("application/vnd.api+json"));
    assert!(!is_json("text/json5"));
}

#[test]
fn x_specgate_audit_overrides_which_operations_are_audited() {
    let mut doc = doc30();
    doc["paths"]["/things/{id}"]["put"]["x-specgate-audit"] = json!(true);
    doc["paths"]["/things/{id}"]["get"]["x-specgate-audit"] = json!(false);
    let spec = Spec::compile("t.json", doc.clone()).unwrap();
    assert!(spec.operations[1].creates, "an audited PUT");
    assert!(!spec.operations[0].creates);
    doc["paths"]["/things/{id}"]["put"]["x-specgate-audit"] = json!("yes");
    let e = Spec::compile("t.json", doc).unwrap_err();
    assert_eq!(e.pointer, "/paths/~1things~1{id}/put/x-specgate-audit");
}

#[test]
fn x_specgate_enforce_sets_an_operations_mode_and_a_bad_one_refuses_the_document() {
    let mut doc = doc30();
    doc["paths"]["/things/{id}"]["put"]["x-specgate-enforce"] = json!("report");
    doc["paths"]["/things/{id}"]["get"]["x-specgate-enforce"] = json!("OFF");
    let spec = Spec::compile("t.json", doc.clone()).unwrap();
    assert_eq!(spec.operations[1].enforce, Some(Enforce::Report));
    assert_eq!(spec.operations[0].enforce, Some(Enforce::Off));
    doc["paths"]["/things/{id}"]["put"]["x-specgate-enforce"] = json!("lenient");
    let e = Spec::compile("t.json", doc).unwrap_err();
    assert_eq!(e.pointer, "/paths/~1things~1{id}/put/x-specgate-enforce");
}

#[test]
fn swagger_2_documents_load_and_their_bodies_are_validated_where_they_are() {
    let doc = json!({
        "swagger": "2.0",
        "info": {"title": "pets", "version": "1"},
        "host": "pets.example.com",
        "basePath": "/v2",
        "securityDefinitions": {"key": {"type": "apiKey", "in": "header", "name": "X-Pet-Key"}},
        "paths": {"/pets": {"post": {
            "parameters": [{"in": "body", "name": "pet", "required": true,
                            "schema": {"$ref": "#/definitions/Pet"}}],
            "responses": {"201": {"description": "made", "examples": {"application/json": {"id": 1}}}}
        }}},
        "definitions": {"Pet": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "x-nullable": true},
            "tag": {"type": "strin"}
        }}}
    });
    let spec = Spec::compile("pets.json", doc).unwrap();
    assert_eq!(spec.version, "2.0");
    assert_eq!(spec.base_path, "/v2");
    assert_eq!(
        spec.operations[0].credential.as_deref(),
        Some(&[Scheme::Header(HeaderName::from_static("x-pet-key"))][..])
    );
    // A problem in a schema is reported where it is in the Swagger file.
    assert_eq!(spec.warnings.len(), 1, "{:?}", spec.warnings);
    assert_eq!(
        spec.warnings[0].0.pointer,
        "/definitions/Pet/properties/tag/type"
    );
    let op = &spec.operations[0];
    assert!(op.creates);
    assert_eq!(
        op.example.as_ref().unwrap().status,
        http::StatusCode::CREATED
    );
    assert!(op.body.as_ref().unwrap().required);
    let schema = schema(op);
    assert!(schema.is_valid(&json!({"name": "Rex"})));
    assert!(schema.is_valid(&json!({"name": null})), "x-nullable");
    let v = schema.violations(&json!({"name": 5}));
    assert_eq!(v[0].source, Source::body("/name"));
    assert_eq!(schema.violations(&json!({}))[0].code, "required");
}

#[test]
fn a_byte_order_mark_and_openapi_3_2_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.yaml");
    let text = "\u{feff}openapi: 3.2.0\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    post:\n      requestBody:\n        content:\n          application/json:\n            schema: {type: object, required: [x]}\n      responses: {'200': {description: ok}}\n";
    std::fs::write(&path, text).unwrap();
    let spec = Spec::load(&SpecSource {
        path: Some(path),
        overlays: Some(Vec::new()),
        ..SpecSource::default()
    })
    .unwrap();
    assert_eq!(spec.version, "3.2.0");
    let schema = schema(&spec.operations[0]);
    assert!(!schema.is_valid(&json!({})));
}

#[test]
fn a_document_split_over_files_loads_and_problems_name_their_own_file() {
    let dir = tempfile::tempdir().unwrap();
    let api = dir.path().join("api.yaml");
    std::fs::write(
        &api,
        "openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n  /pets:\n    $ref: 'paths/pets.yaml'\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("paths")).unwrap();
    std::fs::write(
        dir.path().join("paths/pets.yaml"),
        "post:\n  requestBody:\n    content:\n      application/json:\n        schema: {$ref: '../schemas.yaml#/Pet'}\n  responses: {'200': {description: ok}}\n",
    )
    .unwrap();
    let schemas = dir.path().join("schemas.yaml");
    std::fs::write(
        &schemas,
        "Pet: {type: object, required: [name], properties: {name: {type: string}, tag: {type: strin}}}\nUnused: {$ref: 'nowhere.yaml'}\n",
    )
    .unwrap();
    let load = || {
        Spec::load(&SpecSource {
            path: Some(api.clone()),
            overlays: Some(Vec::new()),
            ..SpecSource::default()
        })
    };
    let spec = load().unwrap();
    let schema = schema(&spec.operations[0]);
    assert!(!schema.is_valid(&json!({"name": 1})));
    assert_eq!(spec.warnings.len(), 1);
    let warning = &spec.warnings[0].0;
    assert!(warning.file.ends_with("schemas.yaml"), "{warning}");
    assert_eq!(warning.pointer, "/Pet/properties/tag/type");

    // A reference that cannot be read refuses the document once something reaches it.
    std::fs::write(
        &schemas,
        "Pet: {properties: {owner: {$ref: 'owners.yaml#/Owner'}}}\n",
    )
    .unwrap();
    let e = load().unwrap_err();
    assert!(e.file.ends_with("schemas.yaml"), "{e}");
    assert_eq!(e.pointer, "/Pet/properties/owner/$ref");
    assert!(
        e.message.contains("owners.yaml, which does not exist"),
        "{e}"
    );
}

#[test]
fn a_discriminator_over_whole_files_selects_by_their_names() {
    let dir = tempfile::tempdir().unwrap();
    let api = dir.path().join("api.yaml");
    std::fs::write(
        &api,
        "openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n  /pets:\n    post:\n      requestBody:\n        content:\n          application/json:\n            schema:\n              oneOf: [{$ref: 'Cat.yaml'}, {$ref: 'Dog.yaml'}]\n              discriminator: {propertyName: kind}\n      responses: {'200': {description: ok}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("Cat.yaml"),
        "{type: object, properties: {kind: {type: string}, claws: {type: boolean}}}",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("Dog.yaml"),
        "{type: object, properties: {kind: {type: string}, bark: {type: string}}}",
    )
    .unwrap();
    let spec = Spec::load(&SpecSource {
        path: Some(api),
        overlays: Some(Vec::new()),
        ..SpecSource::default()
    })
    .unwrap();
    let schema = schema(&spec.operations[0]);
    assert!(schema.is_valid(&json!({"kind": "Cat", "claws": true})));
    let v = schema.violations(&json!({"kind": "Cat", "claws": "sharp"}));
    assert_eq!(v.len(), 1, "only Cat's schema applies: {v:?}");
    assert_eq!(schema.violations(&json!({"kind": "Cow"}))[0].code, "enum");
}
