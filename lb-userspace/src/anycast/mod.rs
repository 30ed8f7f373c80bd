//! Anycast: telling a local BIRD 2 which VIP prefixes this node can serve,
//! so that routers send traffic only to nodes that can take it.
//!
//! xlb writes a BIRD configuration fragment holding one static protocol per
//! address family whose routes are exactly the prefixes to announce, then
//! runs `birdc configure`. Why this mechanism: a route's presence *is* the
//! announcement, so the node's BGP export filter needs nothing but
//! `proto = "xlb_vips4"`; an empty protocol is valid BIRD (an empty prefix
//! set literal is not); and a reconfiguration restarts only protocols whose
//! text changed — the static ones, softly — so BGP sessions stay up. The
//! file is replaced atomically, so BIRD never reads half of it. Talking to
//! BIRD's control socket directly would save a process start per change,
//! but `birdc` is BIRD's stable interface and a change is rare.

pub mod bird;
pub mod prefixes;
