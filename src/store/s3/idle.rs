//! The HTTP client of the `s3` store, with a progress-based idle timeout (`[store] io_timeout`).
//!
//! Why our own client: the SDK's `read_timeout` bounds a whole request, upload included, so it
//! cannot tell a hung server from a large part going up slowly; and the SDK gives no way to wrap
//! the socket of its own client. This one is hyper-util's pooled client over hyper-rustls, like
//! the SDK's, with every TCP stream wrapped in [`IdleIo`]: an attempt fails only when no byte has
//! moved in either direction for the limit (as pgBackRest's io-timeout does), and the SDK retries
//! it like any other timeout.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector as TcpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The error an idle connection fails with, inside an `io::ErrorKind::TimedOut`. `what` names
/// the setting, so that the final error tells the operator which knob it was.
#[derive(Debug)]
pub struct IdleTimeout {
    limit: Duration,
    what: &'static str,
}

impl fmt::Display for IdleTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no byte sent or received for {:?} ({})", self.limit, self.what)
    }
}

impl StdError for IdleTimeout {}

/// A transport that fails once nothing has moved, in either direction, for `limit`.
///
/// One "last progress" instant serves both directions: hyper keeps a read pending while it
/// uploads a body (to see an early response), so a read timer of its own would fire in the
/// middle of a long upload that is going well. Each direction has its own timer only so that
/// each keeps its own waker; a timer that fires after progress in the other direction is simply
/// re-armed.
///
/// The clock runs only while someone waits: a wait counts from the later of the last progress
/// and the start of the wait, so a body that our own code reads late (nothing polled, nothing
/// waited for) is not mistaken for a dead connection.
pub struct IdleIo<T> {
    inner: T,
    limit: Duration,
    what: &'static str,
    last: Instant,
    /// Since when a read, or a write, has been pending without any byte moving in it.
    read_wait: Option<Instant>,
    write_wait: Option<Instant>,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
}

#[derive(Clone, Copy)]
enum Direction {
    Read,
    Write,
}

impl<T> IdleIo<T> {
    fn new(inner: T, limit: Duration, what: &'static str) -> IdleIo<T> {
        let last = Instant::now();
        IdleIo {
            inner,
            limit,
            what,
            last,
            read_wait: None,
            write_wait: None,
            read_timer: Box::pin(tokio::time::sleep_until(last + limit)),
            write_timer: Box::pin(tokio::time::sleep_until(last + limit)),
        }
    }

    /// Pass on the inner transport's answer, noting progress when bytes `moved`. `Pending` waits,
    /// at most until the connection has been idle for `limit`.
    fn watch<R>(
        &mut self,
        dir: Direction,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<R>>,
        moved: bool,
    ) -> Poll<io::Result<R>> {
        let wait = match dir {
            Direction::Read => &mut self.read_wait,
            Direction::Write => &mut self.write_wait,
        };
        if poll.is_pending() {
            let since = *wait.get_or_insert_with(Instant::now);
            return self.idle(dir, since, cx).map(Err);
        }
        if moved {
            *wait = None;
            self.last = Instant::now();
        }
        poll
    }

    /// Fails once `limit` has passed since the later of the last progress and `since`, when the
    /// current wait began.
    fn idle(&mut self, dir: Direction, since: Instant, cx: &mut Context<'_>) -> Poll<io::Error> {
        let deadline = self.last.max(since) + self.limit;
        let timer = match dir {
            Direction::Read => &mut self.read_timer,
            Direction::Write => &mut self.write_timer,
        };
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, IdleTimeout { limit: self.limit, what: self.what }))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: Read + Unpin> Read for IdleIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        // Data or the end of the stream (the cursor is gone, so the two cannot be told apart;
        // after an end nothing more is read anyway).
        let moved = poll.is_ready();
        this.watch(Direction::Read, cx, poll, moved)
    }
}

impl<T: Write + Unpin> Write for IdleIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        let moved = wrote(&poll);
        this.watch(Direction::Write, cx, poll, moved)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        let moved = wrote(&poll);
        this.watch(Direction::Write, cx, poll, moved)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        // A flush moves no byte (a TCP flush is immediate): hyper flushes on every wake-up, and
        // counting that as progress would keep a dead connection alive.
        this.watch(Direction::Write, cx, poll, false)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(Direction::Write, cx, poll, false)
    }
}

/// Whether a write sent any byte (a write of nothing is no progress).
fn wrote(poll: &Poll<io::Result<usize>>) -> bool {
    matches!(poll, Poll::Ready(Ok(n)) if *n > 0)
}

impl<T: Connection> Connection for IdleIo<T> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

/// hyper-util's TCP connector, with each new stream wrapped in [`IdleIo`]. TLS goes on top
/// (hyper-rustls), so the handshake is covered by the same limit.
#[derive(Clone)]
struct IdleConnector {
    tcp: TcpConnector,
    limit: Duration,
    what: &'static str,
}

impl Service<Uri> for IdleConnector {
    type Response = IdleIo<TokioIo<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.tcp.call(uri);
        let (limit, what) = (self.limit, self.what);
        Box::pin(async move { Ok::<_, BoxError>(IdleIo::new(connecting.await?, limit, what)) })
    }
}

/// The SDK's view of the client: one connector (and so one connection pool) for every request.
#[derive(Clone)]
struct IdleHttp {
    client: Client<HttpsConnector<IdleConnector>, SdkBody>,
}

impl fmt::Debug for IdleHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdleHttp")
    }
}

impl HttpConnector for IdleHttp {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match request.try_into_http1x() {
            Ok(r) => r,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        let response = self.client.request(request);
        HttpConnectorFuture::new(async move {
            let response = response.await.map_err(classify)?;
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// Hands the SDK our connector. The SDK's connector settings are not used: the connect timeout
/// is set on the TCP connector (the same constant the SDK is given), and its read timeout is the
/// whole-request timeout this client exists to replace.
#[derive(Debug)]
struct IdleClient {
    connector: SharedHttpConnector,
}

impl HttpClient for IdleClient {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        self.connector.clone()
    }
}

/// A client whose connections fail once idle for `limit`; `what` names the setting in errors.
/// `https` says whether the endpoint needs the system's CA certificates (an `http://` endpoint on
/// this host must work on a machine without them).
pub fn client(
    limit: Duration,
    what: &'static str,
    connect_timeout: Duration,
    https: bool,
) -> Result<SharedHttpClient, String> {
    let mut tcp = TcpConnector::new();
    // hyper-rustls does the scheme check; the TCP connector must accept https URIs.
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(https)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(IdleConnector { tcp, limit, what });
    let mut builder = Client::builder(TokioExecutor::new());
    // A pooled connection is never handed out with less than half of its idle budget left: one
    // idle for about `limit` would time out just as a request starts on it.
    builder.pool_timer(TokioTimer::new()).pool_idle_timeout(limit / 2);
    let http = IdleHttp { client: builder.build(connector) };
    Ok(SharedHttpClient::new(IdleClient { connector: SharedHttpConnector::new(http) }))
}

/// rustls with aws-lc-rs (as the SDK's own client) and the system's CA certificates, loaded once
/// per process.
pub(crate) fn tls_config(https: bool) -> Result<rustls::ClientConfig, String> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    let roots = if https {
        let roots = ROOTS.get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            Arc::new(roots)
        });
        if roots.is_empty() {
            return Err("no CA certificates found on this system to check the endpoint's TLS certificate; \
                        install them (e.g. the ca-certificates package) or set SSL_CERT_FILE"
                .into());
        }
        roots.clone()
    } else {
        Arc::new(rustls::RootCertStore::empty())
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The errors the SDK's retry strategy must see as transient: a timeout (ours or the connect
/// timeout) or a connection that failed, was reset or closed. Anything else is `other`, which the
/// SDK does not retry.
fn classify(err: hyper_util::client::legacy::Error) -> ConnectorError {
    let timed_out = causes(&err).any(|e| {
        e.is::<IdleTimeout>() || e.downcast_ref::<io::Error>().is_some_and(|ioe| ioe.kind() == io::ErrorKind::TimedOut)
    });
    let hyper_err = causes(&err).find_map(|e| e.downcast_ref::<hyper::Error>());
    let user = hyper_err.is_some_and(|h| h.is_user());
    let broken = err.is_connect()
        || causes(&err).any(|e| e.is::<io::Error>())
        || hyper_err.is_some_and(|h| h.is_incomplete_message() || h.is_closed() || h.is_canceled());
    let err: BoxError = Box::new(err);
    if timed_out {
        ConnectorError::timeout(err)
    } else if user {
        ConnectorError::user(err)
    } else if broken {
        ConnectorError::io(err)
    } else {
        ConnectorError::other(err, None)
    }
}

/// `err` and its causes. After an `io::Error` comes its payload (`get_ref`): its `source()` would
/// skip the payload, which is where [`IdleTimeout`] sits.
fn causes<'a>(err: &'a (dyn StdError + 'static)) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |&e| match e.downcast_ref::<io::Error>() {
        Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
        None => e.source(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_error_names_the_setting_and_is_found_in_an_io_error() {
        let idle = IdleTimeout { limit: Duration::from_secs(2), what: "store.io_timeout" };
        let io = io::Error::new(io::ErrorKind::TimedOut, idle);
        assert_eq!(io.to_string(), "no byte sent or received for 2s (store.io_timeout)");
        assert!(causes(&io).any(|e| e.is::<IdleTimeout>()));
    }
}
