//! The `s3` store against a real S3 server: Ceph RADOS Gateway on loopback, started by
//! scripts/test.sh (scripts/s3-up.sh), which exports REVERSA_TEST_S3_ENDPOINT and the AWS
//! credentials. Every test uses its own bucket. Under CI (`CI=true`) a missing server fails the
//! tests; run by hand without one, they say so and return.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reversa::config::S3StoreConfig;
use reversa::repository::lock::TenantLock;
use reversa::store::s3::{OpenMode, S3Store};
use reversa::store::{Body, Store};
use reversa::tenant::TenantId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{differences, Env, Run, SMALL};

pub(crate) struct Server {
    pub endpoint: String,
    pub region: String,
}

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The S3 test server, or `None` (with a message) when run by hand without one.
pub(crate) fn server() -> Option<Server> {
    match std::env::var("REVERSA_TEST_S3_ENDPOINT") {
        Ok(endpoint) => Some(Server {
            endpoint,
            region: std::env::var("REVERSA_TEST_S3_REGION").unwrap_or_else(|_| "eu-south-1".into()),
        }),
        Err(_) if under_ci() => panic!(
            "REVERSA_TEST_S3_ENDPOINT is not set under CI: run the tests with scripts/test.sh, which starts the S3 test server"
        ),
        Err(_) => {
            eprintln!("skipping: no S3 test server (REVERSA_TEST_S3_ENDPOINT is unset); scripts/test.sh starts one");
            None
        }
    }
}

impl Server {
    fn upstream(&self) -> SocketAddr {
        self.endpoint.trim_start_matches("http://").trim_end_matches('/').parse().expect("a loopback ip:port endpoint")
    }

    fn config(&self, bucket: &str) -> S3StoreConfig {
        S3StoreConfig::new(bucket, &self.region, Some(&self.endpoint))
    }

    /// A fresh bucket for one test, created through the store itself.
    pub(crate) async fn bucket(&self, name: &str) -> S3StoreConfig {
        let bucket = format!("t-{name}-{:08x}", rand::random::<u32>());
        let cfg = self.config(&bucket);
        S3Store::open(&cfg, OpenMode::Init { create_bucket: true }).await.unwrap();
        cfg
    }

    /// Turn on versioning of the bucket: every overwrite and delete then keeps the old version.
    pub(crate) async fn enable_versioning(&self, bucket: &str) {
        use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(self.region.clone()))
            .endpoint_url(&self.endpoint)
            .load()
            .await;
        let client =
            aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build());
        let on = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
        client.put_bucket_versioning().bucket(bucket).versioning_configuration(on).send().await.unwrap();
    }

    pub(crate) fn store_section(&self, cfg: &S3StoreConfig) -> String {
        format!(
            "[store]\nkind = \"s3\"\nbucket = \"{}\"\nregion = \"{}\"\nendpoint = \"{}\"\nprefix = \"{}\"\n",
            cfg.bucket, cfg.region, self.endpoint, cfg.prefix
        )
    }
}

pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(f)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

fn pattern_file(path: &Path, len: usize) -> Vec<u8> {
    let data = pattern(len);
    std::fs::write(path, &data).unwrap();
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_keeps_the_store_contract() {
    let Some(srv) = server() else { return };
    let mut cfg = srv.bucket("contract").await;
    cfg.prefix = "agent-1".into();
    let store = S3Store::open(&cfg, OpenMode::Init { create_bucket: false }).await.unwrap();
    assert!(store.conditional_create(), "radosgw honours If-None-Match; the probe must see it");
    assert_eq!(store.facts().bucket_region.as_deref(), Some(srv.region.as_str()));
    crate::store_contract::run(Arc::new(store.clone()), "contract").await;

    // The same contract with conditional writes taken as ignored (how the store behaves on a
    // server such as Garage): create_if_absent falls back to HEAD then PUT.
    let mut fallback = store.clone();
    fallback.set_conditional_create(false);
    crate::store_contract::run(Arc::new(fallback), "contract-fallback").await;

    // Keys live under the prefix, and a store with another prefix sees none of them.
    let mut other = cfg.clone();
    other.prefix = "agent-2".into();
    let other = S3Store::open(&other, OpenMode::Init { create_bucket: false }).await.unwrap();
    assert!(other.list("contract/").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_tenant_lock_without_conditional_writes_admits_one_taker() {
    let Some(srv) = server() else { return };
    let cfg = srv.bucket("lock").await;
    let mut store = S3Store::open(&cfg, OpenMode::Init { create_bucket: false }).await.unwrap();
    store.set_conditional_create(false);
    let store: Arc<dyn Store> = Arc::new(store);
    let tenant = TenantId::parse("comune-lock").unwrap();
    for round in 0..3 {
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (s, t) = (store.clone(), tenant.clone());
            tasks.push(tokio::spawn(async move {
                TenantLock::acquire(s, &t, "test", reversa::repository::lock::REFRESH, Default::default()).await
            }));
        }
        let mut held = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(lock) => held.push(lock),
                Err(reversa::repository::lock::LockError::Held { .. }) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert!(held.len() <= 1, "round {round}: {} takers hold the lock at once", held.len());
        for l in held {
            l.release().await.unwrap();
        }
    }
    // Once released, the next taker gets it at once.
    let lock =
        TenantLock::acquire(store.clone(), &tenant, "test", reversa::repository::lock::REFRESH, Default::default())
            .await
            .unwrap();
    lock.release().await.unwrap();
    assert!(store.list("tenants/comune-lock/locks/").await.unwrap().is_empty());
}

#[test]
fn s3_backup_restore_and_check_read_data_through_radosgw() {
    let Some(srv) = server() else { return };
    let mut cfg = block_on(srv.bucket("backup"));
    cfg.prefix = "reversa".into();
    let env = Env::with_store(&srv.store_section(&cfg));
    env.seed("comune-a", SMALL, 11);
    let m1 = env.backup("comune-a");
    assert!(m1["summary"]["packs_added"].as_u64().unwrap() > 0, "{m1}");
    let restored = env.restore("comune-a", None);
    assert_eq!(differences(&env.tenant_dir("comune-a"), &restored), Vec::<String>::new());

    // A second backup of unchanged data adds (almost) nothing; both generations restore.
    let m2 = env.backup("comune-a");
    assert!(
        m2["summary"]["bytes_added"].as_u64().unwrap() < m1["summary"]["bytes_added"].as_u64().unwrap() / 10,
        "{m2}"
    );
    let g = env.run(&["generations", "--tenant", "comune-a", "--json"]).ok();
    let gens: serde_json::Value = serde_json::from_str(&g.stdout).unwrap();
    assert_eq!(gens.as_array().unwrap().len(), 2);
    let first = env.restore("comune-a", m1["id"].as_str());
    assert_eq!(differences(&env.tenant_dir("comune-a"), &first), Vec::<String>::new());

    let c = env.run(&["check", "--tenant", "comune-a", "--read-data"]).ok();
    assert!(c.stdout.contains("no problems") && c.stdout.contains("blobs read and verified"), "{}", c.all());

    // Everything is under the prefix in the bucket, and the marker records the probe.
    let store = block_on(S3Store::open(&cfg, OpenMode::Existing)).unwrap();
    let marker: serde_json::Value = serde_json::from_slice(&block_on(store.get("reversa.json")).unwrap()).unwrap();
    assert_eq!(marker["conditional_writes"], true, "{marker}");
    assert_eq!(marker["bucket_region"], srv.region.as_str(), "{marker}");
    assert!(!block_on(store.list("tenants/comune-a/data/")).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_large_file_goes_up_in_parts_streamed_and_whole() {
    let Some(srv) = server() else { return };
    let mut cfg = srv.bucket("multipart").await;
    cfg.part_size = 5 << 20;
    cfg.max_concurrency = 2;
    let store = S3Store::open(&cfg, OpenMode::Init { create_bucket: false }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    // Three parts, the last one short.
    let data = pattern_file(&path, (13 << 20) + 123);
    store.put("big/object", Body::File { path: path.clone(), len: data.len() as u64 }).await.unwrap();
    assert_eq!(store.head("big/object").await.unwrap().unwrap().size, data.len() as u64);
    let back = store.get("big/object").await.unwrap();
    assert!(back == data, "the object read back differs from the file");
    let part2 = store.get_range("big/object", (5 << 20) - 10..(5 << 20) + 10).await.unwrap();
    assert_eq!(&part2[..], &data[(5 << 20) - 10..(5 << 20) + 10]);
    assert!(store.pending_uploads("").await.unwrap().is_empty(), "a completed upload leaves nothing pending");

    // A file that does not match the length it was given is refused before anything is sent.
    let e = store
        .put("big/wrong", Body::File { path: path.clone(), len: data.len() as u64 + 1 })
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("big/wrong") && e.contains(&path.display().to_string()), "{e}");
    assert!(store.pending_uploads("").await.unwrap().is_empty());
}

/// What [`fault_proxy`] does to each connection between the store and the S3 server.
#[derive(Clone, Copy, Debug)]
enum ProxyMode {
    /// Accept, then never read, forward or answer: a hung server.
    Stall,
    /// Forward the first `n` bytes the client sends, then stop reading (holding the connection
    /// open): a network that died mid-upload.
    StallRequestAfter(usize),
    /// Forward the first `n` bytes of the server's answer, then stop: a download that hangs.
    StallResponseAfter(usize),
    /// Forward everything, but the first `n` bytes of the answer one per second: slow, never idle.
    TrickleResponse(usize),
    /// On the first connection only, forward `n` bytes of the request, then reset (RST) it.
    ResetRequestAfter(usize),
    /// On the first connection only, forward `n` bytes of the answer, then reset it.
    ResetResponseAfter(usize),
    /// The first CompleteMultipartUpload reaches the server, and the connection is reset as soon
    /// as the answer comes: the upload is complete, and the store does not know it.
    LoseCompleteAnswer,
}

/// How one direction of a connection is forwarded.
#[derive(Clone, Copy)]
enum Shape {
    Pass,
    StallAfter(usize),
    CutAfter(usize),
    Trickle(usize),
}

struct Proxy {
    url: String,
    connections: Arc<AtomicUsize>,
    /// Whether the proxy has lost an answer (`LoseCompleteAnswer`).
    lost: Arc<AtomicBool>,
}

impl Proxy {
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn lost_an_answer(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

/// A TCP proxy on loopback to the S3 server that misbehaves as `mode` says.
async fn fault_proxy(upstream: SocketAddr, mode: ProxyMode) -> Proxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let lost = Arc::new(AtomicBool::new(false));
    let (count, spent) = (connections.clone(), lost.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let first = count.fetch_add(1, Ordering::SeqCst) == 0;
            let spent = spent.clone();
            tokio::spawn(async move {
                let shapes = shapes_for(&client, mode, first, &spent).await;
                proxy_connection(client, upstream, shapes).await
            });
        }
    });
    Proxy { url, connections, lost }
}

/// How the two directions (request, answer) of a new connection are forwarded; `None` for a
/// hung server.
async fn shapes_for(
    client: &tokio::net::TcpStream,
    mode: ProxyMode,
    first: bool,
    lost: &AtomicBool,
) -> Option<(Shape, Shape)> {
    Some(match mode {
        ProxyMode::Stall => return None,
        ProxyMode::StallRequestAfter(n) => (Shape::StallAfter(n), Shape::Pass),
        ProxyMode::StallResponseAfter(n) => (Shape::Pass, Shape::StallAfter(n)),
        ProxyMode::TrickleResponse(n) => (Shape::Pass, Shape::Trickle(n)),
        ProxyMode::ResetRequestAfter(n) if first => (Shape::CutAfter(n), Shape::Pass),
        ProxyMode::ResetResponseAfter(n) if first => (Shape::Pass, Shape::CutAfter(n)),
        ProxyMode::ResetRequestAfter(_) | ProxyMode::ResetResponseAfter(_) => (Shape::Pass, Shape::Pass),
        ProxyMode::LoseCompleteAnswer => {
            // CompleteMultipartUpload is the only POST with an upload id (CreateMultipartUpload
            // is `POST ...?uploads`), and the first request of its connection: the store sends
            // it over an HTTP client of its own.
            let mut head = [0u8; 1024];
            let n = client.peek(&mut head).await.unwrap_or(0);
            let line = head[..n].split(|&b| b == b'\n').next().unwrap_or_default();
            let complete = line.starts_with(b"POST ") && line.windows(9).any(|w| w == b"uploadId=");
            if complete && !lost.swap(true, Ordering::SeqCst) {
                // Reset as soon as the server answers, forwarding nothing of it.
                (Shape::Pass, Shape::CutAfter(0))
            } else {
                (Shape::Pass, Shape::Pass)
            }
        }
    })
}

async fn proxy_connection(mut client: tokio::net::TcpStream, upstream: SocketAddr, shapes: Option<(Shape, Shape)>) {
    let Some((up, down)) = shapes else {
        // A hung server: hold the connection, never read or answer.
        let _held = client;
        return std::future::pending().await;
    };
    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    // Closing a socket with a zero linger sends RST instead of FIN: a reset, not an end.
    if matches!(up, Shape::CutAfter(_)) || matches!(down, Shape::CutAfter(_)) {
        client.set_zero_linger().unwrap();
    }
    let _ = client.set_nodelay(true);
    // Borrowed halves, so that nothing is shut down on its own before the stream is dropped.
    let (cr, cw) = client.split();
    let (sr, sw) = server.split();
    let (up, down) = (Box::pin(pump(cr, sw, up)), Box::pin(pump(sr, cw, down)));
    use futures::future::Either;
    match futures::future::select(up, down).await {
        Either::Left((Pumped::Cut, _)) | Either::Right((Pumped::Cut, _)) => {}
        Either::Left((Pumped::Ended, rest)) => {
            rest.await;
        }
        Either::Right((Pumped::Ended, rest)) => {
            rest.await;
        }
    };
    // Dropping both streams here closes them (resets the client's after a cut).
}

/// How [`pump`] ended: its source ended (or failed), or it was told to cut the connection.
enum Pumped {
    Ended,
    Cut,
}

/// Copy `from` to `to` in the given shape.
async fn pump<R, W>(mut from: R, mut to: W, shape: Shape) -> Pumped
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 << 10];
    let mut moved = 0;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let (pass, limit) = match shape {
            Shape::StallAfter(limit) | Shape::CutAfter(limit) => (n.min(limit - moved), Some(limit)),
            Shape::Pass | Shape::Trickle(_) => (n, None),
        };
        let sent = match shape {
            Shape::Trickle(slow) => trickle(&mut to, &buf[..n], slow.saturating_sub(moved)).await,
            _ => to.write_all(&buf[..pass]).await,
        };
        if sent.is_err() {
            break;
        }
        moved += pass;
        if limit == Some(moved) {
            if let Shape::CutAfter(_) = shape {
                return Pumped::Cut;
            }
            // Hold the connection open and forward nothing more, in this direction.
            std::future::pending::<()>().await;
        }
    }
    let _ = to.shutdown().await;
    Pumped::Ended
}

/// Write `data`, its first `slow` bytes one per second.
async fn trickle<W: tokio::io::AsyncWrite + Unpin>(to: &mut W, data: &[u8], slow: usize) -> std::io::Result<()> {
    let slow = slow.min(data.len());
    for byte in &data[..slow] {
        tokio::time::sleep(Duration::from_secs(1)).await;
        to.write_all(std::slice::from_ref(byte)).await?;
        to.flush().await?;
    }
    to.write_all(&data[slow..]).await
}

async fn wait_for_pending(store: &S3Store, prefix: &str, want: impl Fn(usize) -> bool) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = store.pending_uploads(prefix).await.unwrap().len();
        if want(n) || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_cancelled_multipart_upload_is_aborted() {
    let Some(srv) = server() else { return };
    let mut cfg = srv.bucket("cancel").await;
    let direct = S3Store::open(&cfg, OpenMode::Init { create_bucket: false }).await.unwrap();
    let proxy = fault_proxy(srv.upstream(), ProxyMode::StallRequestAfter(7 << 20)).await;
    cfg.endpoint = Some(proxy.url.clone());
    cfg.part_size = 5 << 20;
    cfg.max_concurrency = 1;
    // Long enough that the upload still hangs when it is dropped: this test is about the caller
    // dropping it; s3_stalled_multipart_upload_fails_after_io_timeout_and_is_aborted is about
    // the store giving up by itself.
    cfg.io_timeout = Duration::from_secs(60);
    let slow = S3Store::open(&cfg, OpenMode::Existing).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    let data = pattern_file(&path, 16 << 20);
    let upload = slow.put("cancel/big", Body::File { path, len: data.len() as u64 });
    // The upload hangs in its second part; drop it after a while, as a failing backup drops the
    // uploads it still has in flight.
    let r = tokio::time::timeout(Duration::from_secs(3), upload).await;
    assert!(r.is_err(), "the upload through the stalling proxy must hang, not finish: {r:?}");
    assert_eq!(wait_for_pending(&direct, "", |n| n == 0).await, 0, "the dropped upload was not aborted");
    assert!(direct.head("cancel/big").await.unwrap().is_none());
}

/// The io_timeout of the tests of a stalled transfer: short, so that they fail fast.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// A store whose requests all go through `proxy`, with `io_timeout` and `attempts` attempts.
async fn store_behind(cfg: &S3StoreConfig, proxy: &Proxy, io_timeout: Duration, attempts: u32) -> S3Store {
    let mut cfg = cfg.clone();
    cfg.endpoint = Some(proxy.url.clone());
    cfg.io_timeout = io_timeout;
    cfg.max_attempts = attempts;
    // connect() sends nothing: the proxy sees only the requests of the test.
    S3Store::connect(&cfg).await.unwrap()
}

/// A request that cannot move a byte fails after `attempts` idle timeouts: not sooner (each
/// attempt waits the whole io_timeout after the last byte moved), and not much later (the
/// backoff between two attempts is under half a second).
fn assert_timed_out(what: &str, started: Instant, e: &str, attempts: u32) {
    let took = started.elapsed();
    let least = IO_TIMEOUT * attempts;
    assert!(took >= least && took < least + Duration::from_secs(5), "{what} took {took:?}: {e}");
    assert!(e.contains("io_timeout"), "{what}: the error names the timeout: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_hung_server_fails_after_io_timeout_and_retries() {
    let Some(srv) = server() else { return };
    let proxy = fault_proxy(srv.upstream(), ProxyMode::Stall).await;
    // Nothing reaches the server, so the bucket need not exist.
    let store = store_behind(&srv.config("reversa-hung"), &proxy, IO_TIMEOUT, 2).await;
    let key = "tenants/comune-h/index/some-object";
    let started = Instant::now();
    let e = store.get(key).await.unwrap_err().to_string();
    assert_timed_out("a GET from a hung server", started, &e, 2);
    assert!(e.contains(key) && e.contains("gave up after up to 2 attempts"), "{e}");
    assert_eq!(proxy.connections(), 2, "one connection per attempt: {e}");

    let started = Instant::now();
    let e = store.put(key, Body::Bytes(Bytes::from(pattern(64 << 10)))).await.unwrap_err().to_string();
    assert_timed_out("a PUT to a hung server", started, &e, 2);
    assert_eq!(proxy.connections(), 4, "one connection per attempt: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_transfer_stalled_mid_body_fails_after_io_timeout() {
    let Some(srv) = server() else { return };
    let cfg = srv.bucket("stalled").await;
    let direct = S3Store::connect(&cfg).await.unwrap();
    let data = Bytes::from(pattern(1 << 20));
    direct.put("stalled/object", Body::Bytes(data.clone())).await.unwrap();

    // Each connection forwards 64 KiB of the upload, then nothing more.
    let proxy = fault_proxy(srv.upstream(), ProxyMode::StallRequestAfter(64 << 10)).await;
    let store = store_behind(&cfg, &proxy, IO_TIMEOUT, 2).await;
    let started = Instant::now();
    let e = store.put("stalled/upload", Body::Bytes(data.clone())).await.unwrap_err().to_string();
    assert_timed_out("an upload stalled mid-body", started, &e, 2);
    assert_eq!(proxy.connections(), 2, "one connection per attempt: {e}");
    assert!(direct.head("stalled/upload").await.unwrap().is_none());

    // Each connection forwards 64 KiB of the answer, then nothing more (the body is retried by
    // the store itself: the SDK's retries end with the response headers).
    let proxy = fault_proxy(srv.upstream(), ProxyMode::StallResponseAfter(64 << 10)).await;
    let store = store_behind(&cfg, &proxy, IO_TIMEOUT, 2).await;
    let started = Instant::now();
    let e = store.get("stalled/object").await.unwrap_err().to_string();
    assert_timed_out("a download stalled mid-body", started, &e, 2);
    assert_eq!(proxy.connections(), 2, "one connection per attempt: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stalled_multipart_upload_fails_after_io_timeout_and_is_aborted() {
    let Some(srv) = server() else { return };
    let mut cfg = srv.bucket("stalledparts").await;
    let direct = S3Store::connect(&cfg).await.unwrap();
    // Every connection stops after 1 MiB, inside the first 5 MiB part, attempt after attempt;
    // the abort, a small request on a new connection, gets through.
    let proxy = fault_proxy(srv.upstream(), ProxyMode::StallRequestAfter(1 << 20)).await;
    cfg.part_size = 5 << 20;
    cfg.max_concurrency = 1;
    let store = store_behind(&cfg, &proxy, IO_TIMEOUT, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    let data = pattern_file(&path, (6 << 20) + 1);
    let started = Instant::now();
    let e = store.put("stalled/big", Body::File { path, len: data.len() as u64 }).await.unwrap_err().to_string();
    assert_timed_out("a multipart upload stalled in a part", started, &e, 2);
    assert!(e.contains("part 1") && e.contains("the multipart upload was aborted"), "{e}");
    assert!(direct.pending_uploads("").await.unwrap().is_empty(), "the stalled upload was not aborted");
    assert!(direct.head("stalled/big").await.unwrap().is_none());
}

/// How long the trickle test keeps an answer moving, one byte per second: a minute, twenty
/// times its io_timeout (a transfer that keeps moving is never cut, however long it takes).
const TRICKLE_SECS: usize = 60;
const TRICKLE_IO_TIMEOUT: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_slow_transfer_that_keeps_moving_never_times_out() {
    let Some(srv) = server() else { return };
    let cfg = srv.bucket("trickle").await;
    let direct = S3Store::connect(&cfg).await.unwrap();
    let data = Bytes::from(pattern(4096));
    direct.put("trickle/object", Body::Bytes(data.clone())).await.unwrap();
    let proxy = fault_proxy(srv.upstream(), ProxyMode::TrickleResponse(TRICKLE_SECS)).await;
    // One attempt: a timeout would be the error, not hidden by a retry.
    let store = store_behind(&cfg, &proxy, TRICKLE_IO_TIMEOUT, 1).await;
    let started = Instant::now();
    let got = store.get("trickle/object").await.unwrap();
    let took = started.elapsed();
    assert!(got == data, "the object read back differs");
    assert!(took >= Duration::from_secs(TRICKLE_SECS as u64), "the answer did not trickle: {took:?}");
    assert_eq!(proxy.connections(), 1, "one attempt on one connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_connection_reset_mid_body_is_retried() {
    let Some(srv) = server() else { return };
    let mut cfg = srv.bucket("reset").await;
    let direct = S3Store::connect(&cfg).await.unwrap();
    let data = Bytes::from(pattern(2 << 20));

    // An upload whose first connection is reset after 256 KiB of the request.
    let proxy = fault_proxy(srv.upstream(), ProxyMode::ResetRequestAfter(256 << 10)).await;
    let store = store_behind(&cfg, &proxy, IO_TIMEOUT, 3).await;
    store.put("reset/object", Body::Bytes(data.clone())).await.unwrap();
    assert!(proxy.connections() >= 2, "the reset attempt was sent again on a new connection");
    assert!(direct.get("reset/object").await.unwrap() == data, "the object differs from what was put");

    // A download whose first connection is reset after 256 KiB of the answer.
    let proxy = fault_proxy(srv.upstream(), ProxyMode::ResetResponseAfter(256 << 10)).await;
    let store = store_behind(&cfg, &proxy, IO_TIMEOUT, 3).await;
    assert!(store.get("reset/object").await.unwrap() == data, "the object read back differs");
    assert!(proxy.connections() >= 2, "the reset download was sent again on a new connection");

    // A multipart part reset mid-body is sent again, read again from the file.
    let proxy = fault_proxy(srv.upstream(), ProxyMode::ResetRequestAfter(1 << 20)).await;
    cfg.part_size = 5 << 20;
    cfg.max_concurrency = 1;
    let store = store_behind(&cfg, &proxy, IO_TIMEOUT, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    let big = pattern_file(&path, (6 << 20) + 1);
    store.put("reset/big", Body::File { path, len: big.len() as u64 }).await.unwrap();
    assert!(proxy.connections() >= 2, "the reset part was sent again on a new connection");
    assert!(direct.get("reset/big").await.unwrap() == big, "the object differs from the file");
    assert!(direct.pending_uploads("").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_completion_whose_answer_was_lost_is_recognized() {
    let Some(srv) = server() else { return };
    let mut cfg = srv.bucket("complete").await;
    let direct = S3Store::connect(&cfg).await.unwrap();
    // The server completes the upload, but the answer is lost: the store retries, and the
    // server may answer NoSuchUpload (the upload is gone: it is an object now). The store must
    // then find the object whole and go on.
    let proxy = fault_proxy(srv.upstream(), ProxyMode::LoseCompleteAnswer).await;
    cfg.part_size = 5 << 20;
    let store = store_behind(&cfg, &proxy, IO_TIMEOUT, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    let data = pattern_file(&path, (6 << 20) + 1);
    store.put("complete/big", Body::File { path, len: data.len() as u64 }).await.unwrap();
    assert!(proxy.lost_an_answer(), "the proxy never saw the CompleteMultipartUpload");
    assert!(direct.get("complete/big").await.unwrap() == data, "the object differs from the file");
    assert!(direct.pending_uploads("").await.unwrap().is_empty());
}

/// Not a test by itself: the process `s3_interrupted_upload_is_listed_and_repaired` starts and
/// kills with SIGKILL in the middle of a multipart upload. Does nothing unless it is that process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_helper_process_uploading_when_killed() {
    let Ok(key) = std::env::var("REVERSA_S3_HELPER_KEY") else {
        return;
    };
    let srv = server().expect("the helper runs with the test server");
    let mut cfg = srv.config(&std::env::var("REVERSA_S3_HELPER_BUCKET").unwrap());
    cfg.prefix = std::env::var("REVERSA_S3_HELPER_PREFIX").unwrap();
    let proxy = fault_proxy(srv.upstream(), ProxyMode::StallRequestAfter(7 << 20)).await;
    cfg.endpoint = Some(proxy.url.clone());
    cfg.part_size = 5 << 20;
    cfg.max_concurrency = 1;
    // The longest allowed: the upload must still be hanging when the test kills this process.
    cfg.io_timeout = reversa::store::s3::MAX_IO_TIMEOUT;
    let store = S3Store::open(&cfg, OpenMode::Existing).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    let data = pattern_file(&path, 16 << 20);
    let r = store.put(&key, Body::File { path, len: data.len() as u64 }).await;
    panic!("the upload should hang until this process is killed, it ended: {r:?}");
}

/// Start `s3_helper_process_uploading_when_killed` in a child process, uploading `key`.
fn spawn_uploading_helper(cfg: &reversa::config::S3StoreConfig, key: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["s3_store::s3_helper_process_uploading_when_killed", "--exact", "--nocapture", "--test-threads=1"])
        .env("REVERSA_S3_HELPER_KEY", key)
        .env("REVERSA_S3_HELPER_BUCKET", &cfg.bucket)
        .env("REVERSA_S3_HELPER_PREFIX", &cfg.prefix)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn s3_interrupted_upload_is_listed_by_check_and_aborted_by_repair() {
    let Some(srv) = server() else { return };
    let mut cfg = block_on(srv.bucket("killed"));
    cfg.prefix = "reversa".into();
    let env = Env::with_store(&srv.store_section(&cfg));
    env.seed("comune-k", SMALL, 5);
    env.backup("comune-k");

    // A process killed with SIGKILL in the middle of a multipart upload of a pack.
    let key = "tenants/comune-k/data/ff/interrupted-upload";
    let mut helper = spawn_uploading_helper(&cfg, key);
    let direct = block_on(S3Store::open(&cfg, OpenMode::Existing)).unwrap();
    let seen = block_on(async {
        let n = wait_for_pending(&direct, "tenants/", |n| n > 0).await;
        // Let the first part land, so there is something to free.
        tokio::time::sleep(Duration::from_millis(500)).await;
        n
    });
    helper.kill().unwrap(); // SIGKILL: no destructor runs, nothing is aborted.
    let status = helper.wait().unwrap();
    assert_eq!(seen, 1, "the helper never started its upload (exit: {status:?})");
    assert!(block_on(direct.pending_uploads("tenants/")).unwrap().len() == 1);

    let c = env.run(&["check", "--tenant", "comune-k"]).ok();
    assert!(c.stdout.contains("leftover upload: tenants/comune-k/data/ff/interrupted-upload"), "{}", c.all());
    assert!(c.stdout.contains("check --repair"), "{}", c.all());
    let c = env.run(&["check", "--tenant", "comune-k", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&c.stdout).unwrap();
    assert_eq!(v[0]["leftover_uploads"][0]["key"], key);
    assert_eq!(v[0]["leftover_uploads"][0]["action"], "left");

    let c = env.run(&["check", "--tenant", "comune-k", "--repair"]).ok();
    assert!(c.stdout.contains("no problems") && c.stdout.contains(": aborted"), "{}", c.all());
    assert!(block_on(direct.pending_uploads("")).unwrap().is_empty());
    let c = env.run(&["check", "--tenant", "comune-k", "--read-data"]).ok();
    assert!(!c.stdout.contains("leftover upload") && c.stdout.contains("no problems"), "{}", c.all());
    assert!(block_on(direct.list("tenants/comune-k/locks/")).unwrap().is_empty(), "repair released its lock");

    // An export upload cut short is listed too; --repair keeps it while it may still be running
    // (less than a day old).
    let key = "exports/comune-k/20261123T000000Z-00000000/comune-k-20261123T000000Z-part1.zip";
    let mut helper = spawn_uploading_helper(&cfg, key);
    let seen = block_on(wait_for_pending(&direct, "exports/", |n| n > 0));
    helper.kill().unwrap();
    helper.wait().unwrap();
    assert_eq!(seen, 1, "the export upload never started");
    let c = env.run(&["check", "--tenant", "comune-k", "--repair", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&c.stdout).unwrap();
    assert_eq!(v[0]["leftover_uploads"][0]["key"], key, "{}", c.stdout);
    let action = v[0]["leftover_uploads"][0]["action"].as_str().unwrap();
    assert!(action.starts_with("kept: started less than a day ago"), "{action}");
    for u in block_on(direct.pending_uploads("")).unwrap() {
        block_on(direct.abort_upload(&u)).unwrap();
    }
}

#[test]
fn s3_two_backups_of_one_tenant_at_once_one_waits_or_fails_clearly() {
    let Some(srv) = server() else { return };
    let cfg = block_on(srv.bucket("twice"));
    let env = Env::with_store(&srv.store_section(&cfg));
    // Big enough that the two runs overlap.
    env.seed("comune-t", reversa::seed::Scale { rows: 2_000, file_bytes: 24 << 20, incompressible: 0.9 }, 3);
    // The tenant's key exists before the race (see the report on first backups of a new tenant).
    env.backup("comune-t");
    let attachments = env.tenant_dir("comune-t").join("attachments");
    std::fs::create_dir_all(&attachments).unwrap();
    std::fs::write(attachments.join("new.bin"), vec![7u8; 3 << 20]).unwrap();

    let spawn = || {
        env.cmd(&["backup", "--tenant", "comune-t", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let runs: Vec<Run> = [a, b].into_iter().map(|c| c.wait_with_output().unwrap().into()).collect();
    let ok = runs.iter().filter(|r| r.code == 0).count();
    eprintln!("two backups at once: exit codes {} and {}", runs[0].code, runs[1].code);
    assert!(ok >= 1, "at least one backup succeeds:\n{}\n{}", runs[0].all(), runs[1].all());
    for r in runs.iter().filter(|r| r.code != 0) {
        assert_eq!(r.code, 4, "a refused backup exits with the lock code:\n{}", r.all());
        assert!(r.stderr.contains("comune-t is locked by backup"), "{}", r.all());
    }
    let g = env.run(&["generations", "--tenant", "comune-t", "--json"]).ok();
    let gens: serde_json::Value = serde_json::from_str(&g.stdout).unwrap();
    assert_eq!(gens.as_array().unwrap().len(), 1 + ok);
    let c = env.run(&["check", "--tenant", "comune-t", "--read-data"]).ok();
    assert!(c.stdout.contains("no problems") && !c.stdout.contains("leftover"), "{}", c.all());
    let restored = env.restore("comune-t", None);
    assert_eq!(differences(&env.tenant_dir("comune-t"), &restored), Vec::<String>::new());
}

#[test]
fn s3_non_eu_region_and_endpoint_are_refused_before_any_request() {
    let Some(_srv) = server() else { return };
    // Counts every connection it is offered and closes it at once.
    let (port, connections) = failing_endpoint(None);
    let section = |region: &str, host: &str, extra: &str| {
        format!("[store]\nkind = \"s3\"\nbucket = \"reversa\"\nregion = \"{region}\"\nendpoint = \"http://{host}:{port}\"\n{extra}")
    };
    for (store, named) in [
        (section("us-east-1", "127.0.0.1", ""), "us-east-1"),
        (section("eu-west-2", "127.0.0.1", ""), "eu-west-2"),
        (section("eu-south-1", "s3.us-east-1.localhost", ""), "us-east-1"),
        (section("eu-central-1", "127.0.0.1", "allowed_regions = [\"eu-south-1\"]\n"), "eu-central-1"),
    ] {
        let env = Env::uninitialized(&store);
        for args in
            [vec!["init", "--generate-master-key", env.path("master.key").to_str().unwrap()], vec!["backup", "--all"]]
        {
            let r = env.run(&args);
            assert_eq!(r.code, 2, "refused as a configuration error:\n{store}\n{}", r.all());
            assert!(r.stderr.contains(named), "the refusal names the region:\n{}", r.all());
            assert!(r.stderr.contains("store.region") || r.stderr.contains("store.endpoint"), "{}", r.all());
        }
        if !store.contains("localhost") {
            let r = env.run(&["init"]);
            assert!(r.stderr.contains("allowed: eu-south-1"), "the refusal lists the allowed regions:\n{}", r.all());
        }
        assert!(!env.path("master.key").exists(), "nothing was done, not even the key file");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 0, "a refused configuration must not send anything");

    // The same listener does see a configuration that is allowed: the check above can fail.
    let env = Env::uninitialized(&section("eu-south-1", "127.0.0.1", "max_attempts = 1\n"));
    let r = env.run(&["init", "--generate-master-key", env.path("master.key").to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(connections.load(Ordering::SeqCst) > 0, "the allowed configuration connects:\n{}", r.all());
}

#[test]
fn s3_wrong_credentials_name_the_endpoint_and_key_id_never_the_secret() {
    let Some(srv) = server() else { return };
    let cfg = block_on(srv.bucket("creds"));
    let env = Env::with_store(&srv.store_section(&cfg));
    env.seed("comune-c", SMALL, 2);
    let good_id = std::env::var("AWS_ACCESS_KEY_ID").unwrap();
    let wrong_secret = "WrongSecretWrongSecretWrongSecret0000000";
    for (id, secret) in [(good_id.as_str(), wrong_secret), ("REVERSAUNKNOWNKEY000", wrong_secret)] {
        let r: Run = env
            .cmd(&["backup", "--tenant", "comune-c"])
            .env("AWS_ACCESS_KEY_ID", id)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .output()
            .unwrap()
            .into();
        assert_ne!(r.code, 0, "{}", r.all());
        let all = r.all();
        assert!(all.contains(&srv.endpoint) && all.contains(id), "names the endpoint and the key id:\n{all}");
        assert!(all.contains("refused the credentials"), "{all}");
        assert!(!all.contains(secret), "never the secret:\n{all}");
        assert!(!all.contains(&std::env::var("AWS_SECRET_ACCESS_KEY").unwrap()), "never the secret:\n{all}");
    }
}

#[test]
fn s3_missing_bucket_init_offers_to_create_it() {
    let Some(srv) = server() else { return };
    let bucket = format!("t-missing-{:08x}", rand::random::<u32>());
    let env = Env::uninitialized(&srv.store_section(&srv.config(&bucket)));
    let key = env.path("master.key");
    let r = env.run(&["init", "--generate-master-key", key.to_str().unwrap()]);
    assert_eq!(r.code, 2, "a missing bucket is how the store is set up: {}", r.all());
    assert!(
        r.stderr.contains(&format!("bucket {bucket} does not exist")) && r.stderr.contains("init --create-bucket"),
        "says so and offers to create it:\n{}",
        r.all()
    );
    // Nothing was written, so the same command with --create-bucket works.
    assert!(!key.exists(), "a failed init left the key file behind");
    let r = env.run(&["init", "--generate-master-key", key.to_str().unwrap(), "--create-bucket"]).ok();
    assert!(
        r.stdout.contains("initialized") && r.stdout.contains(&format!("bucket location: {}", srv.region)),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("conditional writes: honoured"), "{}", r.all());
    env.seed("comune-m", SMALL, 9);
    env.backup("comune-m");
    let restored = env.restore("comune-m", None);
    assert_eq!(differences(&env.tenant_dir("comune-m"), &restored), Vec::<String>::new());
    // A second init finds it all in place.
    let r = env.run(&["init"]).ok();
    assert!(r.stdout.contains("already initialized"), "{}", r.all());
}

/// A fake S3 endpoint that answers every request with `response` (or resets the connection when
/// it is `None`), counting the requests.
fn failing_endpoint(response: Option<&'static str>) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for mut conn in l.incoming().flatten() {
            c.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
            let _ = conn.read(&mut buf);
            if let Some(resp) = response {
                let _ = conn.write_all(resp.as_bytes());
            }
            // Dropping the connection closes it (a reset, when nothing was answered).
        }
    });
    (port, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_retries_are_bounded_and_the_error_names_the_object_and_cause() {
    let Some(srv) = server() else { return };
    const SLOW_DOWN: &str = "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: 85\r\nConnection: close\r\n\r\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
    for (response, cause) in [(Some(SLOW_DOWN), "SlowDown"), (None, "dispatch failure")] {
        let (port, count) = failing_endpoint(response);
        let mut cfg = srv.config("reversa-retries");
        cfg.endpoint = Some(format!("http://127.0.0.1:{port}"));
        cfg.max_attempts = 3;
        // connect() sends nothing: the failures below are the requests' own.
        let store = S3Store::connect(&cfg).await.unwrap();
        let e = store.get("tenants/comune-r/index/some-object").await.unwrap_err().to_string();
        assert!(e.contains("tenants/comune-r/index/some-object"), "names the object: {e}");
        assert!(e.contains(cause), "names the last cause: {e}");
        assert!(e.contains("gave up after up to 3 attempts"), "{e}");
        assert_eq!(count.load(Ordering::SeqCst), 3, "exactly max_attempts requests: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_create_if_absent_is_atomic_on_radosgw() {
    let Some(srv) = server() else { return };
    let cfg = srv.bucket("race").await;
    let store = Arc::new(S3Store::open(&cfg, OpenMode::Init { create_bucket: false }).await.unwrap());
    for round in 0..5 {
        let mut tasks = Vec::new();
        for i in 0..6 {
            let s = store.clone();
            let key = format!("race/{round}");
            tasks.push(tokio::spawn(async move {
                s.create_if_absent(&key, Bytes::from(format!("{i}-{}", rand::random::<u64>()))).await.unwrap()
            }));
        }
        let mut wins = 0;
        for t in tasks {
            wins += t.await.unwrap() as usize;
        }
        assert_eq!(wins, 1, "round {round}");
    }
}

/// Issue 4: an export uploaded to S3 gets a pre-signed link per part that a plain HTTP GET
/// (curl, no credentials) downloads, byte for byte.
#[test]
fn s3_export_upload_gives_links_that_download_with_a_plain_get() {
    let Some(srv) = server() else { return };
    let cfg = block_on(srv.bucket("export"));
    let env = Env::with_store(&srv.store_section(&cfg));
    env.seed("comune-x", SMALL, 4);
    let out = env.path("out");
    let r = env.run(&[
        "export",
        "--tenant",
        "comune-x",
        "--out",
        out.to_str().unwrap(),
        "--upload",
        "--split-size",
        "1MiB",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let links: Vec<&str> = r.stdout.lines().filter_map(|l| l.trim().strip_prefix("download: ")).collect();
    let keys: Vec<&str> = r.stdout.lines().filter_map(|l| l.trim().strip_prefix("uploaded ")).collect();
    assert!(links.len() >= 2 && links.len() == keys.len(), "{}", r.stdout);
    for (key, link) in keys.iter().zip(&links) {
        assert!(link.contains("X-Amz-Expires=259200"), "the link lasts [exports] link_ttl_hours (72 h): {link}");
        let name = key.rsplit('/').next().unwrap();
        let local = std::fs::read(out.join(name)).unwrap();
        let got =
            std::process::Command::new("curl").args(["-sf", "--max-time", "30", link]).env_clear().output().unwrap();
        assert!(got.status.success(), "GET {link} failed: {}", String::from_utf8_lossy(&got.stderr));
        assert_eq!(got.stdout, local, "{key} downloads byte for byte");
    }
    // The secret never appears in what the operator sees.
    assert!(!r.all().contains(&std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "unset".into())));
}
