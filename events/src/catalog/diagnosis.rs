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
    AiFindingsRecorded {
        study_uid: String,
        model_id: String,
        model_version: String,
        findings: Vec<Finding>,
        inference_ms: u64,
    },
    AiInferenceFailed {
        study_uid: String,
        model_id: String,
        reason: String,
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
