//! Request bodies a client compressed (`Content-Encoding`): decoded for validation, within the
//! body limit, and forwarded exactly as sent.
//!
//! The limit applies to the decoded size, and decoding stops one byte past it: a small
//! compressed body that inflates to gigabytes (a decompression bomb) is refused with 413
//! having cost no more memory than the limit. A coding specgate cannot decode is refused with
//! 415 naming the ones it can: forwarding a body it could not read would forward it unchecked.

use std::borrow::Cow;
use std::io::Read;

use http::{HeaderMap, header};

use crate::error::Error;

/// The codings specgate decodes, as `Accept-Encoding` lists them.
pub const SUPPORTED: &str = "gzip, deflate, br";

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

/// The codings applied to a request's body, in the order they were applied (`identity`
/// dropped); 415 for one specgate cannot decode.
pub fn codings(headers: &HeaderMap) -> Result<Vec<Coding>, Error> {
    let mut codings = Vec::new();
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let text = value
            .to_str()
            .map_err(|_| unsupported(String::from_utf8_lossy(value.as_bytes()).as_ref()))?;
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            codings.push(match name.to_ascii_lowercase().as_str() {
                "identity" => continue,
                "gzip" | "x-gzip" => Coding::Gzip,
                "deflate" => Coding::Deflate,
                "br" => Coding::Brotli,
                _ => return Err(unsupported(name)),
            });
        }
    }
    Ok(codings)
}

fn unsupported(name: &str) -> Error {
    Error::UnsupportedContentEncoding {
        got: name.chars().take(64).collect(),
    }
}

/// `bytes` with `codings` undone, last applied first: 413 as soon as a decoded form passes
/// `limit` bytes, 400 for a body that is not what its coding says.
pub fn decode<'a>(codings: &[Coding], bytes: &'a [u8], limit: u64) -> Result<Cow<'a, [u8]>, Error> {
    let mut current = Cow::Borrowed(bytes);
    for &coding in codings.iter().rev() {
        let input = &current[..];
        let reader: Box<dyn Read + '_> = match coding {
            // Several gzip members one after another are one body (RFC 1952 §2.2).
            Coding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
            Coding::Deflate if is_zlib(input) => Box::new(flate2::read::ZlibDecoder::new(input)),
            Coding::Deflate => Box::new(flate2::read::DeflateDecoder::new(input)),
            Coding::Brotli => Box::new(brotli_decompressor::Decompressor::new(input, 4096)),
        };
        let mut decoded = Vec::new();
        reader
            .take(limit.saturating_add(1))
            .read_to_end(&mut decoded)
            .map_err(|_| Error::MalformedContentEncoding {
                coding: coding.name(),
            })?;
        if decoded.len() as u64 > limit {
            return Err(Error::BodyTooLarge { limit });
        }
        current = Cow::Owned(decoded);
    }
    Ok(current)
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
    fn each_coding_is_undone_last_applied_first() {
        let body = br#"{"connection":{"name":"x"}}"#;
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), Default::default());
        zlib.write_all(body).unwrap();
        let zlib = zlib.finish().unwrap();
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), Default::default());
        raw.write_all(body).unwrap();
        let raw = raw.finish().unwrap();
        let mut br = Vec::new();
        brotli::CompressorWriter::new(&mut br, 4096, 5, 22)
            .write_all(body)
            .unwrap();
        for (coding, bytes) in [
            (Coding::Gzip, gzip(body)),
            (Coding::Deflate, zlib),
            (Coding::Deflate, raw),
            (Coding::Brotli, br),
        ] {
            assert_eq!(
                &decode(&[coding], &bytes, 1024).unwrap()[..],
                body,
                "{coding:?}"
            );
        }
        let twice = gzip(&gzip(body));
        let codings = codings(&headers("gzip, identity, GZIP")).unwrap();
        assert_eq!(codings, [Coding::Gzip, Coding::Gzip]);
        assert_eq!(&decode(&codings, &twice, 1024).unwrap()[..], body);
        assert!(matches!(decode(&[], body, 1024).unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn a_bomb_stops_at_the_limit_and_is_413() {
        let bomb = gzip(&vec![b' '; 64 << 20]);
        assert!(bomb.len() < 128 << 10, "{}", bomb.len());
        let e = decode(&[Coding::Gzip], &bomb, 1 << 20).unwrap_err();
        assert!(
            matches!(e, Error::BodyTooLarge { limit } if limit == 1 << 20),
            "{e}"
        );
        // Exactly at the limit is fine.
        let exact = gzip(&[b'x'; 1000]);
        assert_eq!(decode(&[Coding::Gzip], &exact, 1000).unwrap().len(), 1000);
    }

    #[test]
    fn unknown_codings_are_415_and_corrupt_bodies_400() {
        for value in ["zstd", "gzip, compress", "x-custom"] {
            let e = codings(&headers(value)).unwrap_err();
            assert_eq!(
                e.status(),
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{value}"
            );
            assert!(e.detail().contains(SUPPORTED), "{}", e.detail());
        }
        let e = decode(&[Coding::Gzip], b"{\"not\":\"gzip\"}", 1024).unwrap_err();
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
        assert!(e.detail().contains("gzip"), "{}", e.detail());
        let mut truncated = gzip(b"{\"a\":1}");
        truncated.truncate(truncated.len() - 6);
        assert!(decode(&[Coding::Gzip], &truncated, 1024).is_err());
    }
}
