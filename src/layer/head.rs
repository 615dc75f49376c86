//! Checks the request head before anything else reads it: the method, the form of the request
//! target, and the size of the target and the header section.
//!
//! specgate is a reverse proxy for one upstream, never a forward proxy: `CONNECT` is refused,
//! as is `TRACE` (the upstream would echo the injected token back), and an absolute-form target
//! (`GET http://other.example/... HTTP/1.1`) naming a host other than the request's own `Host`
//! is refused rather than silently sent to the configured upstream. A target over the limit is
//! 414, a header section over its byte or field limit is 431; hyper's own backstops sit above
//! these limits, so the answer is normally this layer's problem+json.
//!
//! A head that passes has its hop-by-hop headers removed here, once, before any layer reads or
//! sets headers: a client's `Connection: Api-Token, Content-Type` must not strip what specgate
//! itself puts on the request later.

use std::task::{Context, Poll};

use http::{Method, Request, Response, Version, header};
use tower_layer::Layer;
use tower_service::Service;

use super::RefuseOr;
use crate::body::Body;
use crate::error::Error;

/// The head limits.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    /// Longest request target, in bytes.
    pub max_uri_bytes: usize,
    /// Largest header section (each field counted as `name: value\r\n`), in bytes.
    pub max_header_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
}

/// Checks a request head against the limits and the proxy's rules.
pub fn check<B>(req: &Request<B>, limits: &HeadLimits) -> Result<(), Error> {
    if req.method() == Method::CONNECT {
        return Err(Error::BadTarget(
            "CONNECT is not served: specgate is a gateway to one API, not a forward proxy",
        ));
    }
    if req.method() == Method::TRACE {
        return Err(Error::BadTarget(
            "TRACE is not served: the upstream would echo the request back",
        ));
    }
    let uri = req.uri();
    let uri_len = uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, |s| s.len() + 3);
    if uri_len > limits.max_uri_bytes {
        return Err(Error::UriTooLong {
            len: uri_len,
            limit: limits.max_uri_bytes,
        });
    }
    let headers = req.headers();
    if headers.len() > limits.max_headers {
        return Err(Error::HeadersTooLarge(format!(
            "the request has {} header fields; the limit is {}",
            headers.len(),
            limits.max_headers
        )));
    }
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes {
        return Err(Error::HeadersTooLarge(format!(
            "the header section is {header_bytes} bytes; the limit is {}",
            limits.max_header_bytes
        )));
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Error::BadTarget("more than one Host header"));
    }
    // In HTTP/2 the authority is the request's own `:authority`; in HTTP/1 a target with an
    // authority is absolute-form, which only a forward proxy is asked for.
    if req.version() < Version::HTTP_2
        && let Some(authority) = uri.authority()
    {
        let same_host = host.is_some_and(|h| {
            h.as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes())
        });
        if !same_host {
            return Err(Error::BadTarget(
                "the request target names another host; specgate only forwards to its configured upstream",
            ));
        }
    }
    Ok(())
}

/// Adds [`HeadCheck`].
#[derive(Clone, Copy, Debug)]
pub struct HeadCheckLayer {
    limits: HeadLimits,
}

impl HeadCheckLayer {
    /// Checks heads against `limits`.
    pub fn new(limits: HeadLimits) -> Self {
        HeadCheckLayer { limits }
    }
}

impl<S> Layer<S> for HeadCheckLayer {
    type Service = HeadCheck<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HeadCheck {
            inner,
            limits: self.limits,
        }
    }
}

/// Refuses heads that break the limits or ask for a proxy.
#[derive(Clone, Debug)]
pub struct HeadCheck<S> {
    inner: S,
    limits: HeadLimits,
}

impl<S, B> Service<Request<B>> for HeadCheck<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Error>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = RefuseOr<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match check(&req, &self.limits) {
            Ok(()) => {
                crate::upstream::strip_hop_by_hop(req.headers_mut());
                RefuseOr::inner(self.inner.call(req))
            }
            Err(error) => RefuseOr::refuse(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_uri_bytes: 64,
        max_header_bytes: 200,
        max_headers: 5,
    };

    fn status(req: Request<()>) -> u16 {
        match check(&req, &LIMITS) {
            Ok(()) => 200,
            Err(e) => e.status().as_u16(),
        }
    }

    #[test]
    fn connect_and_trace_are_refused() {
        for method in [Method::CONNECT, Method::TRACE] {
            let req = Request::builder()
                .method(method)
                .uri("/api/3/connections")
                .body(())
                .unwrap();
            assert_eq!(status(req), 400);
        }
    }

    #[test]
    fn absolute_form_naming_another_host_is_refused_in_http1() {
        let other = Request::get("http://evil.example/api/3/connections")
            .header("host", "127.0.0.1:8080")
            .body(())
            .unwrap();
        assert_eq!(status(other), 400);
        let no_host = Request::get("http://evil.example/api/3/connections")
            .body(())
            .unwrap();
        assert_eq!(status(no_host), 400);
        let same = Request::get("http://127.0.0.1:8080/api/3/connections")
            .header("host", "127.0.0.1:8080")
            .body(())
            .unwrap();
        assert_eq!(status(same), 200);
        let h2 = Request::get("https://gateway.local/api/3/connections")
            .version(Version::HTTP_2)
            .body(())
            .unwrap();
        assert_eq!(status(h2), 200, ":authority is HTTP/2's Host");
    }

    #[test]
    fn two_host_headers_are_refused() {
        let req = Request::get("/")
            .header("host", "a")
            .header("host", "b")
            .body(())
            .unwrap();
        assert_eq!(status(req), 400);
    }

    #[test]
    fn oversized_targets_and_header_sections_are_414_and_431() {
        let long = format!("/api/3/{}", "a".repeat(64));
        assert_eq!(status(Request::get(long.as_str()).body(()).unwrap()), 414);
        let mut many = Request::get("/");
        for i in 0..6 {
            many = many.header(format!("x-h{i}"), "1");
        }
        assert_eq!(status(many.body(()).unwrap()), 431);
        let big = Request::get("/")
            .header("x-big", "v".repeat(200))
            .body(())
            .unwrap();
        assert_eq!(status(big), 431);
        let fine = Request::get("/").header("x-ok", "1").body(()).unwrap();
        assert_eq!(status(fine), 200);
    }
}
