//! The profile on DICOM JSON (PS3.18 F.2): `{"GGGGEEEE": {"vr": "..", "Value": [..]}, ..}`.

use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use serde_json::{Map, Value, json};

use crate::profile::{self, Dummy, Effect};
use crate::{Deidentifier, METHOD, METHOD_CODE, trimmed};

/// Eight zero bytes in base64, the binary dummy.
const ZERO_BYTES_BASE64: &str = "AAAAAAAAAAA=";

pub(crate) fn apply(deid: &Deidentifier, value: &mut Value) {
    match value {
        Value::Object(dataset) => top_level(deid, dataset),
        Value::Array(datasets) => {
            for dataset in datasets {
                if let Value::Object(dataset) = dataset {
                    top_level(deid, dataset);
                }
            }
        }
        _ => {}
    }
}

fn top_level(deid: &Deidentifier, dataset: &mut Map<String, Value>) {
    clean(deid, dataset);
    let (code, scheme, meaning) = METHOD_CODE;
    dataset.insert(
        key(tags::PATIENT_IDENTITY_REMOVED),
        json!({"vr": "CS", "Value": ["YES"]}),
    );
    dataset.insert(
        key(tags::DEIDENTIFICATION_METHOD),
        json!({"vr": "LO", "Value": [METHOD]}),
    );
    dataset.insert(
        key(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE),
        json!({"vr": "SQ", "Value": [{
            key(tags::CODE_VALUE): {"vr": "SH", "Value": [code]},
            key(tags::CODING_SCHEME_DESIGNATOR): {"vr": "SH", "Value": [scheme]},
            key(tags::CODE_MEANING): {"vr": "LO", "Value": [meaning]},
        }]}),
    );
    sort(dataset);
}

/// Keys in ascending tag order, as DICOM JSON writers emit them: with serde_json's
/// `preserve_order` (enabled elsewhere in the workspace) removals and insertions would
/// otherwise shuffle them.
fn sort(dataset: &mut Map<String, Value>) {
    let mut entries: Vec<(String, Value)> = std::mem::take(dataset).into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    dataset.extend(entries);
}

fn key(tag: Tag) -> String {
    format!("{:04X}{:04X}", tag.group(), tag.element())
}

fn parse_key(key: &str) -> Option<Tag> {
    if key.len() != 8 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let group = u16::from_str_radix(&key[..4], 16).ok()?;
    let element = u16::from_str_radix(&key[4..], 16).ok()?;
    Some(Tag(group, element))
}

/// Applies the table to one data set (top level or sequence item).
fn clean(deid: &Deidentifier, dataset: &mut Map<String, Value>) {
    let patient = patient(dataset);
    let keys: Vec<String> = dataset.keys().cloned().collect();
    for k in keys {
        let Some(tag) = parse_key(&k) else { continue };
        let Some(element) = dataset.get_mut(&k) else {
            continue;
        };
        if !element_in_place(deid, profile::effect(tag), tag, element, patient.as_deref()) {
            dataset.remove(&k);
        }
    }
    sort(dataset);
}

/// Whose pseudonym PatientID and PatientName get: the Patient ID, else the alphabetic Patient's
/// Name (as [`crate::part10`] reads them, so metadata and files agree).
fn patient(dataset: &Map<String, Value>) -> Option<String> {
    let first = |tag| {
        dataset
            .get(&key(tag))?
            .get("Value")?
            .as_array()?
            .first()
            .cloned()
    };
    let id = first(tags::PATIENT_ID)
        .and_then(|v| v.as_str().map(|s| trimmed(s).to_owned()))
        .filter(|s| !s.is_empty());
    id.or_else(|| {
        let name = first(tags::PATIENT_NAME)?;
        let alphabetic = name.get("Alphabetic")?.as_str()?;
        Some(trimmed(alphabetic).to_owned()).filter(|s| !s.is_empty())
    })
}

/// The element's VR when it is an object with a string "vr" naming a known VR.
fn vr_of(element: &Value) -> Option<VR> {
    element.get("vr")?.as_str()?.parse().ok()
}

/// True when the element carries no value at all.
fn is_empty(element: &Value) -> bool {
    let values_empty = match element.get("Value") {
        None => true,
        Some(Value::Array(values)) => values.iter().all(|v| match v {
            Value::Null => true,
            Value::String(s) => trimmed(s).is_empty(),
            // A person name: {"Alphabetic": .., "Ideographic": .., "Phonetic": ..}.
            Value::Object(name) => name
                .values()
                .all(|v| v.as_str().is_some_and(|s| trimmed(s).is_empty())),
            _ => false,
        }),
        Some(_) => false,
    };
    values_empty && element.get("InlineBinary").is_none() && element.get("BulkDataURI").is_none()
}

fn empty(vr: VR) -> Value {
    json!({"vr": vr.to_string()})
}

/// Applies `effect` to `element`; false when the element is to be removed. An element the table
/// names that is not an object with a known "vr" and, if any, an array "Value" is removed.
fn element_in_place(
    deid: &Deidentifier,
    effect: Effect,
    tag: Tag,
    element: &mut Value,
    patient: Option<&str>,
) -> bool {
    match effect {
        Effect::Keep if vr_of(element).is_some_and(|vr| profile::opaque_sequence(tag, vr)) => false,
        Effect::Keep => {
            if vr_of(element) == Some(VR::SQ)
                && let Some(Value::Array(items)) = element.get_mut("Value")
            {
                for item in items.iter_mut() {
                    if let Value::Object(item) = item {
                        clean(deid, item);
                    }
                }
            }
            true
        }
        Effect::Remove => false,
        Effect::RemapUids => remap_uids(deid, element),
        Effect::Empty => match interpretable(element) {
            Some(vr) => {
                *element = empty(vr);
                true
            }
            None => false,
        },
        Effect::Pseudonym => match interpretable(element) {
            Some(vr) => {
                *element = match patient.map(|p| deid.pseudonym(p)) {
                    Some(p) if tag == tags::PATIENT_NAME => {
                        json!({"vr": "PN", "Value": [{"Alphabetic": p}]})
                    }
                    Some(p) => json!({"vr": vr.to_string(), "Value": [p]}),
                    None => empty(vr),
                };
                true
            }
            None => false,
        },
        Effect::Dummy => match interpretable(element) {
            Some(vr) => dummy(deid, vr, element),
            None => false,
        },
    }
}

/// The VR of an element whose shape is understood: an object with a known "vr" and, if it has
/// one, an array "Value".
fn interpretable(element: &Value) -> Option<VR> {
    let vr = vr_of(element)?;
    match element.get("Value") {
        None | Some(Value::Array(_)) => Some(vr),
        Some(_) => None,
    }
}

/// Replaces the value by the VR's dummy (empty stays empty); false when there is none.
fn dummy(deid: &Deidentifier, vr: VR, element: &mut Value) -> bool {
    if is_empty(element) {
        *element = empty(vr);
        return true;
    }
    *element = match profile::dummy_for(vr) {
        Dummy::Text(text) if vr == VR::PN => json!({"vr": "PN", "Value": [{"Alphabetic": text}]}),
        Dummy::Text(number) if matches!(vr, VR::IS | VR::DS) => {
            json!({"vr": vr.to_string(), "Value": [number.parse::<i64>().unwrap_or(0)]})
        }
        Dummy::Text(text) => json!({"vr": vr.to_string(), "Value": [text]}),
        Dummy::Uids => return remap_uids(deid, element),
        Dummy::EmptySequence => empty(vr),
        Dummy::Binary => json!({"vr": vr.to_string(), "InlineBinary": ZERO_BYTES_BASE64}),
        Dummy::None => return false,
    };
    true
}

/// Maps every UID of a UI element; false (remove) when it is not a UI element with an array of
/// strings (nulls, the empty values of PS3.18 F.2.5, stay null).
fn remap_uids(deid: &Deidentifier, element: &mut Value) -> bool {
    if vr_of(element) != Some(VR::UI)
        || element.get("InlineBinary").is_some()
        || element.get("BulkDataURI").is_some()
    {
        return false;
    }
    let Some(value) = element.get("Value") else {
        *element = empty(VR::UI);
        return true;
    };
    let Some(values) = value.as_array() else {
        return false;
    };
    let mut mapped = Vec::with_capacity(values.len());
    for v in values {
        match v {
            Value::Null => mapped.push(Value::Null),
            Value::String(s) if trimmed(s).is_empty() => mapped.push(Value::Null),
            Value::String(s) => mapped.push(Value::String(deid.map_uid(s))),
            _ => return false,
        }
    }
    *element = if mapped.iter().all(Value::is_null) {
        empty(VR::UI)
    } else {
        json!({"vr": "UI", "Value": mapped})
    };
    true
}
