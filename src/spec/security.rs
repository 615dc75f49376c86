//! Which credential each operation takes, from the document's `securitySchemes` and its
//! `security` requirements (the operation's, else the document's).
//!
//! An operation keeps every alternative of its requirement that specgate can send, in the
//! document's order, and each request takes the first the stored secret fits (see
//! [`crate::scheme::choose`]): `apiKey` (header, query, cookie), `http` `bearer` and `basic`,
//! OAuth2 (the client-credentials flow fetches tokens; any other flow, like OpenID Connect,
//! takes a token obtained out of band as a bearer token). `security: []` means no credential
//! at all. A document that declares no requirement uses its first usable scheme for every
//! operation, and one that declares no scheme the `api-token` header. What cannot be used
//! (`http` `digest`, `mutualTLS`) is a warning: operations with nothing else go without a
//! credential unless the `credential` setting names one. So is an alternative that needs
//! several schemes at once (Plaid's client id and secret): specgate holds one secret and cannot
//! know which it is, so such an alternative is not used unless the setting names the scheme
//! the secret fills, and its schemes are left to the client (not stripped).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::HeaderName;
use serde_json::Value;

use super::{DEFAULT_CREDENTIAL_HEADER, SpecWarning, pointer_push, warning};
use crate::scheme::{Place, Scheme};

/// The document's schemes, ready to resolve operations' requirements.
pub(super) struct Security {
    /// By name: the scheme, or why it cannot be used.
    schemes: HashMap<String, Result<Scheme, String>>,
    /// Its names in document order.
    order: Vec<String>,
    /// The document's own requirement, if it has one.
    document: Option<Value>,
    /// One `Arc` per distinct list of alternatives, shared by every operation that takes it.
    interned: HashMap<Vec<Scheme>, Arc<[Scheme]>>,
    /// Schemes named alone in some alternative, and those named with others.
    alone: HashSet<String>,
    together: HashSet<String>,
    /// The sets of schemes needed at once, and the requirements no scheme of which can be
    /// filled, that have been warned about (once per document).
    warned_together: HashSet<Vec<String>>,
    warned: HashSet<String>,
    file: String,
}

impl Security {
    /// Reads the schemes of `doc`; one that cannot be used is a warning.
    pub(super) fn read(doc: &Value, file: &str, warnings: &mut Vec<SpecWarning>) -> Security {
        let declared = doc
            .pointer("/components/securitySchemes")
            .and_then(Value::as_object);
        let server = doc.pointer("/servers/0/url").and_then(Value::as_str);
        let mut schemes = HashMap::new();
        let mut order = Vec::new();
        for (name, scheme) in declared.into_iter().flatten() {
            let read = read_scheme(scheme, server);
            if let Err(why) = &read {
                warnings.push(warning(
                    file,
                    &pointer_push("/components/securitySchemes", name),
                    format!("{why}; operations that require only it go without a credential"),
                ));
            }
            order.push(name.clone());
            schemes.insert(name.clone(), read);
        }
        Security {
            schemes,
            order,
            document: doc.get("security").cloned(),
            interned: HashMap::new(),
            alone: HashSet::new(),
            together: HashSet::new(),
            warned_together: HashSet::new(),
            warned: HashSet::new(),
            file: file.to_owned(),
        }
    }

    /// The schemes an operation with this `security` (or none of its own) can take, in order
    /// of preference: empty when it takes a credential specgate cannot fill by itself, `None`
    /// when it takes none.
    pub(super) fn for_operation(
        &mut self,
        own: Option<&Value>,
        op_at: &str,
        warnings: &mut Vec<SpecWarning>,
    ) -> Option<Arc<[Scheme]>> {
        let schemes = match own {
            Some(requirement) => {
                let at = pointer_push(op_at, "security");
                self.alternatives(requirement, &at, warnings)?
            }
            None => match self.document.clone() {
                Some(requirement) => self.alternatives(&requirement, "/security", warnings)?,
                None => vec![self.fallback()],
            },
        };
        Some(self.intern(schemes))
    }

    /// The schemes for a path the document does not have (forwarded unknown routes).
    pub(super) fn for_unknown(&mut self, warnings: &mut Vec<SpecWarning>) -> Option<Arc<[Scheme]>> {
        self.for_operation(None, "", warnings)
    }

    /// Every place a declared scheme puts a credential, where a client's copy is stripped; not
    /// those of schemes only ever needed together with others, which the client fills.
    pub(super) fn places(&self) -> Vec<Place> {
        let mut places: Vec<Place> = self
            .schemes
            .iter()
            .filter(|(name, _)| self.alone.contains(*name) || !self.together.contains(*name))
            .filter_map(|(_, s)| s.as_ref().ok())
            .map(Scheme::place)
            .chain(std::iter::once(self.fallback().place()))
            .collect();
        places.sort_by_key(|p| format!("{p:?}"));
        places.dedup();
        places
    }

    fn intern(&mut self, schemes: Vec<Scheme>) -> Arc<[Scheme]> {
        self.interned
            .entry(schemes.clone())
            .or_insert_with(|| Arc::from(schemes))
            .clone()
    }

    /// No requirement anywhere: the first usable scheme declared, else the `api-token` header.
    fn fallback(&self) -> Scheme {
        self.order
            .iter()
            .find_map(|name| self.schemes.get(name)?.as_ref().ok().cloned())
            .unwrap_or_else(|| Scheme::Header(HeaderName::from_static(DEFAULT_CREDENTIAL_HEADER)))
    }

    /// The alternatives of `requirement` whose scheme can be used, in its order; `None` when
    /// it names no scheme at all (`[]`, `[{}]`): no credential.
    fn alternatives(
        &mut self,
        requirement: &Value,
        at: &str,
        warnings: &mut Vec<SpecWarning>,
    ) -> Option<Vec<Scheme>> {
        let alternatives = requirement
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut named_any = false;
        // A scheme named alone that cannot be used (undeclared, digest): needing several at
        // once is warned about on its own.
        let mut unfillable = false;
        let mut usable = Vec::new();
        for alternative in alternatives {
            let named: Vec<(&String, &Value)> =
                alternative.as_object().into_iter().flatten().collect();
            match named.as_slice() {
                // `{}`: without a credential is fine too; a usable scheme is preferred.
                [] => continue,
                [(name, scopes)] => {
                    named_any = true;
                    self.alone.insert((*name).clone());
                    let Some(Ok(scheme)) = self.schemes.get(*name) else {
                        unfillable = true;
                        continue;
                    };
                    let mut scheme = scheme.clone();
                    if let Scheme::OAuth2 { scopes: wanted, .. } = &mut scheme {
                        *wanted = scopes
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect();
                    }
                    if !usable.contains(&scheme) {
                        usable.push(scheme);
                    }
                }
                several => {
                    named_any = true;
                    let mut set: Vec<String> = several.iter().map(|(n, _)| (*n).clone()).collect();
                    self.together.extend(set.iter().cloned());
                    set.sort();
                    if self.warned_together.insert(set.clone()) {
                        warnings.push(warning(
                            &self.file,
                            at,
                            format!(
                                "an alternative that needs {} schemes at once ({}); specgate holds \
                                 one secret, so it fills none of them unless the credential \
                                 setting names the one it is, and the client sends the others",
                                set.len(),
                                set.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        if !named_any {
            return None;
        }
        // Once per distinct requirement, not per operation: documents repeat theirs on each.
        if usable.is_empty() && unfillable && self.warned.insert(requirement.to_string()) {
            warnings.push(warning(
                &self.file,
                at,
                "no scheme of this requirement is one specgate can fill; its requests go without \
                 a credential unless the credential setting names one",
            ));
        }
        Some(usable)
    }
}

/// `url` made absolute: one that starts with `/` is on the origin of the document's first
/// server (`server`), as OpenAPI resolves it. Anything else is kept as written; a token URL
/// that is still relative fails when used, naming `oauth2.token_url`.
fn absolute(url: &str, server: Option<&str>) -> String {
    let origin = server.and_then(|server| {
        let (scheme, rest) = server.split_once("://")?;
        let host = rest.split('/').next()?;
        Some(format!("{scheme}://{host}"))
    });
    match origin {
        Some(origin) if url.starts_with('/') && !url.starts_with("//") => format!("{origin}{url}"),
        _ => url.to_owned(),
    }
}

/// A declared scheme, or why specgate cannot use it. `server` is the document's first server
/// URL, against which a relative token URL is resolved.
fn read_scheme(scheme: &Value, server: Option<&str>) -> Result<Scheme, String> {
    let field = |name: &str| scheme.get(name).and_then(Value::as_str);
    match field("type") {
        Some("apiKey") => {
            let name = field("name").ok_or("an apiKey scheme without a name")?;
            match field("in") {
                Some("header") => HeaderName::try_from(name)
                    .map(Scheme::Header)
                    .map_err(|_| format!("{name:?} is not a valid header name")),
                Some("query") => Ok(Scheme::Query(name.to_owned())),
                Some("cookie") => Ok(Scheme::Cookie(name.to_owned())),
                other => Err(format!(
                    "an apiKey scheme in {:?}",
                    other.unwrap_or("(nowhere)")
                )),
            }
        }
        Some("http") => match field("scheme").map(str::to_ascii_lowercase).as_deref() {
            Some("bearer") => Ok(Scheme::Bearer),
            Some("basic") => Ok(Scheme::Basic),
            other => Err(format!(
                "http scheme {:?} is not one specgate can send",
                other.unwrap_or("(none)")
            )),
        },
        Some("oauth2") => {
            let token_url = scheme
                .pointer("/flows/clientCredentials/tokenUrl")
                .and_then(Value::as_str);
            Ok(match token_url {
                Some(url) => Scheme::OAuth2 {
                    token_url: absolute(url, server),
                    scopes: Vec::new(),
                },
                // Another flow: the stored secret is a token obtained out of band.
                None => Scheme::Bearer,
            })
        }
        Some("openIdConnect") => Ok(Scheme::Bearer),
        other => Err(format!(
            "a {:?} scheme is not one specgate can send",
            other.unwrap_or("(typeless)")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn security(doc: Value) -> (Security, Vec<SpecWarning>) {
        let mut warnings = Vec::new();
        (Security::read(&doc, "t", &mut warnings), warnings)
    }

    #[test]
    fn each_operation_takes_its_requirement_or_the_documents() {
        let (mut s, mut w) = security(json!({
            "security": [{"key": []}],
            "components": {"securitySchemes": {
                "key": {"type": "apiKey", "in": "header", "name": "X-Key"},
                "id": {"type": "apiKey", "in": "header", "name": "X-Client-Id"},
                "token": {"type": "http", "scheme": "Bearer"},
                "login": {"type": "http", "scheme": "basic"},
                "cc": {"type": "oauth2", "flows": {"clientCredentials": {"tokenUrl": "https://a/token", "scopes": {}}}},
                "code": {"type": "oauth2", "flows": {"authorizationCode": {"authorizationUrl": "x", "tokenUrl": "y", "scopes": {}}}},
                "digest": {"type": "http", "scheme": "digest"}
            }}
        }));
        assert_eq!(w.len(), 1, "digest cannot be sent");
        let op = |s: &mut Security, own: Value, w: &mut Vec<SpecWarning>| {
            s.for_operation(Some(&own).filter(|o| !o.is_null()), "/paths/~1a/get", w)
                .map(|s| s.to_vec())
        };
        let key = Scheme::Header(HeaderName::from_static("x-key"));
        assert_eq!(op(&mut s, Value::Null, &mut w), Some(vec![key.clone()]));
        assert_eq!(
            op(&mut s, json!([]), &mut w),
            None,
            "security: [] adds nothing"
        );
        assert_eq!(
            op(&mut s, json!([{"digest": []}, {"token": []}]), &mut w),
            Some(vec![Scheme::Bearer])
        );
        // Stripe's: each request takes the first its secret fits.
        assert_eq!(
            op(&mut s, json!([{"login": []}, {"token": []}]), &mut w),
            Some(vec![Scheme::Basic, Scheme::Bearer])
        );
        assert_eq!(
            op(&mut s, json!([{"cc": ["read", "write"]}]), &mut w),
            Some(vec![Scheme::OAuth2 {
                token_url: "https://a/token".into(),
                scopes: vec!["read".into(), "write".into()]
            }])
        );
        assert_eq!(
            op(&mut s, json!([{"code": []}]), &mut w),
            Some(vec![Scheme::Bearer])
        );
        assert_eq!(
            op(&mut s, json!([{}, {"login": []}]), &mut w),
            Some(vec![Scheme::Basic])
        );
        assert_eq!(w.len(), 1);
        assert_eq!(op(&mut s, json!([{}]), &mut w), None, "only {{}}: none");
        // Takes one specgate cannot fill: nothing, unless the setting says.
        assert_eq!(op(&mut s, json!([{"digest": []}]), &mut w), Some(vec![]));
        assert_eq!(w.last().unwrap().0.pointer, "/paths/~1a/get/security");
        assert!(w.last().unwrap().0.message.contains("without a credential"));
        assert_eq!(
            op(&mut s, json!([{"undeclared": []}]), &mut w),
            Some(vec![])
        );
        // Two at once: one secret cannot tell which it is. Warned once per document.
        w.clear();
        let both = json!([{"key": [], "id": []}, {"token": []}]);
        assert_eq!(op(&mut s, both.clone(), &mut w), Some(vec![Scheme::Bearer]));
        assert_eq!(op(&mut s, both, &mut w), Some(vec![Scheme::Bearer]));
        assert_eq!(w.len(), 1);
        let message = &w[0].0.message;
        assert!(message.contains("2 schemes at once (id, key)"), "{message}");
        // `key` is also needed alone (the document's requirement), so it is stripped; `id` is
        // only ever needed with it, so the client sends it.
        let places = s.places();
        assert!(places.contains(&Place::Header(http::header::AUTHORIZATION)));
        assert!(places.contains(&Place::Header(HeaderName::from_static("x-key"))));
        assert_eq!(places.len(), 2, "{places:?}");
    }

    #[test]
    fn a_token_url_on_the_servers_origin_is_made_absolute() {
        let server = Some("https://api.example.com/v2");
        assert_eq!(
            absolute("/oauth/token", server),
            "https://api.example.com/oauth/token"
        );
        assert_eq!(
            absolute("https://auth.example/t", server),
            "https://auth.example/t"
        );
        assert_eq!(absolute("/oauth/token", None), "/oauth/token");
    }

    #[test]
    fn without_requirements_the_first_usable_scheme_and_without_schemes_api_token() {
        let (mut s, mut w) = security(json!({"components": {"securitySchemes": {
            "q": {"type": "apiKey", "in": "query", "name": "api_key"}}}}));
        assert_eq!(
            *s.for_unknown(&mut w).unwrap(),
            [Scheme::Query("api_key".into())]
        );
        let (mut s, mut w) = security(json!({}));
        assert_eq!(
            *s.for_unknown(&mut w).unwrap(),
            [Scheme::Header(HeaderName::from_static("api-token"))]
        );
        assert_eq!(
            s.places(),
            [Place::Header(HeaderName::from_static("api-token"))]
        );
    }
}
