//! Files sent through the server: held for their recipient (online without a direct path to
//! the sender, or offline) until they download them and acknowledge the message that carries
//! them, or until they expire.
//!
//! The sender uploads in pieces (`upload_file`, then `upload_chunk` from where the server's
//! copy ends, resumable after a broken connection), then `finish_upload`: the server checks the
//! SHA-256 of what it holds against the declared one and relays the message that carries the
//! file like any other, so an offline recipient finds it in their mailbox and an online one
//! gets it at once, on whichever server holds their session (the store is shared).

use bytes::Bytes;
use chat_api::{Attachment, ChatError, Delivery, MAX_FILE_CHUNK};
use sha2::{Digest, Sha256};
use tracing::{debug, info};
use uuid::Uuid;

use crate::state::{Shared, storage_error};
use crate::store::{FileAppended, FileBegun, HeldFile};

/// How many bytes a hash check reads from the store at a time.
const HASH_READ: usize = MAX_FILE_CHUNK;

impl Shared {
    /// Begins or resumes an upload; answers how many bytes the server holds.
    pub(crate) async fn upload_file(
        &self,
        token: &str,
        id: Uuid,
        to: Uuid,
        file: Attachment,
    ) -> Result<u64, ChatError> {
        let session = self.session(token)?;
        chat_api::check_file_name(&file.name).map_err(ChatError::Invalid)?;
        chat_api::parse_sha256(&file.sha256).map_err(ChatError::Invalid)?;
        let max = self.settings.max_held_file;
        if max == 0 {
            return Err(ChatError::Quota(
                "this server holds no files; they go peer to peer only".into(),
            ));
        }
        if file.size > max {
            return Err(ChatError::Quota(format!(
                "the file has {} bytes; this server holds files of at most {max} bytes",
                file.size
            )));
        }
        let held = HeldFile {
            from: session.sender(),
            to,
            file,
            received: 0,
            touched_ms: 0,
        };
        let begun = self
            .store
            .begin_file(id, &held, self.settings.held_files_quota)
            .await
            .map_err(storage_error)?;
        match begun {
            FileBegun::Held { received } => {
                debug!(from = %session.info.id, %to, file = %id, received, "upload");
                Ok(received)
            }
            FileBegun::OtherFile => Err(ChatError::Invalid(format!(
                "{id} is another upload; choose a new id for a new file"
            ))),
            FileBegun::UnknownRecipient => Err(ChatError::UnknownUser(to.to_string())),
            FileBegun::QuotaReached { held } => Err(ChatError::Quota(format!(
                "{held} bytes of files are waiting for {to}; the server holds at most {} for \
                 one user: try again once they have taken them",
                self.settings.held_files_quota
            ))),
        }
    }

    /// Adds a piece to an upload.
    pub(crate) async fn upload_chunk(
        &self,
        token: &str,
        id: Uuid,
        offset: u64,
        data: Bytes,
    ) -> Result<(), ChatError> {
        let session = self.session(token)?;
        if data.len() > MAX_FILE_CHUNK {
            return Err(ChatError::Invalid(format!(
                "a piece of a file is at most {MAX_FILE_CHUNK} bytes, not {}",
                data.len()
            )));
        }
        let appended = self
            .store
            .append_file(id, session.info.id, offset, data)
            .await
            .map_err(storage_error)?;
        match appended {
            FileAppended::Appended { .. } => Ok(()),
            FileAppended::UnknownFile => Err(ChatError::NoSuchFile(id)),
            FileAppended::WrongOffset { received } => Err(ChatError::Invalid(format!(
                "the piece at {offset} does not follow the {received} bytes held, or passes \
                 the file's size; resume with upload_file"
            ))),
        }
    }

    /// Checks a finished upload's hash and relays the message that carries it.
    pub(crate) async fn finish_upload(
        &self,
        token: &str,
        id: Uuid,
        sent_at_ms: u64,
    ) -> Result<Delivery, ChatError> {
        let session = self.session(token)?;
        let held = match self.store.held_file(id).await.map_err(storage_error)? {
            Some(held) if held.from.id == session.info.id => held,
            _ => return Err(ChatError::NoSuchFile(id)),
        };
        if held.received < held.file.size {
            return Err(ChatError::Invalid(format!(
                "{} of the file's {} bytes have arrived; send the rest first",
                held.received, held.file.size
            )));
        }
        let sha256 = self.hash_held(id, held.file.size).await?;
        if hex(&sha256) != held.file.sha256 {
            self.store.delete_file(id).await.map_err(storage_error)?;
            return Err(ChatError::Invalid(format!(
                "what arrived does not have the declared SHA-256 ({}); the copy is deleted: \
                 send the file again",
                held.file.sha256
            )));
        }
        let to = held.to;
        let name = held.file.name.clone();
        let delivery = self
            .relay_as(
                &session,
                id,
                to,
                format!("sent a file: {name}"),
                sent_at_ms,
                Some(held.file),
            )
            .await?;
        info!(from = %session.info.id, %to, file = %id, ?delivery, "file held for its recipient");
        Ok(delivery)
    }

    /// A piece of a file held for the caller.
    pub(crate) async fn download(
        &self,
        token: &str,
        id: Uuid,
        offset: u64,
        limit: u32,
    ) -> Result<Bytes, ChatError> {
        let limit = match usize::try_from(limit) {
            Ok(0) | Err(_) => MAX_FILE_CHUNK,
            Ok(limit) => limit.min(MAX_FILE_CHUNK),
        };
        let session = self.session(token)?;
        // Only the recipient reads it; to anyone else it does not exist.
        match self.store.held_file(id).await.map_err(storage_error)? {
            Some(held) if held.to == session.info.id && held.received == held.file.size => {}
            _ => return Err(ChatError::NoSuchFile(id)),
        }
        match self
            .store
            .read_file(id, offset, limit)
            .await
            .map_err(storage_error)?
        {
            Some(bytes) => Ok(bytes),
            None => Err(ChatError::NoSuchFile(id)),
        }
    }

    /// The SHA-256 of the first `size` bytes held under `id`.
    async fn hash_held(&self, id: Uuid, size: u64) -> Result<[u8; 32], ChatError> {
        let mut hasher = Sha256::new();
        let mut offset = 0u64;
        while offset < size {
            let piece = self
                .store
                .read_file(id, offset, HASH_READ)
                .await
                .map_err(storage_error)?
                .ok_or(ChatError::NoSuchFile(id))?;
            if piece.is_empty() {
                return Err(ChatError::Storage(format!(
                    "file {id} ends at {offset} of {size} bytes"
                )));
            }
            offset += piece.len() as u64;
            hasher.update(&piece);
        }
        Ok(hasher.finalize().into())
    }
}

/// Bytes as lowercase hexadecimal digits.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}
