//! Reading a document file as real tools do: JSON or YAML, with or without a byte-order mark.

use std::path::Path;

use serde_json::Value;

use super::SpecError;

/// Reads and parses the file at `path`; `name` names it in errors.
pub(super) fn read(path: &Path, name: &str) -> Result<Value, SpecError> {
    let bytes =
        std::fs::read(path).map_err(|e| SpecError::new(name, "", format!("cannot read: {e}")))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        SpecError::new(
            name,
            "",
            format!(
                "not UTF-8 text (byte {}): OpenAPI documents are JSON or YAML",
                e.valid_up_to()
            ),
        )
    })?;
    parse(name, text)
}

/// Parses a JSON or YAML document: JSON by extension or by a leading `{`. A UTF-8 byte-order
/// mark, which editors on Windows add, is ignored.
pub(super) fn parse(name: &str, text: &str) -> Result<Value, SpecError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let json = name.ends_with(".json")
        || (!name.ends_with(".yaml")
            && !name.ends_with(".yml")
            && text.trim_start().starts_with('{'));
    if json {
        serde_json::from_str(text)
            .map_err(|e| SpecError::new(name, "", format!("not valid JSON: {e}")))
    } else {
        let mut yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)
            .map_err(|e| SpecError::new(name, "", format!("not valid YAML: {e}")))?;
        // `<<: *anchor` merge keys, which YAML 1.1 tools (and so many vendors' files) use.
        yaml.apply_merge()
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
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_numeric_keys_become_strings() {
        let doc = parse(
            "spec.yaml",
            "paths:\n  /a:\n    get:\n      responses:\n        200: {description: ok}\n",
        )
        .unwrap();
        assert!(doc.pointer("/paths/~1a/get/responses/200").is_some());
    }

    #[test]
    fn a_byte_order_mark_is_ignored_in_json_and_yaml() {
        assert_eq!(
            parse("a.json", "\u{feff}{\"a\": 1}").unwrap(),
            json!({"a": 1})
        );
        assert_eq!(parse("a.yaml", "\u{feff}a: 1\n").unwrap(), json!({"a": 1}));
        assert_eq!(parse("a", "\u{feff}  {\"a\": 1}").unwrap(), json!({"a": 1}));
    }

    #[test]
    fn yaml_merge_keys_and_yaml_1_2_scalars() {
        let text = "base: &b {type: string, maxLength: 3}\nname:\n  <<: *b\n  minLength: 1\nflags: [yes, no, on, off]\nversion: 3.0\n";
        let doc = parse("a.yaml", text).unwrap();
        assert_eq!(
            doc["name"],
            json!({"type": "string", "maxLength": 3, "minLength": 1})
        );
        // As YAML 1.2 tools (and JavaScript's js-yaml) read them: strings, not booleans.
        assert_eq!(doc["flags"], json!(["yes", "no", "on", "off"]));
        assert_eq!(doc["version"], json!(3.0));
    }

    #[test]
    fn errors_name_the_file() {
        let e = parse("bad.json", "{").unwrap_err();
        assert_eq!(e.file, "bad.json");
        assert!(e.message.starts_with("not valid JSON"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latin1.yaml");
        std::fs::write(&path, b"a: caf\xe9\n").unwrap();
        let e = read(&path, "latin1.yaml").unwrap_err();
        assert!(e.message.starts_with("not UTF-8"), "{e}");
    }
}
