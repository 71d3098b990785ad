//! Consultation events: stream `consult-<uuid>`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsultKind {
    /// One expert reads the study remotely.
    Remote,
    /// A multidisciplinary team meeting.
    Mdt,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ConsultEvent {
    ConsultRequested {
        consult_id: Uuid,
        study_uid: String,
        kind: ConsultKind,
        requesting_institution: String,
        requested_by: String,
        expert_institution: String,
        /// A named expert, or `None` for whoever the expert institution assigns.
        expert: Option<String>,
        question: String,
    },
    ConsultScheduled {
        consult_id: Uuid,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
    },
    ConsultAccepted {
        consult_id: Uuid,
        expert: String,
    },
    ConsultDeclined {
        consult_id: Uuid,
        expert: String,
        reason: String,
    },
    ConsultRescheduled {
        consult_id: Uuid,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        reason: String,
    },
    ConsultCancelled {
        consult_id: Uuid,
        reason: String,
    },
    ConsultCompleted {
        consult_id: Uuid,
        /// The signed report that answers the consultation.
        report_id: Option<Uuid>,
    },
}
