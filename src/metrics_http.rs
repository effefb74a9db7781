//! `tickloop metrics serve`: an engine's metrics page as Prometheus text over HTTP/1.1, in a
//! process of its own, so no client ever runs on the engine's thread.
//!
//! It owns a listening socket, a fixed pool of worker threads (`--max-connections`), a queue
//! of as many accepted connections, and the page it reads ([`PageSource`]). It never writes
//! to the page or signals the engine; it never holds more connections than the pool and its
//! queue (beyond, 503 at once), never reads more than [`MAX_REQUEST`] bytes of a request, and
//! never lets a client hold a worker past `--request-timeout-ms`. Only `GET /metrics` (or `/`)
//! is answered with metrics; nothing a client sends is echoed. SIGTERM or SIGINT stops it.

use crate::metrics_cmd::{PageSource, ServeArgs};
use anyhow::bail;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tickloop_ops::metrics::{render, render_serve_stats, render_up, ServeStats, RESPONSE_CODES};

/// The largest request read (request line and headers); larger gets 400.
const MAX_REQUEST: usize = 8192;
/// Bytes read and dropped after a response before closing (so the close is not a reset).
const LINGER_DRAIN: usize = 64 << 10;
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the workers share.
struct Shared {
    page: Mutex<PageSource>,
    stats: Mutex<ServeStats>,
    timeout: Duration,
}

impl Shared {
    fn count(&self, f: impl FnOnce(&mut ServeStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn respond_code(&self, code: u16) {
        if let Some(i) = RESPONSE_CODES.iter().position(|c| *c == code) {
            self.count(|s| s.responses[i] += 1);
        }
    }
}

/// What a complete (or impossible) request gets.
enum Route {
    Metrics,
    NotFound,
    BadMethod,
    BadRequest,
}

pub fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    check_args(args)?;
    let page = PageSource::open(&args.page, args.max_age)?;
    let listener = bind(args.listen)?;
    let local = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let stop = crate::interrupt::stop_flag();
    tracing::info!(
        "metrics of {} at http://{local}/metrics; SIGTERM or Ctrl-C stops it",
        page.path().display()
    );
    let shared = Arc::new(Shared {
        page: Mutex::new(page),
        stats: Mutex::new(ServeStats::default()),
        timeout: Duration::from_millis(args.request_timeout_ms as u64),
    });
    let workers = args.max_connections as usize;
    let (queue, jobs) = sync_channel::<(TcpStream, Instant)>(workers);
    let jobs = Arc::new(Mutex::new(jobs));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (shared, jobs) = (shared.clone(), jobs.clone());
            std::thread::spawn(move || work(&shared, &jobs))
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        if !readable(&listener, 200) {
            continue;
        }
        while let Ok((stream, _)) = listener.accept() {
            shared.count(|s| (s.accepted, s.open) = (s.accepted + 1, s.open + 1));
            if let Err(TrySendError::Full((stream, _)) | TrySendError::Disconnected((stream, _))) =
                queue.try_send((stream, Instant::now()))
            {
                refuse(&shared, stream);
            }
        }
    }
    drop(queue);
    for handle in handles {
        let _ = handle.join();
    }
    Ok(ExitCode::SUCCESS)
}

fn check_args(args: &ServeArgs) -> anyhow::Result<()> {
    if !(1..=1024).contains(&args.max_connections) {
        bail!(
            "--max-connections {} is not allowed: use 1 to 1024 (default 8)",
            args.max_connections
        );
    }
    if !(10..=600_000).contains(&args.request_timeout_ms) {
        bail!(
            "--request-timeout-ms {} is not allowed: use 10 to 600000 (default 2000)",
            args.request_timeout_ms
        );
    }
    if !args.allow_non_loopback && !is_loopback(args.listen.ip()) {
        bail!(
            "--listen {} is not a loopback address, and the exporter has no authentication: listen on 127.0.0.1:PORT or [::1]:PORT and scrape through a tunnel or a reverse proxy, or pass --allow-non-loopback to expose it on purpose",
            args.listen
        );
    }
    Ok(())
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "metrics serve: cannot listen on {addr}: the address is already in use (another exporter or program listens there; `ss -ltnp 'sport = :{}'` shows which): choose a free port with --listen",
            addr.port()
        ),
        io::ErrorKind::PermissionDenied => anyhow::anyhow!(
            "metrics serve: cannot listen on {addr}: permission denied (ports below 1024 need CAP_NET_BIND_SERVICE): choose a port of 1024 or more with --listen"
        ),
        _ => anyhow::anyhow!("metrics serve: cannot listen on {addr}: {e}"),
    })
}

/// Wait up to `ms` for a connection to accept (so the stop flag is looked at that often).
fn readable(listener: &TcpListener, ms: i32) -> bool {
    let mut fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut fd, 1, ms) > 0 }
}

/// Every worker is busy and the queue is full: 503 at once, then close.
fn refuse(shared: &Shared, stream: TcpStream) {
    shared.count(|s| (s.refused, s.open) = (s.refused + 1, s.open.saturating_sub(1)));
    let _ = stream.set_nonblocking(true);
    let _ = (&stream).write_all(&simple(
        503,
        "Service Unavailable",
        "Retry-After: 1\r\n",
        "busy\n",
    ));
    let _ = stream.shutdown(Shutdown::Write);
}

fn work(shared: &Shared, jobs: &Mutex<Receiver<(TcpStream, Instant)>>) {
    loop {
        let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok((stream, accepted)) = job else {
            return; // the queue is closed: stopping
        };
        serve_one(shared, stream, accepted + shared.timeout);
        shared.count(|s| s.open = s.open.saturating_sub(1));
    }
}

/// One exchange: read the request (within the deadline), answer, shut the write side, drain.
fn serve_one(shared: &Shared, mut stream: TcpStream, deadline: Instant) {
    let _ = stream.set_nonblocking(false);
    let mut request = [0u8; MAX_REQUEST];
    let mut len = 0;
    let route = loop {
        if let Some(route) = route(&request[..len]) {
            break route;
        }
        if len == request.len() {
            break Route::BadRequest;
        }
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            shared.count(|s| s.timed_out += 1);
            shared.respond_code(408);
            let _ = stream.write_all(&simple(408, "Request Timeout", "", "request timeout\n"));
            return;
        };
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut request[len..]) {
            Ok(0) => return, // closed before a whole request
            Ok(n) => len += n,
            // Interrupted, or the read timed out: the deadline check above answers 408.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return, // reset
        }
    };
    let response = respond(shared, route);
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let _ = stream.set_write_timeout(Some(left));
    if stream.write_all(&response).is_err() {
        shared.count(|s| s.timed_out += 1);
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < LINGER_DRAIN {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// Parse a request: `None` while incomplete; otherwise where it goes.
fn route(request: &[u8]) -> Option<Route> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(request) {
        Ok(httparse::Status::Partial) => None,
        Err(_) => Some(Route::BadRequest),
        Ok(httparse::Status::Complete(_)) => {
            let (Some(method), Some(path)) = (parsed.method, parsed.path) else {
                return Some(Route::BadRequest);
            };
            if method != "GET" {
                return Some(Route::BadMethod);
            }
            Some(match path.split('?').next().unwrap_or("") {
                "/metrics" | "/" => Route::Metrics,
                _ => Route::NotFound,
            })
        }
    }
}

fn respond(shared: &Shared, route: Route) -> Vec<u8> {
    let (code, response) = match route {
        Route::Metrics => match exposition(shared) {
            Ok(body) => (200, ok(&body)),
            Err(_) => (
                500,
                simple(
                    500,
                    "Internal Server Error",
                    "",
                    "the metrics could not be rendered\n",
                ),
            ),
        },
        Route::NotFound => (
            404,
            simple(
                404,
                "Not Found",
                "",
                "not found: the metrics are at /metrics\n",
            ),
        ),
        Route::BadMethod => (
            405,
            simple(
                405,
                "Method Not Allowed",
                "Allow: GET\r\n",
                "method not allowed: use GET\n",
            ),
        ),
        Route::BadRequest => (400, simple(400, "Bad Request", "", "bad request\n")),
    };
    shared.respond_code(code);
    response
}

/// The body: `tickloop_up`, the engine's series when it is up, the exporter's own counters.
fn exposition(shared: &Shared) -> io::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(16 << 10);
    {
        let mut page = shared.page.lock().unwrap_or_else(|e| e.into_inner());
        let seen = page.observe();
        let up = seen.is_up();
        render_up(&mut body, up, seen.age_ns)?;
        if let (true, Some(snapshot)) = (up, seen.snapshot) {
            render(snapshot, &mut body)?;
        }
    }
    let stats = *shared.stats.lock().unwrap_or_else(|e| e.into_inner());
    render_serve_stats(&stats, &mut body)?;
    Ok(body)
}

fn ok(body: &[u8]) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    response
}

/// A response with a short plain-text body; `extra` is whole header lines (each ending CRLF).
fn simple(code: u16, reason: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
    .into_bytes()
}
