//! rpc-registry
