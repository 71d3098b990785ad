//! The Helm chart of the distributed mode (`helm/`), checked offline by `tests/helm_check.py`:
//! strict lint and rendering through helm-python-sdk (the Helm SDK, no helm binary), every
//! rendered object validated against the Kubernetes schemas (kubernetes-validate), assertions on
//! the Deployments, Services, HPAs and environment, and value sets that must be refused.
//! `tests/run.sh` installs the Python packages in a virtual environment and points
//! `HUB_TEST_PYTHON` at it. Needs neither a cluster nor the hub binary.

use std::process::Command;

fn python() -> String {
    std::env::var("HUB_TEST_PYTHON").expect(
        "HUB_TEST_PYTHON is not set: run the suite with tests/run.sh, which installs \
         helm-python-sdk, kubernetes-validate and PyYAML in a virtual environment and sets it",
    )
}

#[test]
fn the_helm_chart_lints_renders_valid_objects_and_refuses_bad_values() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/helm_check.py");
    let out = Command::new(python())
        .arg(script)
        .output()
        .expect("run the Helm chart checks");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "Helm chart checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("helm checks passed"));
}
