//! Unix domain sockets: connect, and listen with stale-socket cleanup.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

use crate::Connection;

pub(crate) async fn connect(path: &Path) -> io::Result<Connection> {
    let stream = UnixStream::connect(path).await?;
    Ok(Connection::unix(stream, Some(path.to_owned())))
}

/// A bound Unix socket listener. Dropping it removes the socket file, unless the file has been
/// replaced by another one since.
#[derive(Debug)]
pub(crate) struct UnixAcceptor {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file we created, to recognise it when removing it.
    file_id: Option<(u64, u64)>,
}

impl UnixAcceptor {
    /// Binds `path`. A socket file left behind by a process that is gone (connecting to it is
    /// refused) is removed first; one that something listens on fails with
    /// [`io::ErrorKind::AddrInUse`], and a file that is not a socket is never removed.
    pub(crate) async fn bind(path: &Path) -> io::Result<Self> {
        let listener = match UnixListener::bind(path) {
            Ok(listener) => listener,
            Err(error) if error.kind() == io::ErrorKind::AddrInUse => {
                remove_if_stale(path, error).await?;
                UnixListener::bind(path)?
            }
            Err(error) => return Err(error),
        };
        let file_id = std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        Ok(UnixAcceptor {
            listener,
            path: path.to_owned(),
            file_id,
        })
    }

    pub(crate) async fn accept(&mut self) -> io::Result<Connection> {
        let (stream, peer) = self.listener.accept().await?;
        Ok(Connection::unix(
            stream,
            peer.as_pathname().map(Path::to_path_buf),
        ))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UnixAcceptor {
    fn drop(&mut self) {
        let current = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if current.is_none() || current != self.file_id {
            return;
        }
        if let Err(error) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), %error, "cannot remove unix socket file");
        }
    }
}

/// Removes the socket file at `path` if nothing accepts on it; otherwise returns `in_use`.
async fn remove_if_stale(path: &Path, in_use: io::Error) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {}
        // Gone since bind failed: nothing to remove, binding again decides.
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        _ => return Err(in_use),
    }
    match UnixStream::connect(path).await {
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::debug!(path = %path.display(), "removing stale unix socket file");
            match std::fs::remove_file(path) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
                _ => Ok(()),
            }
        }
        _ => Err(in_use),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PeerAddr;

    #[tokio::test]
    async fn a_regular_file_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-socket");
        std::fs::write(&path, b"data").unwrap();

        let err = UnixAcceptor::bind(&path).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
    }

    #[tokio::test]
    async fn drop_removes_only_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let mut acceptor = UnixAcceptor::bind(&path).await.unwrap();
        assert_eq!(acceptor.path(), path);

        let (client, server) = tokio::join!(connect(&path), acceptor.accept());
        assert_eq!(client.unwrap().peer(), &PeerAddr::Unix(Some(path.clone())));
        assert_eq!(server.unwrap().peer(), &PeerAddr::Unix(None));

        // Someone replaced the file: dropping must not delete theirs. (Written beside it first,
        // so that it cannot reuse the socket's inode number.)
        let theirs = dir.path().join("theirs");
        std::fs::write(&theirs, b"theirs").unwrap();
        std::fs::rename(&theirs, &path).unwrap();
        drop(acceptor);
        assert_eq!(std::fs::read(&path).unwrap(), b"theirs");
    }
}
