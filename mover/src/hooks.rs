//! Hooks: commands run around the snapshot point and after a backup, like VCB's pre-freeze and
//! post-thaw scripts.
//!
//! A hook is a shell command line (`sh -c`), given the run's facts in `MOVER_*` environment
//! variables. Its stdout and stderr go to mover's stderr (stdout may carry data or JSON). It
//! runs in its own process group, and a hook still running at its time limit is killed with
//! the whole group.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// One hook to run.
#[derive(Clone, Debug)]
pub struct Hook {
    /// Which hook: `pre-snapshot`, `post-snapshot` or `post-backup` (also `MOVER_HOOK`).
    pub name: &'static str,
    /// The command line, run with `sh -c`.
    pub command: String,
    /// Time limit.
    pub timeout: Duration,
}

impl Hook {
    /// Runs the hook with `env` added to the environment; an error when it cannot start,
    /// exits non-zero, dies of a signal or runs past its time limit.
    pub fn run(&self, env: &[(&str, String)]) -> Result<()> {
        use std::os::unix::process::{CommandExt, ExitStatusExt};
        let fail = |detail: String| Error::Hook {
            hook: self.name,
            command: self.command.clone(),
            detail,
        };
        let stderr = std::io::stderr()
            .lock()
            .try_clone_stderr()
            .map_err(|e| fail(format!("cannot pass stderr: {e}")))?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&self.command)
            .env("MOVER_HOOK", self.name)
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                stderr.try_clone().map_err(|e| fail(e.to_string()))?,
            ))
            .stderr(Stdio::from(stderr))
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        tracing::info!("running {} hook: {}", self.name, self.command);
        let mut child = cmd
            .spawn()
            .map_err(|e| fail(format!("cannot start sh: {e}")))?;
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(fail(match (status.code(), status.signal()) {
                        (Some(code), _) => format!("exited with status {code}"),
                        (None, Some(sig)) => format!("was killed by signal {sig}"),
                        _ => format!("failed ({status})"),
                    }))
                }
                Ok(None) if start.elapsed() >= self.timeout => {
                    crate::sys::kill_group(child.id());
                    let _ = child.wait();
                    return Err(fail(format!(
                        "ran past its time limit of {} s and was killed; raise --hook-timeout",
                        self.timeout.as_secs()
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(fail(format!("cannot wait for it: {e}"))),
            }
        }
    }
}

trait TryCloneStderr {
    fn try_clone_stderr(&self) -> std::io::Result<std::os::fd::OwnedFd>;
}

impl<T: std::os::fd::AsFd> TryCloneStderr for T {
    fn try_clone_stderr(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        self.as_fd().try_clone_to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(cmd: &str, secs: u64) -> Hook {
        Hook {
            name: "pre-snapshot",
            command: cmd.into(),
            timeout: Duration::from_secs(secs),
        }
    }

    #[test]
    fn success_failure_environment_and_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let cmd = format!("echo \"$MOVER_HOOK $MOVER_SOURCE\" > {}", out.display());
        hook(&cmd, 10)
            .run(&[("MOVER_SOURCE", "disk.img".into())])
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "pre-snapshot disk.img\n"
        );
        let e = hook("exit 7", 10).run(&[]).unwrap_err().to_string();
        assert!(
            e.contains("pre-snapshot hook") && e.contains("status 7"),
            "{e}"
        );
        let start = Instant::now();
        let e = hook("sleep 30 & sleep 30", 1)
            .run(&[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("time limit"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
