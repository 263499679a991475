#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod conformance;
