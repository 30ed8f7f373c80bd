//! Which protocol a new connection may speak, decided from its TLS ALPN
//! result and its first bytes before hyper sees it, and the GOAWAY that
//! refuses a connection that broke the rule.
//!
//! Rules (RFC 9113 §3):
//! - TLS with ALPN `h2`: HTTP/2 only. The first 24 bytes must be the
//!   connection preface; anything else (HTTP/1.1 bytes included) gets
//!   SETTINGS + GOAWAY(PROTOCOL_ERROR) and a close, never an HTTP/1.1
//!   answer.
//! - TLS with ALPN `http/1.1` or none: HTTP/1.1 only. §3.3 allows prior
//!   knowledge only over cleartext ("connections over TLS MUST use
//!   protocol negotiation"), so a preface here gets
//!   GOAWAY(HTTP_1_1_REQUIRED).
//! - Cleartext: HTTP/1.1, or HTTP/2 by prior knowledge (h2c). Bytes that
//!   start with `PRI ` (a method no HTTP/1.1 client sends; the preface was
//!   built to start that way) but are not the whole preface are a broken
//!   HTTP/2 client: GOAWAY(PROTOCOL_ERROR), not an HTTP/1.1 400.
//!
//! hyper-util's auto server cannot do this itself: its
//! `serve_connection_with_upgrades` sniffs the first bytes whatever
//! `http1_only`/`http2_only` say (hyper-util 0.1.21), and h2's server
//! fails its handshake on a bad preface without writing a GOAWAY (h2
//! 0.4.20 leaves that as a TODO in `ReadPreface`). So the bytes are read
//! here, replayed to hyper through [`Rewind`], and the two refusal frames
//! are written by hand (two fixed 9-byte headers and an 8-byte payload).
use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// GOAWAY error code PROTOCOL_ERROR (RFC 9113 §7).
pub const PROTOCOL_ERROR: u32 = 0x1;
/// GOAWAY error code HTTP_1_1_REQUIRED (RFC 9113 §7).
pub const HTTP_1_1_REQUIRED: u32 = 0xd;

/// What the transport allows, before any byte is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// Cleartext: HTTP/1.1 or h2c by prior knowledge.
    Either,
    /// TLS with ALPN `h2`.
    Http2Only,
    /// TLS with ALPN `http/1.1` or no ALPN.
    Http1Only,
}

impl Allowed {
    /// The rule for a TLS connection whose ALPN result is `alpn`.
    pub fn for_alpn(alpn: Option<&[u8]>) -> Allowed {
        match alpn {
            Some(b"h2") => Allowed::Http2Only,
            _ => Allowed::Http1Only,
        }
    }
}

/// What the first bytes said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve HTTP/1.1.
    Http1,
    /// Serve HTTP/2 (the preface is complete and correct).
    Http2,
    /// Answer GOAWAY with this error code, then close.
    Refuse(u32),
}

/// The verdict on `first` (the bytes read so far), or `None` while more
/// bytes are needed. At most 24 bytes are ever needed, and fewer as soon
/// as they stop matching the preface (an 18-byte HTTP/1.0 request is
/// never waited on).
pub fn judge(allowed: Allowed, first: &[u8]) -> Option<Verdict> {
    let n = first.len().min(PREFACE.len());
    let matching = first[..n] == PREFACE[..n];
    if matching && n < PREFACE.len() {
        return None;
    }
    let complete = matching;
    Some(match allowed {
        Allowed::Http2Only if complete => Verdict::Http2,
        Allowed::Http2Only => Verdict::Refuse(PROTOCOL_ERROR),
        Allowed::Http1Only if complete => Verdict::Refuse(HTTP_1_1_REQUIRED),
        Allowed::Http1Only => Verdict::Http1,
        Allowed::Either if complete => Verdict::Http2,
        Allowed::Either if first.starts_with(b"PRI ") => Verdict::Refuse(PROTOCOL_ERROR),
        Allowed::Either => Verdict::Http1,
    })
}

/// Reads until [`judge`] decides. `Ok(None)`: the peer closed first.
/// The bytes read are left in `first`, to be replayed.
pub async fn sniff<I: AsyncRead + Unpin>(
    io: &mut I,
    allowed: Allowed,
    first: &mut Vec<u8>,
) -> io::Result<Option<Verdict>> {
    let mut buf = [0u8; PREFACE.len()];
    loop {
        if let Some(v) = judge(allowed, first) {
            return Ok(Some(v));
        }
        let want = PREFACE.len() - first.len();
        let n = io.read(&mut buf[..want]).await?;
        if n == 0 {
            return Ok(None);
        }
        first.extend_from_slice(&buf[..n]);
    }
}

/// The server's side of a refused connection: its preface (an empty
/// SETTINGS frame, which must be the first frame a server sends, RFC 9113
/// §3.4) and GOAWAY(last stream 0, `code`).
pub fn goaway_bytes(code: u32) -> [u8; 26] {
    let mut out = [0u8; 26];
    // SETTINGS: length 0, type 0x4, no flags, stream 0.
    out[3] = 0x4;
    // GOAWAY: length 8, type 0x7, no flags, stream 0; last stream 0.
    out[9..12].copy_from_slice(&[0, 0, 8]);
    out[12] = 0x7;
    out[22..26].copy_from_slice(&code.to_be_bytes());
    out
}

/// Writes [`goaway_bytes`] and closes the write side.
pub async fn refuse<I: AsyncWrite + Unpin>(io: &mut I, code: u32) -> io::Result<()> {
    io.write_all(&goaway_bytes(code)).await?;
    io.flush().await?;
    io.shutdown().await
}

/// A stream that first gives back bytes already read from it.
pub struct Rewind<I> {
    first: Vec<u8>,
    at: usize,
    inner: I,
}

impl<I> Rewind<I> {
    /// `inner`, whose reads start with `first`.
    pub fn new(first: Vec<u8>, inner: I) -> Rewind<I> {
        Rewind {
            first,
            at: 0,
            inner,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.first.len() {
            let n = buf.remaining().min(this.first.len() - this.at);
            buf.put_slice(&this.first[this.at..this.at + n]);
            this.at += n;
            if this.at == this.first.len() {
                this.first = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transport_decides_what_the_first_bytes_may_be() {
        let h1 = b"GET / HTTP/1.0\r\n\r\n";
        for allowed in [Allowed::Either, Allowed::Http1Only] {
            assert_eq!(judge(allowed, h1), Some(Verdict::Http1));
            assert_eq!(judge(allowed, b"G"), Some(Verdict::Http1));
        }
        assert_eq!(
            judge(Allowed::Http2Only, h1),
            Some(Verdict::Refuse(PROTOCOL_ERROR))
        );
        assert_eq!(judge(Allowed::Either, PREFACE), Some(Verdict::Http2));
        assert_eq!(judge(Allowed::Http2Only, PREFACE), Some(Verdict::Http2));
        assert_eq!(
            judge(Allowed::Http1Only, PREFACE),
            Some(Verdict::Refuse(HTTP_1_1_REQUIRED))
        );
        // Not enough to tell yet.
        for allowed in [Allowed::Either, Allowed::Http2Only, Allowed::Http1Only] {
            assert_eq!(judge(allowed, b"PRI * HTTP/2"), None);
            assert_eq!(judge(allowed, b""), None);
        }
        let bad = b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n";
        assert_eq!(
            judge(Allowed::Either, bad),
            Some(Verdict::Refuse(PROTOCOL_ERROR))
        );
        assert_eq!(judge(Allowed::Http1Only, bad), Some(Verdict::Http1));
    }

    #[test]
    fn goaway_frames_are_laid_out_per_rfc_9113() {
        let b = goaway_bytes(PROTOCOL_ERROR);
        assert_eq!(&b[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(&b[9..18], &[0, 0, 8, 7, 0, 0, 0, 0, 0]);
        assert_eq!(&b[18..], &[0, 0, 0, 0, 0, 0, 0, 1]);
    }
}
