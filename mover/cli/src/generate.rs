//! Shell completions and the man page, generated from the CLI definition (`Cli::command()`),
//! so they never drift from the flags (`mover completions bash|zsh|fish`, `mover man`).

use std::io::{self, Write};

/// The shells completions are generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CompletionShell {
    /// bash (source it, or put it in `/usr/share/bash-completion/completions/mover`).
    Bash,
    /// zsh (put it as `_mover` in a directory of `$fpath`).
    Zsh,
    /// fish (put it in `~/.config/fish/completions/mover.fish`).
    Fish,
}

/// Writes the completion script of `cmd` for `shell` to `out`.
///
/// # Errors
///
/// Writing `out` failed (a closed pipe, for example); nothing is half-written by a panic.
pub fn completions(
    mut cmd: clap::Command,
    shell: CompletionShell,
    out: &mut dyn Write,
) -> io::Result<()> {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    let name = cmd.get_name().to_string();
    // clap_complete panics when its writer fails: generate into memory, then write.
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut buf);
    out.write_all(&buf)?;
    out.flush()
}

/// Writes one man page (roff, section 1) for `cmd` to `out`: the program's page (name,
/// synopsis, description, global options, the list of commands), then a section for each
/// command, nested ones included, with its description, synopsis and options.
///
/// # Errors
///
/// Writing `out` failed.
pub fn man_page(cmd: clap::Command, out: &mut dyn Write) -> io::Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    // Sets the subcommands' full names (`mover backup`) for their synopses.
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    let commands = all_commands(&cmd);
    writeln!(page, ".SH COMMANDS")?;
    for sub in &commands {
        let about = sub.get_about().map(ToString::to_string).unwrap_or_default();
        writeln!(
            page,
            ".TP\n\\fB{}\\fR\n{}",
            roff_text(&full_name(sub)),
            roff_text(&about)
        )?;
    }
    if cmd.get_version().is_some() {
        man.render_version_section(&mut page)?;
    }
    for sub in &commands {
        writeln!(
            page,
            ".SH \"{}\"",
            full_name(sub).to_uppercase().replace('"', "")
        )?;
        let man = clap_mangen::Man::new((*sub).clone());
        let mut part = Vec::new();
        man.render_description_section(&mut part)?;
        man.render_synopsis_section(&mut part)?;
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(&mut part)?;
        }
        page.extend_from_slice(&demote(&part));
    }
    out.write_all(&page)?;
    out.flush()
}

/// Every visible subcommand, depth first (`archive`, then `archive ls`, …).
fn all_commands(cmd: &clap::Command) -> Vec<&clap::Command> {
    let mut out = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        out.push(sub);
        out.extend(all_commands(sub));
    }
    out
}

fn full_name(cmd: &clap::Command) -> String {
    cmd.get_bin_name().unwrap_or(cmd.get_name()).to_string()
}

/// Plain text as one roff text line: backslashes and hyphens escaped, and a leading `.` or
/// `'` (a request) neutralised.
fn roff_text(s: &str) -> String {
    let mut t = s
        .replace('\\', "\\\\")
        .replace('-', "\\-")
        .replace('\n', " ");
    if t.starts_with('.') || t.starts_with('\'') {
        t.insert_str(0, "\\&");
    }
    t
}

/// Turns the section headings of a rendered part (`.SH X`) into subsection headings (`.SS X`)
/// so they nest under the command's section.
fn demote(part: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(part);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match line.strip_prefix(".SH ") {
            Some(rest) => {
                out.push_str(".SS ");
                out.push_str(rest);
            }
            None => out.push_str(line),
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    fn cli() -> Command {
        Command::new("mover")
            .version("0.1.0")
            .about("A data mover.")
            .arg(
                Arg::new("verbose")
                    .short('v')
                    .long("verbose")
                    .action(ArgAction::Count)
                    .help("More log output")
                    .global(true),
            )
            .subcommand(
                Command::new("backup")
                    .about("Back up a disk.")
                    .arg(Arg::new("source").long("source").help("What to back up"))
                    .arg(
                        Arg::new("repo")
                            .short('r')
                            .long("repo")
                            .env("MOVER_REPO")
                            .help("Repository"),
                    ),
            )
            .subcommand(Command::new("man").about("Print the man page."))
            .subcommand(
                Command::new("archive")
                    .about("Archives.")
                    .subcommand(Command::new("ls").about("List.").arg(Arg::new("path"))),
            )
    }

    fn text(f: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
        let mut buf = Vec::new();
        f(&mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn completions_name_every_command_and_flag() {
        for (shell, marker) in [
            (CompletionShell::Bash, "complete -F"),
            (CompletionShell::Zsh, "#compdef mover"),
            (CompletionShell::Fish, "complete -c mover"),
        ] {
            let s = text(|b| completions(cli(), shell, b));
            assert!(s.contains(marker), "{shell:?}:\n{s}");
            // fish writes long flags as `-l source`.
            for word in ["backup", "source", "repo", "verbose"] {
                assert!(s.contains(word), "{shell:?} lacks {word}:\n{s}");
            }
        }
    }

    #[test]
    fn man_page_has_each_command_with_its_options() {
        let s = text(|b| man_page(cli(), b));
        assert!(
            s.starts_with(".ie \\n(.g .ds Aq") || s.contains(".TH mover 1"),
            "{s}"
        );
        assert!(s.contains(".SH NAME") && s.contains(".SH SYNOPSIS"), "{s}");
        assert!(s.contains(".SH \"MOVER BACKUP\""), "{s}");
        assert!(s.contains(".SS OPTIONS"), "{s}");
        assert!(
            s.contains("MOVER_REPO"),
            "environment variables are documented:\n{s}"
        );
        // The backup section holds its own flags, after its heading.
        let backup = &s[s.find(".SH \"MOVER BACKUP\"").unwrap()..];
        assert!(
            backup.contains("\\-\\-source") && backup.contains("mover backup"),
            "{backup}"
        );
        // Only one top-level OPTIONS section: the commands' ones are subsections.
        assert_eq!(s.matches(".SH OPTIONS").count(), 1, "{s}");
        assert!(!s.contains("MOVER HELP"), "no help command:\n{s}");
        assert!(
            s.contains(".SH COMMANDS\n.TP\n\\fBmover backup\\fR\nBack up a disk."),
            "{s}"
        );
        // Nested commands get their own section.
        assert!(s.contains(".SH \"MOVER ARCHIVE LS\""), "{s}");
        assert!(s.contains("\\fBmover archive ls\\fR"), "{s}");
    }

    #[test]
    fn roff_escapes() {
        assert_eq!(roff_text("a-b \\x"), "a\\-b \\\\x");
        assert_eq!(roff_text(".TH x"), "\\&.TH x");
    }

    #[test]
    fn a_failing_writer_is_an_error_not_a_panic() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        assert!(completions(cli(), CompletionShell::Bash, &mut Broken).is_err());
        assert!(man_page(cli(), &mut Broken).is_err());
    }
}
