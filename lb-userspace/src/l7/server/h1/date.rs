//! The `Date` field of the own path's responses (RFC 9110 §6.6.1: an
//! origin with a clock sends one; hyper adds it to every response, and the
//! own path answers as hyper did). Formatted once per second per thread.
use std::{
    cell::RefCell,
    time::{Duration, UNIX_EPOCH},
};

use crate::l7::coarse_clock;

thread_local! {
    /// The second last formatted and its text.
    static CACHED: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Appends `date: <IMF-fixdate>\r\n` for now.
pub fn append(out: &mut Vec<u8>) {
    // The coarse clock: a second is all `Date` tells (see `coarse_clock`).
    let second = coarse_clock::unix_seconds();
    CACHED.with_borrow_mut(|(at, text)| {
        if *at != second {
            let formatted = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second));
            // IMF-fixdate is always 29 bytes.
            if let Some(bytes) = formatted.as_bytes().get(..29) {
                text.copy_from_slice(bytes);
                *at = second;
            }
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(text);
        out.extend_from_slice(b"\r\n");
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_field_is_a_date_of_now() {
        let mut out = Vec::new();
        super::append(&mut out);
        let text = std::str::from_utf8(&out).unwrap();
        let value = text
            .strip_prefix("date: ")
            .unwrap()
            .strip_suffix("\r\n")
            .unwrap();
        let at = httpdate::parse_http_date(value).unwrap();
        let off = std::time::SystemTime::now().duration_since(at).unwrap();
        assert!(off.as_secs() < 5, "{value} is not now");
    }
}
