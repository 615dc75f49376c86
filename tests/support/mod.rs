//! Real parts for end-to-end tests: a CA made with rcgen, an HTTPS upstream on 127.0.0.1, and
//! the specgate binary run as a child process on port 0.

#![allow(dead_code)] // not every helper is used by every configuration of the tests

pub mod ca;
pub mod path_oracle;
pub mod pg;
pub mod postgres;

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{CertificateParams, DnType, Issuer, KeyPair};
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
        let certs = ca::LocalCa::new("specgate test CA");
        let leaf_pem = (certs.chain_pem(), certs.leaf_key.serialize_pem());
        let ca::LocalCa {
            ca: ca_cert,
            issuer,
            leaf,
            leaf_key,
        } = certs;

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
    /// The address of the connection it came on (specgate's side of it).
    pub peer: SocketAddr,
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
    /// Answer with the reply once the gate lets one request through.
    Held(Arc<tokio::sync::Semaphore>, Box<Reply>),
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
    arrivals: tokio::sync::watch::Receiver<usize>,
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
        let (arrived, arrivals) = tokio::sync::watch::channel(0usize);
        let arrived = Arc::new(arrived);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let respond = respond.clone();
                let log = log.clone();
                let arrived = arrived.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let respond = respond.clone();
                        let log = log.clone();
                        let arrived = arrived.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let seen = Seen {
                                peer,
                                method: parts.method,
                                uri: parts.uri,
                                version: parts.version,
                                headers: parts.headers,
                                body,
                            };
                            let mut reply = respond(&seen);
                            log.lock().unwrap().push(seen);
                            arrived.send_modify(|n| *n += 1);
                            if let Reply::Held(gate, then) = reply {
                                gate.acquire().await.unwrap().forget();
                                reply = *then;
                            }
                            match reply {
                                Reply::With(status, content_type, body) => Ok::<_, Infallible>(
                                    Response::builder()
                                        .status(status)
                                        .header("content-type", content_type)
                                        .header("x-upstream", "stand-in")
                                        .body(Full::new(body))
                                        .unwrap(),
                                ),
                                Reply::Hang | Reply::Held(..) => std::future::pending().await,
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
            arrivals,
            task,
        }
    }

    /// Waits (at most 30 s) until the upstream has received `n` requests.
    pub async fn wait_for_requests(&self, n: usize) {
        let mut arrivals = self.arrivals.clone();
        tokio::time::timeout(
            Duration::from_secs(30),
            arrivals.wait_for(|seen| *seen >= n),
        )
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
    child: Option<Child>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub stderr: Arc<(Mutex<String>, Condvar)>,
    /// Everything it wrote to stdout.
    pub stdout: Arc<Mutex<Vec<u8>>>,
    pub audit_log: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
    /// it serves (`specgate ready`, or `specgate serving, not ready: …`).
    pub fn start(env: &[(String, String)]) -> Gateway {
        Gateway::start_in(None, env)
    }

    pub fn start_in(cwd: Option<&Path>, env: &[(String, String)]) -> Gateway {
        Gateway::launch(&[], &["serve"], cwd, env)
    }

    /// Starts `specgate <args>` (a `serve`) and waits for the line saying it serves.
    pub fn start_with(args: &[&str], cwd: Option<&Path>, env: &[(String, String)]) -> Gateway {
        Gateway::launch(&[], args, cwd, env)
    }

    /// Starts `specgate <args>` under `wrapper` (such as `prlimit --fsize=4096`).
    pub fn launch(
        wrapper: &[&str],
        args: &[&str],
        cwd: Option<&Path>,
        env: &[(String, String)],
    ) -> Gateway {
        let command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        Gateway::spawn(command, args, cwd, env)
    }

    /// Starts another build of specgate (`program`, such as the one a Dockerfile stage built)
    /// with `args`.
    pub fn launch_program(program: &Path, args: &[&str], env: &[(String, String)]) -> Gateway {
        Gateway::spawn(Command::new(program), args, None, env)
    }

    fn spawn(
        mut command: Command,
        args: &[&str],
        cwd: Option<&Path>,
        env: &[(String, String)],
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let mut audit_log = dir.path().join("audit").join("specgate-audit.jsonl");
        if let Some((_, path)) = env.iter().find(|(k, _)| k == "SPECGATE_AUDIT_LOG") {
            audit_log = PathBuf::from(path);
        }
        command
            .args(args)
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
        // Every byte it writes is kept, for tests that search all of it.
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
        let stderr = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                // Kept before it is acted on, so the log a test reads holds the line it waited for.
                {
                    let (text, changed) = &*log;
                    let mut text = text.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                    changed.notify_all();
                }
                // Serving: ready, or not yet (the log says why); both carry the addresses.
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                    && event["message"].as_str().is_some_and(|m| {
                        m == "specgate ready" || m.starts_with("specgate serving, not ready: ")
                    })
                    && event["listen"].is_string()
                {
                    let addr = |field: &str| {
                        event[field]
                            .as_str()
                            .unwrap()
                            .parse::<SocketAddr>()
                            .unwrap()
                    };
                    let _ = ready_tx.send((addr("listen"), addr("admin_listen")));
                }
            }
        });
        // Bounded wait on the ready line itself: no sleeping, no polling.
        let (addr, admin) = match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addrs) => addrs,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "specgate did not become ready:\n{}",
                    stderr.0.lock().unwrap()
                );
            }
        };
        let audit_log = match cwd {
            Some(cwd) => cwd.join("audit/specgate-audit.jsonl"),
            None => audit_log,
        };
        Gateway {
            child: Some(child),
            addr,
            admin,
            stderr,
            stdout,
            audit_log,
            dir,
        }
    }

    /// The process id, to read its memory use.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits (bounded: panics after `within`) until the logs hold `count` lines containing
    /// `needle`. Woken by each log line; no sleeping.
    pub fn wait_for_log_text(&self, needle: &str, count: usize, within: Duration) {
        let (text, changed) = &*self.stderr;
        let log = text.lock().unwrap();
        let (log, timeout) = changed
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

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Sends a signal (`TERM`, `HUP`, ...) with the system's `kill`.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// Waits (at most 60 s) for the process to exit.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let waited = tokio::task::spawn_blocking(move || {
            let status = child.wait();
            (child, status)
        });
        match tokio::time::timeout(Duration::from_secs(60), waited).await {
            Ok(joined) => joined.unwrap().1.unwrap(),
            Err(_) => panic!("specgate did not exit:\n{}", self.logs()),
        }
    }

    /// Waits (at most 30 s) until the log holds `count` JSON events with this message, and
    /// returns the last of them.
    pub fn wait_for_log(&self, message: &str, count: usize) -> serde_json::Value {
        let (text, changed) = &*self.stderr;
        let matching = |text: &str| -> Vec<serde_json::Value> {
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|e| e["message"] == message)
                .collect()
        };
        let guard = text.lock().unwrap();
        let (guard, timeout) = changed
            .wait_timeout_while(guard, Duration::from_secs(30), |t| {
                matching(t).len() < count
            })
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "no {count} {message:?} events in the log:\n{guard}"
        );
        matching(&guard).pop().unwrap()
    }

    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("every audit line is JSON"))
            .collect()
    }

    pub fn logs(&self) -> String {
        self.stderr.0.lock().unwrap().clone()
    }

    /// SIGTERM, and wait for the graceful exit; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        self.signal("TERM");
        self.child.take().unwrap().wait().unwrap().code()
    }

    /// SIGKILL: no shutdown, no flush, as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// Runs `specgate <args>` to completion with a clean environment: exit code, stdout, stderr.
pub fn specgate(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(binary())
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .expect("run specgate");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
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
