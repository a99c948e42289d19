//! `mover support-bundle`: what support needs to diagnose a problem, in one `tar.zst` (the
//! `vm-support` of mover): versions and host facts, the environment with secrets redacted,
//! the configuration file redacted, doctor's report, a repository summary, and recent logs.

use std::io::Write;
use std::path::Path;

/// Variables whose values never leave the host.
const SECRET_VARS: [&str; 6] = [
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "MOVER_PASSWORD",
    "MOVER_NEW_PASSWORD",
    "AWS_ACCESS_KEY_ID",
    "RESTIC_PASSWORD",
];

/// A tar archive (POSIX ustar) being built in memory.
pub struct Tar(Vec<u8>);

impl Tar {
    pub fn new() -> Self {
        Tar(Vec::new())
    }

    /// Adds a regular file `name` (at most 99 bytes, relative) with `data`.
    pub fn add(&mut self, name: &str, data: &[u8]) {
        let mut h = [0u8; 512];
        let name = &name.as_bytes()[..name.len().min(99)];
        h[..name.len()].copy_from_slice(name);
        let octal = |h: &mut [u8; 512], at: usize, width: usize, v: u64| {
            let s = format!("{v:0w$o}\0", w = width - 1);
            h[at..at + width].copy_from_slice(s.as_bytes());
        };
        octal(&mut h, 100, 8, 0o644); // mode
        octal(&mut h, 108, 8, 0); // uid
        octal(&mut h, 116, 8, 0); // gid
        octal(&mut h, 124, 12, data.len() as u64); // size
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        octal(&mut h, 136, 12, now); // mtime
        h[148..156].copy_from_slice(b"        "); // checksum, spaces while summing
        h[156] = b'0'; // regular file
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.0.extend_from_slice(&h);
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
    }

    /// The archive, with its two closing zero blocks.
    pub fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}

/// Host and build facts.
pub fn versions() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let meminfo: String = read("/proc/meminfo")
        .lines()
        .take(3)
        .collect::<Vec<_>>()
        .join("\n");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "mover {}\nkernel: {}cpus: {cpus}\n{meminfo}\ncommand: {}\n",
        env!("CARGO_PKG_VERSION"),
        read("/proc/version"),
        std::env::args().collect::<Vec<_>>().join(" ")
    )
}

/// `MOVER_*`, `AWS_*` and `XDG_*` variables, secrets replaced by `<redacted>`.
pub fn environment() -> String {
    let mut lines: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("MOVER_") || k.starts_with("AWS_") || k.starts_with("XDG_"))
        .map(|(k, v)| {
            let secret = SECRET_VARS.contains(&k.as_str())
                || k.contains("SECRET")
                || k.contains("PASSWORD")
                || k.contains("TOKEN");
            if secret {
                format!("{k}=<redacted>")
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    lines.sort();
    lines.join("\n") + "\n"
}

/// The last `max` bytes of a log file.
pub fn log_tail(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

/// Compresses `tar` with zstd and writes it to `out` (a new file, or stdout for `-`).
pub fn write(out: &str, tar: Vec<u8>, force: bool) -> anyhow::Result<u64> {
    let zst = zstd::bulk::compress(&tar, 9)?;
    if out == "-" {
        let mut o = std::io::stdout().lock();
        o.write_all(&zst)?;
        o.flush()?;
        return Ok(zst.len() as u64);
    }
    let mut f = mover::create_destination(out, force)?;
    f.write_all(&zst)?;
    f.sync_all()?;
    Ok(zst.len() as u64)
}

/// `mover support-bundle`.
pub fn support_bundle(
    a: &crate::args::SupportBundleArgs,
    cli: &crate::args::Cli,
    secrets: &crate::repo::Secrets,
) -> anyhow::Result<crate::Exit> {
    use crate::cmd::doctor::{doctor_checks, doctor_repo_arg};
    use crate::output;
    let quiet = cli.quiet;
    let mut tar = Tar::new();
    tar.add("mover/versions.txt", versions().as_bytes());
    tar.add("mover/environment.txt", environment().as_bytes());
    let config = match crate::config::Config::load(cli.config.as_deref()) {
        Ok(c) => c.redacted(),
        Err(e) => format!("# the configuration file cannot be loaded: {e}\n"),
    };
    tar.add("mover/config.toml", config.as_bytes());
    let checks = doctor_checks(&a.doctor, secrets);
    let mut text = Vec::new();
    output::doctor_report(&checks, false, false, &mut text)?;
    tar.add("mover/doctor.txt", &text);
    if let Some(location) = &a.doctor.repo {
        let repo = doctor_repo_arg(&a.doctor, location);
        let summary = match crate::repo::open_repo(&repo, secrets).and_then(|r| Ok(r.snapshots()?))
        {
            Ok(list) => {
                let mut t = format!("{} snapshots\n", list.len());
                for (id, m) in &list {
                    t.push_str(&format!(
                        "{}  {}  {}  {} bytes  {} disk(s)\n",
                        &id.to_hex()[..12],
                        crate::human::timestamp(m.created_ms),
                        m.name,
                        m.total_len(),
                        m.disks.len()
                    ));
                }
                t
            }
            Err(e) => format!("cannot list snapshots: {}\n", crate::one_line(&e)),
        };
        tar.add("mover/repository.txt", summary.as_bytes());
    }
    for (i, log) in a.logs.iter().enumerate() {
        let name = std::path::Path::new(log)
            .file_name()
            .map_or_else(|| format!("log-{i}"), |n| n.to_string_lossy().into_owned());
        match log_tail(std::path::Path::new(log), 1 << 20) {
            Ok(data) => tar.add(&format!("mover/logs/{i}-{name}"), &data),
            Err(e) => tar.add(
                &format!("mover/logs/{i}-{name}.error"),
                e.to_string().as_bytes(),
            ),
        }
    }
    let bytes = write(&a.out, tar.finish(), a.force)?;
    if !quiet && a.out != "-" {
        note!("wrote support bundle {} ({bytes} bytes)", a.out);
    }
    Ok(crate::Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_holds_the_files_and_secrets_are_redacted() {
        let mut t = Tar::new();
        t.add("a.txt", b"hello");
        t.add("dir/b.txt", &[7u8; 600]);
        let tar = t.finish();
        assert_eq!(tar.len(), 512 + 512 + 512 + 1024 + 1024);
        assert_eq!(&tar[..5], b"a.txt");
        assert_eq!(&tar[512..517], b"hello");
        assert_eq!(&tar[257..262], b"ustar");
        // The checksum is the sum of the header with the checksum field as spaces.
        let mut h = tar[..512].to_vec();
        let stored = u64::from_str_radix(
            std::str::from_utf8(&h[148..154])
                .unwrap()
                .trim_matches(char::from(0)),
            8,
        )
        .unwrap();
        h[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, h.iter().map(|&b| u64::from(b)).sum::<u64>());

        std::env::set_var("AWS_SECRET_ACCESS_KEY", "s3cr3t");
        std::env::set_var("AWS_REGION", "garage");
        let env = environment();
        assert!(env.contains("AWS_SECRET_ACCESS_KEY=<redacted>"), "{env}");
        assert!(env.contains("AWS_REGION=garage"), "{env}");
        assert!(!env.contains("s3cr3t"));
    }
}
