//! Building test instances and looking through de-identified ones.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::collections::HashSet;
use std::path::PathBuf;

use dicom_core::header::Header;
use dicom_core::value::{DataSetSequence, PixelFragmentSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Length, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::file::ReadPreamble;
use dicom_object::mem::InMemElement;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use hub_deid::Deidentifier;
use hub_deid::profile::{Action, basic_profile_action};

pub const SECRET: &[u8] = b"the hub's de-identification secret";
pub const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
/// EthnicGroup (0010,2160): retired in the dictionary, still in Table E.1-1.
pub const ETHNIC_GROUP: Tag = Tag(0x0010, 0x2160);

pub fn deid(share: u128) -> Deidentifier {
    Deidentifier::for_share(SECRET, uuid::Uuid::from_u128(share))
}

/// The UIDs of one built instance.
#[derive(Clone, Debug)]
pub struct Instance {
    pub study: String,
    pub series: String,
    pub sop: String,
    /// The SOP Instance UID its Referenced Image Sequence points at.
    pub references: String,
}

impl Instance {
    pub fn new(n: u32, references: u32) -> Instance {
        Instance {
            study: "1.2.826.0.1.3680043.8.498.1".into(),
            series: "1.2.826.0.1.3680043.8.498.1.2".into(),
            sop: format!("1.2.826.0.1.3680043.8.498.1.2.{n}"),
            references: format!("1.2.826.0.1.3680043.8.498.1.2.{references}"),
        }
    }
}

fn el(tag: Tag, vr: VR, value: &str) -> InMemElement {
    DataElement::new(tag, vr, PrimitiveValue::from(value))
}

fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> InMemElement {
    DataElement::new(tag, VR::SQ, DataSetSequence::new(items, Length::UNDEFINED))
}

/// A CT-like header full of what the Basic Profile removes, replaces or keeps.
fn ct_header(instance: &Instance) -> Vec<InMemElement> {
    vec![
        el(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100"),
        el(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\AXIAL"),
        el(tags::INSTANCE_CREATION_DATE, VR::DA, "20240102"),
        el(tags::INSTANCE_CREATION_TIME, VR::TM, "101112"),
        el(
            tags::INSTANCE_CREATOR_UID,
            VR::UI,
            "1.2.826.0.1.3680043.8.498.99",
        ),
        el(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE),
        el(tags::SOP_INSTANCE_UID, VR::UI, &instance.sop),
        el(tags::STUDY_DATE, VR::DA, "20240102"),
        el(tags::SERIES_DATE, VR::DA, "20240103"),
        el(tags::ACQUISITION_DATE, VR::DA, "20240104"),
        el(tags::CONTENT_DATE, VR::DA, "20240105"),
        el(tags::ACQUISITION_DATE_TIME, VR::DT, "20240104093000"),
        el(tags::STUDY_TIME, VR::TM, "093000"),
        el(tags::SERIES_TIME, VR::TM, "093100"),
        el(tags::ACQUISITION_TIME, VR::TM, "093200"),
        el(tags::CONTENT_TIME, VR::TM, "093300"),
        el(tags::ACCESSION_NUMBER, VR::SH, "ACC-778899"),
        el(tags::MODALITY, VR::CS, "CT"),
        el(tags::MANUFACTURER, VR::LO, "ACME Medical Systems"),
        el(tags::INSTITUTION_NAME, VR::LO, "St. Elsewhere Hospital"),
        el(
            tags::INSTITUTION_ADDRESS,
            VR::ST,
            "1 Hospital Road, Springfield",
        ),
        el(tags::REFERRING_PHYSICIAN_NAME, VR::PN, "Kildare^James^^Dr"),
        seq(
            tags::REFERRING_PHYSICIAN_IDENTIFICATION_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([
                el(tags::PERSON_ADDRESS, VR::ST, "12 Doctor Lane, Springfield"),
                el(tags::INSTITUTION_NAME, VR::LO, "Kildare Private Practice"),
            ])],
        ),
        el(tags::STATION_NAME, VR::SH, "CT-ROOM-3"),
        el(tags::STUDY_DESCRIPTION, VR::LO, "CT CHEST FOR JANE DOE"),
        el(tags::SERIES_DESCRIPTION, VR::LO, "AXIAL 5MM DR HOUSE"),
        el(
            tags::INSTITUTIONAL_DEPARTMENT_NAME,
            VR::LO,
            "Radiology East Wing",
        ),
        el(tags::PHYSICIANS_OF_RECORD, VR::PN, "House^Gregory"),
        el(tags::PERFORMING_PHYSICIAN_NAME, VR::PN, "Wilson^James"),
        seq(
            tags::PERFORMING_PHYSICIAN_IDENTIFICATION_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([el(
                tags::PERSON_TELEPHONE_NUMBERS,
                VR::LO,
                "555-0199-WILSON",
            )])],
        ),
        el(tags::NAME_OF_PHYSICIANS_READING_STUDY, VR::PN, "Cuddy^Lisa"),
        el(tags::OPERATORS_NAME, VR::PN, "Operator^Olga"),
        el(tags::REQUESTING_PHYSICIAN, VR::PN, "Foreman^Eric"),
        seq(
            tags::REFERENCED_IMAGE_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([
                el(
                    tags::REFERENCED_SOP_CLASS_UID,
                    VR::UI,
                    uids::CT_IMAGE_STORAGE,
                ),
                el(
                    tags::REFERENCED_SOP_INSTANCE_UID,
                    VR::UI,
                    &instance.references,
                ),
            ])],
        ),
        el(tags::PATIENT_NAME, VR::PN, "Doe^Jane"),
        el(tags::PATIENT_ID, VR::LO, "PID-12345"),
        el(tags::PATIENT_BIRTH_DATE, VR::DA, "19700131"),
        el(tags::PATIENT_SEX, VR::CS, "F"),
        seq(
            tags::OTHER_PATIENT_I_DS_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([
                el(tags::PATIENT_ID, VR::LO, "OTHER-99999"),
                el(tags::TYPE_OF_PATIENT_ID, VR::CS, "TEXT"),
            ])],
        ),
        el(tags::PATIENT_AGE, VR::AS, "054Y"),
        el(tags::PATIENT_WEIGHT, VR::DS, "70"),
        el(tags::PATIENT_ADDRESS, VR::LO, "42 Main Street, Springfield"),
        el(tags::PATIENT_TELEPHONE_NUMBERS, VR::SH, "555-0100"),
        el(tags::PATIENT_MOTHER_BIRTH_NAME, VR::PN, "Smith^Mary"),
        el(tags::MILITARY_RANK, VR::LO, "Captain"),
        el(ETHNIC_GROUP, VR::SH, "Martian"),
        el(tags::OCCUPATION, VR::SH, "Astronaut"),
        el(tags::PATIENT_RELIGIOUS_PREFERENCE, VR::LO, "Pastafarian"),
        el(
            tags::ADDITIONAL_PATIENT_HISTORY,
            VR::LT,
            "Fell off a ladder in 2019",
        ),
        el(
            tags::PATIENT_COMMENTS,
            VR::LT,
            "Prefers morning appointments",
        ),
        el(tags::DEVICE_SERIAL_NUMBER, VR::LO, "SN-4242-XYZ"),
        el(tags::PROTOCOL_NAME, VR::LO, "CHEST ROUTINE DR HOUSE"),
        el(tags::STUDY_INSTANCE_UID, VR::UI, &instance.study),
        el(tags::SERIES_INSTANCE_UID, VR::UI, &instance.series),
        el(tags::STUDY_ID, VR::SH, "STUDY-77"),
        el(tags::SERIES_NUMBER, VR::IS, "1"),
        el(tags::INSTANCE_NUMBER, VR::IS, "1"),
        el(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            "1.2.826.0.1.3680043.8.498.1.9",
        ),
        el(
            tags::SYNCHRONIZATION_FRAME_OF_REFERENCE_UID,
            VR::UI,
            "1.2.826.0.1.3680043.8.498.1.10",
        ),
        el(
            tags::CONCATENATION_UID,
            VR::UI,
            "1.2.826.0.1.3680043.8.498.1.11",
        ),
        el(
            tags::IRRADIATION_EVENT_UID,
            VR::UI,
            "1.2.826.0.1.3680043.8.498.1.12",
        ),
        el(
            tags::STORAGE_MEDIA_FILE_SET_UID,
            VR::UI,
            "1.2.826.0.1.3680043.8.498.1.13",
        ),
        seq(
            tags::REQUEST_ATTRIBUTES_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([
                el(tags::REQUESTED_PROCEDURE_ID, VR::SH, "RP-31337"),
                el(tags::SCHEDULED_PROCEDURE_STEP_ID, VR::SH, "SPS-31337"),
            ])],
        ),
        el(tags::IMAGE_COMMENTS, VR::LT, "Patient Jane was anxious"),
        el(Tag(0x0009, 0x0010), VR::LO, "ACME_PRIVATE"),
        el(Tag(0x0009, 0x1001), VR::LO, "Doe Jane private copy"),
        el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(4u16)),
        DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(4u16)),
        DataElement::new(Tag(0x6000, 0x0010), VR::US, PrimitiveValue::from(4u16)),
        DataElement::new(Tag(0x6000, 0x0011), VR::US, PrimitiveValue::from(4u16)),
        DataElement::new(
            Tag(0x6000, 0x3000),
            VR::OW,
            PrimitiveValue::U8([0xFFu8, 0, 0xFF, 0][..].into()),
        ),
        el(Tag(0x6000, 0x4000), VR::LT, "Overlay drawn by Dr House"),
        DataElement::new(
            Tag(0x5000, 0x3000),
            VR::OB,
            PrimitiveValue::U8([1u8, 2, 3, 4][..].into()),
        ),
    ]
}

/// Little-endian 16-bit samples whose two bytes differ, so a byte swap would show.
pub fn native_pixels() -> Vec<u16> {
    (0..16u16).map(|i| 0x1234 + i * 0x0101).collect()
}

fn pixel_description(bits: u16) -> Vec<InMemElement> {
    vec![
        DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(bits)),
        DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(bits)),
        DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(bits - 1)),
        DataElement::new(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0u16),
        ),
    ]
}

fn write(elements: Vec<InMemElement>, transfer_syntax: &str) -> Vec<u8> {
    let obj = InMemDicomObject::from_element_iter(elements);
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(transfer_syntax)
                .source_application_entity_title("HOSPITAL_PACS"),
        )
        .expect("meta");
    let mut out = Vec::new();
    file.write_all(&mut out).expect("write");
    out
}

/// A CT instance in Explicit VR Little Endian with 4×4 16-bit native pixel data.
pub fn ct_native(instance: &Instance) -> Vec<u8> {
    ct_native_with(instance, Vec::new())
}

/// [`ct_native`] with more elements.
pub fn ct_native_with(instance: &Instance, extra: Vec<InMemElement>) -> Vec<u8> {
    let mut elements = ct_header(instance);
    elements.extend(extra);
    elements.extend(pixel_description(16));
    elements.push(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(native_pixels().into()),
    ));
    write(elements, uids::EXPLICIT_VR_LITTLE_ENDIAN)
}

/// The two "JPEG" frames of [`ct_encapsulated`] (opaque bytes: nothing here decodes them).
pub fn fragments() -> Vec<Vec<u8>> {
    vec![
        vec![0xFF, 0xD8, 0x01, 0x02, 0x03, 0x04, 0xFF, 0xD9],
        vec![0xFF, 0xD8, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0xFF, 0xD9],
    ]
}

/// The same header, two frames of encapsulated pixel data in JPEG Baseline, with a basic offset
/// table.
pub fn ct_encapsulated(instance: &Instance) -> Vec<u8> {
    let mut elements = ct_header(instance);
    elements.extend(pixel_description(8));
    elements.push(el(tags::NUMBER_OF_FRAMES, VR::IS, "2"));
    let frames = fragments();
    let offsets = vec![0u32, 8 + frames[0].len() as u32];
    elements.push(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        Value::PixelSequence(PixelFragmentSequence::new(offsets, frames)),
    ));
    write(elements, JPEG_BASELINE)
}

pub fn data_file(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The real files of tests/data.
pub const REAL_FILES: &[&str] = &[
    "CT_small.dcm",
    "MR_small_implicit.dcm",
    "JPEG2000.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
];

pub fn parse(bytes: &[u8]) -> DefaultDicomObject {
    OpenFileOptions::new()
        .read_preamble(ReadPreamble::Auto)
        .from_reader(bytes)
        .expect("a readable Part 10 file")
}

/// The DICOM JSON of a file as ingest prepares it: every attribute before Pixel Data.
pub fn metadata_json(bytes: &[u8]) -> serde_json::Value {
    let obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Auto)
        .read_until(tags::PIXEL_DATA)
        .from_reader(bytes)
        .expect("a readable Part 10 file");
    dicom_json::to_value(&obj).expect("DICOM JSON")
}

pub fn trimmed(s: &str) -> &str {
    s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
}

/// One element met while walking a data set: where (tags from the top), its VR and its value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Seen {
    pub path: Vec<Tag>,
    pub vr: VR,
    pub value: String,
}

impl Seen {
    pub fn tag(&self) -> Tag {
        *self.path.last().expect("a path has a tag")
    }
}

/// Every primitive element of the data set, sequences walked into (pixel data left out).
pub fn walk(obj: &InMemDicomObject) -> Vec<Seen> {
    fn go(obj: &InMemDicomObject, path: &[Tag], out: &mut Vec<Seen>) {
        for element in obj {
            let mut here = path.to_vec();
            here.push(element.tag());
            match element.value() {
                Value::Sequence(seq) => {
                    for item in seq.items() {
                        go(item, &here, out);
                    }
                }
                Value::PixelSequence(_) => {}
                Value::Primitive(_) if element.tag() == tags::PIXEL_DATA => {}
                Value::Primitive(p) => out.push(Seen {
                    path: here,
                    vr: element.vr(),
                    value: trimmed(&p.to_str()).to_owned(),
                }),
            }
        }
    }
    let mut out = Vec::new();
    go(obj, &[], &mut out);
    out
}

/// Every tag met anywhere in the data set (sequences included).
pub fn all_tags(obj: &InMemDicomObject) -> HashSet<Tag> {
    fn go(obj: &InMemDicomObject, out: &mut HashSet<Tag>) {
        for element in obj {
            out.insert(element.tag());
            if let Value::Sequence(seq) = element.value() {
                for item in seq.items() {
                    go(item, out);
                }
            }
        }
    }
    let mut out = HashSet::new();
    go(obj, &mut out);
    out
}

/// True when a UID of this tag is to be replaced (U, or D on a UI element).
pub fn replaced_uid(seen: &Seen) -> bool {
    seen.vr == VR::UI
        && matches!(
            basic_profile_action(seen.tag()),
            Some(
                Action::Uid
                    | Action::Dummy
                    | Action::ZeroOrDummy
                    | Action::RemoveOrDummy
                    | Action::RemoveOrZeroOrDummy
            )
        )
}

/// Checks everything a de-identified file must satisfy against its original, for `deid`.
pub fn check_deidentified(deid: &Deidentifier, original: &[u8], output: &[u8], what: &str) {
    let before = parse(original);
    let after = parse(output);

    // Same transfer syntax; file meta written anew.
    assert_eq!(
        after.meta().transfer_syntax(),
        before.meta().transfer_syntax(),
        "{what}: transfer syntax"
    );
    assert_eq!(
        after.meta().source_application_entity_title(),
        None,
        "{what}"
    );
    assert!(output.starts_with(&[0u8; 128]), "{what}: preamble zeroed");
    let sop = before
        .get(tags::SOP_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(
        after.meta().media_storage_sop_instance_uid(),
        deid.map_uid(&sop),
        "{what}: MediaStorageSOPInstanceUID"
    );
    assert_eq!(
        trimmed(&after.get(tags::SOP_INSTANCE_UID).unwrap().to_str().unwrap()),
        deid.map_uid(&sop),
        "{what}: SOPInstanceUID"
    );

    let seen_before = walk(&before);
    let seen_after = walk(&after);
    let after_values: HashSet<(Tag, String)> = seen_after
        .iter()
        .map(|s| (s.tag(), s.value.clone()))
        .collect();

    // No attribute of the table keeps its original value, wherever it is.
    for s in &seen_before {
        if basic_profile_action(s.tag()).is_some() && !s.value.is_empty() {
            assert!(
                !after_values.contains(&(s.tag(), s.value.clone())),
                "{what}: {} at {:?} still holds {:?}",
                s.tag(),
                s.path,
                s.value
            );
        }
    }

    // Every UID in the output is either a mapped original or one the profile keeps (SOP classes,
    // transfer syntaxes); every original UID the profile replaces is gone from the bytes.
    let mapped: HashSet<String> = seen_before
        .iter()
        .filter(|s| replaced_uid(s))
        .flat_map(|s| {
            s.value
                .split('\\')
                .map(|u| deid.map_uid(u))
                .collect::<Vec<_>>()
        })
        .collect();
    let kept: HashSet<String> = seen_before
        .iter()
        .filter(|s| s.vr == VR::UI && basic_profile_action(s.tag()).is_none())
        .flat_map(|s| s.value.split('\\').map(str::to_owned).collect::<Vec<_>>())
        .collect();
    for s in seen_after.iter().filter(|s| s.vr == VR::UI) {
        for uid in s.value.split('\\').filter(|u| !u.is_empty()) {
            assert!(
                mapped.contains(uid) || kept.contains(uid),
                "{what}: {} at {:?} holds {uid}, neither mapped nor kept",
                s.tag(),
                s.path
            );
        }
    }
    for s in seen_before.iter().filter(|s| replaced_uid(s)) {
        for uid in s.value.split('\\').filter(|u| !u.is_empty()) {
            assert!(
                !contains(output, uid.as_bytes()),
                "{what}: original UID {uid} of {} still in the file",
                s.tag()
            );
        }
    }

    // Identifying text of the table's fixed rows is nowhere in the bytes (longer values only: a
    // short one could occur in the pixels by chance; private values are left out, they are
    // often numbers that kept attributes hold too).
    for s in &seen_before {
        if basic_profile_action(s.tag()).is_some()
            && s.tag().group() % 2 == 0
            && s.value.len() >= 6
            && s.vr != VR::UI
            && !after_values.iter().any(|(_, v)| v.contains(&s.value))
        {
            assert!(
                !contains(output, s.value.as_bytes()),
                "{what}: {:?} of {} still in the bytes",
                s.value,
                s.tag()
            );
        }
    }

    // No private attribute, curve, overlay data or overlay comment anywhere.
    for tag in all_tags(&after) {
        assert!(tag.group() % 2 == 0, "{what}: private {tag} left");
        assert_ne!(tag.group() & 0xFF00, 0x5000, "{what}: curve {tag} left");
        if tag.group() & 0xFF00 == 0x6000 {
            assert!(
                !matches!(tag.element(), 0x3000 | 0x4000),
                "{what}: overlay {tag} left"
            );
        }
    }

    // The patient is the share's pseudonym.
    let patient_id = before.get(tags::PATIENT_ID).map(|e| e.to_str().unwrap());
    if let Some(id) = patient_id.filter(|id| !trimmed(id).is_empty()) {
        let pseudonym = deid.pseudonym(&id);
        for tag in [tags::PATIENT_ID, tags::PATIENT_NAME] {
            assert_eq!(
                trimmed(&after.get(tag).unwrap().to_str().unwrap()),
                pseudonym,
                "{what}: {tag}"
            );
        }
    }

    // Marked as de-identified by the Basic Profile.
    assert_eq!(
        trimmed(
            &after
                .get(tags::PATIENT_IDENTITY_REMOVED)
                .unwrap()
                .to_str()
                .unwrap()
        ),
        "YES",
        "{what}"
    );
    let codes = after
        .get(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
        .unwrap()
        .items()
        .unwrap();
    assert_eq!(
        trimmed(&codes[0].get(tags::CODE_VALUE).unwrap().to_str().unwrap()),
        "113100",
        "{what}"
    );

    // Pixel data byte for byte.
    check_same_pixels(&before, &after, output, what);
}

pub fn check_same_pixels(
    before: &DefaultDicomObject,
    after: &DefaultDicomObject,
    output: &[u8],
    what: &str,
) {
    let (Some(b), Some(a)) = (before.get(tags::PIXEL_DATA), after.get(tags::PIXEL_DATA)) else {
        assert!(
            before.get(tags::PIXEL_DATA).is_none(),
            "{what}: pixel data lost"
        );
        return;
    };
    assert_eq!(a.vr(), b.vr(), "{what}: pixel data VR");
    match (b.value(), a.value()) {
        (Value::PixelSequence(b), Value::PixelSequence(a)) => {
            assert_eq!(a.offset_table(), b.offset_table(), "{what}: offset table");
            assert_eq!(a.fragments(), b.fragments(), "{what}: fragments");
            for fragment in b.fragments() {
                assert!(contains(output, fragment), "{what}: fragment bytes");
            }
        }
        (Value::Primitive(b), Value::Primitive(a)) => {
            let (b, a) = (b.to_bytes(), a.to_bytes());
            assert_eq!(a, b, "{what}: native pixel data");
            assert!(
                contains(output, &b),
                "{what}: native pixel bytes in the file"
            );
        }
        _ => panic!("{what}: pixel data changed form"),
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

pub fn get_str(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.get(tag)
        .map(|e| trimmed(&e.to_str().unwrap_or_default()).to_owned())
}
