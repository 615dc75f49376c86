//! Which spec operation a request is: path normalisation and route matching.
//!
//! Both are plain functions over strings, so every decision is testable without a socket.
//! A request routes only when its path names an operation exactly; anything that could reach a
//! different upstream path than the one that was checked (dot segments, encoded slashes, empty
//! segments, control bytes, double encoding, `;` path parameters, overlong UTF-8 and look-alike
//! dots and slashes) is refused before matching. With unknown routes forwarded, a path that
//! matches nothing still passes every one of those checks before it goes upstream.

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::config::{TrailingSlash, UnknownRoutes};
use crate::error::Error;
use crate::router::{Router, Template};
use crate::scheme::Scheme;
use crate::spec::{Operation, PathOperations, Spec, Variant};

/// The operation id of a request for a path the spec does not have, when such requests are
/// forwarded.
pub const UNSPECIFIED: &str = "(unspecified)";

/// The operation a request was matched to, stored in the request's extensions.
#[derive(Clone, Debug)]
pub struct Routed {
    /// The operation.
    pub operation: Arc<Operation>,
    /// Every operation the method and path could be, in document order; `operation` is the
    /// first. More than one only where path keys differ by a `#fragment` or `?query`: the
    /// request is valid when it is valid for one of them, and that one replaces `operation`.
    pub candidates: Arc<[Arc<Operation>]>,
    /// The request path relative to the API base (`/connections`), to append to the upstream's
    /// base URL: exactly as the client sent it.
    pub upstream_path: Arc<str>,
    /// The path the operation's template matched: `upstream_path`, or it without the one
    /// trailing '/' the client added (`/connections/`). Path parameters are read from it.
    pub operation_path: Arc<str>,
    /// The spec has no such operation; it is forwarded because unknown routes are.
    pub unspecified: bool,
}

impl Routed {
    /// The same route, decided for `operation` (one of the candidates).
    pub fn chosen(&self, operation: &Arc<Operation>) -> Routed {
        Routed {
            operation: operation.clone(),
            candidates: Arc::from([operation.clone()]),
            upstream_path: self.upstream_path.clone(),
            operation_path: self.operation_path.clone(),
            unspecified: self.unspecified,
        }
    }
}

/// Which of the operations that share a path and method the request can be, by what it
/// carries.
///
/// A path key's `?query` variant (`?Action=CreateUser`) is met by that query parameter, given
/// once with that value; a `#fragment` variant with a value (`#X-Amz-Target=Svc.Run`) by that
/// header, given once with that value. When any operation's variant is met, those are the
/// operations the request can be; otherwise only those whose variant names no value (none, or
/// a bare label like Box's `#add_shared_link`, which the upstream cannot tell apart either).
/// An operation whose variant names a value the request does not carry is never one of them:
/// its body must not decide for it. A choosing parameter given twice is refused, since the
/// upstream might read the other one.
pub fn candidates(
    all: &[Arc<Operation>],
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Arc<[Arc<Operation>]>, Error> {
    let query: Vec<(Cow<'_, str>, Cow<'_, str>)> = query
        .map(|q| form_urlencoded::parse(q.as_bytes()).collect())
        .unwrap_or_default();
    let given = |variant: &Variant, name: &str| -> Result<Vec<String>, Error> {
        let values: Vec<String> = if variant.text.starts_with('?') {
            query
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.to_string())
                .collect()
        } else {
            HeaderName::try_from(name)
                .ok()
                .map(|h| headers.get_all(h).iter())
                .into_iter()
                .flatten()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect()
        };
        match values.len() {
            0 | 1 => Ok(values),
            _ => Err(Error::ChoosingParameterRepeated {
                name: name.to_owned(),
            }),
        }
    };
    let mut met = Vec::new();
    let mut unnamed = Vec::new();
    for op in all {
        let Some(variant) = &op.variant else {
            unnamed.push(op.clone());
            continue;
        };
        let mut names_a_value = false;
        let mut all_met = true;
        for (name, wanted) in &variant.params {
            let values = given(variant, name)?;
            match wanted {
                Some(wanted) => {
                    names_a_value = true;
                    all_met &= values.first() == Some(wanted);
                }
                // `?foo` asks for the parameter; a `#label` names no value to check.
                None if variant.text.starts_with('?') => all_met &= !values.is_empty(),
                None => {}
            }
        }
        match (names_a_value, all_met) {
            (true, true) => met.push(op.clone()),
            (false, true) => unnamed.push(op.clone()),
            (_, false) => {}
        }
    }
    let chosen = if met.is_empty() { unnamed } else { met };
    if chosen.is_empty() {
        let told_apart_by = all
            .iter()
            .filter_map(|op| op.variant.as_ref().map(|v| v.text.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Error::OperationNotNamed { told_apart_by });
    }
    Ok(Arc::from(chosen))
}

/// The spec's operations indexed by path template and method.
#[derive(Debug)]
pub struct RouteTable {
    base_path: String,
    paths: Arc<Router<PathOperations>>,
    unknown: UnknownRoutes,
    trailing_slash: TrailingSlash,
    unknown_credential: Option<Arc<[Scheme]>>,
}

impl RouteTable {
    /// The table of every operation of `spec`.
    pub fn new(spec: &Spec) -> Self {
        RouteTable {
            base_path: spec.base_path.clone(),
            paths: spec.paths.clone(),
            unknown: UnknownRoutes::Reject,
            trailing_slash: TrailingSlash::Match,
            unknown_credential: spec.unknown_credential.clone(),
        }
    }

    /// Sets what happens to paths and methods the spec does not have.
    pub fn with_unknown_routes(mut self, unknown: UnknownRoutes) -> Self {
        self.unknown = unknown;
        self
    }

    /// Sets whether a path the client ended with one extra '/' is the operation without it.
    pub fn with_trailing_slash(mut self, trailing_slash: TrailingSlash) -> Self {
        self.trailing_slash = trailing_slash;
        self
    }

    /// The path the spec's server URL puts operations under (`/api/3`).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// Matches a request to an operation: under the base path (`/api/3/connections`) or bare
    /// (`/connections`). Of the templates that match, the most specific one that has the
    /// method wins (see [`crate::router`]). With trailing slashes matched, a path that is
    /// no operation as sent but is one without its last '/' (`/connections/`, as many client
    /// libraries build URLs) is that operation, still forwarded as sent.
    pub fn route(&self, method: &Method, raw_path: &str) -> Result<Routed, Error> {
        check_path(raw_path)?;
        let path = self.strip_base(raw_path);
        if let Some(routed) = self.operation(method, path, path) {
            return Ok(routed);
        }
        let mut matches = self.paths.matches(path);
        // Only a path the document has no template for (for any method) is read without its
        // trailing '/': where the document writes `/x/` itself, that is another resource.
        if matches.is_empty()
            && self.trailing_slash == TrailingSlash::Match
            && let Some(trimmed) = path.strip_suffix('/').filter(|t| !t.is_empty())
        {
            if let Some(routed) = self.operation(method, trimmed, path) {
                return Ok(routed);
            }
            // `GET /connections/` where only POST is: 405 with `Allow`, as without the '/'.
            matches = self.paths.matches(trimmed);
        }
        if let Some(why) = self.hides_an_operation(method, path) {
            return Err(Error::BadTarget(why));
        }
        let refused = match matches.as_slice() {
            [] => Error::RouteNotFound,
            [only] => Error::MethodNotAllowed {
                method: method.clone(),
                allow: only.allow.clone(),
            },
            several => {
                let mut allow: Vec<&str> = Vec::new();
                for (m, _) in several.iter().flat_map(|entry| &entry.methods) {
                    if !allow.contains(&m.as_str()) {
                        allow.push(m.as_str());
                    }
                }
                Error::MethodNotAllowed {
                    method: method.clone(),
                    allow: HeaderValue::from_str(&allow.join(", "))
                        .expect("method names are tokens"),
                }
            }
        };
        match self.unknown {
            UnknownRoutes::Reject => Err(refused),
            UnknownRoutes::Forward => {
                let operation = Arc::new(Operation {
                    id: Arc::from(UNSPECIFIED),
                    method: method.clone(),
                    template: path.to_owned(),
                    path: Template::parse(path),
                    variant: None,
                    pointer: String::new(),
                    parameters: Vec::new(),
                    body: None,
                    // A POST may create something upstream: it is audited like any create.
                    creates: method == Method::POST,
                    enforce: None,
                    example: None,
                    credential: self.unknown_credential.clone(),
                    responses: None,
                });
                let path: Arc<str> = Arc::from(path);
                Ok(Routed {
                    candidates: Arc::from([operation.clone()]),
                    operation,
                    upstream_path: path.clone(),
                    operation_path: path,
                    unspecified: true,
                })
            }
        }
    }

    /// The operation `matched` is for `method`, routed to `upstream_path`.
    fn operation(&self, method: &Method, matched: &str, upstream_path: &str) -> Option<Routed> {
        let candidates = self
            .paths
            .find(matched, |entry| entry.get(method).is_some())
            .and_then(|entry| entry.get(method))?;
        let upstream_path: Arc<str> = Arc::from(upstream_path);
        Some(Routed {
            operation: candidates[0].clone(),
            candidates: candidates.clone(),
            operation_path: if *upstream_path == *matched {
                upstream_path.clone()
            } else {
                Arc::from(matched)
            },
            upstream_path,
            unspecified: false,
        })
    }

    /// Whether `path`, which is no operation of `method`, would be one once a server behind
    /// us normalised it (decoded its percent-encoding, added or dropped a trailing '/').
    /// Forwarded as an unknown path, it could reach that operation unchecked; refused, it
    /// tells the client what is wrong.
    fn hides_an_operation(&self, method: &Method, path: &str) -> Option<&'static str> {
        let routes = |p: &str| {
            self.paths
                .find(p, |entry| entry.get(method).is_some())
                .is_some()
        };
        // `check_path` has refused what does not decode to UTF-8 or decodes to a slash.
        let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
        if decoded != path && routes(&decoded) {
            return Some("percent-encoding that hides a path the document has");
        }
        let toggled = |p: &str| match p.strip_suffix('/') {
            Some("") => p.to_owned(),
            Some(trimmed) => trimmed.to_owned(),
            None => format!("{p}/"),
        };
        if routes(&toggled(path)) || routes(&toggled(&decoded)) {
            return Some("a path that differs from the document's only by a trailing '/'");
        }
        None
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

    /// Every routed operation, by path shape and then method, for `specgate routes`.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<Operation>> {
        self.paths
            .values()
            .flat_map(|p| p.methods.iter().flat_map(|(_, ops)| ops.iter()))
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
    let segments = path[1..].split('/');
    let last = path[1..].split('/').count() - 1;
    for (i, segment) in segments.enumerate() {
        // A trailing '/' is a path of its own (Kubernetes has them); '//' never is.
        if segment.is_empty() && i != last {
            return Err(Error::BadTarget("empty path segment ('//')"));
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
        RouteTable::new(&Spec::load(&SpecSource::default()).unwrap())
    }

    fn table_of(paths: serde_json::Value) -> RouteTable {
        let doc = serde_json::json!({"openapi": "3.1.0", "info": {"title": "t", "version": "1"},
            "servers": [{"url": "https://x.example/api/3"}], "paths": paths});
        RouteTable::new(&Spec::compile("t", doc).unwrap())
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
            "/connections//",
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

    fn ops(method: &str) -> serde_json::Value {
        serde_json::json!({ method: {"responses": {"200": {"description": "ok"}}}})
    }

    #[test]
    fn templates_equal_up_to_parameter_names_route_by_method() {
        let mut get = ops("get");
        get["get"]["operationId"] = "get-attestations".into();
        let mut delete = ops("delete");
        delete["delete"]["operationId"] = "delete-attestation".into();
        let spec = Spec::compile(
            "t",
            serde_json::json!({"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": {
                "/orgs/{org}/attestations/{subject_digest}": get,
                "/orgs/{org}/attestations/{attestation_id}": delete,
                "/repos/{owner}/{repo}/compare/{base}...{head}": ops("get"),
            }}),
        )
        .unwrap();
        assert!(spec.warnings.is_empty(), "{:?}", spec.warnings);
        let t = RouteTable::new(&spec);
        let id = |method, path| t.route(&method, path).map(|r| r.operation.id.to_string());
        assert_eq!(
            id(Method::GET, "/orgs/o/attestations/sha256:ab").unwrap(),
            "get-attestations"
        );
        assert_eq!(
            id(Method::DELETE, "/orgs/o/attestations/9").unwrap(),
            "delete-attestation"
        );
        let Err(Error::MethodNotAllowed { allow, .. }) = id(Method::PUT, "/orgs/o/attestations/9")
        else {
            panic!("expected 405")
        };
        assert_eq!(allow, "GET, DELETE");
        assert_eq!(
            id(Method::GET, "/repos/o/r/compare/main...topic").unwrap(),
            "GET /repos/{owner}/{repo}/compare/{base}...{head}"
        );
    }

    #[test]
    fn a_true_ambiguity_loads_with_a_warning_naming_both_and_the_first_wins() {
        let mut first = ops("get");
        first["get"]["operationId"] = "by-name".into();
        let mut second = ops("get");
        second["get"]["operationId"] = "by-parent".into();
        let spec = Spec::compile(
            "api.json",
            serde_json::json!({"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": {
                "/v1/{name}": first, "/v1/{parent}": second
            }}),
        )
        .unwrap();
        assert_eq!(spec.warnings.len(), 1);
        let warning = &spec.warnings[0].0;
        assert_eq!(warning.pointer, "/paths/~1v1~1{parent}/get");
        assert!(
            warning.message.contains("/paths/~1v1~1{name}/get"),
            "{warning}"
        );
        let routed = RouteTable::new(&spec).route(&Method::GET, "/v1/x").unwrap();
        assert_eq!(&*routed.operation.id, "by-name");
    }

    #[test]
    fn twins_are_ambiguous_beside_variants_too() {
        let spec = Spec::compile(
            "api.json",
            serde_json::json!({"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": {
                "/files/{id}#share": ops("put"),
                "/files/{id}": ops("put"),
                "/files/{file}": ops("put"),
                "/files/{f}#share": ops("put"),
            }}),
        )
        .unwrap();
        let warned: Vec<&str> = spec.warnings.iter().map(|w| w.0.pointer.as_str()).collect();
        assert_eq!(
            warned,
            [
                "/paths/~1files~1{file}/put",
                "/paths/~1files~1{f}#share/put"
            ]
        );
        assert!(
            spec.warnings[0]
                .0
                .message
                .contains("/paths/~1files~1{id}/put")
        );
    }

    #[test]
    fn a_more_specific_template_without_the_method_gives_way_to_one_with_it() {
        let t = table_of(serde_json::json!({
            "/users/me": ops("get"),
            "/users/{id}": {"get": {"operationId": "get-user"}, "delete": {"operationId": "delete-user"}},
        }));
        assert_eq!(
            &*t.route(&Method::GET, "/users/me").unwrap().operation.id,
            "GET /users/me"
        );
        assert_eq!(
            &*t.route(&Method::DELETE, "/users/me").unwrap().operation.id,
            "delete-user"
        );
    }

    #[test]
    fn trailing_slash_keys_are_reachable_at_that_exact_path() {
        let t = table_of(serde_json::json!({
            "/api/v1/namespaces/": ops("get"),
            "/api/v1/pods": ops("get"),
        }));
        let routed = t.route(&Method::GET, "/api/3/api/v1/namespaces/").unwrap();
        assert_eq!(&*routed.upstream_path, "/api/v1/namespaces/");
        assert_eq!(
            t.route(&Method::GET, "/api/v1//pods").unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn a_slash_added_or_dropped_never_reaches_an_operation_unchecked() {
        // Many servers treat `/x` and `/x/` alike: forwarded as an unknown path, either could
        // reach the operation the other is, unchecked. A slash added is that operation (checked
        // as it) unless trailing slashes are rejected; a slash dropped is always refused.
        let paths = serde_json::json!({
            "/api/v1/namespaces/": ops("post"),
            "/api/v1/pods": ops("post"),
            "/{kind}/": ops("get"),
        });
        for unknown in [UnknownRoutes::Reject, UnknownRoutes::Forward] {
            let matching = table_of(paths.clone()).with_unknown_routes(unknown);
            let routed = matching.route(&Method::POST, "/api/v1/pods/").unwrap();
            assert_eq!(&*routed.operation.id, "POST /api/v1/pods");
            assert!(!routed.unspecified);
            assert_eq!(&*routed.upstream_path, "/api/v1/pods/");
            assert_eq!(&*routed.operation_path, "/api/v1/pods");
            let rejecting = table_of(paths.clone())
                .with_unknown_routes(unknown)
                .with_trailing_slash(TrailingSlash::Reject);
            for table in [&matching, &rejecting] {
                let e = table
                    .route(&Method::POST, "/api/v1/namespaces")
                    .unwrap_err();
                assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{e}");
                assert!(table.route(&Method::GET, "/pods/").is_ok());
                // Only one slash, and never an empty segment.
                for path in ["/api/v1/pods//", "/api/v1//pods/"] {
                    let e = table.route(&Method::POST, path).unwrap_err();
                    assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{path}: {e}");
                }
            }
            let e = rejecting.route(&Method::POST, "/api/v1/pods/").unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{e}");
            // Another method on the trimmed path: 405 naming what it allows (or, with unknown
            // routes forwarded, forwarded as `GET /api/v1/pods` itself would be).
            match (unknown, matching.route(&Method::GET, "/api/v1/pods/")) {
                (UnknownRoutes::Reject, Err(e)) => {
                    assert_eq!(e.status(), StatusCode::METHOD_NOT_ALLOWED, "{e}")
                }
                (UnknownRoutes::Forward, Ok(routed)) => assert!(routed.unspecified),
                (_, other) => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_path_the_document_writes_with_a_slash_is_never_read_without_it() {
        // `/x/` is its own resource here: GET on it is refused, never `GET /x`.
        let t = table_of(serde_json::json!({"/x": ops("get"), "/x/": ops("post")}));
        let e = t.route(&Method::GET, "/x/").unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{e}");
        assert_eq!(
            &*t.route(&Method::POST, "/x/").unwrap().operation.id,
            "POST /x/"
        );
    }

    #[test]
    fn a_trailing_slash_reads_path_parameters_without_it() {
        let t = table_of(serde_json::json!({
            "/connections/{id}": {"get": {"operationId": "get", "parameters": [
                {"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}
            ]}},
        }));
        let routed = t.route(&Method::GET, "/api/3/connections/7/").unwrap();
        assert_eq!(&*routed.upstream_path, "/connections/7/");
        assert_eq!(&*routed.operation_path, "/connections/7");
        crate::params::check(
            &routed.operation,
            &routed.operation_path,
            None,
            &HeaderMap::new(),
        )
        .unwrap();
    }

    #[test]
    fn extension_keys_are_not_paths_and_a_key_without_a_slash_is_a_warning() {
        let spec = Spec::compile(
            "t",
            serde_json::json!({"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": {
                "x-codegen-contextRoot": "/apis", "pets": ops("get"), "/pets": ops("get")
            }}),
        )
        .unwrap();
        assert_eq!(spec.operations.len(), 1);
        assert_eq!(spec.warnings.len(), 1);
        assert_eq!(spec.warnings[0].0.pointer, "/paths/pets");
    }

    #[test]
    fn keys_that_differ_by_fragment_or_query_are_told_apart_by_what_the_request_carries() {
        let t = table_of(serde_json::json!({
            "/files/{id}": {"put": {"operationId": "update"}},
            "/files/{id}#add_shared_link": {"put": {"operationId": "share"}},
            "/?Action=CreateUser": {"post": {"operationId": "create-user"}},
            "/?Action=DeleteUser": {"post": {"operationId": "delete-user"}},
            "/#X-Amz-Target=Svc.Run": {"post": {"operationId": "run"}},
        }));
        let ids = |ops: &[Arc<Operation>]| ops.iter().map(|o| o.id.to_string()).collect::<Vec<_>>();
        let none = HeaderMap::new();
        // A bare label names nothing the upstream could tell apart: both stay, the body decides.
        let routed = t.route(&Method::PUT, "/files/7").unwrap();
        assert_eq!(
            ids(&candidates(&routed.candidates, None, &none).unwrap()),
            ["update", "share"]
        );

        let routed = t.route(&Method::POST, "/").unwrap();
        let chosen = |query, headers: &HeaderMap| candidates(&routed.candidates, query, headers);
        assert_eq!(
            ids(&chosen(Some("Version=1&Action=DeleteUser"), &none).unwrap()),
            ["delete-user"]
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-target", HeaderValue::from_static("Svc.Run"));
        assert_eq!(ids(&chosen(None, &headers).unwrap()), ["run"]);
        // A header does not meet a query variant, nor a query parameter a header variant.
        let mut action = HeaderMap::new();
        action.insert("action", HeaderValue::from_static("CreateUser"));
        assert!(matches!(
            chosen(None, &action),
            Err(Error::OperationNotNamed { .. })
        ));
        assert!(matches!(
            chosen(Some("X-Amz-Target=Svc.Run"), &none),
            Err(Error::OperationNotNamed { .. })
        ));
        // Named twice, the upstream might read the other one.
        let e = chosen(Some("Action=CreateUser&Action=DeleteUser"), &none).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(matches!(e, Error::ChoosingParameterRepeated { .. }));
    }

    #[test]
    fn an_encoding_that_hides_a_path_of_the_document_is_refused() {
        // Decoded by a server behind us, these are the create: forwarded as unknown paths they
        // would reach it unchecked.
        for table in [table(), table().with_unknown_routes(UnknownRoutes::Forward)] {
            for path in [
                "/api/3/conn%65ctions",
                "/api/3/connection%73/",
                "/%63onnections",
            ] {
                let e = table.route(&Method::POST, path).unwrap_err();
                assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{path}: {e}");
            }
        }
        let t = table_of(serde_json::json!({
            "/files/{id}:copy": {"post": {"operationId": "copy"}},
            "/files/{id}": {"get": {"operationId": "get"}}
        }))
        .with_unknown_routes(UnknownRoutes::Forward);
        let e = t.route(&Method::POST, "/files/a%3Acopy").unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        // Encoding inside a parameter's value is the value, and routes as it is.
        assert_eq!(
            &*t.route(&Method::GET, "/files/a%3Acopy")
                .unwrap()
                .operation
                .id,
            "get"
        );
    }
}
