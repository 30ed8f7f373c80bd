//! Records requests: wraps the proxy's handler (see [`super::record`] for
//! the contract), takes or makes the request id and `traceparent`, and
//! hands the record to the sink when the response body ends.
//!
//! Apart from `record` because it needs the server's `ConnInfo`, and the
//! server reports connections and handshakes through `record`.
use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::{header::HeaderName, HeaderMap, HeaderValue, Request, Response, Version};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};

use super::{
    body::{ClientBody, ProxyBody},
    cache::{x_cache, X_CACHE},
    error::ERROR_HEADER,
    record::{sink, Facts, MadeIds, Note, RateLimitVerdict, RecordSink, RequestRecord},
    server::ConnInfo,
};

/// The request id header: kept when the client sent a sane one, else
/// made here; passed to the node and returned to the client.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The W3C Trace Context header (Trace Context Level 1, §3.2).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A request id the client sent is kept when it is 1–128 visible ASCII
/// characters; anything else is replaced (it goes into logs and to nodes).
pub fn sane_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

/// Whether `v` is a version-00 `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`
/// with non-zero ids (Trace Context Level 1, §3.2.2).
fn valid_traceparent(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    let lower_hex = |s: &[u8]| {
        s.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let not_zero = |s: &[u8]| s.iter().any(|&c| c != b'0');
    b.len() == 55
        && &b[0..3] == b"00-"
        && b[35] == b'-'
        && b[52] == b'-'
        && lower_hex(&b[3..35])
        && not_zero(&b[3..35])
        && lower_hex(&b[36..52])
        && not_zero(&b[36..52])
        && lower_hex(&b[53..55])
}

/// A random, non-zero id of `N` lowercase hexadecimal digits (32 or 16),
/// as bytes: written into a stack buffer, not formatted through `fmt`
/// (this runs for most requests).
fn random_hex<const N: usize>() -> [u8; N] {
    let v = loop {
        let v: u128 = rand::random();
        let v = if N >= 32 { v } else { v >> (128 - 4 * N) };
        if v != 0 {
            break v;
        }
    };
    let mut out = [0u8; N];
    for (i, d) in out.iter_mut().enumerate() {
        let nibble = (v >> (4 * (N - 1 - i))) as u8 & 0xf;
        *d = b"0123456789abcdef"[usize::from(nibble)];
    }
    out
}

/// Makes sure the request carries a request id and a `traceparent`; returns
/// the request id. A generated request id is the trace id, so that a log
/// line and a trace meet on one value. A valid `traceparent` is passed on
/// as received (xlb records no spans of its own, so it is not a parent);
/// an invalid or missing one is replaced by a new trace, not sampled.
pub fn ensure_ids(headers: &mut HeaderMap) -> HeaderValue {
    ensure_ids_made(headers).0
}

/// [`ensure_ids`], also saying which ids were made here.
fn ensure_ids_made(headers: &mut HeaderMap) -> (HeaderValue, MadeIds) {
    // Header values share their bytes: the id made here is allocated once
    // and referenced by the request, the response and the record.
    let value = |b: &[u8]| HeaderValue::from_maybe_shared(Bytes::copy_from_slice(b)).ok();
    let trace = match headers.get(&TRACEPARENT) {
        Some(v) if valid_traceparent(v) => None,
        _ => {
            let trace_id = random_hex::<32>();
            let mut tp = [0u8; 55];
            tp[..3].copy_from_slice(b"00-");
            tp[3..35].copy_from_slice(&trace_id);
            tp[35] = b'-';
            tp[36..52].copy_from_slice(&random_hex::<16>());
            tp[52..].copy_from_slice(b"-00");
            if let Some(v) = value(&tp) {
                headers.insert(TRACEPARENT, v);
            }
            Some(trace_id)
        }
    };
    match headers.get(&REQUEST_ID) {
        Some(v) if sane_request_id(v) => (v.clone(), MadeIds::default()),
        _ => {
            let made = MadeIds {
                request_id: true,
                trace_is_request_id: trace.is_some(),
            };
            let id = value(&trace.unwrap_or_else(random_hex::<32>))
                .unwrap_or_else(|| HeaderValue::from_static("-"));
            headers.insert(REQUEST_ID, id.clone());
            (id, made)
        }
    }
}

fn protocol_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

fn cache_status(v: Option<&HeaderValue>) -> Option<&'static str> {
    let v = v?.as_bytes();
    [
        x_cache::HIT,
        x_cache::MISS,
        x_cache::STALE,
        x_cache::BYPASS,
        x_cache::REVALIDATED,
    ]
    .into_iter()
    .find(|s| s.as_bytes() == v)
}

/// Runs `handle` on `req`, recording the request when a sink is installed
/// (see the module comment); without one, just runs it.
pub async fn observe<F, Fut>(
    listener: Arc<str>,
    mut req: Request<ClientBody>,
    conn: ConnInfo,
    handle: F,
) -> Response<ProxyBody>
where
    F: FnOnce(Request<ClientBody>, ConnInfo) -> Fut,
    Fut: Future<Output = Response<ProxyBody>>,
{
    let Some(sink) = sink() else {
        return handle(req, conn).await;
    };
    let started = Instant::now();
    let time = SystemTime::now();
    let (mut request_id, made) = ensure_ids_made(req.headers_mut());
    // Clones of the head's parts share their bytes (no copy per request).
    let host = match req.headers().get(http::header::HOST) {
        Some(h) => h.clone(),
        None => req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .unwrap_or_else(|| HeaderValue::from_static("")),
    };
    let method = req.method().clone();
    let target = req.uri().clone();
    let protocol = protocol_name(req.version());
    let facts = Arc::new(Mutex::new(Facts {
        made,
        ..Facts::default()
    }));
    req.extensions_mut().insert(Note(Some(facts.clone())));
    let (client, tls_version, sni) = (conn.peer, conn.tls_version, conn.sni.clone());
    let mut resp = handle(req, conn).await;
    // One id per request: the one a `request-id` plugin chose (it set its
    // own header on the response), else the one made or kept here.
    let chosen = facts.lock().ok().and_then(|mut f| f.chosen_id.take());
    match chosen {
        Some((_, id)) => request_id = id,
        None => {
            resp.headers_mut().insert(REQUEST_ID, request_id.clone());
        }
    }
    let record = RequestRecord {
        time,
        listener,
        client,
        method,
        host,
        target,
        protocol,
        status: resp.status().as_u16(),
        bytes_in: 0,
        bytes_out: 0,
        total: Duration::ZERO,
        connect: None,
        first_byte: None,
        route: None,
        upstream: None,
        node: None,
        retries: Vec::new(),
        cache: cache_status(resp.headers().get(X_CACHE)),
        rate_limit: RateLimitVerdict::None,
        error: resp
            .headers()
            .get(ERROR_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        request_id,
        tls_version,
        sni,
        complete: false,
    };
    let pending = Pending {
        sink: sink.clone(),
        record,
        facts,
        started,
    };
    resp.map(|inner| {
        RecordedBody {
            inner,
            pending: Some(pending),
        }
        .boxed()
    })
}

/// A record waiting for its response body to end.
struct Pending {
    sink: Arc<dyn RecordSink>,
    record: RequestRecord,
    facts: Arc<Mutex<Facts>>,
    started: Instant,
}

impl Pending {
    fn finish(self, complete: bool) {
        let mut r = self.record;
        r.total = self.started.elapsed();
        r.complete = complete;
        if let Ok(mut f) = self.facts.lock() {
            r.route = f.route.take();
            r.upstream = f.upstream.take();
            r.node = f.node;
            r.retries = std::mem::take(&mut f.retries);
            r.connect = f.connect;
            r.first_byte = f.first_byte;
            r.bytes_in = f.bytes_in;
            r.rate_limit = f.rate_limit;
        }
        self.sink.request(r);
    }
}

/// The response body, counting bytes and reporting the record at its end.
struct RecordedBody {
    inner: ProxyBody,
    pending: Option<Pending>,
}

impl Body for RecordedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(p)) = (frame.data_ref(), &mut self.pending) {
                    p.record.bytes_out += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    if let Some(p) = self.pending.take() {
                        p.finish(true);
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(p) = self.pending.take() {
                    p.finish(true);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(p) = self.pending.take() {
                    p.finish(false);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RecordedBody {
    fn drop(&mut self) {
        if let Some(p) = self.pending.take() {
            // A body hyper never polled (HEAD, 204, 304) is complete when
            // it was empty.
            let complete = self.inner.is_end_stream();
            p.finish(complete);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_request_id_is_the_new_trace_id() {
        let mut h = HeaderMap::new();
        let id = ensure_ids(&mut h);
        let id = id.to_str().unwrap();
        assert_eq!(id.len(), 32);
        let tp = h[&TRACEPARENT].to_str().unwrap().to_string();
        assert!(valid_traceparent(&h[&TRACEPARENT]), "{tp}");
        assert_eq!(&tp[3..35], id);
        assert_eq!(h[&REQUEST_ID], id);
    }

    #[test]
    fn a_sane_request_id_and_a_valid_traceparent_are_kept() {
        let mut h = HeaderMap::new();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert(TRACEPARENT, HeaderValue::from_static(tp));
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(ensure_ids(&mut h), "abc-123");
        assert_eq!(h[&TRACEPARENT], tp);
    }

    #[test]
    fn bad_ids_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        );
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        let id = ensure_ids(&mut h);
        assert_ne!(id, "has space");
        assert!(valid_traceparent(&h[&TRACEPARENT]));
        assert!(!h[&TRACEPARENT]
            .to_str()
            .unwrap()
            .contains("0000000000000000000000000000000"));
    }
}
