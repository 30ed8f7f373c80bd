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

/// Adds `N` bytes (`N` a multiple of 4) of the frame at `off` to `sum`,
/// with the kernel's `bpf_csum_diff` over the packet itself.
///
/// Summing in BPF code would load the bytes first and spill each one to
/// its own stack slot (BPF has 512 bytes of stack for everything); the
/// helper reads them in place.
#[inline(always)]
pub fn add_frame<const N: usize>(
    ctx: &aya_ebpf::programs::XdpContext,
    sum: u32,
    off: usize,
) -> Option<u32> {
    let p = crate::parse::ptr_at::<[u8; N]>(ctx, off)? as *mut u32;
    // SAFETY: the N bytes at p were bounds-checked; a null `from` with size
    // 0 makes the helper a plain checksum of `to`.
    let partial =
        unsafe { aya_ebpf::helpers::bpf_csum_diff(core::ptr::null_mut(), 0, p, N as u32, 0) };
    if partial < 0 {
        return None;
    }
    // The helper sums native-order (little-endian) words; folded to 16
    // bits, that is the byte-swap of the big-endian sum used here.
    let mut x = partial as u64 & 0xffff_ffff;
    x = (x & 0xffff) + (x >> 16);
    x = (x & 0xffff) + (x >> 16);
    Some(sum + (x as u16).swap_bytes() as u32)
}

/// The checksum `check` after one 16-bit word it covers changed from `old`
/// to `new` (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')).
#[inline(always)]
pub fn replace(check: u16, old: u16, new: u16) -> u16 {
    fold(!check as u32 + !old as u32 + new as u32)
}
