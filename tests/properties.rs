//! Property tests: no input makes routing, JSON reading, validation or the running gateway
//! panic or fail on its own, and no body that fails the schema, or that could be read two ways,
//! is ever forwarded.

use crate::support;

use http::Method;
use proptest::prelude::*;
use serde_json::Value;
use specgate::config::UnknownRoutes;
use specgate::error::Error;
use specgate::layer::validate::check_request;
use specgate::route::RouteTable;
use specgate::spec::{Spec, SpecSource};
use support::path_oracle::decodes_to_a_clean_path;
use support::*;

const MAX_DEPTH: usize = 8;

static SPEC: std::sync::LazyLock<Spec> =
    std::sync::LazyLock::new(|| Spec::load(&SpecSource::default()).unwrap());

fn spec() -> &'static Spec {
    &SPEC
}

/// Path segments mixing the spec's words with every trick the path checks know of.
fn path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("."),
        Just(".."),
        Just("%2e"),
        Just("%2E"),
        Just("%2f"),
        Just("%5C"),
        Just("%25"),
        Just("%252e"),
        Just(";"),
        Just(";x"),
        Just("%3b"),
        Just("%00"),
        Just("%c0%ae"),
        Just("%ef%bc%8e"),
        Just("\\"),
        Just("api"),
        Just("3"),
        Just("connections"),
        Just("contacts"),
        Just("a"),
        Just("%41"),
        Just("%"),
    ];
    let segment = prop::collection::vec(piece, 0..4).prop_map(|p| p.concat());
    prop::collection::vec(segment, 0..5).prop_map(|s| format!("/{}", s.join("/")))
}

/// A JSON document as written, so objects may repeat keys.
#[derive(Clone, Debug)]
enum Json {
    Null,
    Bool(bool),
    Num(i64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn render(&self) -> String {
        match self {
            Json::Null => "null".into(),
            Json::Bool(b) => b.to_string(),
            Json::Num(n) => n.to_string(),
            Json::Str(s) => serde_json::to_string(s).unwrap(),
            Json::Arr(items) => format!(
                "[{}]",
                items.iter().map(Json::render).collect::<Vec<_>>().join(",")
            ),
            Json::Obj(entries) => format!(
                "{{{}}}",
                entries
                    .iter()
                    .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), v.render()))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    fn has_duplicate_key(&self) -> bool {
        match self {
            Json::Arr(items) => items.iter().any(Json::has_duplicate_key),
            Json::Obj(entries) => {
                let mut keys: Vec<&String> = entries.iter().map(|(k, _)| k).collect();
                keys.sort();
                keys.windows(2).any(|w| w[0] == w[1])
                    || entries.iter().any(|(_, v)| v.has_duplicate_key())
            }
            _ => false,
        }
    }

    fn depth(&self) -> usize {
        match self {
            Json::Arr(items) => 1 + items.iter().map(Json::depth).max().unwrap_or(0),
            Json::Obj(entries) => 1 + entries.iter().map(|(_, v)| v.depth()).max().unwrap_or(0),
            _ => 0,
        }
    }
}

fn json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::Num),
        "[a-c\\[\\]{}\"\\\\]{0,3}".prop_map(Json::Str),
    ];
    leaf.prop_recursive(12, 64, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Arr),
            prop::collection::vec(("[a-c]{1,2}", inner), 0..4).prop_map(Json::Obj),
        ]
    })
}

/// Bodies shaped like the seed's create: its fields (and others), of any type, any count.
fn create_body() -> impl Strategy<Value = Json> {
    let field = prop_oneof![
        Just("service"),
        Just("externalid"),
        Just("name"),
        Just("logoUrl"),
        Just("linkUrl"),
        Just("listId"),
        Just("extra"),
    ]
    .prop_map(str::to_owned);
    let value = prop_oneof![
        "[a-z:/.]{0,12}".prop_map(Json::Str),
        any::<i64>().prop_map(Json::Num),
        Just(Json::Null),
        Just(Json::Arr(vec![])),
    ];
    prop::collection::vec((field, value), 0..9)
        .prop_map(|entries| Json::Obj(vec![("connection".to_owned(), Json::Obj(entries))]))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn nothing_that_decodes_to_another_path_routes(path in path(), post in any::<bool>()) {
        let spec = spec();
        let method = if post { Method::POST } else { Method::GET };
        for table in [
            RouteTable::new(spec),
            RouteTable::new(spec).with_unknown_routes(UnknownRoutes::Forward),
        ] {
            match table.route(&method, &path) {
                Ok(_) => prop_assert!(decodes_to_a_clean_path(&path), "{path:?} routed"),
                Err(e) => prop_assert!(e.status().is_client_error()),
            }
        }
    }

    #[test]
    fn a_trailing_slash_never_reaches_an_operation_unchecked(path in path(), post in any::<bool>()) {
        // Forwarded as an unknown path, `/connections/` could reach the create upstream
        // without its body being checked: a path the document has without the slash is refused.
        let spec = spec();
        let method = if post { Method::POST } else { Method::GET };
        let table = RouteTable::new(spec).with_unknown_routes(UnknownRoutes::Forward);
        let reject = RouteTable::new(spec);
        if let (Ok(routed), Some(bare)) = (table.route(&method, &path), path.strip_suffix('/')) {
            prop_assert!(!routed.unspecified || reject.route(&method, bare).is_err(), "{path:?}");
        }
    }

    #[test]
    fn json_is_accepted_exactly_when_unambiguous_and_shallow(doc in json()) {
        let text = doc.render();
        let result = specgate::json::parse(text.as_bytes(), MAX_DEPTH);
        if doc.depth() > MAX_DEPTH {
            prop_assert!(matches!(result, Err(Error::JsonTooDeep { .. })), "{text}");
        } else if doc.has_duplicate_key() {
            prop_assert!(matches!(result, Err(Error::DuplicateKey { .. })), "{text}");
        } else {
            let plain: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(result.unwrap(), plain);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_json_reader(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = specgate::json::parse(&bytes, MAX_DEPTH);
    }

    #[test]
    fn only_schema_valid_unambiguous_creates_pass_validation(doc in create_body()) {
        let spec = spec();
        let table = RouteTable::new(spec);
        let routed = table.route(&Method::POST, "/api/3/connections").unwrap();
        let schema = routed.operation.body.as_ref().unwrap().json_schema().unwrap();
        let text = doc.render();
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        match check_request(&routed, &routed.operation, None, &headers, text.as_bytes(), 32) {
            Ok(value) => {
                prop_assert!(!doc.has_duplicate_key(), "{text}");
                let value = value.unwrap();
                prop_assert!(schema.is_valid(&value), "{text}");
            }
            Err(e) => prop_assert!(e.status().is_client_error()),
        }
    }
}

fn request() -> impl Strategy<Value = (String, String, Option<&'static str>, Vec<u8>)> {
    // POST and the known-valid body weigh more, so that 300 cases forward ~11 creates and the
    // check that some were forwarded cannot fail by chance (at equal weights it did, ~6%).
    let method = prop_oneof![
        3 => Just("POST"),
        1 => Just("GET"),
        1 => Just("PUT"),
        1 => Just("DELETE"),
        1 => Just("PATCH"),
        1 => Just("OPTIONS"),
        1 => Just("HEAD"),
    ]
    .prop_map(str::to_owned);
    let target = prop_oneof![
        3 => Just("/api/3/connections".to_owned()),
        1 => Just("/connections".to_owned()),
        2 => path(),
    ];
    let content_type = prop_oneof![
        Just(Some("application/json")),
        Just(Some("application/json; charset=utf-8")),
        Just(Some("application/vnd.api+json")),
        Just(Some("text/plain")),
        Just(None),
    ];
    let body = prop_oneof![
        3 => create_body().prop_map(|j| j.render().into_bytes()),
        1 => json().prop_map(|j| j.render().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        2 => Just(VALID_CREATE.as_bytes().to_vec()),
    ];
    (method, target, content_type, body)
}

#[test]
fn the_running_gateway_never_fails_on_its_own_nor_forwards_an_invalid_body() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ca = TestCa::new();
    let upstream = runtime.block_on(Upstream::created(&ca));
    let gw = Gateway::start(&env_for(&ca, &upstream));
    let config = ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |((method, target, content_type, body) in request())| {
        let mut head = format!("{method} {target} HTTP/1.1\r\nhost: 127.0.0.1");
        if let Some(ct) = content_type {
            head.push_str(&format!("\r\ncontent-type: {ct}"));
        }
        let (status, answer) = runtime.block_on(raw_request(gw.addr, &head, &body));
        prop_assert!(status != 0, "no answer to {head:?}");
        // The upstream only ever answers 201: any 5xx would be the gateway's own failure.
        prop_assert!(status < 500, "{status} for {head:?}: {answer}");
    });

    // Whatever was forwarded passed the schema, has no repeated key, and went to the spec's path.
    let table = RouteTable::new(spec());
    let routed = table.route(&Method::POST, "/api/3/connections").unwrap();
    let schema = routed
        .operation
        .body
        .as_ref()
        .unwrap()
        .json_schema()
        .unwrap();
    let forwarded = upstream.requests();
    assert!(!forwarded.is_empty(), "some valid creates were generated");
    for request in forwarded {
        assert_eq!(request.method, "POST");
        assert_eq!(request.uri.path(), "/api/3/connections");
        let value = specgate::json::parse(&request.body, 32).expect("unambiguous JSON");
        assert!(schema.is_valid(&value));
    }
}
