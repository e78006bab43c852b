use std::sync::Arc;

use reversa::store::dir::DirStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_store_keeps_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(DirStore::open(dir.path(), true).unwrap());
    crate::store_contract::run(store, "contract").await;
}
