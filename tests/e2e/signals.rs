//! SIGINT and SIGTERM stop a backup promptly even while it is blocked on input that never
//! comes: a FIFO without a writer, a stdin that stalls, an attachment FIFO, an NBD server
//! that accepts and never answers. Exit 130, one line, nothing committed.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// Sends `sig` to `child` once it has had time to block, and checks that it ends with 130
/// within a few seconds, saying that nothing was committed.
fn interrupt_while_blocked(env: &Env, mut child: Child, sig: &str, what: &str) {
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        child.try_wait().unwrap().is_none(),
        "{what}: mover ended before the signal:\n{}",
        stderr_of(&mut child)
    );
    let sent = Instant::now();
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(ok.success());
    let (status, hung) = wait_timeout(&mut child, Duration::from_secs(15));
    let took = sent.elapsed();
    let err = stderr_of(&mut child);
    assert!(!hung, "{what}: mover hung after {sig}:\n{err}");
    assert_eq!(status.code(), Some(130), "{what}: {status}:\n{err}");
    assert!(
        took < Duration::from_secs(6),
        "{what}: {sig} took {took:?} to stop mover"
    );
    assert!(
        err.contains("interrupted; nothing was committed"),
        "{what}:\n{err}"
    );
    assert!(
        env.snapshots().is_empty(),
        "{what}: a snapshot was committed"
    );
}

fn mkfifo(path: &std::path::Path) {
    let ok = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(ok.success(), "mkfifo {}", path.display());
}

#[test]
fn sigint_stops_a_backup_of_a_fifo_without_a_writer() {
    let env = Env::new();
    let fifo = env.path("pipe");
    mkfifo(&fifo);
    let (child, _) = env.cmd("backup", &["--source"]).arg(&fifo).spawn();
    interrupt_while_blocked(&env, child, "-INT", "FIFO without a writer");
}

#[test]
fn sigterm_stops_a_backup_whose_stdin_stalls() {
    let env = Env::new();
    // stdin is a pipe this test holds open and never writes.
    let mut child = Command::new(mover_bin())
        .args(["backup", "-r"])
        .arg(&env.repo)
        .args(["--source", "-", "--name", "stalled"])
        .env_remove("MOVER_REPO")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take();
    interrupt_while_blocked(&env, child, "-TERM", "stalled stdin");
    drop(stdin);
}

#[test]
fn sigint_stops_a_backup_blocked_on_an_attachment_fifo() {
    let env = Env::new();
    let image = env.path("disk.img");
    write_file(&image, &random_bytes(1 << 20, 5));
    let fifo = env.path("vm.xml");
    mkfifo(&fifo);
    let (child, _) = env
        .cmd("backup", &["--source"])
        .arg(&image)
        .arg("--attach")
        .arg(&fifo)
        .spawn();
    interrupt_while_blocked(&env, child, "-INT", "attachment FIFO");
}

#[test]
fn sigint_stops_a_backup_from_an_nbd_server_that_never_answers() {
    let env = Env::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept connections and hold them, answering nothing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    let (child, _) = env
        .cmd(
            "backup",
            &["--source", &format!("nbd://127.0.0.1:{port}/x")],
        )
        .spawn();
    interrupt_while_blocked(&env, child, "-INT", "silent NBD server");
}
