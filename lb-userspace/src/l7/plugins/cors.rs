//! `cors`: Cross-Origin Resource Sharing (the Fetch standard's CORS
//! protocol). A preflight (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`) is answered here, `204`, and never
//! forwarded; an actual request from an allowed origin gets the
//! `Access-Control-Allow-*` headers on its response. A disallowed origin
//! gets no CORS headers (the browser then refuses the response; the
//! request itself is not the gateway's to refuse). `Vary: Origin` is set
//! whenever the answer depends on the origin, so caches keep them apart.
use http::{header, request, HeaderName, HeaderValue, Method, Response, StatusCode};
use serde::Deserialize;

use super::super::{
    body::{empty_body, ProxyBody},
    plugin::{BoxFuture, Plugin, RequestCx, ResponseCx, Verdict},
};
use crate::units::Dur;

/// `plugins.cors`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins (`https://app.example.com`), or `["*"]`.
    pub allow_origins: Vec<String>,
    /// Allowed methods (default GET, HEAD, POST, PUT, PATCH, DELETE).
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// Allowed request headers; empty: whatever the preflight asks for.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers the page may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long a browser may keep a preflight's answer.
    #[serde(default)]
    pub max_age: Option<Dur>,
    /// Allow credentials (cookies); not with `*` origins.
    #[serde(default)]
    pub allow_credentials: bool,
}

#[derive(Debug)]
pub struct Cors {
    any_origin: bool,
    origins: Vec<String>,
    methods: HeaderValue,
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    credentials: bool,
}

fn list(items: &[String], field: &str) -> Result<Option<HeaderValue>, (String, String)> {
    if items.is_empty() {
        return Ok(None);
    }
    HeaderValue::from_str(&items.join(", "))
        .map(Some)
        .map_err(|_| {
            (
                field.to_string(),
                "holds a character a header cannot".into(),
            )
        })
}

impl Cors {
    pub fn new(c: &CorsConfig) -> Result<Cors, (String, String)> {
        if c.allow_origins.is_empty() {
            return Err((
                "allow_origins".into(),
                "name at least one origin, or \"*\"".into(),
            ));
        }
        let any_origin = c.allow_origins.iter().any(|o| o == "*");
        if any_origin && c.allow_credentials {
            return Err((
                "allow_credentials".into(),
                "browsers refuse credentials with a `*` origin: list the origins".into(),
            ));
        }
        for (i, o) in c.allow_origins.iter().enumerate() {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                return Err((
                    format!("allow_origins[{i}]"),
                    format!("`{o}` is not an origin (scheme://host[:port])"),
                ));
            }
        }
        for (i, m) in c.allow_methods.iter().enumerate() {
            if Method::from_bytes(m.as_bytes()).is_err() {
                return Err((
                    format!("allow_methods[{i}]"),
                    format!("`{m}` is not a method"),
                ));
            }
        }
        for (i, h) in c.allow_headers.iter().chain(&c.expose_headers).enumerate() {
            if HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err((
                    format!("headers[{i}]"),
                    format!("`{h}` is not a header name"),
                ));
            }
        }
        let methods = if c.allow_methods.is_empty() {
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE")
        } else {
            list(&c.allow_methods, "allow_methods")?.expect("not empty")
        };
        Ok(Cors {
            any_origin,
            origins: c
                .allow_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            methods,
            headers: list(&c.allow_headers, "allow_headers")?,
            expose: list(&c.expose_headers, "expose_headers")?,
            max_age: c.max_age.map(|d| HeaderValue::from(d.0.as_secs())),
            credentials: c.allow_credentials,
        })
    }

    /// The `Access-Control-Allow-Origin` value for `origin`, if allowed.
    fn allow(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        if self.any_origin {
            return Some(HeaderValue::from_static("*"));
        }
        let o = origin.to_str().ok()?.to_ascii_lowercase();
        self.origins.contains(&o).then(|| origin.clone())
    }

    fn common(&self, h: &mut http::HeaderMap, allowed: HeaderValue) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

fn vary_origin(h: &mut http::HeaderMap) {
    h.append(header::VARY, HeaderValue::from_static("Origin"));
}

impl Plugin for Cors {
    fn name(&self) -> &str {
        "cors"
    }

    fn priority(&self) -> i32 {
        4000
    }

    fn request<'a>(
        &'a self,
        req: &'a mut request::Parts,
        _cx: RequestCx<'a>,
    ) -> BoxFuture<'a, Verdict> {
        let preflight = req.method == Method::OPTIONS
            && req
                .headers
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let verdict = match (preflight, req.headers.get(header::ORIGIN)) {
            (true, Some(origin)) => {
                let mut resp = Response::new(empty_body());
                *resp.status_mut() = StatusCode::NO_CONTENT;
                let h = resp.headers_mut();
                if let Some(allowed) = self.allow(origin) {
                    self.common(h, allowed);
                    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
                    let asked = req.headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
                    if let Some(v) = self.headers.clone().or_else(|| asked.cloned()) {
                        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
                    }
                    if let Some(v) = &self.max_age {
                        h.insert(header::ACCESS_CONTROL_MAX_AGE, v.clone());
                    }
                }
                if !self.any_origin {
                    vary_origin(h);
                }
                Verdict::Respond(resp)
            }
            _ => Verdict::Continue,
        };
        Box::pin(std::future::ready(verdict))
    }

    fn response_needs(&self) -> &[HeaderName] {
        const ORIGIN: &[HeaderName] = &[header::ORIGIN];
        ORIGIN
    }

    fn response(&self, resp: &mut Response<ProxyBody>, cx: &ResponseCx) {
        let h = resp.headers_mut();
        if h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
            return; // a preflight answered above, or the node's own CORS
        }
        if !self.any_origin {
            vary_origin(h);
        }
        let Some(origin) = cx.request_headers.get(header::ORIGIN) else {
            return;
        };
        if let Some(allowed) = self.allow(origin) {
            self.common(h, allowed);
            if let Some(v) = &self.expose {
                h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
            }
        }
    }
}
