//! `request-validation`: checks a request at the gateway before any node
//! sees it — required headers (present, and matching a pattern when one
//! is given) in the request phase, and the body against a JSON Schema in
//! the body phase (the body is read whole, up to `max_body_bytes`, then
//! forwarded as read). A failure is `400 request-invalid` whose body names
//! what failed: the header, or the JSON Pointer of the value that broke
//! the schema (`body /items/2/qty: -1 is less than the minimum of 1`).
//!
//! Schemas are compiled once, when the chain is built, by the
//! `jsonschema` crate (drafts 4, 6, 7, 2019-09 and 2020-12, picked by
//! `$schema`, 2020-12 when absent). No remote `$ref` is fetched: the
//! crate is built without its HTTP and file resolvers, so a schema is
//! self-contained and checking it never waits on the network.
//!
//! Empty bodies: a schema applies to every request that has a body; an
//! empty body is refused on `POST`, `PUT` and `PATCH` (a JSON document is
//! expected there) and let through on other methods, whose requests
//! normally carry none.
use bytes::Bytes;
use http::{request, HeaderName, Method};
use regex::Regex;
use serde::Deserialize;

use super::super::{
    error::{ErrorKind, ProxyError},
    plugin::{BoxFuture, Plugin, RequestCx, Verdict},
};
use crate::units::Size;

/// `plugins.request-validation`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RequestValidationConfig {
    /// Headers the request must carry.
    #[serde(default)]
    pub headers: Vec<HeaderRuleConfig>,
    /// A JSON Schema the body must satisfy (YAML or JSON in the config).
    #[serde(default)]
    pub body_schema: Option<serde_json::Value>,
    /// The largest body read for the schema (default 1 MiB; larger is 413).
    #[serde(default)]
    pub max_body_bytes: Option<Size>,
}

/// One required header.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderRuleConfig {
    /// The header's name.
    pub name: String,
    /// A regular expression (Rust `regex` syntax, unanchored unless it
    /// says `^…$`) that the value must match; absent: presence is enough.
    #[serde(default)]
    pub pattern: Option<String>,
}

struct HeaderRule {
    name: HeaderName,
    pattern: Option<Regex>,
}

/// The plugin.
pub struct RequestValidation {
    headers: Vec<HeaderRule>,
    schema: Option<jsonschema::Validator>,
    limit: u64,
}

impl std::fmt::Debug for RequestValidation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestValidation")
            .field(
                "headers",
                &self.headers.iter().map(|h| &h.name).collect::<Vec<_>>(),
            )
            .field("schema", &self.schema.is_some())
            .finish()
    }
}

/// How many schema violations the answer lists at most.
const MAX_REPORTED: usize = 3;

fn invalid(detail: String) -> Verdict {
    Verdict::Respond(
        ProxyError::new(ErrorKind::RequestInvalid)
            .with_detail(detail)
            .into_response(),
    )
}

impl RequestValidation {
    /// Builds the plugin; an error names the field under
    /// `request-validation`.
    pub fn new(c: &RequestValidationConfig) -> Result<RequestValidation, (String, String)> {
        let mut headers = Vec::new();
        for (i, h) in c.headers.iter().enumerate() {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                (
                    format!("headers[{i}].name"),
                    format!("`{}` is not a header name", h.name),
                )
            })?;
            let pattern = match &h.pattern {
                None => None,
                Some(p) => Some(
                    Regex::new(p).map_err(|e| (format!("headers[{i}].pattern"), e.to_string()))?,
                ),
            };
            headers.push(HeaderRule { name, pattern });
        }
        let schema = match &c.body_schema {
            None => None,
            Some(s) => Some(jsonschema::validator_for(s).map_err(|e| {
                (
                    "body_schema".to_string(),
                    format!("not a valid JSON Schema: {e}"),
                )
            })?),
        };
        if headers.is_empty() && schema.is_none() {
            return Err((
                "headers".into(),
                "give `headers`, a `body_schema`, or both".into(),
            ));
        }
        Ok(RequestValidation {
            headers,
            schema,
            limit: c.max_body_bytes.map_or(1024 * 1024, |s| s.0),
        })
    }

    /// The first header rule the request breaks, as the answer's detail.
    pub fn check_headers(&self, req: &request::Parts) -> Result<(), String> {
        for rule in &self.headers {
            let mut values = req.headers.get_all(&rule.name).iter().peekable();
            if values.peek().is_none() {
                return Err(format!("header {}: missing", rule.name));
            }
            if let Some(re) = &rule.pattern {
                // Every copy must match: a second copy must not smuggle
                // a value past the rule.
                for v in values {
                    let ok = v.to_str().is_ok_and(|t| re.is_match(t));
                    if !ok {
                        return Err(format!(
                            "header {}: does not match `{}`",
                            rule.name,
                            re.as_str()
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// What is wrong with `body` under the schema, as the answer's detail.
    pub fn check_body(&self, method: &Method, body: &[u8]) -> Result<(), String> {
        let Some(schema) = &self.schema else {
            return Ok(());
        };
        if body.is_empty() {
            return match *method {
                Method::POST | Method::PUT | Method::PATCH => {
                    Err("body: empty, a JSON document is expected".into())
                }
                _ => Ok(()),
            };
        }
        let doc: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("body: not JSON: {e}"))?;
        let failures: Vec<String> = schema
            .iter_errors(&doc)
            .take(MAX_REPORTED)
            .map(|e| {
                let path = e.instance_path().as_str();
                let path = if path.is_empty() { "/" } else { path };
                format!("body {path}: {e}")
            })
            .collect();
        match failures.is_empty() {
            true => Ok(()),
            false => Err(failures.join("; ")),
        }
    }
}

impl Plugin for RequestValidation {
    fn name(&self) -> &str {
        "request-validation"
    }

    /// After authentication (an anonymous client learns nothing of the
    /// schema and costs no body read).
    fn priority(&self) -> i32 {
        1900
    }

    fn request<'a>(
        &'a self,
        req: &'a mut request::Parts,
        _cx: RequestCx<'a>,
    ) -> BoxFuture<'a, Verdict> {
        let v = match self.check_headers(req) {
            Ok(()) => Verdict::Continue,
            Err(d) => invalid(d),
        };
        Box::pin(std::future::ready(v))
    }

    fn body_limit(&self) -> Option<u64> {
        self.schema.as_ref().map(|_| self.limit)
    }

    fn request_body(&self, req: &request::Parts, body: &Bytes) -> Verdict {
        match self.check_body(&req.method, body) {
            Ok(()) => Verdict::Continue,
            Err(d) => invalid(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(yaml: &str) -> RequestValidation {
        RequestValidation::new(&serde_yaml_ng::from_str(yaml).unwrap()).unwrap()
    }

    const ORDER: &str = r#"
body_schema:
  type: object
  required: [customer, items]
  properties:
    customer: { type: string, minLength: 1 }
    items:
      type: array
      minItems: 1
      items:
        type: object
        required: [sku, qty]
        properties:
          sku: { type: string }
          qty: { type: integer, minimum: 1 }
"#;

    #[test]
    fn the_failing_path_is_named() {
        let p = plugin(ORDER);
        let ok = br#"{"customer":"c1","items":[{"sku":"a","qty":2}]}"#;
        assert_eq!(p.check_body(&Method::POST, ok), Ok(()));
        let bad = br#"{"customer":"c1","items":[{"sku":"a","qty":2},{"sku":"b","qty":0}]}"#;
        let e = p.check_body(&Method::POST, bad).unwrap_err();
        assert!(e.starts_with("body /items/1/qty: "), "{e}");
        let e = p.check_body(&Method::POST, br#"{"items":[]}"#).unwrap_err();
        assert!(e.contains("body /: ") && e.contains("customer"), "{e}");
        let e = p.check_body(&Method::POST, b"{nope").unwrap_err();
        assert!(e.starts_with("body: not JSON"), "{e}");
        assert!(p.check_body(&Method::POST, b"").is_err());
        assert_eq!(p.check_body(&Method::GET, b""), Ok(()));
    }

    #[test]
    fn headers_must_be_present_and_match_in_every_copy() {
        let p = plugin("headers: [{ name: x-tenant, pattern: '^[a-z]+$' }, { name: x-trace }]");
        let head = |hs: &[(&str, &str)]| {
            let mut b = http::Request::builder();
            for (n, v) in hs {
                b = b.header(*n, *v);
            }
            b.body(()).unwrap().into_parts().0
        };
        assert_eq!(
            p.check_headers(&head(&[("x-tenant", "acme"), ("x-trace", "1")])),
            Ok(())
        );
        assert_eq!(
            p.check_headers(&head(&[("x-tenant", "acme")])).unwrap_err(),
            "header x-trace: missing"
        );
        let two = head(&[
            ("x-tenant", "acme"),
            ("x-tenant", "Evil!"),
            ("x-trace", "1"),
        ]);
        assert!(p
            .check_headers(&two)
            .unwrap_err()
            .starts_with("header x-tenant: does not match"));
    }

    #[test]
    fn config_errors_name_the_field() {
        let e =
            RequestValidation::new(&serde_yaml_ng::from_str("body_schema: { type: 12 }").unwrap())
                .unwrap_err();
        assert_eq!(e.0, "body_schema");
        let e = RequestValidation::new(
            &serde_yaml_ng::from_str("headers: [{ name: a, pattern: '(' }]").unwrap(),
        )
        .unwrap_err();
        assert_eq!(e.0, "headers[0].pattern");
    }
}
