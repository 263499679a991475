//! The engine under the store: one redb database, the writer thread that commits whatever is
//! queued in one transaction (group commit), and reads on Tokio's blocking pool.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::thread;

use redb::{Database, ReadTransaction, ReadableDatabase};
use tokio::sync::oneshot;

use super::error::StoreError;
use super::tables::Tables;

/// The most writes committed in one transaction.
const MAX_BATCH: usize = 1024;
/// The page cache: redb's default (1 GiB) would let a long-running server's memory grow with
/// the file.
const CACHE_BYTES: usize = 64 << 20;
/// A commit slower than this is logged: the disk is struggling.
const SLOW_COMMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The database, its writer thread and the queue of writes.
pub(super) struct Engine {
    /// `None` once closed.
    db: RwLock<Option<Arc<Database>>>,
    jobs: Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
    writer: Mutex<Option<thread::JoinHandle<()>>>,
}

impl Engine {
    /// Opens (or creates) the database at `path`. Blocks while the file is opened, and repaired
    /// if the last process using it was killed.
    pub(super) fn open(path: &Path) -> Result<Engine, StoreError> {
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(StoreError::db)?;
        let db = Arc::new(db);
        // Every table exists from the start, so that read transactions can open them.
        let txn = db.begin_write().map_err(StoreError::db)?;
        Tables::open(&txn)?;
        txn.commit().map_err(StoreError::db)?;
        let (tx, rx) = mpsc::channel();
        let writer_db = db.clone();
        let writer = thread::Builder::new()
            .name("chat-store-writer".into())
            .spawn(move || run_writer(&writer_db, &rx))
            .map_err(|e| StoreError::Database(format!("writer thread: {e}")))?;
        Ok(Engine {
            db: RwLock::new(Some(db)),
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Queues a write and waits for the commit that holds it.
    pub(super) async fn write<T, F>(&self, apply: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tables<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(TypedJob {
            apply: Some(apply),
            output: None,
            reply,
        });
        {
            let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            let sender = jobs.as_ref().ok_or(StoreError::Closed)?;
            sender.send(job).map_err(|_| StoreError::Closed)?;
        }
        answer.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Runs `read` in a read transaction of its own, on the blocking pool.
    pub(super) async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self
            .db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StoreError::Closed)?;
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(StoreError::db)?;
            read(&txn)
        })
        .await
        .map_err(|e| StoreError::Database(format!("read task: {e}")))?
    }

    /// Whether the store is open.
    pub(super) fn is_open(&self) -> bool {
        self.db.read().map(|db| db.is_some()).unwrap_or(false)
    }

    /// Finishes the queued writes and closes the file, so that it can be opened again. Blocks.
    pub(super) fn close(&self) {
        // Dropping the sender ends the writer once it has committed what is queued.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = writer.join();
        }
        let db = self.db.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut db) = db {
            // Reads still running hold the database for a moment; the file is released when
            // the last of them ends.
            for _ in 0..200 {
                match Arc::try_unwrap(db) {
                    Ok(db) => return drop(db),
                    Err(shared) => db = shared,
                }
                thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
}

/// One queued write: applied inside the batch's transaction, answered after its commit.
trait Job: Send {
    fn apply(&mut self, tables: &mut Tables<'_>) -> Result<(), StoreError>;
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

struct TypedJob<T, F> {
    apply: Option<F>,
    output: Option<T>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send,
    F: FnOnce(&mut Tables<'_>) -> Result<T, StoreError> + Send,
{
    fn apply(&mut self, tables: &mut Tables<'_>) -> Result<(), StoreError> {
        if let Some(apply) = self.apply.take() {
            self.output = Some(apply(tables)?);
        }
        Ok(())
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let TypedJob { output, reply, .. } = *self;
        let result = committed.and_then(|()| {
            output.ok_or_else(|| StoreError::Database("write was not applied".into()))
        });
        // The caller may have given up waiting; the write stands either way.
        let _ = reply.send(result);
    }
}

fn run_writer(db: &Database, jobs: &mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let committed = commit_batch(db, &mut batch);
        if started.elapsed() > SLOW_COMMIT {
            tracing::warn!(writes = batch.len(), took = ?started.elapsed(), "slow store commit");
        }
        if let Err(e) = &committed {
            tracing::error!(writes = batch.len(), "store commit failed: {e}");
        }
        for job in batch {
            job.finish(committed.clone());
        }
    }
}

/// Applies every job in one transaction and commits it (durably: redb fsyncs by default). One
/// failing job fails the batch: a storage error leaves the transaction unusable.
fn commit_batch(db: &Database, batch: &mut [Box<dyn Job>]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(StoreError::db)?;
    {
        let mut tables = Tables::open(&txn)?;
        for job in batch.iter_mut() {
            job.apply(&mut tables)?;
        }
    }
    txn.commit().map_err(StoreError::db)
}
