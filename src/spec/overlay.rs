//! OpenAPI Overlay 1.0: tightening the vendor's document without editing it.
//!
//! An overlay is an ordered list of actions; each selects nodes with an RFC 9535 JSONPath
//! `target` and either merges `update` into them or removes them. An action that selects
//! nothing is an error here (the Overlay spec allows it): a tightening that silently stopped
//! applying after a vendor update is exactly the surprise an overlay must not cause.

use serde::Deserialize;
use serde_json::Value;
use serde_json_path::JsonPath;

use super::SpecError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Overlay {
    overlay: String,
    #[allow(dead_code)]
    info: Info,
    #[serde(default)]
    #[allow(dead_code)]
    extends: Option<String>,
    actions: Vec<Action>,
}

#[derive(Debug, Deserialize)]
struct Info {
    #[allow(dead_code)]
    title: String,
    #[allow(dead_code)]
    version: String,
}

#[derive(Debug, Deserialize)]
struct Action {
    target: String,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    update: Option<Value>,
    #[serde(default)]
    remove: bool,
}

/// Applies the overlay document `overlay` (already parsed from `file`) to `doc`, in place.
pub(super) fn apply(doc: &mut Value, overlay: Value, file: &str) -> Result<(), SpecError> {
    let err = |pointer: String, message: String| SpecError::new(file, pointer, message);
    let overlay: Overlay = serde_json::from_value(overlay)
        .map_err(|e| err(String::new(), format!("not an Overlay 1.0 document: {e}")))?;
    if !overlay.overlay.starts_with("1.0.") {
        return Err(err(
            "/overlay".into(),
            format!(
                "overlay version {:?} is not supported (1.0.x is)",
                overlay.overlay
            ),
        ));
    }
    for (i, action) in overlay.actions.into_iter().enumerate() {
        let path = JsonPath::parse(&action.target)
            .map_err(|e| err(format!("/actions/{i}/target"), format!("bad JSONPath: {e}")))?;
        let pointers: Vec<String> = path
            .query_located(doc)
            .locations()
            .map(|l| l.to_json_pointer())
            .collect();
        if pointers.is_empty() {
            return Err(err(
                format!("/actions/{i}/target"),
                format!("{} selects nothing in the spec", action.target),
            ));
        }
        match (action.remove, action.update) {
            (true, _) => {
                // Deepest and last first, so removing one node never shifts another's pointer.
                for pointer in pointers.iter().rev() {
                    remove(doc, pointer);
                }
            }
            (false, Some(update)) => {
                for pointer in &pointers {
                    let node = doc.pointer_mut(pointer).expect("pointer was just located");
                    merge(node, &update).map_err(|m| err(format!("/actions/{i}/update"), m))?;
                }
            }
            (false, None) => {
                return Err(err(
                    format!("/actions/{i}"),
                    "an action needs `update` or `remove: true`".into(),
                ));
            }
        }
    }
    Ok(())
}

/// Merges `update` into `target` as Overlay 1.0 says: objects recursively, arrays by appending.
fn merge(target: &mut Value, update: &Value) -> Result<(), String> {
    match (target, update) {
        (Value::Object(target), Value::Object(update)) => {
            for (key, value) in update {
                match target.get_mut(key) {
                    Some(existing @ (Value::Object(_) | Value::Array(_))) => {
                        merge(existing, value)?
                    }
                    _ => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
            Ok(())
        }
        (Value::Array(target), Value::Array(items)) => {
            target.extend(items.iter().cloned());
            Ok(())
        }
        (Value::Array(target), item) => {
            target.push(item.clone());
            Ok(())
        }
        (target, update) => {
            if target.is_object() {
                return Err(format!("cannot merge {update} into an object"));
            }
            *target = update.clone();
            Ok(())
        }
    }
}

fn remove(doc: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let key = last.replace("~1", "/").replace("~0", "~");
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.remove(&key);
        }
        Some(Value::Array(items)) => {
            if let Ok(index) = key.parse::<usize>()
                && index < items.len()
            {
                items.remove(index);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn overlay(actions: Value) -> Value {
        json!({"overlay": "1.0.0", "info": {"title": "t", "version": "1"}, "actions": actions})
    }

    #[test]
    fn update_merges_objects_and_appends_to_arrays() {
        let mut doc = json!({"a": {"required": ["x"], "keep": 1}});
        let o = overlay(json!([{"target": "$.a", "update": {"required": ["y"], "new": true}}]));
        apply(&mut doc, o, "o.yaml").unwrap();
        assert_eq!(
            doc,
            json!({"a": {"required": ["x", "y"], "keep": 1, "new": true}})
        );
    }

    #[test]
    fn remove_deletes_every_selected_node() {
        let mut doc = json!({"paths": {"/a": {"get": {}, "post": {}}, "/b": {"get": {}}}});
        let o = overlay(json!([{"target": "$.paths.*.get", "remove": true}]));
        apply(&mut doc, o, "o.yaml").unwrap();
        assert_eq!(doc, json!({"paths": {"/a": {"post": {}}, "/b": {}}}));
    }

    #[test]
    fn a_target_that_selects_nothing_is_an_error_naming_the_action() {
        let mut doc = json!({"paths": {}});
        let o = overlay(json!([{"target": "$.paths['/gone']", "update": {"x": 1}}]));
        let e = apply(&mut doc, o, "o.yaml").unwrap_err();
        assert_eq!(e.file, "o.yaml");
        assert_eq!(e.pointer, "/actions/0/target");
        assert!(e.message.contains("selects nothing"), "{e}");
    }

    #[test]
    fn not_an_overlay_is_an_error() {
        let mut doc = json!({});
        let e = apply(&mut doc, json!({"openapi": "3.1.0"}), "o.yaml").unwrap_err();
        assert!(e.message.contains("not an Overlay 1.0 document"), "{e}");
    }
}
