//! Restricted cross-institution sharing end to end: `hub serve` as deployed (every request needs
//! a bearer token), driven by a real DICOMweb client with real files and by the REST API
//! (`tests/clients/sharing_flow.py`): tokens, alliances, consent, grants, revocation on the very
//! next search, no existence leak, bad grants, patients, the commission, a de-identified share,
//! break-the-glass, expiry and the audit trail.

use std::process::Command;

use hub_e2e::{Server, hub_binary};

#[test]
fn sharing_rules_hold_for_real_clients_on_real_files() {
    let python = std::env::var("HUB_TEST_PYTHON").expect(
        "HUB_TEST_PYTHON is not set: run the suite with tests/run.sh, which installs pydicom, \
         dicomweb-client and requests in a virtual environment and sets it",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start_secure(&data, &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/sharing_flow.py");
    let out = Command::new(python)
        .arg(script)
        .arg(format!("http://{}/dicom-web", server.addr))
        .arg(hub_binary())
        .arg(&data)
        .output()
        .expect("run the client script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "sharing checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"));
}
