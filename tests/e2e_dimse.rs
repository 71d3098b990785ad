//! Real DIMSE clients (pynetdicom, dcmtk echoscu/storescu/dcmsend) push real files into
//! `hub serve` over C-STORE (`tests/clients/dimse_push.py`), and AE-title mapping is enforced.

use std::process::Command;

use hub_e2e::Server;

fn python() -> String {
    std::env::var("HUB_TEST_PYTHON").expect(
        "HUB_TEST_PYTHON is not set: run the suite with tests/run.sh, which installs pydicom, \
         pynetdicom and requests in a virtual environment and sets it",
    )
}

#[test]
fn dcmtk_and_pynetdicom_push_real_files_that_are_stored_as_received() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/dimse_push.py");
    let out = Command::new(python())
        .arg(script)
        .arg(server.dimse.ip().to_string())
        .arg(server.dimse.port().to_string())
        .arg(format!("http://{}/dicom-web", server.addr))
        .arg(dir.path())
        .env("HUB_OPERATOR_TOKEN", &server.operator)
        .output()
        .expect("run the DIMSE client script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "DIMSE checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(server.stop().success());
}

#[test]
fn an_unmapped_calling_ae_title_is_refused_and_a_mapped_one_pushes_for_its_institution() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(
        &dir.path().join("data"),
        &["--dimse-ae-map", "CT01=hosp-north"],
    );
    let port = server.dimse.port().to_string();
    let refused = Command::new("echoscu")
        .args(["-aet", "INTRUDER", "-aec", "HUB", "127.0.0.1", &port])
        .output()
        .expect("echoscu (dcmtk) is installed by tests/run.sh");
    assert!(
        !refused.status.success(),
        "an unknown calling AE title is rejected"
    );
    let wrong_called = Command::new("echoscu")
        .args(["-aet", "CT01", "-aec", "NOT-HUB", "127.0.0.1", &port])
        .output()
        .expect("echoscu");
    assert!(
        !wrong_called.status.success(),
        "another called AE title is rejected"
    );

    let file = dir.path().join("ct.dcm");
    let status = Command::new(python())
        .args([
            "-c",
            "import sys, pydicom; from pydicom.data import get_testdata_file; \
             pydicom.dcmread(get_testdata_file('CT_small.dcm')).save_as(sys.argv[1])",
        ])
        .arg(&file)
        .status()
        .expect("python");
    assert!(status.success());
    let stored = Command::new("storescu")
        .args(["-aet", "CT01", "-aec", "HUB", "127.0.0.1", &port])
        .arg(&file)
        .output()
        .expect("storescu");
    assert!(
        stored.status.success(),
        "{}",
        String::from_utf8_lossy(&stored.stderr)
    );
    let page = server.get_json("/events?after=0&limit=10");
    let registered = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["event_type"] == "StudyRegistered")
        .expect("a study was registered");
    assert_eq!(registered["data"]["owner"], "hosp-north");
    assert_eq!(registered["metadata"]["actor"], "ae:CT01");
    assert!(server.stop().success());
}

/// Study-level C-FIND with pynetdicom and dcmtk `findscu` (`tests/clients/dimse_find.py`):
/// matching on each supported key, answers limited to what the calling AE's institution may see,
/// and refusals (0xA900 with the reason) for what cannot be answered.
#[test]
fn c_find_at_study_level_answers_what_the_calling_institution_may_see() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(
        &dir.path().join("data"),
        &["--dimse-ae-map", "CT01=hosp-a,CT02=hosp-b"],
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/dimse_find.py");
    let out = Command::new(python())
        .arg(script)
        .arg(server.dimse.ip().to_string())
        .arg(server.dimse.port().to_string())
        .output()
        .expect("run the C-FIND client script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "C-FIND checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all checks passed"));
    assert!(server.stop().success());
}
