//! Schema versions and upcasters. Stored events are never edited: an event written under an old
//! schema is brought up to the current shape every time it is read.
//!
//! To change an event type: bump its version in [`SCHEMA_VERSIONS`] and add an upcaster from the
//! previous version to [`UPCASTERS`]. Upcasters chain (v1 → v2 → v3).

use serde_json::{Map, Value};

/// Current schema version of each event type that has ever changed; all others are at 1.
const SCHEMA_VERSIONS: &[(&str, u32)] = &[("ShareGranted", 3), ("ConsentRecorded", 2)];

type Upcaster = fn(&mut Map<String, Value>) -> Result<(), String>;

/// `(event type, from version, upcaster to from + 1)`.
const UPCASTERS: &[(&str, u32, Upcaster)] = &[
    ("ShareGranted", 1, share_granted_v1_to_v2),
    ("ShareGranted", 2, share_granted_v2_to_v3),
    ("ConsentRecorded", 1, consent_recorded_v1_to_v2),
];

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

/// ShareGranted v2 named a user grantee by its subject alone (`{"kind": "user", "id": "alice"}`),
/// which any institution's token could carry. v3 names the institution too; a v2 user grantee
/// becomes an `unscoped_user`, which reaches nobody (see `Grantee::UnscopedUser`).
fn share_granted_v2_to_v3(fields: &mut Map<String, Value>) -> Result<(), String> {
    let Some(Value::Object(grantee)) = fields.get_mut("grantee") else {
        return Err("ShareGranted v2 without a grantee object".into());
    };
    if grantee.get("kind").and_then(Value::as_str) == Some("user") {
        if !grantee.get("id").is_some_and(Value::is_string) {
            return Err("ShareGranted v2: a user grantee's id is not a string".into());
        }
        grantee.insert("kind".into(), Value::String("unscoped_user".into()));
    }
    Ok(())
}

/// The v1 policy texts that say no (compared trimmed, in lower case).
const V1_REFUSALS: &[&str] = &[
    "no",
    "none",
    "refuse",
    "refused",
    "deny",
    "denied",
    "decline",
    "declined",
    "opt-out",
    "opt_out",
    "optout",
    "withdrawn",
];

/// ConsentRecorded v1 held a free-text `policy` that nothing read (every v1 consent granted
/// alliance visibility) and was always recorded by an institution's admin. v2: the policy is one
/// of the documented list (`refused` when the text says no, else `alliance_metadata`), the text
/// is kept in `v1_policy_text`, and `by_patient` is false.
fn consent_recorded_v1_to_v2(fields: &mut Map<String, Value>) -> Result<(), String> {
    let text = match fields.remove("policy") {
        Some(Value::String(t)) => t,
        other => return Err(format!("ConsentRecorded v1: policy is not text: {other:?}")),
    };
    let policy = if V1_REFUSALS.contains(&text.trim().to_lowercase().as_str()) {
        "refused"
    } else {
        "alliance_metadata"
    };
    fields.insert("policy".into(), Value::String(policy.into()));
    fields.insert("v1_policy_text".into(), Value::String(text));
    fields.insert("by_patient".into(), Value::Bool(false));
    Ok(())
}
