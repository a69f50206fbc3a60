//! `[mysql]`: the database the cache is warmed from, and the lookup of its password.

use serde::{Deserialize, Serialize};

use super::error::{Invalid, check};

/// The database the cache is warmed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MysqlConfig {
    /// `mysql://user@host:port/database`; a password here is used only when `password_env`
    /// names no variable that is set.
    pub url: String,
    /// Name of the environment variable holding the password (never the password itself);
    /// empty: the URL's own.
    pub password_env: String,
    /// Row query; `{ids}` is replaced by the bound key list, and one column must be `id`.
    pub query: String,
    /// Keys per `IN (…)` query.
    pub batch: usize,
    /// Connections in the pool of one process.
    pub pool: u32,
}

impl Default for MysqlConfig {
    fn default() -> Self {
        MysqlConfig {
            url: "mysql://hotkeys@127.0.0.1:3306/hotkeys".into(),
            password_env: "HOTKEYS_MYSQL_PASSWORD".into(),
            query: "SELECT id, shop_id, name, price, stock, attributes, updated_at FROM products WHERE id IN ({ids})".into(),
            batch: 500,
            pool: 8,
        }
    }
}

impl MysqlConfig {
    /// The password from the variable `password_env` names, when it is set.
    pub fn password_from_env(&self) -> Option<String> {
        if self.password_env.is_empty() {
            return None;
        }
        std::env::var(&self.password_env)
            .ok()
            .filter(|s| !s.is_empty())
    }

    /// Checks the keys of `[mysql]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        check(
            !self.query.contains("{ids}"),
            "mysql.query",
            "expected the `{ids}` placeholder",
        )?;
        check(
            self.batch == 0 || self.batch > 65_535,
            "mysql.batch",
            "expected between 1 and 65535 (MySQL bind limit)",
        )
    }
}
