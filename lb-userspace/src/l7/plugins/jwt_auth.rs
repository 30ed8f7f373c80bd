//! `jwt-auth`: a JSON Web Token (RFC 7519) in `Authorization: Bearer` (or a
//! cookie), signed by one of the configured keys, valid now, from the
//! configured issuer and for the configured audience; else 401 and the
//! request never reaches a node.
//!
//! Signatures are checked by `jsonwebtoken` (HS256/384/512, RS256/384/512,
//! PS256/384/512, ES256/384, EdDSA). A token is only checked against keys
//! configured *for its algorithm*: an `HS256` token is never verified with
//! an RSA public key used as an HMAC secret, and `alg: none` is not an
//! algorithm at all. The time claims (`exp`, `nbf`) and `iss`/`aud` are
//! checked here, against one clock with `clock_skew` of tolerance (the
//! clock can be replaced in tests, see [`JwtAuth::with_clock`]).
//!
//! Keys come from the config (secrets, PEM files), from a JWKS file,
//! which is looked at again at most every `refresh` and re-read when it
//! changed (a file that no longer parses keeps the previous keys), and
//! from a JWKS URL or an OpenID Connect issuer's discovery document,
//! refreshed in the background (see [`super::jwks_remote`]).
//!
//! A token whose signature checked out is remembered (its exact text, up
//! to [`VERIFIED_BYTES`] of tokens, for at most [`VERIFIED_FOR`]), so a
//! client sending the same token again costs a lookup instead of a
//! signature check: an ES256 verification took ~78 µs of CPU per request
//! in `cargo xtask bench plugins`, the whole rest of the request ~27 µs.
//! Only the signature is remembered: time, issuer and audience are checked
//! on every request. An entry is used only with the very key sets it was
//! verified with: a JWKS file or URL that changes (a key removed) makes
//! every token be checked again. Envoy's `jwt_authn` keeps such a cache
//! too.
use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use base64::Engine as _;
use http::{header, request, HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::{
    super::{
        headers,
        plugin::{BoxFuture, Plugin, RequestCx, Verdict},
    },
    auth::unauthorized,
    http_fetch::Fetcher,
    jwks::{jwks_keys, parse_alg, Key},
    jwks_remote::{check_url, KeySource, RefreshPolicy, RemoteJwks},
};
use crate::units::Dur;

/// `plugins.jwt-auth`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtAuthConfig {
    /// Keys given inline or as files.
    #[serde(default)]
    pub keys: Vec<JwtKeyConfig>,
    /// A JWKS document (RFC 7517 key set) on disk.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A JWKS (RFC 7517 key set) at an http(s) URL.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// An OpenID Connect issuer: its keys come from the `jwks_uri` of
    /// `<issuer>/.well-known/openid-configuration`, and tokens must carry
    /// it as `iss` unless `issuer` says otherwise.
    #[serde(default)]
    pub oidc_issuer: Option<String>,
    /// How often the JWKS file is looked at for changes, and how often a
    /// remote key set is fetched when its response has no `max-age`
    /// (default 60s).
    #[serde(default)]
    pub refresh: Option<Dur>,
    /// The shortest wait between two fetches of a remote key set (the
    /// bound on `max-age`, the spacing of unknown-`kid` refetches and of
    /// retries after a failure; default 30s).
    #[serde(default)]
    pub min_refresh: Option<Dur>,
    /// The longest wait between two fetches of a remote key set, whatever
    /// `max-age` says (default 1h).
    #[serde(default)]
    pub max_refresh: Option<Dur>,
    /// Deadline for one fetch of a remote document (default 5s).
    #[serde(default)]
    pub fetch_timeout: Option<Dur>,
    /// A PEM CA bundle for https key sources (default: the system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Required `iss`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud` (the token's `aud`, a string or a list, must hold it).
    #[serde(default)]
    pub audience: Option<String>,
    /// Tolerance on `exp` and `nbf` (default 30s).
    #[serde(default)]
    pub clock_skew: Option<Dur>,
    /// Claims passed to the node as headers: claim name → header name.
    #[serde(default)]
    pub claims_to_headers: std::collections::BTreeMap<String, String>,
    /// A cookie that may carry the token instead of `Authorization`.
    #[serde(default)]
    pub cookie: Option<String>,
    /// Remove the token before forwarding (default true).
    #[serde(default = "yes")]
    pub hide_credentials: bool,
}

fn yes() -> bool {
    true
}

/// One configured key.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// `HS256` … `EdDSA`.
    pub alg: String,
    /// Matched against the token's `kid` when both have one.
    #[serde(default)]
    pub kid: Option<String>,
    /// HMAC secret, as text.
    #[serde(default)]
    pub secret: Option<String>,
    /// HMAC secret, base64 or base64url.
    #[serde(default)]
    pub secret_base64: Option<String>,
    /// PEM public key (RSA, EC or Ed25519) for the asymmetric algorithms.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
}

impl std::fmt::Debug for JwtKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeyConfig")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("public_key_file", &self.public_key_file)
            .finish_non_exhaustive()
    }
}

/// Bytes of token text remembered as verified, per plugin instance.
pub const VERIFIED_BYTES: u64 = 8 << 20;
/// How long a verified signature is remembered at most.
pub const VERIFIED_FOR: Duration = Duration::from_secs(300);

/// A token whose signature checked out, with the key sets it was checked
/// against (held, so that the comparison by pointer cannot be fooled by a
/// new set allocated where a freed one was).
#[derive(Clone)]
struct Verified {
    claims: Arc<Value>,
    jwks: Option<Arc<Vec<Key>>>,
    remote: Option<Arc<Vec<Key>>>,
}

fn same_set(a: &Option<Arc<Vec<Key>>>, b: Option<&Arc<Vec<Key>>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// The plugin.
pub struct JwtAuth {
    fixed: Vec<Key>,
    jwks: Option<Jwks>,
    remote: Option<Arc<RemoteJwks>>,
    issuer: Option<String>,
    audience: Option<String>,
    skew: u64,
    claims: Vec<(String, HeaderName)>,
    cookie: Option<String>,
    hide: bool,
    now: fn() -> u64,
    verified: moka::sync::Cache<String, Verified>,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("keys", &self.fixed.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

struct Jwks {
    path: PathBuf,
    refresh: Duration,
    state: ArcSwap<JwksState>,
    checking: std::sync::Mutex<()>,
}

struct JwksState {
    /// Shared between states: a look that finds the file unchanged keeps
    /// the same keys.
    keys: Arc<Vec<Key>>,
    modified: Option<SystemTime>,
    checked: Instant,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn is_hmac(a: Algorithm) -> bool {
    matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

fn load_jwks(path: &PathBuf) -> Result<(Vec<Key>, Option<SystemTime>), String> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((jwks_keys(&text)?, modified))
}

impl JwtAuth {
    /// Builds the plugin; an error names the field under `jwt-auth`.
    pub fn new(c: &JwtAuthConfig) -> Result<JwtAuth, (String, String)> {
        let mut fixed = Vec::new();
        for (i, k) in c.keys.iter().enumerate() {
            let at = |f: &str| format!("keys[{i}].{f}");
            let alg = parse_alg(&k.alg).ok_or_else(|| {
                (
                    at("alg"),
                    format!("`{}` is not one of HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA", k.alg),
                )
            })?;
            let key = if is_hmac(alg) {
                match (&k.secret, &k.secret_base64) {
                    (Some(s), None) if !s.is_empty() => DecodingKey::from_secret(s.as_bytes()),
                    (None, Some(b)) => {
                        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .decode(b.trim_end_matches('='))
                            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(b))
                            .map_err(|_| (at("secret_base64"), "is not base64".to_string()))?;
                        DecodingKey::from_secret(&raw)
                    }
                    _ => {
                        return Err((
                            at("secret"),
                            format!("{} needs one of `secret` or `secret_base64`", k.alg),
                        ))
                    }
                }
            } else {
                let Some(path) = &k.public_key_file else {
                    return Err((
                        at("public_key_file"),
                        format!("{} needs a PEM public key", k.alg),
                    ));
                };
                if k.secret.is_some() || k.secret_base64.is_some() {
                    return Err((
                        at("secret"),
                        format!("{} takes a public key, not a secret", k.alg),
                    ));
                }
                let pem = std::fs::read(path)
                    .map_err(|e| (at("public_key_file"), format!("{}: {e}", path.display())))?;
                let key = match alg {
                    Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
                    Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
                    _ => DecodingKey::from_rsa_pem(&pem),
                };
                key.map_err(|e| {
                    (
                        at("public_key_file"),
                        format!("not a {} public key: {e}", k.alg),
                    )
                })?
            };
            fixed.push(Key {
                alg,
                kid: k.kid.clone(),
                key,
            });
        }
        let jwks = match &c.jwks_file {
            None => None,
            Some(path) => {
                let (keys, modified) = load_jwks(path).map_err(|e| ("jwks_file".to_string(), e))?;
                Some(Jwks {
                    path: path.clone(),
                    refresh: c.refresh.map_or(Duration::from_secs(60), |d| d.0),
                    state: ArcSwap::from_pointee(JwksState {
                        keys: Arc::new(keys),
                        modified,
                        checked: Instant::now(),
                    }),
                    checking: std::sync::Mutex::new(()),
                })
            }
        };
        let source = match (&c.jwks_uri, &c.oidc_issuer) {
            (Some(_), Some(_)) => {
                return Err((
                    "oidc_issuer".into(),
                    "give one of jwks_uri and oidc_issuer (discovery finds the jwks_uri)".into(),
                ))
            }
            (Some(u), None) => {
                let uri: http::Uri = u
                    .parse()
                    .map_err(|e| ("jwks_uri".to_string(), format!("`{u}`: {e}")))?;
                check_url(&uri).map_err(|e| ("jwks_uri".to_string(), e))?;
                Some(KeySource::Jwks(uri))
            }
            (None, Some(iss)) => {
                Some(KeySource::discovery(iss).map_err(|e| ("oidc_issuer".to_string(), e))?)
            }
            (None, None) => None,
        };
        let remote = match source {
            None => None,
            Some(source) => {
                let policy = RefreshPolicy {
                    default: c.refresh.map_or(Duration::from_secs(60), |d| d.0),
                    min: c.min_refresh.map_or(Duration::from_secs(30), |d| d.0),
                    max: c.max_refresh.map_or(Duration::from_secs(3600), |d| d.0),
                };
                if policy.min > policy.max {
                    return Err(("min_refresh".into(), "is longer than max_refresh".into()));
                }
                let timeout = c.fetch_timeout.map_or(Duration::from_secs(5), |d| d.0);
                let fetcher = Fetcher::new(timeout, source.https(), c.ca_file.as_deref())
                    .map_err(|e| ("ca_file".to_string(), e))?;
                let key = format!("{source:?} {policy:?} {timeout:?} {:?}", c.ca_file);
                Some(RemoteJwks::shared(key, || {
                    RemoteJwks::new(source, fetcher, policy)
                }))
            }
        };
        if fixed.is_empty() && jwks.is_none() && remote.is_none() {
            return Err((
                "keys".into(),
                "give at least one key, a jwks_file, a jwks_uri or an oidc_issuer".into(),
            ));
        }
        let mut claims = Vec::new();
        for (claim, h) in &c.claims_to_headers {
            let name = HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                (
                    format!("claims_to_headers.{claim}"),
                    format!("`{h}` is not a header name"),
                )
            })?;
            claims.push((claim.clone(), name));
        }
        Ok(JwtAuth {
            fixed,
            jwks,
            remote,
            issuer: c.issuer.clone().or_else(|| c.oidc_issuer.clone()),
            audience: c.audience.clone(),
            skew: c.clock_skew.map_or(30, |d| d.0.as_secs()),
            claims,
            cookie: c.cookie.clone(),
            hide: c.hide_credentials,
            now: unix_now,
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_BYTES)
                .weigher(|token: &String, _| u32::try_from(token.len()).unwrap_or(u32::MAX))
                .time_to_live(VERIFIED_FOR)
                .build(),
        })
    }

    /// The same plugin reading time from `now` (seconds since the epoch):
    /// tests check `exp`/`nbf` against fixed instants with it.
    pub fn with_clock(mut self, now: fn() -> u64) -> JwtAuth {
        self.now = now;
        self
    }

    /// Looks at the JWKS file again when `refresh` has passed; one
    /// request at a time does, the others use the keys they have.
    fn jwks_keys(&self) -> Option<arc_swap::Guard<Arc<JwksState>>> {
        let j = self.jwks.as_ref()?;
        let st = j.state.load();
        if st.checked.elapsed() >= j.refresh {
            if let Ok(_g) = j.checking.try_lock() {
                let modified = std::fs::metadata(&j.path).and_then(|m| m.modified()).ok();
                let (keys, modified) = if modified != st.modified {
                    match load_jwks(&j.path) {
                        Ok((keys, modified)) => (Arc::new(keys), modified),
                        Err(e) => {
                            log::warn!("jwt-auth: keeping the previous keys: {e}");
                            (st.keys.clone(), st.modified)
                        }
                    }
                } else {
                    (st.keys.clone(), modified)
                };
                j.state.store(Arc::new(JwksState {
                    keys,
                    modified,
                    checked: Instant::now(),
                }));
            }
            return Some(j.state.load());
        }
        Some(st)
    }

    fn token<'r>(&self, req: &'r request::Parts) -> Option<&'r str> {
        if let Some(v) = req.headers.get(header::AUTHORIZATION) {
            let s = v.to_str().ok()?;
            let (scheme, token) = s.trim().split_once(' ')?;
            return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
        }
        let name = self.cookie.as_deref()?;
        headers::cookie(&req.headers, name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The token's claims when it is valid now; else why not (for logs).
    /// A remote key set is used as last fetched (no fetch from here).
    pub fn verify(&self, token: &str) -> Result<Arc<Value>, String> {
        let remote = self.remote.as_ref().map(|r| r.keys());
        self.check(token, remote.as_deref())
            .map_err(Refusal::into_text)
    }

    /// [`JwtAuth::verify`], fetching the remote key set when it is not
    /// there yet or lacks the token's key (rate-limited, see
    /// [`RemoteJwks::refetch`]).
    pub async fn verify_fetching(&self, token: &str) -> Result<Arc<Value>, String> {
        let Some(r) = &self.remote else {
            return self.verify(token);
        };
        r.ready().await;
        let seen = Instant::now();
        let first = self.check(token, Some(&*r.keys()));
        match first {
            Err(Refusal::NoKey(_)) => {
                r.refetch(seen).await;
                self.check(token, Some(&*r.keys()))
                    .map_err(Refusal::into_text)
            }
            other => other.map_err(Refusal::into_text),
        }
    }

    /// The claims of a token valid now: its signature as remembered or
    /// checked, then the claims.
    fn check(&self, token: &str, remote: Option<&Arc<Vec<Key>>>) -> Result<Arc<Value>, Refusal> {
        let jwks = self.jwks_keys();
        let dynamic = jwks.as_ref().map(|s| &s.keys);
        let claims = match self.verified.get(token) {
            Some(v) if same_set(&v.jwks, dynamic) && same_set(&v.remote, remote) => v.claims,
            _ => {
                let claims = Arc::new(self.signature(
                    token,
                    dynamic.map_or(&[][..], |k| k.as_slice()),
                    remote.map_or(&[][..], |k| k.as_slice()),
                )?);
                self.verified.insert(
                    token.to_string(),
                    Verified {
                        claims: claims.clone(),
                        jwks: dynamic.cloned(),
                        remote: remote.cloned(),
                    },
                );
                claims
            }
        };
        self.claims_hold(&claims)?;
        Ok(claims)
    }

    /// The claims of a token signed by one of the keys for its algorithm.
    fn signature(&self, token: &str, dynamic: &[Key], remote: &[Key]) -> Result<Value, Refusal> {
        let head = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
        let mut validation = Validation::new(head.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let mut tried = false;
        let mut claims = None;
        for k in self.fixed.iter().chain(dynamic).chain(remote) {
            if k.alg != head.alg {
                continue;
            }
            if let (Some(want), Some(have)) = (&head.kid, &k.kid) {
                if want != have {
                    continue;
                }
            }
            tried = true;
            if let Ok(data) = jsonwebtoken::decode::<Value>(token, &k.key, &validation) {
                claims = Some(data.claims);
                break;
            }
        }
        let claims = match (claims, tried) {
            (Some(c), _) => c,
            (None, false) => {
                return Err(Refusal::NoKey(format!(
                    "no key for alg {:?} kid {:?}",
                    head.alg, head.kid
                )))
            }
            (None, true) => return Err("bad signature".to_string().into()),
        };
        Ok(claims)
    }

    /// Time (with the skew), issuer and audience.
    fn claims_hold(&self, claims: &Value) -> Result<(), Refusal> {
        let now = (self.now)();
        if let Some(exp) = claims.get("exp") {
            let exp = exp.as_u64().ok_or("exp is not a number")?;
            if now >= exp.saturating_add(self.skew) {
                return Err("expired".into());
            }
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf.as_u64().ok_or("nbf is not a number")?;
            if now.saturating_add(self.skew) < nbf {
                return Err("not yet valid".into());
            }
        }
        if let Some(iss) = &self.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(iss) {
                return Err("wrong issuer".into());
            }
        }
        if let Some(aud) = &self.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(s)) => s == aud,
                Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(aud)),
                _ => false,
            };
            if !ok {
                return Err("wrong audience".into());
            }
        }
        Ok(())
    }
}

/// Why a token was refused.
enum Refusal {
    /// No key for its `alg` (and `kid`): a remote set may lack it yet.
    NoKey(String),
    /// Anything else.
    Bad(String),
}

impl Refusal {
    fn into_text(self) -> String {
        match self {
            Refusal::NoKey(s) | Refusal::Bad(s) => s,
        }
    }
}

impl From<String> for Refusal {
    fn from(s: String) -> Refusal {
        Refusal::Bad(s)
    }
}

impl From<&str> for Refusal {
    fn from(s: &str) -> Refusal {
        Refusal::Bad(s.to_string())
    }
}

impl Plugin for JwtAuth {
    fn name(&self) -> &str {
        "jwt-auth"
    }

    fn priority(&self) -> i32 {
        2510
    }

    fn request<'a>(
        &'a self,
        req: &'a mut request::Parts,
        cx: RequestCx<'a>,
    ) -> BoxFuture<'a, Verdict> {
        for (_, h) in &self.claims {
            req.headers.remove(h);
        }
        let token = self.token(req).map(str::to_string);
        Box::pin(async move {
            let checked = match &token {
                None => None,
                Some(t) => Some(self.verify_fetching(t).await),
            };
            match checked {
                None => Verdict::Respond(unauthorized("Bearer")),
                Some(Err(why)) => {
                    log::debug!("{}: jwt refused: {why}", cx.peer);
                    Verdict::Respond(unauthorized("Bearer error=\"invalid_token\""))
                }
                Some(Ok(claims)) => {
                    if self.hide {
                        req.headers.remove(header::AUTHORIZATION);
                    }
                    for (claim, h) in &self.claims {
                        let text = match claims.get(claim) {
                            None => continue,
                            Some(Value::String(s)) => s.clone(),
                            Some(v) => v.to_string(),
                        };
                        if let Ok(v) = HeaderValue::from_str(&text) {
                            req.headers.insert(h.clone(), v);
                        }
                    }
                    Verdict::Continue
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7515 Appendix A.1: an HS256 JWS and its key.
    const RFC7515_TOKEN: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const RFC7515_KEY: &str =
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";

    fn hs256(issuer: Option<&str>) -> JwtAuth {
        JwtAuth::new(&hs256_config(issuer)).unwrap()
    }

    fn hs256_config(issuer: Option<&str>) -> JwtAuthConfig {
        JwtAuthConfig {
            keys: vec![JwtKeyConfig {
                alg: "HS256".into(),
                kid: None,
                secret: None,
                secret_base64: Some(RFC7515_KEY.into()),
                public_key_file: None,
            }],
            jwks_file: None,
            jwks_uri: None,
            oidc_issuer: None,
            refresh: None,
            min_refresh: None,
            max_refresh: None,
            fetch_timeout: None,
            ca_file: None,
            issuer: issuer.map(str::to_string),
            audience: None,
            clock_skew: None,
            claims_to_headers: Default::default(),
            cookie: None,
            hide_credentials: true,
        }
    }

    #[test]
    fn the_rfc_7515_example_verifies_while_it_was_valid() {
        // exp = 1300819380 (2011-03-22).
        let jwt = hs256(Some("joe")).with_clock(|| 1_300_819_000);
        let claims = jwt.verify(RFC7515_TOKEN).unwrap();
        assert_eq!(claims["iss"], "joe");
        let late = hs256(None).with_clock(|| 1_300_819_380 + 31);
        assert_eq!(late.verify(RFC7515_TOKEN).unwrap_err(), "expired");
        let wrong_iss = hs256(Some("jane")).with_clock(|| 1_300_819_000);
        assert_eq!(wrong_iss.verify(RFC7515_TOKEN).unwrap_err(), "wrong issuer");
    }

    static CLOCK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    fn test_clock() -> u64 {
        CLOCK.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn a_remembered_signature_still_meets_the_clock_and_its_key_set() {
        // The clock: a remembered token still expires.
        CLOCK.store(1_300_819_000, std::sync::atomic::Ordering::SeqCst);
        let jwt = hs256(None).with_clock(test_clock);
        let first = jwt.verify(RFC7515_TOKEN).unwrap();
        let again = jwt.verify(RFC7515_TOKEN).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the second check is a lookup");
        CLOCK.store(1_300_819_380 + 31, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(jwt.verify(RFC7515_TOKEN).unwrap_err(), "expired");

        // The key set: a JWKS file that no longer holds the key.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let write = |k: &str, age: u64| {
            let text = format!(r#"{{"keys":[{{"kty":"oct","alg":"HS256","k":"{k}"}}]}}"#);
            std::fs::write(&path, text).unwrap();
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(age))
                .unwrap();
        };
        write(RFC7515_KEY, 100);
        let mut c = hs256_config(None);
        c.keys.clear();
        c.jwks_file = Some(path.clone());
        c.refresh = Some(Dur(Duration::ZERO));
        let jwt = JwtAuth::new(&c).unwrap().with_clock(|| 1_300_819_000);
        jwt.verify(RFC7515_TOKEN).unwrap();
        jwt.verify(RFC7515_TOKEN).unwrap();
        write(
            "c2VjcmV0LW5vdC10aGUtb25lLXRoZS10b2tlbi13YXMtc2lnbmVkLXdpdGg",
            50,
        );
        assert_eq!(jwt.verify(RFC7515_TOKEN).unwrap_err(), "bad signature");
    }

    #[test]
    fn tampered_and_alg_none_tokens_are_refused() {
        let jwt = hs256(None).with_clock(|| 1_300_819_000);
        let mut parts: Vec<&str> = RFC7515_TOKEN.split('.').collect();
        // {"iss":"joe","exp":1300819380,"http://example.com/is_root":false}
        let tampered_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"iss":"joe","exp":1300819380,"http://example.com/is_root":false}"#);
        parts[1] = &tampered_payload;
        assert_eq!(jwt.verify(&parts.join(".")).unwrap_err(), "bad signature");
        let none_head = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"alg":"none","typ":"JWT"}"#);
        let none = format!("{none_head}.{}.", RFC7515_TOKEN.split('.').nth(1).unwrap());
        assert!(jwt.verify(&none).unwrap_err().starts_with("header"));
    }
}
