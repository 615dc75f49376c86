//! Real parts for end-to-end tests: a CA made with rcgen, an HTTPS upstream on 127.0.0.1, and
//! the specgate binary run as a child process on port 0.

#![allow(dead_code)] // each test file uses its own subset

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

/// A token no other string in the tests contains: finding it anywhere but upstream is a leak.
pub const CANARY_TOKEN: &str = "tok-CANARY-5f1e0c9b7a-specgate";

/// The seed's example create request.
pub const VALID_CREATE: &str = r#"{"connection":{"service":"fooCommerce","externalid":"toystore123","name":"Toystore, Inc.","logoUrl":"http://example.com/i/foo.png","linkUrl":"http://example.com/foo/","listId":"1"}}"#;

/// The seed's example create response.
pub const CREATED: &str = r#"{"connection":{"isInternal":0,"service":"fooCommerce","externalid":"toystore123","name":"Toystore, Inc.","logoUrl":"http://example.com/i/foo.png","linkUrl":"http://example.com/foo/","listId":"1","cdate":"2017-02-02T14:56:05-06:00","udate":"2017-02-02T14:56:05-06:00","links":{"customers":"/connections/1/customers"},"id":"1"}}"#;

pub fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A certificate authority and a server certificate it signed for `localhost` and 127.0.0.1.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub ca_pem: PathBuf,
    pub server: Arc<rustls::ServerConfig>,
    issuer: Issuer<'static, KeyPair>,
    leaf_pem: (String, String),
}

/// A certificate and its key, PEM-encoded.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        install_crypto();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "specgate test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let leaf_pem = (
            format!("{}{}", leaf.pem(), ca_cert.pem()),
            leaf_key.serialize_pem(),
        );

        let dir = tempfile::tempdir().unwrap();
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let mut server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), ca_cert.der().clone()], key)
            .unwrap();
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let _: &CertificateDer = ca_cert.der();
        TestCa {
            dir,
            ca_pem,
            server: Arc::new(server),
            issuer,
            leaf_pem,
        }
    }

    /// Writes the `localhost` server certificate chain and key into the CA's directory, for
    /// specgate's own TLS listener: (cert, key) paths.
    pub fn server_files(&self) -> (PathBuf, PathBuf) {
        let cert = self.dir.path().join("server.pem");
        let key = self.dir.path().join("server.key");
        std::fs::write(&cert, &self.leaf_pem.0).unwrap();
        std::fs::write(&key, &self.leaf_pem.1).unwrap();
        (cert, key)
    }

    /// A client certificate with this subject common name.
    pub fn client_cert(&self, common_name: &str) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// An HTTPS client that trusts this CA, presenting `identity` if given.
    pub fn https_client(&self, identity: Option<&Issued>) -> reqwest::Client {
        install_crypto();
        let ca = std::fs::read(&self.ca_pem).unwrap();
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()]);
        if let Some(id) = identity {
            let pem = format!("{}{}", id.cert_pem, id.key_pem);
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }
}

/// A request the upstream received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: http::Method,
    pub uri: http::Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// How the upstream answers.
pub enum Reply {
    /// This status, content type and body.
    With(StatusCode, &'static str, Bytes),
    /// Never answer.
    Hang,
}

impl Reply {
    pub fn json(status: u16, body: &str) -> Reply {
        Reply::With(
            StatusCode::from_u16(status).unwrap(),
            "application/json",
            Bytes::from(body.to_owned()),
        )
    }
}

type Responder = dyn Fn(&Seen) -> Reply + Send + Sync;

/// An HTTPS server on 127.0.0.1 standing in for ActiveCampaign.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    count: tokio::sync::watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Answers every request with the seed's 201 create response.
    pub async fn created(ca: &TestCa) -> Upstream {
        Upstream::start(ca, |_| Reply::json(201, CREATED)).await
    }

    pub async fn start(
        ca: &TestCa,
        respond: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server.clone());
        let respond: Arc<Responder> = Arc::new(respond);
        let log = seen.clone();
        let (counter, count) = tokio::sync::watch::channel(0usize);
        let counter = Arc::new(counter);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let respond = respond.clone();
                let log = log.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let respond = respond.clone();
                        let log = log.clone();
                        let counter = counter.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let seen = Seen {
                                method: parts.method,
                                uri: parts.uri,
                                version: parts.version,
                                headers: parts.headers,
                                body,
                            };
                            let reply = respond(&seen);
                            let n = {
                                let mut log = log.lock().unwrap();
                                log.push(seen);
                                log.len()
                            };
                            counter.send_replace(n);
                            match reply {
                                Reply::With(status, content_type, body) => Ok::<_, Infallible>(
                                    Response::builder()
                                        .status(status)
                                        .header("content-type", content_type)
                                        .header("x-upstream", "stand-in")
                                        .body(Full::new(body))
                                        .unwrap(),
                                ),
                                Reply::Hang => std::future::pending().await,
                            }
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            seen,
            count,
            task,
        }
    }

    /// Waits until the upstream has received `n` requests (bounded: panics after 30 s).
    pub async fn wait_for_requests(&self, n: usize) {
        let mut count = self.count.clone();
        tokio::time::timeout(Duration::from_secs(30), count.wait_for(|c| *c >= n))
            .await
            .expect("the upstream did not receive the requests in time")
            .unwrap();
    }

    /// The base URL to give specgate.
    pub fn url(&self) -> String {
        format!("https://localhost:{}/api/3", self.addr.port())
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// The specgate binary under test (`cargo test --release` makes it the release build).
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_specgate")
}

/// A running specgate process.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub stderr: Arc<Mutex<String>>,
    /// Signalled on every new line in `stderr`.
    lines: Arc<std::sync::Condvar>,
    pub stdout: Arc<Mutex<Vec<u8>>>,
    pub audit_log: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment a gateway in front of `upstream` needs, token from a file.
pub fn env_for(ca: &TestCa, upstream: &Upstream) -> Vec<(String, String)> {
    let token_file = ca.dir.path().join("token");
    std::fs::write(&token_file, format!("{CANARY_TOKEN}\n")).unwrap();
    vec![
        ("SPECGATE_UPSTREAM".into(), upstream.url()),
        (
            "SPECGATE_UPSTREAM_CA".into(),
            ca.ca_pem.display().to_string(),
        ),
        (
            "SPECGATE_API_TOKEN_FILE".into(),
            token_file.display().to_string(),
        ),
    ]
}

impl Gateway {
    /// Starts specgate with `env` (plus port 0 and a fresh audit log) and waits for it to say
    /// it is ready.
    pub fn start(env: &[(String, String)]) -> Gateway {
        Gateway::start_in(None, env)
    }

    pub fn start_in(cwd: Option<&Path>, env: &[(String, String)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let audit_log = dir.path().join("audit").join("specgate-audit.jsonl");
        let mut command = Command::new(binary());
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SPECGATE_LISTEN", "127.0.0.1:0")
            .env("SPECGATE_ADMIN_LISTEN", "127.0.0.1:0")
            .env("SPECGATE_AUDIT_LOG", &audit_log)
            .env("SPECGATE_LOG_FORMAT", "json")
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(cwd) = cwd {
            command.current_dir(cwd).env_remove("SPECGATE_AUDIT_LOG");
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn specgate");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let mut out_pipe = child.stdout.take().unwrap();
        let out = stdout.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut out_pipe, &mut buf) {
                if n == 0 {
                    break;
                }
                out.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let lines = Arc::new(std::sync::Condvar::new());
        let notify = lines.clone();
        let (ready_tx, ready_rx) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                    && event["message"] == "specgate ready"
                {
                    let listen = event["listen"].as_str().unwrap();
                    let _ = ready_tx.send(listen.parse::<SocketAddr>().unwrap());
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
                notify.notify_all();
            }
        });
        // Bounded wait on the ready line itself: no sleeping, no polling.
        let addr = match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("specgate did not become ready:\n{}", stderr.lock().unwrap());
            }
        };
        let audit_log = match cwd {
            Some(cwd) => cwd.join("audit/specgate-audit.jsonl"),
            None => audit_log,
        };
        Gateway {
            child,
            addr,
            stderr,
            lines,
            stdout,
            audit_log,
            dir,
        }
    }

    /// The process id, to read its memory use.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded: panics after `within`) until the logs hold `count` lines containing
    /// `needle`. Woken by each log line; no sleeping.
    pub fn wait_for_log(&self, needle: &str, count: usize, within: Duration) {
        let log = self.stderr.lock().unwrap();
        let (log, timeout) = self
            .lines
            .wait_timeout_while(log, within, |log| log.matches(needle).count() < count)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "no {count} log lines with {needle:?} within {within:?}:\n{log}"
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("every audit line is JSON"))
            .collect()
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

/// Runs specgate to completion (for start-up failures): exit status and stderr.
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let output = Command::new(binary())
        .args(args)
        .env_clear()
        .env("SPECGATE_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run specgate");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A plain HTTP client for talking to the gateway.
pub fn client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Sends `head` (request line and headers, without the final blank line) and `body` over a raw
/// connection, exactly as written: HTTP clients normalise dot segments and encodings away, and
/// the point of some tests is to send what an attacker would. Returns status and body.
pub async fn raw_request(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{head}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
