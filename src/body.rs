//! The one body type that flows through the stack, in both directions.
//!
//! Most bodies are either already in memory (validated requests, error responses, audited
//! responses) or hyper's own streaming body. Both are carried without boxing; anything else
//! (a size-limited stream, a test body) is boxed.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;

/// The error type bodies carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body.
#[derive(Debug)]
pub struct Body(Kind);

#[derive(Debug)]
enum Kind {
    /// All of the body, in memory; `None` once it has been yielded.
    Full(Option<Bytes>),
    /// hyper's body, straight from a connection.
    Incoming(hyper::body::Incoming),
    /// Anything else.
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Body(Kind::Full(None))
    }

    /// A body of these bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Self::empty()
        } else {
            Body(Kind::Full(Some(bytes)))
        }
    }

    /// The whole body, if it can be sent again: one held in memory, or one that has ended
    /// without a byte. A body still streaming in from the client cannot.
    pub fn replayable(&self) -> Option<Bytes> {
        match &self.0 {
            Kind::Full(bytes) => Some(bytes.clone().unwrap_or_default()),
            _ if http_body::Body::is_end_stream(self) => Some(Bytes::new()),
            _ => None,
        }
    }

    /// A copy of `req` that can be sent in its place, if its body can be sent again (see
    /// [`Body::replayable`]): method, URI, version, headers and extensions, and the same bytes.
    pub fn copy_if_replayable(req: &http::Request<Body>) -> Option<http::Request<Body>> {
        let body = req.body().replayable()?;
        let mut copy = http::Request::new(Body::full(body));
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }

    /// Wraps any other body.
    pub fn new<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Body(Kind::Boxed(body.map_err(Into::into).boxed_unsync()))
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<hyper::body::Incoming> for Body {
    fn from(body: hyper::body::Incoming) -> Self {
        Body(Kind::Incoming(body))
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Self::full(bytes)
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Self::full(s)
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Self::full(Bytes::from_static(s.as_bytes()))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Incoming(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Kind::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Incoming(body) => body.is_end_stream(),
            Kind::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Incoming(body) => body.size_hint(),
            Kind::Boxed(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_body_yields_its_bytes_once_with_an_exact_size() {
        let body = Body::full("abc");
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(3));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"abc");
    }

    #[tokio::test]
    async fn a_request_held_in_memory_is_copied_whole_and_a_streaming_one_is_not() {
        let req = http::Request::post("/connections?x=1")
            .header("api-token", "t")
            .extension(7u8)
            .body(Body::full("abc"))
            .unwrap();
        let copy = Body::copy_if_replayable(&req).unwrap();
        assert_eq!(copy.method(), "POST");
        assert_eq!(copy.uri(), "/connections?x=1");
        assert_eq!(copy.headers()["api-token"], "t");
        assert_eq!(copy.extensions().get::<u8>(), Some(&7));
        let bytes = copy.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"abc");

        /// A body still arriving.
        struct Streaming;
        impl http_body::Body for Streaming {
            type Data = Bytes;
            type Error = BoxError;
            fn poll_frame(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
                Poll::Pending
            }
        }
        let req = http::Request::new(Body::new(Streaming));
        assert!(Body::copy_if_replayable(&req).is_none());
    }

    #[test]
    fn empty_body_is_at_its_end() {
        assert!(http_body::Body::is_end_stream(&Body::empty()));
        assert!(http_body::Body::is_end_stream(&Body::full("")));
    }
}
