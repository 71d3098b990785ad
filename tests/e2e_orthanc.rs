//! A real Orthanc (Debian's `orthanc` and `orthanc-dicomweb` packages) pushes one study of five
//! instances to `hub serve` with its DICOMweb plugin, in one STOW-RS request, and reports success;
//! the hub then answers QIDO-RS for the study and WADO-RS with Orthanc's bytes
//! (`tests/clients/orthanc_push.py`). `tests/run.sh` installs Orthanc and the Python packages.

use std::path::{Path, PathBuf};
use std::process::Command;

use hub_e2e::Server;

fn python() -> String {
    std::env::var("HUB_TEST_PYTHON").expect(
        "HUB_TEST_PYTHON is not set: run the suite with tests/run.sh, which installs pydicom and \
         requests in a virtual environment and sets it",
    )
}

/// The `Orthanc` binary on PATH (the Debian package puts it in /usr/sbin, which a non-root PATH
/// may lack).
fn orthanc() -> PathBuf {
    let found = Command::new("which")
        .arg("Orthanc")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_file());
    let fallback = Path::new("/usr/sbin/Orthanc");
    match found {
        Some(path) => path,
        None if fallback.is_file() => fallback.to_path_buf(),
        None => panic!(
            "Orthanc is not installed: `apt-get install orthanc orthanc-dicomweb` \
             (tests/run.sh does)"
        ),
    }
}

/// Kills the Orthanc that the script started (its pid is in WORKDIR/orthanc.pid) if it is still
/// running when the test ends, however the test ends. The script stops Orthanc itself, and
/// Orthanc dies with the script; this is the last line of defence.
struct OrthancGuard {
    work: PathBuf,
}

impl Drop for OrthancGuard {
    fn drop(&mut self) {
        let Ok(pid) = std::fs::read_to_string(self.work.join("orthanc.pid")) else {
            return;
        };
        let pid = pid.trim();
        // Only that Orthanc: the process must still be the one started with our config file.
        let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .contains(&*self.work.join("orthanc.json").to_string_lossy())
            })
            .unwrap_or(false);
        if ours {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
}

#[test]
fn orthanc_pushes_a_study_to_the_hub_with_its_dicomweb_plugin() {
    let orthanc = orthanc();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    let work = dir.path().join("orthanc");
    std::fs::create_dir_all(&work).expect("Orthanc's work directory");
    let _guard = OrthancGuard { work: work.clone() };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/orthanc_push.py");
    let out = Command::new(python())
        .arg(script)
        .arg(format!("http://{}/dicom-web", server.addr))
        .arg(&orthanc)
        .arg(&work)
        .output()
        .expect("run the Orthanc script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "Orthanc push checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"));

    // Orthanc sent the whole study in one STOW-RS request: one InstancesStored event, five
    // instances, every blob on disk.
    let page = server.get_json("/events?after=0&limit=1000");
    let stored: Vec<&serde_json::Value> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["event_type"] == "InstancesStored")
        .collect();
    assert_eq!(
        stored.len(),
        1,
        "one STOW-RS request, one event: {stored:?}"
    );
    let event = stored[0];
    assert_eq!(event["data"]["source"]["protocol"], "stow_rs");
    let instances: Vec<&serde_json::Value> = event["data"]["series"]
        .as_array()
        .expect("series")
        .iter()
        .flat_map(|s| s["instances"].as_array().expect("instances"))
        .collect();
    assert_eq!(instances.len(), 5);
    for i in instances {
        let key = i["blob_key"].as_str().expect("blob key");
        assert!(dir.path().join("data/blobs").join(key).is_file());
    }
    assert!(server.stop().success());
}
