//! `Deidentifier::json` on DICOM JSON made by dicom-json (as ingest makes it) and on QIDO-RS
//! results, and its agreement with `Deidentifier::part10`.

mod support;

use serde_json::{Value, json};
use support::*;

fn values(dataset: &Value, key: &str) -> Option<Value> {
    dataset.get(key)?.get("Value").cloned()
}

#[test]
fn metadata_of_a_file_and_the_deidentified_file_agree() {
    let deid = deid(5);
    let mut files: Vec<(String, Vec<u8>)> = REAL_FILES
        .iter()
        .map(|name| (name.to_string(), data_file(name)))
        .collect();
    files.push(("built native".into(), ct_native(&Instance::new(1, 2))));
    files.push((
        "built encapsulated".into(),
        ct_encapsulated(&Instance::new(1, 2)),
    ));
    for (name, original) in files {
        let mut metadata = metadata_json(&original);
        deid.json(&mut metadata);
        let mut of_the_file = metadata_json(&deid.part10(&original).unwrap());
        // The de-identified file's meta group describes its writer (dicom-rs) and has a group
        // length; the de-identified metadata drops the original writer's description.
        for key in ["00020000", "00020012", "00020013"] {
            assert!(metadata.get(key).is_none(), "{name}: {key}");
            of_the_file.as_object_mut().unwrap().remove(key);
        }
        assert_eq!(
            metadata, of_the_file,
            "{name}: de-identified metadata differs from the metadata of the de-identified file"
        );
    }
}

#[test]
fn metadata_uids_are_those_of_the_deidentified_file() {
    let deid = deid(5);
    let instance = Instance::new(1, 2);
    let mut metadata = metadata_json(&ct_native(&instance));
    deid.json(&mut metadata);
    for (key, original) in [
        ("0020000D", &instance.study),
        ("0020000E", &instance.series),
        ("00080018", &instance.sop),
    ] {
        assert_eq!(
            values(&metadata, key),
            Some(json!([deid.map_uid(original)])),
            "{key}"
        );
    }
    let reference = &metadata["00081140"]["Value"][0]["00081155"]["Value"][0];
    assert_eq!(reference, &json!(deid.map_uid(&instance.references)));
    assert_eq!(
        values(&metadata, "00100010"),
        Some(json!([{"Alphabetic": deid.pseudonym("PID-12345")}]))
    );
    assert_eq!(
        values(&metadata, "00100020"),
        Some(json!([deid.pseudonym("PID-12345")]))
    );
    assert!(
        metadata.get("00101002").is_none(),
        "Other Patient IDs Sequence"
    );
    assert!(
        metadata.get("00020016").is_none(),
        "Source Application Entity Title"
    );
    assert_eq!(
        values(&metadata, "00020003"),
        Some(json!([deid.map_uid(&instance.sop)])),
        "Media Storage SOP Instance UID"
    );
    assert!(metadata.get("00091001").is_none(), "private");
    assert_eq!(values(&metadata, "00120062"), Some(json!(["YES"])));
    assert_eq!(
        metadata["00120064"]["Value"][0]["00080100"]["Value"],
        json!(["113100"])
    );
}

#[test]
fn qido_results_are_deidentified_attribute_by_attribute() {
    let deid = deid(9);
    let mut studies = json!([
        {
            "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
            "00080020": {"vr": "DA", "Value": ["20240102"]},
            "00080030": {"vr": "TM", "Value": ["093000"]},
            "00080050": {"vr": "SH", "Value": ["ACC-778899"]},
            "00080061": {"vr": "CS", "Value": ["CT", "SR"]},
            "00080090": {"vr": "PN", "Value": [{"Alphabetic": "Kildare^James"}]},
            "00081190": {"vr": "UR", "Value": ["http://hub/dicom-web/studies/1.2.3"]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
            "00100020": {"vr": "LO", "Value": ["PID-12345"]},
            "00100030": {"vr": "DA", "Value": ["19700131"]},
            "00100040": {"vr": "CS", "Value": ["F"]},
            "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
            "00200010": {"vr": "SH", "Value": ["STUDY-77"]},
            "00201206": {"vr": "IS", "Value": [2]},
            "00201208": {"vr": "IS", "Value": [40]}
        },
        {
            // A series-level result: only what is there is touched.
            "00080060": {"vr": "CS", "Value": ["CT"]},
            "0008103E": {"vr": "LO", "Value": ["AXIAL DR HOUSE"]},
            "0020000E": {"vr": "UI", "Value": ["1.2.3.4"]},
            "00200011": {"vr": "IS", "Value": [1]}
        }
    ]);
    deid.json(&mut studies);
    let study = &studies[0];
    assert_eq!(study["00080020"], json!({"vr": "DA"}), "Study Date: Z");
    assert_eq!(study["00080030"], json!({"vr": "TM"}));
    assert_eq!(study["00080050"], json!({"vr": "SH"}));
    assert_eq!(study["00080090"], json!({"vr": "PN"}));
    assert_eq!(study["00100030"], json!({"vr": "DA"}));
    assert_eq!(study["00100040"], json!({"vr": "CS"}));
    assert_eq!(study["00200010"], json!({"vr": "SH"}));
    assert!(
        study.get("00081190").is_none(),
        "Retrieve URL names the original UID"
    );
    assert_eq!(
        values(study, "0020000D"),
        Some(json!([deid.map_uid("1.2.3")]))
    );
    assert_eq!(
        values(study, "00100020"),
        Some(json!([deid.pseudonym("PID-12345")]))
    );
    assert_eq!(
        values(study, "00100010"),
        Some(json!([{"Alphabetic": deid.pseudonym("PID-12345")}]))
    );
    assert_eq!(values(study, "00080061"), Some(json!(["CT", "SR"])), "kept");
    assert_eq!(values(study, "00201208"), Some(json!([40])), "kept");
    assert_eq!(values(study, "00120062"), Some(json!(["YES"])));
    for result in studies.as_array().unwrap() {
        let keys: Vec<&String> = result.as_object().unwrap().keys().collect();
        assert!(keys.is_sorted(), "tags in ascending order: {keys:?}");
    }

    let series = &studies[1];
    assert_eq!(
        values(series, "0020000E"),
        Some(json!([deid.map_uid("1.2.3.4")]))
    );
    assert!(series.get("0008103E").is_none(), "Series Description: X");
    assert_eq!(values(series, "00080060"), Some(json!(["CT"])));
    assert!(
        series.get("00100010").is_none(),
        "nothing added but the markers"
    );
    assert_eq!(values(series, "00120062"), Some(json!(["YES"])));
}

#[test]
fn a_patient_without_id_is_named_by_the_pseudonym_of_the_name() {
    let deid = deid(9);
    let mut dataset = json!({
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}
    });
    deid.json(&mut dataset);
    assert_eq!(
        values(&dataset, "00100010"),
        Some(json!([{"Alphabetic": deid.pseudonym("Doe^Jane")}]))
    );
}

#[test]
fn odd_json_never_panics_and_table_attributes_it_cannot_read_are_removed() {
    let deid = deid(11);
    let shapes = [
        json!(null),
        json!(42),
        json!("00100010"),
        json!([1, "x", null, [[]], {"00100010": "Doe^Jane"}]),
        json!({}),
    ];
    for mut shape in shapes {
        deid.json(&mut shape);
    }

    let mut dataset = json!({
        "00100010": "Doe^Jane",                              // not an object
        "00100020": {"Value": ["PID-1"]},                    // no vr
        "00100030": {"vr": 7, "Value": ["19700131"]},        // vr not a string
        "00080080": {"vr": "LO", "Value": "St. Elsewhere"},  // Value not an array
        "00080050": {"vr": "ZZ", "Value": ["ACC-1"]},        // unknown vr
        "0020000D": {"vr": "UI", "Value": [1.5]},            // UID not a string
        "0020000E": {"vr": "LO", "Value": ["1.2.3"]},        // U on a non-UI element
        "00080018": {"vr": "UI", "Value": ["1.2.3", null]},  // a null among UIDs is kept null
        "00081140": {"vr": "SQ", "Value": [
            7,
            {"00081155": {"vr": "UI", "Value": ["1.2.4"]}, "00091001": {"vr": "LO", "Value": ["p"]}},
            {"00081155": "broken"}
        ]},
        "00081110": {"vr": "SQ", "Value": {"not": "an array"}},
        "00081115": {"vr": "UN", "InlineBinary": "/v8A4AAAAAA="},  // a sequence sent as UN
        "00400275": [1, 2, 3],
        "00091001": {"vr": "LO", "Value": ["private"]},
        "not a tag": {"vr": "LO", "Value": ["left alone"]},
        "00080060": {"Value": "weird but not in the table"},
        "00200013": 12
    });
    deid.json(&mut dataset);
    for removed in [
        "00100010", "00100020", "00100030", "00080080", "00080050", "0020000D", "0020000E",
        "00081110", "00081115", "00400275", "00091001",
    ] {
        assert!(
            dataset.get(removed).is_none(),
            "{removed}: {}",
            dataset[removed]
        );
    }
    assert_eq!(
        dataset["00080018"],
        json!({"vr": "UI", "Value": [deid.map_uid("1.2.3"), null]})
    );
    let items = &dataset["00081140"]["Value"];
    assert_eq!(items[0], json!(7), "a non-object item is left as it is");
    assert_eq!(
        items[1],
        json!({"00081155": {"vr": "UI", "Value": [deid.map_uid("1.2.4")]}})
    );
    assert_eq!(items[2], json!({}), "an unreadable reference is removed");
    assert_eq!(
        dataset["not a tag"],
        json!({"vr": "LO", "Value": ["left alone"]})
    );
    assert_eq!(
        dataset["00080060"],
        json!({"Value": "weird but not in the table"})
    );
    assert_eq!(dataset["00200013"], json!(12));
}
