//! `response-headers`: headers set on (or removed from) every response of
//! the route — security headers above all: `hsts` writes
//! `Strict-Transport-Security`, and `set` takes any others
//! (`X-Content-Type-Options: nosniff`, `Content-Security-Policy`, …). Also
//! on xlb's own error answers, unlike the route's `response_headers` edits
//! (a browser should see HSTS on a 429 too).
use http::{HeaderName, HeaderValue, Response};
use serde::Deserialize;

use super::super::{
    body::ProxyBody,
    plugin::{Plugin, ResponseCx},
};
use crate::units::Dur;

/// `plugins.response-headers`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ResponseHeadersConfig {
    /// Headers set (replacing the node's).
    #[serde(default)]
    pub set: std::collections::BTreeMap<String, String>,
    /// Headers removed (e.g. `Server`, `X-Powered-By`).
    #[serde(default)]
    pub remove: Vec<String>,
    /// `Strict-Transport-Security`.
    #[serde(default)]
    pub hsts: Option<HstsConfig>,
}

/// `Strict-Transport-Security` settings (RFC 6797).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HstsConfig {
    pub max_age: Dur,
    #[serde(default)]
    pub include_subdomains: bool,
    #[serde(default)]
    pub preload: bool,
}

#[derive(Debug)]
pub struct ResponseHeaders {
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl ResponseHeaders {
    pub fn new(c: &ResponseHeadersConfig) -> Result<ResponseHeaders, (String, String)> {
        let mut set = Vec::new();
        for (k, v) in &c.set {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| (format!("set.{k}"), "is not a header name".to_string()))?;
            let value = HeaderValue::from_str(v).map_err(|_| {
                (
                    format!("set.{k}"),
                    "holds a character a header cannot".to_string(),
                )
            })?;
            set.push((name, value));
        }
        let mut remove = Vec::new();
        for (i, k) in c.remove.iter().enumerate() {
            remove.push(HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                (
                    format!("remove[{i}]"),
                    format!("`{k}` is not a header name"),
                )
            })?);
        }
        if let Some(h) = &c.hsts {
            let mut v = format!("max-age={}", h.max_age.0.as_secs());
            if h.include_subdomains {
                v.push_str("; includeSubDomains");
            }
            if h.preload {
                v.push_str("; preload");
            }
            set.push((
                http::header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_str(&v).expect("ASCII"),
            ));
        }
        Ok(ResponseHeaders { set, remove })
    }
}

impl Plugin for ResponseHeaders {
    fn name(&self) -> &str {
        "response-headers"
    }

    fn priority(&self) -> i32 {
        900
    }

    fn response(&self, resp: &mut Response<ProxyBody>, _cx: &ResponseCx) {
        let h = resp.headers_mut();
        for name in &self.remove {
            h.remove(name);
        }
        for (name, value) in &self.set {
            h.insert(name.clone(), value.clone());
        }
    }
}
