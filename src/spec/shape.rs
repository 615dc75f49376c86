//! What a schema says about the JSON types of a value and of its parts: enough to read text (a
//! form field, a query parameter, a header) as the JSON value the schema means.
//!
//! `amount=2000` in a form is the text `2000`; the schema says `amount` is an integer, so it
//! is read as the number 2000 and then validated like any JSON body. A shape only guides that
//! reading; the compiled schema has the last word, so a shape may be approximate (an `anyOf`
//! admits the types of all its alternatives) but never stricter than the schema.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

/// The JSON types a value may have.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Types(u8);

impl Types {
    /// `null`.
    pub const NULL: Types = Types(1);
    /// `true` or `false`.
    pub const BOOLEAN: Types = Types(2);
    /// A whole number.
    pub const INTEGER: Types = Types(4);
    /// Any number.
    pub const NUMBER: Types = Types(8);
    /// A string.
    pub const STRING: Types = Types(16);
    /// An array.
    pub const ARRAY: Types = Types(32);
    /// An object.
    pub const OBJECT: Types = Types(64);
    /// Anything.
    pub const ANY: Types = Types(127);

    /// Whether every one of `other` is admitted.
    pub fn has(self, other: Types) -> bool {
        self.0 & other.0 == other.0
    }

    fn of_name(name: &str) -> Types {
        match name {
            "null" => Types::NULL,
            "boolean" => Types::BOOLEAN,
            "integer" => Types::INTEGER,
            "number" => Types(Types::NUMBER.0 | Types::INTEGER.0),
            "string" => Types::STRING,
            "array" => Types::ARRAY,
            "object" => Types::OBJECT,
            _ => Types::ANY,
        }
    }

    fn of_value(value: &Value) -> Types {
        match value {
            Value::Null => Types::NULL,
            Value::Bool(_) => Types::BOOLEAN,
            Value::Number(n) if n.is_f64() => Types::NUMBER,
            Value::Number(_) => Types::INTEGER,
            Value::String(_) => Types::STRING,
            Value::Array(_) => Types::ARRAY,
            Value::Object(_) => Types::OBJECT,
        }
    }

    fn or(self, other: Types) -> Types {
        Types(self.0 | other.0)
    }
}

/// The shape of a value.
#[derive(Debug, Default)]
pub struct Shape {
    /// The types it may have.
    pub types: Types,
    /// The shapes of its properties, when it is an object.
    pub properties: HashMap<String, Arc<Shape>>,
    /// The shape of properties not listed, when known.
    pub additional: Option<Arc<Shape>>,
    /// The shape of its items, when it is an array.
    pub items: Option<Arc<Shape>>,
}

/// A shape that admits anything and says nothing about parts.
pub fn any() -> Arc<Shape> {
    Arc::new(Shape {
        types: Types::ANY,
        ..Shape::default()
    })
}

impl Shape {
    /// The shape of property `name` (or of any property, when not listed).
    pub fn property(&self, name: &str) -> Option<&Arc<Shape>> {
        self.properties.get(name).or(self.additional.as_ref())
    }

    /// Whether the value is an array (and not a string, which would take text as it is).
    pub fn is_array(&self) -> bool {
        self.types.has(Types::ARRAY) && !self.types.has(Types::STRING)
    }

    /// Whether the value is an object (and neither a string nor an array), to be read from
    /// several fields or `key,value` pairs.
    pub fn is_object(&self) -> bool {
        self.types.has(Types::OBJECT)
            && !self.types.has(Types::STRING)
            && !self.types.has(Types::ARRAY)
    }

    /// `text` as the JSON value the shape means: a string when a string is admitted (or
    /// nothing else fits), otherwise the first of integer, number, boolean and null it reads
    /// as. What fits nothing stays a string, for the schema to refuse with a precise message.
    pub fn read(&self, text: &str) -> Value {
        let t = self.types;
        if t.has(Types::STRING) {
            return Value::String(text.to_owned());
        }
        if t.has(Types::INTEGER)
            && let Ok(n) = text.parse::<i64>()
        {
            return Value::from(n);
        }
        if t.has(Types::NUMBER)
            && let Some(n) = text
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .and_then(serde_json::Number::from_f64)
        {
            return Value::Number(n);
        }
        if t.has(Types::BOOLEAN) && matches!(text, "true" | "false") {
            return Value::Bool(text == "true");
        }
        if t.has(Types::NULL) && (text.is_empty() || text == "null") {
            return Value::Null;
        }
        Value::String(text.to_owned())
    }
}

/// Builds shapes from the schemas of a compiled set, each `$ref` resolved through `resolve`
/// (which gives the schema a reference names). Schemas reached twice share one shape; a
/// schema that refers to itself is, inside itself, a shape that admits anything.
pub(super) struct Shapes<'a> {
    resolve: &'a dyn Fn(&str) -> Option<&'a Value>,
    done: HashMap<*const Value, Arc<Shape>>,
}

impl<'a> Shapes<'a> {
    /// A builder resolving `$ref`s with `resolve`.
    pub(super) fn new(resolve: &'a dyn Fn(&str) -> Option<&'a Value>) -> Self {
        Shapes {
            resolve,
            done: HashMap::new(),
        }
    }

    /// The shape of `schema`.
    pub(super) fn of(&mut self, schema: &'a Value) -> Arc<Shape> {
        let key = schema as *const Value;
        if let Some(shape) = self.done.get(&key) {
            return shape.clone();
        }
        // Until it is built, a schema reached again (through a cycle) admits anything.
        self.done.insert(key, any());
        let mut shape = Shape::default();
        self.add(&mut shape, schema, 0);
        if shape.types == Types::default() {
            shape.types = Types::ANY;
        }
        let shape = Arc::new(shape);
        self.done.insert(key, shape.clone());
        shape
    }

    /// Adds what `schema` admits to `shape` (alternatives and conjunctions alike: a shape only
    /// needs to know what may be there).
    fn add(&mut self, shape: &mut Shape, schema: &'a Value, depth: usize) {
        let Value::Object(map) = schema else {
            if schema == &Value::Bool(true) {
                shape.types = Types::ANY;
            }
            return;
        };
        if depth > 16 {
            shape.types = Types::ANY;
            return;
        }
        let mut typed = false;
        match map.get("type") {
            Some(Value::String(name)) => {
                shape.types = shape.types.or(Types::of_name(name));
                typed = true;
            }
            Some(Value::Array(names)) => {
                for name in names.iter().filter_map(Value::as_str) {
                    shape.types = shape.types.or(Types::of_name(name));
                }
                typed = true;
            }
            _ => {}
        }
        let listed = match map.get("enum") {
            Some(Value::Array(values)) => values.as_slice(),
            _ => &[],
        };
        for value in listed.iter().chain(map.get("const")) {
            shape.types = shape.types.or(Types::of_value(value));
            typed = true;
        }
        if let Some(Value::Object(properties)) = map.get("properties") {
            for (name, property) in properties {
                let property = self.of(property);
                shape.properties.entry(name.clone()).or_insert(property);
            }
            if !typed {
                shape.types = shape.types.or(Types::OBJECT);
            }
        }
        if let Some(additional) = map.get("additionalProperties").filter(|a| a.is_object()) {
            shape.additional.get_or_insert_with(|| self.of(additional));
        }
        if let Some(items) = map.get("items").filter(|i| i.is_object()) {
            shape.items.get_or_insert_with(|| self.of(items));
            if !typed {
                shape.types = shape.types.or(Types::ARRAY);
            }
        }
        if let Some(reference) = map.get("$ref").and_then(Value::as_str)
            && let Some(target) = (self.resolve)(reference)
        {
            let target = self.of(target);
            merge(shape, &target);
        }
        for keyword in ["allOf", "anyOf", "oneOf"] {
            for branch in map
                .get(keyword)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                self.add(shape, branch, depth + 1);
            }
        }
        for keyword in ["then", "else"] {
            if let Some(branch) = map.get(keyword) {
                self.add(shape, branch, depth + 1);
            }
        }
    }
}

fn merge(into: &mut Shape, from: &Shape) {
    into.types = into.types.or(from.types);
    for (name, property) in &from.properties {
        into.properties
            .entry(name.clone())
            .or_insert_with(|| property.clone());
    }
    if into.additional.is_none() {
        into.additional.clone_from(&from.additional);
    }
    if into.items.is_none() {
        into.items.clone_from(&from.items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape(schema: &Value, defs: &Value) -> Arc<Shape> {
        let resolve = |r: &str| defs.pointer(r.strip_prefix('#').unwrap());
        Shapes::new(&resolve).of(schema)
    }

    #[test]
    fn text_is_read_as_the_type_the_schema_says() {
        let none = json!({});
        let s = shape(
            &json!({"properties": {
                "amount": {"type": "integer"}, "ratio": {"type": "number"}, "live": {"type": "boolean"},
                "note": {"type": ["string", "null"]}, "gone": {"type": ["integer", "null"]},
                "currency": {"enum": ["usd", "eur"]}
            }}),
            &none,
        );
        let p = |name: &str| s.property(name).unwrap().clone();
        assert_eq!(p("amount").read("2000"), json!(2000));
        assert_eq!(
            p("amount").read("lots"),
            json!("lots"),
            "left for the schema to refuse"
        );
        assert_eq!(p("ratio").read("0.5"), json!(0.5));
        assert_eq!(p("ratio").read("2"), json!(2));
        assert_eq!(p("live").read("true"), json!(true));
        assert_eq!(p("note").read("5"), json!("5"), "a string is admitted");
        assert_eq!(p("gone").read(""), Value::Null);
        assert_eq!(p("currency").read("usd"), json!("usd"));
        assert_eq!(s.types, Types::OBJECT);
    }

    #[test]
    fn refs_alternatives_and_cycles() {
        let defs = json!({"s": {
            "Node": {"type": "object", "properties": {"child": {"$ref": "#/s/Leaf"}, "self": {"$ref": "#/s/Node"}}},
            "Leaf": {"properties": {"n": {"type": "integer"}}},
            "Meta": {"anyOf": [{"type": "object", "additionalProperties": {"type": "string"}}, {"enum": [""]}]}
        }});
        let s = shape(
            &json!({"allOf": [{"$ref": "#/s/Node"}, {"properties": {
                "metadata": {"$ref": "#/s/Meta"},
                "items": {"type": "array", "items": {"properties": {"price": {"type": "integer"}}}}
            }}]}),
            &defs,
        );
        assert!(s.types.has(Types::OBJECT));
        let child = s.property("child").unwrap();
        assert_eq!(child.property("n").unwrap().read("3"), json!(3));
        // Inside itself, a schema that refers to itself admits anything (and the build ends).
        assert_eq!(s.property("self").unwrap().types, Types::ANY);
        let metadata = s.property("metadata").unwrap();
        assert!(metadata.types.has(Types::OBJECT) && metadata.types.has(Types::STRING));
        assert_eq!(metadata.property("any").unwrap().read("7"), json!("7"));
        let items = s.property("items").unwrap().items.clone().unwrap();
        assert_eq!(items.property("price").unwrap().read("10"), json!(10));
    }
}
