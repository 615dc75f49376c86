//! Per-client rate limits: a token bucket per configured client that has one. A request over
//! the limit is answered 429 with `Retry-After` (whole seconds until a token is back) and goes
//! no further. Clients without a rate, and requests with no client, pass.

use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::RefuseOr;
use super::auth::Authenticated;
use crate::body::Body;
use crate::config::Rate;
use crate::error::Error;

/// A token bucket: `burst` tokens, refilled at `per_second`.
#[derive(Debug)]
pub struct Bucket {
    rate: Rate,
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: Rate, now: Instant) -> Self {
        Bucket {
            rate,
            tokens: f64::from(rate.burst),
            updated: now,
        }
    }

    /// Takes one token at `now`, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * self.rate.per_second).min(f64::from(self.rate.burst));
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            // Saturates rather than panics for a rate so small the wait overflows a Duration.
            Err(
                Duration::try_from_secs_f64((1.0 - self.tokens) / self.rate.per_second)
                    .unwrap_or(Duration::MAX),
            )
        }
    }
}

/// A client's limiter, shared by all its requests.
#[derive(Debug)]
pub struct Limiter(Mutex<Bucket>);

impl Limiter {
    /// A limiter at `rate`, starting full.
    pub fn new(rate: Rate) -> Self {
        Limiter(Mutex::new(Bucket::new(rate, Instant::now())))
    }

    /// Admits one request now, or refuses it with the seconds to wait (at least 1).
    pub fn admit(&self) -> Result<(), Error> {
        let mut bucket = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        bucket
            .take(Instant::now())
            .map_err(|wait| Error::RateLimited {
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            })
    }
}

/// Adds [`RateLimit`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RateLimitLayer;

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit { inner }
    }
}

/// Enforces each client's rate limit.
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Error>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = RefuseOr<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let limited = req
            .extensions()
            .get::<Authenticated>()
            .and_then(|client| client.0.limiter())
            .map(Limiter::admit);
        match limited {
            Some(Err(error)) => RefuseOr::refuse(error),
            _ => RefuseOr::inner(self.inner.call(req)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(
            Rate {
                per_second: 2.0,
                burst: 3,
            },
            start,
        );
        for _ in 0..3 {
            bucket.take(start).unwrap();
        }
        let wait = bucket.take(start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Half a second later one token is back, and only one.
        let later = start + Duration::from_millis(500);
        bucket.take(later).unwrap();
        assert!(bucket.take(later).is_err());
        // A long quiet spell refills to the burst, no more.
        let much_later = later + Duration::from_secs(3600);
        for _ in 0..3 {
            bucket.take(much_later).unwrap();
        }
        assert!(bucket.take(much_later).is_err());
    }

    #[test]
    fn a_refusal_says_when_to_retry_in_whole_seconds() {
        let limiter = Limiter::new(Rate {
            per_second: 0.1,
            burst: 1,
        });
        limiter.admit().unwrap();
        let Err(Error::RateLimited { retry_after_secs }) = limiter.admit() else {
            panic!("expected 429")
        };
        assert!((9..=10).contains(&retry_after_secs), "{retry_after_secs}");
    }
}
