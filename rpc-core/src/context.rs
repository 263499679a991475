//! What a handler may know about its call: names, deadline, metadata, peer.

use std::sync::Arc;

use rpc_codec::Metadata;
use rpc_transport::PeerAddr;
use tokio::time::Instant;

/// What a handler or a filter can know about the call it is serving.
///
/// A `#[service]` method receives it by declaring a first argument of type `CallContext`.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub(crate) request_id: u64,
    pub(crate) service: String,
    pub(crate) method: String,
    pub(crate) deadline: Option<Instant>,
    pub(crate) metadata: Metadata,
    pub(crate) peer: Arc<PeerAddr>,
}

impl CallContext {
    /// The request id of the call on its connection.
    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The method's name.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// When the caller stops waiting, if it set a deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The metadata the caller sent.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The address of the caller as this server sees it.
    pub fn peer(&self) -> &PeerAddr {
        &self.peer
    }
}
