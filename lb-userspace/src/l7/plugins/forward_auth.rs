//! `forward-auth`: asks an auth service about each request before it goes
//! on (the pattern of nginx `auth_request`, Envoy `ext_authz`, Traefik
//! ForwardAuth). xlb sends the service a `GET` to `uri` carrying the
//! request's method, target and host (`X-Forwarded-Method`/`-Uri`/`-Host`),
//! the client address (`X-Forwarded-For`) and the headers in
//! `request_headers`. A 2xx lets the request through, with the service's
//! `upstream_headers` copied onto it; any other answer goes to the client
//! as the service gave it (status, `client_headers`, body up to 64 KiB). A
//! service that cannot be reached or answer within `timeout` gives
//! `503 auth-unavailable`: the request is refused, never let through.
//!
//! The service is reached over plain HTTP/1.1 (it sits beside xlb, on
//! loopback or a private network).
use std::time::Duration;

use bytes::Bytes;
use http::{request, HeaderName, HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use serde::Deserialize;

use super::super::{
    body::{text_body, ProxyBody},
    error::{respond, ErrorKind},
    plugin::{BoxFuture, Plugin, RequestCx, Verdict},
};
use crate::units::Dur;

/// `plugins.forward-auth`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthConfig {
    /// The auth service (`http://host:port/path`).
    pub uri: String,
    /// Request headers sent to the service (default `Authorization`,
    /// `Cookie`).
    #[serde(default)]
    pub request_headers: Option<Vec<String>>,
    /// Headers of the service's 2xx copied onto the request.
    #[serde(default)]
    pub upstream_headers: Vec<String>,
    /// Headers of the service's refusal passed to the client (default
    /// `WWW-Authenticate`, `Location`, `Content-Type`).
    #[serde(default)]
    pub client_headers: Option<Vec<String>>,
    /// Deadline for the service's answer (default 2s).
    #[serde(default)]
    pub timeout: Option<Dur>,
}

pub struct ForwardAuth {
    uri: Uri,
    request_headers: Vec<HeaderName>,
    upstream_headers: Vec<HeaderName>,
    client_headers: Vec<HeaderName>,
    timeout: Duration,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl std::fmt::Debug for ForwardAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardAuth")
            .field("uri", &self.uri)
            .finish()
    }
}

fn names(list: &[String], field: &str) -> Result<Vec<HeaderName>, (String, String)> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            HeaderName::from_bytes(s.as_bytes()).map_err(|_| {
                (
                    format!("{field}[{i}]"),
                    format!("`{s}` is not a header name"),
                )
            })
        })
        .collect()
}

const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The largest refusal body passed on.
const MAX_DENIAL_BODY: usize = 64 * 1024;

impl ForwardAuth {
    pub fn new(c: &ForwardAuthConfig) -> Result<ForwardAuth, (String, String)> {
        let uri: Uri = c
            .uri
            .parse()
            .map_err(|e| ("uri".to_string(), format!("`{}`: {e}", c.uri)))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(("uri".into(), "must be http://host[:port]/path".into()));
        }
        let default_req = ["authorization".to_string(), "cookie".to_string()];
        let default_client = [
            "www-authenticate".to_string(),
            "location".to_string(),
            "content-type".to_string(),
        ];
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Ok(ForwardAuth {
            uri,
            request_headers: names(
                c.request_headers.as_deref().unwrap_or(&default_req),
                "request_headers",
            )?,
            upstream_headers: names(&c.upstream_headers, "upstream_headers")?,
            client_headers: names(
                c.client_headers.as_deref().unwrap_or(&default_client),
                "client_headers",
            )?,
            timeout: c.timeout.map_or(Duration::from_secs(2), |d| d.0),
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// The head of the question to the service.
    fn ask_headers(&self, req: &request::Parts, cx: RequestCx<'_>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for name in &self.request_headers {
            for v in req.headers.get_all(name) {
                h.append(name.clone(), v.clone());
            }
        }
        if let Ok(v) = HeaderValue::from_str(req.method.as_str()) {
            h.insert(X_FORWARDED_METHOD, v);
        }
        if let Some(v) = req
            .uri
            .path_and_query()
            .and_then(|pq| HeaderValue::from_str(pq.as_str()).ok())
        {
            h.insert(X_FORWARDED_URI, v);
        }
        if let Some(v) = cx.host.and_then(|s| HeaderValue::from_str(s).ok()) {
            h.insert(X_FORWARDED_HOST, v);
        }
        if let Ok(v) = HeaderValue::from_str(&cx.peer.ip().to_string()) {
            h.insert(X_FORWARDED_FOR, v);
        }
        h
    }

    /// The service's refusal, as the client gets it.
    async fn denial(
        &self,
        resp: Response<hyper::body::Incoming>,
    ) -> Result<Response<ProxyBody>, String> {
        let (parts, body) = resp.into_parts();
        let body =
            tokio::time::timeout(self.timeout, Limited::new(body, MAX_DENIAL_BODY).collect())
                .await
                .map_err(|_| "timed out reading the refusal".to_string())?
                .map_err(|e| e.to_string())?
                .to_bytes();
        let mut out = Response::new(text_body(body));
        *out.status_mut() = parts.status;
        for name in &self.client_headers {
            for v in parts.headers.get_all(name) {
                out.headers_mut().append(name.clone(), v.clone());
            }
        }
        Ok(out)
    }

    /// Asks the service; on a 2xx copies its `upstream_headers` onto `req`.
    async fn decide(&self, req: &mut request::Parts, cx: RequestCx<'_>) -> Result<Verdict, String> {
        let mut ask = Request::get(self.uri.clone())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        *ask.headers_mut() = self.ask_headers(req, cx);
        let resp = tokio::time::timeout(self.timeout, self.client.request(ask))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return self.denial(resp).await.map(Verdict::Respond);
        }
        for name in &self.upstream_headers {
            req.headers.remove(name);
            for v in resp.headers().get_all(name) {
                req.headers.append(name.clone(), v.clone());
            }
        }
        Ok(Verdict::Continue)
    }
}

impl Plugin for ForwardAuth {
    fn name(&self) -> &str {
        "forward-auth"
    }

    fn priority(&self) -> i32 {
        2002
    }

    fn request<'a>(
        &'a self,
        req: &'a mut request::Parts,
        cx: RequestCx<'a>,
    ) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            // A client must not pass off its own copies of what the
            // service vouches for.
            for name in &self.upstream_headers {
                req.headers.remove(name);
            }
            match self.decide(req, cx).await {
                Ok(v) => v,
                Err(e) => {
                    log::warn!("{}: forward-auth {}: {e}", cx.peer, self.uri);
                    Verdict::Respond(respond(ErrorKind::AuthUnavailable))
                }
            }
        })
    }
}
