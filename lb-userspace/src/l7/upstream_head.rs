//! A request head as the upstream clients send it: the head's own fields,
//! then fields the proxy adds, written after them.
//!
//! The added fields are the forwarding ones (`X-Forwarded-*`, `Via`) of a
//! request whose head held none of those names: written while the head is
//! encoded, they land exactly where inserting them into the field map
//! would have put them (new names go last, in the order inserted), without
//! four hashed insertions per request, ~1 000 instructions (callgrind,
//! docs/bench/l7.md). hyper's connections get a copy of the head anyway;
//! the added fields are appended to that copy.
use http::{request, HeaderName, HeaderValue};
use smallvec::SmallVec;

/// Fields written after a head's own, in order.
pub type AddedFields = SmallVec<[(HeaderName, HeaderValue); 4]>;

/// A head and the fields added after its own. `Copy`: the head is lent,
/// a retry sends it again.
#[derive(Clone, Copy)]
pub struct UpstreamHead<'a> {
    pub parts: &'a request::Parts,
    pub added: &'a [(HeaderName, HeaderValue)],
}

impl<'a> From<&'a request::Parts> for UpstreamHead<'a> {
    /// A head sent as it is.
    fn from(parts: &'a request::Parts) -> Self {
        UpstreamHead { parts, added: &[] }
    }
}

impl UpstreamHead<'_> {
    /// The head with the added fields appended to its map, for a client
    /// that takes its own copy (hyper's).
    pub fn to_parts(&self) -> request::Parts {
        let mut parts = self.parts.clone();
        for (name, value) in self.added {
            parts.headers.append(name.clone(), value.clone());
        }
        parts
    }

    /// Every field, the head's own first, as written.
    pub fn fields(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.parts
            .headers
            .iter()
            .chain(self.added.iter().map(|(n, v)| (n, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_fields_follow_the_heads_own() {
        let (mut parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        parts.headers.insert("a", HeaderValue::from_static("1"));
        let added: AddedFields = [(
            HeaderName::from_static("via"),
            HeaderValue::from_static("1.1 xlb"),
        )]
        .into_iter()
        .collect();
        let head = UpstreamHead {
            parts: &parts,
            added: &added,
        };
        let names: Vec<_> = head.fields().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "via"]);
        let copy = head.to_parts();
        assert_eq!(copy.headers["via"], "1.1 xlb");
        assert_eq!(copy.headers.len(), 2);
    }
}
