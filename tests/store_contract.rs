//! The Store contract, one suite for every implementation (see src/store/mod.rs).

use std::sync::Arc;

use bytes::Bytes;
use reversa::store::{Body, Store};

/// Run the whole contract against `store`. Keys are under `prefix` so runs do not collide.
pub async fn run(store: Arc<dyn Store>, prefix: &str) {
    let k = |s: &str| format!("{prefix}/{s}");

    // Missing objects.
    let err = store.get(&k("missing")).await.unwrap_err();
    assert!(err.is_not_found(), "get of a missing object: {err}");
    assert!(store.head(&k("missing")).await.unwrap().is_none());
    store.delete(&k("missing")).await.expect("deleting a missing object is not an error");

    // Put, get, overwrite, head.
    store.put(&k("a/one"), Body::Bytes(Bytes::from_static(b"hello world"))).await.unwrap();
    assert_eq!(&store.get(&k("a/one")).await.unwrap()[..], b"hello world");
    store.put(&k("a/one"), Body::Bytes(Bytes::from_static(b"second"))).await.unwrap();
    assert_eq!(&store.get(&k("a/one")).await.unwrap()[..], b"second");
    assert_eq!(store.head(&k("a/one")).await.unwrap().unwrap().size, 6);
    store.put(&k("a/empty"), Body::Bytes(Bytes::new())).await.unwrap();
    assert_eq!(store.get(&k("a/empty")).await.unwrap().len(), 0);

    // Ranged reads return exactly the bytes asked for; a range past the end is an error.
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    store.put(&k("a/range"), Body::Bytes(Bytes::from(data.clone()))).await.unwrap();
    assert_eq!(&store.get_range(&k("a/range"), 0..1).await.unwrap()[..], &data[0..1]);
    assert_eq!(&store.get_range(&k("a/range"), 777..60_001).await.unwrap()[..], &data[777..60_001]);
    assert_eq!(&store.get_range(&k("a/range"), 99_990..100_000).await.unwrap()[..], &data[99_990..]);
    assert!(store.get_range(&k("a/range"), 99_990..100_010).await.is_err(), "a range past the end must fail");

    // A streamed put from a local file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(7919) >> 3) as u8).collect();
    std::fs::write(&path, &big).unwrap();
    store.put(&k("a/file"), Body::File { path: path.clone(), len: big.len() as u64 }).await.unwrap();
    assert_eq!(store.get(&k("a/file")).await.unwrap(), big);

    // Conditional create: exactly one winner, even when racing.
    assert!(store.create_if_absent(&k("c/lock"), Bytes::from_static(b"first")).await.unwrap());
    assert!(!store.create_if_absent(&k("c/lock"), Bytes::from_static(b"second")).await.unwrap());
    assert_eq!(&store.get(&k("c/lock")).await.unwrap()[..], b"first");
    if store.conditional_create() {
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = store.clone();
            let key = k("c/race");
            tasks.push(tokio::spawn(
                async move { s.create_if_absent(&key, Bytes::from(format!("{i}"))).await.unwrap() },
            ));
        }
        let mut wins = 0;
        for t in tasks {
            wins += t.await.unwrap() as usize;
        }
        assert_eq!(wins, 1, "exactly one concurrent create_if_absent wins");
    }

    // List: everything under a prefix, sorted, nothing outside it, past any page size.
    for i in 0..1_050 {
        store.put(&k(&format!("l/{i:05}")), Body::Bytes(Bytes::from_static(b"x"))).await.unwrap();
    }
    store.put(&k("l2/outside"), Body::Bytes(Bytes::from_static(b"x"))).await.unwrap();
    let listed = store.list(&k("l/")).await.unwrap();
    assert_eq!(listed.len(), 1_050);
    assert!(listed.windows(2).all(|w| w[0].key < w[1].key), "list is sorted");
    assert!(listed.iter().all(|o| o.key.starts_with(&k("l/")) && o.size == 1));
    let nested = store.list(&k("a/")).await.unwrap();
    assert_eq!(
        nested.iter().map(|o| o.key.clone()).collect::<Vec<_>>(),
        vec![k("a/empty"), k("a/file"), k("a/one"), k("a/range")]
    );

    // Delete.
    store.delete(&k("a/one")).await.unwrap();
    assert!(store.get(&k("a/one")).await.unwrap_err().is_not_found());
    assert!(store.head(&k("a/one")).await.unwrap().is_none());
}
