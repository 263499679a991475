//! The engine under the store: one redb database, the writer thread that commits whatever is
//! queued in one transaction (group commit), reads on Tokio's blocking pool, and recovery from
//! I/O errors.
//!
//! After an I/O error (a full disk, a failing device) redb refuses every later operation until
//! the database is closed and opened again, even once the cause is gone. So the writer does
//! that by itself: the batch that failed is answered [`StoreError::Unavailable`] (it was not
//! acknowledged, so nothing acknowledged is lost), the database is closed, and the writer opens
//! it again, with a growing pause between attempts, until it opens. Meanwhile the store is
//! unhealthy and every call is answered [`StoreError::Unavailable`] at once. Opening checks and
//! repairs the file, and finds every commit acknowledged before the error.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use redb::{Database, ReadTransaction, ReadableDatabase};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::error::StoreError;
use super::tables::{self, Tables};

/// The most writes committed in one transaction.
const MAX_BATCH: usize = 1024;
/// The page cache: redb's default (1 GiB) would let a long-running server's memory grow with
/// the file.
const CACHE_BYTES: usize = 64 << 20;
/// A commit slower than this is logged: the disk is struggling.
const SLOW_COMMIT: Duration = Duration::from_secs(1);
/// The first and the longest pause between two attempts to open the database again.
const REOPEN_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// How long the writer waits for reads in flight to let go of a failed database before it
/// opens the file again (an attempt while one holds it fails, and is tried again later).
const RELEASE_WAIT: Duration = Duration::from_secs(1);

/// The store's health.
const HEALTHY: u8 = 0;
const RECOVERING: u8 = 1;
const CLOSED: u8 = 2;

/// The database, its writer thread and the queue of writes.
pub(super) struct Engine {
    state: Arc<State>,
    jobs: Mutex<Option<mpsc::Sender<Message>>>,
    writer: Mutex<Option<thread::JoinHandle<()>>>,
}

/// What the handles and the writer thread share.
struct State {
    path: PathBuf,
    /// The open database; `None` while it is opened again, and once closed.
    db: RwLock<Option<Arc<Database>>>,
    health: AtomicU8,
    /// How many times the database was opened again: a read that failed on one that was
    /// replaced since asks for nothing.
    generation: AtomicU64,
}

/// What the writer thread is asked to do.
enum Message {
    Write(Box<dyn Job>),
    /// A read failed with an I/O error on the database of this generation: open it again.
    Reopen(u64),
}

impl Engine {
    /// Opens (or creates) the database at `path`. Blocks while the file is opened, and repaired
    /// if the last process using it was killed.
    pub(super) fn open(path: &Path) -> Result<Engine, StoreError> {
        let db = Arc::new(open_database(path)?);
        let state = Arc::new(State {
            path: path.to_owned(),
            db: RwLock::new(Some(db.clone())),
            health: AtomicU8::new(HEALTHY),
            generation: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel();
        let writer_state = state.clone();
        let writer = thread::Builder::new()
            .name("chat-store-writer".into())
            .spawn(move || run_writer(&writer_state, db, &rx))
            .map_err(|e| StoreError::Database(format!("writer thread: {e}")))?;
        Ok(Engine {
            state,
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
        self.state.check()?;
        let (reply, answer) = oneshot::channel();
        let job = Box::new(TypedJob {
            apply: Some(apply),
            output: None,
            reply,
        });
        self.send(Message::Write(job))?;
        answer.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Runs `read` in a read transaction of its own, on the blocking pool.
    pub(super) async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let generation = self.state.generation.load(Ordering::Acquire);
        let db = self.state.db()?;
        let result = tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(StoreError::db)?;
            read(&txn)
        })
        .await
        .map_err(|e| StoreError::Database(format!("read task: {e}")))?;
        if let Err(StoreError::Unavailable(e)) = &result
            && self.state.health.load(Ordering::Acquire) == HEALTHY
        {
            error!("store read failed: {e}");
            let _ = self.send(Message::Reopen(generation));
        }
        result
    }

    /// Whether the store is open and working (not reopening its database after an I/O error).
    pub(super) fn is_healthy(&self) -> bool {
        self.state.health.load(Ordering::Acquire) == HEALTHY
    }

    /// Whether the store is open.
    pub(super) fn is_open(&self) -> bool {
        self.state.health.load(Ordering::Acquire) != CLOSED
    }

    /// Finishes the queued writes and closes the file, so that it can be opened again. Blocks.
    pub(super) fn close(&self) {
        // Dropping the sender ends the writer once it has committed what is queued.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = writer.join();
        }
        self.state.health.store(CLOSED, Ordering::Release);
        let db = self
            .state
            .db
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(db) = db {
            // Reads still running hold the database for a moment; the file is released when
            // the last of them ends.
            let _ = release(db, Duration::from_secs(1), || {});
        }
    }

    fn send(&self, message: Message) -> Result<(), StoreError> {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let sender = jobs.as_ref().ok_or(StoreError::Closed)?;
        sender.send(message).map_err(|_| StoreError::Closed)
    }
}

impl State {
    /// Fails at once while the store cannot serve.
    fn check(&self) -> Result<(), StoreError> {
        match self.health.load(Ordering::Acquire) {
            HEALTHY => Ok(()),
            RECOVERING => Err(StoreError::recovering()),
            _ => Err(StoreError::Closed),
        }
    }

    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.check()?;
        let db = self.db.read().unwrap_or_else(|e| e.into_inner()).clone();
        db.ok_or_else(|| self.check().err().unwrap_or(StoreError::Closed))
    }
}

/// Opens the database and makes sure every table exists, so that read transactions can open
/// them.
fn open_database(path: &Path) -> Result<Database, StoreError> {
    let db = redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(StoreError::db)?;
    let txn = db.begin_write().map_err(StoreError::db)?;
    Tables::open(&txn)?;
    tables::migrate(&txn)?;
    txn.commit().map_err(StoreError::db)?;
    Ok(db)
}

/// Drops this handle of the database and waits up to `wait` for the others to go (the last one
/// closes the file), calling `meanwhile` between looks. Whether the file was closed.
fn release(mut db: Arc<Database>, wait: Duration, mut meanwhile: impl FnMut()) -> bool {
    let deadline = Instant::now().checked_add(wait);
    loop {
        match Arc::try_unwrap(db) {
            Ok(db) => {
                drop(db);
                return true;
            }
            Err(shared) => db = shared,
        }
        if deadline.is_none_or(|deadline| Instant::now() >= deadline) {
            return false;
        }
        meanwhile();
        thread::sleep(Duration::from_millis(5));
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

/// The writer thread: commits batches until the store is closed, and opens the database again
/// whenever it fails with an I/O error.
fn run_writer(state: &State, mut db: Arc<Database>, jobs: &mpsc::Receiver<Message>) {
    while let Ok(first) = jobs.recv() {
        let mut reopen = None;
        let mut batch = Vec::new();
        match first {
            Message::Write(job) => batch.push(job),
            Message::Reopen(generation) => reopen = Some(generation),
        }
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(Message::Write(job)) => batch.push(job),
                Ok(Message::Reopen(generation)) => reopen = Some(generation),
                Err(_) => break,
            }
        }
        let mut failed = false;
        if !batch.is_empty() {
            let started = Instant::now();
            let committed = commit_batch(&db, &mut batch);
            if started.elapsed() > SLOW_COMMIT {
                warn!(writes = batch.len(), took = ?started.elapsed(), "slow store commit");
            }
            if let Err(e) = &committed {
                error!(writes = batch.len(), "store commit failed: {e}");
                failed = matches!(e, StoreError::Unavailable(_));
            }
            for job in batch {
                job.finish(committed.clone());
            }
        }
        let read_failed = reopen == Some(state.generation.load(Ordering::Acquire));
        if failed || read_failed {
            match recover(state, db, jobs) {
                Some(reopened) => db = reopened,
                None => return,
            }
        }
    }
}

/// Closes the database that failed and opens it again, answering every write with
/// [`StoreError::Unavailable`] until it is open. `None` if the store was closed meanwhile.
fn recover(
    state: &State,
    failed: Arc<Database>,
    jobs: &mpsc::Receiver<Message>,
) -> Option<Arc<Database>> {
    state.health.store(RECOVERING, Ordering::Release);
    error!("the store failed with an I/O error; opening it again");
    // No read starts on the failed database any more; those running end with an error.
    drop(state.db.write().unwrap_or_else(|e| e.into_inner()).take());
    let mut closed = false;
    let refuse = |closed: &mut bool| loop {
        match jobs.try_recv() {
            Ok(Message::Write(job)) => job.finish(Err(StoreError::recovering())),
            Ok(Message::Reopen(_)) => {}
            Err(mpsc::TryRecvError::Empty) => return,
            Err(mpsc::TryRecvError::Disconnected) => {
                *closed = true;
                return;
            }
        }
    };
    release(failed, RELEASE_WAIT, || refuse(&mut closed));
    let (mut pause, longest) = REOPEN_BACKOFF;
    for attempt in 1u32.. {
        if closed {
            return None;
        }
        match open_database(&state.path) {
            Ok(db) => {
                let db = Arc::new(db);
                *state.db.write().unwrap_or_else(|e| e.into_inner()) = Some(db.clone());
                state.generation.fetch_add(1, Ordering::AcqRel);
                state.health.store(HEALTHY, Ordering::Release);
                info!(attempt, "the store is open again");
                return Some(db);
            }
            Err(e) => warn!(attempt, retry_in = ?pause, "opening the store again failed: {e}"),
        }
        let until = Instant::now().checked_add(pause);
        loop {
            let left = until.map_or(Duration::ZERO, |until| {
                until.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                break;
            }
            match jobs.recv_timeout(left) {
                Ok(Message::Write(job)) => job.finish(Err(StoreError::recovering())),
                Ok(Message::Reopen(_)) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
        pause = pause.saturating_mul(2).min(longest);
    }
    None
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
