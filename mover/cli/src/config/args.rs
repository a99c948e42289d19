//! Applying a profile to a command line (flags > environment > file; see the module docs of
//! [`crate::config`]). The only place clap appears below the binary: it is the binary's own
//! `clap::Command`, handed in, and what comes back is a plain argument vector.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap::parser::ValueSource;

use super::{ArgDefault, Config, Result};

/// The command line with the profile named by `--profile` written into it, for
/// `subcommand`; `argv` unchanged when there is no such subcommand or no `--profile`.
///
/// `cmd` must define, on `subcommand`, an argument with id `profile` (the profile's name) and
/// may define one with id `config` (the file; [`Config::load`]'s default otherwise), usually
/// global. `env` looks up environment variables ([`super::Profile::arg_defaults`]).
///
/// # Errors
///
/// The configuration cannot be loaded, or names no such profile.
pub fn with_profile(
    cmd: &clap::Command,
    argv: Vec<OsString>,
    subcommand: &str,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Vec<OsString>> {
    // A first, lenient parse: a profile may supply required arguments that are missing.
    let Ok(first) = cmd.clone().ignore_errors(true).try_get_matches_from(&argv) else {
        return Ok(argv);
    };
    let Some(sub) = first.subcommand_matches(subcommand) else {
        return Ok(argv);
    };
    let Some(name) = raw_one(sub, "profile") else {
        return Ok(argv);
    };
    let path = raw_one(sub, "config").map(PathBuf::from);
    let config = Config::load(path.as_deref())?;
    let defaults = config.profile(&name.to_string_lossy())?.arg_defaults(env);
    Ok(inject(cmd, argv, subcommand, &defaults))
}

/// Writes `defaults` into `argv` right after `subcommand`, as `--LONG=VALUE` (once per value)
/// or `--LONG` (a flag whose value is `true`), for each argument that was given neither on
/// the command line nor by its environment variable. `argv` unchanged when it does not run
/// `subcommand`.
///
/// An id that `subcommand` does not define, or defines without a long name, is a programming
/// error: a panic in debug builds, left out otherwise.
pub fn inject(
    cmd: &clap::Command,
    argv: Vec<OsString>,
    subcommand: &str,
    defaults: &[ArgDefault],
) -> Vec<OsString> {
    let lenient = |args: &[OsString]| cmd.clone().ignore_errors(true).try_get_matches_from(args);
    let Some(sub_cmd) = cmd.find_subcommand(subcommand) else {
        return argv;
    };
    let Ok(first) = lenient(&argv) else {
        return argv;
    };
    let Some(sub) = first.subcommand_matches(subcommand) else {
        return argv;
    };
    // Where the subcommand starts: the first prefix of argv that parses to it (an earlier
    // word equal to its name may be the value of an option, as in `--events backup backup`).
    let Some(at) = (1..argv.len()).find(|&k| {
        argv[k] == *subcommand
            && lenient(&argv[..=k]).is_ok_and(|m| m.subcommand_name() == Some(subcommand))
    }) else {
        return argv;
    };
    let mut extra: Vec<OsString> = Vec::new();
    for d in defaults {
        let arg = sub_cmd.get_arguments().find(|a| a.get_id() == d.id);
        let Some((arg, long)) = arg.and_then(|a| Some((a, a.get_long()?))) else {
            debug_assert!(
                false,
                "`{subcommand}` has no argument `{}` with a long name",
                d.id
            );
            continue;
        };
        let given = matches!(
            sub.value_source(d.id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if given {
            continue;
        }
        if arg.get_action().takes_values() {
            for v in &d.values {
                let mut word = OsString::from(format!("--{long}="));
                word.push(v);
                extra.push(word);
            }
        } else if d.values.iter().all(|v| v == "true") {
            extra.push(format!("--{long}").into());
        }
    }
    let mut out = argv;
    out.splice(at + 1..at + 1, extra);
    out
}

/// The first raw value of `id`, if the command defines it and it has one.
fn raw_one(m: &clap::ArgMatches, id: &str) -> Option<OsString> {
    m.try_get_raw(id)
        .ok()
        .flatten()
        .and_then(|mut v| v.next())
        .map(OsStr::to_os_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{value_parser, Arg, ArgAction, Command};

    /// A miniature `mover` with the same kinds of arguments as the real `backup`.
    fn mini_cli(repo_env: &'static str) -> Command {
        Command::new("mover")
            .arg(Arg::new("events").long("events").global(true))
            .arg(Arg::new("config").long("config").global(true))
            .subcommand(
                Command::new("backup")
                    .arg(Arg::new("profile").long("profile"))
                    .arg(
                        Arg::new("repo")
                            .short('r')
                            .long("repo")
                            .env(repo_env)
                            .required(true),
                    )
                    .arg(
                        Arg::new("source")
                            .long("source")
                            .action(ArgAction::Append)
                            .required(true),
                    )
                    .arg(
                        Arg::new("compression")
                            .long("compression")
                            .default_value("3")
                            .value_parser(value_parser!(i32).range(1..=19)),
                    )
                    .arg(Arg::new("parent").long("parent"))
                    .arg(Arg::new("bitmap").long("bitmap").requires("parent"))
                    .arg(Arg::new("pre_snapshot").long("pre-snapshot"))
                    .arg(
                        Arg::new("s3_allow_http")
                            .long("s3-allow-http")
                            .action(ArgAction::SetTrue),
                    ),
            )
            .subcommand(Command::new("restore").arg(Arg::new("to").long("to")))
    }

    fn d(id: &'static str, values: &[&str]) -> ArgDefault {
        ArgDefault {
            id,
            values: values.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn defaults() -> Vec<ArgDefault> {
        vec![
            d("repo", &["/file/repo"]),
            d("source", &["a=/f1", "b=/f2"]),
            d("compression", &["9"]),
            d("parent", &["latest"]),
            d("bitmap", &["bm"]),
            d("pre_snapshot", &["-x starts with a dash"]),
            d("s3_allow_http", &["true"]),
        ]
    }

    fn os(argv: &[&str]) -> Vec<OsString> {
        argv.iter().map(OsString::from).collect()
    }

    /// Injects the defaults, then parses for real: the `backup` matches.
    fn run(defaults: &[ArgDefault], argv: &[&str], env: &'static str) -> clap::ArgMatches {
        let cmd = mini_cli(env);
        let argv = inject(&cmd, os(argv), "backup", defaults);
        let m = cmd
            .try_get_matches_from(&argv)
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        m.subcommand_matches("backup").expect("backup").clone()
    }

    const NO_ENV: &str = "MOVER_CONFIG_TEST_UNSET";

    #[test]
    fn the_profile_fills_in_what_was_not_given() {
        let m = run(&defaults(), &["mover", "backup"], NO_ENV);
        let s = |id| m.get_one::<String>(id).cloned().unwrap_or_default();
        assert_eq!(s("repo"), "/file/repo");
        assert_eq!(m.get_one::<i32>("compression"), Some(&9));
        assert_eq!(m.get_many::<String>("source").unwrap().count(), 2);
        assert_eq!(s("bitmap"), "bm");
        assert_eq!(s("pre_snapshot"), "-x starts with a dash");
        assert!(m.get_flag("s3_allow_http"));
        // Not a backup: nothing injected.
        assert_eq!(
            inject(
                &mini_cli(NO_ENV),
                os(&["mover", "restore"]),
                "backup",
                &defaults()
            ),
            os(&["mover", "restore"])
        );
    }

    #[test]
    fn flags_win_and_replace_lists_whole() {
        let argv = [
            "mover",
            "backup",
            "-r",
            "/flag",
            "--compression",
            "1",
            "--source",
            "/x",
        ];
        let m = run(&defaults(), &argv, NO_ENV);
        assert_eq!(m.get_one::<String>("repo").unwrap(), "/flag");
        assert_eq!(m.get_one::<i32>("compression"), Some(&1));
        let sources: Vec<&String> = m.get_many::<String>("source").unwrap().collect();
        assert_eq!(sources, ["/x"]);
        // A --bitmap typed by the caller is satisfied by the profile's parent.
        let m = run(
            &defaults(),
            &["mover", "backup", "--bitmap", "other"],
            NO_ENV,
        );
        assert_eq!(m.get_one::<String>("bitmap").unwrap(), "other");
        assert_eq!(m.get_one::<String>("parent").unwrap(), "latest");
    }

    #[test]
    fn environment_beats_the_file() {
        // The only test that sets this variable.
        std::env::set_var("MOVER_CONFIG_TEST_REPO", "/env/repo");
        let env = "MOVER_CONFIG_TEST_REPO";
        let from_env = run(&defaults(), &["mover", "backup"], env);
        let from_flag = run(&defaults(), &["mover", "backup", "-r", "/flag"], env);
        std::env::remove_var("MOVER_CONFIG_TEST_REPO");
        assert_eq!(from_env.get_one::<String>("repo").unwrap(), "/env/repo");
        assert_eq!(from_flag.get_one::<String>("repo").unwrap(), "/flag");
    }

    #[test]
    fn injects_after_the_subcommand_not_after_an_option_value() {
        let cmd = mini_cli(NO_ENV);
        let argv = os(&["mover", "--events", "backup", "backup", "--source", "/s"]);
        let out = inject(&cmd, argv, "backup", &[d("repo", &["/r"])]);
        assert_eq!(
            out,
            os(&[
                "mover",
                "--events",
                "backup",
                "backup",
                "--repo=/r",
                "--source",
                "/s"
            ])
        );
        // A file value goes through the same validation as a flag.
        let out = inject(
            &cmd,
            os(&["mover", "backup", "-r", "r", "--source", "s"]),
            "backup",
            &[d("compression", &["30"])],
        );
        let e = cmd.try_get_matches_from(out).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn with_profile_loads_the_named_file_and_profile() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[repositories.r]\nlocation = \"/from/file\"\n[profiles.p]\nrepository = \"r\"\n\
             sources = [\"/img\"]\ncompression = 7\n",
        )
        .unwrap();
        let cmd = mini_cli(NO_ENV);
        let f = file.to_str().unwrap();
        let no_env = |_: &str| None;
        let argv = os(&["mover", "backup", "--profile", "p", "--config", f]);
        let out = with_profile(&cmd, argv, "backup", &no_env).unwrap();
        let m = cmd.clone().try_get_matches_from(out).unwrap();
        let b = m.subcommand_matches("backup").unwrap();
        assert_eq!(b.get_one::<String>("repo").unwrap(), "/from/file");
        assert_eq!(b.get_one::<i32>("compression"), Some(&7));
        // The global --config may come before the subcommand too.
        let argv = os(&["mover", "--config", f, "backup", "--profile", "nope"]);
        let e = with_profile(&cmd, argv, "backup", &no_env).unwrap_err();
        assert!(e.to_string().contains("no profile `nope`"), "{e}");
        // No --profile: untouched, and the file is not even read.
        let argv = os(&["mover", "backup", "--config", "/does/not/exist"]);
        assert_eq!(
            with_profile(&cmd, argv.clone(), "backup", &no_env).unwrap(),
            argv
        );
    }
}
