//! Registry events: institutions (`institution-<id>`), alliances (`alliance-<id>`) and patient
//! links (`patient-<regional id>`).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstitutionKind {
    Hospital,
    ImagingCenter,
    Commission,
    AiVendor,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum InstitutionEvent {
    InstitutionRegistered {
        institution_id: String,
        name: String,
        kind: InstitutionKind,
        /// Calling AE titles of this institution's modalities and PACS (DIMSE maps them here).
        ae_titles: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AllianceEvent {
    AllianceRegistered {
        alliance_id: String,
        name: String,
        /// The lead hospital of the alliance.
        lead_institution: String,
    },
    InstitutionJoinedAlliance {
        alliance_id: String,
        institution_id: String,
    },
    InstitutionLeftAlliance {
        alliance_id: String,
        institution_id: String,
    },
}

/// Links a hospital-local patient id to a regional patient identity. The regional id is a keyed
/// hash of the national id: the national id itself is never stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PatientEvent {
    PatientLinked {
        regional_patient_id: String,
        institution_id: String,
        local_patient_id: String,
        issuer_of_patient_id: Option<String>,
    },
    PatientUnlinked {
        regional_patient_id: String,
        institution_id: String,
        local_patient_id: String,
        reason: String,
    },
}
