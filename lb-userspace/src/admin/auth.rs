//! Token authentication: `X-API-KEY: <token>` or
//! `Authorization: Bearer <token>`.
use http::HeaderMap;

/// The admin token.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// A token; `None` for an empty one (an empty token would let anyone
    /// in).
    pub fn new(t: String) -> Option<Token> {
        (!t.is_empty()).then_some(Token(t))
    }

    /// Whether `headers` carry this token.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let key = headers.get("x-api-key").map(|v| v.as_bytes());
        let bearer = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(|v| v.trim().as_bytes());
        [key, bearer]
            .into_iter()
            .flatten()
            .any(|given| same(given, self.0.as_bytes()))
    }
}

/// Compares in time independent of where the first difference is, so
/// that response timing does not leak the token byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_header_admits_and_a_wrong_token_does_not() {
        let t = Token::new("s3cret".into()).unwrap();
        let mut h = HeaderMap::new();
        assert!(!t.admits(&h));
        h.insert("x-api-key", "s3cret".parse().unwrap());
        assert!(t.admits(&h));
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(t.admits(&h));
        h.insert("authorization", "Bearer s3cres".parse().unwrap());
        assert!(!t.admits(&h));
        assert!(Token::new(String::new()).is_none());
    }
}
