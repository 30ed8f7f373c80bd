//! `basic-auth`: `Authorization: Basic` credentials of a consumer (bcrypt
//! password hash), else 401 with a `Basic` challenge. The header is removed
//! before forwarding (unless `hide_credentials: false`), and the consumer's
//! name is passed as `X-Consumer-Username`.
use std::sync::Arc;

use base64::Engine as _;
use http::{header, request};
use serde::Deserialize;

use super::{
    super::plugin::{BoxFuture, Plugin, RequestCx, Verdict},
    auth::{identify, unauthorized, CONSUMER_HEADER},
    consumers::Consumers,
};

/// `plugins.basic-auth`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// Remove `Authorization` before forwarding (default true).
    #[serde(default = "yes")]
    pub hide_credentials: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug)]
pub struct BasicAuth {
    hide: bool,
    consumers: Arc<Consumers>,
}

impl BasicAuth {
    pub fn new(c: &BasicAuthConfig, consumers: Arc<Consumers>) -> BasicAuth {
        BasicAuth {
            hide: c.hide_credentials,
            consumers,
        }
    }
}

/// (user, password) from an `Authorization: Basic` value.
fn credentials(value: &[u8]) -> Option<(String, Vec<u8>)> {
    let s = std::str::from_utf8(value).ok()?;
    let (scheme, b64) = s.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let colon = raw.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(raw[..colon].to_vec()).ok()?;
    Some((user, raw[colon + 1..].to_vec()))
}

impl Plugin for BasicAuth {
    fn name(&self) -> &str {
        "basic-auth"
    }

    fn priority(&self) -> i32 {
        2520
    }

    fn request<'a>(
        &'a self,
        req: &'a mut request::Parts,
        _cx: RequestCx<'a>,
    ) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            req.headers.remove(CONSUMER_HEADER);
            let creds = req
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| credentials(v.as_bytes()));
            let Some((user, password)) = creds else {
                return Verdict::Respond(unauthorized("Basic realm=\"xlb\""));
            };
            let Some(consumer) = self.consumers.by_password(&user, &password).await else {
                return Verdict::Respond(unauthorized("Basic realm=\"xlb\""));
            };
            if self.hide {
                req.headers.remove(header::AUTHORIZATION);
            }
            identify(req, &consumer);
            Verdict::Continue
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_read_from_the_header() {
        // RFC 7617 §2's example.
        assert_eq!(
            credentials(b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
            Some(("Aladdin".into(), b"open sesame".to_vec()))
        );
        assert_eq!(credentials(b"Bearer QWxhZGRpbjpvcGVuIHNlc2FtZQ=="), None);
        assert_eq!(credentials(b"Basic !!"), None);
    }
}
