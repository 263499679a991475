//! In-process pipes registered under names in a process-global table. No timers and no sockets,
//! so they work under `tokio::time::pause()`.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use tokio::io::DuplexStream;
use tokio::sync::mpsc;

use crate::{Connection, PeerAddr};

/// Bytes each direction of a pipe buffers before a writer waits for the reader.
pub(crate) const PIPE_BUFFER: usize = 64 * 1024;

/// Connections queued for a listener that has not accepted them; a further connect waits (and
/// may time out) until the listener accepts one.
pub(crate) const BACKLOG: usize = 128;

/// A connection on its way to a listener: the server end and the connection number.
type Incoming = (DuplexStream, u64);

struct Registration {
    listener_id: u64,
    sender: mpsc::Sender<Incoming>,
}

/// Numbers connections and listeners; shared so that every number is unique in the process.
static NEXT_NUMBER: AtomicU64 = AtomicU64::new(1);

fn next_number() -> u64 {
    NEXT_NUMBER.fetch_add(1, Ordering::Relaxed)
}

fn registry() -> MutexGuard<'static, HashMap<String, Registration>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Registration>>> = OnceLock::new();
    // No code panics while holding the lock, and the map stays consistent even if one did, so
    // a poisoned lock is safe to use.
    REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

fn refused(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionRefused,
        format!("no listener on mem://{name}"),
    )
}

/// Connects to the listener registered as `name`, waiting while its backlog is full.
pub(crate) async fn connect(name: &str) -> io::Result<Connection> {
    let sender = registry()
        .get(name)
        .map(|r| r.sender.clone())
        .ok_or_else(|| refused(name))?;
    let number = next_number();
    let (client, server) = tokio::io::duplex(PIPE_BUFFER);
    // Fails only if the listener was dropped after we looked it up.
    sender
        .send((server, number))
        .await
        .map_err(|_| refused(name))?;
    Ok(Connection::new(client, PeerAddr::Memory(number)))
}

/// A registered name and the queue of connections made to it. Dropping it unregisters the name
/// and closes the connections it has not accepted.
#[derive(Debug)]
pub(crate) struct MemoryListener {
    name: String,
    listener_id: u64,
    incoming: mpsc::Receiver<Incoming>,
}

impl MemoryListener {
    /// Registers `name`, failing with [`io::ErrorKind::AddrInUse`] if it is taken.
    pub(crate) fn bind(name: &str) -> io::Result<Self> {
        let mut registry = registry();
        if registry.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("mem://{name} already has a listener"),
            ));
        }
        let (sender, incoming) = mpsc::channel(BACKLOG);
        let listener_id = next_number();
        registry.insert(
            name.to_owned(),
            Registration {
                listener_id,
                sender,
            },
        );
        Ok(MemoryListener {
            name: name.to_owned(),
            listener_id,
            incoming,
        })
    }

    pub(crate) async fn accept(&mut self) -> io::Result<Connection> {
        match self.incoming.recv().await {
            Some((stream, number)) => Ok(Connection::new(stream, PeerAddr::Memory(number))),
            // The registry keeps a sender until `drop`, so the queue cannot close while we
            // hold `&mut self`; report it rather than assume it.
            None => Err(io::Error::other(format!(
                "mem://{} was unregistered",
                self.name
            ))),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for MemoryListener {
    fn drop(&mut self) {
        let mut registry = registry();
        if registry
            .get(&self.name)
            .is_some_and(|r| r.listener_id == self.listener_id)
        {
            registry.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn connect_accept_and_exchange_under_paused_time() {
        let mut listener = MemoryListener::bind("memory-unit-exchange").unwrap();
        let mut client = connect("memory-unit-exchange").await.unwrap();
        let mut server = listener.accept().await.unwrap();
        assert_eq!(client.peer(), server.peer());

        client.write_all(b"up").await.unwrap();
        let mut buf = [0; 2];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"up");
    }

    #[tokio::test]
    async fn unknown_name_is_refused_and_taken_name_in_use() {
        let err = connect("memory-unit-nobody").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);

        let _listener = MemoryListener::bind("memory-unit-taken").unwrap();
        let err = MemoryListener::bind("memory-unit-taken").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[tokio::test]
    async fn drop_unregisters_and_closes_queued_connections() {
        let listener = MemoryListener::bind("memory-unit-drop").unwrap();
        let mut queued = connect("memory-unit-drop").await.unwrap();
        drop(listener);

        let mut buf = [0; 1];
        assert_eq!(
            queued.read(&mut buf).await.unwrap(),
            0,
            "queued connection sees EOF"
        );
        let err = connect("memory-unit-drop").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        let _again = MemoryListener::bind("memory-unit-drop").unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn connect_waits_while_the_backlog_is_full() {
        let mut listener = MemoryListener::bind("memory-unit-backlog").unwrap();
        let mut queued = Vec::new();
        for _ in 0..BACKLOG {
            queued.push(connect("memory-unit-backlog").await.unwrap());
        }
        let waiting = tokio::spawn(connect("memory-unit-backlog"));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());

        listener.accept().await.unwrap();
        let conn = waiting.await.unwrap().unwrap();
        assert!(matches!(conn.peer(), PeerAddr::Memory(_)));
    }
}
