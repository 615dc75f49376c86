//! Routing, path normalisation and body validation over arbitrary input: nothing panics,
//! nothing that decodes to a different path routes, and no body that reaches the upstream
//! fails the schema or parses differently than it was validated.
//!
//! Input: one byte choosing the method, the path up to the first `\n`, the body after it.

#![no_main]

use std::sync::LazyLock;

use http::Method;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use specgate::config::UnknownRoutes;
use specgate::error::Error;
use specgate::layer::validate::check_request;
use specgate::route::RouteTable;
use specgate::spec::{Spec, SpecSource};

#[path = "../../tests/support/path_oracle.rs"]
mod path_oracle;
use path_oracle::decodes_to_a_clean_path;

struct Tables {
    reject: RouteTable,
    forward: RouteTable,
}

static TABLES: LazyLock<Tables> = LazyLock::new(|| {
    let spec = Spec::load(&SpecSource::default()).expect("the embedded spec loads");
    Tables {
        reject: RouteTable::new(&spec),
        forward: RouteTable::new(&spec)
            .with_unknown_routes(UnknownRoutes::Forward),
    }
});

const METHODS: [Method; 9] = [
    Method::POST,
    Method::GET,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::HEAD,
    Method::OPTIONS,
    Method::TRACE,
    Method::CONNECT,
];

const MAX_DEPTH: usize = 32;

fuzz_target!(|data: &[u8]| {
    let Some((selector, rest)) = data.split_first() else {
        return;
    };
    let method = &METHODS[usize::from(*selector) % METHODS.len()];
    let (path, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };

    // The JSON reader alone: it agrees with serde_json whenever it accepts.
    match specgate::json::parse(body, MAX_DEPTH) {
        Ok(value) => {
            let plain: Value = serde_json::from_slice(body).expect("accepted JSON is JSON");
            assert_eq!(plain, value, "read differently than serde_json reads it");
        }
        Err(Error::MalformedJson(_)) => {
            assert!(serde_json::from_slice::<Value>(body).is_err());
        }
        Err(Error::DuplicateKey { .. } | Error::JsonTooDeep { .. }) => {}
        Err(other) => panic!("unexpected error from the JSON reader: {other:?}"),
    }

    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    for table in [&TABLES.reject, &TABLES.forward] {
        let routed = match table.route(method, path) {
            Ok(routed) => routed,
            Err(error) => {
                assert!(error.status().is_client_error(), "{error:?}");
                let _ = error.to_response(None);
                continue;
            }
        };
        assert!(
            decodes_to_a_clean_path(path),
            "{path:?} routed but decodes to something else"
        );
        assert!(routed.upstream_path.starts_with('/'));
        let operation = &routed.operation;
        let Some(request_body) = &operation.body else {
            continue;
        };
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        match check_request(&routed, operation, None, &headers, body, MAX_DEPTH) {
            Ok(Some(value)) => {
                // What would be forwarded: the very bytes, which serde_json reads as the value
                // that passed the schema.
                let reread: Value = serde_json::from_slice(body).unwrap();
                assert_eq!(reread, value);
                if let Some(schema) = request_body.json_schema() {
                    assert!(schema.is_valid(&reread), "an invalid body passed");
                }
            }
            Ok(None) => assert!(!request_body.required),
            Err(error) => {
                assert!(error.status().is_client_error(), "{error:?}");
                let _ = error.to_response(None);
            }
        }
    }
});
