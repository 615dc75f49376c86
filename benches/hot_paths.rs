//! The functions every request runs, measured in-process: `cargo bench`.
//!
//! The target for an invalid body (route + parse + validate + render the 422) is a median of
//! at most 50 µs; the figures go in bench/RESULTS.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, header};

use http_body_util::BodyExt;
use tower::{Layer, Service, ServiceExt};

use specgate::audit::{Entry, GENESIS, Outcome, ResourceFields, seal};
use specgate::body::Body;
use specgate::drift::{Answer, DriftMonitor, Settings, check as drift_check};
use specgate::layer::drift::DriftLayer;
use specgate::layer::validate::check_request;
use specgate::metrics::Metrics;
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

/// The seed's example response, as the upstream sends it: 200 and JSON.
const ANSWER: &[u8] = br#"{"connection":{"isInternal":0,"service":"fooCommerce","externalid":"toystore123","name":"Toystore, Inc.","logoUrl":"http://example.com/i/foo.png","linkUrl":"http://example.com/foo/","listId":"1","cdate":"2017-02-02T14:56:05-06:00","udate":"2017-02-02T14:56:05-06:00","links":{"customers":"/connections/1/customers"},"id":"1"}}"#;

/// What the drift check adds: on the response path (the tee, with the check on and off), and
/// off it (the check itself, which runs on its own thread).
fn drift(c: &mut Criterion) {
    let spec = Spec::load(&SpecSource::default()).unwrap();
    let table = RouteTable::new(&spec);
    let routed = table.route(&Method::POST, "/api/3/connections").unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let responses = routed.operation.responses.as_ref().unwrap();
    c.bench_function("drift: check a response (off the response path)", |b| {
        b.iter(|| {
            drift_check(
                black_box(responses),
                Answer {
                    status: 200,
                    headers: &headers,
                    body: Some(black_box(ANSWER)),
                },
            )
        })
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let settings = Settings {
        sample_rate: 1.0,
        max_body_bytes: 256 * 1024,
    };
    let monitor = DriftMonitor::start(settings, 64, Metrics::new()).unwrap();
    // The response path as a non-create sees it (the same operation, not audited): through
    // the layer, the body read to its end.
    let mut doc: serde_json::Value = serde_json::from_str(specgate::spec::EMBEDDED_SPEC.1).unwrap();
    doc["paths"]["/connections"]["post"]["x-specgate-audit"] = false.into();
    let not_audited = Spec::compile("bench", doc).unwrap();
    let not_audited = RouteTable::new(&not_audited);
    let read = not_audited
        .route(&Method::POST, "/api/3/connections")
        .unwrap();
    for (name, monitor) in [
        ("drift: response path, check off", None),
        ("drift: response path, check on", Some(monitor)),
    ] {
        let service = DriftLayer::new(monitor).layer(tower::service_fn(|_req| async {
            let mut response = http::Response::new(Body::full(ANSWER));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok::<_, specgate::error::Error>(response)
        }));
        c.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let mut request = http::Request::new(Body::empty());
                    request.extensions_mut().insert(read.clone());
                    let response = service.clone().ready().await.unwrap().call(request).await;
                    response.unwrap().into_body().collect().await.unwrap()
                })
            })
        });
    }
}

criterion_group!(benches, hot_paths, drift);
criterion_main!(benches);
