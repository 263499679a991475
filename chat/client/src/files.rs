//! Files sent peer to peer: the recipient's side (offers, chunks written in order to a partial
//! copy, the hash checked at the end) and what the sender needs (the hash of a file).
//!
//! A partial copy is `<dir>/.<transfer id>.part`; offering the same transfer again (after a
//! broken connection, or a restart of either side) resumes from its length. A finished file
//! takes its offered name in the directory, with ` (1)`, ` (2)`… before the extension when the
//! name is taken.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chat_api::{FileOffer, MAX_FILE_CHUNK, PeerError, Sender};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::event::FileEvent;

/// Transfers in progress at once, at most; beyond, offers are refused until some end.
const MAX_TRANSFERS: usize = 64;

/// Files being received.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// Where files go; `None` when this client takes none.
    dir: Option<PathBuf>,
    /// The largest file taken.
    max_bytes: u64,
    transfers: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<Transfer>>>>,
    /// Transfers finished lately, and where their files went: a repeated `finish_file` or
    /// offer (the answer was lost) is answered again.
    finished: Mutex<HashMap<Uuid, u64>>,
}

/// Where a file comes from: only that source sends its chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A peer's device, by its key (sent directly).
    Device([u8; 32]),
    /// The chat server, which held the file for this user (downloaded by this client).
    Server,
}

#[derive(Debug)]
struct Transfer {
    from: Sender,
    /// Who offered it: only they send its chunks.
    key: Source,
    name: String,
    size: u64,
    sha256: [u8; 32],
    part: PathBuf,
    /// Bytes in the partial copy.
    received: u64,
    file: Option<tokio::fs::File>,
}

impl Incoming {
    pub(crate) fn new(dir: Option<PathBuf>, max_bytes: u64) -> Self {
        Incoming {
            dir,
            max_bytes,
            transfers: Mutex::new(HashMap::new()),
            finished: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this client takes files at all (it has a directory for them).
    pub(crate) fn takes_files(&self) -> bool {
        self.dir.is_some()
    }

    /// Takes an offer from `key` (a device already checked to be `offer.from`'s, or the
    /// server): how many bytes of it are here already, and whether it is new (to tell the
    /// application).
    pub(crate) async fn offer(
        &self,
        key: Source,
        offer: FileOffer,
    ) -> Result<(u64, Option<FileEvent>), PeerError> {
        if let Some(size) = lock(&self.finished).get(&offer.id) {
            return Ok((*size, None));
        }
        let Some(dir) = &self.dir else {
            return Err(PeerError::Refused(
                "this client takes no files (it has no directory for them)".to_owned(),
            ));
        };
        chat_api::check_file_name(&offer.name).map_err(PeerError::Invalid)?;
        let sha256 = chat_api::parse_sha256(&offer.sha256).map_err(PeerError::Invalid)?;
        if offer.size > self.max_bytes {
            return Err(PeerError::Refused(format!(
                "{} is {}; this client takes files up to {}",
                offer.name,
                human_bytes(offer.size),
                human_bytes(self.max_bytes)
            )));
        }
        if let Some(transfer) = self.transfer(offer.id) {
            let transfer = transfer.lock().await;
            if transfer.key != key || transfer.sha256 != sha256 || transfer.size != offer.size {
                return Err(PeerError::Invalid(
                    "that transfer id is taken by another file".to_owned(),
                ));
            }
            return Ok((transfer.received, None));
        }
        if lock(&self.transfers).len() >= MAX_TRANSFERS {
            return Err(PeerError::Refused(format!(
                "{MAX_TRANSFERS} files are arriving already; try again later"
            )));
        }
        tokio::fs::create_dir_all(dir).await.map_err(storage)?;
        let part = dir.join(format!(".{}.part", offer.id));
        let mut received = match tokio::fs::metadata(&part).await {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(storage(e)),
        };
        if received > offer.size {
            received = 0;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&part)
            .await
            .map_err(storage)?;
        file.set_len(received).await.map_err(storage)?;
        let mut file = file;
        use tokio::io::AsyncSeekExt;
        file.seek(io::SeekFrom::Start(received))
            .await
            .map_err(storage)?;
        let event = FileEvent::Incoming {
            id: offer.id,
            from: offer.from.clone(),
            name: offer.name.clone(),
            size: offer.size,
            offset: received,
        };
        let transfer = Transfer {
            from: offer.from,
            key,
            name: offer.name,
            size: offer.size,
            sha256,
            part,
            received,
            file: Some(file),
        };
        let mut transfers = lock(&self.transfers);
        // Two offers of one new transfer at once: the first stays.
        if transfers.contains_key(&offer.id) {
            return Ok((received, None));
        }
        transfers.insert(offer.id, Arc::new(tokio::sync::Mutex::new(transfer)));
        Ok((received, Some(event)))
    }

    /// Writes `data` at `offset` of transfer `id`, which must be where the copy ends.
    pub(crate) async fn chunk(
        &self,
        key: Source,
        id: Uuid,
        offset: u64,
        data: &[u8],
    ) -> Result<(), PeerError> {
        let transfer = self.transfer(id).ok_or_else(|| no_transfer(id))?;
        let mut transfer = transfer.lock().await;
        if transfer.key != key {
            return Err(no_transfer(id));
        }
        if data.len() > MAX_FILE_CHUNK {
            return Err(PeerError::Invalid(format!(
                "a chunk is at most {MAX_FILE_CHUNK} bytes, not {}",
                data.len()
            )));
        }
        if offset != transfer.received {
            return Err(PeerError::Invalid(format!(
                "the copy ends at byte {}, not {offset}",
                transfer.received
            )));
        }
        let end = offset + data.len() as u64;
        if end > transfer.size {
            return Err(PeerError::Invalid(format!(
                "the file was offered as {} bytes; this chunk ends at {end}",
                transfer.size
            )));
        }
        let file = transfer
            .file
            .as_mut()
            .ok_or_else(|| PeerError::Storage("the partial copy is closed".to_owned()))?;
        let written = async {
            file.write_all(data).await?;
            file.flush().await
        }
        .await;
        if let Err(e) = written {
            // What was written in part is cut off, so that the copy ends where `received` says.
            let received = transfer.received;
            if let Some(file) = transfer.file.as_mut() {
                let _ = file.set_len(received).await;
                use tokio::io::AsyncSeekExt;
                let _ = file.seek(io::SeekFrom::Start(received)).await;
            }
            return Err(storage(e));
        }
        transfer.received = end;
        Ok(())
    }

    /// Ends transfer `id`: checks the hash and moves the copy to its name.
    pub(crate) async fn finish(&self, key: Source, id: Uuid) -> Result<FileEvent, PeerError> {
        if lock(&self.finished).contains_key(&id) {
            return Err(PeerError::Invalid("that transfer has ended".to_owned()));
        }
        let shared = self.transfer(id).ok_or_else(|| no_transfer(id))?;
        let mut transfer = shared.lock().await;
        if transfer.key != key {
            return Err(no_transfer(id));
        }
        if transfer.received != transfer.size {
            return Err(PeerError::Invalid(format!(
                "{} of {} bytes arrived",
                transfer.received, transfer.size
            )));
        }
        if let Some(file) = transfer.file.take() {
            file.sync_all().await.map_err(storage)?;
        }
        let part = transfer.part.clone();
        let hash = tokio::task::spawn_blocking(move || sha256_of(&part))
            .await
            .map_err(|e| PeerError::Storage(e.to_string()))?
            .map_err(storage)?;
        lock(&self.transfers).remove(&id);
        if hash != transfer.sha256 {
            let _ = tokio::fs::remove_file(&transfer.part).await;
            return Ok(FileEvent::Failed {
                id,
                from: transfer.from.clone(),
                name: transfer.name.clone(),
                reason: "what arrived does not have the SHA-256 offered; the copy was deleted"
                    .to_owned(),
            });
        }
        let dir = transfer
            .part
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let path = free_name(&dir, &transfer.name).await;
        tokio::fs::rename(&transfer.part, &path)
            .await
            .map_err(storage)?;
        let mut finished = lock(&self.finished);
        if finished.len() >= 1024 {
            finished.clear();
        }
        finished.insert(id, transfer.size);
        Ok(FileEvent::Received {
            id,
            from: transfer.from.clone(),
            name: transfer.name.clone(),
            size: transfer.size,
            path,
        })
    }

    fn transfer(&self, id: Uuid) -> Option<Arc<tokio::sync::Mutex<Transfer>>> {
        lock(&self.transfers).get(&id).cloned()
    }
}

fn no_transfer(id: Uuid) -> PeerError {
    PeerError::Invalid(format!(
        "no transfer {id} from this device: offer the file first"
    ))
}

/// A storage error as the sender sees it; a full disk says so.
fn storage(e: io::Error) -> PeerError {
    if e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(28) {
        PeerError::Storage("no space left on the recipient's disk".to_owned())
    } else {
        PeerError::Storage(e.to_string())
    }
}

/// The SHA-256 of a file's bytes (blocking).
pub(crate) fn sha256_of(path: &Path) -> io::Result<[u8; 32]> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

/// 64 lowercase hexadecimal digits.
pub(crate) fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// `name` in `dir`, or `stem (n).ext` for the first `n` from 1 that is free.
async fn free_name(dir: &Path, name: &str) -> PathBuf {
    let candidate = dir.join(name);
    if !tokio::fs::try_exists(&candidate).await.unwrap_or(true) {
        return candidate;
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem, format!(".{ext}")),
        _ => (name, String::new()),
    };
    for n in 1u32.. {
        let candidate = dir.join(format!("{stem} ({n}){ext}"));
        if !tokio::fs::try_exists(&candidate).await.unwrap_or(true) {
            return candidate;
        }
    }
    unreachable!("some name is free")
}

/// "512 B", "3.4 MB", "1.0 GB" (powers of 1000).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender() -> Sender {
        Sender {
            id: Uuid::new_v4(),
            name: "alice".into(),
        }
    }

    fn offer(data: &[u8], name: &str) -> FileOffer {
        FileOffer {
            id: Uuid::new_v4(),
            from: sender(),
            name: name.into(),
            size: data.len() as u64,
            sha256: hex(&Sha256::digest(data).into()),
        }
    }

    #[test]
    fn names_that_escape_the_directory_are_refused() {
        for bad in ["", ".", "..", "a/b", "..\\x", "a\nb", &"x".repeat(256)] {
            assert!(chat_api::check_file_name(bad).is_err(), "{bad:?}");
        }
        for good in ["notes.txt", ".hidden", "été 2026.jpg", "a..b"] {
            assert!(chat_api::check_file_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn hashes_and_sizes_read_back() {
        let hash = [0xab; 32];
        assert_eq!(chat_api::parse_sha256(&hex(&hash)), Ok(hash));
        assert!(chat_api::parse_sha256("zz").is_err());
        assert!(chat_api::parse_sha256(&"g".repeat(64)).is_err());
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
    }

    #[tokio::test]
    async fn a_file_arrives_resumes_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let key = Source::Device([7; 32]);
        let incoming = Incoming::new(Some(dir.path().to_owned()), 1 << 20);
        let offer = offer(&data, "data.bin");
        let (at, event) = incoming.offer(key, offer.clone()).await.unwrap();
        assert_eq!(at, 0);
        assert!(matches!(event, Some(FileEvent::Incoming { offset: 0, .. })));
        incoming
            .chunk(key, offer.id, 0, &data[..1000])
            .await
            .unwrap();
        // Out of order, from another device, past the end: refused, nothing written.
        assert!(
            incoming
                .chunk(key, offer.id, 2000, &data[2000..])
                .await
                .is_err()
        );
        assert!(
            incoming
                .chunk(Source::Server, offer.id, 1000, &data[1000..])
                .await
                .is_err()
        );
        assert!(
            incoming
                .chunk(key, offer.id, 1000, &[0; 2001])
                .await
                .is_err()
        );

        // The same offer again (a broken connection) resumes where the copy ends, even in a
        // new process.
        let restarted = Incoming::new(Some(dir.path().to_owned()), 1 << 20);
        let (at, event) = restarted.offer(key, offer.clone()).await.unwrap();
        assert_eq!(at, 1000);
        assert!(matches!(
            event,
            Some(FileEvent::Incoming { offset: 1000, .. })
        ));
        assert!(
            restarted.finish(key, offer.id).await.is_err(),
            "not all arrived"
        );
        restarted
            .chunk(key, offer.id, 1000, &data[1000..])
            .await
            .unwrap();
        let FileEvent::Received { path, size, .. } = restarted.finish(key, offer.id).await.unwrap()
        else {
            panic!("not received")
        };
        assert_eq!(size, 3000);
        assert_eq!(path, dir.path().join("data.bin"));
        assert_eq!(std::fs::read(&path).unwrap(), data);
        // Offered again after the end: nothing more to send.
        assert_eq!(restarted.offer(key, offer).await.unwrap().0, 3000);

        // The same name again goes beside it; a wrong hash is deleted.
        let mut second = self::offer(&data, "data.bin");
        second.sha256 = hex(&[0; 32]);
        restarted.offer(key, second.clone()).await.unwrap();
        restarted.chunk(key, second.id, 0, &data).await.unwrap();
        assert!(matches!(
            restarted.finish(key, second.id).await.unwrap(),
            FileEvent::Failed { .. }
        ));
        assert!(!dir.path().join(format!(".{}.part", second.id)).exists());
        let third = self::offer(&data, "data.bin");
        restarted.offer(key, third.clone()).await.unwrap();
        restarted.chunk(key, third.id, 0, &data).await.unwrap();
        let FileEvent::Received { path, .. } = restarted.finish(key, third.id).await.unwrap()
        else {
            panic!("not received")
        };
        assert_eq!(path, dir.path().join("data (1).bin"));
    }

    #[tokio::test]
    async fn offers_beyond_the_limits_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let incoming = Incoming::new(Some(dir.path().to_owned()), 100);
        let big = offer(&[0; 101], "big");
        assert!(matches!(
            incoming.offer(Source::Device([1; 32]), big).await,
            Err(PeerError::Refused(m)) if m.contains("up to 100 B")
        ));
        let none = Incoming::new(None, 100);
        assert!(matches!(
            none.offer(Source::Device([1; 32]), offer(b"x", "x")).await,
            Err(PeerError::Refused(_))
        ));
        assert!(matches!(
            incoming
                .offer(Source::Device([1; 32]), offer(b"x", "../x"))
                .await,
            Err(PeerError::Invalid(_))
        ));
    }
}
