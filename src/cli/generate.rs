//! `switchyard generate` (hidden): the man pages and shell completions,
//! made from this command-line definition so they never drift from it.
//! The Debian package build (`contrib/debian/build.sh`) runs it on the
//! binary it packages.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{CommandFactory, Subcommand};
use clap_complete::Shell;

use super::Cli;

/// What to write.
#[derive(Debug, Subcommand)]
pub enum Generate {
    /// `switchyard.1` and a `switchyard-SUBCOMMAND.1` page per subcommand.
    Man {
        /// Directory to write them in (created when missing).
        dir: PathBuf,
    },
    /// Completions for bash (`switchyard.bash`), zsh (`_switchyard`) and fish
    /// (`switchyard.fish`).
    Completions {
        /// Directory to write them in (created when missing).
        dir: PathBuf,
    },
}

impl Generate {
    /// Writes the files and prints each path.
    pub fn run(&self) -> anyhow::Result<()> {
        let (Generate::Man { dir } | Generate::Completions { dir }) = self;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        match self {
            Generate::Man { .. } => man(dir),
            Generate::Completions { .. } => completions(dir),
        }
        .with_context(|| format!("writing into {}", dir.display()))
    }
}

fn man(dir: &Path) -> std::io::Result<()> {
    clap_mangen::generate_to(Cli::command(), dir)?;
    let mut pages: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    for page in pages {
        println!("{}", page.display());
    }
    Ok(())
}

fn completions(dir: &Path) -> std::io::Result<()> {
    let mut cmd = Cli::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut cmd, "switchyard", dir)?;
        println!("{}", path.display());
    }
    Ok(())
}
