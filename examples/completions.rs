//! Writes the shell completions of both tools, generated from their clap
//! definitions, into a folder (default `completions/`):
//!
//!     cargo run --example completions
//!
//! The files are never edited by hand; `tests/docs.rs` fails when they
//! differ from what this generates.

use clap::CommandFactory;
use clap_complete::{generate, Shell};
use sockserve::cli::{ClientArgs, ServeArgs};

/// The file name each shell looks for, and its contents.
pub fn completions() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, mut cmd) in [
        ("sockserve", ServeArgs::command()),
        ("sockclient", ClientArgs::command()),
    ] {
        for (shell, file) in [
            (Shell::Bash, name.to_string()),
            (Shell::Zsh, format!("_{name}")),
            (Shell::Fish, format!("{name}.fish")),
        ] {
            let mut buf = Vec::new();
            generate(shell, &mut cmd, name, &mut buf);
            out.push((file, buf));
        }
    }
    out
}

#[allow(dead_code)]
fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "completions".to_string());
    std::fs::create_dir_all(&dir)?;
    for (file, text) in completions() {
        std::fs::write(std::path::Path::new(&dir).join(file), text)?;
    }
    Ok(())
}
