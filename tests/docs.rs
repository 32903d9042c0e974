//! The documentation is part of the feature: every flag of `--help` is in
//! the man page and the other way round, the man pages lint clean, the
//! completions are what clap generates today, `--version` is the crate's.

mod common;

#[path = "../examples/completions.rs"]
mod completions;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;

/// Long flags (`--name`) a `--help` text names.
fn help_flags(bin: &str) -> BTreeSet<String> {
    let out = Command::new(bin).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.split(|c: char| {
        c.is_whitespace() || c == ',' || c == '[' || c == ']' || c == '(' || c == ')'
    })
    .filter(|w| w.starts_with("--") && w.len() > 2)
    .map(|w| {
        w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_string()
    })
    .collect()
}

/// Long flags a man page documents (`Fl Fl name`).
fn man_flags(page: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(page).unwrap();
    let mut set = BTreeSet::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        for w in words.windows(3) {
            if w[0] == "Fl" && w[1] == "Fl" {
                set.insert(format!(
                    "--{}",
                    w[2].trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                ));
            }
        }
    }
    set
}

#[test]
fn every_help_flag_is_in_the_man_page_and_back() {
    for (bin, page) in [
        (sockserve_bin(), "man/sockserve.1"),
        (sockclient_bin(), "man/sockclient.1"),
    ] {
        let help = help_flags(bin);
        let man = man_flags(page);
        assert!(help.len() > 5, "{help:?}");
        let missing: Vec<_> = help.difference(&man).collect();
        assert!(missing.is_empty(), "{page} does not document {missing:?}");
        let extra: Vec<_> = man.difference(&help).collect();
        assert!(
            extra.is_empty(),
            "{page} documents {extra:?}, which --help does not have"
        );
    }
}

#[test]
#[ignore = "needs mandoc"]
fn man_pages_lint_clean() {
    require(
        Command::new("mandoc").arg("-V").output().is_ok(),
        "mandoc is not installed (Debian package mandoc)",
    );
    // -W warning: everything but the style notes about cross-referenced
    // pages that this machine happens not to have installed.
    let out = Command::new("mandoc")
        .args([
            "-Tlint",
            "-W",
            "warning",
            "man/sockserve.1",
            "man/sockclient.1",
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
    // And the style notes, but for those about other manuals.
    let out = Command::new("mandoc")
        .args(["-Tlint", "man/sockserve.1", "man/sockclient.1"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let notes: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("referenced manual not found") && !l.contains("mandoc.db"))
        .collect();
    assert!(notes.is_empty(), "{notes:#?}");
    // And they render.
    for page in ["man/sockserve.1", "man/sockclient.1"] {
        let out = Command::new("mandoc")
            .args(["-Tmarkdown", page])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("# EXIT STATUS"));
    }
}

#[test]
fn completions_are_generated_not_edited() {
    for (file, text) in completions::completions() {
        let path = format!("completions/{file}");
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == text,
            "{path} is stale: run `cargo run --example completions` and commit the result"
        );
    }
}

/// The generated completions of sockserve offer file names after the
/// flags that take a path (`-o`, `--output`, the TLS files) and nowhere
/// else: not after
/// `--idle-timeout`, `--max-line`, `--greeting`, ...
#[test]
fn completions_offer_paths_only_after_path_flags() {
    let generated: std::collections::BTreeMap<String, String> = completions::completions()
        .into_iter()
        .map(|(f, t)| (f, String::from_utf8(t).unwrap()))
        .collect();
    let path_flags = [
        "-o",
        "--output",
        "--tls-cert",
        "--tls-key",
        "--tls-client-ca",
    ];

    // bash: a `FLAG)` arm per value flag; `compgen -f` completes files.
    let bash = &generated["sockserve"];
    let mut arms = 0;
    for arm in bash.split(";;") {
        let Some(flag) = arm
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with('-') && l.ends_with(')'))
            .map(|l| l.trim_end_matches(')'))
        else {
            continue;
        };
        arms += 1;
        let files = arm.contains("compgen -f") || arm.contains("compgen -d");
        assert_eq!(
            files,
            path_flags.contains(&flag),
            "bash completes {} after {flag}",
            if files { "paths" } else { "no paths" }
        );
    }
    assert!(arms > 10, "{bash}");
    assert!(
        !bash.contains("*)\n                    COMPREPLY=($(compgen -f"),
        "bash completes paths for the addresses"
    );

    // zsh: `:_files` ends the spec of a path flag.
    let zsh = &generated["_sockserve"];
    for line in zsh.lines().filter(|l| l.contains("_files")) {
        assert!(
            path_flags
                .iter()
                .any(|f| line.starts_with(&format!("'{f}=[")) || line.starts_with("'-o+[")),
            "zsh completes paths in {line}"
        );
    }
    assert_eq!(zsh.matches("_files").count(), path_flags.len(), "{zsh}");

    // fish: -F completes files, -f forbids them.
    let fish = &generated["sockserve.fish"];
    for line in fish.lines().filter(|l| l.contains(" -r")) {
        let path = [
            " -l output ",
            " -l tls-cert ",
            " -l tls-key ",
            " -l tls-client-ca ",
        ]
        .iter()
        .any(|f| line.contains(f));
        assert_eq!(line.ends_with(" -r -F"), path, "fish: {line}");
    }
}

#[test]
fn version_is_the_crate_version() {
    for (bin, name) in [
        (sockserve_bin(), "sockserve"),
        (sockclient_bin(), "sockclient"),
    ] {
        run_bin(bin, &["--version"], b"")
            .assert_success()
            .assert_stdout(&format!("{name} {}\n", env!("CARGO_PKG_VERSION")));
    }
}
