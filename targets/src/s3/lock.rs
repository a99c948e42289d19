//! S3 Object Lock requests, signed by [`super::sigv4`]: whether the bucket has Object Lock,
//! an object's retention (read from a HEAD, which every server with Object Lock answers),
//! setting it, and deleting one version of an object.

use reqwest::Method;

use super::sigv4::{canonical_query, encode, sha256_base64, Signer, Target, Unsigned};
use crate::lock::LockMode;
use crate::{now_ms, Error, Result};

/// Where and as whom the signed requests go.
#[derive(Debug)]
pub(crate) struct LockClient {
    pub(crate) signer: Signer,
    /// `http://host:port` or `https://host`, without a path.
    pub(crate) origin: String,
    /// Host (and port) as sent in the `host` header.
    pub(crate) host: String,
    pub(crate) bucket: String,
    pub(crate) virtual_hosted: bool,
    pub(crate) http: reqwest::Client,
}

/// A response: status, headers and body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The S3 error code of a failed request (`<Code>…</Code>`).
    pub(crate) fn code(&self) -> &str {
        tag(&self.body, "Code").unwrap_or("")
    }
}

/// The text inside the first `<name>…</name>` of `xml`.
pub(crate) fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

/// What a HEAD says about an object's lock.
#[derive(Clone, Debug, Default)]
pub(crate) struct Head {
    /// The current version (`None` on an unversioned bucket).
    pub(crate) version: Option<String>,
    /// Retain-until, ms since the epoch (`None`: not locked).
    pub(crate) until_ms: Option<i64>,
}

impl LockClient {
    /// Sends one signed request for `key` (`None`: the bucket itself).
    pub(crate) async fn send(
        &self,
        method: Method,
        key: Option<&str>,
        query: &[(&str, &str)],
        headers: Vec<(String, String)>,
        body: &[u8],
    ) -> Result<Answer> {
        let key_path = key
            .map(|k| format!("/{}", encode(k, false)))
            .unwrap_or_default();
        let path = match (self.virtual_hosted, key_path.is_empty()) {
            (true, true) => "/".to_string(),
            (true, false) => key_path,
            (false, _) => format!("/{}{key_path}", encode(&self.bucket, true)),
        };
        let req = Unsigned {
            method: method.as_str(),
            host: &self.host,
            path: &path,
            query,
            headers,
            body,
        };
        let signed = self.signer.sign(&req, now_ms());
        let q = canonical_query(query);
        let url = match q.is_empty() {
            true => format!("{}{path}", self.origin),
            false => format!("{}{path}?{q}", self.origin),
        };
        let mut r = self.http.request(method, &url).body(body.to_vec());
        for (k, v) in signed.iter().filter(|(k, _)| k != "host") {
            r = r.header(k.as_str(), v.as_str());
        }
        let fail = |e: reqwest::Error| Error::Backend {
            location: format!("s3://{}/{}", self.bucket, key.unwrap_or("")),
            detail: format!("cannot reach the S3 endpoint ({e})"),
        };
        let resp = r.send().await.map_err(fail)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.map_err(fail)?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    fn failed(&self, what: &str, key: &str, a: &Answer) -> Error {
        Error::Backend {
            location: format!("s3://{}/{key}", self.bucket),
            detail: format!("{what}: HTTP {} {}", a.status, a.code()),
        }
    }

    /// Whether the bucket has Object Lock enabled.
    pub(crate) async fn bucket_lock_enabled(&self) -> Result<bool> {
        let a = self
            .send(Method::GET, None, &[("object-lock", "")], vec![], b"")
            .await?;
        match a.status {
            200 => Ok(tag(&a.body, "ObjectLockEnabled") == Some("Enabled")),
            404 if a.code() != "NoSuchBucket" => Ok(false),
            _ => Err(self.failed("read the bucket's Object Lock configuration", "", &a)),
        }
    }

    /// The object's current version and retain-until date.
    pub(crate) async fn head(&self, key: &str) -> Result<Head> {
        let a = self.send(Method::HEAD, Some(key), &[], vec![], b"").await?;
        match a.status {
            200 => Ok(Head {
                version: a.header("x-amz-version-id").map(str::to_string),
                until_ms: a
                    .header("x-amz-object-lock-retain-until-date")
                    .and_then(super::sigv4::parse_iso8601),
            }),
            404 => Err(Error::NotFound {
                what: format!("s3://{}/{key}", self.bucket),
            }),
            _ => Err(self.failed("read the object's lock", key, &a)),
        }
    }

    /// Sets the object's retention to `until_ms` (later only: S3 refuses to shorten a lock).
    pub(crate) async fn retain(&self, key: &str, mode: LockMode, until_ms: i64) -> Result<()> {
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode>\
             <RetainUntilDate>{}</RetainUntilDate></Retention>",
            mode.s3_name(),
            super::sigv4::iso8601(until_ms)
        );
        let headers = vec![
            ("content-type".into(), "application/xml".into()),
            ("x-amz-sdk-checksum-algorithm".into(), "SHA256".into()),
            (
                "x-amz-checksum-sha256".into(),
                sha256_base64(body.as_bytes()),
            ),
        ];
        let a = self
            .send(
                Method::PUT,
                Some(key),
                &[("retention", "")],
                headers,
                body.as_bytes(),
            )
            .await?;
        match a.status {
            200 | 204 => Ok(()),
            404 => Err(Error::NotFound {
                what: format!("s3://{}/{key}", self.bucket),
            }),
            _ => Err(self.failed("set the object's retention", key, &a)),
        }
    }

    /// Deletes one version of the object for good. `Ok(false)` when the server refuses
    /// because the version is locked.
    pub(crate) async fn delete_version(&self, key: &str, version: &str) -> Result<bool> {
        let a = self
            .send(
                Method::DELETE,
                Some(key),
                &[("versionId", version)],
                vec![],
                b"",
            )
            .await?;
        match a.status {
            200 | 204 | 404 => Ok(true),
            403 if a.code() == "AccessDenied" => Ok(false),
            _ => Err(self.failed("delete the object's version", key, &a)),
        }
    }
}

/// The signed-request client for the store `b` describes, or `None` when it has no static
/// credentials (Object Lock then cannot be used).
pub(crate) fn lock_client(
    b: &object_store::aws::AmazonS3Builder,
    bucket: &str,
    allow_http: bool,
) -> Option<LockClient> {
    let t = Target::of(b, bucket, allow_http)?;
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .ok()?;
    Some(LockClient {
        origin: format!("{}://{}", t.scheme, t.host),
        signer: t.signer,
        host: t.host,
        bucket: bucket.to_string(),
        virtual_hosted: t.virtual_hosted,
        http,
    })
}
