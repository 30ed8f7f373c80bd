//! Internet checksums (RFC 1071): the one's-complement sum of 16-bit words.
/// Folds a 32-bit partial sum to 16 bits and complements it.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Adds the big-endian 16-bit words of `bytes` (`N` even) to `sum`.
///
/// Works on a copy on the stack rather than on packet memory: a loop of
/// bounds checks against `data_end` is what LLVM likes to rewrite into
/// arithmetic on `data_end`, which the verifier forbids.
#[inline(always)]
pub fn add<const N: usize>(mut sum: u32, bytes: &[u8; N]) -> u32 {
    let mut i = 0;
    while i + 1 < N {
        sum += u16::from_be_bytes([bytes[i], bytes[i + 1]]) as u32;
        i += 2;
    }
    sum
}
