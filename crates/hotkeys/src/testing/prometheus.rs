//! A binary's Prometheus endpoint (`--metrics`), scraped and read the one way every test
//! does it.

/// The text of the Prometheus endpoint on `127.0.0.1:port`; `None` while nothing answers
/// there.
pub async fn scrape_metrics(port: u16) -> Option<String> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?;
    response.text().await.ok()
}

/// The sum of every sample of metric `name` (all label sets) in a scraped `body`.
pub fn sum_samples(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The sum of every sample of metric `name` on `port` once it reaches `at_least`, waiting
/// at most `seconds`.
pub async fn metric_total(port: u16, name: &str, at_least: f64, seconds: u64) -> f64 {
    super::eventually(seconds, &format!("{name} to reach {at_least}"), || async {
        let total = sum_samples(&scrape_metrics(port).await?, name);
        (total >= at_least).then_some(total)
    })
    .await
}

/// The value of one counter `sample` on `port` (`name` with its labels, as printed), 0
/// while it is not printed yet; `None` while nothing answers there.
pub async fn counter_value(port: u16, sample: &str) -> Option<u64> {
    let body = scrape_metrics(port).await?;
    let value = body
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse::<f64>().expect("a number") as u64);
    Some(value)
}
