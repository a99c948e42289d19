//! The S3 backend: a repository in any S3-compatible store (AWS, Garage, Ceph RGW, MinIO…).
//!
//! tokio lives only here: a private runtime runs `object_store`'s async client behind the
//! blocking [`Backend`] trait, so the engine above stays threads and channels; reads run on
//! the calling thread, each with its own small runtime and client (`readers`). Requests are
//! retried by the client with jittered exponential backoff on 5xx, throttling and connection
//! errors, within a total time cap; every object this backend writes has a content-derived
//! name, so retried puts are idempotent.
//!
//! Large objects (packs) go up as multipart uploads whose parts are sent concurrently.
//! [`Backend::put_new`] uses a conditional create (`If-None-Match: *`) where the server
//! honours it; correctness never depends on that (some servers, Garage among them, ignore
//! it): every key a repository creates-only is named by the hash of its content.

use std::ops::Range;
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientConfigKey, ClientOptions, ObjectStore, PutMode, PutOptions, PutPayload,
    RetryConfig, WriteMultipart,
};

use crate::lock::{LockPolicy, LOCK_KEY};
use crate::{now_ms, Backend, Error, Result};

mod get;
mod lock;
mod readers;
mod settings;
mod sigv4;

use settings::{allow_http_from_env, misconfiguration, Settings};

/// Objects at least this large are uploaded in parts.
const MULTIPART_THRESHOLD: usize = 16 << 20;
/// Part size of multipart uploads (S3's minimum is 5 MiB, except for the last part).
const PART_SIZE: usize = 8 << 20;

/// Where and how to reach an S3 repository. Unset fields come from the standard `AWS_*`
/// environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
/// `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`).
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// Endpoint URL (for servers other than AWS).
    pub endpoint: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Use `https://BUCKET.host/` addressing instead of `https://host/BUCKET/`.
    pub virtual_hosted: bool,
    /// Allow plain HTTP (loopback test servers); `false` leaves it to `AWS_ALLOW_HTTP`.
    pub allow_http: bool,
    /// Total time one request may spend retrying before it fails.
    pub retry_timeout: Option<Duration>,
}

/// A repository location `s3://BUCKET[/PREFIX]`.
pub struct S3Backend {
    store: AmazonS3,
    prefix: String,
    location: String,
    runtime: tokio::runtime::Runtime,
    /// How long a create-only PUT or a DELETE cut off in flight is asked again.
    retry_timeout: Duration,
    /// Object Lock's requests, which `object_store` cannot send (`None` without static
    /// credentials).
    lock: Option<lock::LockClient>,
    /// Ranged GETs over blocking sockets for restores (`None` where they do not apply).
    getter: Option<get::Getter>,
    /// The repository's lock policy once read (`Some(None)`: not locked).
    policy: std::sync::Mutex<Option<Option<LockPolicy>>>,
    /// Clients of the threads that read objects, each on its own thread (see `readers`).
    readers: readers::Readers,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend")
            .field("location", &self.location)
            .finish()
    }
}

/// Splits `s3://bucket/some/prefix` into bucket and prefix (without slashes at the ends).
pub fn parse_s3_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return None;
    }
    Some((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

impl S3Backend {
    /// Connects to `s3://BUCKET[/PREFIX]`. Nothing is sent until the first request.
    ///
    /// # Errors
    ///
    /// [`Error::Misconfigured`] when the settings, from `opts` and the environment, cannot
    /// work: a plain-HTTP endpoint not allowed, an endpoint that is not a URL, no region for
    /// AWS itself, no credentials for another server, half a key pair.
    pub fn new(url: &str, opts: &S3Options) -> Result<Self> {
        let (bucket, prefix) = parse_s3_url(url).ok_or_else(|| Error::Backend {
            location: url.to_string(),
            detail: "not an S3 URL; write s3://BUCKET or s3://BUCKET/PREFIX".into(),
        })?;
        let retry_timeout = opts.retry_timeout.unwrap_or(Duration::from_secs(60));
        let misconfigured = |(problem, fix): (String, String)| Error::Misconfigured {
            location: url.to_string(),
            problem,
            fix,
        };
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            // No SHA-256 of every payload for the signature: it costs as much CPU as the
            // compression, and integrity does not rest on it (each chunk is checked against
            // its BLAKE3 id when read; TLS protects the transport).
            .with_unsigned_payload(true)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: 10,
                retry_timeout,
            });
        if let Some(e) = &opts.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(r) = &opts.region {
            b = b.with_region(r);
        }
        if opts.virtual_hosted {
            b = b.with_virtual_hosted_style_request(true);
        }
        // The client's other options from the environment are not taken (some weaken TLS).
        let from_env = b.get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp));
        let allow_http = opts.allow_http || allow_http_from_env(from_env).map_err(misconfigured)?;
        let b = b.with_client_options(
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(10))
                .with_timeout(Duration::from_secs(120))
                .with_allow_http(allow_http),
        );
        if let Some(wrong) = misconfiguration(&Settings::of(&b, allow_http)) {
            return Err(misconfigured(wrong));
        }
        let lock = lock::lock_client(&b, &bucket, allow_http);
        let getter = get::Getter::new(&b, &bucket, allow_http);
        let reader_settings = b.clone();
        let store = b.build().map_err(|e| {
            misconfigured((
                format!(
                    "the S3 client rejects its settings ({})",
                    first_line(&e.to_string())
                ),
                "check the AWS_* environment variables and the --s3-* flags".into(),
            ))
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the S3 runtime", "", e))?;
        let location = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        Ok(S3Backend {
            store,
            prefix,
            readers: readers::Readers::new(reader_settings, &location),
            location,
            runtime,
            retry_timeout,
            lock,
            getter,
            policy: std::sync::Mutex::new(None),
        })
    }

    fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    /// Turns a client error into one line that says what to do.
    fn error(&self, key: &str, e: object_store::Error) -> Error {
        if let object_store::Error::NotFound { .. } = e {
            return Error::NotFound {
                what: format!("{}/{key}", self.location),
            };
        }
        Error::Backend {
            location: format!("{}/{key}", self.location),
            detail: describe(&e),
        }
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Checks that the bucket is reachable with these credentials (one small LIST).
    pub fn probe(&self) -> Result<()> {
        let prefix = self.path("config");
        self.block_on(async {
            let mut stream = self.store.list(Some(&prefix));
            match stream.next().await {
                Some(Err(e)) => Err(self.error("", e)),
                _ => Ok(()),
            }
        })
    }

    /// Whether the server refuses a create-only put of an existing key (`If-None-Match`).
    /// Writes and removes one probe object under `probe/`.
    pub fn honours_conditional_put(&self) -> Result<bool> {
        let key = format!(
            "probe/conditional-{}",
            chunker::hex::encode(&crate::random_bytes::<8>())
        );
        self.put(&key, b"1")?;
        // The raw conditional PUT, without the HEAD that `put_new` adds.
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let payload = PutPayload::from(bytes::Bytes::from_static(b"2"));
        let second = self.block_on(self.store.put_opts(&self.path(&key), payload, opts));
        let _ = self.delete(&key);
        match second {
            Ok(_) => Ok(false),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(true),
            Err(e) => Err(self.error(&key, e)),
        }
    }

    /// Makes this (new) repository immutable for `policy`'s window: checks that the bucket
    /// has Object Lock, writes the policy, and locks every object written so far.
    ///
    /// # Errors
    ///
    /// [`Error::Misconfigured`] when the bucket has no Object Lock, the credentials are not
    /// static, or the window is shorter than `grace_ms` (gc's grace period).
    pub fn enable_lock(&self, policy: LockPolicy, grace_ms: i64) -> Result<()> {
        self.check_lock(policy, grace_ms)?;
        let client = self.lock_client()?;
        *self.policy.lock().unwrap_or_else(|e| e.into_inner()) = Some(Some(policy));
        self.put(LOCK_KEY, policy.encode().as_bytes())?;
        let until = now_ms() + policy.window_ms();
        for key in self.list("")? {
            self.block_on(client.retain(&self.key_path(&key), policy.mode, until))?;
        }
        Ok(())
    }

    /// Refuses a lock policy this bucket cannot keep, writing nothing: see
    /// [`enable_lock`](Self::enable_lock).
    ///
    /// # Errors
    ///
    /// As `enable_lock`.
    pub fn check_lock(&self, policy: LockPolicy, grace_ms: i64) -> Result<()> {
        policy.check_grace(&self.location, grace_ms)?;
        let client = self.lock_client()?;
        if !self.block_on(client.bucket_lock_enabled())? {
            return Err(Error::Misconfigured {
                location: self.location.clone(),
                problem: "the bucket has no Object Lock, so its objects cannot be made \
                          immutable"
                    .into(),
                fix: "use a bucket created with Object Lock enabled, or init without \
                      --lock-days"
                    .into(),
            });
        }
        Ok(())
    }

    fn lock_client(&self) -> Result<&lock::LockClient> {
        self.lock.as_ref().ok_or_else(|| Error::Misconfigured {
            location: self.location.clone(),
            problem: "Object Lock needs static credentials, and none are set".into(),
            fix: "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
        })
    }

    /// The key with the repository's prefix, as the bucket names it.
    fn key_path(&self, key: &str) -> String {
        self.path(key).to_string()
    }

    /// After a write: the new object gets its retain-until date, if the repository is locked.
    fn lock_written(&self, key: &str) -> Result<()> {
        // Probe objects (`doctor`, `init`) are no part of the repository: never locked.
        if key.starts_with("probe/") {
            return Ok(());
        }
        let Some(policy) = self.lock_policy()? else {
            return Ok(());
        };
        // A pack starts a generation at once (see `crate::lock`): the backup that wrote it
        // then need not extend it before its commit.
        let generation = match key.starts_with("packs/") {
            true => crate::lock::GENERATION_MS,
            false => 0,
        };
        let until = now_ms() + policy.window_ms() + generation;
        let client = self.lock_client()?;
        self.block_on(client.retain(&self.key_path(key), policy.mode, until))
    }

    /// Deletes in a locked repository: an object still locked stays (and `Ok`: deletion waits
    /// until the lock ends, and gc finds it again then); one whose lock ended is deleted for
    /// good, its version and not only its name.
    fn delete_locked(&self, key: &str) -> Result<()> {
        let client = self.lock_client()?;
        let path = self.key_path(key);
        let head = match self.block_on(client.head(&path)) {
            Err(Error::NotFound { .. }) => return Ok(()),
            other => other?,
        };
        if let Some(until) = head.until_ms.filter(|u| *u > now_ms()) {
            tracing::info!(
                "{key} is locked until {}: left for a later run",
                sigv4::iso8601(until)
            );
            return Ok(());
        }
        match head.version {
            Some(v) if v != "null" => {
                if !self.block_on(client.delete_version(&path, &v))? {
                    tracing::info!("{key} is locked: left for a later run");
                }
                Ok(())
            }
            _ => self.delete_unlocked(key),
        }
    }

    /// What a ranged read that failed or came back with `got` bytes (not `len`) means: a
    /// range past the end is refused by the server, and a short answer is a truncation.
    fn range_error(
        &self,
        key: &str,
        offset: u64,
        len: usize,
        got: std::result::Result<usize, object_store::Error>,
    ) -> Error {
        let truncated = |detail: String| Error::Corrupt {
            what: format!("{}/{key}", self.location),
            detail: format!("truncated: {detail}"),
        };
        match got {
            Ok(n) => truncated(format!("{n} of {len} bytes at offset {offset}")),
            Err(e @ object_store::Error::NotFound { .. }) => self.error(key, e),
            Err(e) => match self.size(key) {
                Ok(size) if size < offset + len as u64 => {
                    truncated(format!("{len} bytes at offset {offset} are past its end"))
                }
                _ => self.error(key, e),
            },
        }
    }

    fn delete_unlocked(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        // A delete cut off in flight is asked again: deleting twice is deleting once.
        let deleted = until_settled(self.retry_timeout, |_| {
            Try::Done(match self.block_on(self.store.delete(&path)) {
                Err(object_store::Error::NotFound { .. }) => Ok(()),
                r => r,
            })
        });
        deleted.map_err(|e| self.error(key, e))
    }
}

/// Whether `e` is a request cut off in flight: the connection reset, aborted or closed in the
/// middle of the answer, or the request timed out. The client retries those only for
/// requests it knows to be idempotent, which excludes a create-only PUT and a DELETE: such a
/// request may or may not have taken effect. (Failures to connect, and connections closed
/// before the request went out, the client retries itself.)
fn cut_off(e: &object_store::Error) -> bool {
    use std::io::ErrorKind as K;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<reqwest::Error>() {
            if r.is_connect() {
                return false;
            }
            if r.is_timeout() {
                return true;
            }
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                K::TimedOut
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::BrokenPipe
                    | K::UnexpectedEof
            ) {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

/// One try of a request that mover repeats itself.
enum Try<T> {
    /// Finished, one way or the other.
    Done(std::result::Result<T, object_store::Error>),
    /// Not settled yet (another write of the object is in flight): look again later.
    Later(&'static str),
}

/// Runs `attempt` (told whether an earlier one was cut off or unsettled) until it finishes
/// without being cut off or `timeout` has passed, backing off from 100 ms to 5 s.
fn until_settled<T>(
    timeout: Duration,
    mut attempt: impl FnMut(bool) -> Try<T>,
) -> std::result::Result<T, object_store::Error> {
    let deadline = std::time::Instant::now() + timeout;
    let mut wait = Duration::from_millis(100);
    let mut again = false;
    loop {
        let why = match attempt(again) {
            Try::Done(Err(e)) if cut_off(&e) => e.to_string(),
            Try::Done(r) => return r,
            Try::Later(why) => why.to_string(),
        };
        if std::time::Instant::now() + wait >= deadline {
            return Err(object_store::Error::Generic {
                store: "S3",
                source: format!("{why} (gave up after {timeout:?})").into(),
            });
        }
        tracing::info!("asking again in {wait:?}: {why}");
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_secs(5));
        again = true;
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}

/// What a failed request means for the user, in one line. The client's text carries the
/// request's URL, and a bucket or prefix may hold any word or number (a random prefix once held
/// "403"), so the words are looked for only outside URLs.
fn describe(e: &object_store::Error) -> String {
    let text = e.to_string();
    let words: String = text
        .split_whitespace()
        .filter(|w| !w.contains("://"))
        .collect::<Vec<_>>()
        .join(" ");
    let any = |needles: &[&str]| needles.iter().any(|n| words.contains(n));
    if words.contains("NoSuchBucket") {
        "the bucket does not exist; create it or fix the name".to_string()
    } else if words.contains("AuthorizationHeaderMalformed") {
        // The request was signed for another region than the server's (Garage answers so to
        // any region but its own, us-east-1 when none is set).
        "the server expects another region; set --s3-region / AWS_REGION to the server's \
         region"
            .to_string()
    } else if matches!(
        e,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) || any(&[
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "status code: 403",
        "status code: 401",
        "403 Forbidden",
        "401 Unauthorized",
    ]) {
        "access denied; check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY and the bucket's permissions".to_string()
    } else if any(&[
        "error sending request",
        "client error (Connect)",
        "tcp connect error",
        "Connection refused",
        "connection refused",
        "operation timed out",
        "dns error",
    ]) {
        format!(
            "cannot reach the S3 endpoint; check --s3-endpoint / AWS_ENDPOINT_URL and the network ({})",
            first_line(&text)
        )
    } else {
        first_line(&text)
    }
}

impl Backend for S3Backend {
    fn location(&self) -> &str {
        &self.location
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let path = self.path(key);
        self.block_on(async {
            if data.len() < MULTIPART_THRESHOLD {
                let payload = PutPayload::from(bytes::Bytes::copy_from_slice(data));
                self.store.put(&path, payload).await.map(|_| ())
            } else {
                let upload = self.store.put_multipart(&path).await?;
                let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
                for part in data.chunks(PART_SIZE) {
                    writer.wait_for_capacity(4).await?;
                    writer.write(part);
                }
                writer.finish().await.map(|_| ())
            }
        })
        .map_err(|e| self.error(key, e))?;
        self.lock_written(key)
    }

    /// A HEAD first, then a conditional PUT. Servers that honour `If-None-Match` make this
    /// atomic; on servers that ignore it (Garage) two writers racing on one key may both
    /// "create" it. The repository only creates-only keys named by their content, so such a
    /// race writes the same bytes twice.
    ///
    /// A create cut off in flight may have landed, and the client itself sends a request
    /// again when the connection closed before it went out whole. So an object found holding
    /// exactly `data` counts as created where our own request may have made it: when the
    /// create itself is refused, and when it is looked up after an attempt cut off in flight
    /// (asked again within the retry timeout). A lost answer neither fails the write nor
    /// passes it off as someone else's.
    fn put_new(&self, key: &str, data: &[u8]) -> Result<bool> {
        let path = self.path(key);
        let data = bytes::Bytes::copy_from_slice(data);
        let opts = || PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        // Whether the object there holds `data`; `Later` while a refused create's object is
        // not yet visible (a conflicting write still in flight).
        let same = || async {
            match self.store.get(&path).await {
                Ok(got) => Try::Done(got.bytes().await.map(|b| b == data)),
                Err(object_store::Error::NotFound { .. }) => {
                    Try::Later("the create was refused, but the object is not there yet")
                }
                Err(e) => Try::Done(Err(e)),
            }
        };
        let created = until_settled(self.retry_timeout, |again| {
            self.block_on(async {
                match self.store.head(&path).await {
                    Ok(_) if again => return same().await,
                    Ok(_) => return Try::Done(Ok(false)),
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Try::Done(Err(e)),
                }
                let payload = PutPayload::from(data.clone());
                match self.store.put_opts(&path, payload, opts()).await {
                    Ok(_) => Try::Done(Ok(true)),
                    Err(object_store::Error::AlreadyExists { .. }) => same().await,
                    Err(e) => Try::Done(Err(e)),
                }
            })
        });
        let created = created.map_err(|e| self.error(key, e))?;
        if created {
            self.lock_written(key)?;
        }
        Ok(created)
    }

    /// Reads run on the calling thread (see `readers`).
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let path = self.path(key);
        let reader = self.readers.current()?;
        reader
            .block_on(async { reader.store.get(&path).await?.bytes().await })
            .map(Vec::from)
            .map_err(|e| self.error(key, e))
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let path = self.path(key);
        let range: Range<u64> = offset..offset + len as u64;
        let reader = self.readers.current()?;
        match reader.block_on(reader.store.get_range(&path, range)) {
            // Takes the buffer over when the client holds the only reference (no copy).
            Ok(b) if b.len() == len => Ok(Vec::from(b)),
            got => Err(self.range_error(key, offset, len, got.map(|b| b.len()))),
        }
    }

    /// Pieces go from the socket's reads to `piece`, never gathered into one buffer.
    fn get_range_pieces(
        &self,
        key: &str,
        offset: u64,
        len: usize,
        piece: &mut dyn FnMut(&[u8]),
    ) -> Result<()> {
        let path = self.path(key);
        // Blocking sockets first; what they hand back, object_store fetches (the rest).
        let (mut offset, mut len) = (offset, len);
        if let Some(getter) = &self.getter {
            match getter.get(path.as_ref(), offset, len, piece) {
                Ok(()) => return Ok(()),
                Err(d) => {
                    tracing::debug!(
                        "{}/{key}: ranged GET handed back: {}",
                        self.location,
                        d.reason
                    );
                    offset += d.delivered as u64;
                    len -= d.delivered;
                }
            }
        }
        let reader = self.readers.current()?;
        match reader.get_range_pieces(&path, offset..offset + len as u64, piece) {
            Ok(got) if got == len => Ok(()),
            got => Err(self.range_error(key, offset, len, got)),
        }
    }

    fn size(&self, key: &str) -> Result<u64> {
        let path = self.path(key);
        self.block_on(self.store.head(&path))
            .map(|m| m.size)
            .map_err(|e| self.error(key, e))
    }

    fn modified_ms(&self, key: &str) -> Result<Option<i64>> {
        let path = self.path(key);
        self.block_on(self.store.head(&path))
            .map(|m| Some(m.last_modified.timestamp_millis()))
            .map_err(|e| self.error(key, e))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let dir = dir.trim_end_matches('/');
        let prefix = if dir.is_empty() && self.prefix.is_empty() {
            None
        } else if dir.is_empty() {
            Some(Path::from(self.prefix.as_str()))
        } else {
            Some(self.path(dir))
        };
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        self.block_on(async {
            let mut out = Vec::new();
            let mut stream = self.store.list(prefix.as_ref());
            while let Some(meta) = stream.next().await {
                let meta = meta?;
                let full = meta.location.to_string();
                if let Some(key) = full.strip_prefix(&strip) {
                    out.push(key.to_string());
                }
            }
            Ok(out)
        })
        .map_err(|e| self.error(dir, e))
    }

    fn delete(&self, key: &str) -> Result<()> {
        match self.lock_policy()? {
            Some(_) if !key.starts_with("probe/") => self.delete_locked(key),
            _ => self.delete_unlocked(key),
        }
    }

    /// Read once from the repository's `lock` object.
    fn lock_policy(&self) -> Result<Option<LockPolicy>> {
        let mut cached = self.policy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = *cached {
            return Ok(p);
        }
        let policy = match self.get(LOCK_KEY) {
            Ok(bytes) => Some(
                LockPolicy::decode(&String::from_utf8_lossy(&bytes)).ok_or_else(|| {
                    Error::Corrupt {
                        what: format!("{}/{LOCK_KEY}", self.location),
                        detail: "not a lock policy".into(),
                    }
                })?,
            ),
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        *cached = Some(policy);
        Ok(policy)
    }

    fn locked_until_ms(&self, key: &str) -> Result<Option<i64>> {
        let client = self.lock_client()?;
        Ok(self.block_on(client.head(&self.key_path(key)))?.until_ms)
    }

    fn extend_lock(&self, key: &str, until_ms: i64) -> Result<()> {
        let Some(policy) = self.lock_policy()? else {
            return Ok(());
        };
        let client = self.lock_client()?;
        self.block_on(client.retain(&self.key_path(key), policy.mode, until_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(text: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: text.into(),
        }
    }

    /// A loopback "server" that takes each connection and then, by `how`: reads a little and
    /// closes with the rest unread (the kernel resets the connection), or stalls.
    fn misbehaving_server(how: &'static str) -> String {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                std::thread::spawn(move || match how {
                    "reset" => {
                        let mut head = [0u8; 16];
                        let _ = conn.read(&mut head);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    _ => std::thread::sleep(Duration::from_secs(3)),
                });
            }
        });
        format!("http://127.0.0.1:{port}")
    }

    /// The errors of a create-only PUT and of a DELETE against `endpoint`, through the same
    /// client mover uses (short timeouts).
    fn failures(endpoint: &str) -> Vec<object_store::Error> {
        let store = AmazonS3Builder::new()
            .with_bucket_name("b")
            .with_region("us-east-1")
            .with_access_key_id("a")
            .with_secret_access_key("s")
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(10),
                    max_backoff: Duration::from_millis(20),
                    base: 2.0,
                },
                max_retries: 1,
                retry_timeout: Duration::from_secs(1),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(Duration::from_millis(500))
                    .with_allow_http(true),
            )
            .build()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let path = Path::from("k");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let payload = PutPayload::from(vec![1u8; 100_000]);
        let put = rt.block_on(store.put_opts(&path, payload, opts));
        let delete = rt.block_on(store.delete(&path));
        vec![put.unwrap_err(), delete.unwrap_err()]
    }

    /// Real failures of the HTTP client, not errors built by hand: a reset or a timeout is a
    /// request cut off in flight; a refused connection is not (the client retries it).
    #[test]
    fn requests_cut_off_in_flight_are_recognised() {
        for e in failures(&misbehaving_server("reset")) {
            assert!(cut_off(&e), "reset: {e}");
        }
        for e in failures(&misbehaving_server("stall")) {
            assert!(cut_off(&e), "timeout: {e}");
        }
        for e in failures("http://127.0.0.1:1") {
            assert!(!cut_off(&e), "refused: {e}");
        }
        assert!(!cut_off(&generic(
            "Server returned non-2xx status code: 500"
        )));
    }

    #[test]
    fn unsettled_or_cut_off_attempts_are_repeated_until_the_timeout() {
        let reset = || object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        };
        // Cut off, then unsettled, then through: three attempts, the later two told so.
        let mut seen = Vec::new();
        let r = until_settled(Duration::from_secs(10), |again| {
            seen.push(again);
            match seen.len() {
                1 => Try::Done(Err(reset())),
                2 => Try::Later("not there yet"),
                _ => Try::Done(Ok(7)),
            }
        });
        assert_eq!(r.unwrap(), 7);
        assert_eq!(seen, [false, true, true]);
        // Any other error ends it at once; the timeout ends the rest.
        let mut n = 0;
        let r: std::result::Result<(), _> = until_settled(Duration::from_secs(10), |_| {
            n += 1;
            Try::Done(Err(generic("500")))
        });
        assert!(r.is_err() && n == 1);
        let mut n = 0;
        let r: std::result::Result<(), _> = until_settled(Duration::from_millis(250), |_| {
            n += 1;
            Try::Later("never there")
        });
        let e = r.unwrap_err().to_string();
        assert!(e.contains("never there") && e.contains("gave up"), "{e}");
        assert!((2..=3).contains(&n), "{n} attempts in 250 ms");
    }

    #[test]
    fn errors_are_read_outside_the_request_url() {
        // A random prefix that holds "403" and a bucket named "connect" mean nothing.
        let refused = generic(
            "Error performing GET http://127.0.0.1:1/connect/e2e-18ee25b4034ab018?list-type=2 \
             in 2s - error sending request: Connection refused",
        );
        assert!(describe(&refused).starts_with("cannot reach the S3 endpoint"));
        let denied = generic(
            "Error performing PUT http://h/b/x in 0s - Server returned non-2xx status code: \
             403 Forbidden: <Code>AccessDenied</Code>",
        );
        assert!(describe(&denied).starts_with("access denied"));
        let typed = object_store::Error::PermissionDenied {
            path: "x".into(),
            source: "no".into(),
        };
        assert!(describe(&typed).starts_with("access denied"));
        let other = generic("Error performing GET http://h/b/x-403-connect-dns in 0s - 500 boom");
        assert_eq!(describe(&other), other.to_string());
        let region = generic(
            "Error performing GET http://h/b?list-type=2 in 0s - Server returned non-2xx status \
             code: 400 Bad Request: <Error><Code>AuthorizationHeaderMalformed</Code><Message>\
             Authorization header malformed, unexpected scope: 20250101/us-east-1/s3/aws4_request",
        );
        assert!(describe(&region).contains("--s3-region"));
        let bucket = generic("GET http://h/NoSuchBucket/x - 500 Internal Server Error");
        assert!(!describe(&bucket).contains("bucket does not exist"));
    }

    #[test]
    fn urls() {
        assert_eq!(parse_s3_url("s3://b"), Some(("b".into(), String::new())));
        assert_eq!(
            parse_s3_url("s3://b/x/y/"),
            Some(("b".into(), "x/y".into()))
        );
        assert_eq!(parse_s3_url("s3:///x"), None);
        assert_eq!(parse_s3_url("/tmp/x"), None);
    }
}

/// The conformance suite against the real S3 servers the test scripts start (Garage and
/// s3s-fs). Their addresses come from `MOVER_TEST_<SERVER>_*` variables; with `CI=true` a
/// missing server is a failure, otherwise the test says loudly that it skipped.
#[cfg(test)]
mod server_tests {
    use std::sync::Arc;

    use super::*;
    use crate::{conformance, ChunkStore, Repository, RepositoryOptions};

    fn server(name: &str) -> Option<(String, S3Options)> {
        let var = |k: &str| std::env::var(format!("MOVER_TEST_{name}_{k}")).ok();
        let Some(endpoint) = var("ENDPOINT") else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "MOVER_TEST_{name}_ENDPOINT is not set: the S3 test servers did not start \
                 (run the tests through scripts/test.sh)"
            );
            eprintln!(
                "SKIPPED: no {name} server (MOVER_TEST_{name}_ENDPOINT unset); run scripts/test.sh"
            );
            return None;
        };
        // Credentials go through the standard variables, as for a user.
        std::env::set_var(
            "AWS_ACCESS_KEY_ID",
            var("ACCESS_KEY").expect("access key set"),
        );
        std::env::set_var(
            "AWS_SECRET_ACCESS_KEY",
            var("SECRET_KEY").expect("secret key set"),
        );
        let bucket = var("BUCKET").expect("bucket set");
        let prefix = format!(
            "conformance-{}",
            chunker::hex::encode(&crate::random_bytes::<8>())
        );
        let opts = S3Options {
            endpoint: Some(endpoint),
            region: var("REGION"),
            allow_http: true,
            ..Default::default()
        };
        Some((format!("s3://{bucket}/{prefix}"), opts))
    }

    fn conforms(name: &str, honours_conditional: bool) {
        // Both servers' tests share the process environment (AWS_* variables): run them one
        // after the other.
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let Some((url, opts)) = server(name) else {
            return;
        };
        let backend = S3Backend::new(&url, &opts).unwrap();
        backend.probe().unwrap();
        // Garage ignores If-None-Match, s3s-fs enforces it: the probe must tell them apart.
        assert_eq!(
            backend.honours_conditional_put().unwrap(),
            honours_conditional
        );
        conformance::backend(&backend);

        let repo_url = format!("{url}-repo");
        let backend: Arc<dyn Backend> = Arc::new(S3Backend::new(&repo_url, &opts).unwrap());
        Repository::init(backend.clone()).unwrap();
        let cache = tempfile::tempdir().unwrap();
        let options = RepositoryOptions {
            pack_size: 300_000,
            writers: 4,
            cache_dir: Some(cache.path().to_path_buf()),
            password: None,
            ..RepositoryOptions::default()
        };
        let repo = Repository::open(backend, options.clone()).unwrap();
        let reopen = || -> Box<dyn ChunkStore> {
            let b: Arc<dyn Backend> = Arc::new(S3Backend::new(&repo_url, &opts).unwrap());
            Box::new(Repository::open(b, options.clone()).unwrap())
        };
        conformance::chunk_store(&repo, &reopen);
        // The reopened store read its index from the cache; a cache entry that does not match
        // its name is ignored and fetched again.
        let cached: Vec<_> = walk(cache.path());
        assert!(!cached.is_empty(), "index segments are cached");
        for f in &cached {
            std::fs::write(f, b"garbage").unwrap();
        }
        assert!(
            Repository::open(
                Arc::new(S3Backend::new(&repo_url, &opts).unwrap()),
                options.clone()
            )
            .unwrap()
            .chunk_count()
                > 0,
            "a damaged cache entry is fetched again"
        );
        for f in &cached {
            let name = f.file_name().unwrap().to_str().unwrap();
            let bytes = std::fs::read(f).unwrap();
            assert_eq!(
                chunker::format::ObjectId::of(&bytes).to_hex(),
                name,
                "cache repaired"
            );
        }
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
        out
    }

    #[test]
    fn garage_conforms() {
        conforms("GARAGE", false);
    }

    #[test]
    fn s3s_fs_conforms() {
        conforms("S3S", true);
    }
}
