//! The profile on a Part 10 file, with dicom-object: read, rebuild the data set element by
//! element, write with a new file meta group in the same transfer syntax.

use std::panic::{AssertUnwindSafe, catch_unwind};

use dicom_core::header::Header;
use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Length, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::mem::InMemElement;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};

use crate::profile::{self, Dummy, Effect};
use crate::{DeidError, Deidentifier, METHOD, METHOD_CODE, trimmed};

pub(crate) fn apply(deid: &Deidentifier, bytes: &[u8]) -> Result<Vec<u8>, DeidError> {
    let file = read(bytes)?;
    check_pixel_sequence_complete(bytes, &file)?;
    let meta = file.meta();
    let transfer_syntax = meta.transfer_syntax().to_owned();
    let sop_class = meta.media_storage_sop_class_uid().to_owned();
    let meta_instance = meta.media_storage_sop_instance_uid().to_owned();

    let mut dataset = clean(deid, file.into_inner());
    mark(&mut dataset);

    // The data set's SOP Instance UID is already mapped; without one, map the meta's.
    let sop_instance =
        text(&dataset, tags::SOP_INSTANCE_UID).unwrap_or_else(|| deid.map_uid(&meta_instance));
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(transfer_syntax)
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(sop_instance)
        .build()
        .map_err(|e| DeidError::Unwritable(e.to_string()))?;
    let mut out = Vec::with_capacity(bytes.len() + 256);
    dataset
        .with_exact_meta(meta)
        .write_all(&mut out)
        .map_err(|e| DeidError::Unwritable(reason(&e)))?;
    Ok(out)
}

/// Parses the whole file. The reader is third-party code fed with stored bytes: a panic in it
/// is reported as an unreadable file rather than taking the caller down.
fn read(bytes: &[u8]) -> Result<DefaultDicomObject, DeidError> {
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        OpenFileOptions::new()
            .read_preamble(ReadPreamble::Auto)
            .from_reader(bytes)
    }));
    match parsed {
        Ok(Ok(file)) => Ok(file),
        Ok(Err(e)) => Err(DeidError::Unreadable(reason(&e))),
        Err(_) => Err(DeidError::Unreadable(
            "the DICOM reader failed on these bytes".into(),
        )),
    }
}

/// An error with its causes ("could not read data set token: ... at position 1234: ..."): the
/// outermost message of dicom-rs alone rarely says what is wrong.
fn reason(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// The Sequence Delimitation Item (FFFE,E0DD) with its zero length, little endian.
const SEQUENCE_DELIMITER: [u8; 8] = [0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0];

/// dicom-rs 0.10 reads a pixel fragment cut short by the end of the file as a shorter fragment
/// and accepts a missing delimiter, so a truncated file with encapsulated pixel data parses. When
/// the pixel data is the last element read, a complete file ends with the last fragment followed
/// by the sequence delimiter; anything after the pixel data (trailing padding) was only reached
/// because the pixel data was complete.
fn check_pixel_sequence_complete(bytes: &[u8], file: &DefaultDicomObject) -> Result<(), DeidError> {
    let Some(pixels) = file.get(tags::PIXEL_DATA) else {
        return Ok(());
    };
    let Value::PixelSequence(sequence) = pixels.value() else {
        return Ok(());
    };
    if file.tags().any(|tag| tag > tags::PIXEL_DATA) {
        return Ok(());
    }
    let before_delimiter = bytes.strip_suffix(&SEQUENCE_DELIMITER[..]);
    let complete = match (before_delimiter, sequence.fragments().last()) {
        (Some(rest), Some(last)) => rest.ends_with(last),
        (Some(_), None) => true,
        (None, _) => false,
    };
    if complete {
        Ok(())
    } else {
        Err(DeidError::Unreadable(
            "the encapsulated pixel data is truncated: no sequence delimitation item after its \
             last fragment"
                .into(),
        ))
    }
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = obj.get(tag)?.to_str().ok()?;
    Some(trimmed(&value).to_owned()).filter(|s| !s.is_empty())
}

/// Whose pseudonym PatientID and PatientName get: the Patient ID, else the alphabetic group of
/// the Patient's Name (as [`crate::json`] reads them, so metadata and files agree).
fn patient(obj: &InMemDicomObject) -> Option<String> {
    text(obj, tags::PATIENT_ID).or_else(|| {
        let name = text(obj, tags::PATIENT_NAME)?;
        let alphabetic = name.split('=').next().unwrap_or_default();
        Some(trimmed(alphabetic).to_owned()).filter(|s| !s.is_empty())
    })
}

/// Applies the table to one data set (top level or sequence item).
fn clean(deid: &Deidentifier, obj: InMemDicomObject) -> InMemDicomObject {
    let patient = patient(&obj);
    InMemDicomObject::from_element_iter(
        obj.into_iter()
            .filter_map(|element| clean_element(deid, element, patient.as_deref())),
    )
}

fn empty(tag: Tag, vr: VR) -> InMemElement {
    if vr == VR::SQ {
        DataElement::new(tag, vr, DataSetSequence::<InMemDicomObject>::empty())
    } else {
        DataElement::new(tag, vr, PrimitiveValue::Empty)
    }
}

fn is_empty(element: &InMemElement) -> bool {
    match element.value() {
        Value::Primitive(PrimitiveValue::Empty) => true,
        Value::Primitive(PrimitiveValue::Str(s)) => trimmed(s).is_empty(),
        Value::Primitive(PrimitiveValue::Strs(s)) => s.iter().all(|s| trimmed(s).is_empty()),
        Value::Primitive(p) => p.multiplicity() == 0,
        Value::Sequence(seq) => seq.items().is_empty(),
        Value::PixelSequence(_) => false,
    }
}

/// The element after its effect; `None` removes it.
fn clean_element(
    deid: &Deidentifier,
    element: InMemElement,
    patient: Option<&str>,
) -> Option<InMemElement> {
    let tag = element.tag();
    let vr = element.vr();
    match profile::effect(tag) {
        Effect::Keep if profile::opaque_sequence(tag, vr) => None,
        Effect::Keep => Some(keep(deid, element)),
        Effect::Remove => None,
        Effect::Empty => Some(empty(tag, vr)),
        Effect::RemapUids => remap_uids(deid, element),
        Effect::Pseudonym => Some(match patient {
            Some(p) if tag == tags::PATIENT_NAME => {
                DataElement::new(tag, VR::PN, PrimitiveValue::from(deid.pseudonym(p)))
            }
            Some(p) => DataElement::new(tag, VR::LO, PrimitiveValue::from(deid.pseudonym(p))),
            None => empty(tag, vr),
        }),
        Effect::Dummy if is_empty(&element) => Some(empty(tag, vr)),
        Effect::Dummy => match profile::dummy_for(vr) {
            Dummy::Text(text) => Some(DataElement::new(tag, vr, PrimitiveValue::from(text))),
            Dummy::Uids => remap_uids(deid, element),
            Dummy::EmptySequence => Some(empty(tag, vr)),
            Dummy::Binary => Some(DataElement::new(
                tag,
                vr,
                PrimitiveValue::U8([0u8; 8][..].into()),
            )),
            Dummy::None => None,
        },
    }
}

/// Kept as is; a sequence keeps its items, each with the table applied.
fn keep(deid: &Deidentifier, element: InMemElement) -> InMemElement {
    if !matches!(element.value(), Value::Sequence(_)) {
        return element;
    }
    let (header, value) = element.into_parts();
    let items: Vec<InMemDicomObject> = value
        .into_items()
        .map(|items| items.into_iter().map(|item| clean(deid, item)).collect())
        .unwrap_or_default();
    DataElement::new(
        header.tag,
        VR::SQ,
        DataSetSequence::new(items, Length::UNDEFINED),
    )
}

/// Every UID of a UI element mapped; `None` (removed) when it is not a UI element with text.
fn remap_uids(deid: &Deidentifier, element: InMemElement) -> Option<InMemElement> {
    let tag = element.tag();
    if element.vr() != VR::UI || !matches!(element.value(), Value::Primitive(_)) {
        return None;
    }
    if is_empty(&element) {
        return Some(empty(tag, VR::UI));
    }
    let uids = element.value().to_multi_str().ok()?;
    let mapped: Vec<String> = uids
        .iter()
        .map(|uid| {
            if trimmed(uid).is_empty() {
                String::new()
            } else {
                deid.map_uid(uid)
            }
        })
        .collect();
    Some(DataElement::new(
        tag,
        VR::UI,
        PrimitiveValue::Strs(mapped.into_iter().collect()),
    ))
}

/// Patient Identity Removed, De-identification Method and its code sequence.
fn mark(obj: &mut InMemDicomObject) {
    let (code, scheme, meaning) = METHOD_CODE;
    obj.put(DataElement::new(
        tags::PATIENT_IDENTITY_REMOVED,
        VR::CS,
        PrimitiveValue::from("YES"),
    ));
    obj.put(DataElement::new(
        tags::DEIDENTIFICATION_METHOD,
        VR::LO,
        PrimitiveValue::from(METHOD),
    ));
    let item = InMemDicomObject::from_element_iter([
        DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(code)),
        DataElement::new(
            tags::CODING_SCHEME_DESIGNATOR,
            VR::SH,
            PrimitiveValue::from(scheme),
        ),
        DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning)),
    ]);
    obj.put(DataElement::new(
        tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
        VR::SQ,
        DataSetSequence::new(vec![item], Length::UNDEFINED),
    ));
}
