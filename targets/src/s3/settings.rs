//! The S3 client's settings, checked before anything is sent.
//!
//! `object_store` takes nearly any settings and fails only at the first request, in words that
//! name neither the cause nor the fix: plain HTTP not allowed reads "HTTP error: builder
//! error", an endpoint that is not a URL panics while signing, and missing credentials send
//! the client to the instance metadata service of a cloud machine that is not there. So the
//! settings the client will use (flags first, then the `AWS_*` environment) are looked at
//! here, and each of those cases is one line with what is wrong and what to change.

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey as Key};

/// What is wrong, and what to change.
pub(super) type Wrong = (String, String);

/// The settings that decide whether a request can work, each as the client will use it.
#[derive(Debug, Default)]
pub(super) struct Settings {
    pub(super) endpoint: Option<String>,
    pub(super) region: Option<String>,
    pub(super) allow_http: bool,
    pub(super) access_key_id: bool,
    pub(super) secret_access_key: bool,
    /// Credentials from elsewhere than the keys: a web identity, a container's or pod's role,
    /// an instance metadata endpoint named on purpose, or unsigned requests
    /// (`AWS_SKIP_SIGNATURE`).
    pub(super) other_credentials: bool,
}

impl Settings {
    /// The settings `b` holds; empty values count as unset.
    pub(super) fn of(b: &AmazonS3Builder, allow_http: bool) -> Settings {
        let get = |k: Key| b.get_config_value(&k).filter(|v| !v.trim().is_empty());
        // The client reads these two from the environment itself, not through the builder.
        let env = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
        Settings {
            endpoint: get(Key::Endpoint),
            region: get(Key::Region),
            allow_http,
            access_key_id: get(Key::AccessKeyId).is_some(),
            secret_access_key: get(Key::SecretAccessKey).is_some(),
            other_credentials: (env("AWS_WEB_IDENTITY_TOKEN_FILE") && env("AWS_ROLE_ARN"))
                || get(Key::ContainerCredentialsRelativeUri).is_some()
                || get(Key::ContainerCredentialsFullUri).is_some()
                || get(Key::MetadataEndpoint).is_some()
                || get(Key::SkipSignature).is_some_and(|v| boolish(&v) == Some(true)),
        }
    }
}

/// `AWS_ALLOW_HTTP` as the builder read it from the environment (`None`: unset).
pub(super) fn allow_http_from_env(value: Option<String>) -> Result<bool, Wrong> {
    let Some(v) = value else { return Ok(false) };
    boolish(&v).ok_or_else(|| {
        (
            format!("AWS_ALLOW_HTTP is {v:?}, which is neither true nor false"),
            "set it to true or false (or unset it)".into(),
        )
    })
}

/// A yes/no setting as the command line and the client read it.
fn boolish(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "t" | "on" | "yes" | "y" => Some(true),
        "0" | "false" | "f" | "off" | "no" | "n" => Some(false),
        _ => None,
    }
}

/// What is wrong with `s`, when no request could work; the first problem found.
pub(super) fn misconfiguration(s: &Settings) -> Option<Wrong> {
    // Without an endpoint the client talks to AWS itself.
    let mut aws = true;
    if let Some(endpoint) = &s.endpoint {
        let shown = redacted(endpoint);
        let Some(url) = endpoint_url(endpoint) else {
            return Some((
                format!("the S3 endpoint {shown:?} is not a URL"),
                "give it as https://HOST[:PORT] (--s3-endpoint or AWS_ENDPOINT_URL)".into(),
            ));
        };
        if url.scheme() == "http" && !s.allow_http {
            return Some((
                format!("the S3 endpoint {shown} is plain HTTP, which is refused unless allowed"),
                "use https://, or allow plain HTTP with --s3-allow-http or AWS_ALLOW_HTTP=true \
                 (only for a server on loopback or a network you trust)"
                    .into(),
            ));
        }
        aws = url.host_str().is_some_and(is_aws_host);
    }
    if aws && s.region.is_none() {
        return Some((
            "no S3 region is set, and AWS needs the bucket's region".into(),
            "pass --s3-region REGION or set AWS_REGION (for another S3 server, give its URL \
             with --s3-endpoint or AWS_ENDPOINT_URL)"
                .into(),
        ));
    }
    let (have, lack) = match (s.access_key_id, s.secret_access_key) {
        (true, false) => ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
        (false, true) => ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"),
        // On AWS, no keys may mean the machine's own role (instance metadata).
        (false, false) if !aws && !s.other_credentials => {
            return Some((
                "no S3 credentials are set".into(),
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment (files \
                 under ~/.aws are not read)"
                    .into(),
            ))
        }
        _ => return None,
    };
    Some((
        format!("{have} is set but {lack} is not"),
        format!("set {lack} too"),
    ))
}

/// `endpoint` when the client can use it: an http(s) URL with a host, no query or fragment,
/// all printable ASCII (the client copies the text into each request's URI as it is, and a
/// character a URI cannot hold makes it panic while signing).
fn endpoint_url(endpoint: &str) -> Option<reqwest::Url> {
    if !endpoint.chars().all(|c| c.is_ascii_graphic()) {
        return None;
    }
    let url = reqwest::Url::parse(endpoint).ok()?;
    let usable = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.query().is_none()
        && url.fragment().is_none();
    usable.then_some(url)
}

/// Whether `host` is AWS's own S3 (where the region is needed to reach the bucket and sign,
/// and an instance's role may stand in for keys).
fn is_aws_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host == "amazonaws.com"
        || host.ends_with(".amazonaws.com")
        || host.ends_with(".amazonaws.com.cn")
}

/// `endpoint` with a user and password in it (`https://USER:PASS@HOST`) left out.
fn redacted(endpoint: &str) -> String {
    let start = endpoint.find("://").map_or(0, |i| i + 3);
    let authority_end = endpoint[start..]
        .find('/')
        .map_or(endpoint.len(), |i| start + i);
    match endpoint[start..authority_end].rfind('@') {
        Some(at) => format!("{}…{}", &endpoint[..start], &endpoint[start + at..]),
        None => endpoint.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Settings {
        Settings {
            access_key_id: true,
            secret_access_key: true,
            ..Default::default()
        }
    }

    fn at(endpoint: &str) -> Settings {
        Settings {
            endpoint: Some(endpoint.into()),
            ..keys()
        }
    }

    /// The problem's and the fix's words, or "" when the settings can work.
    fn verdict(s: &Settings) -> String {
        misconfiguration(s).map_or_else(String::new, |(p, f)| format!("{p}; {f}"))
    }

    #[test]
    fn plain_http_needs_permission() {
        let v = verdict(&at("http://127.0.0.1:3900"));
        assert!(v.contains("http://127.0.0.1:3900 is plain HTTP"), "{v}");
        assert!(
            v.contains("--s3-allow-http") && v.contains("AWS_ALLOW_HTTP=true"),
            "{v}"
        );
        let allowed = Settings {
            allow_http: true,
            ..at("http://127.0.0.1:3900")
        };
        assert_eq!(verdict(&allowed), "");
        assert_eq!(verdict(&at("https://s3.example.net")), "");
        assert_eq!(verdict(&at("https://s3.example.net:9000/under/a/path")), "");
    }

    #[test]
    fn endpoints_that_are_not_urls() {
        for bad in [
            "s3.example.net",
            "127.0.0.1:9000",
            "localhost:9000",
            "ftp://s3.example.net",
            "https://",
            "https://exa mple.net",
            "https://s3.example.net?x=1",
            "https://bücket.example.net",
            "http://127.0.0.1:99999",
        ] {
            let v = verdict(&Settings {
                allow_http: true,
                ..at(bad)
            });
            assert!(
                v.contains("is not a URL") && v.contains("https://HOST"),
                "{bad}: {v}"
            );
        }
    }

    #[test]
    fn aws_needs_a_region_other_servers_do_not() {
        let v = verdict(&keys());
        assert!(
            v.contains("no S3 region") && v.contains("--s3-region"),
            "{v}"
        );
        let v = verdict(&at("https://s3.eu-west-1.amazonaws.com"));
        assert!(v.contains("no S3 region"), "{v}");
        let with_region = Settings {
            region: Some("eu-west-1".into()),
            ..keys()
        };
        assert_eq!(verdict(&with_region), "");
        assert_eq!(verdict(&at("https://s3.example.net")), "");
    }

    #[test]
    fn credentials_are_needed_off_aws() {
        let none = |endpoint: Option<&str>, region: Option<&str>| Settings {
            endpoint: endpoint.map(Into::into),
            region: region.map(Into::into),
            ..Default::default()
        };
        let v = verdict(&none(Some("https://s3.example.net"), None));
        assert!(
            v.contains("no S3 credentials") && v.contains("AWS_ACCESS_KEY_ID"),
            "{v}"
        );
        // On AWS an instance role may supply them; elsewhere another named source may.
        assert_eq!(verdict(&none(None, Some("eu-west-1"))), "");
        let web_identity = Settings {
            other_credentials: true,
            ..none(Some("https://s3.example.net"), None)
        };
        assert_eq!(verdict(&web_identity), "");
        // Half a key pair is never enough.
        let half = Settings {
            secret_access_key: false,
            ..at("https://s3.example.net")
        };
        let v = verdict(&half);
        assert!(
            v.starts_with("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"),
            "{v}"
        );
        let half = Settings {
            access_key_id: false,
            region: Some("us-east-1".into()),
            ..keys()
        };
        assert!(verdict(&half).starts_with("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID"));
    }

    #[test]
    fn allow_http_reads_like_the_command_line() {
        for (v, want) in [
            ("true", true),
            ("1", true),
            ("YES", true),
            ("false", false),
            ("0", false),
        ] {
            assert_eq!(allow_http_from_env(Some(v.into())), Ok(want), "{v}");
        }
        assert_eq!(allow_http_from_env(None), Ok(false));
        let (problem, fix) = allow_http_from_env(Some("maybe".into())).unwrap_err();
        assert!(problem.contains("\"maybe\"") && fix.contains("true or false"));
        assert!(allow_http_from_env(Some(String::new())).is_err());
    }

    #[test]
    fn passwords_in_endpoints_are_not_shown() {
        let v = verdict(&at("http://ops:hunter2@127.0.0.1:1/x@y"));
        assert!(
            !v.contains("hunter2") && v.contains("http://…@127.0.0.1:1/x@y"),
            "{v}"
        );
        assert_eq!(
            redacted("https://s3.example.net/a@b"),
            "https://s3.example.net/a@b"
        );
        assert!(!verdict(&at("ops:hunter2@nohost")).contains("hunter2"));
    }
}
