//! `key-auth`: the request carries an API key (a header, or a query
//! parameter) that belongs to a consumer; else 401. The key is removed
//! before the request goes on (unless `hide_credentials: false`) and the
//! consumer's name is passed as `X-Consumer-Username`.
use std::sync::Arc;

use http::{request, HeaderName, Uri};
use serde::Deserialize;

use super::{
    super::plugin::{BoxFuture, Plugin, RequestCx, Verdict},
    auth::{identify, unauthorized, CONSUMER_HEADER},
    consumers::Consumers,
};

/// `plugins.key-auth`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyAuthConfig {
    /// The header that carries the key (default `X-API-Key`).
    #[serde(default = "default_header")]
    pub header: String,
    /// A query parameter that may carry the key instead.
    #[serde(default)]
    pub query: Option<String>,
    /// Remove the key before forwarding (default true).
    #[serde(default = "yes")]
    pub hide_credentials: bool,
}

fn default_header() -> String {
    "x-api-key".into()
}

fn yes() -> bool {
    true
}

#[derive(Debug)]
pub struct KeyAuth {
    header: HeaderName,
    query: Option<String>,
    hide: bool,
    consumers: Arc<Consumers>,
}

impl KeyAuth {
    pub fn new(c: &KeyAuthConfig, consumers: Arc<Consumers>) -> Result<KeyAuth, (String, String)> {
        let header = HeaderName::from_bytes(c.header.as_bytes()).map_err(|_| {
            (
                "header".to_string(),
                format!("`{}` is not a header name", c.header),
            )
        })?;
        Ok(KeyAuth {
            header,
            query: c.query.clone(),
            hide: c.hide_credentials,
            consumers,
        })
    }

    fn key_from_query(&self, uri: &Uri) -> Option<(String, usize)> {
        let name = self.query.as_deref()?;
        let q = uri.query()?;
        q.split('&')
            .enumerate()
            .find_map(|(i, kv)| match kv.split_once('=') {
                Some((k, v)) if k == name => Some((v.to_string(), i)),
                _ => None,
            })
    }
}

/// `uri` without the query parameter at position `skip`.
fn without_param(uri: &Uri, skip: usize) -> Option<Uri> {
    let q = uri.query()?;
    let kept: Vec<&str> = q
        .split('&')
        .enumerate()
        .filter(|(i, _)| *i != skip)
        .map(|(_, kv)| kv)
        .collect();
    let pq = if kept.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().ok()?);
    Uri::from_parts(parts).ok()
}

impl Plugin for KeyAuth {
    fn name(&self) -> &str {
        "key-auth"
    }

    fn priority(&self) -> i32 {
        2500
    }

    fn request<'a>(
        &'a self,
        req: &'a mut request::Parts,
        _cx: RequestCx<'a>,
    ) -> BoxFuture<'a, Verdict> {
        req.headers.remove(CONSUMER_HEADER);
        let from_header = req.headers.get(&self.header).map(|v| v.as_bytes().to_vec());
        let (key, query_pos) = match from_header {
            Some(k) => (Some(k), None),
            None => match self.key_from_query(&req.uri) {
                Some((k, i)) => (Some(k.into_bytes()), Some(i)),
                None => (None, None),
            },
        };
        let verdict = match key.as_deref().and_then(|k| self.consumers.by_key(k)) {
            None => Verdict::Respond(unauthorized("Key")),
            Some(consumer) => {
                let consumer = consumer.clone();
                if self.hide {
                    req.headers.remove(&self.header);
                    if let Some(i) = query_pos {
                        if let Some(u) = without_param(&req.uri, i) {
                            req.uri = u;
                        }
                    }
                }
                identify(req, &consumer);
                Verdict::Continue
            }
        };
        Box::pin(std::future::ready(verdict))
    }
}
