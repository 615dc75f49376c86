//! Form fields read into the JSON value their schema means, so a form body is validated like a
//! JSON one.
//!
//! `amount=2000&currency=usd&metadata[order]=7&items[0][price]=p_1&expand[]=customer` is read
//! as `{"amount": 2000, "currency": "usd", "metadata": {"order": "7"},
//! "items": [{"price": "p_1"}], "expand": ["customer"]}`: brackets nest (as Stripe, Rails and
//! PHP write them, and as OpenAPI's `deepObject` style does), a field repeated or written with
//! `[]` is an array, and each value is read as the type the schema gives it ([`Shape::read`]).
//! A field whose name is a property of the schema as written (`ids[]`) is that property.
//!
//! The bytes forwarded are the client's own; this reading is only what is validated.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::spec::{Fields, Shape, Style, Types};

/// Deepest bracket nesting read as nesting.
pub const MAX_DEPTH: usize = 32;

/// Reads an `application/x-www-form-urlencoded` body.
pub fn read_urlencoded(body: &[u8], fields: &Fields) -> Value {
    let mut form = Form::new(fields);
    for (name, value) in form_urlencoded::parse(body) {
        form.add(&name, &value);
    }
    form.into_value()
}

/// A form being read, field by field.
pub struct Form<'a> {
    fields: &'a Fields,
    root: Map<String, Value>,
}

impl<'a> Form<'a> {
    /// An empty form of `fields`.
    pub fn new(fields: &'a Fields) -> Self {
        Form {
            fields,
            root: Map::new(),
        }
    }

    /// Adds a field whose value is text.
    pub fn add(&mut self, name: &str, text: &str) {
        let path = self.path(name);
        let shape = self.shape_at(&path);
        let Some(shape) = shape.filter(|shape| shape.is_array()) else {
            let value = match self.shape_at(&path) {
                Some(shape) => shape.read(text),
                None => Value::String(text.to_owned()),
            };
            return self.put(&path, value, false);
        };
        let items = shape.items.clone().unwrap_or_else(crate::spec::any_shape);
        // `explode: false` (or a delimited style) puts a whole array in one field: `tags=a,b`.
        let delimiter = self.fields.encoding.get(path[0]).and_then(|encoding| {
            match (encoding.style, encoding.explode) {
                (Some(Style::SpaceDelimited), _) => Some(' '),
                (Some(Style::PipeDelimited), _) => Some('|'),
                (_, Some(false)) => Some(','),
                _ => None,
            }
        });
        match delimiter {
            Some(delimiter) => {
                let values = text.split(delimiter).map(|t| items.read(t)).collect();
                self.put(&path, Value::Array(values), false);
            }
            None => self.put(&path, items.read(text), true),
        }
    }

    /// Adds a field whose value is already JSON (a multipart part sent as JSON).
    pub fn add_value(&mut self, name: &str, value: Value) {
        let path = self.path(name);
        self.put(&path, value, false);
    }

    /// The form as one JSON object.
    pub fn into_value(self) -> Value {
        Value::Object(self.root)
    }

    /// The steps of a field name: `items[0][price]` is `items`, `0`, `price`; `expand[]` is
    /// `expand`, `` (append). A name the schema has as written is one step, and so is one
    /// nested deeper than [`MAX_DEPTH`] (it cannot be a property of any real schema).
    fn path<'n>(&self, name: &'n str) -> Vec<&'n str> {
        if self.fields.shape.properties.contains_key(name) {
            return vec![name];
        }
        let Some(open) = name.find('[') else {
            return vec![name];
        };
        let mut steps = vec![&name[..open]];
        let mut rest = &name[open..];
        while let Some(inner) = rest.strip_prefix('[') {
            let Some(close) = inner.find(']') else {
                // Not bracket syntax after all: the name as written.
                return vec![name];
            };
            steps.push(&inner[..close]);
            rest = &inner[close + 1..];
        }
        if !rest.is_empty() || steps.len() > MAX_DEPTH {
            return vec![name];
        }
        steps
    }

    /// The shape at the end of `path`, if the schema says.
    fn shape_at(&self, path: &[&str]) -> Option<Arc<Shape>> {
        let mut shape = self.fields.shape.clone();
        for step in path {
            let next = if step.is_empty() || step.bytes().all(|b| b.is_ascii_digit()) {
                shape
                    .items
                    .clone()
                    .or_else(|| shape.property(step).cloned())
            } else {
                shape.property(step).cloned()
            }?;
            shape = next;
        }
        Some(shape)
    }

    /// Puts `value` at `path`; `append` makes the place an array of the values put there.
    /// A field seen before keeps every value, in order.
    fn put(&mut self, path: &[&str], value: Value, append: bool) {
        let mut root = Value::Object(std::mem::take(&mut self.root));
        self.place(&mut root, path, 1, value, append);
        let Value::Object(root) = root else {
            unreachable!("the root stays an object")
        };
        self.root = root;
    }

    /// Puts `value` at `path[depth - 1..]` below `node`, which holds `path[..depth - 1]`.
    fn place(&self, node: &mut Value, path: &[&str], depth: usize, value: Value, append: bool) {
        let step = path[depth - 1];
        if depth == path.len() {
            if step.is_empty() {
                // `expand[]=a`: one more item.
                match node {
                    Value::Array(items) => items.push(value),
                    other => *other = Value::Array(vec![value]),
                }
                return;
            }
            let slot = child(node, step);
            match slot {
                Value::Null if append => *slot = Value::Array(vec![value]),
                Value::Null => *slot = value,
                Value::Array(items) => items.push(value),
                other => {
                    let first = std::mem::take(other);
                    *other = Value::Array(vec![first, value]);
                }
            }
            return;
        }
        let slot = child(node, step);
        if slot.is_null() {
            let next = path[depth];
            let index = next.is_empty() || next.bytes().all(|b| b.is_ascii_digit());
            *slot = if index && self.admits_array(&path[..depth]) {
                Value::Array(Vec::new())
            } else {
                Value::Object(Map::new())
            };
        }
        self.place(slot, path, depth + 1, value, append);
    }

    fn admits_array(&self, path: &[&str]) -> bool {
        self.shape_at(path)
            .is_none_or(|shape| shape.types.has(Types::ARRAY))
    }
}

/// The value under `step` of a container, created as `null` if missing (an array grows to
/// the index).
fn child<'v>(container: &'v mut Value, step: &str) -> &'v mut Value {
    if let Value::Array(items) = container {
        let index = if step.is_empty() {
            items.len()
        } else {
            step.parse::<usize>().unwrap_or(items.len())
        };
        // A client cannot make us allocate much by naming a far index: at most one more item.
        let index = index.min(items.len());
        if index == items.len() {
            items.push(Value::Null);
        }
        return &mut items[index];
    }
    if !container.is_object() {
        *container = Value::Object(Map::new());
    }
    container
        .as_object_mut()
        .expect("made an object")
        .entry(step.to_owned())
        .or_insert(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Encoding;
    use serde_json::json;
    use std::collections::HashMap;

    fn shape(types: Types) -> Arc<Shape> {
        Arc::new(Shape {
            types,
            ..Shape::default()
        })
    }

    fn object(properties: &[(&str, Arc<Shape>)], additional: Option<Arc<Shape>>) -> Arc<Shape> {
        Arc::new(Shape {
            types: Types::OBJECT,
            properties: properties
                .iter()
                .map(|(n, s)| ((*n).to_owned(), s.clone()))
                .collect(),
            additional,
            items: None,
        })
    }

    fn array(items: Arc<Shape>) -> Arc<Shape> {
        Arc::new(Shape {
            types: Types::ARRAY,
            items: Some(items),
            ..Shape::default()
        })
    }

    /// The shape of Stripe's payment-intent create, in part.
    fn stripe() -> Fields {
        let item = object(
            &[
                ("price", shape(Types::STRING)),
                ("quantity", shape(Types::INTEGER)),
            ],
            None,
        );
        Fields {
            shape: object(
                &[
                    ("amount", shape(Types::INTEGER)),
                    ("currency", shape(Types::STRING)),
                    ("confirm", shape(Types::BOOLEAN)),
                    ("metadata", object(&[], Some(shape(Types::STRING)))),
                    ("items", array(item)),
                    ("expand", array(shape(Types::STRING))),
                    ("tags", array(shape(Types::STRING))),
                    ("ids[]", array(shape(Types::INTEGER))),
                ],
                None,
            ),
            encoding: [(
                "tags".to_owned(),
                Encoding {
                    explode: Some(false),
                    ..Encoding::default()
                },
            )]
            .into_iter()
            .collect::<HashMap<_, _>>(),
        }
    }

    #[test]
    fn fields_are_read_as_the_json_their_schema_means() {
        let body =
            b"amount=2000&currency=usd&confirm=true&metadata[order_id]=6735&metadata[note]=a%20b\
&items[0][price]=price_1&items[0][quantity]=2&items[1][price]=price_2\
&expand[]=customer&expand[]=invoice&tags=a,b&ids[]=7";
        assert_eq!(
            read_urlencoded(body, &stripe()),
            json!({
                "amount": 2000, "currency": "usd", "confirm": true,
                "metadata": {"order_id": "6735", "note": "a b"},
                "items": [{"price": "price_1", "quantity": 2}, {"price": "price_2"}],
                "expand": ["customer", "invoice"],
                "tags": ["a", "b"],
                "ids[]": [7]
            })
        );
    }

    #[test]
    fn what_fits_no_type_stays_text_for_the_schema_to_refuse() {
        let value = read_urlencoded(b"amount=lots&currency=usd", &stripe());
        assert_eq!(value["amount"], "lots");
    }

    #[test]
    fn a_repeated_field_keeps_every_value_and_unknown_fields_stay_text() {
        let value = read_urlencoded(b"currency=usd&currency=eur&extra=1&expand=one", &stripe());
        assert_eq!(value["currency"], json!(["usd", "eur"]));
        assert_eq!(value["extra"], "1");
        assert_eq!(
            value["expand"],
            json!(["one"]),
            "an array field given once is still an array"
        );
    }

    #[test]
    fn a_field_name_nested_past_the_limit_is_taken_as_written() {
        let name = format!("a{}", "[x]".repeat(MAX_DEPTH + 1));
        let value = read_urlencoded(format!("{name}=1").as_bytes(), &stripe());
        assert_eq!(value[&name], "1");
    }
}
