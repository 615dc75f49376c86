//! A local HTTPS stand-in for the ActiveCampaign API, for `tests/schemathesis.sh` and
//! `tests/clients.sh`.
//!
//! `cargo run --example stand_in_upstream -- DIR` makes a CA and a `localhost` certificate with
//! rcgen, writes the CA to `DIR/ca.pem`, listens on 127.0.0.1 (port 0) and prints
//! `{"port": N}` once it is accepting. A create is answered as the API answers it: the
//! connection sent, with an id and dates. A request without exactly one `Api-Token`, the token
//! in `STAND_IN_TOKEN`, with a credential-looking query parameter, or with a body that is not a
//! JSON object, is answered 500, so a gateway that forwards one fails the run's
//! `not_a_server_error` check (and tests/clients.sh).

use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;

#[path = "../tests/support/ca.rs"]
#[allow(dead_code)] // the issuer is for the tests' client certificates
mod ca;

fn tls(dir: &std::path::Path) -> Arc<rustls::ServerConfig> {
    let ca::LocalCa {
        ca: ca_cert,
        leaf,
        leaf_key,
        ..
    } = ca::LocalCa::new("specgate stand-in CA");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone(), ca_cert.der().clone()], key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

fn answer(token: &str, ids: &AtomicU64, req: &Request<()>, body: &[u8]) -> (StatusCode, Value) {
    let sent: Vec<&[u8]> = req
        .headers()
        .get_all("api-token")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if sent != [token.as_bytes()] {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"stand_in": "the request did not carry the stored token"}),
        );
    }
    let query = req.uri().query().unwrap_or_default().to_ascii_lowercase();
    if ["api_key", "apikey", "access_token", "token"]
        .iter()
        .any(|name| {
            query
                .split('&')
                .any(|pair| pair.split('=').next() == Some(name))
        })
    {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"stand_in": "a client's credential reached the query"}),
        );
    }
    let Ok(Value::Object(mut doc)) = serde_json::from_slice::<Value>(body) else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"stand_in": "the body is not a JSON object"}),
        );
    };
    let id = ids.fetch_add(1, Ordering::Relaxed).to_string();
    let mut connection = match doc.remove("connection") {
        Some(Value::Object(c)) => c,
        _ => Default::default(),
    };
    connection.insert("isInternal".into(), json!(0));
    connection.insert("cdate".into(), json!("2017-02-02T14:56:05-06:00"));
    connection.insert("udate".into(), json!("2017-02-02T14:56:05-06:00"));
    connection.insert(
        "links".into(),
        json!({"customers": format!("/connections/{id}/customers")}),
    );
    connection.insert("id".into(), json!(id));
    (StatusCode::OK, json!({ "connection": connection }))
}

#[tokio::main]
async fn main() {
    let dir = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: stand_in_upstream DIR"),
    );
    let token: Arc<str> = std::env::var("STAND_IN_TOKEN")
        .expect("STAND_IN_TOKEN names the token to expect")
        .into();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls(&dir));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", json!({"port": listener.local_addr().unwrap().port()}));
    std::io::stdout().flush().unwrap();
    let ids = Arc::new(AtomicU64::new(1));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, token, ids) = (acceptor.clone(), token.clone(), ids.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (token, ids) = (token.clone(), ids.clone());
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|c| c.to_bytes())
                        .unwrap_or_default();
                    let head = Request::from_parts(parts, ());
                    let (status, value) = answer(&token, &ids, &head, &body);
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(value.to_string())))
                            .unwrap(),
                    )
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}
