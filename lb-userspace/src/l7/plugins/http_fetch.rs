//! A small HTTP GET client for the documents plugins fetch from other
//! services (a JWKS, an OpenID Connect discovery document): `http` or
//! `https` (rustls, the system's roots or a configured CA bundle), one
//! connection per fetch, a deadline for the whole exchange and a cap on the
//! body. These fetches happen every few minutes, so a pool would buy
//! nothing; a `hyper` connection per fetch keeps the code short.
use std::{path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::{
    pki_types::{pem::PemObject as _, CertificateDer},
    RootCertStore,
};
use tokio::net::TcpStream;

use crate::tls_util;

/// The largest document accepted (a JWKS of a few dozen keys is ~10 KiB).
pub const MAX_DOCUMENT: usize = 1024 * 1024;

/// One fetched document.
#[derive(Debug)]
pub struct Fetched {
    /// The body.
    pub body: Bytes,
    /// `Cache-Control: max-age` (zero for `no-cache`/`no-store`), if given.
    pub max_age: Option<Duration>,
}

/// Fetches documents over http or https.
#[derive(Clone)]
pub struct Fetcher {
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A fetcher with the deadline `timeout`; `https` builds a TLS client
    /// trusting `ca` (a PEM bundle) or, without it, the system's roots.
    pub fn new(timeout: Duration, https: bool, ca: Option<&Path>) -> Result<Fetcher, String> {
        let tls = match https {
            false => None,
            true => {
                let mut roots = RootCertStore::empty();
                match ca {
                    Some(path) => {
                        let certs: Vec<CertificateDer<'static>> =
                            CertificateDer::pem_file_iter(path)
                                .and_then(|it| it.collect())
                                .map_err(|e| format!("{}: {e}", path.display()))?;
                        let (added, _) = roots.add_parsable_certificates(certs);
                        if added == 0 {
                            return Err(format!("{}: no CA certificate", path.display()));
                        }
                    }
                    None => {
                        let found = rustls_native_certs::load_native_certs();
                        roots.add_parsable_certificates(found.certs);
                    }
                }
                let config =
                    rustls::ClientConfig::builder_with_provider(tls_util::crypto_provider())
                        .with_safe_default_protocol_versions()
                        .map_err(|e| e.to_string())?
                        .with_root_certificates(roots)
                        .with_no_client_auth();
                Some(Arc::new(config))
            }
        };
        Ok(Fetcher { tls, timeout })
    }

    /// GETs `uri`; anything but a 200 with a body under [`MAX_DOCUMENT`]
    /// within the deadline is an error (its text says what went wrong).
    pub async fn get(&self, uri: &Uri) -> Result<Fetched, String> {
        match tokio::time::timeout(self.timeout, self.exchange(uri)).await {
            Ok(r) => r.map_err(|e| format!("{uri}: {e}")),
            Err(_) => Err(format!("{uri}: no answer within {:?}", self.timeout)),
        }
    }

    async fn exchange(&self, uri: &Uri) -> Result<Fetched, String> {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("not an http(s) URL".into()),
        };
        let host = uri.host().ok_or("no host")?;
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri.authority().ok_or("no host")?.as_str().to_string();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((bare, port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let req = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(header::HOST, authority)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, "xlb")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        match (https, &self.tls) {
            (false, _) => send(TokioIo::new(tcp), req).await,
            (true, Some(cfg)) => {
                let name = tls_util::server_name(host).ok_or("not a TLS server name")?;
                let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                send(TokioIo::new(tls), req).await
            }
            (true, None) => Err("https URL on a fetcher built for http".into()),
        }
    }
}

async fn send<IO>(io: TokioIo<IO>, req: Request<Empty<Bytes>>) -> Result<Fetched, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != StatusCode::OK {
        return Err(format!("status {}", resp.status()));
    }
    let max_age = max_age(resp.headers());
    let body = Limited::new(resp.into_body(), MAX_DOCUMENT)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Fetched { body, max_age })
}

/// `max-age` of `Cache-Control` (RFC 9111 §5.2.2.1); `no-cache` and
/// `no-store` count as zero (the caller's lower bound applies).
pub fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut found = None;
    for v in headers.get_all(header::CACHE_CONTROL) {
        let Ok(text) = v.to_str() else { continue };
        for directive in text.split(',') {
            let d = directive.trim();
            let (name, value) = d.split_once('=').unwrap_or((d, ""));
            if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
                return Some(Duration::ZERO);
            }
            if name.eq_ignore_ascii_case("max-age") {
                if let Ok(secs) = value.trim_matches('"').parse::<u64>() {
                    found = Some(Duration::from_secs(secs));
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(v: &str) -> Option<Duration> {
        let mut h = HeaderMap::new();
        h.insert(header::CACHE_CONTROL, v.parse().unwrap());
        max_age(&h)
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(cc("public, max-age=300"), Some(Duration::from_secs(300)));
        assert_eq!(cc("Max-Age=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(cc("no-store"), Some(Duration::ZERO));
        assert_eq!(cc("public"), None);
        assert_eq!(cc("max-age=soon"), None);
    }
}
