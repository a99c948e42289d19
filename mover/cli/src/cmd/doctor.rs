//! `mover doctor`: the checks of `--source` and `-r`, printed with what to do.

use std::sync::Arc;

use targets::{Backend, LocalBackend};

use crate::args::{DoctorArgs, RepoArg};
use crate::doctor::{check_repository, check_source, Check};
use crate::repo::{is_s3, repo_options, s3_backend, Secrets};
use crate::{output, usage, Exit};

/// `mover doctor`.
pub fn doctor(a: &DoctorArgs, secrets: &Secrets, quiet: bool) -> anyhow::Result<Exit> {
    if a.source.is_empty() && a.repo.is_none() {
        return Err(usage("give --source SRC and/or -r REPO to check"));
    }
    let checks = doctor_checks(a, secrets);
    output::doctor_report(&checks, a.json, quiet, &mut std::io::stdout().lock())?;
    Ok(if checks.iter().all(|c| c.ok) {
        Exit::Success
    } else {
        Exit::Failure
    })
}

pub fn doctor_repo_arg(a: &DoctorArgs, location: &str) -> RepoArg {
    RepoArg {
        repo: location.to_string(),
        s3_endpoint: a.s3_endpoint.clone(),
        s3_region: a.s3_region.clone(),
        s3_virtual_hosted: a.s3_virtual_hosted,
        s3_allow_http: a.s3_allow_http,
        s3_retry_timeout: 20,
        connections: 16,
    }
}

pub fn doctor_checks(a: &DoctorArgs, secrets: &Secrets) -> Vec<Check> {
    let read_for = std::time::Duration::from_secs_f64(a.read_seconds.clamp(0.0, 60.0));
    let mut checks: Vec<Check> = Vec::new();
    for src in &a.source {
        checks.extend(check_source(src, read_for));
    }
    if let Some(location) = &a.repo {
        let repo = doctor_repo_arg(a, location);
        let subject = format!("repository {location}");
        let backend: Option<Arc<dyn Backend>> = if is_s3(&repo) {
            match s3_backend(&repo) {
                Ok(s3) => {
                    checks.push(Check {
                        subject: subject.clone(),
                        name: "credentials",
                        ok: true,
                        detail: "the bucket answers with these credentials".into(),
                        fix: None,
                    });
                    let detail = match s3.honours_conditional_put() {
                        Ok(true) => "the server honours If-None-Match".to_string(),
                        Ok(false) => {
                            "the server ignores If-None-Match (mover does not depend on it)".into()
                        }
                        Err(e) => format!("cannot tell ({e})"),
                    };
                    checks.push(Check {
                        subject: subject.clone(),
                        name: "conditional writes",
                        ok: true,
                        detail,
                        fix: None,
                    });
                    Some(Arc::new(s3))
                }
                Err(e) => {
                    let check =
                        "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the endpoint and the bucket";
                    let (name, detail, fix) = match e.downcast_ref() {
                        Some(targets::Error::Misconfigured {
                            location,
                            problem,
                            fix,
                        }) => (
                            "configuration",
                            format!("{location}: {problem}"),
                            fix.clone(),
                        ),
                        _ => ("credentials", crate::one_line(&e), check.to_string()),
                    };
                    checks.push(Check {
                        subject: subject.clone(),
                        name,
                        ok: false,
                        detail,
                        fix: Some(fix),
                    });
                    None
                }
            }
        } else {
            Some(Arc::new(LocalBackend::new(location)))
        };
        if let Some(backend) = backend {
            let local = (!is_s3(&repo)).then(|| std::path::Path::new(location));
            let mut options = repo_options(&repo);
            options.password = secrets.password().unwrap_or(None);
            checks.extend(check_repository(location, backend, options, local));
        }
    }
    checks
}
