//! Reading blobs in a given order with few requests.
//!
//! One ranged GET per blob makes a restore from S3 pay a round trip and a request per blob (about
//! 1 MiB each). Backup's sealers fill several packs at once, so consecutive chunks of a file
//! alternate between packs, but within each pack they lie next to each other. So the blobs are
//! taken in windows: the blobs of a window that sit next to each other in one pack (or with a
//! small gap) are read with one ranged GET, then split and verified one by one. Windows are
//! fetched in background tasks, the next while one is consumed, so requests keep flowing
//! while the consumer writes or waits (each window's ranges at most the store's concurrency at
//! once). Blobs are opened just ahead of the consumer, so what waits is sealed bytes: memory
//! stays about [`AHEAD`] windows plus [`OPENING`] blobs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};

use super::{open_sealed, parse_blob_list, Catalog, Index, Location, RepoError, Repository};
use crate::generation::Entry;
use crate::keys::BlobId;
use crate::store::Store;

/// Sealed bytes planned together: up to this much is fetched per window. Small enough that
/// the windows in flight, opened (rows decompress to about twice their size), stay a few tens
/// of MiB; large enough to span a few blobs of each pack being read.
const WINDOW_BYTES: u64 = 4 << 20;
/// Windows in flight: the one being consumed and the next, being fetched meanwhile.
const AHEAD: usize = 2;
/// Blobs being opened at once, ahead of the consumer.
const OPENING: usize = 2;
/// Blobs planned together at most (a window of many tiny files).
const WINDOW_BLOBS: usize = 256;
/// Two blobs of a pack at most this far apart are read with one request, the gap included:
/// cheaper than a second round trip.
const MAX_GAP: u64 = 64 << 10;

/// One ranged read of a pack and the blobs in it.
struct Range {
    pack_key: String,
    start: u64,
    end: u64,
    /// (position in the window, id, offset in the pack, length)
    blobs: Vec<(usize, BlobId, u64, u32)>,
}

/// Group a window's blobs into ranged reads: by pack, by offset, merging neighbours.
fn plan(repo: &Repository, index: &Index, window: &[(BlobId, Location)]) -> Vec<Range> {
    let mut order: Vec<usize> = (0..window.len()).collect();
    order.sort_by_key(|&i| (window[i].1.pack, window[i].1.offset));
    let mut ranges: Vec<(u32, Range)> = Vec::new();
    for i in order {
        let (id, loc) = window[i];
        let end = loc.offset + loc.length as u64;
        match ranges.last_mut() {
            // The same blob twice (a repeated chunk) or a neighbour: one read covers it.
            Some((pack, r)) if *pack == loc.pack && loc.offset <= r.end + MAX_GAP => {
                r.end = r.end.max(end);
                r.blobs.push((i, id, loc.offset, loc.length));
            }
            _ => ranges.push((
                loc.pack,
                Range {
                    pack_key: repo.pack_key(&index.packs[loc.pack as usize]),
                    start: loc.offset,
                    end,
                    blobs: vec![(i, id, loc.offset, loc.length)],
                },
            )),
        }
    }
    ranges.into_iter().map(|(_, r)| r).collect()
}

/// A blob read but not opened yet: its sealed bytes (a slice of its range) and where it is.
struct Sealed {
    id: BlobId,
    pack_key: Arc<str>,
    bytes: Bytes,
}

/// Read one range; returns its blobs' sealed bytes with their positions in the window.
async fn fetch_range(store: Arc<dyn Store>, r: Range) -> Result<Vec<(usize, Sealed)>, RepoError> {
    // The index says the pack holds these bytes: a pack missing or cut short is damage.
    let range = store.get_range(&r.pack_key, r.start..r.end).await.map_err(|e| match e.is_missing_or_short() {
        true => RepoError::Damaged { what: "pack", key: r.pack_key.clone(), cause: e.to_string() },
        false => e.into(),
    })?;
    let pack_key: Arc<str> = r.pack_key.into();
    Ok(r.blobs
        .iter()
        .map(|&(slot, id, offset, length)| {
            let at = (offset - r.start) as usize;
            (slot, Sealed { id, pack_key: pack_key.clone(), bytes: range.slice(at..at + length as usize) })
        })
        .collect())
}

/// A spawned task that is aborted when its handle is dropped (a consumer that stops early).
struct Task<T>(tokio::task::JoinHandle<T>);

impl<T> Future for Task<T> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        Pin::new(&mut self.0).poll(cx).map(|r| r.expect("blob fetch task panicked"))
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Repository {
    /// Fetch a window's blobs, every range at once, in a background task; they come back
    /// sealed, in the window's order.
    fn spawn_window(&self, index: &Index, window: Vec<(BlobId, Location)>) -> Task<Result<Vec<Sealed>, RepoError>> {
        let ranges = plan(self, index, &window);
        let store = self.store.clone();
        // Scattered blobs (small files spread over old packs) make many ranges: no more than
        // the store's concurrency of them at once.
        let at_once = store.concurrency().max(1);
        Task(tokio::spawn(async move {
            let reads = ranges.into_iter().map(|r| fetch_range(store.clone(), r));
            let read: Vec<_> = futures::stream::iter(reads).buffer_unordered(at_once).try_collect().await?;
            let mut out: Vec<Option<Sealed>> = (0..window.len()).map(|_| None).collect();
            for (slot, sealed) in read.into_iter().flatten() {
                out[slot] = Some(sealed);
            }
            Ok(out.into_iter().map(|b| b.expect("every blob of a window is in one of its ranges")).collect())
        }))
    }

    /// The blobs `ids`, fetched in windows and opened (verified) [`OPENING`] at a time just
    /// ahead of the consumer, in order: what waits is sealed bytes, not the larger plaintext. A
    /// blob missing from the index is an error at its place in the order.
    pub fn blob_stream<'a>(
        &'a self,
        index: &'a Index,
        ids: impl Iterator<Item = BlobId> + 'a,
    ) -> impl Stream<Item = Result<Vec<u8>, RepoError>> + 'a {
        let mut ids = ids.fuse();
        let mut missing: Option<RepoError> = None;
        let mut stopped = false;
        let windows = std::iter::from_fn(move || {
            if let Some(e) = missing.take() {
                return Some(Err(e));
            }
            let (mut window, mut bytes) = (Vec::new(), 0u64);
            while !stopped && window.len() < WINDOW_BLOBS && bytes < WINDOW_BYTES {
                let Some(id) = ids.next() else { break };
                match index.blobs.get(&id) {
                    Some(loc) => {
                        bytes += loc.length as u64;
                        window.push((id, *loc));
                    }
                    None => {
                        // The blobs before it are still delivered; the error comes next, and
                        // nothing after it.
                        missing =
                            Some(RepoError::MissingBlob { tenant: self.tenant().to_string(), blob: hex::encode(id) });
                        stopped = true;
                    }
                }
            }
            match window.is_empty() {
                true => missing.take().map(Err),
                false => Some(Ok(window)),
            }
        });
        let keys = self.keys.clone();
        futures::stream::iter(windows)
            .map(move |w| {
                let task = w.map(|w| self.spawn_window(index, w));
                async move { task?.await }
            })
            .buffered(AHEAD)
            .flat_map(|r| {
                futures::stream::iter(match r {
                    Ok(blobs) => blobs.into_iter().map(Ok).collect::<Vec<_>>(),
                    Err(e) => vec![Err(e)],
                })
            })
            .map(move |b| {
                let keys = keys.clone();
                async move {
                    let b = b?;
                    open_sealed(keys, b.pack_key, b.id, b.bytes).await
                }
            })
            .buffered(OPENING)
            // The first error ends the stream: a failed window stands for all its blobs, so
            // nothing after it could be matched to its place.
            .scan(false, |failed, r| {
                let go = !*failed;
                *failed |= r.is_err();
                futures::future::ready(go.then_some(r))
            })
    }
}

/// The content blobs a catalog entry lists (a table's rows, a file's bytes), parsed.
pub fn entry_blobs(entry: &Entry, generation: &str) -> Result<Vec<BlobId>, RepoError> {
    let list: &[String] = match entry {
        Entry::Table { blobs, .. } | Entry::File { blobs, .. } => blobs,
        _ => &[],
    };
    parse_blob_list(list, generation)
}

/// The blobs of a generation's wanted entries, in catalog order, as one stream fetched ahead
/// across entries (so many small files do not each wait for a round trip). The reader walks
/// the catalog a second time and takes each entry's blobs with [`CatalogBlobs::next`]. A
/// damaged entry ends this stream quietly; the second walk reports it when it gets there.
pub struct CatalogBlobs<'a> {
    blobs: Pin<Box<dyn Stream<Item = Result<Vec<u8>, RepoError>> + Send + 'a>>,
    generation: String,
}

impl CatalogBlobs<'_> {
    /// The next blob of the walk.
    pub async fn next(&mut self) -> Result<Vec<u8>, RepoError> {
        self.blobs.next().await.unwrap_or_else(|| {
            Err(RepoError::Damaged {
                what: "generation catalog",
                key: self.generation.clone(),
                cause: "it read differently on its second pass".into(),
            })
        })
    }
}

impl Repository {
    pub fn catalog_blobs<'a>(
        &'a self,
        index: &'a Index,
        catalog: &'a Catalog,
        generation: &str,
        wanted: impl Fn(&Entry) -> bool + Send + 'a,
    ) -> Result<CatalogBlobs<'a>, RepoError> {
        let g = generation.to_string();
        let ids = catalog
            .entries()?
            .map_while(|e| e.ok())
            .filter(move |e| wanted(e))
            .map_while(move |e| entry_blobs(&e, &g).ok())
            .flatten();
        Ok(CatalogBlobs { blobs: Box::pin(self.blob_stream(index, ids)), generation: generation.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::TenantKeys;
    use crate::repository::pack::PackBuilder;
    use crate::repository::BlobSealer;
    use crate::store::{dir::DirStore, Body};

    fn loc(pack: u32, offset: u64, length: u32) -> Location {
        Location { pack, offset, length }
    }

    fn repo(dir: &std::path::Path) -> Repository {
        let store = DirStore::open(dir, true).unwrap();
        Repository::new(Arc::new(store), Arc::new(TenantKeys::for_tests("t1")))
    }

    #[test]
    fn plan_merges_neighbours_of_a_pack_and_keeps_the_order_of_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        let index = Index { packs: vec![[1; 32], [2; 32]], ..Default::default() };
        // Chunks alternating between two packs, as two sealers write them; one gap too wide.
        let window = [
            ([10; 32], loc(0, 0, 100)),
            ([11; 32], loc(1, 0, 50)),
            ([12; 32], loc(0, 100, 100)),
            ([13; 32], loc(1, 50, 50)),
            ([14; 32], loc(0, 200 + MAX_GAP + 1, 10)),
            ([10; 32], loc(0, 0, 100)),
        ];
        let ranges = plan(&repo, &index, &window);
        let shape: Vec<_> = ranges
            .iter()
            .map(|r| (r.pack_key.clone(), r.start, r.end, r.blobs.iter().map(|b| b.0).collect::<Vec<_>>()))
            .collect();
        assert_eq!(
            shape,
            vec![
                (repo.pack_key(&[1; 32]), 0, 200, vec![0, 5, 2]),
                (repo.pack_key(&[1; 32]), 200 + MAX_GAP + 1, 211 + MAX_GAP, vec![4]),
                (repo.pack_key(&[2; 32]), 0, 100, vec![1, 3]),
            ]
        );
    }

    /// Blobs spread over two packs, asked for interleaved, repeated and across several windows,
    /// come back in the order asked, each verified; a missing blob ends the stream with an
    /// error after the blobs before it.
    #[tokio::test]
    async fn blobs_come_back_in_order_across_packs_and_windows() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        let keys = repo.keys.clone();
        let mut sealer = BlobSealer::new();
        let mut index = Index::default();
        let mut ids = Vec::new();
        let mut contents = std::collections::HashMap::new();
        let mut packs = [PackBuilder::new(), PackBuilder::new()];
        // 40 blobs of 300 KiB of random bytes (so several windows), alternating packs.
        for n in 0..40usize {
            let mut plain = vec![0u8; 300 << 10];
            rand::fill(&mut plain[..]);
            let id = keys.blob_id(&plain);
            packs[n % 2].add_blob(&mut sealer, &keys, id, &plain);
            ids.push(id);
            contents.insert(id, plain);
        }
        for p in packs {
            let pack_id = p.id;
            let (bytes, blobs) = p.finish(&keys);
            repo.store.put(&repo.pack_key(&pack_id), Body::Bytes(bytes.into())).await.unwrap();
            index.add_pack(pack_id, &blobs);
        }
        let mut asked: Vec<BlobId> = ids.clone();
        asked.extend([ids[3], ids[3], ids[0]]);
        let got: Vec<_> = repo.blob_stream(&index, asked.clone().into_iter()).collect().await;
        assert_eq!(got.len(), asked.len());
        for (id, blob) in asked.iter().zip(got) {
            assert_eq!(&blob.unwrap(), &contents[id]);
        }

        let mut with_missing = vec![ids[5], ids[6]];
        with_missing.extend([[9; 32], ids[7]]);
        let got: Vec<_> = repo.blob_stream(&index, with_missing.into_iter()).collect().await;
        assert_eq!(got.len(), 3, "the two blobs, then the error, then nothing");
        assert_eq!(got[0].as_ref().unwrap(), &contents[&ids[5]]);
        assert_eq!(got[1].as_ref().unwrap(), &contents[&ids[6]]);
        assert!(matches!(&got[2], Err(RepoError::MissingBlob { blob, .. }) if blob == &hex::encode([9u8; 32])));
    }
}
