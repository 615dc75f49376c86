//! Guards on each client connection, before hyper sees a byte: a bound on open connections and
//! a deadline for a connection's first bytes.
//!
//! hyper's HTTP/1 `header_read_timeout` bounds each request head once hyper is parsing one, and
//! the TLS handshake has its own timeout; but a connection that sends nothing at all, or the
//! first bytes of the HTTP/2 preface and then nothing, would otherwise wait in hyper's protocol
//! detection forever. [`HeadDeadline`] closes such connections at the same deadline.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Bytes after which a connection is past protocol detection (the HTTP/2 preface's length).
const FIRST_BYTES: usize = 24;

pin_project! {
    /// An I/O stream whose reads fail with `TimedOut` if its first [`FIRST_BYTES`] bytes have
    /// not arrived by a deadline.
    pub struct HeadDeadline<I> {
        #[pin]
        io: I,
        // Boxed so the wrapper is `Unpin` whenever the stream is, as hyper needs.
        sleep: Pin<Box<Sleep>>,
        read: usize,
    }
}

impl<I> HeadDeadline<I> {
    /// Wraps `io`, giving it `timeout` from now for its first bytes.
    pub fn new(io: I, timeout: Duration) -> Self {
        HeadDeadline {
            io,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            read: 0,
        }
    }
}

impl<I: AsyncRead> AsyncRead for HeadDeadline<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.io.poll_read(cx, buf);
        if *this.read < FIRST_BYTES {
            match &result {
                Poll::Ready(Ok(())) => *this.read += buf.filled().len() - before,
                Poll::Pending => {
                    if this.sleep.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no request from the client in time",
                        )));
                    }
                }
                Poll::Ready(Err(_)) => {}
            }
        }
        result
    }
}

impl<I: AsyncWrite> AsyncWrite for HeadDeadline<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_times_out() {
        let (client, server) = tokio::io::duplex(64);
        let mut guarded = HeadDeadline::new(server, Duration::from_secs(10));
        let mut buf = [0u8; 8];
        let e = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_preface_times_out_and_a_full_one_disarms_the_deadline() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut guarded = HeadDeadline::new(server, Duration::from_secs(10));
        client.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(guarded.read(&mut buf).await.unwrap(), 16);
        let e = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);

        let (mut client, server) = tokio::io::duplex(64);
        let mut guarded = HeadDeadline::new(server, Duration::from_secs(10));
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(guarded.read(&mut buf).await.unwrap(), 24);
        // Past the first bytes, an idle connection is hyper's to time out, not ours.
        let idle = tokio::time::timeout(Duration::from_secs(60), guarded.read(&mut buf)).await;
        assert!(idle.is_err(), "still waiting after the deadline");
    }
}
