//! `hotctl blacklist | unban`: the bans the threshold rules keep (`hotkeys::blacklist`).

use std::time::Duration;

use clap::Args;
use comfy_table::Table;
use hotkeys::Topology;
use hotkeys::blacklist;
use hotkeys::hotlist::now_ms;
use hotkeys::redis::RedisConn;
use hotkeys::zk::Zk;
use serde::Serialize;

use crate::error::bail;
use crate::render::seconds;

#[derive(Args)]
pub struct BlacklistArgs {
    /// Only this counter; every counter with a threshold rule when absent.
    counter: Option<String>,
    /// One JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct UnbanArgs {
    counter: String,
    /// Keys to lift the ban of. A key still over the threshold is banned again at the next
    /// evaluation; allow-list it in the topology to spare it for good.
    #[arg(required = true)]
    keys: Vec<String>,
}

/// One ban in force, as `hotctl blacklist` and the dashboard show it.
#[derive(Debug, Clone, Serialize)]
pub struct Ban {
    pub counter: String,
    pub key: String,
    pub remaining_ms: i64,
}

/// The bans in force of every ruled counter, or only of `only`.
pub async fn bans(
    topology: &Topology,
    redis: &mut RedisConn,
    only: Option<&str>,
) -> crate::error::Result<Vec<Ban>> {
    let now = now_ms();
    let mut bans = Vec::new();
    for counter in ruled_counters(topology, only)? {
        for entry in blacklist::entries(redis, &topology.name, &counter).await? {
            // A ban that ran out is released by the next evaluation; it no longer counts.
            if entry.until_ms > now {
                bans.push(Ban {
                    counter: counter.clone(),
                    key: entry.key,
                    remaining_ms: entry.until_ms - now,
                });
            }
        }
    }
    Ok(bans)
}

pub async fn show(topology: &Topology, args: BlacklistArgs) -> crate::error::Result<()> {
    let mut redis = RedisConn::connect_home(&topology.redis).await?;
    let bans = bans(topology, &mut redis, args.counter.as_deref()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&bans)?);
    } else {
        let mut table = Table::new();
        table.set_header(["counter", "key", "remaining"]);
        for ban in &bans {
            table.add_row([
                ban.counter.clone(),
                crate::render::printable(&ban.key),
                remaining_text(ban.remaining_ms),
            ]);
        }
        println!("{table}");
    }
    Ok(())
}

/// A ban's time left in whole seconds, rounded up (`4m 10s`).
pub fn remaining_text(ms: i64) -> String {
    seconds(Duration::from_secs((ms.max(0) as u64).div_ceil(1000)))
}

pub async fn unban(topology: &Topology, args: UnbanArgs) -> crate::error::Result<()> {
    ruled_counters(topology, Some(&args.counter))?;
    let mut redis = RedisConn::connect_home(&topology.redis).await?;
    let zk = Zk::connect(topology).await?;
    let removed = blacklist::unban(
        &mut redis,
        &zk,
        &topology.name,
        &args.counter,
        &args.keys,
        now_ms(),
    )
    .await?;
    println!(
        "lifted {removed} of {} bans on counter `{}`",
        args.keys.len(),
        args.counter
    );
    Ok(())
}

/// Names of the counters with a threshold rule, or the one asked for if it has one.
pub fn ruled_counters(
    topology: &Topology,
    only: Option<&str>,
) -> crate::error::Result<Vec<String>> {
    let ruled: Vec<String> = topology
        .counters()
        .into_iter()
        .filter(|c| c.rule.is_some())
        .map(|c| c.name)
        .collect();
    match only {
        None => Ok(ruled),
        Some(name) if ruled.iter().any(|c| c == name) => Ok(vec![name.to_string()]),
        Some(name) if topology.counter(name).is_some() => {
            bail!("counter `{name}` has no threshold rule")
        }
        Some(name) => bail!("topology `{}` has no counter `{name}`", topology.name),
    }
}
