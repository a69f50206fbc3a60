//! Embeds `migrations/` at the repository root: writes `$OUT_DIR/migrations.rs`, one entry
//! per migration file, each with its SQL as `include_str!` (so the binaries never read the
//! directory), and rebuilds the crate when a migration changes. The files are named and read
//! as `sqlx::migrate!` would: `<VERSION>_<DESCRIPTION>.sql` (or `.up.sql`, `.down.sql`), other
//! files ignored; `crate::mysql::MIGRATOR` builds the migrator from the list. Doing this here
//! rather than with the macro spares the build sqlx's proc-macro stack (sqlx-core and
//! sqlx-mysql compiled a second time for the host).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

/// One migration file: version, description, `MigrationType` variant, path.
type Entry = (i64, String, &'static str, PathBuf);

fn main() {
    let dir = Path::new("../../migrations");
    println!("cargo:rerun-if-changed={}", dir.display());
    let dir = dir
        .canonicalize()
        .unwrap_or_else(|e| panic!("migrations directory {}: {e}", dir.display()));
    let mut entries: Vec<Entry> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("reading the migrations directory").path())
        .filter(|path| path.is_file())
        .filter_map(migration)
        .collect();
    entries.sort_by(|a, b| (a.0, a.2).cmp(&(b.0, b.2)));
    let out_dir = env::var_os("OUT_DIR").expect("OUT_DIR is set by Cargo");
    fs::write(Path::new(&out_dir).join("migrations.rs"), render(entries))
        .expect("writing migrations.rs");
}

/// The migration a file holds, named as `migrate!` reads names; `None` for other files.
fn migration(path: PathBuf) -> Option<Entry> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let (version, rest) = name.split_once('_')?;
    if !rest.ends_with(".sql") {
        return None;
    }
    let version: i64 = version.parse().unwrap_or_else(|_| {
        panic!("migration {name:?}: expected an integer version prefix (e.g. `01_foo.sql`)")
    });
    let (kind, suffix) = if rest.ends_with(".up.sql") {
        ("ReversibleUp", ".up.sql")
    } else if rest.ends_with(".down.sql") {
        ("ReversibleDown", ".down.sql")
    } else {
        ("Simple", ".sql")
    };
    let description = rest.trim_end_matches(suffix).replace('_', " ");
    Some((version, description, kind, path))
}

/// The list as a Rust expression, each file's SQL included at compile time.
fn render(entries: Vec<Entry>) -> String {
    let mut out = String::from("&[\n");
    for (version, description, kind, path) in entries {
        println!("cargo:rerun-if-changed={}", path.display());
        writeln!(
            out,
            "    ({version}, {description:?}, sqlx::migrate::MigrationType::{kind}, include_str!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    out.push_str("]\n");
    out
}
