//! The API token: read, checked, held as a secret, swapped in place when it rotates.
//!
//! The token exists in two forms only: a [`SecretString`] (zeroised on drop, redacted in
//! `Debug`) and the sensitive [`HeaderValue`] sent upstream (which `Debug` prints as
//! `Sensitive` and HPACK never indexes), whose bytes are zeroised when the last request holding
//! it is done. No error, log line or `Debug` output here includes it.
//!
//! Rotation: [`TokenStore::reload`] is the one way a new token comes in, whether from the
//! file watch ([`watch`]) or a SIGHUP. A new token serves every request that starts after the
//! swap; requests in flight keep the token they started with, so none fails for the swap.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::HeaderValue;
#[cfg(test)]
use secrecy::ExposeSecret;
use secrecy::SecretString;
use zeroize::Zeroize;
use zeroize::Zeroizing;

use crate::config::{API_TOKEN_ENV, API_TOKEN_FILE, TokenSource};

/// Why a token could not be loaded. The message never contains the token.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {problem}")]
pub struct TokenError {
    origin: String,
    problem: &'static str,
}

/// The current API token, replaceable while requests are in flight.
pub struct TokenStore {
    source: TokenSource,
    current: ArcSwap<Token>,
    /// The version of the token file last read (whether or not it held a usable token), taken
    /// before reading it: a change made while it was read is seen on the next check.
    read_version: std::sync::Mutex<Option<FileVersion>>,
}

/// One loaded token.
pub struct Token {
    #[allow(dead_code)] // kept so the bytes are zeroised when the token is dropped
    secret: SecretString,
    header: HeaderValue,
    bearer: HeaderValue,
    /// `None` when the secret is not `user:password`.
    basic: Option<HeaderValue>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenStore")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Checks a raw token: surrounding whitespace (a trailing newline from `echo` or a Secret
    /// editor) is trimmed; empty, inner whitespace or control bytes are refused.
    pub fn parse(raw: &str) -> Result<Token, &'static str> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("the token is empty");
        }
        if trimmed
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err("the token contains whitespace or control characters");
        }
        if !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token contains non-ASCII characters");
        }
        let header = sensitive(trimmed.as_bytes().to_vec())?;
        // Each form the secret can travel in is made once, here, so that no request copies it.
        let bearer = sensitive([b"Bearer ", trimmed.as_bytes()].concat())?;
        let basic = match trimmed.contains(':') {
            true => {
                let encoded = Zeroizing::new(BASE64.encode(trimmed));
                Some(sensitive([b"Basic ", encoded.as_bytes()].concat())?)
            }
            false => None,
        };
        Ok(Token {
            secret: SecretString::from(trimmed),
            header,
            bearer,
            basic,
        })
    }

    /// The secret itself, as a header value (marked sensitive): an `apiKey`'s value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.header
    }

    /// `Bearer <secret>`, for `Authorization` (marked sensitive).
    pub fn bearer(&self) -> &HeaderValue {
        &self.bearer
    }

    /// `Basic <base64 of the secret>`, for `Authorization` (marked sensitive), when the secret
    /// is `user:password` (or OAuth2's `client_id:client_secret`).
    pub fn basic(&self) -> Option<&HeaderValue> {
        self.basic.as_ref()
    }

    /// Whether `candidate` is this token, compared without exposing either in a message.
    #[cfg(test)]
    pub fn is(&self, candidate: &str) -> bool {
        self.secret.expose_secret() == candidate
    }
}

/// A sensitive header value whose bytes are wiped when the last copy is dropped.
pub(crate) fn sensitive(bytes: impl Into<Box<[u8]>>) -> Result<HeaderValue, &'static str> {
    let wiped = Bytes::from_owner(Wiped(bytes.into()));
    let mut value = HeaderValue::from_maybe_shared(wiped)
        .map_err(|_| "the token is not a valid header value")?;
    value.set_sensitive(true);
    Ok(value)
}

/// The header value's bytes: overwritten with zeros when the last `Bytes` (and so the last
/// `HeaderValue`) sharing them is dropped.
struct Wiped(Box<[u8]>);

impl AsRef<[u8]> for Wiped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Wiped {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl TokenStore {
    /// Loads the token from `source`.
    pub fn load(source: TokenSource) -> Result<TokenStore, TokenError> {
        let version = source_version(&source);
        let token = read(&source)?;
        Ok(TokenStore {
            source,
            current: ArcSwap::from_pointee(token),
            read_version: std::sync::Mutex::new(version),
        })
    }

    /// A store holding `token`, read from the environment variable (for tests and tools).
    pub fn fixed(raw: &str) -> Result<TokenStore, TokenError> {
        let token = Token::parse(raw).map_err(|problem| TokenError {
            origin: API_TOKEN_ENV.to_owned(),
            problem,
        })?;
        Ok(TokenStore {
            source: TokenSource::Env,
            current: ArcSwap::from_pointee(token),
            read_version: std::sync::Mutex::new(None),
        })
    }

    /// The token to use for the next request.
    pub fn current(&self) -> Arc<Token> {
        self.current.load_full()
    }

    /// Reads the source again; on success the new token serves every later request, and on
    /// failure the old one stays.
    pub fn reload(&self) -> Result<(), TokenError> {
        let version = source_version(&self.source);
        let read = read(&self.source);
        *self.lock_version() = version;
        self.current.store(Arc::new(read?));
        Ok(())
    }

    /// Whether the token file is no longer the version last read.
    pub fn file_changed(&self) -> bool {
        match self.file() {
            Some(path) => file_version(path) != *self.lock_version(),
            None => false,
        }
    }

    fn lock_version(&self) -> std::sync::MutexGuard<'_, Option<FileVersion>> {
        self.read_version
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The file the token is read from, if it is read from a file.
    pub fn file(&self) -> Option<&PathBuf> {
        match &self.source {
            TokenSource::File(path) => Some(path),
            TokenSource::Env => None,
        }
    }
}

/// What identifies a version of the token file: a rewrite in place, a rename over it, or a
/// Kubernetes secret's symlink swap all change it.
#[derive(Debug, PartialEq, Eq)]
struct FileVersion {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: (u64, u64, i64, i64),
}

fn source_version(source: &TokenSource) -> Option<FileVersion> {
    match source {
        TokenSource::File(path) => file_version(path),
        TokenSource::Env => None,
    }
}

fn file_version(path: &Path) -> Option<FileVersion> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileVersion {
        len: meta.len(),
        modified: meta.modified().ok(),
        #[cfg(unix)]
        inode: {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
        },
    })
}

fn read(source: &TokenSource) -> Result<Token, TokenError> {
    match source {
        TokenSource::Env => {
            let origin = API_TOKEN_ENV.to_owned();
            // Every copy of the raw token is zeroised when dropped.
            let raw = Zeroizing::new(std::env::var(API_TOKEN_ENV).map_err(|_| TokenError {
                origin: origin.clone(),
                problem: "not set, or not valid UTF-8",
            })?);
            Token::parse(&raw).map_err(|problem| TokenError { origin, problem })
        }
        TokenSource::File(path) => {
            let origin = format!("{} ({})", API_TOKEN_FILE.env, path.display());
            let raw = Zeroizing::new(std::fs::read(path).map_err(|_| TokenError {
                origin: origin.clone(),
                problem: "the file cannot be read",
            })?);
            let raw = std::str::from_utf8(&raw).map_err(|_| TokenError {
                origin: origin.clone(),
                problem: "the file is not valid UTF-8",
            })?;
            Token::parse(raw).map_err(|problem| TokenError { origin, problem })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surrounding_whitespace_is_trimmed() {
        let token = Token::parse("  abc-123\n").unwrap();
        assert!(token.is("abc-123"));
        assert_eq!(token.header_value(), "abc-123");
        assert!(token.header_value().is_sensitive());
    }

    #[test]
    fn empty_inner_whitespace_and_control_bytes_are_refused() {
        // The problem is a `&'static str`: it cannot contain the token by construction.
        for raw in ["", " \n", "abc def", "abc\u{1}def", "ab\tc", "tökén"] {
            assert!(Token::parse(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let store = TokenStore::fixed("SECRET-TOKEN-XYZ").unwrap();
        let shown = format!(
            "{store:?} {:?} {:?}",
            store.current(),
            store.current().header_value()
        );
        assert!(!shown.contains("SECRET-TOKEN-XYZ"), "{shown}");
    }

    #[test]
    fn a_changed_file_is_noticed_whether_renamed_rewritten_or_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let store = TokenStore::load(TokenSource::File(path.clone())).unwrap();
        assert!(!store.file_changed());
        // Replaced by rename, as `kubectl` and careful scripts do.
        let next = dir.path().join("token.new");
        std::fs::write(&next, "second\n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert!(store.file_changed());
        store.reload().unwrap();
        assert!(store.current().is("second"));
        assert!(!store.file_changed(), "the version read is remembered");
        // Rewritten in place, with a different length.
        std::fs::write(&path, "  third-token\n").unwrap();
        assert!(store.file_changed());
        store.reload().unwrap();
        assert!(store.current().is("third-token"));
        // Emptied: noticed, refused, and the current token stays.
        std::fs::write(&path, "").unwrap();
        assert!(store.file_changed());
        assert!(store.reload().is_err());
        assert!(store.current().is("third-token"));
        assert!(
            !store.file_changed(),
            "a refused version is not retried until it changes again"
        );
    }

    #[test]
    fn the_header_value_shares_the_wiped_bytes() {
        let token = Token::parse("abc-123").unwrap();
        let clone = token.header_value().clone();
        drop(token);
        assert_eq!(clone, "abc-123", "a request in flight keeps its token");
    }

    #[test]
    fn a_file_token_reloads_and_a_bad_new_file_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let store = TokenStore::load(TokenSource::File(path.clone())).unwrap();
        assert!(store.current().is("first"));
        std::fs::write(&path, "second").unwrap();
        store.reload().unwrap();
        assert!(store.current().is("second"));
        std::fs::write(&path, "\n").unwrap();
        let e = store.reload().unwrap_err();
        assert!(e.to_string().contains("the token is empty"), "{e}");
        assert!(store.current().is("second"));
        std::fs::remove_file(&path).unwrap();
        assert!(store.reload().is_err());
        assert!(store.current().is("second"));
    }
}
