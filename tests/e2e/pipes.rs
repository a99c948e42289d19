//! Streams: `mover restore --to - | head -c 10` and friends.

use std::io::Read;
use std::time::Duration;

use crate::util::*;

/// An image with more chunks (128) than a stream restore keeps in flight (at most 64), so the
/// reader going away happens while work is still queued.
fn big_snapshot(env: &Env) -> (String, Vec<u8>) {
    let src = env.path("big.img");
    let data = random_bytes(8 * MIB, 601);
    write_file(&src, &data);
    (
        text(&env.backup(&src, &[]), "snapshot_id").to_string(),
        data,
    )
}

#[test]
fn restore_to_a_closed_pipe_exits_1() {
    let env = Env::new();
    let (id, data) = big_snapshot(&env);
    let (mut child, line) = env.cmd("restore", &[id.as_str(), "--to", "-"]).spawn();
    let mut stdout = child.stdout.take().unwrap();
    let mut head = [0u8; 10];
    stdout.read_exact(&mut head).unwrap();
    assert_eq!(head, data[..10], "the first bytes of the image");
    // Give the restore time to fill its window, as a real `head` reading slowly would.
    std::thread::sleep(Duration::from_millis(300));
    drop(stdout); // like `head -c 10` exiting
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (status, hung) = wait_timeout(&mut child, Duration::from_secs(20));
    let err = err.join().unwrap();
    assert!(
        !hung,
        "`{line} | head -c 10` hung: mover did not exit within 20 s of its reader going away"
    );
    assert_eq!(
        status.code(),
        Some(1),
        "`{line} | head -c 10`: {status}\n{err}"
    );
    assert!(err.starts_with("mover: "), "{err}");
}

#[test]
fn restore_through_a_slow_reader() {
    // A reader slower than the restore: the bounded window must neither deadlock nor lose
    // order.
    let env = Env::new();
    let (id, data) = big_snapshot(&env);
    let (mut child, line) = env
        .cmd("restore", &[id.as_str(), "--to", "-", "--memory", "32MiB"])
        .spawn();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.len() < 2 * MIB {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    });
    let (status, hung) = wait_timeout(&mut child, Duration::from_secs(60));
    assert!(!hung, "`{line}` hung");
    assert!(status.success(), "`{line}`: {status}");
    assert_same(&reader.join().unwrap(), &data, "slow reader");
}
