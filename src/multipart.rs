//! `multipart/form-data` bodies (RFC 7578) read as form fields, so they are validated like
//! forms.
//!
//! Each part is a field named by its `Content-Disposition`. A text part is read as the type the
//! schema gives its field ([`crate::form`]); a JSON part (`Content-Type: application/json`) is
//! parsed; a file part (one with a `filename`) is checked for its presence and, where the
//! media type's `encoding` lists content types for the field, for its own, and stands in the
//! value checked as an empty string (its bytes are not JSON). The body has already been read
//! behind the body limit; the bytes forwarded are the client's own.

use memchr::memmem;
use serde_json::Value;

use crate::error::{Error, Source, Violation};
use crate::form::Form;
use crate::spec::{Fields, is_json, media_essence};

/// Reads a multipart body with `boundary` into the JSON its fields mean, with the violations
/// its file parts make (a content type the field does not take).
pub fn read(
    body: &[u8],
    boundary: &str,
    fields: &Fields,
) -> Result<(Value, Vec<Violation>), Error> {
    let mut form = Form::new(fields);
    let mut wrong_type = Vec::new();
    for part in parts(body, boundary)? {
        let disposition = part
            .header("content-disposition")
            .ok_or(malformed("a part without Content-Disposition"))?;
        let name = parameter(disposition, "name").ok_or(malformed("a part without a name"))?;
        let content_type = part.header("content-type").map(media_essence);
        if parameter(disposition, "filename").is_some() {
            let allowed = fields
                .encoding
                .get(name.as_str())
                .map(|e| e.content_types.as_slice())
                .unwrap_or_default();
            let declared = content_type
                .as_deref()
                .unwrap_or("application/octet-stream");
            if !allowed.is_empty() && !allowed.iter().any(|a| admits(a, declared)) {
                wrong_type.push(Violation {
                    title: format!(
                        "/{name}: a file of type {declared}; this field takes {}",
                        allowed.join(", ")
                    ),
                    code: "content_type",
                    source: Source::body(crate::spec::pointer_push("", &name)),
                });
            }
            form.add_value(&name, Value::String(String::new()));
            continue;
        }
        if content_type.as_deref().is_some_and(is_json) {
            let value = serde_json::from_slice(part.body)
                .map_err(|e| Error::MalformedJson(format!("part {name:?}: {e}")))?;
            form.add_value(&name, value);
            continue;
        }
        let text = std::str::from_utf8(part.body)
            .map_err(|_| malformed("a text part that is not UTF-8"))?;
        form.add(&name, text);
    }
    Ok((form.into_value(), wrong_type))
}

fn malformed(why: &'static str) -> Error {
    Error::MalformedMultipart(why)
}

/// Whether a content-type range (`image/*`) admits `essence`.
fn admits(range: &str, essence: &str) -> bool {
    match range.split_once('/') {
        Some(("*", "*")) => true,
        Some((kind, "*")) => essence.split_once('/').is_some_and(|(k, _)| k == kind),
        _ => range == essence,
    }
}

/// One part: its header lines and its bytes.
struct Part<'a> {
    headers: Vec<(&'a str, &'a str)>,
    body: &'a [u8],
}

impl Part<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// The parts of a body, split at `--boundary` delimiter lines.
fn parts<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, Error> {
    let delimiter = format!("--{boundary}");
    let finder = memmem::Finder::new(delimiter.as_bytes());
    // Every delimiter but the first is preceded by CRLF, which belongs to it.
    let next = format!("\r\n--{boundary}");
    let next = memmem::Finder::new(next.as_bytes());
    let start = finder
        .find(body)
        .ok_or(malformed("no boundary in the body"))?;
    let mut rest = &body[start + delimiter.len()..];
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or(malformed("a boundary not followed by a line break"))?;
        let end = next
            .find(rest)
            .ok_or(malformed("a part without a closing boundary"))?;
        parts.push(part(&rest[..end])?);
        rest = &rest[end + next.needle().len()..];
    }
}

/// A part's headers (up to the blank line) and body.
fn part(bytes: &[u8]) -> Result<Part<'_>, Error> {
    let split = memmem::find(bytes, b"\r\n\r\n");
    let (head, body) = match split {
        Some(at) => (&bytes[..at], &bytes[at + 4..]),
        // No headers at all: the part starts with the blank line.
        None if bytes.starts_with(b"\r\n") => (&bytes[..0], &bytes[2..]),
        None => return Err(malformed("a part whose headers do not end")),
    };
    let head =
        std::str::from_utf8(head).map_err(|_| malformed("part headers that are not UTF-8"))?;
    let headers = head
        .split("\r\n")
        .filter(|line| !line.is_empty())
        .map(|line| {
            line.split_once(':')
                .map(|(n, v)| (n.trim(), v.trim()))
                .ok_or(malformed("a part header without a colon"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Part { headers, body })
}

/// A parameter of a `Content-Disposition` value (`name="a"`), unquoted.
fn parameter(value: &str, name: &str) -> Option<String> {
    let mut rest = value;
    while let Some(semicolon) = rest.find(';') {
        rest = rest[semicolon + 1..].trim_start();
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let (text, remaining) = match after.strip_prefix('"') {
            Some(quoted) => {
                // A quoted string: `\"` is a quote, and the string ends at the next bare `"`.
                let mut text = String::new();
                let mut chars = quoted.char_indices();
                let mut end = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, escaped)) = chars.next() {
                                text.push(escaped);
                            }
                        }
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        c => text.push(c),
                    }
                }
                (text, &quoted[end..])
            }
            None => {
                let end = after.find(';').unwrap_or(after.len());
                (after[..end].trim().to_owned(), &after[end..])
            }
        };
        if key.trim().eq_ignore_ascii_case(name) {
            return Some(text);
        }
        rest = remaining;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Encoding, Shape, Types};
    use serde_json::json;
    use std::collections::HashMap;
    use std::sync::Arc;

    fn fields(content_types: &[&str]) -> Fields {
        let amount = Arc::new(Shape {
            types: Types::INTEGER,
            ..Shape::default()
        });
        let mut encoding = HashMap::new();
        encoding.insert(
            "file".to_owned(),
            Encoding {
                content_types: content_types.iter().map(|s| s.to_string()).collect(),
                ..Encoding::default()
            },
        );
        Fields {
            shape: Arc::new(Shape {
                types: Types::OBJECT,
                properties: [("amount".to_owned(), amount)].into_iter().collect(),
                ..Shape::default()
            }),
            encoding,
        }
    }

    const BODY: &[u8] = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"amount\"\r\n\r\n2000\r\n--XyZ\r\nContent-Disposition: form-data; name=\"meta\"\r\nContent-Type: application/json\r\n\r\n{\"a\": [1]}\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a \\\"b\\\".png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x00\xff\r\n--XyZ--\r\nepilogue";

    #[test]
    fn parts_are_read_as_the_fields_they_are() {
        let (value, violations) = read(BODY, "XyZ", &fields(&["image/*"])).unwrap();
        assert_eq!(
            value,
            json!({"amount": 2000, "meta": {"a": [1]}, "file": ""})
        );
        assert!(violations.is_empty());
        assert_eq!(
            parameter(
                "form-data; name=\"file\"; filename=\"a \\\"b\\\".png\"",
                "filename"
            ),
            Some("a \"b\".png".to_owned())
        );
    }

    #[test]
    fn a_file_of_a_type_the_field_does_not_take_is_a_violation() {
        let (_, violations) = read(BODY, "XyZ", &fields(&["application/pdf"])).unwrap();
        assert_eq!(violations[0].source, Source::body("/file"));
        assert_eq!(violations[0].code, "content_type");
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for body in [
            &b"no boundary here"[..],
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end",
            b"--XyZ\r\nX: y\r\n\r\nv\r\n--XyZ--",
            b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nv\r\n--XyZ--",
        ] {
            assert!(
                matches!(
                    read(body, "XyZ", &fields(&[])),
                    Err(Error::MalformedMultipart(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
