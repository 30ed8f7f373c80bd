//! Consumers: who may call a route with an auth plugin, and their hashed
//! secrets. An API key is kept as its SHA-256 (keys are long random
//! strings: a fast hash is enough, and a lookup costs one hash); a password
//! as a bcrypt hash, as `htpasswd -B` writes it (passwords are guessable: a
//! slow hash). Secrets never appear in logs, errors or `Debug` output.
use std::{collections::HashMap, sync::Arc, sync::Mutex};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `l7.consumers[]` in the YAML.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// The consumer's name, passed to the node as `X-Consumer-Username`.
    pub name: String,
    /// SHA-256 of the consumer's API key, hex (`printf %s KEY | sha256sum`).
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// Basic-auth credentials.
    #[serde(default)]
    pub basic_auth: Option<BasicCredConfig>,
}

impl std::fmt::Debug for ConsumerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerConfig")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A consumer's basic-auth user and bcrypt password hash.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicCredConfig {
    pub username: String,
    /// `$2b$…`/`$2y$…`, as `htpasswd -nbB user password` prints after the
    /// colon.
    pub password_bcrypt: String,
}

/// The consumers, indexed for the auth plugins.
#[derive(Default)]
pub struct Consumers {
    by_key: HashMap<[u8; 32], Arc<str>>,
    by_user: HashMap<String, BasicUser>,
}

impl std::fmt::Debug for Consumers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Consumers({} keys, {} users)",
            self.by_key.len(),
            self.by_user.len()
        )
    }
}

struct BasicUser {
    consumer: Arc<str>,
    bcrypt: String,
    /// SHA-256 of the last `user:password` bcrypt accepted: a client that
    /// sends the same credentials again costs one fast hash, not a bcrypt
    /// (tens of milliseconds by design).
    verified: Mutex<Option<[u8; 32]>>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Consumers {
    /// Indexes `list`; errors are `(field path under the list, message)`.
    pub fn build(list: &[ConsumerConfig]) -> Result<Consumers, Vec<(String, String)>> {
        let mut c = Consumers::default();
        let mut errors = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, cc) in list.iter().enumerate() {
            if cc.name.is_empty() || !super::super::headers::is_token(&cc.name) {
                errors.push((
                    format!("[{i}].name"),
                    "must be a non-empty token (letters, digits, -_.)".into(),
                ));
            }
            if !names.insert(cc.name.clone()) {
                errors.push((format!("[{i}].name"), format!("`{}` twice", cc.name)));
            }
            let name: Arc<str> = cc.name.as_str().into();
            if let Some(hex) = &cc.key_sha256 {
                match decode_hex32(hex) {
                    Some(h) => {
                        if c.by_key.insert(h, name.clone()).is_some() {
                            errors.push((
                                format!("[{i}].key_sha256"),
                                "another consumer has the same key".into(),
                            ));
                        }
                    }
                    None => errors.push((
                        format!("[{i}].key_sha256"),
                        "must be 64 hex digits (the SHA-256 of the key)".into(),
                    )),
                }
            }
            if let Some(b) = &cc.basic_auth {
                if b.password_bcrypt.parse::<bcrypt::HashParts>().is_err() {
                    errors.push((
                        format!("[{i}].basic_auth.password_bcrypt"),
                        "is not a bcrypt hash ($2b$…, as `htpasswd -nbB` prints)".into(),
                    ));
                } else if c
                    .by_user
                    .insert(
                        b.username.clone(),
                        BasicUser {
                            consumer: name.clone(),
                            bcrypt: b.password_bcrypt.clone(),
                            verified: Mutex::new(None),
                        },
                    )
                    .is_some()
                {
                    errors.push((
                        format!("[{i}].basic_auth.username"),
                        format!("`{}` belongs to two consumers", b.username),
                    ));
                }
            }
        }
        if errors.is_empty() {
            Ok(c)
        } else {
            Err(errors)
        }
    }

    /// The consumer whose API key is `key`.
    pub fn by_key(&self, key: &[u8]) -> Option<&Arc<str>> {
        self.by_key.get(&sha256(key))
    }

    /// The consumer whose basic-auth credentials these are. A bcrypt
    /// check runs on the blocking pool (it is slow on purpose).
    pub async fn by_password(&self, user: &str, password: &[u8]) -> Option<Arc<str>> {
        let u = self.by_user.get(user)?;
        let mut both = Vec::with_capacity(user.len() + 1 + password.len());
        both.extend_from_slice(user.as_bytes());
        both.push(b':');
        both.extend_from_slice(password);
        let digest = sha256(&both);
        let known = *u.verified.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = known {
            if bool::from(known.ct_eq(&digest)) {
                return Some(u.consumer.clone());
            }
        }
        let hash = u.bcrypt.clone();
        let password = password.to_vec();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()?
            .ok()?;
        if !ok {
            return None;
        }
        *u.verified.lock().unwrap_or_else(|p| p.into_inner()) = Some(digest);
        Some(u.consumer.clone())
    }
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hi = (chunk[0] as char).to_digit(16)?;
        let lo = (chunk[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[tokio::test]
    async fn keys_and_passwords_find_their_consumer() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let c = Consumers::build(&[ConsumerConfig {
            name: "alice".into(),
            key_sha256: Some(hex(&sha256(b"key-of-alice"))),
            basic_auth: Some(BasicCredConfig {
                username: "al".into(),
                password_bcrypt: hash,
            }),
        }])
        .unwrap();
        assert_eq!(c.by_key(b"key-of-alice").map(|s| &**s), Some("alice"));
        assert!(c.by_key(b"key-of-bob").is_none());
        assert_eq!(
            c.by_password("al", b"s3cret").await.as_deref(),
            Some("alice")
        );
        // Again: served from the verified digest.
        assert_eq!(
            c.by_password("al", b"s3cret").await.as_deref(),
            Some("alice")
        );
        assert!(c.by_password("al", b"wrong").await.is_none());
        assert!(c.by_password("bob", b"s3cret").await.is_none());
    }

    #[test]
    fn bad_hashes_name_their_field() {
        let e = Consumers::build(&[ConsumerConfig {
            name: "a".into(),
            key_sha256: Some("abc".into()),
            basic_auth: Some(BasicCredConfig {
                username: "u".into(),
                password_bcrypt: "plain".into(),
            }),
        }])
        .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["[0].key_sha256", "[0].basic_auth.password_bcrypt"]);
    }
}
