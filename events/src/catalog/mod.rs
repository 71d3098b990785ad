//! The event catalog of the whole hub: one serde enum per aggregate family, and the one place
//! that turns them into stored events and back (with upcasting of old schema versions).
//!
//! Encoding: the family enum is internally tagged (`"type"`); the tag becomes the stored
//! `event_type` and the remaining fields the payload. Decoding picks the family from the stream
//! id, runs the upcasters from the stored schema version to the current one, and deserializes.

pub mod access;
pub mod consult;
pub mod diagnosis;
pub mod registry;
pub mod sharing;
pub mod study;

mod upcast;

use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

pub use access::{AccessAction, AccessEvent, AccessedStudy, Decision};
pub use consult::{
    AvailabilitySlot, ConsultEvent, ConsultKind, ConsultParticipant, ConsultUrgency,
};
pub use diagnosis::{DiagnosisEvent, Finding};
pub use registry::{AllianceEvent, InstitutionEvent, InstitutionKind, PatientEvent};
pub use sharing::{
    ConsentEvent, ConsentPolicy, Grantee, PurposeOfUse, ShareEvent, ShareScope, UserId,
};
pub use study::{IngestSource, SeriesInstances, StorageTier, StoredInstance, StudyEvent};

use crate::envelope::{EventMetadata, Family, NewEvent, Position, RecordedEvent};
pub use upcast::current_schema_version;

/// Any event of the hub.
#[derive(Clone, Debug, PartialEq)]
pub enum HubEvent {
    Study(StudyEvent),
    Institution(InstitutionEvent),
    Alliance(AllianceEvent),
    Patient(PatientEvent),
    Share(ShareEvent),
    Consent(ConsentEvent),
    Consult(ConsultEvent),
    Diagnosis(DiagnosisEvent),
    Access(AccessEvent),
}

/// A stored event that could not be decoded. It always names the position, so an operator can
/// find the row; readers report it and go on, they never panic.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error(
        "event at position {position}: unknown event type {event_type:?} for stream family {family:?}"
    )]
    UnknownType {
        position: Position,
        family: Family,
        event_type: String,
    },
    #[error(
        "event at position {position} ({event_type} v{schema_version}): corrupt payload: {reason}"
    )]
    CorruptPayload {
        position: Position,
        event_type: String,
        schema_version: u32,
        reason: String,
    },
    #[error(
        "event at position {position} ({event_type}) has schema version {stored}, newer than the \
         {current} this build knows: upgrade the hub before reading it"
    )]
    FutureSchema {
        position: Position,
        event_type: String,
        stored: u32,
        current: u32,
    },
}

impl HubEvent {
    pub fn family(&self) -> Family {
        match self {
            HubEvent::Study(_) => Family::Study,
            HubEvent::Institution(_) => Family::Institution,
            HubEvent::Alliance(_) => Family::Alliance,
            HubEvent::Patient(_) => Family::Patient,
            HubEvent::Share(_) => Family::Share,
            HubEvent::Consent(_) => Family::Consent,
            HubEvent::Consult(_) => Family::Consult,
            HubEvent::Diagnosis(_) => Family::Diagnosis,
            HubEvent::Access(_) => Family::Access,
        }
    }

    fn to_tagged_json(&self) -> Result<Value, serde_json::Error> {
        match self {
            HubEvent::Study(e) => serde_json::to_value(e),
            HubEvent::Institution(e) => serde_json::to_value(e),
            HubEvent::Alliance(e) => serde_json::to_value(e),
            HubEvent::Patient(e) => serde_json::to_value(e),
            HubEvent::Share(e) => serde_json::to_value(e),
            HubEvent::Consent(e) => serde_json::to_value(e),
            HubEvent::Consult(e) => serde_json::to_value(e),
            HubEvent::Diagnosis(e) => serde_json::to_value(e),
            HubEvent::Access(e) => serde_json::to_value(e),
        }
    }

    /// The stored type name (`StudyRegistered`, `ShareGranted`, ...).
    pub fn event_type(&self) -> String {
        match self.to_tagged_json() {
            Ok(Value::Object(m)) => match m.get("type") {
                Some(Value::String(t)) => t.clone(),
                _ => String::new(),
            },
            _ => String::new(),
        }
    }

    /// Encodes this event for appending, at the current schema version of its type.
    pub fn to_new_event(&self, metadata: EventMetadata) -> NewEvent {
        // The catalog types are plain data (strings, numbers, enums, maps with string keys), so
        // serialization to a JSON object cannot fail; a failure would be a catalog bug.
        let mut object = match self.to_tagged_json() {
            Ok(Value::Object(m)) => m,
            other => panic!("catalog event did not serialize to a JSON object: {other:?}"),
        };
        let event_type = match object.remove("type") {
            Some(Value::String(t)) => t,
            other => panic!("catalog event has no string type tag: {other:?}"),
        };
        NewEvent {
            event_id: Uuid::now_v7(),
            schema_version: current_schema_version(&event_type),
            event_type,
            payload: Value::Object(object).to_string(),
            metadata,
        }
    }

    /// Decodes a stored event, upcasting older schema versions to the current types.
    pub fn decode(event: &RecordedEvent) -> Result<HubEvent, DecodeError> {
        let corrupt = |reason: String| DecodeError::CorruptPayload {
            position: event.position,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            reason,
        };
        let current = current_schema_version(&event.event_type);
        if event.schema_version > current {
            return Err(DecodeError::FutureSchema {
                position: event.position,
                event_type: event.event_type.clone(),
                stored: event.schema_version,
                current,
            });
        }
        let mut fields: Map<String, Value> = match serde_json::from_str(&event.payload) {
            Ok(Value::Object(m)) => m,
            Ok(other) => return Err(corrupt(format!("expected a JSON object, found {other}"))),
            Err(e) => return Err(corrupt(e.to_string())),
        };
        upcast::upcast(&event.event_type, event.schema_version, &mut fields).map_err(corrupt)?;
        fields.insert("type".into(), Value::String(event.event_type.clone()));
        let value = Value::Object(fields);
        let family = event.stream_id.family();
        let decoded = match family {
            Family::Study => serde_json::from_value(value).map(HubEvent::Study),
            Family::Institution => serde_json::from_value(value).map(HubEvent::Institution),
            Family::Alliance => serde_json::from_value(value).map(HubEvent::Alliance),
            Family::Patient => serde_json::from_value(value).map(HubEvent::Patient),
            Family::Share => serde_json::from_value(value).map(HubEvent::Share),
            Family::Consent => serde_json::from_value(value).map(HubEvent::Consent),
            Family::Consult => serde_json::from_value(value).map(HubEvent::Consult),
            Family::Diagnosis => serde_json::from_value(value).map(HubEvent::Diagnosis),
            Family::Access => serde_json::from_value(value).map(HubEvent::Access),
        };
        decoded.map_err(|e| {
            if e.to_string().starts_with("unknown variant") {
                DecodeError::UnknownType {
                    position: event.position,
                    family,
                    event_type: event.event_type.clone(),
                }
            } else {
                corrupt(e.to_string())
            }
        })
    }
}

macro_rules! from_family {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(impl From<$ty> for HubEvent {
            fn from(e: $ty) -> HubEvent { HubEvent::$variant(e) }
        }

        impl $ty {
            /// Encodes this event for appending (see [`HubEvent::to_new_event`]).
            pub fn to_new_event(&self, metadata: EventMetadata) -> NewEvent {
                HubEvent::$variant(self.clone()).to_new_event(metadata)
            }
        })*
    };
}

from_family!(
    Study(StudyEvent),
    Institution(InstitutionEvent),
    Alliance(AllianceEvent),
    Patient(PatientEvent),
    Share(ShareEvent),
    Consent(ConsentEvent),
    Consult(ConsultEvent),
    Diagnosis(DiagnosisEvent),
    Access(AccessEvent),
);

/// Serializes for display (the `/events` API): the tagged JSON of the event.
impl Serialize for HubEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_tagged_json()
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }
}

#[cfg(test)]
mod tests;
