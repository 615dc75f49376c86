//! A configured client of the gateway: who it is, which operations it may call, and how fast.
//!
//! Below the layers that use it: authentication finds the client and leaves it in the request
//! ([`Authenticated`]), the rate limit spends its tokens, authorization reads its allow list.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{ClientConfig, Rate};
use crate::error::Error;
use crate::route::Routed;

/// The allow entry that also permits paths the spec does not have (when they are forwarded).
pub const ALLOW_ANY: &str = "*";

/// A configured client, ready to authenticate.
#[derive(Debug)]
pub struct Client {
    name: Arc<str>,
    key_sha256: Option<[u8; 32]>,
    allow: Allow,
    limiter: Option<Limiter>,
}

#[derive(Debug)]
enum Allow {
    All,
    /// These operationIds; never a path the spec does not have.
    Only(HashSet<String>),
}

impl Client {
    /// The client as configured.
    pub fn new(config: &ClientConfig) -> Self {
        let allow = match &config.allow {
            None => Allow::All,
            Some(list) if list.iter().any(|op| op == ALLOW_ANY) => Allow::All,
            Some(list) => Allow::Only(list.iter().cloned().collect()),
        };
        Client {
            name: config.name.clone(),
            key_sha256: config.key_sha256,
            allow,
            limiter: config.rate.map(Limiter::new),
        }
    }

    /// A client known only by its certificate, with no configured entry: any operation, no
    /// rate limit. Used when mutual TLS is the only client authentication.
    pub(crate) fn certified(subject: Arc<str>) -> Self {
        Client {
            name: subject,
            key_sha256: None,
            allow: Allow::All,
            limiter: None,
        }
    }

    /// The client's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The SHA-256 of its key, if it authenticates with one.
    pub fn key_sha256(&self) -> Option<&[u8; 32]> {
        self.key_sha256.as_ref()
    }

    /// Its rate limiter, if it has a rate.
    pub fn limiter(&self) -> Option<&Limiter> {
        self.limiter.as_ref()
    }

    /// Whether it may call the routed operation.
    pub fn may_call(&self, routed: &Routed) -> bool {
        match &self.allow {
            Allow::All => true,
            Allow::Only(_) if routed.unspecified => false,
            Allow::Only(_) => self.may_call_id(&routed.operation.id),
        }
    }

    /// Whether the allow list names the operation `id`.
    pub fn may_call_id(&self, id: &str) -> bool {
        match &self.allow {
            Allow::All => true,
            Allow::Only(operations) => operations.contains(id),
        }
    }
}

/// The authenticated client, in the request's extensions.
#[derive(Clone, Debug)]
pub struct Authenticated(pub Arc<Client>);

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
