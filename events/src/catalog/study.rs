//! Study events: stream `study-<StudyInstanceUID>`, appended by the owner institution.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// Hot storage answers viewers at once; cold storage is cheaper and slower to recall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageTier {
    Hot,
    Cold,
}

/// How the instances came in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "snake_case")]
pub enum IngestSource {
    /// A DICOMweb STOW-RS request.
    StowRs { request_id: String },
    /// A DIMSE C-STORE association.
    Dimse {
        calling_ae: String,
        association_id: String,
    },
}

/// One stored SOP instance: a reference to its blob, never pixel data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredInstance {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax_uid: String,
    pub instance_number: Option<i32>,
    /// Key of the original bytes in the blob store.
    pub blob_key: String,
    pub size_bytes: u64,
    /// SHA-256 of the original bytes, lowercase hex.
    pub sha256: String,
}

/// The instances of one series stored by one request or association.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesInstances {
    pub series_uid: String,
    pub modality: Option<String>,
    pub series_number: Option<i32>,
    pub series_description: Option<String>,
    pub instances: Vec<StoredInstance>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum StudyEvent {
    /// The first instance of a study arrived; the pushing institution owns the study.
    StudyRegistered {
        study_uid: String,
        owner: String,
        patient_id: Option<String>,
        patient_name: Option<String>,
        patient_birth_date: Option<String>,
        patient_sex: Option<String>,
        study_date: Option<String>,
        study_time: Option<String>,
        accession_number: Option<String>,
        study_description: Option<String>,
        referring_physician: Option<String>,
    },
    /// Instances were stored (blobs durable before this event), batched per request or association.
    InstancesStored {
        study_uid: String,
        source: IngestSource,
        series: Vec<SeriesInstances>,
    },
    /// No instance arrived for the configured quiet period: the study is complete for now.
    StudyStabilized {
        study_uid: String,
        series_count: u32,
        instance_count: u32,
        modalities: Vec<String>,
    },
    /// Study-level attributes were corrected (keyword → new value, `null` removes it).
    StudyMetadataCorrected {
        study_uid: String,
        changes: std::collections::BTreeMap<String, Option<String>>,
        reason: String,
    },
    RetentionSet {
        study_uid: String,
        retain_until: NaiveDate,
        rule: String,
    },
    StorageTierChanged {
        study_uid: String,
        from: StorageTier,
        to: StorageTier,
    },
    /// The study's blobs were deleted (retention ended or a lawful erasure).
    StudyPurged {
        study_uid: String,
        reason: String,
        purged_at: DateTime<Utc>,
    },
}
