//! The HTTP/1.1 server loop: hyper connections with the time limits a client cannot stretch.
//!
//! - **Header timeout** ([`ConnectionLimits::header_timeout`]): a request's head (request line
//!   and headers) must arrive whole within it, counted from when the connection waits for it, so
//!   it also closes a keep-alive connection on which no next request starts (hyper's
//!   `header_read_timeout`).
//! - **Body idle timeout** ([`ConnectionLimits::body_idle_timeout`]): while a handler reads the
//!   request body, no byte may take longer than this to come. Not a deadline for the whole body:
//!   a STOW-RS upload of hundreds of megabytes takes as long as it needs while bytes keep coming.
//! - **Idle timeout** ([`ConnectionLimits::idle_timeout`]): a connection on which no byte moves
//!   either way for this long while no handler is working on a request is closed, whatever it is
//!   doing: a client that stops reading an answer no longer holds it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// How long a client may take; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets open requests finish.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection holds a receiver: when all are dropped, every connection has finished.
    let (done_tx, done_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait, and accept again.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (router, stop, done) = (router.clone(), stop_rx.clone(), done_rx.clone());
        tokio::spawn(async move {
            connection(stream, router, limits, stop).await;
            tracing::debug!(%peer, "HTTP connection closed");
            drop(done);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_rx);
    done_tx.closed().await;
    Ok(())
}

/// What moves on one connection: when a byte last did, and how many requests a handler is
/// working on.
#[derive(Default)]
struct Activity {
    /// Milliseconds since `start` of the last byte read or written.
    last: AtomicU64,
    in_flight: AtomicUsize,
}

async fn connection(
    stream: tokio::net::TcpStream,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let start = Instant::now();
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
        start,
    });
    let tower = TowerToHyperService::new(router);
    let counting = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let req = req.map(|body| Body::new(IdleBody::new(body, limits.body_idle_timeout)));
        let in_flight = InFlight::new(counting.clone());
        let answer = tower.call(req);
        async move {
            let answer = answer.await;
            drop(in_flight);
            answer
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let tick = (limits.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut ticker = tokio::time::interval(tick);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = ticker.tick() => {
                let idle_for = start.elapsed().saturating_sub(Duration::from_millis(
                    activity.last.load(Ordering::Relaxed),
                ));
                if activity.in_flight.load(Ordering::Relaxed) == 0 && idle_for >= limits.idle_timeout {
                    tracing::info!(idle_secs = idle_for.as_secs(), "closing an idle HTTP connection");
                    return;
                }
            }
        }
    }
}

/// Counts a request as in a handler's hands while it lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A TCP stream that notes when a byte last moved.
struct Tracked {
    inner: tokio::net::TcpStream,
    activity: Arc<Activity>,
    start: Instant,
}

impl Tracked {
    fn moved(&self, n: usize) {
        if n > 0 {
            let now = self.start.elapsed().as_millis() as u64;
            self.activity.last.store(now, Ordering::Relaxed);
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.moved(buf.filled().len() - before);
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.moved(n);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.moved(n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The error a request body ends with when its client stops sending.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no byte of the request body for {0:?} (http_body_idle_timeout_secs)")]
pub struct BodyIdle(Duration);

/// A request body that fails with [`BodyIdle`] when no byte comes for `idle` while it is read.
struct IdleBody {
    inner: Incoming,
    idle: Duration,
    /// Armed while a read waits, from the moment it started waiting.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl IdleBody {
    fn new(inner: Incoming, idle: Duration) -> IdleBody {
        IdleBody {
            inner,
            idle,
            timer: None,
        }
    }
}

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.timer = None;
                        Poll::Ready(Some(Err(Box::new(BodyIdle(idle)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
