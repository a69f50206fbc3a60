//! Command-line pieces every binary shares: the `--topology` flag, where the topology is
//! found without it, and what a bad file does to the process (a logged reason and exit
//! code 2).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::exit;
use crate::Topology;

/// Where a topology is looked for when neither `--topology` nor `HOTKEYS_TOPOLOGY` names
/// one, in order: a checkout's own file, then an installed one.
pub const SEARCH_PATH: [&str; 2] = ["topology/default.toml", "/etc/hotkeys/topology.toml"];

/// `--topology FILE`, flattened into each binary's arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct TopologyArg {
    /// Topology file; `HOTKEYS_*` environment variables override its keys. Default: the
    /// first of ./topology/default.toml and /etc/hotkeys/topology.toml that exists.
    #[arg(long = "topology", global = true, env = "HOTKEYS_TOPOLOGY")]
    pub path: Option<PathBuf>,
}

impl TopologyArg {
    /// Loads the topology, or says why not and returns the usage exit code.
    pub fn load(&self) -> Result<Topology, ExitCode> {
        let usage = |message: String| {
            tracing::error!("{message}");
            super::code(exit::USAGE)
        };
        let path = self.resolve().map_err(usage)?;
        Topology::load(&path).map_err(|e| usage(e.to_string()))
    }

    /// The file to read: the one named, else the first of [`SEARCH_PATH`] that exists.
    pub fn resolve(&self) -> Result<PathBuf, String> {
        let candidates: Vec<PathBuf> = SEARCH_PATH.iter().map(PathBuf::from).collect();
        locate(self.path.as_deref(), &candidates)
    }
}

/// The file named explicitly, else the first candidate that exists; the error lists every
/// path tried.
pub fn locate(explicit: Option<&Path>, candidates: &[PathBuf]) -> Result<PathBuf, String> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    Err(format!(
        "no topology file: --topology and HOTKEYS_TOPOLOGY are not set, and none of {} exists",
        tried.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_file_wins_even_when_a_default_exists() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("default.toml");
        std::fs::write(&default, "").unwrap();
        let explicit = Path::new("/somewhere/else.toml");
        assert_eq!(locate(Some(explicit), &[default]).unwrap(), explicit);
    }

    #[test]
    fn the_first_existing_candidate_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.toml"), dir.path().join("b.toml"));
        std::fs::write(&b, "").unwrap();
        assert_eq!(locate(None, &[a.clone(), b.clone()]).unwrap(), b);
        std::fs::write(&a, "").unwrap();
        assert_eq!(locate(None, &[a.clone(), b]).unwrap(), a);
    }

    #[test]
    fn the_error_lists_every_path_tried() {
        let err = locate(
            None,
            &[PathBuf::from("/no/a.toml"), PathBuf::from("/no/b.toml")],
        )
        .unwrap_err();
        assert!(err.contains("/no/a.toml, /no/b.toml"), "{err}");
        assert!(err.contains("HOTKEYS_TOPOLOGY"), "{err}");
    }
}
