//! Each OpenAPI version's schema dialect, rewritten into JSON Schema 2020-12 with the meaning
//! that version gives it, so one engine enforces every document as its own version reads.
//!
//! OpenAPI 3.0 schemas are draft 4 with OpenAPI's changes: `exclusiveMinimum` is a boolean
//! beside `minimum`, `nullable: true` admits `null`, and everything beside a `$ref` is ignored.
//! 3.1 schemas are 2020-12. Both honour `discriminator`: the property it names selects the one
//! alternative a body is checked against, instead of every alternative at once.
//!
//! The rewrites come in two steps. [`normalise`] changes keywords in place, before the
//! document's schemas are checked, and says what it renamed, so problems are still reported at
//! the pointers the vendor's document has. [`restructure`] runs after those checks and may move a schema under a new
//! keyword (`anyOf`, `allOf`), where a pointer would no longer match the document.

use serde_json::{Map, Value, json};

/// The schema dialect of a document's OpenAPI version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAPI 3.0 (and Swagger 2.0, converted): draft 4 with OpenAPI's changes.
    Oas30,
    /// OpenAPI 3.1: JSON Schema 2020-12.
    Oas31,
}

/// Keywords that set a base URI or a dialect. OpenAPI 3.0 has none of them; a 3.0 document
/// that carries one means nothing by it, and honouring it would break its `$ref`s.
const NOT_IN_30: [&str; 7] = [
    "$id",
    "$schema",
    "$anchor",
    "$dynamicAnchor",
    "$dynamicRef",
    "$recursiveAnchor",
    "$recursiveRef",
];

/// Rewrites one schema's keywords in place into their 2020-12 form.
///
/// Older forms are read in either version, since real documents mix them and each has one
/// meaning: a boolean `exclusiveMinimum`, `nullable`, an array `items`, `dependencies`.
///
/// Returns the keywords it renamed, each as (new name, name in the document), so a problem
/// found under the new name can be reported where the document has it.
pub(super) fn normalise(schema: &mut Value, dialect: Dialect) -> Vec<(&'static str, &'static str)> {
    let mut renamed = Vec::new();
    let Some(map) = schema.as_object_mut() else {
        return renamed;
    };
    // Swagger 2.0's vendor extension for what 3.0 calls `nullable`.
    if map.remove("x-nullable") == Some(Value::Bool(true)) {
        map.insert("nullable".into(), Value::Bool(true));
    }
    if dialect == Dialect::Oas30 {
        if map.contains_key("$ref") && map.len() > 1 {
            // "This object cannot be extended with additional properties and any properties
            // added SHALL be ignored." `nullable` stays: what it asks can only loosen.
            map.retain(|keyword, _| keyword == "$ref" || keyword == "nullable");
        }
        for keyword in NOT_IN_30 {
            map.remove(keyword);
        }
    }
    if exclusive_bound(map, "exclusiveMinimum", "minimum") {
        renamed.push(("exclusiveMinimum", "minimum"));
    }
    if exclusive_bound(map, "exclusiveMaximum", "maximum") {
        renamed.push(("exclusiveMaximum", "maximum"));
    }
    if map.get("nullable") == Some(&Value::Bool(true)) {
        let admits_null = match map.get_mut("type") {
            Some(Value::String(name)) => {
                let name = std::mem::take(name);
                map.insert("type".into(), json!([name, "null"]));
                true
            }
            Some(Value::Array(names)) => {
                if !names.contains(&json!("null")) {
                    names.push(json!("null"));
                }
                true
            }
            _ => false,
        };
        if admits_null {
            map.remove("nullable");
            if let Some(Value::Array(options)) = map.get_mut("enum")
                && !options.contains(&Value::Null)
            {
                options.push(Value::Null);
            }
        }
    } else if map.get("nullable").is_some() {
        map.remove("nullable");
    }
    if map.get("items").is_some_and(Value::is_array) {
        let items = map.remove("items").expect("just seen");
        if let Some(additional) = map.remove("additionalItems") {
            map.insert("items".into(), additional);
            renamed.push(("items", "additionalItems"));
        }
        map.insert("prefixItems".into(), items);
        renamed.push(("prefixItems", "items"));
    }
    if let Some(Value::Object(dependencies)) = map.remove("dependencies") {
        let (required, schemas): (Map<_, _>, Map<_, _>) = dependencies
            .into_iter()
            .partition(|(_, dependency)| dependency.is_array());
        if !required.is_empty() {
            map.insert("dependentRequired".into(), Value::Object(required));
            renamed.push(("dependentRequired", "dependencies"));
        }
        if !schemas.is_empty() {
            map.insert("dependentSchemas".into(), Value::Object(schemas));
            renamed.push(("dependentSchemas", "dependencies"));
        }
    }
    renamed
}

/// `minimum: 0, exclusiveMinimum: true` (draft 4) is `exclusiveMinimum: 0` (2020-12).
/// Whether the inclusive bound's value moved to the exclusive keyword.
fn exclusive_bound(map: &mut Map<String, Value>, exclusive: &str, inclusive: &str) -> bool {
    match map.get(exclusive) {
        Some(Value::Bool(true)) => match map.remove(inclusive) {
            Some(bound) => {
                map.insert(exclusive.into(), bound);
                true
            }
            None => {
                map.remove(exclusive);
                false
            }
        },
        Some(Value::Bool(false)) => {
            map.remove(exclusive);
            false
        }
        _ => false,
    }
}

/// A `discriminator` mapping value as a `$ref`: a schema name is one of the document's
/// components; `None` for a reference outside the document.
pub(super) fn mapping_ref(target: &str) -> Option<String> {
    if target.starts_with('#') {
        Some(target.to_owned())
    } else if target.contains(['/', '.', '#']) {
        None
    } else {
        Some(format!("#/components/schemas/{target}"))
    }
}

/// The rewrites that move schemas under new keywords; see the module docs. `origin` gives
/// the document pointer a `$ref` of the compiled set names (`None` for one that names nothing
/// there), whose last token is the schema's name.
pub(super) fn restructure(schema: &mut Value, origin: &dyn Fn(&str) -> Option<String>) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    if map.remove("nullable") == Some(Value::Bool(true)) && !map.is_empty() {
        // No `type` to add `null` to (a `$ref`, an `allOf`): null, or whatever it says.
        let rest = std::mem::take(map);
        map.insert(
            "anyOf".into(),
            json!([{"type": "null"}, Value::Object(rest)]),
        );
    }
    discriminate(map, origin);
}

/// `oneOf`/`anyOf` with a `discriminator`: the property's value picks the alternative.
///
/// Without the rewrite a body must match exactly one alternative of `oneOf`, which fails for
/// the many documents whose alternatives overlap, and its errors mention every alternative.
/// With it: an unknown value is an `enum` error on the property, a known one is checked
/// against its own schema alone, and a body without the property is left to the document's
/// own `oneOf`/`anyOf`. Values come from `mapping`, and from the names of the alternatives,
/// which must all be `$ref`s to named schemas (or the rewrite is not made).
fn discriminate(map: &mut Map<String, Value>, origin: &dyn Fn(&str) -> Option<String>) {
    let Some(property) = map
        .get("discriminator")
        .and_then(|d| d.get("propertyName"))
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return;
    };
    let Some(keyword) = ["oneOf", "anyOf"]
        .into_iter()
        .find(|k| map.get(*k).is_some_and(Value::is_array))
    else {
        // The inheritance form (a base schema with subtypes elsewhere) selects nothing here.
        return;
    };
    if map[keyword]
        .as_array()
        .into_iter()
        .flatten()
        .any(|branch| branch.get("$ref").is_none())
    {
        // An inline alternative has no name to be selected by: the document's own
        // `oneOf`/`anyOf` decides, as it reads.
        return;
    }
    let mut choices: Vec<(String, String)> = Vec::new();
    let mapping = map
        .get("discriminator")
        .and_then(|d| d.get("mapping"))
        .and_then(Value::as_object);
    for (value, target) in mapping.into_iter().flatten() {
        if let Some(reference) = target.as_str().filter(|r| origin(r).is_some()) {
            choices.push((value.clone(), reference.to_owned()));
        }
    }
    for branch in map[keyword].as_array().into_iter().flatten() {
        let Some(reference) = branch.get("$ref").and_then(Value::as_str) else {
            continue;
        };
        let Some(name) = origin(reference)
            .and_then(|at| super::walk::tokens(&at).last().map(|t| t.into_owned()))
        else {
            continue;
        };
        if !choices.iter().any(|(v, r)| *v == name || r == reference) {
            choices.push((name, reference.to_owned()));
        }
    }
    if choices.is_empty() {
        return;
    }
    map.remove("discriminator");
    let alternatives = map.remove(keyword).expect("found above");
    let values: Vec<&String> = choices.iter().map(|(value, _)| value).collect();
    let mut rules = vec![json!({
        "if": {"required": [property]},
        "then": {"properties": {&property: {"enum": values}}}
    })];
    for (value, reference) in &choices {
        rules.push(json!({
            "if": {"required": [property], "properties": {&property: {"const": value}}},
            "then": {"$ref": reference}
        }));
    }
    rules.push(json!({
        "if": {"not": {"required": [property]}},
        "then": {keyword: alternatives}
    }));
    match map.get_mut("allOf") {
        Some(Value::Array(all)) => all.extend(rules),
        _ => {
            map.insert("allOf".into(), Value::Array(rules));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalised(mut schema: Value, dialect: Dialect) -> Value {
        let _renamed = normalise(&mut schema, dialect);
        schema
    }

    #[test]
    fn draft4_bounds_and_nullable_become_2020_12() {
        assert_eq!(
            normalised(
                json!({"type": "integer", "minimum": 0, "exclusiveMinimum": true,
                       "maximum": 9, "exclusiveMaximum": false}),
                Dialect::Oas30
            ),
            json!({"type": "integer", "exclusiveMinimum": 0, "maximum": 9})
        );
        assert_eq!(
            normalised(
                json!({"type": "string", "enum": ["a"], "nullable": true}),
                Dialect::Oas30
            ),
            json!({"type": ["string", "null"], "enum": ["a", null]})
        );
    }

    #[test]
    fn in_30_a_ref_ignores_its_siblings_and_ids_mean_nothing() {
        assert_eq!(
            normalised(
                json!({"$ref": "#/x", "type": "string", "description": "d", "nullable": true}),
                Dialect::Oas30
            ),
            json!({"$ref": "#/x", "nullable": true})
        );
        assert_eq!(
            normalised(
                json!({"$id": "https://a/b", "type": "object"}),
                Dialect::Oas30
            ),
            json!({"type": "object"})
        );
        let in_31 = json!({"$ref": "#/x", "type": "string", "$id": "https://a/b"});
        assert_eq!(normalised(in_31.clone(), Dialect::Oas31), in_31);
    }

    #[test]
    fn array_items_and_dependencies_take_their_2020_12_names() {
        assert_eq!(
            normalised(
                json!({"items": [{}], "additionalItems": false,
                       "dependencies": {"a": ["b"], "c": {"required": ["d"]}}}),
                Dialect::Oas30
            ),
            json!({"prefixItems": [{}], "items": false,
                   "dependentRequired": {"a": ["b"]},
                   "dependentSchemas": {"c": {"required": ["d"]}}})
        );
    }

    #[test]
    fn nullable_without_a_type_admits_null_around_the_rest() {
        let mut schema = json!({"$ref": "#/components/schemas/A", "nullable": true});
        restructure(&mut schema, &|_| None);
        assert_eq!(
            schema,
            json!({"anyOf": [{"type": "null"}, {"$ref": "#/components/schemas/A"}]})
        );
    }

    #[test]
    fn a_discriminator_selects_by_mapping_and_by_schema_name() {
        // As the compiled set has them: `$ref`s to slots, a mapping that named nothing left as is.
        let mut schema = json!({
            "oneOf": [{"$ref": "#/s/1"}, {"$ref": "#/s/2"}],
            "discriminator": {"propertyName": "kind", "mapping": {"kitty": "#/s/1", "gone": "Nope"}}
        });
        let origin = |r: &str| match r {
            "#/s/1" => Some("/components/schemas/Cat".to_owned()),
            "#/s/2" => Some("/components/schemas/Dog".to_owned()),
            _ => None,
        };
        restructure(&mut schema, &origin);
        let rules = schema["allOf"].as_array().unwrap();
        assert_eq!(
            rules[0]["then"]["properties"]["kind"]["enum"],
            json!(["kitty", "Dog"])
        );
        assert_eq!(rules[1]["if"]["properties"]["kind"]["const"], "kitty");
        assert_eq!(rules[1]["then"]["$ref"], "#/s/1");
        assert_eq!(rules[2]["then"]["$ref"], "#/s/2");
        assert_eq!(rules[3]["then"]["oneOf"].as_array().unwrap().len(), 2);
        assert!(schema.get("discriminator").is_none() && schema.get("oneOf").is_none());
    }
}
