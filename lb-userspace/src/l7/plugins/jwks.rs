//! A verification key of `jwt-auth` and the parsing of a JWKS document
//! (RFC 7517 key set) into such keys, shared by the JWKS file and the JWKS
//! fetched over HTTP ([`super::jwks_remote`]).
use jsonwebtoken::{jwk::JwkSet, Algorithm, DecodingKey};

/// One key: bound to its algorithm (a token is only ever checked against
/// keys of its own `alg`).
pub struct Key {
    /// The only algorithm this key verifies.
    pub alg: Algorithm,
    /// Matched against the token's `kid` when both have one.
    pub kid: Option<String>,
    /// The key material.
    pub key: DecodingKey,
}

/// `HS256` … `EdDSA` by name.
pub fn parse_alg(s: &str) -> Option<Algorithm> {
    s.parse::<Algorithm>().ok()
}

/// Keys of a JWKS document: each with its own `alg`, or the default
/// algorithm of its key type when it has none. Keys for encryption
/// (`use: enc`) or of an unknown `alg` are left out.
pub fn jwks_keys(text: &[u8]) -> Result<Vec<Key>, String> {
    let set: JwkSet = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        if matches!(
            jwk.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
        ) {
            continue;
        }
        let alg = match jwk.common.key_algorithm.map(|a| a.to_string()) {
            Some(a) => match parse_alg(&a) {
                Some(a) => a,
                None => continue, // an encryption key or unknown alg
            },
            None => match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(p) => match p.curve {
                    jsonwebtoken::jwk::EllipticCurve::P384 => Algorithm::ES384,
                    _ => Algorithm::ES256,
                },
                jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_) => Algorithm::HS256,
            },
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        keys.push(Key {
            alg,
            kid: jwk.common.key_id.clone(),
            key,
        });
    }
    Ok(keys)
}
