//! STOW-RS (PS3.18 §10.5): a multipart/related request of `application/dicom` parts, streamed
//! part by part into blob storage (never the whole body in memory), then recorded as study
//! events, one append per study per request.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::{Stream, StreamExt};
use hub_events::catalog::{IngestSource, StudyEvent};
use hub_events::{
    EventMetadata, EventStore, ExpectedVersion, Family, HubEvent, Position, StoreError, StreamId,
};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::blob::{BlobError, BlobStore, FinishedBlob};
use crate::dicom::{HeaderError, read_header_and_metadata};
use crate::intents::{Intent, IntentInstance, IntentKey, Intents};
use crate::study::{Outcome, Received, StudyState, decide};

/// The intents one study's recording wrote, and whether its outcome is left unsettled.
#[derive(Default)]
struct Journal {
    intents: Vec<IntentKey>,
    unsettled: bool,
}

/// Bytes at the start of a streamed part read back to find its header in (the whole part when
/// the header is longer).
const HEADER_PREFIX: usize = 1024 * 1024;

/// Reads a blob's held buffers one after the other, without joining them.
struct ChunksReader<'a> {
    chunks: &'a [Bytes],
    at: usize,
}

impl<'a> ChunksReader<'a> {
    fn new(chunks: &'a [Bytes]) -> ChunksReader<'a> {
        ChunksReader { chunks, at: 0 }
    }
}

impl std::io::Read for ChunksReader<'_> {
    /// Fills `buf` from as many chunks as it takes: dicom-object looks for the preamble's
    /// `DICM` in what one read returns, so a part whose first chunk was shorter than 132 bytes
    /// (a network read that ended just after the part's headers) was refused as unreadable.
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            let Some((first, rest)) = self.chunks.split_first() else {
                break;
            };
            if self.at < first.len() {
                let n = (buf.len() - filled).min(first.len() - self.at);
                buf[filled..filled + n].copy_from_slice(&first[self.at..self.at + n]);
                self.at += n;
                filled += n;
            } else {
                self.chunks = rest;
                self.at = 0;
            }
        }
        Ok(filled)
    }
}

/// Optimistic-concurrency retries when another request appends to the same study meanwhile.
const APPEND_RETRIES: usize = 8;

/// DICOM failure reasons used in FailedSOPSequence (PS3.4 Annex GG, PS3.18 table 10.5.3-1).
pub mod reason {
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    pub const DUPLICATE_SOP_INSTANCE: u16 = 0x0111;
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    pub const DATA_SET_DOES_NOT_MATCH: u16 = 0xA900;
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
}

#[cfg(test)]
mod tests {
    use super::key_part;

    #[test]
    fn a_read_is_filled_across_the_chunks() {
        use std::io::Read;
        let chunks: Vec<bytes::Bytes> = [&b"ab"[..], b"", b"cde", b"f"]
            .iter()
            .map(|c| bytes::Bytes::copy_from_slice(c))
            .collect();
        let mut reader = super::ChunksReader::new(&chunks);
        let mut buf = [0u8; 4];
        assert_eq!(reader.read(&mut buf).expect("read"), 4);
        assert_eq!(&buf, b"abcd");
        assert_eq!(reader.read(&mut buf).expect("read"), 2);
        assert_eq!(&buf[..2], b"ef");
        assert_eq!(reader.read(&mut buf).expect("read"), 0);
    }

    #[test]
    fn a_hostile_uid_cannot_leave_its_blob_directory() {
        assert_eq!(key_part("1.2.840.113619"), "1.2.840.113619");
        assert_eq!(key_part("../../etc/passwd"), ".._.._etc_passwd");
        assert_eq!(key_part(".."), "_");
        assert_eq!(key_part(""), "_");
        assert_eq!(key_part("a/b\\c d"), "a_b_c_d");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StowError {
    #[error(
        "unsupported content type {0:?}: STOW-RS takes multipart/related; type=\"application/dicom\" with a boundary"
    )]
    UnsupportedMediaType(String),
    #[error("request body exceeds the limit of {0} bytes")]
    TooLarge(u64),
    #[error("event store unavailable: {0}")]
    Store(#[from] StoreError),
    #[error("blob store unavailable: {0}")]
    Blob(#[from] BlobError),
}

/// Who is storing, and where the results will be retrievable.
#[derive(Clone, Debug)]
pub struct StowRequest {
    pub institution: String,
    pub actor: String,
    /// The `{study}` of `POST /studies/{study}`: every part must belong to it.
    pub study_in_url: Option<String>,
    pub content_type: String,
    /// Base of RetrieveURLs, e.g. `http://127.0.0.1:8080/dicom-web`.
    pub base_url: String,
    pub request_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Referenced {
    pub study_uid: String,
    pub series_uid: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failed {
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub reason: u16,
    pub detail: String,
}

impl Failed {
    /// A part that is not a readable DICOM instance (0xC000), so it has no UIDs to report.
    fn cannot_understand(detail: String) -> Failed {
        Failed {
            sop_class_uid: None,
            sop_instance_uid: None,
            reason: reason::CANNOT_UNDERSTAND,
            detail,
        }
    }
}

/// The outcome of one STOW-RS request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StowResult {
    pub referenced: Vec<Referenced>,
    pub failed: Vec<Failed>,
    /// Log position of the last event this request appended (none if nothing was new).
    pub last_position: Option<hub_events::Position>,
}

impl StowResult {
    /// 200 all stored, 202 some stored and some failed, 409 none stored (PS3.18 §10.5.3).
    pub fn http_status(&self) -> u16 {
        match (self.referenced.is_empty(), self.failed.is_empty()) {
            (_, true) => 200,
            (false, false) => 202,
            (true, false) => 409,
        }
    }

    /// The response data set, DICOM JSON (application/dicom+json).
    pub fn to_dicom_json(&self, base_url: &str, study_in_url: Option<&str>) -> Value {
        let mut out = serde_json::Map::new();
        if let Some(study) = study_in_url {
            out.insert(
                "00081190".into(),
                json!({"vr": "UR", "Value": [format!("{base_url}/studies/{study}")]}),
            );
        }
        if !self.failed.is_empty() {
            let items: Vec<Value> = self
                .failed
                .iter()
                .map(|f| {
                    let mut item = serde_json::Map::new();
                    if let Some(c) = &f.sop_class_uid {
                        item.insert("00081150".into(), json!({"vr": "UI", "Value": [c]}));
                    }
                    if let Some(i) = &f.sop_instance_uid {
                        item.insert("00081155".into(), json!({"vr": "UI", "Value": [i]}));
                    }
                    item.insert("00081197".into(), json!({"vr": "US", "Value": [f.reason]}));
                    Value::Object(item)
                })
                .collect();
            out.insert("00081198".into(), json!({"vr": "SQ", "Value": items}));
        }
        if !self.referenced.is_empty() {
            let items: Vec<Value> = self
                .referenced
                .iter()
                .map(|r| {
                    json!({
                        "00081150": {"vr": "UI", "Value": [r.sop_class_uid]},
                        "00081155": {"vr": "UI", "Value": [r.sop_instance_uid]},
                        "00081190": {"vr": "UR", "Value": [format!(
                            "{base_url}/studies/{}/series/{}/instances/{}",
                            r.study_uid, r.series_uid, r.sop_instance_uid
                        )]},
                    })
                })
                .collect();
            out.insert("00081199".into(), json!({"vr": "SQ", "Value": items}));
        }
        Value::Object(out)
    }
}

/// The boundary of a `multipart/related` content type (quoted or not), if the type is right.
pub fn multipart_boundary(content_type: &str) -> Result<String, StowError> {
    let bad = || StowError::UnsupportedMediaType(content_type.to_owned());
    let mut parts = content_type.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    if essence != "multipart/related" {
        return Err(bad());
    }
    let mut boundary = None;
    for param in parts {
        let Some((k, v)) = param.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"');
        match k.trim().to_ascii_lowercase().as_str() {
            "boundary" if !v.is_empty() => boundary = Some(v.to_owned()),
            "type" if !v.eq_ignore_ascii_case("application/dicom") => return Err(bad()),
            _ => {}
        }
    }
    boundary.ok_or_else(bad)
}

/// A UID as one path segment of a blob key. UIDs come from the files pushed to us: anything but
/// the characters a UID may hold is replaced, so no UID can name a path outside its study. The
/// key is recorded in the event; nothing looks a blob up by rebuilding its key from UIDs.
fn key_part(uid: &str) -> String {
    let part: String = uid
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    match part.trim_matches('.') {
        "" => "_".to_owned(),
        _ => part,
    }
}

/// Where the DICOM JSON metadata of the original at `blob_key` is kept.
pub fn metadata_key(blob_key: &str) -> String {
    format!("{blob_key}.json")
}

/// Ingest: turns received instances into durable blobs and study events.
#[derive(Clone)]
pub struct Ingest {
    store: Arc<dyn EventStore>,
    blobs: BlobStore,
    /// Where the blobs of batches being recorded are named before they move.
    intents: Intents,
    max_body_bytes: u64,
    /// Position up to which what ingest records is visible to queries and retrieval.
    visible: Option<watch::Receiver<Position>>,
    /// Study states recently folded, so a study that keeps receiving (a DIMSE association of a
    /// 2,000-slice CT) reads only the events appended since, not its whole stream each time.
    states: Arc<std::sync::Mutex<StateCache>>,
}

/// A part being finished off the receiving loop: its pending instance, or why it failed.
type Finish = futures::future::BoxFuture<'static, Result<Result<Pending, Failed>, BlobError>>;

/// Parts of one STOW-RS request finished at the same time (each holds at most one upload chunk
/// of the blob store in memory).
const FINISHING: usize = 4;

/// Takes finished parts off the front of `finishing` until at most `keep` are in flight; the
/// first blob-store error is returned after all of them were taken.
async fn settle(
    finishing: &mut FuturesOrdered<Finish>,
    keep: usize,
    pending: &mut Vec<Pending>,
    failed: &mut Vec<Failed>,
) -> Result<(), BlobError> {
    let mut error = None;
    while finishing.len() > keep {
        match finishing.next().await {
            Some(Ok(Ok(p))) => pending.push(p),
            Some(Ok(Err(f))) => failed.push(f),
            Some(Err(e)) => {
                error.get_or_insert(e);
            }
            None => break,
        }
    }
    error.map_or(Ok(()), Err)
}

/// Blobs of one batch committed at the same time.
const COMMIT_CONCURRENCY: usize = 16;

/// At most this many study states are kept.
const STATE_CACHE: usize = 256;

/// Recently used study states by stream, the oldest insertion evicted first.
#[derive(Default)]
struct StateCache {
    states: HashMap<StreamId, StudyState>,
    order: std::collections::VecDeque<StreamId>,
}

impl StateCache {
    fn get(&self, stream: &StreamId) -> Option<StudyState> {
        self.states.get(stream).cloned()
    }

    /// Keeps `state` unless a newer one is already kept.
    fn put(&mut self, stream: &StreamId, state: StudyState) {
        match self.states.get_mut(stream) {
            Some(kept) => {
                if kept.version < state.version {
                    *kept = state;
                }
            }
            None => {
                if self.order.len() >= STATE_CACHE
                    && let Some(old) = self.order.pop_front()
                {
                    self.states.remove(&old);
                }
                self.order.push_back(stream.clone());
                self.states.insert(stream.clone(), state);
            }
        }
    }
}

/// A received instance whose blob is staged and whose header has been read.
pub struct Pending {
    received: Received,
    staged: FinishedBlob,
    metadata: serde_json::Value,
}

/// An instance being received: its bytes go into a staged blob, which holds them while it is
/// small (the header is read from them) and streams them to the store past that.
pub struct Receiving {
    blob: crate::blob::StagedBlob,
    label: String,
}

impl Receiving {
    /// Flushes the instance's data in the background once it is received (STOW-RS: while the
    /// next parts stream in), instead of at commit.
    pub fn flush_early(mut self) -> Receiving {
        self.blob = self.blob.flush_early();
        self
    }

    pub async fn write(&mut self, chunk: Bytes) -> Result<(), BlobError> {
        self.blob.write(chunk).await
    }

    pub async fn abort(self) {
        self.blob.abort().await
    }
}

impl Ingest {
    pub fn new(store: Arc<dyn EventStore>, blobs: BlobStore, max_body_bytes: u64) -> Ingest {
        Ingest {
            store,
            intents: Intents::objects(&blobs),
            blobs,
            max_body_bytes,
            visible: None,
            states: Arc::default(),
        }
    }

    /// Keeps the intents of a local blob directory as rows of one SQLite file beside the blobs
    /// instead of a file per batch (see [`crate::intents`]): only where every process that writes
    /// these blobs runs on this host, as in the embedded hub (SQLite's WAL needs shared memory,
    /// which a volume several hosts mount does not give).
    pub fn with_intent_rows(mut self) -> Ingest {
        self.intents = Intents::rows_beside(&self.blobs);
        self
    }

    /// Makes every recording wait (pushed, up to 5 s) until `visible` reaches the position it
    /// appended, so a client that stored (STOW-RS or C-STORE) and then asks finds what it stored.
    pub fn with_visibility(mut self, visible: watch::Receiver<Position>) -> Ingest {
        self.visible = Some(visible);
        self
    }

    /// Waits (up to 5 s) until queries show everything up to `position`.
    pub async fn wait_visible(&self, position: Position) {
        let Some(visible) = &self.visible else { return };
        let mut visible = visible.clone();
        let reached = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            visible.wait_for(|at| *at >= position),
        )
        .await;
        if !matches!(reached, Ok(Ok(_))) {
            tracing::warn!(position, "recorded, but not visible to queries within 5 s");
        }
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// How many intents are kept now: batches being recorded, and any left unsettled (by a
    /// crash, or an append whose outcome is unknown) for the sweep.
    pub async fn intents_kept(&self) -> Result<usize, StowError> {
        let (old, young) = self.intents.list(std::time::Duration::ZERO).await?;
        Ok(old.len() + young.len())
    }

    /// Handles one STOW-RS request body.
    pub async fn stow<S, E>(&self, request: &StowRequest, body: S) -> Result<StowResult, StowError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let boundary = multipart_boundary(&request.content_type)?;
        let limit = self.max_body_bytes;
        let over_limit = Arc::new(AtomicBool::new(false));
        let flag = over_limit.clone();
        let mut seen = 0u64;
        let body = body.map(move |chunk| {
            let chunk = chunk.map_err(Into::into)?;
            seen += chunk.len() as u64;
            if seen > limit {
                flag.store(true, Ordering::SeqCst);
                return Err::<Bytes, Box<dyn std::error::Error + Send + Sync>>(
                    "body too large".into(),
                );
            }
            Ok(chunk)
        });
        let mut multipart = multer::Multipart::new(body, boundary);
        let mut result = StowResult::default();
        let mut pending: Vec<Pending> = Vec::new();
        // Parts being finished (stored, hashed, their headers read) while the next ones are
        // received, in the order they came.
        let mut finishing: FuturesOrdered<Finish> = FuturesOrdered::new();
        let failure =
            |failed: Failed| -> Finish { Box::pin(futures::future::ready(Ok(Err(failed)))) };
        let mut n = 0usize;
        let received: Result<(), StowError> = loop {
            let mut field = match multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break Ok(()),
                Err(e) => {
                    if over_limit.load(Ordering::SeqCst) {
                        break Err(StowError::TooLarge(limit));
                    }
                    // A broken body: keep what arrived whole, report the rest.
                    finishing.push_back(failure(Failed::cannot_understand(format!(
                        "malformed multipart body: {e}"
                    ))));
                    break Ok(());
                }
            };
            n += 1;
            let part_type = field
                .content_type()
                .map(|m| m.essence_str().to_ascii_lowercase());
            if part_type
                .as_deref()
                .is_some_and(|t| t != "application/dicom")
            {
                finishing.push_back(failure(Failed::cannot_understand(format!(
                    "part {n} has content type {part_type:?}, not application/dicom"
                ))));
                continue;
            }
            let mut receiving = match self
                .begin(&format!("{}-{n}", request.request_id), format!("part {n}"))
                .await
            {
                Ok(r) => r.flush_early(),
                Err(e) => break Err(e.into()),
            };
            let mut broken = None;
            let mut write_error = None;
            loop {
                match field.chunk().await {
                    Ok(Some(chunk)) => {
                        if let Err(e) = receiving.write(chunk).await {
                            write_error = Some(e);
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        broken = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = write_error {
                receiving.abort().await;
                break Err(e.into());
            }
            if let Some(e) = broken {
                receiving.abort().await;
                if over_limit.load(Ordering::SeqCst) {
                    break Err(StowError::TooLarge(limit));
                }
                finishing.push_back(failure(Failed::cannot_understand(format!(
                    "part {n} is truncated: {e}"
                ))));
                break Ok(());
            }
            let (ingest, study) = (self.clone(), request.study_in_url.clone());
            let finish =
                tokio::spawn(async move { ingest.finish(receiving, study.as_deref()).await });
            finishing.push_back(Box::pin(async move {
                finish
                    .await
                    .unwrap_or_else(|e| Err(BlobError::Io(std::io::Error::other(e.to_string()))))
            }));
            if let Err(e) =
                settle(&mut finishing, FINISHING, &mut pending, &mut result.failed).await
            {
                break Err(e.into());
            }
        };
        // Every part in flight is settled, whatever happened, so none is left staged.
        let settled = settle(&mut finishing, 0, &mut pending, &mut result.failed).await;
        if let Err(e) = received.and(settled.map_err(StowError::from)) {
            self.discard(&pending).await;
            return Err(e);
        }
        let source = IngestSource::StowRs {
            request_id: request.request_id.clone(),
        };
        self.record(
            &request.institution,
            &request.actor,
            &source,
            pending,
            &mut result,
        )
        .await?;
        Ok(result)
    }

    /// Starts receiving one instance; `name` makes its staging key unique.
    pub async fn begin(&self, name: &str, label: String) -> Result<Receiving, BlobError> {
        let blob = self.blobs.stage(&self.blobs.staging_key(name)).await?;
        Ok(Receiving { blob, label })
    }

    /// Finishes receiving one instance and reads its header: a pending instance, or the
    /// failure to report for it (its staged blob then already removed).
    pub async fn finish(
        &self,
        receiving: Receiving,
        study_in_url: Option<&str>,
    ) -> Result<Result<Pending, Failed>, BlobError> {
        let Receiving { blob, label } = receiving;
        let held = blob.held().map(<[Bytes]>::to_vec);
        let staged = blob.finish().await?;
        let header = match held {
            Some(chunks) => read_header_and_metadata(ChunksReader::new(&chunks)),
            None => {
                // Streamed (larger than the store's upload chunk): the header from its start,
                // or from the whole blob if it is longer than that.
                let start = self
                    .blobs
                    .get_range(staged.staging_key(), 0..HEADER_PREFIX as u64)
                    .await?;
                match read_header_and_metadata(Cursor::new(&start)) {
                    Err(HeaderError::Unreadable(_)) if start.len() >= HEADER_PREFIX => {
                        let bytes = self.blobs.get(staged.staging_key()).await?;
                        read_header_and_metadata(Cursor::new(&bytes))
                    }
                    other => other,
                }
            }
        };
        let (header, metadata) = match header {
            Ok(h) => h,
            Err(e) => {
                self.blobs.discard(&staged).await?;
                return Ok(Err(Failed {
                    sop_class_uid: None,
                    sop_instance_uid: None,
                    reason: e.failure_reason(),
                    detail: format!("{label}: {e}"),
                }));
            }
        };
        if let Some(study) = study_in_url
            && study != header.study_uid
        {
            self.blobs.discard(&staged).await?;
            return Ok(Err(Failed {
                sop_class_uid: Some(header.sop_class_uid.clone()),
                sop_instance_uid: Some(header.sop_instance_uid.clone()),
                reason: reason::DATA_SET_DOES_NOT_MATCH,
                detail: format!(
                    "{label}: StudyInstanceUID {} differs from the study {study} of the URL",
                    header.study_uid
                ),
            }));
        }
        let blob_key = format!(
            "studies/{}/{}/{}.{}.dcm",
            key_part(&header.study_uid),
            key_part(&header.series_uid),
            key_part(&header.sop_instance_uid),
            &staged.sha256[..16]
        );
        Ok(Ok(Pending {
            received: Received {
                header,
                blob_key,
                sha256: staged.sha256.clone(),
                size: staged.size,
            },
            staged,
            metadata,
        }))
    }

    /// Decides and records received instances, one append per study; blobs are made durable
    /// before their events, and nothing staged survives a failure. Returns once what it
    /// recorded is visible to queries (see `with_visibility`).
    pub async fn record(
        &self,
        institution: &str,
        actor: &str,
        source: &IngestSource,
        pending: Vec<Pending>,
        result: &mut StowResult,
    ) -> Result<(), StowError> {
        self.record_durable(institution, actor, source, pending, result)
            .await?;
        if let Some(position) = result.last_position {
            self.wait_visible(position).await;
        }
        Ok(())
    }

    /// `record`, returning as soon as the blobs are durable and the events appended, before
    /// queries show them: DIMSE acknowledges each C-STORE so, and waits for visibility once,
    /// before it confirms the association's release or answers a C-FIND.
    pub async fn record_durable(
        &self,
        institution: &str,
        actor: &str,
        source: &IngestSource,
        pending: Vec<Pending>,
        result: &mut StowResult,
    ) -> Result<(), StowError> {
        let mut by_study: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
        for p in pending {
            by_study
                .entry(p.received.header.study_uid.clone())
                .or_default()
                .push(p);
        }
        let mut studies = by_study.into_iter();
        while let Some((study, items)) = studies.next() {
            if let Err(e) = self
                .record_study(institution, actor, source, &study, items, result)
                .await
            {
                // Staged parts of the studies not recorded yet: nothing will refer to them.
                for (_, rest) in studies {
                    self.discard(&rest).await;
                }
                return Err(e);
            }
        }
        Ok(())
    }

    async fn discard(&self, pending: &[Pending]) {
        for p in pending {
            let _ = self.blobs.discard(&p.staged).await;
        }
    }

    /// Decides and appends for one study, retrying on concurrent appends. Blobs of new
    /// instances are made durable under their final keys before the append, each batch of
    /// them named first in a durable intent ([`Intent`]); the intents go once the outcome is
    /// settled: the event appended, or the blobs removed. When it is not (a crash, an append
    /// whose outcome is unknown), [`Ingest::sweep_intents`] settles it from the log.
    async fn record_study(
        &self,
        institution: &str,
        actor: &str,
        source: &IngestSource,
        study: &str,
        items: Vec<Pending>,
        result: &mut StowResult,
    ) -> Result<(), StowError> {
        let mut journal = Journal::default();
        let who = (institution, actor, source);
        let recorded = self
            .record_study_journaled(who, study, items, result, &mut journal)
            .await;
        if recorded.is_ok() {
            // Recorded: the intents go after the answer, not before it (a DIMSE sender waits
            // for each C-STORE's). One a crash leaves is settled by the sweep from the log.
            if !journal.intents.is_empty() {
                let (intents, keys) = (self.intents.clone(), journal.intents);
                tokio::spawn(async move {
                    if let Err(e) = intents.remove(&keys).await {
                        tracing::warn!(error = %e, "removing settled intents failed: the sweep removes them");
                    }
                });
            }
        } else if !journal.unsettled {
            // Failed with its blobs removed: nothing for the intents to settle.
            let _ = self.intents.remove(&journal.intents).await;
        } else {
            tracing::warn!(
                study,
                intents = journal.intents.len(),
                "recording failed with its blobs in place: the intent sweep settles them"
            );
        }
        recorded
    }

    /// `record_study`, noting its intents and whether it left them unsettled in `journal`;
    /// `who` is the institution, the actor and the source the events name.
    async fn record_study_journaled(
        &self,
        (institution, actor, source): (&str, &str, &IngestSource),
        study: &str,
        items: Vec<Pending>,
        result: &mut StowResult,
        journal: &mut Journal,
    ) -> Result<(), StowError> {
        let stream = StreamId::new(Family::Study, study);
        let received: Vec<Received> = items.iter().map(|p| p.received.clone()).collect();
        let mut committed = vec![false; items.len()];
        let mut attempt = 0;
        // The first attempt decides on the state this process last knew of the study, without
        // reading the log: a DIMSE association appends to one study instance after instance,
        // and each of its appends left that state current. Whatever another writer appended
        // since fails the append's expected version, and the next attempt reads the log.
        let outcomes = loop {
            attempt += 1;
            let kept = if attempt == 1 {
                self.kept_state(&stream)
            } else {
                None
            };
            let from_kept = kept.is_some();
            let state = match kept {
                Some(state) => state,
                None => match self.study_state(&stream).await {
                    Ok(state) => state,
                    Err(e) => {
                        // Blobs an earlier attempt moved stay for the sweep.
                        journal.unsettled = committed.iter().any(|c| *c);
                        return Err(e.into());
                    }
                },
            };
            let (outcomes, events) = decide(&state, institution, source, &received);
            if events.is_empty() && from_kept {
                // Nothing to append, so no expected version would catch a kept state that is
                // behind (the study purged since): decided again on the log.
                continue;
            }
            // New instances are moved to their final keys several at a time (their renames
            // overlap instead of queueing one behind the other), then their names are made
            // durable with one fsync per directory.
            let to_commit: Vec<usize> = outcomes
                .iter()
                .enumerate()
                .filter(|(i, o)| **o == Outcome::Stored && !committed[*i])
                .map(|(i, _)| i)
                .collect();
            if !to_commit.is_empty() {
                // The blobs' data is fsynced while the intent is written (both before the
                // moves), not one after the other.
                for &i in &to_commit {
                    items[i].staged.start_flush();
                }
                let intent = Intent {
                    study_uid: study.to_owned(),
                    instances: to_commit
                        .iter()
                        .map(|&i| IntentInstance {
                            sop_instance_uid: received[i].header.sop_instance_uid.clone(),
                            sha256: received[i].sha256.clone(),
                            blob_key: received[i].blob_key.clone(),
                        })
                        .collect(),
                };
                match self.intents.add(&intent).await {
                    Ok(key) => journal.intents.push(key),
                    Err(e) => {
                        self.remove_batch(&items, &committed).await;
                        return Err(e.into());
                    }
                }
            }
            let done: Vec<(usize, Result<(), BlobError>)> = futures::stream::iter(to_commit)
                .map(|i| {
                    let item = &items[i];
                    async move {
                        // Metadata beside the original: derived from it, so not fsynced;
                        // WADO-RS falls back to the original if it is ever missing.
                        let metadata = Bytes::from(item.metadata.to_string());
                        let r = futures::future::try_join(
                            self.blobs
                                .put_small(&metadata_key(&item.received.blob_key), metadata),
                            self.blobs.place(&item.staged, &item.received.blob_key),
                        )
                        .await
                        .map(|_| ());
                        (i, r)
                    }
                })
                .buffer_unordered(COMMIT_CONCURRENCY)
                .collect()
                .await;
            let mut failure = None;
            let mut placed = Vec::new();
            for (i, r) in done {
                match r {
                    Ok(()) => {
                        committed[i] = true;
                        placed.push(i);
                    }
                    Err(e) => failure = Some(e),
                }
            }
            if failure.is_none() {
                // The batch's names made durable together: each directory fsynced once.
                let keys = placed.iter().map(|&i| received[i].blob_key.as_str());
                failure = self.blobs.sync_names(keys).await.err();
            }
            if let Some(e) = failure {
                self.remove_batch(&items, &committed).await;
                return Err(e.into());
            }
            if events.is_empty() {
                break outcomes;
            }
            let meta = EventMetadata::new(institution, actor);
            let new = events
                .iter()
                .map(|e| e.to_new_event(meta.clone()))
                .collect();
            let expected = if state.version == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(state.version)
            };
            match self.store.append(&stream, expected, new).await {
                Ok(appended) => {
                    result.last_position = result.last_position.max(Some(appended.last_position));
                    self.keep_appended(&stream, state, &events, appended.stream_version);
                    break outcomes;
                }
                Err(StoreError::Conflict { .. }) if attempt < APPEND_RETRIES => continue,
                Err(e @ StoreError::Conflict { .. }) => {
                    self.remove_batch(&items, &committed).await;
                    return Err(e.into());
                }
                Err(e) => {
                    // The append may have taken effect (a connection lost at commit): removing
                    // the blobs could leave its event without them. The intents stay, and the
                    // sweep removes only the blobs no event names.
                    journal.unsettled = committed.iter().any(|c| *c);
                    if !journal.unsettled {
                        self.remove_batch(&items, &committed).await;
                    }
                    return Err(e.into());
                }
            }
        };
        for (i, (p, outcome)) in items.iter().zip(outcomes).enumerate() {
            let h = &p.received.header;
            match outcome {
                Outcome::Stored | Outcome::AlreadyStored => result.referenced.push(Referenced {
                    study_uid: h.study_uid.clone(),
                    series_uid: h.series_uid.clone(),
                    sop_class_uid: h.sop_class_uid.clone(),
                    sop_instance_uid: h.sop_instance_uid.clone(),
                }),
                Outcome::Conflict { stored_sha256 } => {
                    if committed[i] {
                        // Decided Stored on an earlier attempt, then another request won.
                        let _ = self.blobs.delete(&p.received.blob_key).await;
                        let _ = self.blobs.delete(&metadata_key(&p.received.blob_key)).await;
                    }
                    result.failed.push(Failed {
                        sop_class_uid: Some(h.sop_class_uid.clone()),
                        sop_instance_uid: Some(h.sop_instance_uid.clone()),
                        reason: reason::DUPLICATE_SOP_INSTANCE,
                        detail: format!(
                            "SOP Instance {} is already stored with different bytes (sha256 {stored_sha256}); it is never overwritten",
                            h.sop_instance_uid
                        ),
                    })
                }
                // The other institution is not named (issue 24, class 5). The refusal itself
                // still tells that the UID is held: study streams are keyed by Study UID alone,
                // so this institution's study cannot be stored beside it yet.
                Outcome::OwnedElsewhere { .. } => result.failed.push(Failed {
                    sop_class_uid: Some(h.sop_class_uid.clone()),
                    sop_instance_uid: Some(h.sop_instance_uid.clone()),
                    reason: reason::PROCESSING_FAILURE,
                    detail: format!(
                        "study {} cannot be stored: its Study Instance UID is already used in \
                         this hub; store the study under a new UID",
                        h.study_uid
                    ),
                }),
            }
            if !committed[i] {
                self.blobs.discard(&p.staged).await?;
            }
        }
        Ok(())
    }

    /// Settles the intents at least `min_age` old: what a crash between moving a batch's
    /// blobs to their final keys and appending its event left, or an append whose outcome was
    /// unknown. Every blob an intent lists that no event of its study names (the log is the
    /// truth, read through the study's stream) is removed with its metadata, then the intent.
    /// `min_age` keeps the batches being recorded now out of it: zero only where no other
    /// process records into these blobs (the embedded hub at start, holding its lock).
    /// Returns how many intents were settled and how many blobs removed.
    pub async fn sweep_intents(
        &self,
        min_age: std::time::Duration,
    ) -> Result<(usize, usize), StowError> {
        let (mut settled, mut removed) = (0, 0);
        let (old, young) = self.intents.list(min_age).await?;
        if old.is_empty() {
            return Ok((0, 0));
        }
        // A batch being recorded now names its blobs in a younger intent before it moves
        // them: the same instance sent again after a crash has the same key, and its blob is
        // left to that batch (and the old intent to a later sweep).
        let in_flight: HashSet<String> = young
            .into_iter()
            .flat_map(|(_, intent)| intent.map_or(vec![], |i| i.instances))
            .map(|i| i.blob_key)
            .collect();
        for (key, intent) in old {
            // An intent is durable before the first blob moves: one that does not parse was
            // cut off while being written, before anything it would list moved.
            let mut kept = false;
            if let Some(intent) = intent {
                let stream = StreamId::new(Family::Study, &intent.study_uid);
                let state = self.study_state(&stream).await?;
                for i in &intent.instances {
                    if state.instances.get(&i.sop_instance_uid) == Some(&i.sha256) {
                        continue;
                    }
                    if in_flight.contains(&i.blob_key) {
                        kept = true;
                        continue;
                    }
                    self.blobs.delete(&i.blob_key).await?;
                    self.blobs.delete(&metadata_key(&i.blob_key)).await?;
                    removed += 1;
                }
            }
            if !kept {
                self.intents.remove(std::slice::from_ref(&key)).await?;
                settled += 1;
            }
        }
        Ok((settled, removed))
    }

    /// A batch no event will name: removes its blobs already moved to their final keys (and
    /// their metadata) and its staged ones.
    async fn remove_batch(&self, items: &[Pending], committed: &[bool]) {
        for (item, done) in items.iter().zip(committed) {
            let _ = if *done {
                self.blobs.delete(&item.received.blob_key).await
            } else {
                self.blobs.discard(&item.staged).await
            };
            let _ = self
                .blobs
                .delete(&metadata_key(&item.received.blob_key))
                .await;
        }
    }

    /// The state of `stream` this process last read or appended, if it still holds one; it
    /// may be behind the log.
    fn kept_state(&self, stream: &StreamId) -> Option<StudyState> {
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(stream)
    }

    /// Keeps `state` with `events`, just appended at `version`, applied to it.
    fn keep_appended(
        &self,
        stream: &StreamId,
        mut state: StudyState,
        events: &[StudyEvent],
        version: u64,
    ) {
        for e in events {
            state.apply(e);
        }
        state.version = version;
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(stream, state);
    }

    /// The study's state as of the log now: a kept state caught up with the events appended
    /// since (by any process), or the whole stream folded.
    async fn study_state(&self, stream: &StreamId) -> Result<StudyState, StoreError> {
        let kept = self
            .states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(stream);
        let mut state = kept.unwrap_or_default();
        let mut events = Vec::new();
        let mut from = state.version + 1;
        loop {
            let page = self.store.read_stream(stream, from, 1000).await?;
            let Some(last) = page.last() else { break };
            from = last.stream_version + 1;
            for e in page {
                // Undecodable study events are reported by projections; ingest still counts
                // their versions so its appends stay in order.
                let version = e.stream_version;
                events.push((version, HubEvent::decode(&e).ok()));
            }
        }
        for (version, event) in &events {
            state.version = *version;
            if let Some(HubEvent::Study(e)) = event {
                state.apply(e);
            }
        }
        if state.version > 0 {
            self.states
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .put(stream, state.clone());
        }
        Ok(state)
    }
}
