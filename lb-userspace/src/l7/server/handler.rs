//! What the server calls with each request: a [`Handler`].
use std::future::Future;

use http::{Request, Response};

use crate::l7::{
    body::{ClientBody, ProxyBody},
    lane::Lane,
};

use super::ConnInfo;

/// Answers requests. The lane says which server path the request came
/// by ([`crate::l7::lane`]), so that an implementation can compile a copy
/// of its path per lane; any `Fn(Request, ConnInfo) -> Future` is a
/// handler that ignores it.
pub trait Handler: Send + Sync + 'static {
    /// The answer to `req`, which came on `conn` by lane `L`.
    fn call<L: Lane>(
        &self,
        req: Request<ClientBody>,
        conn: ConnInfo,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + 'static;
}

impl<H, F> Handler for H
where
    H: Fn(Request<ClientBody>, ConnInfo) -> F + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    fn call<L: Lane>(
        &self,
        req: Request<ClientBody>,
        conn: ConnInfo,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + 'static {
        self(req, conn)
    }
}
