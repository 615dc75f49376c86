//! How the stored secret travels upstream ([`Scheme`]), and the two rewrites of a request that
//! go with it, as plain functions: [`strip`] removes every copy of a credential the client
//! sent, wherever it would travel (a header in any case or count, a query parameter, a
//! cookie); [`inject`] puts the stored one in its place.

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};

/// Where, and in what form, the stored secret goes on a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// An `apiKey` in a header: the secret as the value.
    Header(HeaderName),
    /// An `apiKey` in the query string.
    Query(String),
    /// An `apiKey` in a cookie.
    Cookie(String),
    /// `http` `bearer`, or an OAuth2 or OpenID Connect scheme whose token is obtained out of
    /// band: `Authorization: Bearer <secret>`.
    Bearer,
    /// `http` `basic`: the secret is `user:password`.
    Basic,
    /// OAuth2's client-credentials flow: the secret is `client_id:client_secret`, and specgate
    /// fetches access tokens from `token_url`, with `scopes`.
    OAuth2 {
        /// Where tokens are fetched.
        token_url: String,
        /// The scopes asked for.
        scopes: Vec<String>,
    },
}

impl Scheme {
    /// Parses `SPECGATE_CREDENTIAL`: `bearer`, `basic`, `header:<Name>`, `query:<name>`,
    /// `cookie:<name>` or `oauth2` (with an empty token URL, for the caller to fill in).
    pub fn parse(text: &str) -> Result<Scheme, String> {
        let text = text.trim();
        let named = |prefix: &str| {
            text.strip_prefix(prefix)
                .map(str::trim)
                .filter(|n| !n.is_empty())
        };
        if let Some(name) = named("header:") {
            return HeaderName::try_from(name)
                .map(Scheme::Header)
                .map_err(|_| format!("{name:?} is not a valid header name"));
        }
        if let Some(name) = named("query:") {
            return Ok(Scheme::Query(name.to_owned()));
        }
        if let Some(name) = named("cookie:") {
            return Ok(Scheme::Cookie(name.to_owned()));
        }
        match text {
            "bearer" => Ok(Scheme::Bearer),
            "basic" => Ok(Scheme::Basic),
            "oauth2" => Ok(Scheme::OAuth2 {
                token_url: String::new(),
                scopes: Vec::new(),
            }),
            other => Err(format!(
                "{other:?} is not one of bearer, basic, header:<Name>, query:<name>, \
                 cookie:<name>, oauth2"
            )),
        }
    }

    /// Whether the secret must be a pair (`user:password`, `client_id:client_secret`).
    pub fn needs_pair(&self) -> bool {
        matches!(self, Scheme::Basic | Scheme::OAuth2 { .. })
    }

    /// Where it travels, to strip the client's copies from.
    pub fn place(&self) -> Place {
        match self {
            Scheme::Header(name) => Place::Header(name.clone()),
            Scheme::Query(name) => Place::Query(name.clone()),
            Scheme::Cookie(name) => Place::Cookie(name.clone()),
            Scheme::Bearer | Scheme::Basic | Scheme::OAuth2 { .. } => Place::Header(AUTHORIZATION),
        }
    }

    /// For logs and the start-up summary (never the secret).
    pub fn describe(&self) -> String {
        match self {
            Scheme::Header(name) => format!("{name} header"),
            Scheme::Query(name) => format!("{name} query parameter"),
            Scheme::Cookie(name) => format!("{name} cookie"),
            Scheme::Bearer => "Authorization: Bearer".to_owned(),
            Scheme::Basic => "Authorization: Basic".to_owned(),
            Scheme::OAuth2 { token_url, .. } => {
                format!("Authorization: Bearer, OAuth2 client credentials from {token_url}")
            }
        }
    }
}

/// Which of an operation's alternatives a request takes: the first the stored secret fits,
/// since `basic` and OAuth2 need a pair (`user:password`) and a plain key cannot be one; when
/// none fits, the first, which then refuses the request saying why.
pub fn choose(alternatives: &[Scheme], secret_is_pair: bool) -> Option<&Scheme> {
    alternatives
        .iter()
        .find(|scheme| secret_is_pair || !scheme.needs_pair())
        .or(alternatives.first())
}

/// How an operation's alternatives read in a summary: `Authorization: Basic or
/// Authorization: Bearer`.
pub fn describe_all(alternatives: &[Scheme]) -> String {
    alternatives
        .iter()
        .map(Scheme::describe)
        .collect::<Vec<_>>()
        .join(" or ")
}

/// A place a credential travels.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Place {
    /// A header.
    Header(HeaderName),
    /// A query parameter.
    Query(String),
    /// A cookie.
    Cookie(String),
}

/// Query parameter names that carry a credential whatever the document says: the API keys of
/// older APIs (ActiveCampaign's v1 took `api_key`) and OAuth 2.0's bearer token in the query
/// (RFC 6750 §2.3). An operation that declares one as its own parameter keeps it.
pub const CREDENTIAL_QUERY_NAMES: [&str; 4] = ["api_key", "apikey", "access_token", "token"];

/// What [`strip`] removed from a request.
#[derive(Debug, Default)]
pub struct Stripped {
    /// The request's new URI, when its query changed.
    pub uri: Option<Uri>,
    /// The query parameters removed, by name (lower-cased, once each).
    pub query: Vec<String>,
}

/// Removes every copy of a credential in each of `places` from a request: headers of that
/// name, query parameters and cookies of that name in any case; also the query parameters
/// whose (percent-decoded) name `also_query` picks.
pub fn strip(
    places: &[Place],
    headers: &mut HeaderMap,
    uri: &Uri,
    also_query: impl Fn(&str) -> bool,
) -> Stripped {
    let mut query_names = Vec::new();
    let mut cookie_names = Vec::new();
    for place in places {
        match place {
            // Header names are case-insensitive: one removal takes every copy.
            Place::Header(name) => {
                headers.remove(name);
            }
            Place::Query(name) => query_names.push(name.as_str()),
            Place::Cookie(name) => cookie_names.push(name.as_str()),
        }
    }
    if !cookie_names.is_empty() {
        set_cookies(headers, &cookie_names, None);
    }
    let Some(query) = uri.query() else {
        return Stripped::default();
    };
    let mut removed: Vec<String> = Vec::new();
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            let drop =
                query_names.iter().any(|n| n.eq_ignore_ascii_case(&name)) || also_query(&name);
            if drop {
                let name = name.to_lowercase();
                if !removed.contains(&name) {
                    removed.push(name);
                }
            }
            !drop
        })
        .collect();
    Stripped {
        uri: (!removed.is_empty()).then(|| with_query(uri, &kept.join("&"))),
        query: removed,
    }
}

/// Puts `value` where `scheme` says on a request whose client copies [`strip`] has removed.
/// `value` is the whole header value for a header or `Authorization` (`Bearer ...`), the bare
/// secret for a query parameter or cookie. Returns the new URI when the query changed.
pub fn inject(
    scheme: &Scheme,
    value: &HeaderValue,
    headers: &mut HeaderMap,
    uri: &Uri,
) -> Option<Uri> {
    match scheme.place() {
        Place::Header(name) => {
            headers.insert(name, value.clone());
            None
        }
        Place::Cookie(name) => {
            let secret = String::from_utf8_lossy(value.as_bytes());
            set_cookies(headers, &[name.as_str()], Some(&format!("{name}={secret}")));
            None
        }
        Place::Query(name) => {
            let encoded: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
            let name: String = form_urlencoded::byte_serialize(name.as_bytes()).collect();
            let query = match uri.query().filter(|q| !q.is_empty()) {
                Some(query) => format!("{query}&{name}={encoded}"),
                None => format!("{name}={encoded}"),
            };
            Some(with_query(uri, &query))
        }
    }
}

/// Rewrites the `Cookie` header without the cookies named `names` (in any case), adding
/// `added`. The result is one `Cookie` header, marked sensitive, or none.
fn set_cookies(headers: &mut HeaderMap, names: &[&str], added: Option<&str>) {
    let mut pairs: Vec<String> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("").trim();
            !names.iter().any(|n| n.eq_ignore_ascii_case(name))
        })
        .map(str::to_owned)
        .collect();
    pairs.extend(added.map(str::to_owned));
    headers.remove(COOKIE);
    if pairs.is_empty() {
        return;
    }
    if let Ok(mut value) = HeaderValue::from_str(&pairs.join("; ")) {
        value.set_sensitive(true);
        headers.insert(COOKIE, value);
    }
}

fn with_query(uri: &Uri, query: &str) -> Uri {
    let path = uri.path();
    let target = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(target.parse().expect("a path and query that parsed before"));
    Uri::from_parts(parts).expect("the same URI with another query")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_say_what_is_wrong() {
        assert_eq!(Scheme::parse("bearer"), Ok(Scheme::Bearer));
        assert_eq!(
            Scheme::parse("header: X-Api-Key"),
            Ok(Scheme::Header(HeaderName::from_static("x-api-key")))
        );
        assert_eq!(
            Scheme::parse("query:api_key"),
            Ok(Scheme::Query("api_key".into()))
        );
        assert_eq!(
            Scheme::parse("cookie:sid"),
            Ok(Scheme::Cookie("sid".into()))
        );
        assert_eq!(
            Scheme::parse("oauth2"),
            Ok(Scheme::OAuth2 {
                token_url: String::new(),
                scopes: Vec::new()
            })
        );
        assert!(Scheme::parse("header:").is_err());
        assert!(
            Scheme::parse("header:bad name")
                .unwrap_err()
                .contains("header name")
        );
        assert!(
            Scheme::parse("digest")
                .unwrap_err()
                .contains("bearer, basic")
        );
    }

    #[test]
    fn a_request_takes_the_first_alternative_its_secret_fits() {
        // Stripe: basic, then bearer. An `sk_live_…` key is no pair: bearer.
        let stripe = [Scheme::Basic, Scheme::Bearer];
        assert_eq!(choose(&stripe, false), Some(&Scheme::Bearer));
        assert_eq!(choose(&stripe, true), Some(&Scheme::Basic));
        // Nothing fits: the first, to be refused with the reason.
        assert_eq!(choose(&[Scheme::Basic], false), Some(&Scheme::Basic));
        assert_eq!(choose(&[], true), None);
        assert_eq!(
            describe_all(&stripe),
            "Authorization: Basic or Authorization: Bearer"
        );
    }

    #[test]
    fn every_client_copy_is_stripped_wherever_it_travels() {
        let mut headers = HeaderMap::new();
        headers.append("x-api-key", HeaderValue::from_static("a"));
        headers.append("X-API-KEY", HeaderValue::from_static("b"));
        headers.append("cookie", HeaderValue::from_static("sid=1; TOKEN=x"));
        headers.append("cookie", HeaderValue::from_static("token=y; theme=dark"));
        let uri: Uri = "/v1/things?page=2&API_KEY=mine&api_key=again&q=a%20b"
            .parse()
            .unwrap();
        let places = [
            Place::Header(HeaderName::from_static("x-api-key")),
            Place::Query("api_key".into()),
            Place::Cookie("token".into()),
        ];
        let stripped = strip(&places, &mut headers, &uri, |_| false);
        assert_eq!(stripped.uri.unwrap(), "/v1/things?page=2&q=a%20b");
        assert_eq!(stripped.query, ["api_key"]);
        assert!(headers.get("x-api-key").is_none());
        assert_eq!(headers.get_all("cookie").iter().count(), 1);
        assert_eq!(headers["cookie"], "sid=1; theme=dark");
        let unchanged: Uri = "/v1/things?page=2".parse().unwrap();
        assert!(
            strip(&places, &mut headers, &unchanged, |_| false)
                .uri
                .is_none()
        );
        // Names picked by the caller go too, decoded and in any case.
        let uri: Uri = "/v1/things?Access%5FToken=t&page=2&apikey=k"
            .parse()
            .unwrap();
        let stripped = strip(&places, &mut headers, &uri, |name| {
            CREDENTIAL_QUERY_NAMES.contains(&name.to_lowercase().as_str())
        });
        assert_eq!(stripped.uri.unwrap(), "/v1/things?page=2");
        assert_eq!(stripped.query, ["access_token", "apikey"]);
    }

    #[test]
    fn the_stored_secret_goes_where_the_scheme_says() {
        let secret = HeaderValue::from_static("s3cr&t");
        let uri: Uri = "/v1/things?page=2".parse().unwrap();
        let mut headers = HeaderMap::new();
        let uri = inject(&Scheme::Query("key".into()), &secret, &mut headers, &uri).unwrap();
        assert_eq!(uri, "/v1/things?page=2&key=s3cr%26t");
        let mut headers = HeaderMap::new();
        headers.insert("cookie", HeaderValue::from_static("sid=1"));
        assert!(inject(&Scheme::Cookie("key".into()), &secret, &mut headers, &uri).is_none());
        assert_eq!(headers["cookie"], "sid=1; key=s3cr&t");
        assert!(headers["cookie"].is_sensitive());
        let bearer = HeaderValue::from_static("Bearer abc");
        inject(&Scheme::Bearer, &bearer, &mut headers, &uri);
        assert_eq!(headers["authorization"], "Bearer abc");
    }
}
