//! A small HTTP/1.1 server and client on `std::net`, enough for `/metrics`, a JSON API and one
//! dashboard page: GET and HEAD only, one request per connection (`Connection: close`), bounded
//! request heads, read and write timeouts, and a cap on concurrent connections.
//!
//! ```text
//!   TcpListener (non-blocking) ──accept──> thread per connection (at most MAX_CONNECTIONS)
//!        │  every 100 ms: stop flag?  every 1 s: tick() (rate samples)
//!        └─> parse "GET /path?query HTTP/1.1" ──> handler(&Request) -> Response ──> write, close
//! ```

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Connections served at once; more are answered 503.
const MAX_CONNECTIONS: usize = 64;
/// Read/write timeout of a connection.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the HTTP layer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listening socket could not be bound.
    #[error("binding HTTP to {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A client request failed.
    #[error("GET http://{addr}{path}: {message}")]
    Client {
        /// `host:port` asked.
        addr: String,
        /// Path asked for.
        path: String,
        /// What failed.
        message: String,
    },
}

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `GET` or `HEAD`.
    pub method: String,
    /// Path without the query, percent-decoded.
    pub path: String,
    /// Query parameters (last one wins), percent-decoded.
    pub query: BTreeMap<String, String>,
}

/// A response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Content type.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// 200 with a JSON body.
    pub fn json(v: &impl serde::Serialize) -> Response {
        match serde_json::to_vec_pretty(v) {
            Ok(body) => Response {
                status: 200,
                content_type: "application/json",
                body,
            },
            Err(e) => Response::error(500, &format!("serialising the answer: {e}")),
        }
    }

    /// 200 with a body of `content_type`.
    pub fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status: 200,
            content_type,
            body: body.into(),
        }
    }

    /// An error with a JSON body `{"error": message}`.
    pub fn error(status: u16, message: &str) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Answers one request.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// A running server; stopped by [`HttpServer::stop`] or on drop.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `addr` and serves `handler`; `tick` runs about once a second on the server thread.
    pub fn start(addr: SocketAddr, handler: Handler, mut tick: impl FnMut() + Send + 'static) -> Result<HttpServer, HttpError> {
        let listener = TcpListener::bind(addr).map_err(|source| HttpError::Bind { addr, source })?;
        let bound = listener.local_addr().map_err(|source| HttpError::Bind { addr, source })?;
        listener.set_nonblocking(true).map_err(|source| HttpError::Bind { addr, source })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let active = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::Builder::new()
            .name("weatherflow-http".into())
            .spawn(move || {
                let mut last_tick = Instant::now() - Duration::from_secs(1);
                while !flag.load(Ordering::Relaxed) {
                    if last_tick.elapsed() >= Duration::from_secs(1) {
                        last_tick = Instant::now();
                        tick();
                    }
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (handler, active) = (handler.clone(), active.clone());
                            if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                                active.fetch_sub(1, Ordering::SeqCst);
                                let _ = write_response(&stream, &Response::error(503, "too many connections"), false);
                                continue;
                            }
                            let spawned = std::thread::Builder::new().name("weatherflow-http-conn".into()).spawn(move || {
                                serve_connection(stream, &handler);
                                active.fetch_sub(1, Ordering::SeqCst);
                            });
                            if spawned.is_err() {
                                tracing::warn!("could not start an HTTP connection thread");
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(50)),
                        Err(e) => {
                            tracing::warn!(error = %e, "HTTP accept failed");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })
            .map_err(|source| HttpError::Bind { addr, source })?;
        Ok(HttpServer {
            addr: bound,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the accept thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_connection(mut stream: TcpStream, handler: &Handler) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    let end = loop {
        if let Some(i) = find(&head, b"\r\n\r\n") {
            break Some(i);
        }
        if head.len() > MAX_HEAD {
            let _ = write_response(&stream, &Response::error(431, "request head too large"), false);
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    };
    let Some(end) = end else { return };
    let text = String::from_utf8_lossy(&head[..end]);
    let (resp, head_only) = match parse_request_line(text.lines().next().unwrap_or("")) {
        Some(req) if req.method == "GET" || req.method == "HEAD" => {
            let head_only = req.method == "HEAD";
            let resp = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&req)))
                .unwrap_or_else(|_| Response::error(500, "internal error"));
            (resp, head_only)
        }
        Some(_) => (Response::error(405, "only GET and HEAD are served"), false),
        None => (Response::error(400, "malformed request line"), false),
    };
    let _ = write_response(&stream, &resp, head_only);
    let _ = stream.flush();
}

fn write_response(mut stream: &TcpStream, r: &Response, head_only: bool) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(&r.body)?;
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses `METHOD /path?query HTTP/1.x`.
pub fn parse_request_line(line: &str) -> Option<Request> {
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?;
    if !parts.next()?.starts_with("HTTP/1.") || !target.starts_with('/') {
        return None;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Some(Request {
        method,
        path: percent_decode(path),
        query,
    })
}

/// Decodes `%XX` escapes and `+` (as space); invalid escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                Ok(v) => {
                    out.push(v);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes a path segment (everything but unreserved characters).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

/// `GET http://addr/path` with a deadline; returns the status and body.
pub fn get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>), HttpError> {
    let err = |message: String| HttpError::Client {
        addr: addr.to_string(),
        path: path.to_string(),
        message,
    };
    let sock: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .map_err(|e| err(e.to_string()))?
        .next()
        .ok_or_else(|| err("no address".into()))?;
    let mut s = TcpStream::connect_timeout(&sock, timeout).map_err(|e| err(e.to_string()))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| err(e.to_string()))?;
    s.set_write_timeout(Some(timeout)).map_err(|e| err(e.to_string()))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(|e| err(e.to_string()))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| err(e.to_string()))?;
    let end = find(&raw, b"\r\n\r\n").ok_or_else(|| err("no response head".into()))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| err(format!("bad status line {:?}", head.lines().next())))?;
    Ok((status, raw[end + 4..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_parsed_and_decoded() {
        let r = parse_request_line("GET /api/stations/K%20JFK?limit=5&x=a+b HTTP/1.1").unwrap();
        assert_eq!(r.path, "/api/stations/K JFK");
        assert_eq!(r.query["limit"], "5");
        assert_eq!(r.query["x"], "a b");
        assert!(parse_request_line("GET nothing HTTP/1.1").is_none());
        assert!(parse_request_line("GET /").is_none());
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode(&percent_encode("a/b c%")), "a/b c%");
    }

    #[test]
    fn server_answers_get_refuses_post_and_stops() {
        let handler: Handler = Arc::new(|r: &Request| {
            if r.path == "/hello" {
                Response::ok("text/plain", format!("hi {}", r.query.get("n").cloned().unwrap_or_default()))
            } else {
                Response::error(404, "no such page")
            }
        });
        let ticks = Arc::new(AtomicUsize::new(0));
        let t = ticks.clone();
        let mut server = HttpServer::start("127.0.0.1:0".parse().unwrap(), handler, move || {
            t.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        let addr = server.addr().to_string();
        assert_ne!(server.addr().port(), 0);
        let (status, body) = get(&addr, "/hello?n=7", Duration::from_secs(5)).unwrap();
        assert_eq!((status, body.as_slice()), (200, &b"hi 7"[..]));
        assert_eq!(get(&addr, "/nope", Duration::from_secs(5)).unwrap().0, 404);
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(b"POST /hello HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        assert!(raw.starts_with("HTTP/1.1 405"), "{raw}");
        assert!(ticks.load(Ordering::Relaxed) >= 1);
        server.stop();
        assert!(get(&addr, "/hello", Duration::from_secs(2)).is_err(), "stopped");
    }
}
