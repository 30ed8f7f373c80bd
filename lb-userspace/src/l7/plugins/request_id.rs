//! `request-id`: every request carries an id in a configurable header
//! (default `X-Request-Id`), kept from the client when it sent a usable
//! one (`trust_incoming`) or made here as a UUID (v4 random, or v7
//! time-ordered), passed to the node and returned to the client.
//!
//! One id per request: with `observe:` on, the recording
//! ([`super::super::recording`]) has already given the request an
//! `X-Request-Id` before routing. This plugin then decides: an id the
//! recording *made* is replaced by the plugin's (a client-sent one is kept
//! or replaced by `trust_incoming`), the plugin's id is written into the
//! request's record ([`Note::request_id`]) so the access log, `/status`
//! and the node all see the same value, and when the recording also made
//! the `traceparent` from its id, the trace id becomes the UUID's 32 hex
//! digits, so a log line and a trace still meet on one value. With another
//! header name, the `X-Request-Id` the recording made is removed, so the
//! node gets one id, not two.
use http::{request, HeaderName, HeaderValue, Response};
use serde::Deserialize;

use super::super::{
    body::ProxyBody,
    plugin::{BoxFuture, Plugin, RequestCx, ResponseCx, Verdict},
    record::Note,
    recording::{sane_request_id, REQUEST_ID, TRACEPARENT},
};

/// `plugins.request-id`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RequestIdConfig {
    /// The header (default `X-Request-Id`).
    #[serde(default)]
    pub header: Option<String>,
    /// `uuid-v4` (default) or `uuid-v7`.
    #[serde(default)]
    pub algorithm: Option<String>,
    /// Keep an id the client sent (1–128 visible ASCII characters; default
    /// true). Off: every request gets a new id.
    #[serde(default = "yes")]
    pub trust_incoming: bool,
    /// Return the id to the client (default true).
    #[serde(default = "yes")]
    pub include_in_response: bool,
}

fn yes() -> bool {
    true
}

/// How new ids are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdAlgorithm {
    /// RFC 9562 §5.4: 122 random bits.
    UuidV4,
    /// RFC 9562 §5.7: a millisecond timestamp, then random bits (ids sort
    /// by time, which suits log stores and databases).
    UuidV7,
}

impl IdAlgorithm {
    fn make(self) -> uuid::Uuid {
        match self {
            IdAlgorithm::UuidV4 => uuid::Uuid::new_v4(),
            IdAlgorithm::UuidV7 => uuid::Uuid::now_v7(),
        }
    }
}

/// The plugin.
#[derive(Debug)]
pub struct RequestId {
    header: HeaderName,
    algorithm: IdAlgorithm,
    trust_incoming: bool,
    include_in_response: bool,
    /// `[header]` when the response gets the id (what the response phase
    /// reads of the request), else empty.
    needs: Vec<HeaderName>,
}

impl RequestId {
    /// Builds the plugin; an error names the field under `request-id`.
    pub fn new(c: &RequestIdConfig) -> Result<RequestId, (String, String)> {
        let header = match &c.header {
            None => REQUEST_ID,
            Some(h) => HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| ("header".to_string(), format!("`{h}` is not a header name")))?,
        };
        let algorithm = match c.algorithm.as_deref() {
            None | Some("uuid-v4") => IdAlgorithm::UuidV4,
            Some("uuid-v7") => IdAlgorithm::UuidV7,
            Some(other) => {
                return Err((
                    "algorithm".into(),
                    format!("`{other}` is not one of uuid-v4, uuid-v7"),
                ))
            }
        };
        let needs = match c.include_in_response {
            true => vec![header.clone()],
            false => Vec::new(),
        };
        Ok(RequestId {
            header,
            algorithm,
            trust_incoming: c.trust_incoming,
            include_in_response: c.include_in_response,
            needs,
        })
    }

    /// Sets the request's id; returns it.
    fn assign(&self, req: &mut request::Parts) -> HeaderValue {
        let note = Note::of(req);
        let made = note.made_ids().unwrap_or_default();
        // A value the recording made is not the client's: never "kept".
        let made_here = made.request_id && self.header == REQUEST_ID;
        let kept = match req.headers.get(&self.header) {
            Some(v) if self.trust_incoming && !made_here && sane_request_id(v) => Some(v.clone()),
            _ => None,
        };
        let id = match kept {
            Some(v) => v,
            None => {
                let uuid = self.algorithm.make();
                let mut text = uuid::Uuid::encode_buffer();
                let v = HeaderValue::from_str(uuid.hyphenated().encode_lower(&mut text))
                    .expect("a UUID is a header value");
                if made.trace_is_request_id {
                    retrace(req, &uuid);
                }
                v
            }
        };
        // Every copy the client sent goes; the node sees one value.
        req.headers.insert(self.header.clone(), id.clone());
        if made.request_id && self.header != REQUEST_ID {
            req.headers.remove(REQUEST_ID);
        }
        note.request_id(self.header.clone(), id.clone());
        id
    }
}

/// Puts `uuid`'s 32 hex digits as the trace id of the `traceparent` the
/// recording made (same layout: `00-<trace id>-<parent id>-<flags>`).
fn retrace(req: &mut request::Parts, uuid: &uuid::Uuid) {
    let Some(tp) = req.headers.get(&TRACEPARENT).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let Some(rest) = tp.get(35..) else {
        return;
    };
    let mut hex = uuid::Uuid::encode_buffer();
    let trace = uuid.simple().encode_lower(&mut hex);
    if let Ok(v) = HeaderValue::from_str(&format!("00-{trace}{rest}")) {
        req.headers.insert(TRACEPARENT, v);
    }
}

impl Plugin for RequestId {
    fn name(&self) -> &str {
        "request-id"
    }

    /// First of all (APISIX's place for it too): every later plugin's
    /// refusal already carries the id.
    fn priority(&self) -> i32 {
        12015
    }

    fn request<'a>(
        &'a self,
        req: &'a mut request::Parts,
        _cx: RequestCx<'a>,
    ) -> BoxFuture<'a, Verdict> {
        self.assign(req);
        Box::pin(std::future::ready(Verdict::Continue))
    }

    fn response_needs(&self) -> &[HeaderName] {
        &self.needs
    }

    fn response(&self, resp: &mut Response<ProxyBody>, cx: &ResponseCx) {
        if !self.include_in_response {
            return;
        }
        if let Some(v) = cx.request_headers.get(&self.header) {
            resp.headers_mut().insert(self.header.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(yaml: &str) -> RequestId {
        RequestId::new(&serde_yaml_ng::from_str(yaml).unwrap()).unwrap()
    }

    fn head(headers: &[(&str, &str)]) -> request::Parts {
        let mut b = http::Request::builder().uri("/");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_new_id_is_a_uuid_of_the_configured_version() {
        for (yaml, version) in [("{}", 4), ("algorithm: uuid-v7", 7)] {
            let mut req = head(&[]);
            let id = plugin(yaml).assign(&mut req);
            let u = uuid::Uuid::parse_str(id.to_str().unwrap()).unwrap();
            assert_eq!(u.get_version_num(), version);
            assert_eq!(req.headers["x-request-id"], id);
        }
    }

    #[test]
    fn a_client_id_is_kept_only_when_trusted_and_sane() {
        let mut req = head(&[("x-request-id", "abc-123")]);
        assert_eq!(plugin("{}").assign(&mut req), "abc-123");
        let mut req = head(&[("x-request-id", "abc-123")]);
        assert_ne!(plugin("trust_incoming: false").assign(&mut req), "abc-123");
        let mut req = head(&[("x-request-id", "has space")]);
        assert_ne!(plugin("{}").assign(&mut req), "has space");
    }

    #[test]
    fn config_errors_name_the_field() {
        let e =
            RequestId::new(&serde_yaml_ng::from_str("algorithm: uuid-v1").unwrap()).unwrap_err();
        assert_eq!(e.0, "algorithm");
        let e = RequestId::new(&serde_yaml_ng::from_str("header: 'a b'").unwrap()).unwrap_err();
        assert_eq!(e.0, "header");
    }
}
