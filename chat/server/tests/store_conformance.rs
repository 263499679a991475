//! The store's contract (`conformance/mod.rs`) against the embedded redb backend.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod conformance;

use std::sync::Arc;

use chat_server::store::{RedbStore, Store};
use tempfile::TempDir;

/// Each database is a file in one temporary directory.
struct Redb(TempDir);

impl conformance::Backend for Redb {
    async fn open(&self, name: &str) -> Arc<dyn Store> {
        let path = self.0.path().join(format!("{name}.redb"));
        let store = tokio::task::spawn_blocking(move || RedbStore::open(&path))
            .await
            .unwrap()
            .unwrap();
        Arc::new(store)
    }
}

#[tokio::test]
async fn the_redb_store_keeps_the_contract() {
    conformance::run(&Redb(tempfile::tempdir().unwrap())).await;
}
