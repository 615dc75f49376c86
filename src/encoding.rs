//! Request bodies a client compressed (`Content-Encoding`): decoded for validation, within the
//! body limit, and forwarded exactly as sent.
//!
//! The limit applies to the decoded size, and decoding stops one byte past it: a small
//! compressed body that inflates to gigabytes (a decompression bomb) is refused with 413
//! having produced no more than the limit (in a buffer at most twice its size; Brotli's window
//! adds at most 16 MiB, and [`DECODING`] bounds how many bodies are decoded at once). A coding
//! specgate cannot decode, or more than one, is refused with 415 naming the ones it can:
//! forwarding a body it could not read would forward it unchecked. A body with anything after
//! its compressed stream (a second gzip member, trailing bytes) is refused with 400: an upstream
//! that stops at the first stream would read less than was checked.

use std::borrow::Cow;
use std::io::Read;
use std::sync::LazyLock;

use http::{HeaderMap, header};
use tokio::sync::Semaphore;

use crate::error::Error;

/// The codings specgate decodes, as `Accept-Encoding` lists them.
pub const SUPPORTED: &str = "gzip, deflate, br";

/// Bodies decoded at once, each holding up to twice the body limit and a Brotli window: a
/// burst of compressed requests waits here rather than multiplying that memory.
pub static DECODING: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(4));

/// One content coding (RFC 9110 §8.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    /// `gzip` (or `x-gzip`).
    Gzip,
    /// `deflate`: a zlib stream, or a raw deflate stream as some clients send.
    Deflate,
    /// `br` (Brotli).
    Brotli,
}

impl Coding {
    /// Its name in `Content-Encoding`.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
        }
    }
}

/// The coding applied to a request's body, if any (`identity` is none); 415 for one specgate
/// cannot decode, or for more than one: real clients send one, and each layer of a stack
/// could inflate to the limit again.
pub fn coding(headers: &HeaderMap) -> Result<Option<Coding>, Error> {
    let mut names = Vec::new();
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let text = value
            .to_str()
            .map_err(|_| unsupported(String::from_utf8_lossy(value.as_bytes()).as_ref()))?;
        names.extend(text.split(',').map(str::trim).filter(|n| !n.is_empty()));
    }
    let mut found = None;
    for name in names.iter().filter(|n| !n.eq_ignore_ascii_case("identity")) {
        let coding = match name.to_ascii_lowercase().as_str() {
            "gzip" | "x-gzip" => Coding::Gzip,
            "deflate" => Coding::Deflate,
            "br" => Coding::Brotli,
            _ => return Err(unsupported(name)),
        };
        if found.replace(coding).is_some() {
            return Err(unsupported(&names.join(", ")));
        }
    }
    Ok(found)
}

fn unsupported(name: &str) -> Error {
    Error::UnsupportedContentEncoding {
        got: name.chars().take(64).collect(),
    }
}

/// `bytes` with `coding` undone: 413 as soon as the decoded form passes `limit` bytes, 400 for
/// a body that is not one stream of what its coding says, with nothing after it. An empty
/// body stays empty, whatever its label.
pub fn decode(coding: Option<Coding>, bytes: &[u8], limit: u64) -> Result<Cow<'_, [u8]>, Error> {
    let Some(coding) = coding.filter(|_| !bytes.is_empty()) else {
        return Ok(Cow::Borrowed(bytes));
    };
    let malformed = || Error::MalformedContentEncoding {
        coding: coding.name(),
    };
    let expected = (bytes.len() as u64)
        .saturating_mul(4)
        .min(limit.saturating_add(1));
    let mut decoded = Vec::with_capacity(usize::try_from(expected).unwrap_or(usize::MAX));
    // Each decoder reads the slice itself, so what it leaves is what followed its stream.
    let rest: &[u8] = match coding {
        Coding::Gzip => {
            let mut reader = flate2::bufread::GzDecoder::new(bytes);
            read_within(&mut reader, limit, &mut decoded).map_err(|_| malformed())?;
            reader.into_inner()
        }
        Coding::Deflate if is_zlib(bytes) => {
            let mut reader = flate2::bufread::ZlibDecoder::new(bytes);
            read_within(&mut reader, limit, &mut decoded).map_err(|_| malformed())?;
            reader.into_inner()
        }
        Coding::Deflate => {
            let mut reader = flate2::bufread::DeflateDecoder::new(bytes);
            read_within(&mut reader, limit, &mut decoded).map_err(|_| malformed())?;
            reader.into_inner()
        }
        Coding::Brotli => {
            let mut reader = brotli_decompressor::Decompressor::new(bytes, 4096);
            read_within(&mut reader, limit, &mut decoded).map_err(|_| malformed())?;
            // The reader reports bytes it buffered past the stream only when read again after
            // its end; those it did not buffer are still in `rest`.
            if decoded.len() as u64 <= limit && reader.read(&mut [0; 1]).is_err() {
                return Err(malformed());
            }
            reader.into_inner()
        }
    };
    if decoded.len() as u64 > limit {
        return Err(Error::BodyTooLarge { limit });
    }
    if !rest.is_empty() {
        return Err(malformed());
    }
    Ok(Cow::Owned(decoded))
}

/// Reads `reader` to its end or to one byte past `limit`, whichever comes first.
fn read_within(reader: &mut impl Read, limit: u64, into: &mut Vec<u8>) -> std::io::Result<()> {
    reader.take(limit.saturating_add(1)).read_to_end(into)?;
    Ok(())
}

/// Whether `bytes` starts with a zlib header (RFC 1950 §2.2): deflate, and a checksum that
/// makes the first two bytes a multiple of 31.
fn is_zlib(bytes: &[u8]) -> bool {
    match bytes {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::io::Write;

    fn headers(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        map
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn each_coding_is_undone() {
        let body = br#"{"connection":{"name":"x"}}"#;
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), Default::default());
        zlib.write_all(body).unwrap();
        let zlib = zlib.finish().unwrap();
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), Default::default());
        raw.write_all(body).unwrap();
        let raw = raw.finish().unwrap();
        for (coding, bytes) in [
            (Coding::Gzip, gzip(body)),
            (Coding::Deflate, zlib),
            (Coding::Deflate, raw),
            (Coding::Brotli, brotli(body)),
        ] {
            assert_eq!(
                &decode(Some(coding), &bytes, 1024).unwrap()[..],
                body,
                "{coding:?}"
            );
        }
        assert_eq!(
            coding(&headers("identity, GZIP")).unwrap(),
            Some(Coding::Gzip)
        );
        assert_eq!(coding(&headers("identity")).unwrap(), None);
        assert!(matches!(
            decode(None, body, 1024).unwrap(),
            Cow::Borrowed(_)
        ));
        assert!(decode(Some(Coding::Gzip), b"", 1024).unwrap().is_empty());
    }

    fn brotli(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(bytes).unwrap();
        }
        out
    }

    #[test]
    fn a_bomb_stops_at_the_limit_and_is_413() {
        let spaces = vec![b' '; 64 << 20];
        for (coding, bomb) in [
            (Coding::Gzip, gzip(&spaces)),
            (Coding::Brotli, brotli(&spaces)),
        ] {
            assert!(bomb.len() < 128 << 10, "{coding:?}: {}", bomb.len());
            let e = decode(Some(coding), &bomb, 1 << 20).unwrap_err();
            assert!(
                matches!(e, Error::BodyTooLarge { limit } if limit == 1 << 20),
                "{e}"
            );
        }
        // Exactly at the limit is fine.
        let exact = gzip(&[b'x'; 1000]);
        assert_eq!(
            decode(Some(Coding::Gzip), &exact, 1000).unwrap().len(),
            1000
        );
    }

    #[test]
    fn unknown_or_stacked_codings_are_415_and_bad_streams_400() {
        for value in [
            "zstd",
            "gzip, compress",
            "x-custom",
            "gzip, gzip",
            "br, identity, deflate",
        ] {
            let e = coding(&headers(value)).unwrap_err();
            assert_eq!(
                e.status(),
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{value}"
            );
            assert!(e.detail().contains(SUPPORTED), "{}", e.detail());
        }
        let not_gzip = decode(Some(Coding::Gzip), b"{\"not\":\"gzip\"}", 1024).unwrap_err();
        assert_eq!(not_gzip.status(), http::StatusCode::BAD_REQUEST);
        assert!(not_gzip.detail().contains("gzip"), "{}", not_gzip.detail());
        let mut truncated = gzip(b"{\"a\":1}");
        truncated.truncate(truncated.len() - 6);
        assert!(decode(Some(Coding::Gzip), &truncated, 1024).is_err());
        // What an upstream reading one stream would not see is refused, not checked.
        let mut two_members = gzip(b"amount=1");
        two_members.extend(gzip(b"00"));
        let mut trailing_br = brotli(b"{}");
        trailing_br.extend(b"{\"extra\":1}");
        let mut trailing_br_far = brotli(b"{}");
        trailing_br_far.extend(vec![b'x'; 10_000]);
        for (coding, bytes) in [
            (Coding::Gzip, two_members),
            (Coding::Brotli, trailing_br),
            (Coding::Brotli, trailing_br_far),
        ] {
            let e = decode(Some(coding), &bytes, 1 << 20).unwrap_err();
            assert!(
                matches!(e, Error::MalformedContentEncoding { .. }),
                "{coding:?}: {e}"
            );
        }
    }
}
