//! Sharing events: shares (`share-<uuid>`) and patient consents (`consent-<uuid>`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who a share is granted to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Grantee {
    Institution(String),
    Alliance(String),
    User(String),
}

/// What a share lets the grantee see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareScope {
    /// Study, series and instance attributes, no pixels.
    Metadata,
    /// Metadata and pixels.
    Images,
    /// A de-identified copy (PS3.15 Annex E) of metadata and pixels.
    Deidentified,
}

/// Why data is used (HL7 purpose-of-use, reduced to what the hub distinguishes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurposeOfUse {
    Treatment,
    Consultation,
    Emergency,
    Research,
    PatientRequest,
    Operations,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ShareEvent {
    /// Schema v2 added `purpose`; v1 events are upcast with purpose `treatment`, which is what
    /// every v1 share was granted for.
    ShareGranted {
        share_id: Uuid,
        study_uid: String,
        /// `None` shares the whole study.
        series_uid: Option<String>,
        owner: String,
        grantee: Grantee,
        scope: ShareScope,
        purpose: PurposeOfUse,
        expires_at: Option<DateTime<Utc>>,
    },
    ShareRevoked {
        share_id: Uuid,
        reason: String,
    },
    /// Appended when the expiry time has passed (the policy already refuses at expiry).
    ShareExpired {
        share_id: Uuid,
    },
}

/// BPPC-style consent: a patient allows (or stops allowing) alliance-wide visibility.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ConsentEvent {
    ConsentRecorded {
        consent_id: Uuid,
        regional_patient_id: String,
        /// The institution that recorded the consent.
        institution_id: String,
        /// Identifier of the consent policy document the patient agreed to.
        policy: String,
    },
    ConsentWithdrawn {
        consent_id: Uuid,
        regional_patient_id: String,
        reason: Option<String>,
    },
}
