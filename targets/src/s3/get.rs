//! Ranged GETs of pack bytes over blocking sockets, for restores (issue 18).
//!
//! Through `object_store` every piece of a response body that the socket delivers (some 16 KiB
//! on a link of a few hundred Mbit/s) costs a round of the async machinery: the runtime's
//! `epoll_wait`, hyper's and object_store's polling, a `recv`. Measured on a restore through a
//! 200 Mbit/s link, that was about 0.3 CPU seconds per GB on top of what a local restore
//! costs. Here the thread that asks writes a signed GET ([`super::sigv4`]) on a kept-alive
//! connection and reads the body with blocking reads straight into the caller's pieces: one
//! system call per piece, no hand-off.
//!
//! Only the simple case is taken: static credentials, no proxy in the environment (the HTTP
//! client honours `HTTPS_PROXY` and the like; this does not), a 206 answer with a
//! `Content-Length`. Anything else — an error status, a redirect, a broken connection — is
//! handed back to the caller, with the bytes already delivered, and the caller asks
//! `object_store` for the rest, with its retries and its error messages.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::sigv4::{encode, Signer, Target, Unsigned};
use crate::now_ms;

/// Idle connections kept at most.
const KEEP: usize = 64;
/// Longest a kept-alive connection waits for its next request.
const MAX_IDLE: Duration = Duration::from_secs(20);
/// Longest response head accepted.
const MAX_HEAD: usize = 64 << 10;

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

type Conn = BufReader<Box<dyn Stream>>;

/// Where and as whom ranged GETs go, and the idle connections.
pub(crate) struct Getter {
    signer: Signer,
    /// `host[:port]` as sent in the `host` header, and where to connect.
    host: String,
    connect: String,
    /// The server name for TLS (`None`: plain HTTP).
    tls: Option<rustls::pki_types::ServerName<'static>>,
    /// The bucket in the path (path-style requests), percent-encoded, with a leading `/`.
    bucket_path: String,
    /// Kept-alive connections, with when each was last used.
    idle: Mutex<Vec<(Conn, Instant)>>,
    /// Set once the server answered a GET in a way that will not change (a redirect, a
    /// refusal): object_store reads everything from then on.
    off: AtomicBool,
}

/// Why a GET was handed back.
#[derive(Debug)]
pub(crate) struct Declined {
    /// Bytes already handed to the caller's pieces.
    pub(crate) delivered: usize,
    pub(crate) reason: String,
}

impl Getter {
    /// A getter for the store `b` describes, or `None` where this path does not apply (no
    /// static credentials, a proxy in the environment, no TLS roots for HTTPS).
    pub(crate) fn new(
        b: &object_store::aws::AmazonS3Builder,
        bucket: &str,
        allow_http: bool,
    ) -> Option<Self> {
        let proxied = ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"]
            .iter()
            .any(|v| std::env::var_os(v).is_some() || std::env::var_os(v.to_lowercase()).is_some());
        if proxied {
            return None;
        }
        let Target {
            scheme,
            host,
            virtual_hosted,
            signer,
        } = Target::of(b, bucket, allow_http)?;
        // An endpoint with a path of its own is left to object_store.
        if host.contains('/') {
            return None;
        }
        let (name, port) = split_port(&host);
        let (name, port) = (name.to_string(), port.map(str::to_string));
        let (tls, default_port) = match scheme.as_str() {
            "http" => (None, "80"),
            "https" => {
                tls_config()?;
                let n = name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                (
                    Some(rustls::pki_types::ServerName::try_from(n).ok()?),
                    "443",
                )
            }
            _ => return None,
        };
        let port = port.unwrap_or_else(|| default_port.to_string());
        Some(Getter {
            signer,
            connect: format!("{name}:{port}"),
            host,
            tls,
            bucket_path: match virtual_hosted {
                true => String::new(),
                false => format!("/{}", encode(bucket, true)),
            },
            idle: Mutex::new(Vec::new()),
            off: AtomicBool::new(false),
        })
    }

    /// Hands bytes `offset..offset + len` of the object `key` to `piece` as they arrive.
    pub(crate) fn get(
        &self,
        key: &str,
        offset: u64,
        len: usize,
        piece: &mut dyn FnMut(&[u8]),
    ) -> std::result::Result<(), Declined> {
        let mut delivered = 0;
        if len == 0 {
            return Ok(());
        }
        if self.off.load(Ordering::Relaxed) {
            return Err(Declined {
                delivered,
                reason: "turned off after an earlier answer".into(),
            });
        }
        // A kept connection the server closed meanwhile fails before any answer: once more
        // on a fresh one.
        for fresh in [false, true] {
            let reused = !fresh && self.idle.lock().map(|i| !i.is_empty()).unwrap_or(false);
            match self.attempt(key, offset, len, piece, &mut delivered, !reused) {
                Ok(()) => return Ok(()),
                Err((answered, reason)) if answered || delivered > 0 || !reused => {
                    return Err(Declined { delivered, reason })
                }
                Err(_) => continue,
            }
        }
        Err(Declined {
            delivered,
            reason: "no connection".into(),
        })
    }

    /// One request; the error says whether the server answered at all.
    fn attempt(
        &self,
        key: &str,
        offset: u64,
        len: usize,
        piece: &mut dyn FnMut(&[u8]),
        delivered: &mut usize,
        fresh: bool,
    ) -> std::result::Result<(), (bool, String)> {
        let taken = match fresh {
            true => None,
            false => self.idle.lock().ok().and_then(|mut idle| {
                // One idle for long may have been dropped by the server or a NAT on the way.
                idle.retain(|(_, at)| at.elapsed() < MAX_IDLE);
                idle.pop().map(|(c, _)| c)
            }),
        };
        let mut conn = match taken {
            Some(c) => c,
            None => self.connect().map_err(|e| (false, e))?,
        };
        let path = format!("{}/{}", self.bucket_path, encode(key, false));
        let range = format!("bytes={}-{}", offset, offset + len as u64 - 1);
        let req = Unsigned {
            method: "GET",
            host: &self.host,
            path: &path,
            query: &[],
            headers: vec![("range".into(), range)],
            body: b"",
        };
        let mut head = format!("GET {path} HTTP/1.1\r\n");
        for (k, v) in self.signer.sign(&req, now_ms()) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let io = |e: std::io::Error| e.to_string();
        conn.get_mut()
            .write_all(head.as_bytes())
            .map_err(|e| (false, io(e)))?;
        let (status, length, close) = read_head(&mut conn).map_err(|e| (false, e))?;
        if status != 206 || length != Some(len as u64) {
            // A redirect or a refusal will be the same for the next request.
            if matches!(status, 300..=399 | 400 | 401 | 403 | 405 | 501) {
                self.off.store(true, Ordering::Relaxed);
            }
            return Err((true, format!("HTTP {status}, {length:?} bytes for {len}")));
        }
        let mut left = len;
        let mut buf = vec![0u8; len.min(1 << 20)];
        while left > 0 {
            let want = left.min(buf.len());
            let n = conn.read(&mut buf[..want]).map_err(|e| (true, io(e)))?;
            if n == 0 {
                return Err((true, format!("the connection closed {left} bytes early")));
            }
            piece(&buf[..n]);
            *delivered += n;
            left -= n;
        }
        if !close {
            if let Ok(mut idle) = self.idle.lock() {
                if idle.len() < KEEP {
                    idle.push((conn, Instant::now()));
                }
            }
        }
        Ok(())
    }

    fn connect(&self) -> std::result::Result<Conn, String> {
        // Each address in turn (an unreachable IPv6 one must not cost every connection).
        let mut last = String::from("no address");
        let mut tcp = None;
        for addr in self.connect.to_socket_addrs().map_err(|e| e.to_string())? {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
                Ok(t) => {
                    tcp = Some(t);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let tcp = tcp.ok_or(last)?;
        tcp.set_read_timeout(Some(Duration::from_secs(120)))
            .and_then(|()| tcp.set_write_timeout(Some(Duration::from_secs(120))))
            .and_then(|()| tcp.set_nodelay(true))
            .map_err(|e| e.to_string())?;
        let stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some(name) => {
                let config = tls_config().ok_or("no TLS roots")?;
                let tls = rustls::ClientConnection::new(config, name.clone())
                    .map_err(|e| e.to_string())?;
                Box::new(rustls::StreamOwned::new(tls, tcp))
            }
        };
        Ok(BufReader::with_capacity(64 << 10, stream))
    }
}

/// `host[:port]` (an IPv6 address in brackets) split into the host and the port.
fn split_port(hostport: &str) -> (&str, Option<&str>) {
    let after_host = hostport.rfind(']').map_or(0, |i| i + 1);
    match hostport[after_host..].rfind(':') {
        Some(i) => (
            &hostport[..after_host + i],
            Some(&hostport[after_host + i + 1..]),
        ),
        None => (hostport, None),
    }
}

/// The TLS configuration: the system's roots, as the HTTP client uses them.
fn tls_config() -> Option<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return None;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .ok()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(Arc::new(config))
        })
        .clone()
}

/// Reads a response head: the status, `Content-Length` and whether the server closes the
/// connection after this answer. A chunked body counts as no length.
fn read_head(conn: &mut Conn) -> std::result::Result<(u16, Option<u64>, bool), String> {
    let mut line = String::new();
    let mut total = 0;
    let mut status = None;
    let (mut length, mut close, mut chunked) = (None, false, false);
    loop {
        line.clear();
        let n = (&mut *conn)
            .take((MAX_HEAD - total) as u64 + 1)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        total += n;
        if n == 0 || total > MAX_HEAD {
            return Err("the connection closed before an answer".into());
        }
        let l = line.trim_end();
        if status.is_none() {
            let code = l.split(' ').nth(1).and_then(|c| c.parse::<u16>().ok());
            status = Some(code.ok_or_else(|| format!("not an HTTP answer: {l:.60}"))?);
            continue;
        }
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "content-length" => length = v.parse().ok(),
                "connection" => close = v.eq_ignore_ascii_case("close"),
                "transfer-encoding" => chunked = true,
                _ => {}
            }
        }
    }
    let status = status.unwrap_or(0);
    Ok((status, length.filter(|_| !chunked), close || chunked))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A getter for a server on loopback at `port`.
    fn getter(port: u16) -> Getter {
        let b = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_bucket_name("bucket")
            .with_region("here")
            .with_access_key_id("key")
            .with_secret_access_key("secret");
        Getter::new(&b, "bucket", true).expect("a getter for plain HTTP with static keys")
    }

    /// A server that answers each of `answers` on one connection after reading a request.
    fn serve(answers: Vec<Vec<u8>>) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for answer in answers {
                let (s, _) = l.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut head = String::new();
                while r.read_line(&mut head).unwrap() > 2 {}
                requests.push(head);
                (&s).write_all(&answer).unwrap();
            }
            requests
        });
        (port, t)
    }

    #[test]
    fn a_range_arrives_whole_and_is_signed() {
        let body = b"0123456789";
        let answer = [
            b"HTTP/1.1 206 Partial Content\r\nContent-Length: 4\r\nConnection: close\r\n\r\n"
                .to_vec(),
            body[3..7].to_vec(),
        ]
        .concat();
        let (port, server) = serve(vec![answer]);
        let mut got = Vec::new();
        getter(port)
            .get("packs/a b", 3, 4, &mut |p| got.extend_from_slice(p))
            .unwrap();
        assert_eq!(got, b"3456");
        let requests = server.join().unwrap();
        let head = requests[0].to_ascii_lowercase();
        assert!(
            head.starts_with("get /bucket/packs/a%20b http/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("range: bytes=3-6\r\n"), "{head}");
        assert!(
            head.contains("authorization: aws4-hmac-sha256 credential=key/"),
            "{head}"
        );
    }

    #[test]
    fn what_cannot_be_read_here_is_handed_back_with_the_bytes_delivered() {
        // A body cut short, an error status, a chunked body.
        let cut = [
            b"HTTP/1.1 206 Partial Content\r\nContent-Length: 8\r\n\r\n".to_vec(),
            b"abc".to_vec(),
        ]
        .concat();
        let refused = b"HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\n\r\n".to_vec();
        let chunked =
            b"HTTP/1.1 206 Partial Content\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                .to_vec();
        for (answer, delivered) in [(cut, 3), (refused, 0), (chunked, 0)] {
            let (port, server) = serve(vec![answer]);
            let mut got = Vec::new();
            let d = getter(port)
                .get("k", 0, 8, &mut |p| got.extend_from_slice(p))
                .unwrap_err();
            assert_eq!(d.delivered, delivered, "{}", d.reason);
            assert_eq!(got.len(), delivered);
            server.join().unwrap();
        }
    }

    #[test]
    fn ports_split_off_hosts_and_bracketed_addresses() {
        assert_eq!(split_port("s3.example.com"), ("s3.example.com", None));
        assert_eq!(split_port("127.0.0.1:3900"), ("127.0.0.1", Some("3900")));
        assert_eq!(split_port("[::1]:9000"), ("[::1]", Some("9000")));
        assert_eq!(split_port("[::1]"), ("[::1]", None));
    }
}
