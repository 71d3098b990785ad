//! Schema versions and upcasters. Stored events are never edited: an event written under an old
//! schema is brought up to the current shape every time it is read.
//!
//! To change an event type: bump its version in [`SCHEMA_VERSIONS`] and add an upcaster from the
//! previous version to [`UPCASTERS`]. Upcasters chain (v1 → v2 → v3).

use serde_json::{Map, Value};

/// Current schema version of each event type that has ever changed; all others are at 1.
const SCHEMA_VERSIONS: &[(&str, u32)] = &[("ShareGranted", 2)];

type Upcaster = fn(&mut Map<String, Value>) -> Result<(), String>;

/// `(event type, from version, upcaster to from + 1)`.
const UPCASTERS: &[(&str, u32, Upcaster)] = &[("ShareGranted", 1, share_granted_v1_to_v2)];

pub fn current_schema_version(event_type: &str) -> u32 {
    SCHEMA_VERSIONS
        .iter()
        .find(|(t, _)| *t == event_type)
        .map(|(_, v)| *v)
        .unwrap_or(1)
}

pub(super) fn upcast(
    event_type: &str,
    stored_version: u32,
    fields: &mut Map<String, Value>,
) -> Result<(), String> {
    let current = current_schema_version(event_type);
    for from in stored_version.max(1)..current {
        let step = UPCASTERS
            .iter()
            .find(|(t, v, _)| *t == event_type && *v == from)
            .map(|(_, _, f)| f)
            .ok_or_else(|| format!("no upcaster for {event_type} from schema version {from}"))?;
        step(fields)?;
    }
    Ok(())
}

/// ShareGranted v1 had no purpose of use: every v1 share was granted for treatment.
fn share_granted_v1_to_v2(fields: &mut Map<String, Value>) -> Result<(), String> {
    fields
        .entry("purpose")
        .or_insert_with(|| Value::String("treatment".into()));
    Ok(())
}
