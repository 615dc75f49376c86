//! The functions every request runs, measured in-process: `cargo bench`.
//!
//! The target for an invalid body (route + parse + validate + render the 422) is a median of
//! at most 50 µs; the figures go in bench/RESULTS.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, header};

use specgate::audit::{Entry, GENESIS, Outcome, ResourceFields, seal};
use specgate::layer::validate::check_request;
use specgate::route::RouteTable;
use specgate::spec::{Spec, SpecSource};

const VALID: &[u8] = br#"{"connection":{"service":"fooCommerce","externalid":"toystore123","name":"Toystore, Inc.","logoUrl":"http://example.com/i/foo.png","linkUrl":"http://example.com/foo/","listId":"1"}}"#;
const INVALID: &[u8] = br#"{"connection":{"service":"fooCommerce","externalid":123,"logoUrl":"http://example.com/i/foo.png","linkUrl":"http://example.com/foo/","listId":"1"}}"#;

fn hot_paths(c: &mut Criterion) {
    let spec = Spec::load(&SpecSource::default()).unwrap();
    let table = RouteTable::new(&spec);
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );

    c.bench_function("route", |b| {
        b.iter(|| {
            table
                .route(black_box(&Method::POST), black_box("/api/3/connections"))
                .unwrap()
        })
    });

    // A segment crafted against a template with several parameters in one segment: matching
    // must stay linear in its length (backtracking took seconds for 200 characters).
    let crafted = Spec::compile(
        "crafted",
        serde_json::json!({"openapi": "3.1.0", "info": {"title": "t", "version": "1"},
            "paths": {"/f/{a}-{b}-{c}-{d}.zip": {"get": {"responses": {"200": {"description": "ok"}}}}}}),
    )
    .unwrap();
    let crafted = RouteTable::new(&crafted);
    let dashes = format!("/f/{}", "-".repeat(4000));
    c.bench_function("route a crafted 4,000-byte segment", |b| {
        b.iter(|| {
            crafted
                .route(black_box(&Method::GET), black_box(&dashes))
                .is_err()
        })
    });

    let check = |body: &[u8]| {
        let routed = table.route(&Method::POST, "/api/3/connections")?;
        check_request(
            &routed,
            &routed.operation,
            None,
            &headers,
            body,
            specgate::config::defaults::MAX_JSON_DEPTH as usize,
        )
    };

    c.bench_function("route+validate valid body", |b| {
        b.iter(|| check(black_box(VALID)).unwrap())
    });

    c.bench_function("route+validate+render invalid body", |b| {
        b.iter(|| {
            let error = check(black_box(INVALID)).unwrap_err();
            error.to_response(
                Some("0193a0b4-7c1d-7e2f-8a9b-0c1d2e3f4a5b"),
                specgate::error::PROBLEM_JSON,
            )
        })
    });

    let body = Arc::new(serde_json::from_slice::<serde_json::Value>(VALID).unwrap());
    let mut entry = Entry::new(Outcome::Created);
    entry.request_id = Some("0193a0b4-7c1d-7e2f-8a9b-0c1d2e3f4a5b".into());
    entry.operation_id = Some("create-connection".into());
    entry.method = Some("POST".into());
    entry.path = Some("/api/3/connections".into());
    entry.upstream_status = Some(201);
    entry.resource_id = Some("1".into());
    entry.resource = Some(ResourceFields::new(&body, Some("connection")));
    entry.latency_ms = Some(12.5);
    let mut out = Vec::with_capacity(1024);
    c.bench_function("audit record seal", |b| {
        b.iter(|| {
            out.clear();
            seal(black_box(&entry), 42, &GENESIS, None, &mut out)
        })
    });
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
