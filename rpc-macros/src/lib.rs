//! rpc-macros
