//! Real DICOMweb clients (dicomweb-client, and plain HTTP with requests) push pydicom's real test
//! files into `hub serve`, query and retrieve them byte-exact, and try bad input
//! (`tests/clients/dicomweb_roundtrip.py`). `tests/run.sh` installs the Python packages in a
//! virtual environment and points `HUB_TEST_PYTHON` at it.

use std::process::Command;

use hub_e2e::Server;

fn python() -> String {
    std::env::var("HUB_TEST_PYTHON").expect(
        "HUB_TEST_PYTHON is not set: run the suite with tests/run.sh, which installs pydicom, \
         dicomweb-client and requests in a virtual environment and sets it",
    )
}

#[test]
fn real_dicomweb_clients_store_query_and_retrieve_real_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(&data);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/dicomweb_roundtrip.py");
    let out = Command::new(python())
        .arg(script)
        .arg(format!("http://{}/dicom-web", server.addr))
        .output()
        .expect("run the client script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "client checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"));

    // What the clients stored is in the log as study events, with blobs that exist.
    let page = server.get_json("/events?after=0&limit=1000");
    let events = page["events"].as_array().expect("events");
    let stored: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event_type"] == "InstancesStored")
        .collect();
    assert!(!stored.is_empty());
    for e in stored {
        assert_eq!(e["metadata"]["tenant"], "dev-hospital");
        for series in e["data"]["series"].as_array().expect("series") {
            for i in series["instances"].as_array().expect("instances") {
                let key = i["blob_key"].as_str().expect("blob key");
                let blob = data.join("blobs").join(key);
                let bytes = std::fs::read(&blob).expect("every event's blob exists");
                assert_eq!(bytes.len() as u64, i["size_bytes"].as_u64().expect("size"));
            }
        }
    }
    let staging = data.join("blobs").join("staging");
    let leftovers = std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0);
    assert_eq!(
        leftovers, 0,
        "no staged blob is left behind, accepted or refused"
    );
    assert!(server.stop().success());
}
