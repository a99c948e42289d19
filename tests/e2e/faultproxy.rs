//! A fault-injecting TCP proxy on loopback, in front of a real S3 server: on a fraction of
//! connections it answers 503, resets the connection (at once or in the middle of the
//! exchange) or stalls before passing bytes on. It can also pass create-only PUTs
//! (`If-None-Match: *`) on to the server and then cut the connection instead of relaying the
//! answer: the object lands, the client sees its request interrupted.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The rate that means "fail every connection outright".
const HARD: usize = usize::MAX;

pub struct FaultProxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
    /// Faults per 1000 connections.
    rate: Arc<AtomicUsize>,
    pub faults: Arc<AtomicUsize>,
    /// Answers to create-only PUTs still to be lost.
    lose: Arc<AtomicUsize>,
    /// Whether they are lost to a reset (else to an orderly close).
    lose_by_reset: Arc<AtomicBool>,
}

/// Which answers a connection loses: the budget, and whether the request in flight on it is
/// one whose answer is to be lost.
#[derive(Clone)]
struct Lose {
    budget: Arc<AtomicUsize>,
    by_reset: Arc<AtomicBool>,
    armed: Arc<AtomicBool>,
    /// The connection is being reset: nothing is shut down in order, the last close resets.
    resetting: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Proxies 127.0.0.1:PORT to `upstream` (host:port), faulting `per_mille` connections.
    pub fn start(upstream: &str, per_mille: usize) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let rate = Arc::new(AtomicUsize::new(per_mille));
        let faults = Arc::new(AtomicUsize::new(0));
        let lose = Arc::new(AtomicUsize::new(0));
        let upstream = upstream.to_string();
        let (stop2, rate2, faults2) = (stop.clone(), rate.clone(), faults.clone());
        let lose_by_reset = Arc::new(AtomicBool::new(false));
        let (lose2, by_reset2) = (lose.clone(), lose_by_reset.clone());
        std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        // Spread faults evenly, starting with the first connection, and
                        // cycle through the kinds of fault.
                        let rate = rate2.load(Ordering::SeqCst);
                        let hard = rate == HARD;
                        let rate = rate.min(1000);
                        let fault = ((n + 1) * rate).div_ceil(1000) != (n * rate).div_ceil(1000);
                        n += 1;
                        let kind = if fault {
                            faults2.fetch_add(1, Ordering::SeqCst) as u64 % if hard { 2 } else { 4 }
                        } else {
                            0
                        };
                        let (upstream, stop) = (upstream.clone(), stop2.clone());
                        let lose = Lose {
                            budget: lose2.clone(),
                            by_reset: by_reset2.clone(),
                            armed: Arc::new(AtomicBool::new(false)),
                            resetting: Arc::new(AtomicBool::new(false)),
                        };
                        std::thread::spawn(move || {
                            serve(client, &upstream, fault, kind, &stop, lose)
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy {
            port,
            stop,
            rate,
            faults,
            lose,
            lose_by_reset,
        }
    }

    /// The next `n` create-only PUTs reach the server, and their answers are lost: the
    /// connection is reset (`reset`) or closed in order instead.
    pub fn lose_create_answers(&self, n: usize, reset: bool) {
        self.lose_by_reset.store(reset, Ordering::SeqCst);
        self.lose.store(n, Ordering::SeqCst);
    }

    /// Create-only PUTs whose answers are still to be lost.
    pub fn answers_left_to_lose(&self) -> usize {
        self.lose.load(Ordering::SeqCst)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every connection fails at once (503 or reset): a server that is down for good.
    pub fn fail_everything(&self) {
        self.rate.store(HARD, Ordering::SeqCst);
    }

    /// Stops accepting and cuts every open connection, like a server that died.
    pub fn kill(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.kill();
    }
}

fn serve(
    mut client: TcpStream,
    upstream: &str,
    fault: bool,
    kind: u64,
    stop: &Arc<AtomicBool>,
    lose: Lose,
) {
    if fault {
        match kind {
            0 => {
                // 503 after the request head arrives.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && client.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let _ = client.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            1 => {
                // Reset at once.
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            2 => {
                // Stall, then carry on normally.
                std::thread::sleep(Duration::from_millis(1500));
            }
            _ => {
                // Cut in the middle of the exchange, after a few KiB.
                let cut = Some(4096 + (kind as usize) * 1000);
                return pipe(client, upstream, cut, stop, lose);
            }
        }
    }
    pipe(client, upstream, None, stop, lose);
}

fn pipe(
    client: TcpStream,
    upstream: &str,
    cut_after: Option<usize>,
    stop: &Arc<AtomicBool>,
    lose: Lose,
) {
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let stop2 = stop.clone();
    let lose2 = lose.clone();
    let up = std::thread::spawn(move || copy(c2, s2, None, &stop2, &lose2, Direction::Up));
    copy(server, client, cut_after, stop, &lose, Direction::Down);
    let _ = up.join();
}

/// Requests go up (a create-only PUT may arm the connection), answers come down (an armed
/// connection is cut instead).
#[derive(Clone, Copy)]
enum Direction {
    Up,
    Down,
}

/// Makes the last close of `s` reset the connection (SO_LINGER of zero) instead of ending it
/// in order.
fn reset_on_close(s: &TcpStream) {
    socket2::SockRef::from(s)
        .set_linger(Some(Duration::ZERO))
        .expect("set SO_LINGER");
}

fn is_create_only_put(bytes: &[u8]) -> bool {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(8192)]).to_ascii_lowercase();
    head.starts_with("put ") && head.contains("\r\nif-none-match: *")
}

fn copy(
    mut from: TcpStream,
    mut to: TcpStream,
    cut_after: Option<usize>,
    stop: &AtomicBool,
    lose: &Lose,
    direction: Direction,
) {
    from.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 16384];
    let mut total = 0;
    loop {
        if stop.load(Ordering::SeqCst) || lose.resetting.load(Ordering::SeqCst) {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                total += n;
                match direction {
                    Direction::Up
                        if is_create_only_put(&buf[..n])
                            && lose
                                .budget
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                                    b.checked_sub(1)
                                })
                                .is_ok() =>
                    {
                        lose.armed.store(true, Ordering::SeqCst);
                    }
                    Direction::Down if lose.armed.load(Ordering::SeqCst) => {
                        if lose.by_reset.load(Ordering::SeqCst) {
                            reset_on_close(&to);
                            lose.resetting.store(true, Ordering::SeqCst);
                        }
                        break;
                    }
                    _ => {}
                }
                if cut_after.is_some_and(|c| total > c) || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    if !lose.resetting.load(Ordering::SeqCst) {
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    }
}
