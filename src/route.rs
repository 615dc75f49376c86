//! Which spec operation a request is: path normalisation and route matching.
//!
//! Both are plain functions over strings, so every decision is testable without a socket.
//! A request routes only when its path names an operation exactly; anything that could reach a
//! different upstream path than the one that was checked (dot segments, encoded slashes, empty
//! segments, control bytes, double encoding, `;` path parameters, overlong UTF-8 and look-alike
//! dots and slashes) is refused before matching. With unknown routes forwarded, a path that
//! matches nothing still passes every one of those checks before it goes upstream.

use std::sync::Arc;

use http::{HeaderValue, Method};

use crate::config::UnknownRoutes;
use crate::error::Error;
use crate::spec::{Operation, Spec};

/// The operation id of a request for a path the spec does not have, when such requests are
/// forwarded.
pub const UNSPECIFIED: &str = "(unspecified)";

/// The operation a request was matched to, stored in the request's extensions.
#[derive(Clone, Debug)]
pub struct Routed {
    /// The operation.
    pub operation: Arc<Operation>,
    /// The request path relative to the API base (`/connections`), to append to the upstream's
    /// base URL.
    pub upstream_path: Arc<str>,
    /// The spec has no such operation; it is forwarded because unknown routes are.
    pub unspecified: bool,
}

/// The spec's operations indexed by path template and method.
#[derive(Debug)]
pub struct RouteTable {
    base_path: String,
    router: matchit::Router<usize>,
    paths: Vec<PathEntry>,
    unknown: UnknownRoutes,
}

#[derive(Debug)]
struct PathEntry {
    operations: Vec<Arc<Operation>>,
    allow: HeaderValue,
}

/// A spec whose paths cannot form a route table (two templates that only differ in parameter
/// names, or a template matchit cannot express).
#[derive(Debug, thiserror::Error)]
#[error("path {template:?} cannot be routed: {reason}")]
pub struct RouteError {
    template: String,
    reason: String,
}

impl RouteTable {
    /// Builds the table for every operation of `spec`.
    pub fn new(spec: &Spec) -> Result<Self, RouteError> {
        let mut router = matchit::Router::new();
        let mut paths: Vec<PathEntry> = Vec::new();
        let mut index_of = std::collections::HashMap::new();
        for op in &spec.operations {
            let index = *index_of.entry(op.template.clone()).or_insert_with(|| {
                paths.push(PathEntry {
                    operations: Vec::new(),
                    allow: HeaderValue::from_static(""),
                });
                paths.len() - 1
            });
            if paths[index].operations.is_empty() {
                router
                    .insert(op.template.clone(), index)
                    .map_err(|e| RouteError {
                        template: op.template.clone(),
                        reason: e.to_string(),
                    })?;
            }
            paths[index].operations.push(op.clone());
        }
        for entry in &mut paths {
            let allow: Vec<&str> = entry
                .operations
                .iter()
                .map(|op| op.method.as_str())
                .collect();
            entry.allow =
                HeaderValue::from_str(&allow.join(", ")).expect("method names are tokens");
        }
        Ok(RouteTable {
            base_path: spec.base_path.clone(),
            router,
            paths,
            unknown: UnknownRoutes::Reject,
        })
    }

    /// Sets what happens to paths and methods the spec does not have.
    pub fn with_unknown_routes(mut self, unknown: UnknownRoutes) -> Self {
        self.unknown = unknown;
        self
    }

    /// The path the spec's server URL puts operations under (`/api/3`).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// Matches a request to an operation: under the base path (`/api/3/connections`) or bare
    /// (`/connections`).
    pub fn route(&self, method: &Method, raw_path: &str) -> Result<Routed, Error> {
        check_path(raw_path)?;
        let path = self.strip_base(raw_path);
        let refused = match self.router.at(path) {
            Err(_) => Error::RouteNotFound,
            Ok(matched) => {
                let entry = &self.paths[*matched.value];
                match entry.operations.iter().find(|op| op.method == method) {
                    Some(op) => {
                        return Ok(Routed {
                            operation: op.clone(),
                            upstream_path: Arc::from(path),
                            unspecified: false,
                        });
                    }
                    None => Error::MethodNotAllowed {
                        method: method.clone(),
                        allow: entry.allow.clone(),
                    },
                }
            }
        };
        match self.unknown {
            UnknownRoutes::Reject => Err(refused),
            UnknownRoutes::Forward => Ok(Routed {
                operation: Arc::new(Operation {
                    id: Arc::from(UNSPECIFIED),
                    method: method.clone(),
                    template: path.to_owned(),
                    body: None,
                    // A POST may create something upstream: it is audited like any create.
                    creates: method == Method::POST,
                    example: None,
                }),
                upstream_path: Arc::from(path),
                unspecified: true,
            }),
        }
    }

    fn strip_base<'a>(&self, path: &'a str) -> &'a str {
        if self.base_path.is_empty() {
            return path;
        }
        match path.strip_prefix(self.base_path.as_str()) {
            Some(rest) if rest.starts_with('/') => rest,
            _ => path,
        }
    }

    /// Every (method, template, operation) in the table, for `specgate routes`.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<Operation>> {
        self.paths.iter().flat_map(|p| p.operations.iter())
    }
}

/// Refuses a path that could mean something other than what it says.
///
/// Matching happens on the raw path, so a percent-encoded letter simply fails to match a
/// literal segment (404). What is refused here (400) are the forms that some server behind us
/// could decode into a different path than the one we checked.
pub fn check_path(path: &str) -> Result<(), Error> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(Error::BadTarget("the path must start with '/'"));
    }
    if bytes.iter().any(|b| b.is_ascii_control() || *b >= 0x80) {
        return Err(Error::BadTarget("control or non-ASCII bytes in the path"));
    }
    if bytes.contains(&b'\\') {
        return Err(Error::BadTarget("backslash in the path"));
    }
    for segment in path[1..].split('/') {
        if segment.is_empty() && path.len() > 1 {
            return Err(Error::BadTarget(
                "empty path segment ('//' or a trailing '/')",
            ));
        }
        if !segment.contains('%') {
            if is_dot_segment(segment) {
                return Err(Error::BadTarget("dot segment in the path"));
            }
            continue;
        }
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
        if !valid_percent_encoding(segment) {
            return Err(Error::BadTarget("malformed percent-encoding in the path"));
        }
        if decoded.contains(&b'%') {
            // `%252e` is `%2e` to us and `.` to a server that decodes twice.
            return Err(Error::BadTarget(
                "percent-encoded '%' (double encoding) in the path",
            ));
        }
        let Ok(text) = std::str::from_utf8(&decoded) else {
            // Overlong forms such as `%c0%ae` are '.' to lenient decoders.
            return Err(Error::BadTarget(
                "percent-encoding in the path that is not UTF-8",
            ));
        };
        if text.chars().any(|c| LOOK_ALIKES.contains(&c)) {
            return Err(Error::BadTarget(
                "a character some servers read as '.', '/' or '\\' in the path",
            ));
        }
        if decoded
            .iter()
            .any(|b| matches!(b, b'/' | b'\\') || b.is_ascii_control())
        {
            return Err(Error::BadTarget(
                "encoded slash, backslash or control byte in the path",
            ));
        }
        if is_dot_segment(text) {
            return Err(Error::BadTarget("dot segment in the path"));
        }
    }
    Ok(())
}

/// Characters that Unicode normalisation (NFKC) or lenient servers turn into `.`, `/` or `\`.
const LOOK_ALIKES: [char; 10] = [
    '\u{2024}', // one dot leader
    '\u{FE52}', // small full stop
    '\u{FF0E}', // fullwidth full stop
    '\u{2044}', // fraction slash
    '\u{2215}', // division slash
    '\u{FF0F}', // fullwidth solidus
    '\u{FE68}', // small reverse solidus
    '\u{FF3C}', // fullwidth reverse solidus
    '\u{29F5}', // reverse solidus operator
    '\u{2216}', // set minus
];

/// `.` or `..`, also with `;parameters` after it (`..;x`), which servlet containers and
/// some proxies strip before resolving dot segments.
fn is_dot_segment(segment: &str) -> bool {
    let before_params = segment.split(';').next().unwrap_or(segment);
    before_params == "." || before_params == ".."
}

fn valid_percent_encoding(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            match bytes.get(i + 1..i + 3) {
                Some([a, b]) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else {
            i += 1;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SpecSource;
    use http::StatusCode;

    fn table() -> RouteTable {
        RouteTable::new(&Spec::load(&SpecSource::default()).unwrap()).unwrap()
    }

    fn table_of(paths: serde_json::Value) -> RouteTable {
        let doc = serde_json::json!({"openapi": "3.1.0", "info": {"title": "t", "version": "1"},
            "servers": [{"url": "https://x.example/api/3"}], "paths": paths});
        RouteTable::new(&Spec::compile("t", doc).unwrap()).unwrap()
    }

    #[test]
    fn routes_under_the_base_path_and_bare() {
        let table = table();
        for path in ["/api/3/connections", "/connections"] {
            let routed = table.route(&Method::POST, path).unwrap();
            assert_eq!(&*routed.operation.id, "create-connection");
            assert_eq!(&*routed.upstream_path, "/connections");
        }
    }

    #[test]
    fn unknown_paths_are_not_found() {
        let table = table();
        for path in [
            "/",
            "/api/3",
            "/api/3/contacts",
            "/connections/1",
            "/api/30/connections",
            "/api/3connections",
        ] {
            let e = table.route(&Method::POST, path).unwrap_err();
            assert_eq!(e.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[test]
    fn another_method_is_not_allowed_with_allow() {
        let Error::MethodNotAllowed { allow, .. } = table()
            .route(&Method::GET, "/api/3/connections")
            .unwrap_err()
        else {
            panic!("expected 405");
        };
        assert_eq!(allow, "POST");
    }

    #[test]
    fn templates_select_operations_and_allow_lists_every_method() {
        let t = table_of(serde_json::json!({
            "/connections/{id}": {"get": {"operationId": "get"}, "delete": {"operationId": "del"}},
            "/connections": {"post": {"operationId": "create"}}
        }));
        assert_eq!(
            t.route(&Method::GET, "/api/3/connections/17")
                .unwrap()
                .operation
                .id,
            "get".into()
        );
        assert_eq!(
            &*t.route(&Method::DELETE, "/connections/a%20b")
                .unwrap()
                .upstream_path,
            "/connections/a%20b"
        );
        let Err(Error::MethodNotAllowed { allow, .. }) = t.route(&Method::PUT, "/connections/1")
        else {
            panic!("expected 405")
        };
        assert_eq!(allow, "GET, DELETE");
    }

    #[test]
    fn paths_that_could_route_around_the_spec_are_refused() {
        let table = table();
        for path in [
            "/api/3/../3/connections",
            "/api/3/./connections",
            "/api/3/%2e%2e/connections",
            "/api/3/%2E/connections",
            "/api/3/.%2E/connections",
            "/api%2f3/connections",
            "/api%2F3/connections",
            "/api/3%5cconnections",
            "/api\\3/connections",
            "/api/3//connections",
            "//connections",
            "/connections/",
            "/conn%00ections",
            "/conn\tections",
            "/conn%zzections",
            "/conn%4",
            "connections",
            "/api/3/..;/3/connections",
            "/api/3/.;x/connections",
            "/api/3/%2e%2e%3b/connections",
            "/api/3/%252e%252e/connections",
            "/api/3/%252fconnections",
            "/api/3/%c0%ae%c0%ae/connections",
            "/api/3/%ef%bc%8e%ef%bc%8e/connections",
            "/api/3%ef%bc%8fconnections",
            "/api/3/%E2%88%95connections",
            "/api/3/%ff/connections",
            "*",
            "",
        ] {
            let e = table.route(&Method::POST, path).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{path}: {e}");
        }
    }

    #[test]
    fn unknown_routes_forward_when_configured_and_are_marked() {
        let table = table().with_unknown_routes(UnknownRoutes::Forward);
        let routed = table.route(&Method::GET, "/api/3/contacts/7").unwrap();
        assert!(routed.unspecified);
        assert_eq!(&*routed.operation.id, UNSPECIFIED);
        assert_eq!(&*routed.upstream_path, "/contacts/7");
        assert!(!routed.operation.creates);
        let other_method = table.route(&Method::GET, "/connections").unwrap();
        assert!(other_method.unspecified);
        let post = table.route(&Method::POST, "/api/3/contacts").unwrap();
        assert!(post.operation.creates, "an unknown POST is audited");
        let known = table.route(&Method::POST, "/connections").unwrap();
        assert!(!known.unspecified);
        assert_eq!(&*known.operation.id, "create-connection");
        // The path checks apply to forwarded paths all the same.
        let e = table.route(&Method::GET, "/api/3/../admin").unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn ordinary_encodings_still_route() {
        let t = table_of(serde_json::json!({
            "/contacts/{id}": {"get": {"operationId": "get"}}
        }));
        for path in [
            "/contacts/a%20b",
            "/contacts/caf%C3%A9",
            "/contacts/a.b",
            "/contacts/...",
            "/contacts/a;b",
        ] {
            assert!(t.route(&Method::GET, path).is_ok(), "{path}");
        }
    }

    #[test]
    fn an_encoded_letter_does_not_match_a_literal_segment() {
        let e = table()
            .route(&Method::POST, "/api/3/conn%65ctions")
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
    }
}
