//! A minimal AWS Signature Version 4 signer for the few S3 requests `object_store` cannot
//! send: Object Lock's retention calls and deletes of one object version (issue 18).
//!
//! `object_store` signs only its own requests (its public `Signer` makes presigned URLs for a
//! path, without sub-resources such as `?retention`), and the AWS SDK would add hundreds of
//! crates for five small requests. So this signs them itself with `ring`'s SHA-256 and
//! HMAC-SHA256, which the workspace builds already. Only static credentials (flags and
//! `AWS_*` variables, with an optional session token) are supported here.

use ring::{digest, hmac};

/// Static credentials and where to send requests.
#[derive(Clone, Debug)]
pub(crate) struct Signer {
    pub(crate) access_key: String,
    pub(crate) secret_key: String,
    pub(crate) token: Option<String>,
    pub(crate) region: String,
}

/// Where the signed requests for a bucket go and as whom, read from the store's settings the
/// way object_store reads them.
pub(crate) struct Target {
    /// `http` or `https`.
    pub(crate) scheme: String,
    /// Host (and port) as sent in the `host` header: the bucket's own for virtual-hosted
    /// requests (a given endpoint names it already; AWS's own gets the bucket in front).
    pub(crate) host: String,
    pub(crate) virtual_hosted: bool,
    pub(crate) signer: Signer,
}

impl Target {
    /// The target of `bucket` in the store `b` describes; `None` without static credentials,
    /// or for a plain-HTTP endpoint that is not allowed.
    pub(crate) fn of(
        b: &object_store::aws::AmazonS3Builder,
        bucket: &str,
        allow_http: bool,
    ) -> Option<Self> {
        use object_store::aws::AmazonS3ConfigKey as K;
        let get = |k: K| b.get_config_value(&k).filter(|v| !v.is_empty());
        let region = get(K::Region).unwrap_or_else(|| "us-east-1".into());
        let virtual_hosted = get(K::VirtualHostedStyleRequest).is_some_and(|v| v == "true");
        let given = get(K::Endpoint);
        let endpoint = given
            .clone()
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let (scheme, host) = endpoint.trim_end_matches('/').split_once("://")?;
        if scheme == "http" && !allow_http {
            return None;
        }
        let host = match (virtual_hosted, given.is_some()) {
            (true, false) => format!("{bucket}.{host}"),
            _ => host.to_string(),
        };
        Some(Target {
            scheme: scheme.to_string(),
            host,
            virtual_hosted,
            signer: Signer {
                access_key: get(K::AccessKeyId)?,
                secret_key: get(K::SecretAccessKey)?,
                token: get(K::Token),
                region,
            },
        })
    }
}

/// A request to sign: method, host (with port), path (already percent-encoded), query pairs
/// (unencoded), extra headers (lower-case names) and body.
pub(crate) struct Unsigned<'a> {
    pub(crate) method: &'a str,
    pub(crate) host: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: &'a [(&'a str, &'a str)],
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: &'a [u8],
}

impl Signer {
    /// The headers to send with `req` at `now_ms`: its own, plus `host`, `x-amz-date`,
    /// `x-amz-content-sha256`, the session token and `authorization`.
    pub(crate) fn sign(&self, req: &Unsigned<'_>, now_ms: i64) -> Vec<(String, String)> {
        let (date, stamp) = amz_date(now_ms);
        let payload = hex(digest::digest(&digest::SHA256, req.body).as_ref());
        let mut headers = req.headers.clone();
        headers.push(("host".into(), req.host.into()));
        headers.push(("x-amz-date".into(), stamp.clone()));
        headers.push(("x-amz-content-sha256".into(), payload.clone()));
        if let Some(t) = &self.token {
            headers.push(("x-amz-security-token".into(), t.clone()));
        }
        headers.sort();
        let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        let signed = names.join(";");
        let canonical_headers: String = headers
            .iter()
            .map(|(k, v)| format!("{k}:{}\n", v.trim()))
            .collect();
        let canonical = format!(
            "{}\n{}\n{}\n{canonical_headers}\n{signed}\n{payload}",
            req.method,
            req.path,
            canonical_query(req.query)
        );
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
            hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
        );
        let mut key = format!("AWS4{}", self.secret_key).into_bytes();
        for part in [date.as_str(), self.region.as_str(), "s3", "aws4_request"] {
            key = mac(&key, part.as_bytes());
        }
        let signature = hex(&mac(&key, to_sign.as_bytes()));
        headers.push((
            "authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
                self.access_key
            ),
        ));
        headers
    }
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, data).as_ref().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    chunker::hex::encode(bytes)
}

/// The query string, as sent and as signed: pairs sorted, both sides encoded.
pub(crate) fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut pairs: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k, true), encode(v, true)))
        .collect();
    pairs.sort();
    pairs.join("&")
}

/// Percent-encodes all but S3's unreserved characters (and `/` unless `slash`).
pub(crate) fn encode(s: &str, slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            b'/' if !slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// SHA-256 of `data`, base64 (for `x-amz-checksum-sha256`, which Object Lock calls need).
pub(crate) fn sha256_base64(data: &[u8]) -> String {
    base64(digest::digest(&digest::SHA256, data).as_ref())
}

fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `(YYYYMMDD, YYYYMMDDTHHMMSSZ)` of a time in ms since the epoch.
fn amz_date(ms: i64) -> (String, String) {
    let (y, mo, d, h, mi, s) = civil_time(ms);
    let date = format!("{y:04}{mo:02}{d:02}");
    (date.clone(), format!("{date}T{h:02}{mi:02}{s:02}Z"))
}

/// ISO 8601 in UTC, as S3 writes retain-until dates: `2030-01-31T12:00:00Z`.
pub(crate) fn iso8601(ms: i64) -> String {
    let (y, mo, d, h, mi, s) = civil_time(ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Reads `2030-01-31T12:00:00Z` or `2030-01-31T12:00:00.123Z` back into ms since the epoch.
pub(crate) fn parse_iso8601(s: &str) -> Option<i64> {
    let s = s.trim().strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, mo, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    let ms: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    let days = days_from_civil(y, mo, day);
    Some(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms)
}

fn civil_time(ms: i64) -> (i64, i64, i64, i64, i64, i64) {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of AWS's SigV4 documentation for S3 ("GET Object", with a range header).
    #[test]
    fn signs_the_documented_example() {
        let signer = Signer {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            token: None,
            region: "us-east-1".into(),
        };
        let req = Unsigned {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/test.txt",
            query: &[],
            headers: vec![("range".into(), "bytes=0-9".into())],
            body: b"",
        };
        // 2013-05-24T00:00:00Z
        let headers = signer.sign(&req, 1_369_353_600_000);
        let auth = &headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1;
        assert!(
            auth.ends_with(
                "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
            ),
            "{auth}"
        );
        assert!(auth.contains("SignedHeaders=host;range;x-amz-content-sha256;x-amz-date"));
    }

    #[test]
    fn dates_and_encodings() {
        assert_eq!(iso8601(1_369_353_600_000), "2013-05-24T00:00:00Z");
        for ms in [0, 1_369_353_600_000, 1_900_000_000_123, 4_102_444_800_000] {
            assert_eq!(parse_iso8601(&iso8601(ms)), Some(ms - ms % 1000));
        }
        assert_eq!(
            parse_iso8601("2013-05-24T00:00:00.250Z"),
            Some(1_369_353_600_250)
        );
        assert_eq!(parse_iso8601("yesterday"), None);
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert_eq!(base64(b"hi!"), "aGkh");
        assert_eq!(encode("a b/c", false), "a%20b/c");
        assert_eq!(
            canonical_query(&[("versionId", "x/y"), ("a", "")]),
            "a=&versionId=x%2Fy"
        );
    }
}
