//! The store's statements on SQLite's native connections are logged as sqlx logs its own (target
//! `chorus::store::sql`, at debug): the SQL text, never a value bound to it. Alone in its test
//! binary: `tracing` caches which events anyone wants across threads, and another test's thread
//! with no subscriber can make this thread's subscriber miss one.

mod common;

use chorus::store::Db;

#[tokio::test]
async fn native_statements_are_logged_without_their_values() {
    let logs = common::LogCapture::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = Db::connect(&format!("sqlite://{}/t.db", dir.path().display()), 2).await.expect("connect");
    db.migrate().await.expect("migrate");
    // The inbound batch and its cursor: a script on the writer's native connection.
    db.store_inbound(&[], Some(("ada", "local", "a-value-not-to-log"))).await.expect("store the cursor");
    let text = logs.text();
    let logged: Vec<&str> = text.lines().filter(|line| line.contains("chorus::store::sql")).collect();
    assert!(logged.iter().any(|line| line.contains("INSERT INTO cursors")), "the statement is logged:\n{text}");
    assert!(!text.contains("a-value-not-to-log"), "a bound value is not:\n{text}");
    db.close().await;
}
