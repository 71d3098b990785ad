//! A fresh PostgreSQL database per test, on the throwaway server `tests/run.sh` starts
//! (`HUB_TEST_POSTGRES_URL`, its admin URL).

/// Creates a database named `{prefix}_{uuid}` and returns its URL.
pub async fn fresh_database(prefix: &str) -> String {
    let admin = std::env::var("HUB_TEST_POSTGRES_URL").expect(
        "HUB_TEST_POSTGRES_URL is not set: run the suite with tests/run.sh, which starts a \
         throwaway PostgreSQL and sets it",
    );
    let name = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
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
