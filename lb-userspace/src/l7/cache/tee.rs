//! A response body that goes to the client as it arrives and is copied on
//! the way, so that the complete body can be stored without making the
//! client wait for it.
//!
//! The copy is abandoned (the client's stream is untouched) when it grows
//! past the object size limit, when trailers arrive, when the upstream
//! body fails, when its length disagrees with `Content-Length`, or when the
//! body is dropped before its end (the client went away).
use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};

use crate::l7::body::ProxyBody;

/// Why a copy was abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abandoned {
    TooLarge,
    Trailers,
    Error,
    LengthMismatch,
    Dropped,
}

/// What to do with the complete body, or with the news that there is none.
pub type Sink = Box<dyn FnOnce(Result<Bytes, Abandoned>) + Send + Sync>;

struct Copy {
    chunks: Vec<Bytes>,
    len: u64,
    limit: u64,
    expect: Option<u64>,
    sink: Sink,
}

/// See the module doc.
pub struct TeeBody {
    inner: ProxyBody,
    copy: Option<Copy>,
}

impl TeeBody {
    /// Wraps `inner`; `sink` is called exactly once. `expect` is the
    /// response's `Content-Length`, if any.
    pub fn new(inner: ProxyBody, limit: u64, expect: Option<u64>, sink: Sink) -> TeeBody {
        let mut tee = TeeBody {
            inner,
            copy: Some(Copy {
                chunks: Vec::new(),
                len: 0,
                limit,
                expect,
                sink,
            }),
        };
        // An empty body may never be polled: it is complete already.
        if tee.inner.is_end_stream() {
            tee.finish();
        }
        tee
    }

    /// Whether the copy is still being made (not yet stored or abandoned).
    pub fn is_copying(&self) -> bool {
        self.copy.is_some()
    }

    fn finish(&mut self) {
        let Some(copy) = self.copy.take() else { return };
        if copy.expect.is_some_and(|e| e != copy.len) {
            (copy.sink)(Err(Abandoned::LengthMismatch));
            return;
        }
        let body = match copy.chunks.len() {
            0 => Bytes::new(),
            1 => copy.chunks.into_iter().next().unwrap_or_default(),
            _ => {
                let mut all = BytesMut::with_capacity(copy.len as usize);
                for c in copy.chunks {
                    all.extend_from_slice(&c);
                }
                all.freeze()
            }
        };
        (copy.sink)(Ok(body));
    }

    fn abandon(&mut self, why: Abandoned) {
        if let Some(copy) = self.copy.take() {
            (copy.sink)(Err(why));
        }
    }
}

impl Body for TeeBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                match frame.data_ref() {
                    Some(data) => {
                        if let Some(copy) = &mut this.copy {
                            copy.len += data.len() as u64;
                            if copy.len > copy.limit {
                                this.abandon(Abandoned::TooLarge);
                            } else if !data.is_empty() {
                                copy.chunks.push(data.clone());
                            }
                        }
                    }
                    None => this.abandon(Abandoned::Trailers),
                }
                // hyper may not poll again once the body says it is done.
                if this.inner.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.abandon(Abandoned::Error);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TeeBody {
    fn drop(&mut self) {
        if self.copy.is_some() {
            if self.inner.is_end_stream() {
                self.finish();
            } else {
                self.abandon(Abandoned::Dropped);
            }
        }
    }
}
