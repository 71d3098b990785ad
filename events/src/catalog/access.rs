//! Data access (audit) events: stream `access-<StudyInstanceUID>` (or `access-hub` for accesses
//! not tied to one study), ATNA-style: who, what, when, purpose, decision.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::sharing::PurposeOfUse;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessAction {
    Query,
    RetrieveStudy,
    RetrieveSeries,
    RetrieveInstance,
    Metadata,
    Frames,
    Rendered,
    Thumbnail,
    ShareLink,
    BreakTheGlass,
    Findings,
    /// A patient's consents were listed (`reason` names the regional patient id).
    Consents,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Permit,
    Deny,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AccessEvent {
    DataAccessed {
        subject: String,
        role: String,
        institution: String,
        action: AccessAction,
        study_uid: Option<String>,
        series_uid: Option<String>,
        sop_instance_uid: Option<String>,
        purpose: PurposeOfUse,
        decision: Decision,
        /// Why it was denied, or the break-the-glass justification; for `consents`, the
        /// regional patient id whose consents were listed.
        reason: Option<String>,
        /// The institution that owns `study_uid` (two hospitals may hold the same Study UID).
        /// Added without a schema bump: older events read back as `None`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        /// For a query: every study the answer showed, so "who saw this study" includes the
        /// people who only saw it in a list.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        results: Vec<AccessedStudy>,
        /// For break-the-glass: until when the emergency access lasts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<DateTime<Utc>>,
    },
}

/// One study shown by a query: its owner and Study Instance UID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessedStudy {
    pub owner: String,
    pub study_uid: String,
}
