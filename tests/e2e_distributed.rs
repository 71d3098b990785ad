//! The distributed topology end to end (`tests/clients/distributed_flow.py`): PostgreSQL, an
//! S3-compatible object store (moto) holding the originals, a Kafka-compatible broker (tansu,
//! its topics in that object store) and `hub run relay|gateway|ingest|sharing` as separate
//! processes; studies pushed over STOW-RS and DIMSE, a share seen in the grantee's search; then
//! kill -9 of the gateway and of the relay, a broker restart (readiness names Kafka while it is
//! down) and duplicate delivery, each checked for nothing lost and nothing applied twice, and
//! the read models compared with a fresh replay.

use std::process::Command;

use hub_e2e::hub_binary;

/// A fresh database on the test server (HUB_TEST_POSTGRES_URL, set by tests/run.sh).
async fn fresh_database() -> String {
    let admin = std::env::var("HUB_TEST_POSTGRES_URL").expect(
        "HUB_TEST_POSTGRES_URL is not set: run the suite with tests/run.sh, which starts a \
         throwaway PostgreSQL and sets it",
    );
    let name = format!("dist_{}", uuid::Uuid::now_v7().simple());
    let pool = sqlx::PgPool::connect(&admin)
        .await
        .expect("connect to the test server");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .expect("create the test database");
    pool.close().await;
    let i = admin
        .rfind('/')
        .expect("HUB_TEST_POSTGRES_URL has a database part");
    format!("{}/{}", &admin[..i], name)
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
    let url = fresh_database().await;
    let work = tempfile::tempdir().expect("tempdir");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/distributed_flow.py");
    let out = tokio::task::spawn_blocking({
        let work = work.path().to_owned();
        move || {
            Command::new(python)
                .arg(script)
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
