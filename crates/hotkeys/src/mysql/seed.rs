//! A deterministic product catalogue for demos, benchmarks and tests.
//!
//! Product `id` under seed `s` is a pure function of `(id, s)` ([`SeedProduct::generate`]),
//! so any part of the catalogue can be computed without the database and a re-seed writes
//! exactly the same rows. Rows go in as multi-row `INSERT … ON DUPLICATE KEY UPDATE` with
//! bound values, several statements in flight at once.

use std::time::{Duration, Instant};

use sqlx::{MySql, QueryBuilder};
use tokio::task::JoinSet;

use super::encode::push_json_string;
use super::{MysqlError, Pool};

/// Rows per INSERT: 7 binds each stays far below the 65,535-bind limit, and a statement of
/// this size keeps the server busy without one huge transaction.
const ROWS_PER_STATEMENT: u64 = 2_000;

/// Statements in flight; more only queue up inside the server on two cores.
const MAX_PARALLEL: usize = 4;

/// 2024-01-01T00:00:00Z: `updated_at` falls in the year after it.
const EPOCH_MS: i64 = 1_704_067_200_000;
const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;

const ADJECTIVES: &[&str] = &[
    "Classic",
    "Compact",
    "Deluxe",
    "Eco",
    "Elegant",
    "Essential",
    "Heavy-Duty",
    "Lightweight",
    "Modern",
    "Portable",
    "Premium",
    "Rugged",
    "Smart",
    "Sleek",
    "Vintage",
    "Wireless",
];
const NOUNS: &[&str] = &[
    "Backpack",
    "Blender",
    "Camera",
    "Chair",
    "Desk Lamp",
    "Headphones",
    "Jacket",
    "Kettle",
    "Keyboard",
    "Mug",
    "Notebook",
    "Running Shoes",
    "Speaker",
    "Sunglasses",
    "Tent",
    "Watch",
];
const COLORS: &[&str] = &[
    "black", "white", "red", "blue", "green", "grey", "navy", "beige",
];
const SIZES: &[&str] = &["XS", "S", "M", "L", "XL"];
const TAGS: &[&str] = &[
    "new",
    "sale",
    "bestseller",
    "eco",
    "limited",
    "gift",
    "outdoor",
    "home",
];

/// One generated product, as the seed writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedProduct {
    pub id: i64,
    pub shop_id: i64,
    pub name: String,
    /// Price in cents; the column is `DECIMAL(12,2)`.
    pub price_cents: i64,
    pub stock: i32,
    /// The `attributes` JSON document as text.
    pub attributes: String,
    pub updated_at_ms: i64,
}

impl SeedProduct {
    /// Product `id` of the catalogue seeded with `seed`.
    pub fn generate(id: i64, seed: u64) -> SeedProduct {
        let mut r = Rng(seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let name = format!(
            "{} {} {}",
            ADJECTIVES[r.below(ADJECTIVES.len() as u64) as usize],
            NOUNS[r.below(NOUNS.len() as u64) as usize],
            id
        );
        let shop_id = 1 + r.below(1_000) as i64;
        let price_cents = 99 + r.below(250_000) as i64;
        let stock = r.below(500) as i32;
        let color = COLORS[r.below(COLORS.len() as u64) as usize];
        let size = SIZES[r.below(SIZES.len() as u64) as usize];
        let mut tags: Vec<&str> = (0..r.below(3) + 1)
            .map(|_| TAGS[r.below(TAGS.len() as u64) as usize])
            .collect();
        tags.dedup();
        let mut attributes = String::with_capacity(96);
        attributes.push_str("{\"color\":");
        push_json_string(&mut attributes, color);
        attributes.push_str(",\"size\":");
        push_json_string(&mut attributes, size);
        attributes.push_str(",\"tags\":[");
        for (i, tag) in tags.iter().enumerate() {
            if i > 0 {
                attributes.push(',');
            }
            push_json_string(&mut attributes, tag);
        }
        attributes.push_str(&format!("],\"weight_g\":{}}}", 50 + r.below(5_000)));
        let updated_at_ms = EPOCH_MS + r.below(YEAR_MS) as i64;
        SeedProduct {
            id,
            shop_id,
            name,
            price_cents,
            stock,
            attributes,
            updated_at_ms,
        }
    }

    /// The price as MySQL prints a `DECIMAL(12,2)`: `"1234.50"`.
    pub fn price(&self) -> String {
        format!("{}.{:02}", self.price_cents / 100, self.price_cents % 100)
    }

    /// `updated_at` as a UTC SQL literal with milliseconds.
    pub fn updated_at_sql(&self) -> String {
        let (date, time) = utc(self.updated_at_ms);
        format!("{date} {time}")
    }

    /// `updated_at` as the row loader writes a TIMESTAMP.
    pub fn updated_at_rfc3339(&self) -> String {
        let (date, time) = utc(self.updated_at_ms);
        format!("{date}T{time}Z")
    }

    /// The value the row loader produces for the default query, parsed.
    pub fn expected_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "shop_id": self.shop_id,
            "name": self.name,
            "price": self.price(),
            "stock": self.stock,
            "attributes": serde_json::from_str::<serde_json::Value>(&self.attributes)
                .expect("generated attributes are JSON"),
            "updated_at": self.updated_at_rfc3339(),
        })
    }
}

/// `YYYY-MM-DD` and `HH:MM:SS.mmm` of a Unix time in milliseconds (UTC).
fn utc(ms: i64) -> (String, String) {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            rem / 3_600_000,
            rem / 60_000 % 60,
            rem / 1_000 % 60,
            rem % 1_000
        ),
    )
}

/// SplitMix64: tiny, fast, and the same on every platform and crate version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a seed did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedReport {
    /// Products `1..=rows` now hold the generated values.
    pub rows: u64,
    pub took: Duration,
}

/// Writes products `1..=n` of catalogue `seed`, inserting missing rows and overwriting
/// existing ones with the generated values. Concurrent seeders wait for each other.
pub async fn seed(pool: &Pool, n: u64, seed: u64) -> Result<SeedReport, MysqlError> {
    let started = Instant::now();
    // Concurrent seeders (parallel tests, a demo) take turns instead of deadlocking on the
    // same key ranges.
    super::with_named_lock(
        pool,
        "hotkeys.seed.",
        Duration::from_secs(600),
        insert_all(pool, n, seed),
    )
    .await?;
    Ok(SeedReport {
        rows: n,
        took: started.elapsed(),
    })
}

async fn insert_all(pool: &Pool, n: u64, seed: u64) -> Result<(), MysqlError> {
    let parallel = (pool.options().get_max_connections() as usize).clamp(1, MAX_PARALLEL);
    let mut running = JoinSet::new();
    let mut next = 1u64;
    let mut done = 0u64;
    let mut reported = 0u64;
    while next <= n || !running.is_empty() {
        while next <= n && running.len() < parallel {
            let last = (next + ROWS_PER_STATEMENT - 1).min(n);
            let pool = pool.clone();
            running.spawn(async move { insert_range(&pool, next, last, seed).await });
            next = last + 1;
        }
        match running.join_next().await {
            Some(Ok(Ok(rows))) => done += rows,
            Some(Ok(Err(e))) => return Err(e),
            Some(Err(e)) => {
                return Err(MysqlError::query(
                    "seeding",
                    sqlx::Error::Protocol(format!("an insert task failed: {e}")),
                ));
            }
            None => {}
        }
        if done * 10 / n.max(1) > reported {
            reported = done * 10 / n.max(1);
            tracing::info!(rows = done, of = n, "seeding products");
        }
    }
    Ok(())
}

async fn insert_range(pool: &Pool, first: u64, last: u64, seed: u64) -> Result<u64, MysqlError> {
    let products: Vec<SeedProduct> = (first..=last)
        .map(|id| SeedProduct::generate(id as i64, seed))
        .collect();
    let mut q = QueryBuilder::<MySql>::new(
        "INSERT INTO products (id, shop_id, name, price, stock, attributes, updated_at) ",
    );
    q.push_values(&products, |mut row, p| {
        row.push_bind(p.id)
            .push_bind(p.shop_id)
            .push_bind(p.name.as_str())
            .push_bind(p.price())
            .push_bind(p.stock)
            .push_bind(p.attributes.as_str())
            .push_bind(p.updated_at_sql());
    });
    q.push(
        " ON DUPLICATE KEY UPDATE shop_id = VALUES(shop_id), name = VALUES(name), \
         price = VALUES(price), stock = VALUES(stock), attributes = VALUES(attributes), \
         updated_at = VALUES(updated_at)",
    );
    q.build()
        .execute(pool)
        .await
        .map_err(|e| MysqlError::query("inserting products", e))?;
    Ok(products.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_id_and_seed_give_the_same_product() {
        assert_eq!(SeedProduct::generate(42, 7), SeedProduct::generate(42, 7));
        assert_ne!(SeedProduct::generate(42, 7), SeedProduct::generate(42, 8));
        assert_ne!(
            SeedProduct::generate(42, 7).name,
            SeedProduct::generate(43, 7).name
        );
    }

    #[test]
    fn attributes_are_json_and_prices_are_decimals() {
        for id in 1..200 {
            let p = SeedProduct::generate(id, 1);
            let attrs: serde_json::Value = serde_json::from_str(&p.attributes).unwrap();
            assert!(attrs["tags"].is_array());
            let price = p.price();
            let (units, cents) = price.split_once('.').unwrap();
            assert_eq!(cents.len(), 2);
            assert!(units.parse::<i64>().unwrap() >= 0);
        }
    }

    #[test]
    fn utc_dates_match_known_days() {
        assert_eq!(utc(EPOCH_MS), ("2024-01-01".into(), "00:00:00.000".into()));
        assert_eq!(
            utc(EPOCH_MS + 59 * 86_400_000 + 3_723_004),
            ("2024-02-29".into(), "01:02:03.004".into())
        );
        assert_eq!(utc(0), ("1970-01-01".into(), "00:00:00.000".into()));
    }
}
