// SPDX-License-Identifier: GPL-2.0
//
// xlb's benchmark entry point around Katran's XDP balancer
// (katran/lib/bpf/balancer.bpf.c, unmodified, GPL-2.0 like the rest of this
// directory). Used only by `cargo xtask bench l4`, which compiles this file
// with clang at bench time; nothing of it is linked into xlb.
//
// Two things differ from Katran's own `balancer_ingress` section, both for
// measuring it the way xlb's program is measured (and `katran_bench_undo`
// below, for kernels without live frames, adds a third):
// - `katran_bench` first restores the frame's 14-byte Ethernet header from
//   `xlb_bench_head` (BPF_PROG_TEST_RUN's live-frames mode recycles pages
//   without copying the input again, and IPIP encapsulation overwrites those
//   bytes), exactly as xlb's `xlb_bench_balancer` does; Katran's program is
//   then inlined into it.
// - The clock Katran's new-connection rate limit reads is a constant, so the
//   bench can hold Katran "under flood" (no connection-table insert on a new
//   flow), which is how xlb's "new flow" case runs (zero insert budget).
//   This removes one helper call from Katran's new-flow path (in Katran's
//   favour); its hit path never reads the clock for TCP.

#define PROG_SEC_NAME ".text"
#define bpf_ktime_get_ns() ((__u64)0)
#define balancer_ingress \
  __attribute__((__always_inline__)) static inline katran_balancer_ingress
#include "katran/lib/bpf/balancer.bpf.c"
#undef balancer_ingress

struct xlb_bench_head_value {
  __u64 w[2];
};

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __type(key, __u32);
  __type(value, struct xlb_bench_head_value);
  __uint(max_entries, 1);
} xlb_bench_head SEC(".maps");

// Rewrites the frame's 14-byte Ethernet header from `xlb_bench_head`.
static __always_inline void restore_eth(struct xdp_md* ctx) {
  __u32 zero = 0;
  struct xlb_bench_head_value* head =
      bpf_map_lookup_elem(&xlb_bench_head, &zero);
  void* data = (void*)(long)ctx->data;
  void* data_end = (void*)(long)ctx->data_end;
  if (head && data + 14 <= data_end) {
    // 8 + 4 + 2 bytes of the stored little-endian words, as xlb's restore.
    *(__u64*)data = head->w[0];
    *(__u32*)(data + 8) = (__u32)head->w[1];
    *(__u16*)(data + 12) = (__u16)(head->w[1] >> 32);
  }
}

SEC("xdp")
int katran_bench(struct xdp_md* ctx) {
  restore_eth(ctx);
  return katran_balancer_ingress(ctx);
}

// Program-only timing (kernels that refuse live frames): BPF_PROG_TEST_RUN
// then runs every repetition on the previous one's buffer, data pointers
// included, so after the balancer the head room its encapsulation took is
// given back (one bpf_xdp_adjust_head, called even when nothing grew),
// exactly as xlb's `xlb_bench_balancer_undo` does; the Ethernet-header
// restore above then rewrites the 14 bytes the outer header's tail left
// behind. A separate entry point so that `katran_bench` (live frames) is
// unchanged.
SEC("xdp")
int katran_bench_undo(struct xdp_md* ctx) {
  restore_eth(ctx);
  // Both lengths through an empty asm (libbpf's barrier_var), as xlb's
  // black_box: otherwise clang folds the two differences into a pointer
  // sum, which the verifier rejects.
  long len = (long)ctx->data_end - (long)ctx->data;
  asm volatile("" : "+r"(len));
  int verdict = katran_balancer_ingress(ctx);
  long now = (long)ctx->data_end - (long)ctx->data;
  asm volatile("" : "+r"(now));
  bpf_xdp_adjust_head(ctx, (int)(now - len));
  return verdict;
}
