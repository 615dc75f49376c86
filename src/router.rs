//! Path templates as OpenAPI writes them, and a router that matches request paths to them.
//!
//! A template is matched segment by segment. A segment may hold several parameters and literal
//! text around and between them (`{sha}.{diffType}`, `@{lat},{lon}`, `(a={a},b={b})`), which
//! is valid OpenAPI that general-purpose routers refuse. Templates that differ only in their
//! parameter names have the same [`Shape`] and are one route: the caller keeps whatever it
//! wants per shape (here, the operations of each method).
//!
//! When several templates match a path, literal text wins over parameters, segment by segment
//! from the left: a static segment first, then the segment patterns with the most literal
//! text, then a bare parameter. [`Router::find`] walks the matches in that order and returns
//! the first the caller accepts (the one that has the request's method), so a less specific
//! template still serves a method the more specific one lacks.
//!
//! Everything here is a plain function over strings; nothing allocates while matching.

use std::collections::HashMap;

/// One piece of a template segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Piece {
    /// Text that must appear as written.
    Literal(Box<str>),
    /// A parameter: one or more characters, never `/`.
    Param,
}

/// A segment of a template: a bare literal, a bare parameter, or a mix.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Segment(Vec<Piece>);

impl Segment {
    fn literal(&self) -> Option<&str> {
        match self.0.as_slice() {
            [Piece::Literal(text)] => Some(text),
            [] => Some(""),
            _ => None,
        }
    }

    /// More literal text first, then fewer parameters: `{id}.json` before `{a}.{b}` before
    /// `{id}`.
    fn rank(&self) -> (std::cmp::Reverse<usize>, usize) {
        let mut literal = 0;
        let mut params = 0;
        for piece in &self.0 {
            match piece {
                Piece::Literal(text) => literal += text.len(),
                Piece::Param => params += 1,
            }
        }
        (std::cmp::Reverse(literal), params)
    }

    /// Whether `text` (one request path segment) matches, each parameter taking at least one
    /// character and as many as it can.
    fn matches(&self, text: &str) -> bool {
        matches_pieces(&self.0, text, None)
    }
}

/// Matches `text` against `pieces`; with `captures`, each parameter's text is pushed onto it.
///
/// Each parameter takes at least one character, and the first takes as many as it can, then
/// the next, and so on (`{name}-{version}` reads `my-lib-1.2` as `my-lib` and `1.2`). That is
/// found without backtracking, in time linear in `text` for a given pattern: the literal after
/// each parameter is placed at the rightmost place it can go, last parameter first, which
/// leaves each parameter before it as long as it can be. (Backtracking took seconds on one
/// crafted segment for a template like `{a}-{b}-{c}-{d}.zip`.)
fn matches_pieces<'t>(
    pieces: &[Piece],
    text: &'t str,
    captures: Option<&mut Vec<&'t str>>,
) -> bool {
    let (prefix, params) = match pieces.split_first() {
        Some((Piece::Literal(prefix), rest)) => (&**prefix, rest),
        _ => ("", pieces),
    };
    let Some(text) = text.strip_prefix(prefix) else {
        return false;
    };
    // Each parameter's following literal ("" when another parameter or the end follows).
    let mut literals: Vec<&str> = Vec::new();
    let mut iter = params.iter().peekable();
    while let Some(piece) = iter.next() {
        match (piece, iter.peek()) {
            (Piece::Param, Some(Piece::Literal(literal))) => {
                literals.push(literal);
                iter.next();
            }
            (Piece::Param, _) => literals.push(""),
            // The parser never puts two literals side by side.
            (Piece::Literal(_), _) => return false,
        }
    }
    if literals.is_empty() {
        return text.is_empty();
    }
    // Where each literal starts, placed right to left.
    let mut starts = vec![0; literals.len()];
    let mut limit = text.len();
    for (i, literal) in literals.iter().enumerate().rev() {
        let region = &text[..limit];
        let found = if i + 1 == literals.len() {
            region.strip_suffix(literal).map(str::len)
        } else {
            region.rfind(literal)
        };
        let Some(start) = found else {
            return false;
        };
        starts[i] = start;
        // The parameter before this literal needs a character of its own.
        let Some((last_char, _)) = text[..start].char_indices().next_back() else {
            return false;
        };
        limit = last_char;
    }
    if let Some(out) = captures {
        let mut begin = 0;
        for (literal, start) in literals.iter().zip(&starts) {
            out.push(&text[begin..*start]);
            begin = start + literal.len();
        }
    }
    true
}

/// A template with its parameter names set aside: templates with equal shapes match exactly
/// the same paths.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Shape(Vec<Segment>);

/// A parsed path template (`/repos/{owner}/{repo}/compare/{base}...{head}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    shape: Shape,
    names: Vec<String>,
    unbalanced: bool,
}

impl Template {
    /// Parses a template. It never fails: a `{` without its `}` (or the reverse) is read as
    /// literal text, and [`Template::has_unbalanced_braces`] says so.
    pub fn parse(template: &str) -> Template {
        let body = template.strip_prefix('/').unwrap_or(template);
        let mut names = Vec::new();
        let mut unbalanced = false;
        let segments = body
            .split('/')
            .map(|segment| {
                let mut pieces = Vec::new();
                let mut literal = String::new();
                let mut rest = segment;
                while let Some(open) = rest.find(['{', '}']) {
                    let closing = rest[open..]
                        .starts_with('{')
                        .then(|| rest[open + 1..].find(['{', '}']))
                        .flatten()
                        .filter(|&i| rest[open + 1 + i..].starts_with('}'));
                    literal.push_str(&rest[..open]);
                    match closing {
                        Some(len) => {
                            if !literal.is_empty() {
                                pieces.push(Piece::Literal(std::mem::take(&mut literal).into()));
                            }
                            pieces.push(Piece::Param);
                            names.push(rest[open + 1..open + 1 + len].to_owned());
                            rest = &rest[open + 2 + len..];
                        }
                        None => {
                            unbalanced = true;
                            literal.push_str(&rest[open..=open]);
                            rest = &rest[open + 1..];
                        }
                    }
                }
                literal.push_str(rest);
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(literal.into()));
                }
                Segment(pieces)
            })
            .collect();
        Template {
            shape: Shape(segments),
            names,
            unbalanced,
        }
    }

    /// What the template matches, without the parameter names.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The parameter names, left to right.
    pub fn param_names(&self) -> &[String] {
        &self.names
    }

    /// Whether a brace had no partner and was read as literal text.
    pub fn has_unbalanced_braces(&self) -> bool {
        self.unbalanced
    }

    /// The text of each parameter in `path` (still percent-encoded), in the order of
    /// [`Template::param_names`]; `None` if `path` does not match.
    pub fn captures<'p>(&self, path: &'p str) -> Option<Vec<&'p str>> {
        let mut segments = path.strip_prefix('/')?.split('/');
        let mut out = Vec::with_capacity(self.names.len());
        for segment in &self.shape.0 {
            let text = segments.next()?;
            let matched = match segment.literal() {
                Some(literal) => literal == text,
                None => matches_pieces(&segment.0, text, Some(&mut out)),
            };
            if !matched {
                return None;
            }
        }
        segments.next().is_none().then_some(out)
    }
}

/// Values of type `T` keyed by template shape, matched against request paths.
#[derive(Debug)]
pub struct Router<T> {
    root: Node,
    values: Vec<T>,
}

#[derive(Debug, Default)]
struct Node {
    statics: HashMap<Box<str>, Node>,
    /// Kept in [`Segment::rank`] order.
    patterns: Vec<(Segment, Node)>,
    value: Option<usize>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router {
            root: Node::default(),
            values: Vec::new(),
        }
    }
}

impl<T> Router<T> {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value kept for `shape`, inserted with `make` if the shape is new.
    pub fn entry(&mut self, shape: &Shape, make: impl FnOnce() -> T) -> &mut T {
        let mut node = &mut self.root;
        for segment in &shape.0 {
            node = match segment.literal() {
                Some(text) => node.statics.entry(text.into()).or_default(),
                None => {
                    let at = match node.patterns.iter().position(|(s, _)| s == segment) {
                        Some(at) => at,
                        None => {
                            // After every pattern ranked as high, so equal ranks keep
                            // document order.
                            let at = node
                                .patterns
                                .iter()
                                .position(|(s, _)| s.rank() > segment.rank())
                                .unwrap_or(node.patterns.len());
                            node.patterns.insert(at, (segment.clone(), Node::default()));
                            at
                        }
                    };
                    &mut node.patterns[at].1
                }
            };
        }
        let index = *node.value.get_or_insert_with(|| {
            self.values.push(make());
            self.values.len() - 1
        });
        &mut self.values[index]
    }

    /// The most specific value whose template matches `path` and that `accept` takes.
    ///
    /// `path` starts with `/`; its segments are compared as they are (still percent-encoded).
    pub fn find(&self, path: &str, mut accept: impl FnMut(&T) -> bool) -> Option<&T> {
        let rest = path.strip_prefix('/')?;
        self.walk(&self.root, Some(rest), &mut |value| accept(value))
    }

    /// Every value whose template matches `path`, most specific first.
    pub fn matches<'a>(&'a self, path: &str) -> Vec<&'a T> {
        let mut all = Vec::new();
        if let Some(rest) = path.strip_prefix('/') {
            self.walk(&self.root, Some(rest), &mut |value| {
                all.push(value);
                false
            });
        }
        all
    }

    /// The same routes with each value turned into another.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Router<U> {
        Router {
            root: self.root,
            values: self.values.into_iter().map(f).collect(),
        }
    }

    /// All values, in the order their shapes were first inserted.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.values.iter()
    }

    fn walk<'a>(
        &'a self,
        node: &'a Node,
        rest: Option<&str>,
        accept: &mut dyn FnMut(&'a T) -> bool,
    ) -> Option<&'a T> {
        let Some(rest) = rest else {
            let value = &self.values[node.value?];
            return accept(value).then_some(value);
        };
        let (segment, tail) = match rest.split_once('/') {
            Some((segment, tail)) => (segment, Some(tail)),
            None => (rest, None),
        };
        if let Some(found) = node
            .statics
            .get(segment)
            .and_then(|next| self.walk(next, tail, accept))
        {
            return Some(found);
        }
        node.patterns
            .iter()
            .filter(|(pattern, _)| pattern.matches(segment))
            .find_map(|(_, next)| self.walk(next, tail, accept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(templates: &[&str]) -> Router<String> {
        let mut router = Router::new();
        for template in templates {
            let parsed = Template::parse(template);
            router.entry(parsed.shape(), || (*template).to_owned());
        }
        router
    }

    fn find<'a>(router: &'a Router<String>, path: &str) -> Option<&'a str> {
        router.find(path, |_| true).map(String::as_str)
    }

    #[test]
    fn several_parameters_and_literal_text_in_one_segment() {
        let r = router(&[
            "/repos/{owner}/{repo}/compare/{base}...{head}",
            "/commits/{sha}.{diffType}",
            "/files/{name}-{version}.zip",
            "/map/@{lat},{lon}",
            "/odata/Items(a={a},b={b})",
            "/media/{id}{mediaTypeExtension}",
        ]);
        for (path, template) in [
            (
                "/repos/o/r/compare/main...feature",
                "/repos/{owner}/{repo}/compare/{base}...{head}",
            ),
            ("/commits/abc.diff", "/commits/{sha}.{diffType}"),
            ("/files/my-lib-1.2.zip", "/files/{name}-{version}.zip"),
            ("/map/@51.5,-0.1", "/map/@{lat},{lon}"),
            ("/odata/Items(a=1,b=x)", "/odata/Items(a={a},b={b})"),
            ("/media/7.json", "/media/{id}{mediaTypeExtension}"),
        ] {
            assert_eq!(find(&r, path), Some(template), "{path}");
        }
        for path in [
            "/repos/o/r/compare/main",
            "/repos/o/r/compare/...feature",
            "/commits/abc",
            "/files/lib.zip",
            "/map/51.5,-0.1",
            "/odata/Items(a=1)",
            "/media/7",
        ] {
            assert_eq!(find(&r, path), None, "{path}");
        }
    }

    #[test]
    fn static_segments_win_over_patterns_and_patterns_over_bare_parameters() {
        let r = router(&[
            "/users/{id}",
            "/users/{id}.json",
            "/users/me",
            "/{a}/b",
            "/a/{b}",
        ]);
        assert_eq!(find(&r, "/users/me"), Some("/users/me"));
        assert_eq!(find(&r, "/users/7.json"), Some("/users/{id}.json"));
        assert_eq!(find(&r, "/users/7"), Some("/users/{id}"));
        assert_eq!(find(&r, "/a/b"), Some("/a/{b}"));
        assert_eq!(find(&r, "/x/b"), Some("/{a}/b"));
    }

    #[test]
    fn a_dead_end_behind_a_static_segment_falls_back_to_a_parameter() {
        let r = router(&["/users/me/keys", "/users/{id}/repos"]);
        assert_eq!(find(&r, "/users/me/repos"), Some("/users/{id}/repos"));
        assert_eq!(find(&r, "/users/me/keys"), Some("/users/me/keys"));
    }

    #[test]
    fn find_walks_past_matches_the_caller_does_not_accept() {
        let r = router(&["/users/me", "/users/{id}"]);
        let found = r.find("/users/me", |t| t.contains('{'));
        assert_eq!(found.map(String::as_str), Some("/users/{id}"));
        assert_eq!(r.matches("/users/me"), ["/users/me", "/users/{id}"]);
    }

    #[test]
    fn templates_equal_up_to_parameter_names_share_one_entry() {
        let a = Template::parse("/orgs/{org}/attestations/{subject_digest}");
        let b = Template::parse("/orgs/{org}/attestations/{attestation_id}");
        assert_eq!(a.shape(), b.shape());
        assert_eq!(a.param_names(), ["org", "subject_digest"]);
        let mut r: Router<Vec<&str>> = Router::new();
        r.entry(a.shape(), Vec::new).push("get");
        r.entry(b.shape(), Vec::new).push("delete");
        assert_eq!(r.values().count(), 1);
        assert_eq!(
            r.find("/orgs/o/attestations/x", |_| true).unwrap(),
            &["get", "delete"]
        );
    }

    #[test]
    fn trailing_slashes_and_the_root_are_exact() {
        let r = router(&["/", "/api/v1/namespaces/", "/api/v1/pods"]);
        assert_eq!(find(&r, "/"), Some("/"));
        assert_eq!(find(&r, "/api/v1/namespaces/"), Some("/api/v1/namespaces/"));
        assert_eq!(find(&r, "/api/v1/namespaces"), None);
        assert_eq!(find(&r, "/api/v1/pods/"), None);
        assert_eq!(find(&r, ""), None);
    }

    #[test]
    fn parameters_never_match_an_empty_value_or_cross_a_slash() {
        let r = router(&["/a/{x}", "/b/{x}.json"]);
        assert_eq!(find(&r, "/a/"), None);
        assert_eq!(find(&r, "/b/.json"), None);
        assert_eq!(find(&r, "/a/x/y"), None);
        assert_eq!(find(&r, "/b/x/y.json"), None);
    }

    #[test]
    fn unbalanced_braces_are_literal_text() {
        let t = Template::parse("/a/{b/c}/d{");
        assert!(t.has_unbalanced_braces());
        assert!(t.param_names().is_empty());
        let r = router(&["/a/{b/c}/d{"]);
        assert_eq!(find(&r, "/a/{b/c}/d{"), Some("/a/{b/c}/d{"));
        assert!(!Template::parse("/a/{b}").has_unbalanced_braces());
    }

    #[test]
    fn captures_give_each_parameter_its_text() {
        let t = Template::parse("/repos/{owner}/{repo}/compare/{base}...{head}");
        assert_eq!(
            t.captures("/repos/o/r/compare/main...a.b...c"),
            Some(vec!["o", "r", "main...a.b", "c"])
        );
        assert_eq!(t.captures("/repos/o/r/compare/main"), None);
        let t = Template::parse("/files/{name}-{version}.zip");
        assert_eq!(
            t.captures("/files/my-lib-1.2.zip"),
            Some(vec!["my-lib", "1.2"])
        );
        let t = Template::parse("/media/{id}{ext}");
        assert_eq!(t.captures("/media/7.json"), Some(vec!["7.jso", "n"]));
        assert_eq!(Template::parse("/a").captures("/a"), Some(vec![]));
        assert_eq!(Template::parse("/a/{x}").captures("/a/b/c"), None);
    }

    #[test]
    fn a_crafted_segment_is_matched_without_backtracking() {
        // Backtracking tries every split at every dash: with 20,000 of them, hours. The time
        // it takes now is measured in benches/hot_paths.rs.
        let r = router(&["/f/{a}-{b}-{c}-{d}.zip"]);
        let dashes = "-".repeat(20_000);
        assert_eq!(find(&r, &format!("/f/{dashes}")), None);
        assert_eq!(
            find(&r, &format!("/f/a{dashes}b.zip")),
            Some("/f/{a}-{b}-{c}-{d}.zip")
        );
        let t = Template::parse("/f/{a}-{b}-{c}-{d}.zip");
        assert_eq!(
            t.captures("/f/x-y-z-w-v.zip").unwrap(),
            ["x-y", "z", "w", "v"]
        );
    }

    #[test]
    fn literal_text_is_compared_as_sent() {
        let r = router(&["/files/{id}:copy"]);
        assert_eq!(find(&r, "/files/1:copy"), Some("/files/{id}:copy"));
        assert_eq!(find(&r, "/files/1%3Acopy"), None);
    }
}
