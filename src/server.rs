//! Accepting connections: HTTP/1.1 and HTTP/2 (prior knowledge, or ALPN over TLS) on one
//! port, each connection served by the stack, and a graceful stop that lets in-flight requests
//! finish.
//!
//! Each connection is bounded before the stack sees it: at most `max_connections` are open
//! (more are closed as they are accepted), the TLS handshake and the first bytes must arrive
//! within the header read timeout, and hyper's own head limits sit above the stack's so an
//! oversized head costs a bounded buffer.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceExt};

use crate::body::Body;
use crate::conn::HeadDeadline;
use crate::layer::auth::PeerCertificate;
use crate::layer::observe::PeerAddr;
use crate::shard::Shards;

/// How connections are accepted and bounded.
#[derive(Clone, Debug)]
pub struct Listening {
    /// Time for the TLS handshake, the first bytes, and each HTTP/1 request head.
    pub header_read_timeout: Duration,
    /// Open connections at once.
    pub max_connections: usize,
    /// hyper's limit on a request head's bytes (a backstop above the stack's own limits).
    pub max_head_bytes: usize,
    /// hyper's limit on header fields (a backstop above the stack's own limit).
    pub max_headers: usize,
    /// Inbound TLS, if configured.
    /// Read for each new connection, so a reload can replace the certificate.
    pub tls: Option<Arc<arc_swap::ArcSwap<rustls::ServerConfig>>>,
}

impl Default for Listening {
    fn default() -> Self {
        Listening {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 2048,
            max_head_bytes: 64 * 1024,
            max_headers: 128,
            tls: None,
        }
    }
}

/// Serves `service` on `listener` until `shutdown` completes, then waits up to `grace` for
/// open connections to finish their requests. Each connection is served on one of `shards`
/// if given, else on the runtime that accepted it.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    listening: &Listening,
    shards: Option<&Shards>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(listening.header_read_timeout)
        .max_buf_size(listening.max_head_bytes.max(8192))
        .max_headers(listening.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(listening.max_head_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(listening.max_connections));
    let tls = listening.tls.clone();
    let head_timeout = listening.header_read_timeout;
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    // Closing at once costs less than a queue, and the client learns at once.
                    tracing::debug!("connection limit reached; closing a new connection");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                // Every request knows its peer, for the access log and the admin's loopback check.
                let service = service.clone().map_request(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    req
                });
                let (builder, tls) = (builder.clone(), tls.clone());
                let watcher = graceful.watcher();
                let connection = move |stream: TcpStream| async move {
                    let _slot = slot;
                    let result = match tls {
                        None => {
                            let io = TokioIo::new(HeadDeadline::new(stream, head_timeout));
                            let conn = builder
                                .serve_connection(io, TowerToHyperService::new(service));
                            watcher.watch(conn).await
                        }
                        Some(config) => {
                            let acceptor = TlsAcceptor::from(config.load_full());
                            let tls = match tokio::time::timeout(head_timeout, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => tls,
                                Ok(Err(error)) => {
                                    tracing::debug!(%error, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!("TLS handshake timed out");
                                    return;
                                }
                            };
                            let peer = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .and_then(crate::tls::peer_subject)
                                .map(|subject| PeerCertificate { subject });
                            let service = service.map_request(move |mut req: Request<Incoming>| {
                                if let Some(peer) = &peer {
                                    req.extensions_mut().insert(peer.clone());
                                }
                                req
                            });
                            let io = TokioIo::new(HeadDeadline::new(tls, head_timeout));
                            let conn = builder
                                .serve_connection(io, TowerToHyperService::new(service));
                            watcher.watch(conn).await
                        }
                    };
                    if let Err(error) = result {
                        tracing::debug!(error = %error, "connection closed with an error");
                    }
                };
                match shards {
                    None => {
                        tokio::spawn(connection(stream));
                    }
                    Some(shards) => match stream.into_std() {
                        Ok(stream) => shards.spawn(async move {
                            // Registered with the shard's own reactor: its readiness wakes
                            // only the shard.
                            match TcpStream::from_std(stream) {
                                Ok(stream) => connection(stream).await,
                                Err(error) => tracing::warn!(%error, "could not move a connection to a serving thread"),
                            }
                        }),
                        Err(error) => tracing::warn!(%error, "could not move a connection to a serving thread"),
                    },
                }
            }
            () = &mut shutdown => break,
        }
    }
    let addr = listener.local_addr().ok();
    drop(listener);
    tracing::info!(
        addr = addr.map(tracing::field::display),
        "listener closed; finishing open connections"
    );
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "connections still open after the grace period");
        }
    }
}
