//! The configuration rendered for a support bundle, with credentials masked.

use std::fmt::Write as _;

use super::{is_secret_key, Config, ParentPolicy, SizeValue};

impl Config {
    /// The configuration as TOML for a support bundle: every setting, with credentials in
    /// URLs and secret-looking words in hook commands (`PGPASSWORD=…`, `--password …`)
    /// masked. The file itself can hold no secret keys (they are refused when loaded).
    pub fn redacted(&self) -> String {
        let mut out = String::new();
        match &self.path {
            Some(p) => {
                let _ = writeln!(out, "# mover configuration from {}", p.display());
            }
            None => out.push_str("# no mover configuration file\n"),
        }
        out.push_str("# secrets are never stored here; credentials in URLs and commands masked\n");
        for (name, r) in &self.repositories {
            let _ = writeln!(out, "\n[repositories.{name}]");
            entry(&mut out, "location", Some(&mask_url(&r.location)));
            entry(
                &mut out,
                "s3_endpoint",
                r.s3_endpoint.as_deref().map(mask_url),
            );
            entry(&mut out, "s3_region", r.s3_region.as_ref());
            bool_entry(&mut out, "s3_path_style", r.s3_path_style);
            bool_entry(&mut out, "s3_allow_http", r.s3_allow_http);
            let file = r.password_file.as_ref().map(|p| p.display().to_string());
            entry(&mut out, "password_file", file.as_ref());
        }
        for (name, h) in &self.hooks {
            let _ = writeln!(out, "\n[hooks.{name}]");
            entry(
                &mut out,
                "pre_snapshot",
                h.pre_snapshot.as_deref().map(mask_command),
            );
            entry(
                &mut out,
                "post_snapshot",
                h.post_snapshot.as_deref().map(mask_command),
            );
            entry(
                &mut out,
                "post_backup",
                h.post_backup.as_deref().map(mask_command),
            );
            if let Some(t) = h.timeout {
                let _ = writeln!(out, "timeout = {t}");
            }
        }
        for (name, p) in &self.profiles {
            let _ = writeln!(out, "\n[profiles.{name}]");
            entry(&mut out, "repository", p.repository.as_ref());
            entry(&mut out, "hooks", p.hooks.as_ref());
            list_entry(&mut out, "sources", &p.sources);
            entry(&mut out, "name", p.name.as_ref());
            match &p.chunk_size {
                Some(SizeValue::Bytes(b)) => {
                    let _ = writeln!(out, "chunk_size = {b}");
                }
                Some(SizeValue::Text(t)) => entry(&mut out, "chunk_size", Some(t)),
                None => {}
            }
            if let Some(c) = p.compression {
                let _ = writeln!(out, "compression = {c}");
            }
            match p.parent {
                Some(ParentPolicy::Latest) => entry(&mut out, "parent", Some("latest")),
                Some(ParentPolicy::None) => entry(&mut out, "parent", Some("none")),
                None => {}
            }
            entry(&mut out, "bitmap", p.bitmap.as_ref());
            entry(&mut out, "change_id", p.change_id.as_ref());
            if let Some(v) = p.verify_changes {
                let _ = writeln!(out, "verify_changes = {v}");
            }
            list_entry(&mut out, "attachments", &p.attachments);
        }
        out
    }
}

fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{:04X}", c as u32);
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn entry(out: &mut String, key: &str, value: Option<impl AsRef<str>>) {
    if let Some(v) = value {
        let _ = writeln!(out, "{key} = {}", quote(v.as_ref()));
    }
}

fn bool_entry(out: &mut String, key: &str, value: Option<bool>) {
    if let Some(v) = value {
        let _ = writeln!(out, "{key} = {v}");
    }
}

fn list_entry(out: &mut String, key: &str, values: &[String]) {
    if !values.is_empty() {
        let items: Vec<String> = values.iter().map(|v| quote(&mask_url(v))).collect();
        let _ = writeln!(out, "{key} = [{}]", items.join(", "));
    }
}

/// Masks the user information of a URL (`https://user:pass@host/` → `https://***@host/`).
fn mask_url(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_string();
    };
    let rest = &s[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &s[..scheme_end + 3], &rest[at..]),
        None => s.to_string(),
    }
}

/// Masks URL credentials and the values of secret-looking words in a shell command:
/// `PGPASSWORD=x`, `--password=x`, `--token x`.
fn mask_command(cmd: &str) -> String {
    let mut out = String::with_capacity(cmd.len());
    let mut mask_next = false;
    for (i, word) in cmd.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if mask_next && !word.is_empty() {
            out.push_str("***");
            mask_next = false;
            continue;
        }
        let name = word.trim_start_matches('-');
        match name.split_once('=') {
            Some((n, _)) if is_secret_key(n) => {
                out.push_str(&word[..word.len() - name.len() + n.len()]);
                out.push_str("=***");
            }
            None if word.starts_with('-') && is_secret_key(name) => {
                out.push_str(word);
                mask_next = true;
            }
            _ => out.push_str(&mask_url(word)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::FULL;
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text, "/etc/mover/config.toml").unwrap()
    }

    #[test]
    fn redacted_keeps_settings_and_masks_credentials() {
        let c = parse(FULL);
        let r = c.redacted();
        assert!(
            !r.contains("hunter2") && !r.contains("s3cret") && !r.contains(" abc"),
            "{r}"
        );
        assert!(
            r.contains("s3_endpoint = \"https://***@s3.example.net\""),
            "{r}"
        );
        assert!(
            r.contains("PGPASSWORD=*** psql -c 'select 1' --token ***"),
            "{r}"
        );
        assert!(r.contains("password_file = \"/etc/mover/nas.pass\""), "{r}");
        assert!(
            r.contains("compression = 9") && r.contains("[profiles.vm1]"),
            "{r}"
        );
        // The rendering is itself a valid configuration with the same settings (credentials
        // aside).
        let back = parse(&r);
        assert_eq!(back.profiles, c.profiles);
        assert_eq!(back.repositories["local"], c.repositories["local"]);
        assert!(Config::default()
            .redacted()
            .contains("no mover configuration file"));
    }

    #[test]
    fn masking() {
        assert_eq!(mask_url("s3://bucket/p"), "s3://bucket/p");
        assert_eq!(mask_url("http://u@h:1/x@y"), "http://***@h:1/x@y");
        assert_eq!(mask_command("run --password=x y"), "run --password=*** y");
        assert_eq!(
            mask_command("run --passphrase x y"),
            "run --passphrase *** y"
        );
        assert_eq!(mask_command("curl https://a:b@h/"), "curl https://***@h/");
        assert_eq!(mask_command("cat --key-file /k"), "cat --key-file /k");
    }
}
