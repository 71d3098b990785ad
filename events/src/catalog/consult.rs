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

/// How soon the requester needs an answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsultUrgency {
    #[default]
    Routine,
    Urgent,
    Emergency,
}

/// Someone taking part in a consultation besides the requester and the expert (a team meeting).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConsultParticipant {
    pub user: String,
    pub institution: String,
}

/// A period an expert declared available for consultations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvailabilitySlot {
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
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
        /// The institution that holds the study the consultation is about (the requester saw
        /// it there); absent in events written before it was recorded.
        #[serde(default)]
        owner: Option<String>,
        #[serde(default)]
        specialty: Option<String>,
        #[serde(default)]
        urgency: ConsultUrgency,
        /// Further participants (a multidisciplinary team meeting).
        #[serde(default)]
        participants: Vec<ConsultParticipant>,
    },
    ConsultScheduled {
        consult_id: Uuid,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        /// The offset the slot was booked in (`+08:00`), to show it in the booker's time.
        #[serde(default)]
        time_zone: Option<String>,
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
        #[serde(default)]
        time_zone: Option<String>,
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
    /// The institution holding the study approves a consultation another institution requested
    /// on it: from now on its window opens the study to every participant. (A consultation the
    /// owner requested needs none.)
    ConsultApproved {
        consult_id: Uuid,
        /// Who approved it, and for which institution (the owner).
        approved_by: String,
        institution: String,
    },
    /// An institution declares one of its staff an expert consultations may name (stream
    /// `consult-expert.<institution>.<user>`); a later declaration replaces the earlier one.
    ExpertRegistered {
        institution: String,
        expert: String,
        #[serde(default)]
        specialty: Option<String>,
        /// When the expert takes consultations; empty = no restriction.
        #[serde(default)]
        availability: Vec<AvailabilitySlot>,
    },
}
