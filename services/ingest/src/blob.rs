//! Blob storage for original instances, through `object_store`: a local directory in the
//! embedded mode, any S3-compatible store through the same trait in the distributed mode.
//!
//! Originals are written under a staging key (held as received while below one upload chunk,
//! then stored with one `put`; streamed chunk by chunk past it) and hashed, then moved to their
//! final key, which includes the hash, so different bytes never overwrite.
//! On the local store every final blob is fsynced (its data, and its name in every directory from
//! its own up to the root that was new) before `commit` (or `sync_names` after `place`) returns:
//! an event is appended only after its blob is durable.

use std::collections::HashSet;
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
    #[error("intent journal error: {0}")]
    Journal(#[from] sqlx::Error),
}

impl BlobError {
    /// Whether the blob asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, BlobError::Store(object_store::Error::NotFound { .. }))
            || matches!(self, BlobError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// Set for the local store: the directory, for fsync.
    local_root: Option<PathBuf>,
    /// Directories of the local store whose own names are known durable up to the root (their
    /// parents fsynced since they were first seen here), so a new series directory's chain is
    /// fsynced once, not with every instance stored in it.
    durable_dirs: Arc<std::sync::Mutex<HashSet<PathBuf>>>,
}

/// At most this many directories are remembered as durable; past it the memory starts again
/// (costing one more fsync of each chain then used).
const DURABLE_DIRS: usize = 65_536;

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
            durable_dirs: Arc::default(),
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
            durable_dirs: Arc::default(),
        }
    }

    /// The directory of a local store.
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.local_root.as_deref()
    }

    fn path(key: &str) -> Result<ObjectPath, BlobError> {
        ObjectPath::parse(key).map_err(|_| BlobError::Key(key.to_owned()))
    }

    /// Starts writing a new staged blob. Nothing is written until it holds more than one
    /// upload chunk: a blob finished below that (most instances) is stored with one `put`.
    pub async fn stage(&self, staging_key: &str) -> Result<StagedBlob, BlobError> {
        Ok(StagedBlob {
            path: Self::path(staging_key)?,
            store: self.store.clone(),
            writing: Writing::Buffered(Vec::new()),
            size: 0,
            local_root: self.local_root.clone(),
            flush_early: false,
        })
    }

    /// Moves a finished staged blob to `key` and makes it durable: on the local store its data
    /// was flushed in the background since it finished (awaited here), then the rename and the
    /// directories are fsynced.
    pub async fn commit(&self, staged: &FinishedBlob, key: &str) -> Result<(), BlobError> {
        self.place(staged, key).await?;
        self.sync_names([key]).await
    }

    /// Moves a finished staged blob to `key` with its data durable (on the local store: the
    /// background flush awaited, or an fsync now), but not yet its name: a batch places all its
    /// blobs, then makes their names durable with one [`BlobStore::sync_names`], which fsyncs
    /// each directory once instead of once per blob.
    pub async fn place(&self, staged: &FinishedBlob, key: &str) -> Result<(), BlobError> {
        let to = Self::path(key)?;
        staged.settled().await?;
        self.store.rename(&staged.path, &to).await?;
        if let Some(root) = &self.local_root
            && !staged.background_flush.load(Ordering::Acquire)
        {
            let file = root.join(to.as_ref());
            blocking(move || flush_file(&file)).await?;
        }
        Ok(())
    }

    /// Makes the names of `keys` durable on the local store: each directory holding one is
    /// fsynced once, and so is every directory above it up to the root that is not yet known
    /// durable (a new series or study directory made by the move). Object stores need nothing.
    pub async fn sync_names<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), BlobError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let mut dirs: HashSet<PathBuf> = HashSet::new();
        let mut new_dirs: Vec<PathBuf> = Vec::new();
        {
            let known = self.durable_dirs.lock().unwrap_or_else(|e| e.into_inner());
            for key in keys {
                let file = root.join(Self::path(key)?.as_ref());
                let mut dir = file.parent();
                // Each directory is fsynced for the name it holds (the file, or the directory
                // below it); the walk goes up while the directory's own name may not be durable.
                while let Some(d) = dir.filter(|d| d.starts_with(root)) {
                    dirs.insert(d.to_path_buf());
                    if d == root.as_path() || known.contains(d) {
                        break;
                    }
                    if !new_dirs.iter().any(|n| n == d) {
                        new_dirs.push(d.to_path_buf());
                    }
                    dir = d.parent();
                }
            }
        }
        let synced = futures::future::join_all(
            dirs.into_iter()
                .map(|dir| blocking(move || std::fs::File::open(&dir)?.sync_all())),
        )
        .await;
        for r in synced {
            r?;
        }
        let mut known = self.durable_dirs.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() + new_dirs.len() > DURABLE_DIRS {
            known.clear();
        }
        known.extend(new_dirs);
        Ok(())
    }

    /// Removes a staged blob that will not be used, once its write is done.
    pub async fn discard(&self, staged: &FinishedBlob) -> Result<(), BlobError> {
        // A failed write leaves at most the partial file removed below.
        let _ = staged.settled().await;
        self.delete(staged.staging_key()).await
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

    /// Whether a blob exists (a metadata request: no byte of it is read).
    pub async fn exists(&self, key: &str) -> Result<bool, BlobError> {
        match self.store.head(&Self::path(key)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The bytes of `range` of a blob (fewer where the blob ends first).
    pub async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, BlobError> {
        Ok(self.store.get_range(&Self::path(key)?, range).await?)
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
            // Its data and its name at once: neither is relied on before both are done.
            let file = root.join(key);
            let (data, name) = futures::join!(
                blocking(move || std::fs::File::open(&file)?.sync_all()),
                self.sync_names([key])
            );
            data?;
            name?;
        }
        Ok(())
    }

    /// The keys under `prefix` last modified at least `min_age` ago.
    pub async fn list_older(
        &self,
        prefix: &str,
        min_age: std::time::Duration,
    ) -> Result<Vec<String>, BlobError> {
        let cutoff = cutoff(min_age);
        Ok(self
            .list_modified(prefix)
            .await?
            .into_iter()
            .filter(|(_, modified)| *modified <= cutoff)
            .map(|(key, _)| key)
            .collect())
    }

    /// The keys under `prefix`, each with when it was last modified.
    pub async fn list_modified(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, chrono::DateTime<chrono::Utc>)>, BlobError> {
        use futures::TryStreamExt;
        Ok(self
            .store
            .list(Some(&Self::path(prefix)?))
            .map_ok(|meta| (meta.location.to_string(), meta.last_modified))
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

/// The moment `min_age` ago (the epoch if that is before it).
pub fn cutoff(min_age: std::time::Duration) -> chrono::DateTime<chrono::Utc> {
    std::time::SystemTime::now()
        .checked_sub(min_age)
        .unwrap_or(std::time::UNIX_EPOCH)
        .into()
}

/// Makes an original's data durable (fsync), then lets the kernel drop its pages from the page
/// cache: an original is written once and read later, if at all, so its clean pages would only
/// push the page cache into memory not touched yet, which on a virtual machine whose balloon
/// takes back free memory costs a fault to the host per page (a fifth of the hub's CPU under a
/// DIMSE association beside Orthanc); dropped, the next original's write reuses the same pages.
fn flush_file(file: &std::path::Path) -> std::io::Result<()> {
    let file = std::fs::File::open(file)?;
    file.sync_all()?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: posix_fadvise only reads its arguments; the descriptor is open (held by
        // `file`) for the whole call. Advice, so its result is not an error worth reporting.
        let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    Ok(())
}

/// Runs blocking file work (an fsync) off the async threads.
async fn blocking(
    work: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> Result<(), BlobError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    Ok(())
}

/// A blob being written: feed it chunks, then finish it.
pub struct StagedBlob {
    path: ObjectPath,
    store: Arc<dyn ObjectStore>,
    writing: Writing,
    size: u64,
    local_root: Option<PathBuf>,
    flush_early: bool,
}

/// Where a staged blob's bytes are: held (up to one upload chunk, no copy: the received
/// buffers themselves), or streaming into a multipart upload once it grew past that.
enum Writing {
    Buffered(Vec<Bytes>),
    Streaming {
        writer: WriteMultipart,
        hasher: Box<Sha256>,
    },
}

/// Work on a staged blob still running in the background: the write of a held blob, then its
/// fsync once started.
type Background = tokio::task::JoinHandle<Result<(), BlobError>>;

/// Awaits background work on a staged blob.
async fn settle(work: Background) -> Result<(), BlobError> {
    work.await
        .map_err(|e| BlobError::Io(std::io::Error::other(e.to_string())))?
}

/// A staged blob whose bytes are all received: written, or (held ones) being written in the
/// background. Its name is [`FinishedBlob::staging_key`]; [`BlobStore::place`] and
/// [`BlobStore::discard`] wait for the write.
pub struct FinishedBlob {
    pub path: ObjectPath,
    pub sha256: String,
    pub size: u64,
    /// What is still being done to the staged file: a held blob's write, started when it
    /// finished so it overlaps with reading its header and writing its batch's intent, and the
    /// local store's fsync, started early so it overlaps with receiving what follows;
    /// `place` awaits it.
    background: std::sync::Mutex<Option<Background>>,
    /// Whether an fsync was started in `background` (the data needs no second fsync after the
    /// rename).
    background_flush: AtomicBool,
    /// Set for the local store: the directory, for fsync.
    local_root: Option<PathBuf>,
}

impl FinishedBlob {
    pub fn staging_key(&self) -> &str {
        self.path.as_ref()
    }

    /// On the local store, starts flushing the staged data to disk now (after its write, if
    /// that is still running), if that was not started when it finished, so the fsync overlaps
    /// with what the caller does before `place` (which awaits it), such as writing the intent
    /// of its batch.
    pub fn start_flush(&self) {
        let Some(root) = &self.local_root else {
            return;
        };
        let mut background = self.background.lock().unwrap_or_else(|e| e.into_inner());
        if !self.background_flush.load(Ordering::Acquire) {
            let file = root.join(self.path.as_ref());
            let written = background.take();
            *background = Some(tokio::spawn(async move {
                if let Some(written) = written {
                    settle(written).await?;
                }
                blocking(move || flush_file(&file)).await
            }));
            self.background_flush.store(true, Ordering::Release);
        }
    }

    /// Waits for the work still running on the staged file (its write, its fsync).
    async fn settled(&self) -> Result<(), BlobError> {
        let background = self
            .background
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match background {
            Some(work) => settle(work).await,
            None => Ok(()),
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
        self.size += chunk.len() as u64;
        match &mut self.writing {
            Writing::Buffered(chunks) => {
                chunks.push(chunk);
                if self.size > CHUNK as u64 {
                    // Too large to hold: from here on it streams, a chunk at a time.
                    let chunks = std::mem::take(chunks);
                    let upload = self.store.put_multipart(&self.path).await?;
                    let mut writer = WriteMultipart::new_with_chunk_size(upload, CHUNK);
                    let mut hasher = Box::new(Sha256::new());
                    for c in chunks {
                        hasher.update(&c);
                        writer.wait_for_capacity(2).await?;
                        writer.write(&c);
                    }
                    self.writing = Writing::Streaming { writer, hasher };
                }
            }
            Writing::Streaming { writer, hasher } => {
                hasher.update(&chunk);
                // Bounded: waits while too many chunks are in flight.
                writer.wait_for_capacity(2).await?;
                writer.write(&chunk);
            }
        }
        Ok(())
    }

    /// The bytes held so far, while the blob is small enough to be held (all of it, once
    /// finished below one upload chunk): its header can be read from them.
    pub fn held(&self) -> Option<&[Bytes]> {
        match &self.writing {
            Writing::Buffered(chunks) => Some(chunks),
            _ => None,
        }
    }

    /// Finishes the blob: its digest now, its bytes written (a held blob's in the background:
    /// its header is read from the held buffers meanwhile, and `place` waits for the write).
    pub async fn finish(self) -> Result<FinishedBlob, BlobError> {
        let (digest, written) = match self.writing {
            Writing::Buffered(chunks) => {
                // Hashed on a blocking thread while the store writes the same buffers.
                let for_hash = chunks.clone();
                let hashed = tokio::task::spawn_blocking(move || {
                    let mut hasher = Sha256::new();
                    for c in &for_hash {
                        hasher.update(c);
                    }
                    hasher.finalize()
                });
                let (store, path) = (self.store.clone(), self.path.clone());
                let written: Background = tokio::spawn(async move {
                    store.put(&path, PutPayload::from_iter(chunks)).await?;
                    Ok(())
                });
                match hashed.await {
                    Ok(digest) => (digest, Some(written)),
                    Err(e) => {
                        // Nothing will place it: removed once written.
                        let (store, path) = (self.store.clone(), self.path.clone());
                        tokio::spawn(async move {
                            let _ = settle(written).await;
                            let _ = store.delete(&path).await;
                        });
                        return Err(BlobError::Io(std::io::Error::other(e.to_string())));
                    }
                }
            }
            Writing::Streaming { writer, hasher } => {
                writer.finish().await?;
                (hasher.finalize(), None)
            }
        };
        let finished = FinishedBlob {
            path: self.path.clone(),
            sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
            size: self.size,
            background_flush: AtomicBool::new(false),
            background: std::sync::Mutex::new(written),
            local_root: self.local_root.clone(),
        };
        if self.flush_early {
            finished.start_flush();
        }
        Ok(finished)
    }

    /// Abandons the upload.
    pub async fn abort(self) {
        if let Writing::Streaming { writer, .. } = self.writing {
            let _ = writer.abort().await;
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
        let finished = b.finish().await.expect("finish");
        finished.settled().await.expect("written");
        finished
    }

    #[tokio::test]
    async fn a_held_blob_written_in_the_background_is_placed_or_discarded_once_written() {
        // A store whose writes take 50 ms: each held blob's write is still running when
        // `finish` returns.
        let slow = object_store::throttle::ThrottledStore::new(
            object_store::memory::InMemory::new(),
            object_store::throttle::ThrottleConfig {
                wait_put_per_call: Duration::from_millis(50),
                ..Default::default()
            },
        );
        let blobs = BlobStore::from_store(Arc::new(slow));
        let bytes = Bytes::from(vec![7u8; 300_000]);
        let finished = |name: &'static str| {
            let (blobs, bytes) = (blobs.clone(), bytes.clone());
            async move {
                let mut b = blobs.stage(&blobs.staging_key(name)).await.expect("stage");
                b.write(bytes).await.expect("write");
                b.finish().await.expect("finish")
            }
        };
        let placed = finished("placed").await;
        blobs
            .place(&placed, "studies/s/r/1.dcm")
            .await
            .expect("placed once written");
        assert_eq!(blobs.get("studies/s/r/1.dcm").await.expect("blob"), bytes);
        let discarded = finished("discarded").await;
        blobs.discard(&discarded).await.expect("discard");
        // Nothing a write still running could bring back.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            blobs
                .list_older("staging", Duration::ZERO)
                .await
                .expect("list"),
            Vec::<String>::new()
        );
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
    async fn the_directories_a_move_creates_are_synced_and_remembered_up_to_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = BlobStore::local(dir.path()).expect("store");
        let root = dir.path().canonicalize().expect("root");
        let first = staged(&blobs, "one").await;
        blobs
            .place(&first, "studies/s/r/1.dcm")
            .await
            .expect("place");
        blobs.sync_names(["studies/s/r/1.dcm"]).await.expect("sync");
        let known = |p: &str| {
            blobs
                .durable_dirs
                .lock()
                .expect("lock")
                .contains(&root.join(p))
        };
        // Each directory the move created is fsynced in its parent, up to the root.
        assert!(known("studies/s/r") && known("studies/s") && known("studies"));
        let second = staged(&blobs, "two").await;
        blobs
            .commit(&second, "studies/s/r2/2.dcm")
            .await
            .expect("commit");
        assert!(known("studies/s/r2"));
        assert_eq!(blobs.durable_dirs.lock().expect("lock").len(), 4);
        assert_eq!(
            blobs.get("studies/s/r2/2.dcm").await.expect("blob"),
            Bytes::from_static(b"DICM bytes")
        );
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
