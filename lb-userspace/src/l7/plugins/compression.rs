//! `compression`: responses compressed on the way to the client — zstd,
//! brotli or gzip, the first of the route's `encodings` the client accepts
//! (`Accept-Encoding`, q-values honoured, `q=0` refuses). Streaming: the
//! body is encoded as it arrives, never buffered whole. Left alone: `HEAD`,
//! 1xx/204/206/304, a response already encoded, `Cache-Control:
//! no-transform`, types that are not text-like (images, video, archives
//! are compressed already), and bodies known to be under `min_bytes`.
//! `Vary: Accept-Encoding` is set whenever the choice depended on the
//! header, and a strong `ETag` becomes weak (the bytes differ).
//!
//! The cache stores what the node sent; compression runs after it, per
//! response (a hit costs the encoding again, but one stored copy serves
//! every encoding).
use std::{io, pin::Pin};

use async_compression::{
    tokio::bufread::{BrotliEncoder, GzipEncoder, ZstdEncoder},
    Level,
};
use futures_util::{StreamExt as _, TryStreamExt as _};
use http::{header, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::{Body as _, Frame};
use serde::Deserialize;
use tokio::io::AsyncRead;

use super::super::{
    body::ProxyBody,
    forward::cut_off,
    plugin::{Plugin, ResponseCx},
};

/// `plugins.compression`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    /// Preference order among `zstd`, `br`, `gzip` (default that order).
    #[serde(default)]
    pub encodings: Vec<String>,
    /// Bodies with a `Content-Length` under this are sent as they are
    /// (default 1024: below it the headers cost more than the saving).
    #[serde(default)]
    pub min_bytes: Option<u64>,
    /// Content types compressed (prefixes of the media type); default:
    /// text/, JSON, JavaScript, XML, SVG, WebAssembly.
    #[serde(default)]
    pub types: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Zstd,
    Brotli,
    Gzip,
}

impl Encoding {
    fn token(self) -> &'static str {
        match self {
            Encoding::Zstd => "zstd",
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
        }
    }

    fn parse(s: &str) -> Option<Encoding> {
        match s {
            "zstd" => Some(Encoding::Zstd),
            "br" => Some(Encoding::Brotli),
            "gzip" => Some(Encoding::Gzip),
            _ => None,
        }
    }
}

const DEFAULT_TYPES: &[&str] = &[
    "text/",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/wasm",
    "image/svg+xml",
];

#[derive(Debug)]
pub struct Compression {
    order: Vec<Encoding>,
    min_bytes: u64,
    types: Vec<String>,
}

impl Compression {
    pub fn new(c: &CompressionConfig) -> Result<Compression, (String, String)> {
        let mut order = Vec::new();
        for (i, e) in c.encodings.iter().enumerate() {
            let enc = Encoding::parse(e).ok_or_else(|| {
                (
                    format!("encodings[{i}]"),
                    format!("`{e}`: choose among zstd, br, gzip"),
                )
            })?;
            order.push(enc);
        }
        if order.is_empty() {
            order = vec![Encoding::Zstd, Encoding::Brotli, Encoding::Gzip];
        }
        Ok(Compression {
            order,
            min_bytes: c.min_bytes.unwrap_or(1024),
            types: if c.types.is_empty() {
                DEFAULT_TYPES.iter().map(|s| s.to_string()).collect()
            } else {
                c.types.iter().map(|t| t.to_ascii_lowercase()).collect()
            },
        })
    }

    fn compressible_type(&self, ct: Option<&HeaderValue>) -> bool {
        let Some(ct) = ct.and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        self.types.iter().any(|t| media.starts_with(t.as_str()))
            || media.ends_with("+json")
            || media.ends_with("+xml")
    }

    /// The encoding to use for a client that sent `accept`.
    fn choose(&self, accept: Option<&HeaderValue>) -> Option<Encoding> {
        let accept = accept?.to_str().ok()?;
        let mut wildcard: Option<f32> = None;
        let mut listed: Vec<(String, f32)> = Vec::new();
        for item in accept.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .find_map(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|v| v.parse::<f32>().ok())
                })
                .unwrap_or(1.0);
            if token == "*" {
                wildcard = Some(q);
            } else if !token.is_empty() {
                listed.push((token, q));
            }
        }
        self.order
            .iter()
            .copied()
            .find(|e| match listed.iter().find(|(t, _)| t == e.token()) {
                Some((_, q)) => *q > 0.0,
                None => wildcard.is_some_and(|q| q > 0.0),
            })
    }
}

/// Encodes `body` as it streams. Trailers are dropped (a text-like
/// response has none; gRPC's `application/grpc` is never compressed here).
fn encode(body: ProxyBody, enc: Encoding) -> ProxyBody {
    let data = BodyStream::new(body)
        .try_filter_map(|frame| async move { Ok(frame.into_data().ok()) })
        .map_err(io::Error::other);
    let reader = tokio_util::io::StreamReader::new(data);
    let encoder: Pin<Box<dyn AsyncRead + Send + Sync>> = match enc {
        // Level 1, as nginx's `gzip_comp_level` default (and so APISIX's
        // gzip plugin): on a 16 KiB page the default level (6) cost ~420
        // µs of CPU per response in `cargo xtask bench plugins`, for a
        // few percent of size; zstd and br are there for better ratios.
        Encoding::Gzip => Box::pin(GzipEncoder::with_quality(reader, Level::Fastest)),
        // Brotli's default quality (11) is for static files; 4 keeps a
        // dynamic response's CPU cost near gzip's with a better ratio.
        Encoding::Brotli => Box::pin(BrotliEncoder::with_quality(reader, Level::Precise(4))),
        // Level 1 with a 128 KiB window: zstd's default level (3) with an
        // unknown size sets up a 2 MiB window and ~768 KiB of match tables
        // for every response, and clearing those cost ~90 µs of CPU per
        // 16 KiB page in `cargo xtask bench plugins` — more than gzip. A
        // dynamic response gains little from a window beyond 128 KiB.
        Encoding::Zstd => Box::pin(ZstdEncoder::with_quality_and_params(
            reader,
            Level::Fastest,
            &[async_compression::zstd::CParameter::window_log(17)],
        )),
    };
    let out = tokio_util::io::ReaderStream::new(encoder).map(|chunk| match chunk {
        Ok(bytes) => Ok(Frame::data(bytes)),
        // The node's own body error passes through as it was; an encoder
        // failure must fail the body too, never end it early.
        Err(e) => Err(e
            .into_inner()
            .and_then(|inner| inner.downcast::<hyper::Error>().ok())
            .map_or_else(cut_off, |h| *h)),
    });
    BodyExt::boxed(StreamBody::new(out))
}

fn append_vary(h: &mut http::HeaderMap) {
    let already = h.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding") || t.trim() == "*")
        })
    });
    if !already {
        h.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

impl Plugin for Compression {
    fn name(&self) -> &str {
        "compression"
    }

    fn priority(&self) -> i32 {
        990
    }

    fn response_needs(&self) -> &[HeaderName] {
        const ACCEPT: &[HeaderName] = &[header::ACCEPT_ENCODING];
        ACCEPT
    }

    fn response(&self, resp: &mut Response<ProxyBody>, cx: &ResponseCx) {
        let status = resp.status();
        if cx.method == Method::HEAD
            || status.is_informational()
            || matches!(
                status,
                StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
            )
        {
            return;
        }
        let h = resp.headers();
        if h.get(header::CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
        {
            return;
        }
        if h.get_all(header::CACHE_CONTROL).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.to_ascii_lowercase().contains("no-transform"))
        }) {
            return;
        }
        if !self.compressible_type(h.get(header::CONTENT_TYPE)) {
            return;
        }
        let known = resp.body().size_hint().exact();
        if known.is_some_and(|n| n < self.min_bytes) {
            return;
        }
        append_vary(resp.headers_mut());
        let Some(enc) = self.choose(cx.request_headers.get(header::ACCEPT_ENCODING)) else {
            return;
        };
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(enc.token()),
        );
        h.remove(header::CONTENT_LENGTH);
        h.remove(header::ACCEPT_RANGES);
        if let Some(etag) = h.get(header::ETAG).cloned() {
            if !etag.as_bytes().starts_with(b"W/") {
                let mut weak = b"W/".to_vec();
                weak.extend_from_slice(etag.as_bytes());
                if let Ok(v) = HeaderValue::from_bytes(&weak) {
                    h.insert(header::ETAG, v);
                }
            }
        }
        let body = std::mem::replace(resp.body_mut(), super::super::body::empty_body());
        *resp.body_mut() = encode(body, enc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c() -> Compression {
        Compression::new(&CompressionConfig::default()).unwrap()
    }

    #[test]
    fn the_first_accepted_encoding_of_ours_wins() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(
            c().choose(Some(&v("gzip, deflate, br, zstd"))),
            Some(Encoding::Zstd)
        );
        assert_eq!(
            c().choose(Some(&v("gzip, br;q=0.5"))),
            Some(Encoding::Brotli)
        );
        assert_eq!(
            c().choose(Some(&v("zstd;q=0, br;q=0, gzip"))),
            Some(Encoding::Gzip)
        );
        assert_eq!(c().choose(Some(&v("identity"))), None);
        assert_eq!(c().choose(Some(&v("*;q=0"))), None);
        assert_eq!(c().choose(Some(&v("*"))), Some(Encoding::Zstd));
        assert_eq!(c().choose(None), None);
    }

    #[test]
    fn only_text_like_types_are_compressed() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert!(c().compressible_type(Some(&v("text/html; charset=utf-8"))));
        assert!(c().compressible_type(Some(&v("application/problem+json"))));
        assert!(!c().compressible_type(Some(&v("image/png"))));
        assert!(!c().compressible_type(Some(&v("application/grpc"))));
        assert!(!c().compressible_type(None));
    }

    #[tokio::test]
    async fn a_streamed_body_decodes_to_what_the_node_sent() {
        use async_compression::tokio::bufread::GzipDecoder;
        use tokio::io::AsyncReadExt as _;
        let text = "hello compression ".repeat(500);
        let body = http_body_util::Full::new(bytes::Bytes::from(text.clone()))
            .map_err(|never| match never {})
            .boxed();
        let encoded = encode(body, Encoding::Gzip)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert!(encoded.len() < text.len() / 10, "{} bytes", encoded.len());
        let mut out = String::new();
        GzipDecoder::new(&encoded[..])
            .read_to_string(&mut out)
            .await
            .unwrap();
        assert_eq!(out, text);
    }
}
