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

/// kill -9 of `hub serve` while a STOW-RS part is streaming in leaves a staged upload; the next
/// start removes it before accepting anything (and the blobs of a batch cut off between their
/// move and their event), and what was stored before is intact.
#[test]
fn a_crash_mid_upload_leaves_no_staged_blob_after_the_restart_and_loses_nothing_stored() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let ct = ct_small();
    let boundary = "crashboundary";
    let post = |body_len: usize| {
        format!(
            "POST /dicom-web/studies HTTP/1.1\r\nHost: hub\r\nContent-Type: multipart/related; \
             type=\"application/dicom\"; boundary={boundary}\r\nAccept: application/dicom+json\r\n\
             Content-Length: {body_len}\r\nConnection: close\r\n\r\n"
        )
    };
    let part_head = format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n");

    // One instance stored whole.
    let server = Server::start(&data);
    let tail = format!("\r\n--{boundary}--\r\n");
    let body_len = part_head.len() + ct.len() + tail.len();
    let mut s = std::net::TcpStream::connect(server.addr).expect("connect");
    s.write_all(post(body_len).as_bytes()).expect("head");
    s.write_all(part_head.as_bytes()).expect("part head");
    s.write_all(&ct).expect("part");
    s.write_all(tail.as_bytes()).expect("tail");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The embedded hub keeps its intents as rows beside the blobs, not a file per batch.
    assert!(
        data.join("blobs/intents.sqlite").is_file() && !data.join("blobs/intents").exists(),
        "intents: {:?}",
        walk(&data.join("blobs"))
    );

    // A second request, 20 MB announced, cut off by kill -9 after 12 MB of its one part.
    let mut s = std::net::TcpStream::connect(server.addr).expect("connect");
    s.write_all(post(20 << 20).as_bytes()).expect("head");
    s.write_all(part_head.as_bytes()).expect("part head");
    s.write_all(&ct[..ct.len() - 1000])
        .expect("most of a header");
    let filler = vec![0u8; 1 << 20];
    for _ in 0..12 {
        s.write_all(&filler).expect("pixels streaming in");
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut server = server;
    server.child.kill().expect("kill -9");
    server.child.wait().expect("reaped");
    drop(s);
    let staging = data.join("blobs/staging");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !left.is_empty(),
        "the crash left a staged upload to sweep (else this test shows nothing)"
    );
    // What a crash between moving a batch's blob to its final key and appending its event
    // leaves: the blob, and the intent naming it (no event names it).
    let orphan_key = "studies/9.9.9/9.9.9.1/9.9.9.1.1.0123456789abcdef.dcm";
    let orphan = data.join("blobs").join(orphan_key);
    std::fs::create_dir_all(orphan.parent().expect("parent")).expect("dirs");
    std::fs::write(&orphan, &ct).expect("orphan blob");
    std::fs::create_dir_all(data.join("blobs/intents")).expect("intents");
    std::fs::write(
        data.join("blobs/intents/crashed-batch.json"),
        serde_json::json!({"study_uid": "9.9.9", "instances": [{
            "sop_instance_uid": "9.9.9.1.1",
            "sha256": format!("0123456789abcdef{}", "0".repeat(48)),
            "blob_key": orphan_key}]})
        .to_string(),
    )
    .expect("intent");

    let server = Server::start(&data);
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "staged uploads after the restart: {left:?}"
    );
    assert!(
        !orphan.exists() && walk(&data.join("blobs/intents")).is_empty(),
        "the start settled the intent: the blob no event names is gone"
    );
    // The catalog catches up with the log after the start.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let studies = loop {
        // No token: the development identity, a hospital_admin of the owner.
        let (status, body) = hub_e2e::http_get(server.addr, "/dicom-web/studies").expect("QIDO");
        assert_eq!(status, 200, "{body}");
        let studies: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        if !studies.as_array().is_none_or(Vec::is_empty) || std::time::Instant::now() > deadline {
            break studies;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(
        studies.as_array().map(Vec::len),
        Some(1),
        "the study stored before the crash, and nothing of the cut-off one: {studies}"
    );
    let blobs: Vec<_> = walk(&data.join("blobs/studies"));
    assert_eq!(blobs.iter().filter(|p| p.ends_with(".dcm")).count(), 1);
    let original = blobs
        .iter()
        .find(|p| p.ends_with(".dcm"))
        .map(|p| std::fs::read(p).expect("original"));
    assert_eq!(original.as_deref(), Some(ct.as_slice()), "byte-exact");
    assert!(server.stop().success());
}

/// Every file under `dir`, as path strings.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// pydicom's CT_small.dcm, as the real file a test pushes.
fn ct_small() -> Vec<u8> {
    let file = Command::new(python())
        .args([
            "-c",
            "from pydicom.data import get_testdata_file; print(get_testdata_file('CT_small.dcm'))",
        ])
        .output()
        .expect("python");
    let path = String::from_utf8_lossy(&file.stdout).trim().to_owned();
    std::fs::read(&path).expect("pydicom's CT_small.dcm")
}

/// Behind a reverse proxy (TLS and a path prefix), the URLs in answers are the configured
/// `public_url`, not the Host header the proxy forwards; without it, the Host header.
#[test]
fn behind_a_proxy_retrieve_and_bulk_data_urls_start_with_the_public_url() {
    use std::io::{Read, Write};
    let ct = ct_small();
    let stow = |addr: std::net::SocketAddr| -> serde_json::Value {
        let boundary = "proxyboundary";
        let head = format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n");
        let tail = format!("\r\n--{boundary}--\r\n");
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        write!(
            s,
            "POST /dicom-web/studies HTTP/1.1\r\nHost: hub-internal:8080\r\nContent-Type: \
             multipart/related; type=\"application/dicom\"; boundary={boundary}\r\nAccept: \
             application/dicom+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            head.len() + ct.len() + tail.len()
        )
        .expect("head");
        s.write_all(head.as_bytes()).expect("part head");
        s.write_all(&ct).expect("part");
        s.write_all(tail.as_bytes()).expect("tail");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).expect("STOW-RS answers DICOM JSON")
    };
    let retrieve_url = |json: &serde_json::Value| -> String {
        json["00081190"]["Value"][0]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let public = "https://imaging.example.org/hub";
    let server = Server::start_with(
        &dir.path().join("data"),
        &["--public-url", "https://imaging.example.org/hub/"],
    );
    let stored = stow(server.addr);
    let instance_url = retrieve_url(&stored["00081199"]["Value"][0]);
    assert!(
        instance_url.starts_with(&format!("{public}/dicom-web/studies/"))
            && instance_url.contains("/instances/"),
        "the instance's RetrieveURL: {instance_url}"
    );
    // No token: the development identity (the operator's token reads no study data).
    let get = |path: &str| -> serde_json::Value {
        let (status, body) = hub_e2e::http_get(server.addr, path).expect("GET");
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).expect("JSON")
    };
    let found = get("/dicom-web/studies");
    let study_url = retrieve_url(&found[0]);
    assert!(
        study_url.starts_with(&format!("{public}/dicom-web/studies/"))
            && instance_url.starts_with(&study_url),
        "QIDO-RS: {found}"
    );
    let path = instance_url.trim_start_matches(public);
    let metadata = get(&format!("{path}/metadata"));
    let bulk = metadata[0]["7FE00010"]["BulkDataURI"]
        .as_str()
        .unwrap_or_default();
    assert!(
        bulk.starts_with(&format!("{public}{path}/bulkdata/")),
        "the pixel data's BulkDataURI: {bulk}"
    );
    assert!(server.stop().success());

    // Without `public_url`: the Host header of the request.
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    let stored = stow(server.addr);
    let url = retrieve_url(&stored["00081199"]["Value"][0]);
    assert!(
        url.starts_with("http://hub-internal:8080/dicom-web/studies/"),
        "{url}"
    );
    assert!(server.stop().success());
}
