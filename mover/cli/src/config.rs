//! The configuration file: named repositories, profiles (configured backup jobs) and hook sets,
//! so that `mover backup --profile vm1` runs a job without repeating its flags (issue 5).
//!
//! ```toml
//! [repositories.nas]
//! location = "s3://backups/vms"          # or a directory
//! s3_endpoint = "https://s3.example.net"
//! s3_region = "eu-1"
//! s3_path_style = true                   # false: BUCKET.host addressing
//! s3_allow_http = false
//! password_file = "/etc/mover/nas.pass"  # a path; never the secret itself
//!
//! [hooks.libvirt]
//! pre_snapshot = "virsh domfsfreeze vm1"
//! post_snapshot = "virsh domfsthaw vm1"
//! post_backup = "logger mover finished: $MOVER_STATUS"
//! timeout = 120                          # seconds, each hook
//!
//! [profiles.vm1]
//! repository = "nas"
//! hooks = "libvirt"
//! sources = ["root=/dev/vg0/vm1-root", "data=nbd+unix:///data?socket=/run/vm1.sock"]
//! name = "vm1"
//! chunk_size = "1MiB"                    # or a number of bytes
//! compression = 3
//! parent = "latest"                      # or "none"
//! bitmap = "mover"
//! change_id = "mover-1"
//! verify_changes = 16
//! attachments = ["/etc/libvirt/qemu/vm1.xml"]
//! ```
//!
//! # Where it is
//!
//! `--config FILE`, else `$XDG_CONFIG_HOME/mover/config.toml`, else
//! `~/.config/mover/config.toml` ([`Config::default_path`]). A missing default file is an
//! empty configuration; a missing file named explicitly is an error.
//!
//! # What it may hold
//!
//! Only the keys above: any other key is an error naming the key and the file, so a typo never
//! silently falls back to a default. **No secrets**: a key that looks like one
//! (`aws_secret_access_key`, `password`, `token`, …) is refused — secrets go in environment
//! variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`) or files (`password_file`).
//! Everything is checked when the file is loaded, every profile and reference included.
//!
//! # Precedence: flags > environment > file
//!
//! A profile never overrides what the caller said. [`Profile::arg_defaults`] turns it into
//! values of the `backup` arguments, keyed by their clap ids, and [`with_profile`] writes them
//! into the command line as flags (`--compression=9`) right after the subcommand — but only
//! for the arguments that were given neither on the command line nor by their environment
//! variable (`MOVER_REPO`). The real parse then sees one ordinary command line: the profile
//! acts exactly as if its flags had been typed, with the same validation (`--bitmap` needs
//! `--parent`, value ranges), and everything the caller gave wins. Settings whose environment
//! variables clap does not know (the `AWS_*` ones read by the S3 client) are left out when
//! that variable is set, so the environment wins there too. A list (`sources`,
//! `attachments`) is replaced as a whole by any `--source`/`--attach` given. A boolean the
//! profile turns on (`s3_allow_http`) cannot be turned off by a flag.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod args;
mod redact;

pub use args::with_profile;

/// What is wrong with a configuration file or a profile. Every message names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `--config FILE` names a file that does not exist.
    #[error("config file {path} not found; check --config")]
    NotFound {
        /// The file.
        path: String,
    },
    /// The file exists but cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, or a value of the wrong type.
    #[error("config file {path}: {detail}")]
    Syntax {
        /// The file.
        path: String,
        /// Line and what is wrong, one line.
        detail: String,
    },
    /// A key mover does not know (a typo, or a setting of another version).
    #[error("config file {path}: unknown key `{key}`; known keys there: {known}")]
    UnknownKey {
        /// The file.
        path: String,
        /// The dotted key, e.g. `profiles.vm1.compresion`.
        key: String,
        /// The keys allowed at that place.
        known: String,
    },
    /// A key that would hold a secret.
    #[error(
        "config file {path}: `{key}` would hold a secret; secrets go in environment variables \
         or files (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, password_file), never in the \
         config file"
    )]
    Secret {
        /// The file.
        path: String,
        /// The dotted key.
        key: String,
    },
    /// A value out of range, or a reference to something not defined.
    #[error("config file {path}: `{key}` {detail}")]
    Invalid {
        /// The file.
        path: String,
        /// The dotted key.
        key: String,
        /// What is wrong and what is allowed.
        detail: String,
    },
    /// `--profile NAME` names no profile of the file.
    #[error("no profile `{name}`: {known}")]
    NoProfile {
        /// The profile asked for.
        name: String,
        /// The file (or where it was looked for).
        path: String,
        /// Where it was looked for and what is there, or how to create the file.
        known: String,
    },
}

/// Result of this module.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// A named repository.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    /// A directory or `s3://BUCKET[/PREFIX]`.
    pub location: String,
    /// S3 endpoint URL, for servers other than AWS.
    pub s3_endpoint: Option<String>,
    /// S3 region.
    pub s3_region: Option<String>,
    /// Path-style addressing (`host/BUCKET`, the default) or virtual-hosted (`false`).
    pub s3_path_style: Option<bool>,
    /// Allow plain HTTP to the endpoint.
    pub s3_allow_http: Option<bool>,
    /// A file holding the repository password (for encryption; the secret stays in the file).
    pub password_file: Option<PathBuf>,
}

/// A named set of hooks (see `mover backup --help` for when each runs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSet {
    /// Run before the sources are opened (freeze, snapshot).
    pub pre_snapshot: Option<String>,
    /// Run once the sources are open (thaw).
    pub post_snapshot: Option<String>,
    /// Run after the backup with its outcome.
    pub post_backup: Option<String>,
    /// Time limit of each hook in seconds (1 to 86400).
    pub timeout: Option<u64>,
}

/// A size as written in the file: a number of bytes or a string with a unit (`"1MiB"`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    /// Bytes.
    Bytes(u64),
    /// `64KiB`, `1M`, `4MiB`, … (binary units).
    Text(String),
}

/// Which parent an incremental starts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParentPolicy {
    /// Always a full backup.
    #[default]
    None,
    /// The latest snapshot of the same name (`--parent latest`).
    Latest,
}

/// A profile as written in the file; [`Config::profile`] resolves it into a [`Profile`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    /// Name of a `[repositories.NAME]` table.
    pub repository: Option<String>,
    /// Name of a `[hooks.NAME]` table.
    pub hooks: Option<String>,
    /// `SRC`, or `NAME=SRC` for each disk of a multi-disk snapshot.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Snapshot name (`--name`).
    pub name: Option<String>,
    /// Fixed chunk size.
    pub chunk_size: Option<SizeValue>,
    /// zstd level, 1 to 19.
    pub compression: Option<i32>,
    /// Parent policy.
    pub parent: Option<ParentPolicy>,
    /// QEMU dirty bitmap to read changes from.
    pub bitmap: Option<String>,
    /// Change token to record.
    pub change_id: Option<String>,
    /// Chunks called clean to compare with the parent.
    pub verify_changes: Option<u64>,
    /// Small files stored with the snapshot.
    #[serde(default)]
    pub attachments: Vec<String>,
}

/// A loaded, checked configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file it was read from; `None` when there was none.
    #[serde(skip)]
    pub path: Option<PathBuf>,
    /// `[repositories.NAME]`.
    #[serde(default)]
    pub repositories: BTreeMap<String, Repository>,
    /// `[hooks.NAME]`.
    #[serde(default)]
    pub hooks: BTreeMap<String, HookSet>,
    /// `[profiles.NAME]`.
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileSpec>,
}

/// A profile with its repository and hook set resolved and its values checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// The profile's name.
    pub name: String,
    /// The repository's name and settings.
    pub repository: Option<(String, Repository)>,
    /// The hook set's name and commands.
    pub hooks: Option<(String, HookSet)>,
    /// `--source` values.
    pub sources: Vec<String>,
    /// `--name`.
    pub snapshot_name: Option<String>,
    /// `--chunk-size` in bytes (checked).
    pub chunk_size: Option<u32>,
    /// `--compression`.
    pub compression: Option<i32>,
    /// `--parent latest` or none.
    pub parent: ParentPolicy,
    /// `--bitmap`.
    pub bitmap: Option<String>,
    /// `--change-id`.
    pub change_id: Option<String>,
    /// `--verify-changes`.
    pub verify_changes: Option<u64>,
    /// `--attach` values.
    pub attachments: Vec<String>,
}

/// Default values for one `backup` argument, from a profile: the clap id and its values as
/// they would be written on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgDefault {
    /// The clap id (the field name in `BackupArgs`).
    pub id: &'static str,
    /// One value, or several for a repeatable argument.
    pub values: Vec<String>,
}

/// Every clap id [`Profile::arg_defaults`] may name: each must be an argument of `backup`
/// with a long name (the binary's tests check this).
#[cfg(test)]
pub const ARG_IDS: &[&str] = &[
    "repo",
    "s3_endpoint",
    "s3_region",
    "s3_virtual_hosted",
    "s3_allow_http",
    "source",
    "name",
    "chunk_size",
    "compression",
    "parent",
    "bitmap",
    "change_id",
    "verify_changes",
    "attach",
    "pre_snapshot",
    "post_snapshot",
    "post_backup",
    "hook_timeout",
];

const TOP_KEYS: &[&str] = &["repositories", "hooks", "profiles"];
const REPOSITORY_KEYS: &[&str] = &[
    "location",
    "s3_endpoint",
    "s3_region",
    "s3_path_style",
    "s3_allow_http",
    "password_file",
];
const HOOK_KEYS: &[&str] = &["pre_snapshot", "post_snapshot", "post_backup", "timeout"];
const PROFILE_KEYS: &[&str] = &[
    "repository",
    "hooks",
    "sources",
    "name",
    "chunk_size",
    "compression",
    "parent",
    "bitmap",
    "change_id",
    "verify_changes",
    "attachments",
];

impl Config {
    /// `$XDG_CONFIG_HOME/mover/config.toml`, else `$HOME/.config/mover/config.toml`; `None`
    /// when neither variable is set (or they are not absolute paths).
    pub fn default_path() -> Option<PathBuf> {
        default_path_from(
            std::env::var_os("XDG_CONFIG_HOME"),
            std::env::var_os("HOME"),
        )
    }

    /// Loads `path`, or the default file when `None`. A missing default file gives an empty
    /// configuration; a missing explicit file, unknown keys, secrets, bad values and dangling
    /// references are errors.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => match Self::default_path() {
                Some(p) => (p, false),
                None => return Ok(Config::default()),
            },
        };
        let shown = path.display().to_string();
        // A configuration file is small: one that never ends is not read past 16 MiB.
        let read = std::fs::File::open(&path).and_then(|f| {
            let bytes = mover::sys::read_to_limit(f, 16 << 20)?
                .ok_or_else(|| std::io::Error::other("larger than 16 MiB"))?;
            String::from_utf8(bytes)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
        });
        let text = match read {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Config::default())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::NotFound { path: shown })
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: shown,
                    source,
                })
            }
        };
        let mut config = Self::parse(&text, &shown)?;
        config.path = Some(path);
        Ok(config)
    }

    /// Parses and checks `text`; `origin` names it in errors (a file path).
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        let syntax = |e: toml::de::Error| ConfigError::Syntax {
            path: origin.to_string(),
            detail: one_line_toml_error(text, &e),
        };
        let table: toml::Table = toml::from_str(text).map_err(syntax)?;
        check_keys(&table, origin)?;
        let config: Config = toml::from_str(text).map_err(syntax)?;
        config.check(origin)?;
        Ok(config)
    }

    /// The profile `name` with its repository and hook set resolved.
    pub fn profile(&self, name: &str) -> Result<Profile> {
        let origin = self.origin();
        let Some(spec) = self.profiles.get(name) else {
            let known = if self.path.is_none() {
                format!("there is no config file {origin}; create it or give --config FILE")
            } else if self.profiles.is_empty() {
                format!("{origin} defines no profiles")
            } else {
                let names: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
                format!("{origin} defines {}", names.join(", "))
            };
            return Err(ConfigError::NoProfile {
                name: name.to_string(),
                path: origin,
                known,
            });
        };
        let dangling = |key: &str, what: &str| ConfigError::Invalid {
            path: origin.clone(),
            key: format!("profiles.{name}.{key}"),
            detail: format!("names {what}, which is not defined"),
        };
        let repository = match &spec.repository {
            Some(r) => Some((
                r.clone(),
                self.repositories
                    .get(r)
                    .ok_or_else(|| dangling("repository", r))?
                    .clone(),
            )),
            None => None,
        };
        let hooks = match &spec.hooks {
            Some(h) => Some((
                h.clone(),
                self.hooks
                    .get(h)
                    .ok_or_else(|| dangling("hooks", h))?
                    .clone(),
            )),
            None => None,
        };
        let chunk_size = match &spec.chunk_size {
            Some(s) => Some(chunk_size(s).map_err(|detail| ConfigError::Invalid {
                path: origin.clone(),
                key: format!("profiles.{name}.chunk_size"),
                detail,
            })?),
            None => None,
        };
        Ok(Profile {
            name: name.to_string(),
            repository,
            hooks,
            sources: spec.sources.clone(),
            snapshot_name: spec.name.clone(),
            chunk_size,
            compression: spec.compression,
            parent: spec.parent.unwrap_or_default(),
            bitmap: spec.bitmap.clone(),
            change_id: spec.change_id.clone(),
            verify_changes: spec.verify_changes,
            attachments: spec.attachments.clone(),
        })
    }

    fn origin(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => Self::default_path().map_or("~/.config/mover/config.toml".into(), |p| {
                p.display().to_string()
            }),
        }
    }

    /// Checks values and references (keys and types were checked by the parse).
    fn check(&self, origin: &str) -> Result<()> {
        let invalid = |key: String, detail: String| ConfigError::Invalid {
            path: origin.to_string(),
            key,
            detail,
        };
        let names = self
            .repositories
            .keys()
            .map(|n| ("repositories", n))
            .chain(self.hooks.keys().map(|n| ("hooks", n)))
            .chain(self.profiles.keys().map(|n| ("profiles", n)));
        for (table, name) in names {
            if !valid_name(name) {
                return Err(invalid(
                    format!("{table}.{name}"),
                    "is not a valid name; use letters, digits, `-` and `_` (at most 64)".into(),
                ));
            }
        }
        for (name, r) in &self.repositories {
            let key = |k: &str| format!("repositories.{name}.{k}");
            if r.location.trim().is_empty() {
                return Err(invalid(key("location"), "is empty".into()));
            }
            let s3_only = [
                ("s3_endpoint", r.s3_endpoint.is_some()),
                ("s3_region", r.s3_region.is_some()),
                ("s3_path_style", r.s3_path_style.is_some()),
                ("s3_allow_http", r.s3_allow_http.is_some()),
            ];
            if !r.location.starts_with("s3://") {
                if let Some((k, _)) = s3_only.iter().find(|(_, set)| *set) {
                    return Err(invalid(
                        key(k),
                        format!(
                            "applies to S3 repositories only, and location {} is not s3://",
                            r.location
                        ),
                    ));
                }
            }
        }
        for (name, h) in &self.hooks {
            if let Some(t) = h.timeout {
                if !(1..=86_400).contains(&t) {
                    return Err(invalid(
                        format!("hooks.{name}.timeout"),
                        format!("is {t}; give 1 to 86400 seconds"),
                    ));
                }
            }
        }
        for (name, p) in &self.profiles {
            let key = |k: &str| format!("profiles.{name}.{k}");
            let defined = |m: &mut dyn Iterator<Item = &String>| {
                let v: Vec<&str> = m.map(String::as_str).collect();
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.join(", ")
                }
            };
            if let Some(r) = &p.repository {
                if !self.repositories.contains_key(r) {
                    return Err(invalid(
                        key("repository"),
                        format!(
                            "names repository `{r}`, which is not defined (defined: {})",
                            defined(&mut self.repositories.keys())
                        ),
                    ));
                }
            }
            if let Some(h) = &p.hooks {
                if !self.hooks.contains_key(h) {
                    return Err(invalid(
                        key("hooks"),
                        format!(
                            "names hook set `{h}`, which is not defined (defined: {})",
                            defined(&mut self.hooks.keys())
                        ),
                    ));
                }
            }
            if let Some(s) = &p.chunk_size {
                chunk_size(s).map_err(|e| invalid(key("chunk_size"), e))?;
            }
            if let Some(c) = p.compression {
                if !(1..=19).contains(&c) {
                    return Err(invalid(
                        key("compression"),
                        format!("is {c}; give a zstd level from 1 to 19"),
                    ));
                }
            }
            if let Some(s) = p.sources.iter().find(|s| s.trim().is_empty()) {
                return Err(invalid(
                    key("sources"),
                    format!("holds an empty source {s:?}"),
                ));
            }
            if p.bitmap.is_some() && p.parent != Some(ParentPolicy::Latest) {
                return Err(invalid(
                    key("bitmap"),
                    "needs parent = \"latest\": a bitmap lists changes since a parent".into(),
                ));
            }
        }
        Ok(())
    }
}

impl Profile {
    /// The profile as defaults of `backup` arguments (see the module docs for the precedence
    /// rule). `env` looks up an environment variable; settings that the S3 client reads from
    /// the environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, …) are left out when it is set.
    pub fn arg_defaults(&self, env: &dyn Fn(&str) -> Option<OsString>) -> Vec<ArgDefault> {
        let set = |vars: &[&str]| vars.iter().any(|v| env(v).is_some_and(|x| !x.is_empty()));
        let mut out = Vec::new();
        let mut one = |id: &'static str, v: Option<String>| {
            if let Some(v) = v {
                out.push(ArgDefault {
                    id,
                    values: vec![v],
                });
            }
        };
        if let Some((_, r)) = &self.repository {
            one("repo", Some(r.location.clone()));
            if !set(&["AWS_ENDPOINT_URL", "AWS_ENDPOINT"]) {
                one("s3_endpoint", r.s3_endpoint.clone());
            }
            if !set(&["AWS_REGION", "AWS_DEFAULT_REGION"]) {
                one("s3_region", r.s3_region.clone());
            }
            if r.s3_path_style == Some(false) && !set(&["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"]) {
                one("s3_virtual_hosted", Some("true".into()));
            }
            if r.s3_allow_http == Some(true) && !set(&["AWS_ALLOW_HTTP"]) {
                one("s3_allow_http", Some("true".into()));
            }
        }
        one("name", self.snapshot_name.clone());
        one("chunk_size", self.chunk_size.map(|c| c.to_string()));
        one("compression", self.compression.map(|c| c.to_string()));
        if self.parent == ParentPolicy::Latest {
            one("parent", Some("latest".into()));
        }
        one("bitmap", self.bitmap.clone());
        one("change_id", self.change_id.clone());
        one("verify_changes", self.verify_changes.map(|v| v.to_string()));
        if let Some((_, h)) = &self.hooks {
            one("pre_snapshot", h.pre_snapshot.clone());
            one("post_snapshot", h.post_snapshot.clone());
            one("post_backup", h.post_backup.clone());
            one("hook_timeout", h.timeout.map(|t| t.to_string()));
        }
        for (id, list) in [("source", &self.sources), ("attach", &self.attachments)] {
            if !list.is_empty() {
                out.push(ArgDefault {
                    id,
                    values: list.clone(),
                });
            }
        }
        out
    }
}

fn default_path_from(xdg: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let abs = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    abs(xdg)
        .or_else(|| abs(home).map(|h| h.join(".config")))
        .map(|base| base.join("mover").join("config.toml"))
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// True for key names that would hold a secret (a `…_file` holding one is fine).
pub(crate) fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    if k.ends_with("_file") || k.ends_with("-file") {
        return false;
    }
    [
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "credential",
        "access_key",
    ]
    .iter()
    .any(|w| k.contains(w))
        || ["key", "api_key", "aws_access_key_id", "private_key"].contains(&k.as_str())
}

/// Refuses secret-looking keys anywhere, then unknown keys, naming the dotted key.
fn check_keys(table: &toml::Table, origin: &str) -> Result<()> {
    fn walk(prefix: &str, value: &toml::Value, origin: &str) -> Result<()> {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = format!("{prefix}{k}");
                    if is_secret_key(k) {
                        return Err(ConfigError::Secret {
                            path: origin.to_string(),
                            key,
                        });
                    }
                    walk(&format!("{key}."), v, origin)?;
                }
            }
            toml::Value::Array(items) => {
                for v in items {
                    walk(prefix, v, origin)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
    walk("", &toml::Value::Table(table.clone()), origin)?;
    let unknown = |key: String, known: &[&str]| ConfigError::UnknownKey {
        path: origin.to_string(),
        key,
        known: known.join(", "),
    };
    for (top, value) in table {
        let allowed = match top.as_str() {
            "repositories" => REPOSITORY_KEYS,
            "hooks" => HOOK_KEYS,
            "profiles" => PROFILE_KEYS,
            _ => return Err(unknown(top.clone(), TOP_KEYS)),
        };
        // A value of the wrong shape is reported by the typed parse, with its line.
        let Some(entries) = value.as_table() else {
            continue;
        };
        for (name, entry) in entries {
            let Some(fields) = entry.as_table() else {
                continue;
            };
            if let Some(k) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
                return Err(unknown(format!("{top}.{name}.{k}"), allowed));
            }
        }
    }
    Ok(())
}

/// `line N: message` from a TOML error (whose `Display` spans several lines).
fn one_line_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

fn chunk_size(s: &SizeValue) -> std::result::Result<u32, String> {
    let bytes = match s {
        SizeValue::Bytes(b) => *b,
        // The command line's parser: the same units, the same limits.
        SizeValue::Text(t) => crate::args::parse_size(t)?,
    };
    chunker::check_chunk_size(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const FULL: &str = r#"
[repositories.nas]
location = "s3://backups/vms"
s3_endpoint = "https://ops:hunter2@s3.example.net"
s3_region = "eu-1"
s3_path_style = false
s3_allow_http = true
password_file = "/etc/mover/nas.pass"

[repositories.local]
location = "/srv/mover"

[hooks.libvirt]
pre_snapshot = "virsh domfsfreeze vm1"
post_snapshot = "virsh domfsthaw vm1"
post_backup = "PGPASSWORD=s3cret psql -c 'select 1' --token abc"
timeout = 120

[profiles.vm1]
repository = "nas"
hooks = "libvirt"
sources = ["root=/dev/vg0/vm1-root", "data=/dev/vg0/vm1-data"]
name = "vm1"
chunk_size = "4MiB"
compression = 9
parent = "latest"
bitmap = "mover"
change_id = "mover-1"
verify_changes = 16
attachments = ["/etc/libvirt/qemu/vm1.xml"]

[profiles.plain]
sources = ["/var/lib/images/vm2.img"]
chunk_size = 65536
"#;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, "/etc/mover/config.toml")
    }

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    #[test]
    fn parses_every_key_and_resolves_a_profile() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.repositories.len(), 2);
        let p = c.profile("vm1").unwrap();
        assert_eq!(p.repository.as_ref().unwrap().0, "nas");
        assert_eq!(
            p.repository.as_ref().unwrap().1.s3_region.as_deref(),
            Some("eu-1")
        );
        assert_eq!(p.hooks.as_ref().unwrap().1.timeout, Some(120));
        assert_eq!(p.chunk_size, Some(4 << 20));
        assert_eq!(p.compression, Some(9));
        assert_eq!(p.parent, ParentPolicy::Latest);
        assert_eq!(p.verify_changes, Some(16));
        assert_eq!(p.sources.len(), 2);
        let plain = c.profile("plain").unwrap();
        assert_eq!(plain.chunk_size, Some(65536));
        assert_eq!(plain.parent, ParentPolicy::None);
        assert!(plain.repository.is_none() && plain.hooks.is_none());
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn defaults_cover_every_setting_and_only_known_ids() {
        let p = parse(FULL).unwrap().profile("vm1").unwrap();
        let d = p.arg_defaults(&no_env);
        let get = |id: &str| {
            d.iter()
                .find(|a| a.id == id)
                .map(|a| a.values.clone())
                .unwrap_or_default()
        };
        assert_eq!(get("repo"), ["s3://backups/vms"]);
        assert_eq!(get("s3_virtual_hosted"), ["true"]);
        assert_eq!(get("s3_allow_http"), ["true"]);
        assert_eq!(get("chunk_size"), [(4u32 << 20).to_string()]);
        assert_eq!(get("parent"), ["latest"]);
        assert_eq!(get("source").len(), 2);
        assert_eq!(get("hook_timeout"), ["120"]);
        assert_eq!(get("attach"), ["/etc/libvirt/qemu/vm1.xml"]);
        let mut ids: Vec<&str> = d.iter().map(|a| a.id).collect();
        ids.sort_unstable();
        let mut all = ARG_IDS.to_vec();
        all.sort_unstable();
        assert_eq!(ids, all, "the full profile sets every id exactly once");
    }

    #[test]
    fn environment_beats_the_file_for_s3_client_settings() {
        let p = parse(FULL).unwrap().profile("vm1").unwrap();
        let env = |k: &str| (k == "AWS_REGION" || k == "AWS_ENDPOINT_URL").then(|| "x".into());
        let d = p.arg_defaults(&env);
        assert!(d
            .iter()
            .all(|a| a.id != "s3_region" && a.id != "s3_endpoint"));
        assert!(d.iter().any(|a| a.id == "repo"));
        // An empty variable counts as unset.
        let empty = |k: &str| (k == "AWS_REGION").then(OsString::new);
        assert!(p.arg_defaults(&empty).iter().any(|a| a.id == "s3_region"));
    }

    #[test]
    fn secrets_are_refused_anywhere() {
        for (text, key) in [
            (
                "[repositories.a]\nlocation = \"s3://b\"\naws_secret_access_key = \"x\"",
                "repositories.a.aws_secret_access_key",
            ),
            (
                "[repositories.a]\nlocation = \"/r\"\npassword = \"x\"",
                "repositories.a.password",
            ),
            ("aws_access_key_id = \"AKIA\"", "aws_access_key_id"),
            ("[profiles.p]\napi_token = \"t\"", "profiles.p.api_token"),
        ] {
            let e = parse(text).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, ConfigError::Secret { .. }), "{msg}");
            assert!(msg.contains(key), "{msg}");
            assert!(
                msg.contains("secrets go in environment variables or files"),
                "{msg}"
            );
            assert!(msg.contains("/etc/mover/config.toml"), "{msg}");
            assert!(
                !msg.contains("\"x\"") && !msg.contains("AKIA"),
                "never echo it: {msg}"
            );
        }
        // A file holding the secret is fine.
        parse("[repositories.a]\nlocation = \"/r\"\npassword_file = \"/p\"").unwrap();
    }

    #[test]
    fn unknown_keys_are_named_with_their_file() {
        for (text, key) in [
            ("[profiles.p]\ncompresion = 3", "profiles.p.compresion"),
            (
                "[repositories.a]\nlocation = \"/r\"\nregion = \"x\"",
                "repositories.a.region",
            ),
            ("[hooks.h]\npre = \"true\"", "hooks.h.pre"),
            ("[jobs.x]\nsources = []", "jobs"),
        ] {
            let e = parse(text).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, ConfigError::UnknownKey { .. }), "{msg}");
            assert!(msg.contains(&format!("unknown key `{key}`")), "{msg}");
            assert!(msg.contains("/etc/mover/config.toml"), "{msg}");
        }
    }

    #[test]
    fn bad_values_and_references_are_errors() {
        let cases = [
            ("[profiles.p]\ncompression = 30", "profiles.p.compression"),
            (
                "[profiles.p]\nchunk_size = \"3MiB\"",
                "profiles.p.chunk_size",
            ),
            (
                "[profiles.p]\nchunk_size = \"1XB\"",
                "profiles.p.chunk_size",
            ),
            (
                "[profiles.p]\nrepository = \"nope\"",
                "profiles.p.repository",
            ),
            ("[profiles.p]\nhooks = \"nope\"", "profiles.p.hooks"),
            ("[profiles.p]\nbitmap = \"b\"", "profiles.p.bitmap"),
            ("[hooks.h]\ntimeout = 0", "hooks.h.timeout"),
            (
                "[repositories.a]\nlocation = \"/r\"\ns3_region = \"x\"",
                "repositories.a.s3_region",
            ),
            (
                "[repositories.a]\nlocation = \" \"",
                "repositories.a.location",
            ),
            ("[profiles.\"a b\"]\nname = \"x\"", "profiles.a b"),
        ];
        for (text, key) in cases {
            let e = parse(text).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, ConfigError::Invalid { .. }), "{text}: {msg}");
            assert!(msg.contains(&format!("`{key}`")), "{msg}");
        }
        for text in [
            "[profiles.p]\nparent = \"previous\"",
            "[profiles.p]\ncompression = \"high\"",
            "[profiles.p\n",
            "[repositories.a]\ns3_region = \"x\"",
        ] {
            let e = parse(text).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, ConfigError::Syntax { .. }), "{text}: {msg}");
            assert!(msg.contains("line ") && !msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn load_default_missing_is_empty_but_explicit_missing_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        let e = Config::load(Some(&missing)).unwrap_err();
        assert!(matches!(e, ConfigError::NotFound { .. }), "{e}");
        assert!(e.to_string().contains("none.toml"));
        let file = dir.path().join("config.toml");
        std::fs::write(&file, FULL).unwrap();
        let c = Config::load(Some(&file)).unwrap();
        assert_eq!(c.path.as_deref(), Some(file.as_path()));
        let e = c.profile("vm9").unwrap_err().to_string();
        assert!(e.contains("vm9") && e.contains("plain, vm1"), "{e}");
        let e = Config::default().profile("vm1").unwrap_err().to_string();
        assert!(e.contains("there is no config file"), "{e}");
        // The default location, from the environment as given.
        let xdg = default_path_from(Some("/x".into()), Some("/home/u".into()));
        assert_eq!(xdg, Some(PathBuf::from("/x/mover/config.toml")));
        let home = default_path_from(Some("relative".into()), Some("/home/u".into()));
        assert_eq!(
            home,
            Some(PathBuf::from("/home/u/.config/mover/config.toml"))
        );
        assert_eq!(default_path_from(None, None), None);
    }
}
