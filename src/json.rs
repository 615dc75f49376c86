//! JSON that the upstream cannot read differently from us.
//!
//! serde_json keeps the last of two equal keys; other parsers keep the first, or reject, or
//! merge. A body validated as one object and read upstream as another is a way around the
//! schema (`{"name":"a","name":"b"}`), so an object with the same key twice — compared after
//! unescaping, so `"na\u006de"` is `"name"` — is refused. Nesting is bounded before parsing by
//! a single pass that counts brackets without recursing, so a body of a million `[` costs one
//! scan and no stack.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::Error;

/// The default nesting limit: far deeper than any API body, far shallower than any stack.
pub const DEFAULT_MAX_DEPTH: usize = 32;

/// The largest nesting limit that can be configured (serde_json's own recursion limit).
pub const MAX_MAX_DEPTH: usize = 128;

/// Longest key quoted back in an error.
const MAX_KEY_SHOWN: usize = 64;

/// Parses `bytes` as one JSON value: refused if it nests deeper than `max_depth` (checked
/// first, without recursion), is not JSON (with serde_json's message), or has an object with a
/// repeated key.
pub fn parse(bytes: &[u8], max_depth: usize) -> Result<Value, Error> {
    check_depth(bytes, max_depth)?;
    let mut ctx = Ctx::default();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = ValueSeed { ctx: &mut ctx }
        .deserialize(&mut de)
        .and_then(|value| de.end().map(|()| value));
    match (parsed, ctx.duplicate) {
        (_, Some((pointer, key))) => Err(Error::DuplicateKey { pointer, key }),
        (Ok(value), None) => Ok(value),
        (Err(e), None) => Err(Error::MalformedJson(e.to_string())),
    }
}

/// Refuses a document whose arrays and objects nest deeper than `max_depth`. Brackets inside
/// strings do not count; anything else malformed is left for the parser to name.
pub fn check_depth(bytes: &[u8], max_depth: usize) -> Result<(), Error> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return Err(Error::JsonTooDeep { limit: max_depth });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[derive(Default)]
struct Ctx {
    /// Reference tokens of the value being read, for the pointer in an error.
    path: Vec<String>,
    /// The first repeated key found: (pointer of its object, key).
    duplicate: Option<(String, String)>,
}

impl Ctx {
    fn pointer(&self) -> String {
        let mut pointer = String::new();
        for token in &self.path {
            pointer.push('/');
            pointer.push_str(&token.replace('~', "~0").replace('/', "~1"));
        }
        pointer
    }
}

struct ValueSeed<'a> {
    ctx: &'a mut Ctx,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor { ctx: self.ctx })
    }
}

struct ValueVisitor<'a> {
    ctx: &'a mut Ctx,
}

impl<'de> Visitor<'de> for ValueVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            self.ctx.path.push(items.len().to_string());
            let next = seq.next_element_seed(ValueSeed {
                ctx: &mut *self.ctx,
            })?;
            self.ctx.path.pop();
            match next {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                let shown: String = key.chars().take(MAX_KEY_SHOWN).collect();
                self.ctx.duplicate = Some((self.ctx.pointer(), shown));
                return Err(de::Error::custom("duplicate key"));
            }
            self.ctx.path.push(key.clone());
            let value = access.next_value_seed(ValueSeed {
                ctx: &mut *self.ctx,
            })?;
            self.ctx.path.pop();
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_json_parses_as_serde_json_would() {
        let text = r#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":"\u00e9\n"}"#;
        assert_eq!(
            parse(text.as_bytes(), DEFAULT_MAX_DEPTH).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        assert_eq!(parse(b" 7 ", 0).unwrap(), json!(7));
    }

    #[test]
    fn a_repeated_key_is_refused_with_where_it_is() {
        let e = parse(br#"{"name":"a","name":"b"}"#, 8).unwrap_err();
        let Error::DuplicateKey { pointer, key } = e else {
            panic!("{e:?}")
        };
        assert_eq!((pointer.as_str(), key.as_str()), ("", "name"));

        let e = parse(br#"{"connection":{"a/b":[{"x":1,"x":2}]}}"#, 8).unwrap_err();
        let Error::DuplicateKey { pointer, .. } = e else {
            panic!("{e:?}")
        };
        assert_eq!(pointer, "/connection/a~1b/0");
    }

    #[test]
    fn keys_are_compared_after_unescaping() {
        let e = parse(br#"{"name":"a","na\u006de":"b"}"#, 8).unwrap_err();
        assert!(matches!(e, Error::DuplicateKey { .. }), "{e:?}");
    }

    #[test]
    fn the_same_key_in_different_objects_is_fine() {
        parse(br#"{"a":{"k":1},"b":{"k":2},"c":[{"k":1},{"k":2}]}"#, 8).unwrap();
    }

    #[test]
    fn nesting_past_the_limit_is_refused_before_parsing() {
        assert!(parse(b"[[[1]]]", 3).is_ok());
        assert!(matches!(
            parse(b"[[[[1]]]]", 3),
            Err(Error::JsonTooDeep { limit: 3 })
        ));
        // Far deeper than any stack would survive if this recursed; refused in one pass.
        let deep = "[".repeat(10_000_000);
        assert!(matches!(
            parse(deep.as_bytes(), DEFAULT_MAX_DEPTH),
            Err(Error::JsonTooDeep { .. })
        ));
        // Brackets inside strings, escaped quotes included, do not count.
        parse(br#"{"a":"[[[[[\"[[[["}"#, 1).unwrap();
    }

    #[test]
    fn malformed_json_and_trailing_bytes_are_malformed() {
        for bad in [
            &b"{"[..],
            b"{} {}",
            b"{\"a\":1,}",
            b"\xef\xbb\xbf{}",
            b"\"\\ud800\"",
            b"1e400",
            b"NaN",
        ] {
            let e = parse(bad, 8).unwrap_err();
            assert!(matches!(e, Error::MalformedJson(_)), "{bad:?}: {e:?}");
        }
    }
}
