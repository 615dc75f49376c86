//! Path, query, header and cookie parameters: read as their `style` and `explode` say into
//! the JSON value their schema means, then checked against it.
//!
//! A required parameter that is missing, a value the schema refuses (`?state=bogus`,
//! `per_page=lots`) and a `content` parameter that is not JSON are violations naming the
//! parameter (`source.parameter`). A query parameter the document does not declare is allowed:
//! vendors add them before they document them.
//!
//! Reading follows OpenAPI 3's serialisation table: `form` (`a=1&a=2`, or `a=1,2` without
//! explode), `spaceDelimited`, `pipeDelimited`, `deepObject` (`a[x]=1`) in the query; `simple`
//! (`1,2`; objects `x,1,y,2` or, exploded, `x=1,y=2`) in the path and headers; `label` (`.1.2`)
//! and `matrix` (`;a=1;a=2`) in the path; `form` in cookies.

use std::borrow::Cow;

use http::HeaderMap;
use http::header::COOKIE;
use serde_json::{Map, Value};

use crate::error::{Error, Source, Violation};
use crate::spec::{Location, Operation, Parameter, Shape, Style, Subject, any_shape};

/// Checks the request's parameters against `operation`'s. `path` is the request path the
/// operation's template matched (under the base path), still percent-encoded.
pub fn check(
    operation: &Operation,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), Error> {
    if operation.parameters.is_empty() {
        return Ok(());
    }
    let mut request = Request {
        path,
        query,
        headers,
        template: operation,
        query_pairs: None,
        path_values: None,
    };
    let mut violations = Vec::new();
    for parameter in &operation.parameters {
        let location = parameter.location.as_str();
        let subject = Subject::Parameter {
            location,
            name: &parameter.name,
        };
        let value = match request.value(parameter) {
            Some(value) => value,
            None if parameter.required => {
                violations.push(Violation {
                    title: format!(
                        "{location} parameter '{}': missing, and it is required",
                        parameter.name
                    ),
                    code: "required",
                    source: Source::parameter(&parameter.name),
                });
                continue;
            }
            None => continue,
        };
        let value = match value {
            Text::Json(text) => match serde_json::from_str(&text) {
                Ok(value) => value,
                Err(error) => {
                    violations.push(Violation {
                        title: format!(
                            "{location} parameter '{}': not valid JSON ({error})",
                            parameter.name
                        ),
                        code: "json",
                        source: Source::parameter(&parameter.name),
                    });
                    continue;
                }
            },
            Text::Read(value) => value,
        };
        if let Some(schema) = &parameter.schema
            && let Err(found) = schema.check_as(value, subject)
        {
            violations.extend(found);
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::ParameterViolations {
            operation_id: operation.id.to_string(),
            violations,
        })
    }
}

/// A parameter's value: read by its shape, or JSON text still to parse.
enum Text {
    Read(Value),
    Json(String),
}

/// The parts of a request parameters are read from, each parsed once when first needed.
struct Request<'a> {
    path: &'a str,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
    template: &'a Operation,
    query_pairs: Option<Vec<(Cow<'a, str>, Cow<'a, str>)>>,
    path_values: Option<Vec<(&'a str, Cow<'a, str>)>>,
}

impl<'a> Request<'a> {
    fn value(&mut self, parameter: &Parameter) -> Option<Text> {
        let shape = parameter.shape.clone().unwrap_or_else(any_shape);
        let text = |text: String| {
            if parameter.json {
                Text::Json(text)
            } else {
                Text::Read(read_simple(&text, &shape, parameter.explode))
            }
        };
        match parameter.location {
            Location::Query => {
                let pairs = self.query_pairs();
                if parameter.json {
                    let (_, value) = pairs.iter().find(|(n, _)| *n == parameter.name)?;
                    return Some(Text::Json(value.to_string()));
                }
                read_query(pairs, parameter, &shape).map(Text::Read)
            }
            Location::Path => {
                let raw = self
                    .path_values()
                    .iter()
                    .find(|(name, _)| *name == parameter.name)?
                    .1
                    .clone();
                let raw = match parameter.style {
                    Style::Label => raw.strip_prefix('.').unwrap_or(&raw).to_owned(),
                    Style::Matrix => {
                        let prefix = format!(";{}=", parameter.name);
                        raw.strip_prefix(&prefix).unwrap_or(&raw).to_owned()
                    }
                    _ => raw.into_owned(),
                };
                if parameter.json {
                    return Some(Text::Json(raw));
                }
                let value = match parameter.style {
                    Style::Label if parameter.explode && shape.is_array() => {
                        read_items(raw.split('.'), &shape)
                    }
                    Style::Matrix if parameter.explode && shape.is_array() => {
                        let separator = format!(";{}=", parameter.name);
                        read_items(raw.split(separator.as_str()), &shape)
                    }
                    _ => read_simple(&raw, &shape, parameter.explode),
                };
                Some(Text::Read(value))
            }
            Location::Header => {
                let values: Vec<&str> = self
                    .headers
                    .get_all(parameter.name.as_str())
                    .iter()
                    .map(|v| v.to_str().unwrap_or(""))
                    .collect();
                (!values.is_empty()).then(|| text(values.join(",")))
            }
            Location::Cookie => {
                let value = self
                    .headers
                    .get_all(COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .filter_map(|pair| pair.trim().split_once('='))
                    .find(|(name, _)| *name == parameter.name)?
                    .1;
                Some(text(value.to_owned()))
            }
        }
    }

    fn query_pairs(&mut self) -> &[(Cow<'a, str>, Cow<'a, str>)] {
        let query = self.query;
        self.query_pairs.get_or_insert_with(|| {
            query
                .map(|q| form_urlencoded::parse(q.as_bytes()).collect())
                .unwrap_or_default()
        })
    }

    fn path_values(&mut self) -> &[(&'a str, Cow<'a, str>)] {
        let (path, operation) = (self.path, self.template);
        self.path_values.get_or_insert_with(|| {
            let values = operation.path.captures(path).unwrap_or_default();
            operation
                .path
                .param_names()
                .iter()
                .map(String::as_str)
                .zip(
                    values
                        .into_iter()
                        .map(|raw| percent_encoding::percent_decode_str(raw).decode_utf8_lossy()),
                )
                .collect()
        })
    }
}

/// A query parameter's value, if the query has it.
fn read_query(
    pairs: &[(Cow<'_, str>, Cow<'_, str>)],
    parameter: &Parameter,
    shape: &Shape,
) -> Option<Value> {
    let name = parameter.name.as_str();
    match parameter.style {
        Style::DeepObject => {
            let mut object = Map::new();
            for (field, text) in pairs {
                let key = field
                    .strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('['))
                    .and_then(|rest| rest.strip_suffix(']'));
                if let Some(key) = key {
                    let property = shape.property(key).cloned().unwrap_or_else(any_shape);
                    object.insert(key.to_owned(), property.read(text));
                }
            }
            (!object.is_empty()).then_some(Value::Object(object))
        }
        Style::SpaceDelimited | Style::PipeDelimited if !parameter.explode => {
            let delimiter = if parameter.style == Style::SpaceDelimited {
                ' '
            } else {
                '|'
            };
            let (_, text) = pairs.iter().find(|(field, _)| field == name)?;
            Some(read_items(text.split(delimiter), shape))
        }
        _ if parameter.explode && shape.is_object() => {
            // Each property is a field of its own: `?lat=1&lon=2` for `point`.
            let mut object = Map::new();
            for (field, text) in pairs {
                if let Some(property) = shape.properties.get(field.as_ref()) {
                    object.insert(field.to_string(), property.read(text));
                }
            }
            (!object.is_empty()).then_some(Value::Object(object))
        }
        _ => {
            let texts: Vec<&str> = pairs
                .iter()
                .filter(|(field, _)| field == name)
                .map(|(_, text)| text.as_ref())
                .collect();
            match texts.as_slice() {
                [] => None,
                [one] if !parameter.explode => Some(read_simple(one, shape, false)),
                _ if shape.is_array() => Some(read_items(texts.into_iter(), shape)),
                [one] => Some(shape.read(one)),
                // The same scalar given twice: the upstream might read either, so both are
                // checked, and the schema says an array is not what it takes.
                many => Some(Value::Array(many.iter().map(|t| shape.read(t)).collect())),
            }
        }
    }
}

/// `simple` style (and the value of one `form` field without explode): `1,2` for an array;
/// `x,1,y,2` for an object, or `x=1,y=2` exploded; the text itself otherwise.
fn read_simple(text: &str, shape: &Shape, explode: bool) -> Value {
    if shape.is_array() {
        return read_items(text.split(','), shape);
    }
    if !shape.is_object() {
        return shape.read(text);
    }
    let mut object = Map::new();
    let mut put = |key: &str, value: &str| {
        let property = shape.property(key).cloned().unwrap_or_else(any_shape);
        object.insert(key.to_owned(), property.read(value));
    };
    if explode {
        for pair in text.split(',') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            put(key, value);
        }
    } else {
        let parts: Vec<&str> = text.split(',').collect();
        for pair in parts.chunks(2) {
            put(pair[0], pair.get(1).copied().unwrap_or(""));
        }
    }
    Value::Object(object)
}

/// Each text read as an item of the array `shape`.
fn read_items<'t>(texts: impl Iterator<Item = &'t str>, shape: &Shape) -> Value {
    let items = shape.items.clone().unwrap_or_else(any_shape);
    Value::Array(texts.map(|text| items.read(text)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::RouteTable;
    use crate::spec::Spec;
    use http::{HeaderValue, Method};
    use serde_json::json;

    fn spec() -> Spec {
        Spec::compile(
            "t",
            json!({"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": {
                "/repos/{owner}/{repo}/issues": {
                    "parameters": [
                        {"name": "owner", "in": "path", "required": true, "schema": {"type": "string"}},
                        {"name": "repo", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 5}}
                    ],
                    "get": {"operationId": "list-issues", "parameters": [
                        {"name": "state", "in": "query", "schema": {"type": "string", "enum": ["open", "closed", "all"]}},
                        {"name": "per_page", "in": "query", "schema": {"type": "integer", "maximum": 100}},
                        {"name": "labels", "in": "query", "explode": false, "schema": {"type": "array", "items": {"type": "string"}}},
                        {"name": "ids", "in": "query", "schema": {"type": "array", "items": {"type": "integer"}}},
                        {"name": "since", "in": "query", "required": true, "schema": {"type": "string"}},
                        {"name": "filter", "in": "query", "style": "deepObject", "schema": {"type": "object",
                            "properties": {"min": {"type": "integer"}}, "additionalProperties": false}},
                        {"name": "X-Page", "in": "header", "schema": {"type": "integer"}},
                        {"name": "session", "in": "cookie", "schema": {"type": "string", "minLength": 3}},
                        {"name": "where", "in": "query", "content": {"application/json": {"schema": {"type": "object", "required": ["a"]}}}},
                        {"name": "Accept", "in": "header", "required": true, "schema": {"type": "integer"}}
                    ]}
                },
                "/points/{lat},{lon}": {"get": {"operationId": "point", "parameters": [
                    {"name": "lat", "in": "path", "required": true, "schema": {"type": "number", "minimum": -90, "maximum": 90}},
                    {"name": "lon", "in": "path", "required": true, "schema": {"type": "number"}}
                ]}}
            }}),
        )
        .unwrap()
    }

    fn check_request(path: &str, headers: &[(&str, &str)]) -> Result<(), Vec<Violation>> {
        let spec = spec();
        let table = RouteTable::new(&spec);
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let routed = table.route(&Method::GET, path).unwrap();
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::try_from(*name).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let query = (!query.is_empty()).then_some(query);
        match check(&routed.operation, &routed.operation_path, query, &map) {
            Ok(()) => Ok(()),
            Err(Error::ParameterViolations { violations, .. }) => Err(violations),
            Err(other) => panic!("{other}"),
        }
    }

    fn named(violations: &[Violation]) -> Vec<String> {
        violations
            .iter()
            .map(|v| match &v.source {
                Source::Parameter { parameter } => format!("{parameter}:{}", v.code),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn valid_parameters_of_every_kind_pass() {
        check_request(
            "/repos/o/r/issues?since=2020&state=open&per_page=30&labels=a,b&ids=1&ids=2&filter[min]=3&where=%7B%22a%22%3A1%7D",
            &[("x-page", "2"), ("cookie", "a=b; session=abcd")],
        )
        .unwrap();
        check_request("/points/51.5,-0.12", &[]).unwrap();
    }

    #[test]
    fn each_violation_names_its_parameter() {
        let v = check_request(
            "/repos/o/toolong/issues?state=bogus&per_page=lots&ids=1&ids=x&filter[max]=1&where=nope",
            &[("x-page", "first"), ("cookie", "session=ab")],
        )
        .unwrap_err();
        assert_eq!(
            named(&v),
            [
                "repo:max_length",
                "state:enum",
                "per_page:type",
                "ids:type",
                "since:required",
                "filter:unexpected_property",
                "X-Page:type",
                "session:min_length",
                "where:json"
            ]
        );
        assert_eq!(
            v[1].title,
            "query parameter 'state': must be one of [\"open\",\"closed\",\"all\"]"
        );
        assert_eq!(
            v[4].title,
            "query parameter 'since': missing, and it is required"
        );
        assert_eq!(
            v[3].title,
            "query parameter 'ids' at /1: expected integer, got string"
        );
    }

    #[test]
    fn several_parameters_in_one_path_segment_are_each_checked() {
        let v = check_request("/points/95,-0.12", &[]).unwrap_err();
        assert_eq!(named(&v), ["lat:maximum"]);
    }

    #[test]
    fn unknown_query_parameters_and_ignored_headers_are_allowed() {
        // `Accept` is HTTP's own: a definition of it is ignored, as OpenAPI says.
        check_request(
            "/repos/o/r/issues?since=1&utm_source=x",
            &[("accept", "text/html")],
        )
        .unwrap();
    }
}
