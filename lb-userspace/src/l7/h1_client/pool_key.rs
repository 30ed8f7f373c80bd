//! What names a pool of interchangeable HTTP/1.1 connections, and where
//! a finished exchange puts its connection back.
use std::{net::SocketAddr, time::Duration};

use rustls::pki_types::ServerName;

/// Which connections are interchangeable: the same client (upstream
/// settings), node and TLS server name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub client: u64,
    pub node: SocketAddr,
    pub name: Option<ServerName<'static>>,
}

/// How a finished exchange puts its connection back.
#[derive(Debug, Clone)]
pub struct Checkin {
    pub key: PoolKey,
    pub max_idle: usize,
    pub idle_timeout: Duration,
}
