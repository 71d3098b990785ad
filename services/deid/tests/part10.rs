//! `Deidentifier::part10` on built and real Part 10 files.

mod support;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use hub_deid::DeidError;
use support::*;

fn referenced_sop(obj: &dicom_object::InMemDicomObject, sequence: Tag) -> String {
    let items = obj.get(sequence).expect("sequence kept").items().unwrap();
    get_str(&items[0], tags::REFERENCED_SOP_INSTANCE_UID).expect("reference kept")
}

#[test]
fn built_ct_instance_is_deidentified_per_the_table() {
    let deid = deid(1);
    let instance = Instance::new(1, 2);
    let original = ct_native(&instance);
    let output = deid.part10(&original).expect("de-identified");
    check_deidentified(&deid, &original, &output, "built CT");

    let after = parse(&output);
    let value = |tag| get_str(&after, tag);
    // Z: present and empty.
    for tag in [
        tags::STUDY_DATE,
        tags::STUDY_TIME,
        tags::ACCESSION_NUMBER,
        tags::REFERRING_PHYSICIAN_NAME,
        tags::PATIENT_BIRTH_DATE,
        tags::PATIENT_SEX,
        tags::STUDY_ID,
        tags::ACQUISITION_DATE, // X/Z
        tags::ACQUISITION_TIME, // X/Z
    ] {
        assert_eq!(value(tag).as_deref(), Some(""), "{tag}");
    }
    // D and the combinations that allow it: the dummies.
    assert_eq!(value(tags::SERIES_DATE).as_deref(), Some("19000101"));
    assert_eq!(value(tags::CONTENT_DATE).as_deref(), Some("19000101"));
    assert_eq!(
        value(tags::INSTANCE_CREATION_DATE).as_deref(),
        Some("19000101")
    );
    assert_eq!(value(tags::SERIES_TIME).as_deref(), Some("000000"));
    assert_eq!(value(tags::CONTENT_TIME).as_deref(), Some("000000"));
    assert_eq!(
        value(tags::ACQUISITION_DATE_TIME).as_deref(),
        Some("19000101000000")
    );
    for tag in [
        tags::INSTITUTION_NAME,
        tags::STATION_NAME,
        tags::OPERATORS_NAME,
        tags::DEVICE_SERIAL_NUMBER,
        tags::PROTOCOL_NAME,
    ] {
        assert_eq!(value(tag).as_deref(), Some("ANONYMIZED"), "{tag}");
    }
    // X: gone.
    for tag in [
        tags::PATIENT_ADDRESS,
        tags::PATIENT_TELEPHONE_NUMBERS,
        tags::PATIENT_MOTHER_BIRTH_NAME,
        tags::MILITARY_RANK,
        ETHNIC_GROUP,
        tags::OCCUPATION,
        tags::PATIENT_RELIGIOUS_PREFERENCE,
        tags::ADDITIONAL_PATIENT_HISTORY,
        tags::PATIENT_COMMENTS,
        tags::PATIENT_AGE,
        tags::PATIENT_WEIGHT,
        tags::OTHER_PATIENT_I_DS_SEQUENCE,
        tags::INSTITUTION_ADDRESS,
        tags::INSTITUTIONAL_DEPARTMENT_NAME,
        tags::REFERRING_PHYSICIAN_IDENTIFICATION_SEQUENCE,
        tags::PHYSICIANS_OF_RECORD,
        tags::PERFORMING_PHYSICIAN_NAME,
        tags::PERFORMING_PHYSICIAN_IDENTIFICATION_SEQUENCE,
        tags::NAME_OF_PHYSICIANS_READING_STUDY,
        tags::REQUESTING_PHYSICIAN,
        tags::STUDY_DESCRIPTION,
        tags::SERIES_DESCRIPTION,
        tags::IMAGE_COMMENTS,
        tags::REQUEST_ATTRIBUTES_SEQUENCE,
        Tag(0x0009, 0x0010),
        Tag(0x0009, 0x1001),
        Tag(0x6000, 0x3000),
        Tag(0x6000, 0x4000),
        Tag(0x5000, 0x3000),
    ] {
        assert!(after.get(tag).is_none(), "{tag} should be removed");
    }
    // U: every UID replaced by its mapping.
    for (tag, original) in [
        (tags::STUDY_INSTANCE_UID, instance.study.as_str()),
        (tags::SERIES_INSTANCE_UID, &instance.series),
        (tags::SOP_INSTANCE_UID, &instance.sop),
        (
            tags::FRAME_OF_REFERENCE_UID,
            "1.2.826.0.1.3680043.8.498.1.9",
        ),
        (
            tags::SYNCHRONIZATION_FRAME_OF_REFERENCE_UID,
            "1.2.826.0.1.3680043.8.498.1.10",
        ),
        (tags::CONCATENATION_UID, "1.2.826.0.1.3680043.8.498.1.11"),
        (
            tags::IRRADIATION_EVENT_UID,
            "1.2.826.0.1.3680043.8.498.1.12",
        ),
        (
            tags::STORAGE_MEDIA_FILE_SET_UID,
            "1.2.826.0.1.3680043.8.498.1.13",
        ),
        (tags::INSTANCE_CREATOR_UID, "1.2.826.0.1.3680043.8.498.99"),
    ] {
        assert_eq!(value(tag), Some(deid.map_uid(original)), "{tag}");
    }
    assert_eq!(
        referenced_sop(&after, tags::REFERENCED_IMAGE_SEQUENCE),
        deid.map_uid(&instance.references)
    );
    // Not in the table: kept.
    assert_eq!(
        value(tags::MANUFACTURER).as_deref(),
        Some("ACME Medical Systems")
    );
    assert_eq!(value(tags::MODALITY).as_deref(), Some("CT"));
    assert_eq!(
        value(tags::SOP_CLASS_UID).as_deref(),
        Some("1.2.840.10008.5.1.4.1.1.2")
    );
    assert!(
        after.get(Tag(0x6000, 0x0010)).is_some(),
        "overlay rows kept"
    );
    assert_eq!(
        value(tags::DEIDENTIFICATION_METHOD).as_deref(),
        Some("PS3.15 Annex E Basic Application Confidentiality Profile")
    );
}

#[test]
fn instances_of_one_share_agree_and_references_between_them_resolve() {
    let deid = deid(1);
    let a = deid.part10(&ct_native(&Instance::new(1, 2))).unwrap();
    let b = deid.part10(&ct_native(&Instance::new(2, 1))).unwrap();
    let (a, b) = (parse(&a), parse(&b));
    for tag in [
        tags::STUDY_INSTANCE_UID,
        tags::SERIES_INSTANCE_UID,
        tags::FRAME_OF_REFERENCE_UID,
        tags::PATIENT_ID,
        tags::PATIENT_NAME,
    ] {
        assert_eq!(get_str(&a, tag), get_str(&b, tag), "{tag}");
    }
    assert_ne!(
        get_str(&a, tags::SOP_INSTANCE_UID),
        get_str(&b, tags::SOP_INSTANCE_UID)
    );
    assert_eq!(
        Some(referenced_sop(&a, tags::REFERENCED_IMAGE_SEQUENCE)),
        get_str(&b, tags::SOP_INSTANCE_UID),
        "A's reference to B is B's new SOP Instance UID"
    );
    assert_eq!(
        Some(referenced_sop(&b, tags::REFERENCED_IMAGE_SEQUENCE)),
        get_str(&a, tags::SOP_INSTANCE_UID)
    );
}

#[test]
fn another_share_maps_every_uid_and_the_patient_differently() {
    let original = ct_native(&Instance::new(1, 2));
    let one = parse(&deid(1).part10(&original).unwrap());
    let two = parse(&deid(2).part10(&original).unwrap());
    for tag in [
        tags::STUDY_INSTANCE_UID,
        tags::SERIES_INSTANCE_UID,
        tags::SOP_INSTANCE_UID,
        tags::FRAME_OF_REFERENCE_UID,
        tags::PATIENT_ID,
        tags::PATIENT_NAME,
    ] {
        assert_ne!(get_str(&one, tag), get_str(&two, tag), "{tag}");
    }
    assert_ne!(
        referenced_sop(&one, tags::REFERENCED_IMAGE_SEQUENCE),
        referenced_sop(&two, tags::REFERENCED_IMAGE_SEQUENCE)
    );
    assert_ne!(
        one.meta().media_storage_sop_instance_uid(),
        two.meta().media_storage_sop_instance_uid()
    );
}

#[test]
fn native_pixel_data_is_kept_byte_for_byte() {
    let original = ct_native(&Instance::new(1, 2));
    let output = deid(1).part10(&original).unwrap();
    let after = parse(&output);
    let expected: Vec<u8> = native_pixels()
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let pixels = after.get(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    assert_eq!(&pixels[..], &expected[..]);
    assert!(contains(&output, &expected));
    assert_eq!(after.meta().transfer_syntax(), "1.2.840.10008.1.2.1");
}

#[test]
fn encapsulated_pixel_data_is_kept_byte_for_byte() {
    let deid = deid(1);
    let original = ct_encapsulated(&Instance::new(1, 2));
    let output = deid.part10(&original).expect("de-identified");
    check_deidentified(&deid, &original, &output, "built encapsulated CT");
    let after = parse(&output);
    assert_eq!(after.meta().transfer_syntax(), JPEG_BASELINE);
    let pixels = after.get(tags::PIXEL_DATA).unwrap();
    assert_eq!(pixels.fragments().unwrap(), &fragments()[..]);
    assert_eq!(pixels.offset_table().unwrap(), &[0, 16][..]);
}

#[test]
fn real_files_are_deidentified() {
    let deid = deid(7);
    for name in REAL_FILES {
        let original = data_file(name);
        let output = deid
            .part10(&original)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        check_deidentified(&deid, &original, &output, name);
    }
}

#[test]
fn real_file_references_are_mapped_and_private_names_gone() {
    let deid = deid(7);
    let original = data_file("JPEG2000.dcm");
    let before = parse(&original);
    let after = parse(&deid.part10(&original).unwrap());
    assert_eq!(
        referenced_sop(&after, tags::SOURCE_IMAGE_SEQUENCE),
        deid.map_uid(&referenced_sop(&before, tags::SOURCE_IMAGE_SEQUENCE))
    );
    // The GE private group holds a patient name and a UID.
    assert!(before.get(Tag(0x0009, 0x1040)).is_some());
    assert!(after.get(Tag(0x0009, 0x1040)).is_none());
    assert_eq!(after.meta().transfer_syntax(), "1.2.840.10008.1.2.4.91");
}

/// Referenced Series Sequence (0008,1115) sent as UN by a sender that did not know its VR: one
/// implicit VR little endian item holding a Referenced SOP Instance UID.
fn referenced_series_as_un(uid: &str) -> dicom_object::mem::InMemElement {
    let mut value = uid.as_bytes().to_vec();
    value.resize(value.len().next_multiple_of(2), 0);
    let mut inner = vec![0x08, 0x00, 0x55, 0x11];
    inner.extend((value.len() as u32).to_le_bytes());
    inner.extend(value);
    let mut item = vec![0xFE, 0xFF, 0x00, 0xE0];
    item.extend((inner.len() as u32).to_le_bytes());
    item.extend(inner);
    dicom_core::DataElement::new(
        tags::REFERENCED_SERIES_SEQUENCE,
        dicom_core::VR::UN,
        dicom_core::PrimitiveValue::U8(item.into()),
    )
}

#[test]
fn a_sequence_sent_as_un_does_not_carry_original_uids_through() {
    let deid = deid(1);
    let hidden = "1.2.826.0.1.3680043.8.498.4242";
    let original = ct_native_with(&Instance::new(1, 2), vec![referenced_series_as_un(hidden)]);
    assert!(contains(&original, hidden.as_bytes()));
    let output = deid.part10(&original).unwrap();
    assert!(
        !contains(&output, hidden.as_bytes()),
        "original UID inside UN"
    );
    let after = parse(&output);
    if let Some(element) = after.get(tags::REFERENCED_SERIES_SEQUENCE) {
        // A reader that parses UN sequences into items: then the UID inside is mapped.
        assert_eq!(
            referenced_sop(&after, tags::REFERENCED_SERIES_SEQUENCE),
            deid.map_uid(hidden),
            "{element:?}"
        );
    }
}

#[test]
fn the_same_file_gives_the_same_bytes() {
    let original = data_file("CT_small.dcm");
    assert_eq!(
        deid(3).part10(&original).unwrap(),
        deid(3).part10(&original).unwrap()
    );
}

#[test]
fn the_output_is_a_readable_part10_file_again() {
    let deid = deid(1);
    let original = data_file("CT_small.dcm");
    let once = deid.part10(&original).unwrap();
    let twice = deid
        .part10(&once)
        .expect("the output is a readable Part 10 file");
    let sop = get_str(&parse(&original), tags::SOP_INSTANCE_UID).unwrap();
    assert_eq!(
        get_str(&parse(&twice), tags::SOP_INSTANCE_UID),
        Some(deid.map_uid(&deid.map_uid(&sop)))
    );
}

#[test]
fn garbage_is_an_error_with_a_reason() {
    let mut preamble_then_garbage = vec![0u8; 128];
    preamble_then_garbage.extend_from_slice(b"DICM");
    preamble_then_garbage.extend((0..=255u8).cycle().take(600));
    let cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"not dicom at all".to_vec(),
        vec![0u8; 132],
        (0..=255u8).cycle().take(4096).collect(),
        preamble_then_garbage,
        b"{\"00100010\": {\"vr\": \"PN\"}}".to_vec(),
    ];
    for bytes in cases {
        match deid(1).part10(&bytes) {
            Err(e @ DeidError::Unreadable(_)) => {
                let reason = e.to_string();
                assert!(
                    reason.starts_with("not a readable DICOM Part 10 file: "),
                    "{reason}"
                );
                assert!(reason.len() > "not a readable DICOM Part 10 file: ".len());
            }
            other => panic!("{} bytes: expected Unreadable, got {other:?}", bytes.len()),
        }
    }
}

#[test]
fn truncated_files_are_errors_not_panics() {
    let deid = deid(1);
    let files = [
        ("built native", ct_native(&Instance::new(1, 2))),
        ("built encapsulated", ct_encapsulated(&Instance::new(1, 2))),
        ("CT_small.dcm", data_file("CT_small.dcm")),
        ("JPEG2000.dcm", data_file("JPEG2000.dcm")),
    ];
    for (name, bytes) in files {
        for cut in (0..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
            let result = deid.part10(&bytes[..cut]);
            if let Ok(output) = &result {
                // Cut at an element boundary: a shorter but well-formed file.
                parse(output);
            }
            // Within the preamble, the file meta group or a value, nothing readable is left.
            if cut < 300 || cut == bytes.len() - 1 {
                assert!(
                    matches!(result, Err(DeidError::Unreadable(_))),
                    "{name} cut at {cut}: {:?}",
                    result.map(|b| b.len())
                );
            }
        }
    }
}

#[test]
fn the_reason_says_where_reading_stopped() {
    let original = data_file("CT_small.dcm");
    let Err(e) = deid(1).part10(&original[..original.len() / 2]) else {
        panic!("a file cut in half is not readable");
    };
    let reason = e.to_string();
    assert!(reason.contains("position"), "{reason}");
}
