//! A link emulator: a user-space TCP proxy that makes a loopback server look distant (issue 18).
//!
//! The kernel of the benchmark machine has no `netem`, so the distance is emulated here. Each
//! direction of the link is modelled as a bottleneck followed by a wire:
//!
//! ```text
//! client ──read──▶ [token bucket: rate] ──stamp──▶ [delay queue: one-way delay] ──write──▶ server
//! ```
//!
//! - **Rate.** One token bucket per direction, shared by every connection through the proxy, as
//!   the connections of a real link share its capacity. A reader takes tokens for the bytes it
//!   has just read before it reads again, so a sender faster than the link fills its socket
//!   buffers and is slowed by TCP's own flow control.
//! - **Delay.** Each piece that passed the bucket is stamped and queued; a writer thread sends
//!   it once `delay` has passed since the stamp. The queue holds at most rate × delay bytes (the
//!   bucket feeds it), so it needs no bound of its own. A round trip costs `2 × delay`.
//!
//! Reads are at most [`PIECE`] bytes, so one piece takes 0.65 ms at 200 Mbit/s: the
//! granularity of the emulation. Both sockets set `TCP_NODELAY`; an end of stream is passed on
//! as a half-close (`shutdown(Write)`) after the data before it.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Largest read, in bytes: the granularity of the rate and the delay.
pub const PIECE: usize = 16 * 1024;

/// What the emulated link does to each direction.
#[derive(Clone, Copy, Debug)]
pub struct LinkOptions {
    /// Added one-way delay (a round trip adds twice this).
    pub delay: Duration,
    /// Cap in bytes per second for each direction; `None` for no cap.
    pub rate: Option<u64>,
}

/// Bytes that crossed the link so far, per direction.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Client to server.
    pub up: AtomicU64,
    /// Server to client.
    pub down: AtomicU64,
}

/// A token bucket that lends: a taker may overdraw and then sleeps off its debt, so pieces of
/// any size pass at the average rate and takers are served in the order they come.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(rate: u64) -> Self {
        let rate = rate as f64;
        // A few pieces, or 2 ms of the link, whichever is more: small enough not to show.
        let burst = (4.0 * PIECE as f64).max(rate * 0.002);
        Bucket {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    fn take(&self, bytes: usize) {
        let wait = {
            let mut s = self
                .state
                .lock()
                .expect("no thread panics holding the bucket");
            let now = Instant::now();
            let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
            s.0 = (s.0 + refill).min(self.burst) - bytes as f64;
            s.1 = now;
            if s.0 < 0.0 {
                -s.0 / self.rate
            } else {
                0.0
            }
        };
        if wait > 0.0 {
            thread::sleep(Duration::from_secs_f64(wait));
        }
    }
}

/// Pieces on the wire of one direction of one connection; `None` is the end of stream.
#[derive(Default)]
struct Wire {
    queue: Mutex<VecDeque<(Instant, Option<Vec<u8>>)>>,
    ready: Condvar,
}

impl Wire {
    fn push(&self, piece: Option<Vec<u8>>) {
        let mut q = self
            .queue
            .lock()
            .expect("no thread panics holding the wire");
        q.push_back((Instant::now(), piece));
        self.ready.notify_one();
    }

    fn pop(&self) -> (Instant, Option<Vec<u8>>) {
        let mut q = self
            .queue
            .lock()
            .expect("no thread panics holding the wire");
        loop {
            if let Some(item) = q.pop_front() {
                return item;
            }
            q = self
                .ready
                .wait(q)
                .expect("no thread panics holding the wire");
        }
    }
}

/// A running emulator: accepts on `local_addr` and forwards to the upstream address.
pub struct Link {
    local_addr: SocketAddr,
    counters: Arc<LinkCounters>,
}

impl Link {
    /// Binds `listen` and serves connections to `upstream` on a background thread for the rest
    /// of the process.
    pub fn start(listen: &str, upstream: SocketAddr, opts: LinkOptions) -> io::Result<Link> {
        let listener = TcpListener::bind(listen)?;
        let local_addr = listener.local_addr()?;
        let counters = Arc::new(LinkCounters::default());
        let buckets = [opts.rate.map(Bucket::new), opts.rate.map(Bucket::new)].map(Arc::new);
        let c = Arc::clone(&counters);
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (c, buckets) = (Arc::clone(&c), buckets.clone());
                thread::spawn(move || {
                    if let Err(e) = serve(client, upstream, opts.delay, &buckets, &c) {
                        eprintln!("link-emu: connection to {upstream}: {e}");
                    }
                });
            }
        });
        Ok(Link {
            local_addr,
            counters,
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Bytes forwarded so far.
    pub fn counters(&self) -> &LinkCounters {
        &self.counters
    }
}

fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    delay: Duration,
    buckets: &[Arc<Option<Bucket>>; 2],
    counters: &Arc<LinkCounters>,
) -> io::Result<()> {
    let server = TcpStream::connect(upstream)?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let up = spawn_direction(&client, &server, delay, &buckets[0], counters, true)?;
    let down = spawn_direction(&server, &client, delay, &buckets[1], counters, false)?;
    for h in up.into_iter().chain(down) {
        // A direction that failed has shut both sockets down; the other one then ends too.
        let _ = h.join();
    }
    Ok(())
}

/// Starts the reader and the writer of one direction, `from` → `to`.
fn spawn_direction(
    from: &TcpStream,
    to: &TcpStream,
    delay: Duration,
    bucket: &Arc<Option<Bucket>>,
    counters: &Arc<LinkCounters>,
    up: bool,
) -> io::Result<[thread::JoinHandle<()>; 2]> {
    let wire = Arc::new(Wire::default());
    let (mut src, src_other) = (from.try_clone()?, to.try_clone()?);
    let (w, bucket, counters) = (Arc::clone(&wire), Arc::clone(bucket), Arc::clone(counters));
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; PIECE];
        loop {
            match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Some(b) = bucket.as_ref() {
                        b.take(n);
                    }
                    let total = if up { &counters.up } else { &counters.down };
                    total.fetch_add(n as u64, Ordering::Relaxed);
                    w.push(Some(buf[..n].to_vec()));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    let _ = src_other.shutdown(Shutdown::Both);
                    break;
                }
            }
        }
        w.push(None);
    });
    let (mut dst, dst_other) = (to.try_clone()?, from.try_clone()?);
    let writer = thread::spawn(move || loop {
        let (stamp, piece) = wire.pop();
        let due = stamp + delay;
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        match piece {
            Some(p) => {
                if dst.write_all(&p).is_err() {
                    let _ = dst_other.shutdown(Shutdown::Both);
                    // Keep draining so the reader never waits on a full queue of a dead link.
                    while wire.pop().1.is_some() {}
                    return;
                }
            }
            None => {
                let _ = dst.shutdown(Shutdown::Write);
                return;
            }
        }
    });
    Ok([reader, writer])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        thread::spawn(move || {
            for s in l.incoming().flatten() {
                thread::spawn(move || {
                    let mut r = s.try_clone().expect("clone");
                    let mut w = s;
                    let _ = io::copy(&mut r, &mut w);
                    let _ = w.shutdown(Shutdown::Write);
                });
            }
        });
        addr
    }

    /// The added round trip is twice the one-way delay (plus at most 20 ms of scheduling), and
    /// a bulk transfer runs at the cap: over it by no more than the burst allows, under it by
    /// no more than 20% on a loaded machine. The echo sees every byte in order.
    #[test]
    fn delay_and_rate_are_honoured() {
        let delay = Duration::from_millis(25);
        let rate = 4_000_000; // 32 Mbit/s
        let link = Link::start(
            "127.0.0.1:0",
            echo_server(),
            LinkOptions {
                delay,
                rate: Some(rate),
            },
        )
        .expect("start");
        let mut s = TcpStream::connect(link.local_addr()).expect("connect");
        s.set_nodelay(true).expect("nodelay");

        let mut rtts = Vec::new();
        let mut byte = [0u8; 1];
        for i in 0..5u8 {
            let t = Instant::now();
            s.write_all(&[i]).expect("write");
            s.read_exact(&mut byte).expect("read");
            rtts.push(t.elapsed());
            assert_eq!(byte[0], i);
        }
        rtts.sort();
        let median = rtts[2];
        assert!(
            median >= 2 * delay,
            "round trip {median:?} shorter than 2 × {delay:?}"
        );
        assert!(
            median < 2 * delay + Duration::from_millis(20),
            "round trip {median:?}"
        );

        // 2 MB each way: 0.5 s at the cap, plus one round trip.
        let len = 2_000_000usize;
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = s.try_clone().expect("clone");
        let sent = data.clone();
        let t = Instant::now();
        let writer = thread::spawn(move || {
            w.write_all(&sent).expect("write");
            w.shutdown(Shutdown::Write).expect("shutdown");
        });
        let mut back = Vec::new();
        s.read_to_end(&mut back).expect("read");
        let secs = t.elapsed().as_secs_f64() - 2.0 * delay.as_secs_f64();
        writer.join().expect("writer");
        assert!(back == data, "the echo differs from what was sent");
        let measured = len as f64 / secs;
        let ratio = measured / rate as f64;
        assert!(
            (0.8..=1.1).contains(&ratio),
            "{measured:.0} B/s through a {rate} B/s cap"
        );
        assert_eq!(link.counters().up.load(Ordering::Relaxed), len as u64 + 5);
        assert_eq!(link.counters().down.load(Ordering::Relaxed), len as u64 + 5);
    }
}
