//! Blob storage for original instances, through `object_store`: a local directory in the
//! embedded mode, any S3-compatible store through the same trait in the distributed mode.
//!
//! Originals are written under a staging key while they stream in (hashed on the way), then
//! moved to their final key, which includes the hash, so different bytes never overwrite.
//! On the local store every final blob is fsynced (file and directory) before `commit` returns:
//! an event is appended only after its blob is durable.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store error: {0}")]
    Store(#[from] object_store::Error),
    #[error("blob store I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid blob key {0:?}")]
    Key(String),
}

#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// Set for the local store: the directory, for fsync.
    local_root: Option<PathBuf>,
}

/// Parts are uploaded in chunks of this size, so memory stays bounded whatever the instance size.
const CHUNK: usize = 8 * 1024 * 1024;

impl BlobStore {
    /// A blob store in a local directory (created if missing).
    pub fn local(root: impl Into<PathBuf>) -> Result<BlobStore, BlobError> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        let root = root.canonicalize()?;
        Ok(BlobStore {
            store: Arc::new(LocalFileSystem::new_with_prefix(&root)?),
            local_root: Some(root),
        })
    }

    /// An S3-compatible bucket, `s3://BUCKET[/PREFIX]`. Credentials, region and endpoint come
    /// from the standard environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`), as every S3 tool reads them. A PUT that
    /// returned is durable in the bucket, so `commit` needs no extra step there.
    pub fn s3(url: &str) -> Result<BlobStore, BlobError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| BlobError::Key(format!("{url} (expected s3://BUCKET[/PREFIX])")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(BlobError::Key(format!("{url} (no bucket)")));
        }
        let s3 = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()?;
        let prefix = prefix.trim_matches('/');
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, Self::path(prefix)?))
        };
        Ok(Self::from_store(store))
    }

    /// Checks that the store answers (readiness): lists at most one object.
    pub async fn probe(&self) -> Result<(), BlobError> {
        use futures::StreamExt;
        let mut listing = self.store.list(Some(&ObjectPath::from("staging")));
        match listing.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e.into()),
        }
    }

    /// Any `object_store` implementation (S3, GCS, Azure, memory).
    pub fn from_store(store: Arc<dyn ObjectStore>) -> BlobStore {
        BlobStore {
            store,
            local_root: None,
        }
    }

    fn path(key: &str) -> Result<ObjectPath, BlobError> {
        ObjectPath::parse(key).map_err(|_| BlobError::Key(key.to_owned()))
    }

    /// Starts writing a new staged blob.
    pub async fn stage(&self, staging_key: &str) -> Result<StagedBlob, BlobError> {
        let path = Self::path(staging_key)?;
        let upload = self.store.put_multipart(&path).await?;
        Ok(StagedBlob {
            path,
            writer: Some(WriteMultipart::new_with_chunk_size(upload, CHUNK)),
            hasher: Sha256::new(),
            size: 0,
            local_root: self.local_root.clone(),
            flush_early: false,
        })
    }

    /// Moves a finished staged blob to `key` and makes it durable: on the local store its data
    /// was flushed in the background since it finished (awaited here), then the rename and the
    /// directory are fsynced.
    pub async fn commit(&self, staged: &FinishedBlob, key: &str) -> Result<(), BlobError> {
        let to = Self::path(key)?;
        let flushed = staged
            .flushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(flushed) = flushed {
            flushed
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??;
        }
        self.store.rename(&staged.path, &to).await?;
        if let Some(root) = &self.local_root {
            let data_synced = staged.background_flush.load(Ordering::Acquire);
            sync_file_and_dir(root.join(to.as_ref()), !data_synced).await?;
        }
        Ok(())
    }

    /// Removes a blob (a staged one that will not be used, or one no event refers to).
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self.store.delete(&Self::path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The whole blob.
    pub async fn get(&self, key: &str) -> Result<Bytes, BlobError> {
        Ok(self.store.get(&Self::path(key)?).await?.bytes().await?)
    }

    /// Stores a small derived blob (metadata) in one request.
    pub async fn put_small(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        self.store
            .put(&Self::path(key)?, PutPayload::from_bytes(bytes))
            .await?;
        Ok(())
    }

    pub fn staging_key(&self, name: &str) -> String {
        format!("staging/{name}")
    }

    /// Stores a small object durably: on the local store, the file and its directory are
    /// fsynced before this returns (an S3 PUT that returned is durable).
    pub async fn put_durable(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        self.put_small(key, bytes).await?;
        if let Some(root) = &self.local_root {
            sync_file_and_dir(root.join(key), true).await?;
        }
        Ok(())
    }

    /// The keys under `prefix` last modified at least `min_age` ago.
    pub async fn list_older(
        &self,
        prefix: &str,
        min_age: std::time::Duration,
    ) -> Result<Vec<String>, BlobError> {
        use futures::TryStreamExt;
        let cutoff: chrono::DateTime<chrono::Utc> = std::time::SystemTime::now()
            .checked_sub(min_age)
            .unwrap_or(std::time::UNIX_EPOCH)
            .into();
        Ok(self
            .store
            .list(Some(&Self::path(prefix)?))
            .try_filter(|meta| futures::future::ready(meta.last_modified <= cutoff))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await?)
    }

    /// Removes staged uploads at least `min_age` old: what a crash (kill -9, power loss) left
    /// between the first byte of an instance and its commit. Committed originals are never
    /// touched. On a local directory this includes object_store's partial multipart files
    /// (`NAME#N`), which its listing hides; on S3 an interrupted multipart upload is not an
    /// object at all (a bucket lifecycle rule `AbortIncompleteMultipartUpload` reclaims it).
    /// Returns how many staged blobs were removed.
    pub async fn sweep_staging(&self, min_age: std::time::Duration) -> Result<usize, BlobError> {
        let cutoff = std::time::SystemTime::now()
            .checked_sub(min_age)
            .unwrap_or(std::time::UNIX_EPOCH);
        if let Some(root) = &self.local_root {
            let dir = root.join("staging");
            return tokio::task::spawn_blocking(move || -> std::io::Result<usize> {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                    Err(e) => return Err(e),
                };
                let mut removed = 0;
                for entry in entries {
                    let entry = entry?;
                    let meta = entry.metadata()?;
                    if meta.is_file() && meta.modified()? <= cutoff {
                        match std::fs::remove_file(entry.path()) {
                            Ok(()) => removed += 1,
                            // Committed or cleaned up by its request meanwhile.
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Ok(removed)
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .map_err(BlobError::Io);
        }
        let stale = self.list_older("staging", min_age).await?;
        let mut removed = 0;
        for key in stale {
            match self.store.delete(&Self::path(&key)?).await {
                Ok(()) => removed += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(removed)
    }
}

/// Makes a local file's name durable (an fsync of its directory), and its data too with `data`.
async fn sync_file_and_dir(file: PathBuf, data: bool) -> Result<(), BlobError> {
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        if data {
            std::fs::File::open(&file)?.sync_all()?;
        }
        if let Some(dir) = file.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    Ok(())
}

/// A blob being written: feed it chunks, then finish it.
pub struct StagedBlob {
    path: ObjectPath,
    writer: Option<WriteMultipart>,
    hasher: Sha256,
    size: u64,
    local_root: Option<PathBuf>,
    flush_early: bool,
}

/// A staged blob whose bytes are all written.
pub struct FinishedBlob {
    pub path: ObjectPath,
    pub sha256: String,
    pub size: u64,
    /// The local store's fsync of the staged file, started when it finished so it overlaps with
    /// receiving what follows; `commit` awaits it.
    flushed: std::sync::Mutex<Option<tokio::task::JoinHandle<std::io::Result<()>>>>,
    /// Whether `flushed` was started (the data needs no second fsync after the rename).
    background_flush: AtomicBool,
    /// Set for the local store: the directory, for fsync.
    local_root: Option<PathBuf>,
}

impl FinishedBlob {
    pub fn staging_key(&self) -> &str {
        self.path.as_ref()
    }

    /// On the local store, starts flushing the staged data to disk now, if that was not
    /// started when it finished, so the fsync overlaps with what the caller does before
    /// `commit` (which awaits it), such as writing the intent of its batch.
    pub fn start_flush(&self) {
        let Some(root) = &self.local_root else {
            return;
        };
        let mut flushed = self.flushed.lock().unwrap_or_else(|e| e.into_inner());
        if flushed.is_none() && !self.background_flush.load(Ordering::Acquire) {
            let file = root.join(self.path.as_ref());
            *flushed = Some(tokio::task::spawn_blocking(move || {
                std::fs::File::open(&file)?.sync_all()
            }));
            self.background_flush.store(true, Ordering::Release);
        }
    }
}

impl StagedBlob {
    /// On the local store, start flushing the file to disk as soon as it is finished, so the
    /// fsync overlaps with whatever the caller receives next (the parts after it in a STOW-RS
    /// body); without it the data is fsynced at commit.
    pub fn flush_early(mut self) -> StagedBlob {
        self.flush_early = true;
        self
    }

    pub async fn write(&mut self, chunk: Bytes) -> Result<(), BlobError> {
        self.hasher.update(&chunk);
        self.size += chunk.len() as u64;
        if let Some(w) = self.writer.as_mut() {
            // Bounded: waits while too many chunks are in flight.
            w.wait_for_capacity(2).await?;
            w.write(&chunk);
        }
        Ok(())
    }

    pub async fn finish(mut self) -> Result<FinishedBlob, BlobError> {
        if let Some(w) = self.writer.take() {
            w.finish().await?;
        }
        let digest = self.hasher.finalize_reset();
        let flushed = self
            .local_root
            .as_ref()
            .filter(|_| self.flush_early)
            .map(|root| {
                let file = root.join(self.path.as_ref());
                tokio::task::spawn_blocking(move || std::fs::File::open(&file)?.sync_all())
            });
        Ok(FinishedBlob {
            path: self.path.clone(),
            sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
            size: self.size,
            background_flush: AtomicBool::new(flushed.is_some()),
            flushed: std::sync::Mutex::new(flushed),
            local_root: self.local_root.clone(),
        })
    }

    /// Abandons the upload.
    pub async fn abort(mut self) {
        if let Some(w) = self.writer.take() {
            let _ = w.abort().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn staged(blobs: &BlobStore, name: &str) -> FinishedBlob {
        let mut b = blobs.stage(&blobs.staging_key(name)).await.expect("stage");
        b.write(Bytes::from_static(b"DICM bytes"))
            .await
            .expect("write");
        b.finish().await.expect("finish")
    }

    #[tokio::test]
    async fn the_sweep_removes_old_staged_uploads_and_never_a_committed_original() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = BlobStore::local(dir.path()).expect("store");
        let kept = staged(&blobs, "committed").await;
        blobs
            .commit(&kept, "studies/1/2/3.dcm")
            .await
            .expect("commit");
        staged(&blobs, "left-by-a-crash").await;
        // A multipart upload cut off mid-way: object_store's partial file, hidden from listings.
        std::fs::write(dir.path().join("staging/cut-off#1"), b"half").expect("partial");

        let fresh = blobs
            .sweep_staging(Duration::from_secs(3600))
            .await
            .expect("sweep");
        assert_eq!(
            fresh, 0,
            "uploads younger than the minimum age may be in progress"
        );
        let removed = blobs.sweep_staging(Duration::ZERO).await.expect("sweep");
        assert_eq!(removed, 2);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("staging"))
            .expect("staging dir")
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(
            blobs.get("studies/1/2/3.dcm").await.expect("original"),
            Bytes::from_static(b"DICM bytes")
        );
        let empty = tempfile::tempdir().expect("tempdir");
        let none = BlobStore::local(empty.path()).expect("store");
        assert_eq!(none.sweep_staging(Duration::ZERO).await.expect("sweep"), 0);
    }

    #[tokio::test]
    async fn the_sweep_works_through_the_object_store_trait_too() {
        let store = Arc::new(object_store::memory::InMemory::new());
        let blobs = BlobStore::from_store(store);
        let kept = staged(&blobs, "committed").await;
        blobs.commit(&kept, "studies/a.dcm").await.expect("commit");
        staged(&blobs, "left").await;
        assert_eq!(
            blobs
                .sweep_staging(Duration::from_secs(3600))
                .await
                .expect("sweep"),
            0
        );
        assert_eq!(blobs.sweep_staging(Duration::ZERO).await.expect("sweep"), 1);
        assert!(blobs.get("studies/a.dcm").await.is_ok());
        assert!(blobs.get("staging/left").await.is_err());
    }
}
