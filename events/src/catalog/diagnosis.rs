//! Diagnosis events: stream `diagnosis-<StudyInstanceUID>` (AI findings and reports on a study).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One finding of a model: where (instance, frame, box) and how sure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub series_uid: String,
    pub sop_instance_uid: String,
    pub frame: Option<u32>,
    pub label: String,
    pub score: f32,
    /// Bounding box in pixels: x, y, width, height.
    pub bbox: Option<[f32; 4]>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DiagnosisEvent {
    /// A model version ran over a study's matching series. `findings` may be empty: the model
    /// ran and found nothing above its thresholds.
    AiFindingsRecorded {
        study_uid: String,
        model_id: String,
        model_version: String,
        findings: Vec<Finding>,
        inference_ms: u64,
        /// SHA-256 of the ONNX file that ran, lowercase hex. Added without a schema bump: older
        /// events read back with an empty string.
        #[serde(default)]
        model_sha256: String,
        /// Slices (frames) the model scored. Added without a schema bump (older events: 0).
        #[serde(default)]
        slices: u32,
    },
    AiInferenceFailed {
        study_uid: String,
        model_id: String,
        reason: String,
        /// Added without a schema bump: older events read back with empty strings.
        #[serde(default)]
        model_version: String,
        #[serde(default)]
        model_sha256: String,
    },
    ReportDrafted {
        report_id: Uuid,
        study_uid: String,
        author: String,
        findings: String,
        impression: String,
        /// The consultation the report answers, if any.
        #[serde(default)]
        consult_id: Option<Uuid>,
    },
    ReportSigned {
        report_id: Uuid,
        signer: String,
    },
    ReportAmended {
        report_id: Uuid,
        author: String,
        findings: String,
        impression: String,
        reason: String,
        /// The new version's id (`report_id` names the version it replaces); absent in events
        /// written before amendments had their own id.
        #[serde(default)]
        new_report_id: Option<Uuid>,
    },
}
