//! The OHIF viewer v3, a real browser client, against `hub serve`: pydicom's real test files are
//! stored with dicomweb-client, then headless Chromium (driven by selenium) opens OHIF's
//! prebuilt app on each study; OHIF runs its DICOMweb query sequence (QIDO-RS studies and series,
//! WADO-RS series metadata and frames) and the rendered canvas must show the image
//! (`tests/clients/ohif_viewer.py`). `tests/run.sh` installs Chromium, chromedriver and selenium,
//! fetches the `@ohif/app` npm package into `target/ohif/` and sets `HUB_TEST_PYTHON` and
//! `HUB_TEST_OHIF_DIST`.

use std::process::Command;

use hub_e2e::Server;

fn python() -> String {
    std::env::var("HUB_TEST_PYTHON").expect(
        "HUB_TEST_PYTHON is not set: run the suite with tests/run.sh, which installs pydicom, \
         dicomweb-client, requests and selenium in a virtual environment and sets it",
    )
}

fn ohif_dist() -> String {
    let dir = std::env::var("HUB_TEST_OHIF_DIST").expect(
        "HUB_TEST_OHIF_DIST is not set: run the suite with tests/run.sh, which fetches the OHIF \
         viewer (npm package @ohif/app) into target/ohif/dist and sets it",
    );
    assert!(
        std::path::Path::new(&dir).join("index.html").exists(),
        "HUB_TEST_OHIF_DIST={dir} has no index.html: it must be the dist directory of the \
         @ohif/app npm package (tests/run.sh fetches it into target/ohif/dist)"
    );
    dir
}

#[test]
fn the_ohif_viewer_queries_the_hub_and_renders_the_images() {
    let dist = ohif_dist();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/ohif_viewer.py");
    let out = Command::new(python())
        .arg(script)
        .arg(format!("http://{}/dicom-web", server.addr))
        .arg(&dist)
        .output()
        .expect("run the viewer script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "viewer checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"));
    assert!(server.stop().success());
}
