//! Embeds `migrations/` at the repository root: writes `$OUT_DIR/migrations.rs`, one entry
//! per migration file, each with its SQL as `include_str!` (so the binaries never read the
//! directory), and rebuilds the crate when a migration changes. The files are named and read
//! as `sqlx::migrate!` would: `<VERSION>_<DESCRIPTION>.sql` (or `.up.sql`, `.down.sql`), other
//! files ignored; `crate::mysql::MIGRATOR` builds the migrator from the list. Doing this here
//! rather than with the macro spares the build sqlx's proc-macro stack (sqlx-core and
//! sqlx-mysql compiled a second time for the host).

use std::fmt::Write as _;
use std::path::Path;
use std::{env, fs};

fn main() {
    let dir = Path::new("../../migrations");
    println!("cargo:rerun-if-changed={}", dir.display());
    let dir = dir
        .canonicalize()
        .unwrap_or_else(|e| panic!("migrations directory {}: {e}", dir.display()));
    let mut entries = Vec::new();
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("reading the migrations directory").path();
        if !path.is_file() {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some((version, rest)) = name.split_once('_') else {
            continue;
        };
        if !rest.ends_with(".sql") {
            continue;
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
        entries.push((version, description, kind, path));
    }
    entries.sort_by(|a, b| (a.0, a.2).cmp(&(b.0, b.2)));
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
    let out_dir = env::var_os("OUT_DIR").expect("OUT_DIR is set by Cargo");
    fs::write(Path::new(&out_dir).join("migrations.rs"), out).expect("writing migrations.rs");
}
