//! The environment overrides: `HOTKEYS_<SECTION>_<KEY>` and `HOTKEYS_<KEY>` applied to the
//! keys a topology knows, before the file is read into its typed form.

use std::path::Path;

use super::Topology;
use super::error::ConfigError;

/// Applies `HOTKEYS_<SECTION>_<KEY>` and `HOTKEYS_<KEY>` to the keys a topology knows.
///
/// Only names of known keys are taken, so unrelated variables that share the prefix (the
/// sync secret, say) are left alone. The value is read with the type of the key's default:
/// numbers and booleans as such, lists as comma-separated strings.
pub(super) fn apply_env(
    file: &Path,
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let defaults = toml::Table::try_from(Topology::default())
        .expect("the default topology serializes to a table");
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("HOTKEYS_"))
        .collect();
    overrides.sort();
    for (var, value) in overrides {
        let name = var["HOTKEYS_".len()..].to_ascii_lowercase();
        let Some((section, key, default)) = resolve(&defaults, &name) else {
            continue;
        };
        let parsed = typed_value(&value, default).ok_or_else(|| ConfigError::Env {
            file: file.to_path_buf(),
            var: var.clone(),
            message: format!("expected {}, found `{value}`", default.type_str()),
        })?;
        match section {
            None => {
                table.insert(key, parsed);
            }
            Some(section) => {
                let entry = table
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let toml::Value::Table(t) = entry else {
                    return Err(ConfigError::Key {
                        file: file.to_path_buf(),
                        key: section,
                        message: "expected a table".into(),
                    });
                };
                t.insert(key, parsed);
            }
        }
    }
    Ok(())
}

/// Finds which key of the default topology an override name such as `count_publish_every`
/// refers to. Optional keys without a default (none serialized) cannot be set this way.
fn resolve<'a>(
    defaults: &'a toml::Table,
    name: &str,
) -> Option<(Option<String>, String, &'a toml::Value)> {
    if let Some(v) = defaults.get(name).filter(|v| !v.is_table()) {
        return Some((None, name.to_string(), v));
    }
    let (section, key) = name.split_once('_')?;
    let v = defaults.get(section)?.as_table()?.get(key)?;
    (!v.is_table()).then(|| (Some(section.to_string()), key.to_string(), v))
}

/// `raw` read as a value of the type of `like`; `None` when it is not one.
fn typed_value(raw: &str, like: &toml::Value) -> Option<toml::Value> {
    Some(match like {
        toml::Value::Integer(_) => toml::Value::Integer(raw.trim().parse().ok()?),
        toml::Value::Float(_) => toml::Value::Float(raw.trim().parse().ok()?),
        toml::Value::Boolean(_) => toml::Value::Boolean(raw.trim().parse().ok()?),
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        _ => toml::Value::String(raw.to_string()),
    })
}
