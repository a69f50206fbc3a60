-- Hot-key history recorded by `hotctl dashboard`: every counter's merged top N, one row per
-- key per snapshot. `taken_at` is Unix milliseconds (the API's unit; no time-zone rules).
-- Several topologies may share the database, hence `topology`. Indexes serve the dashboard's
-- queries: one key's series, a range's snapshots (top keys, CSV export) and retention.
CREATE TABLE IF NOT EXISTS hot_history (
    id BIGINT NOT NULL AUTO_INCREMENT,
    topology VARCHAR(128) NOT NULL,
    counter VARCHAR(64) NOT NULL,
    taken_at BIGINT NOT NULL,
    `key` VARCHAR(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    count BIGINT UNSIGNED NOT NULL,
    error BIGINT UNSIGNED NULL,
    PRIMARY KEY (id),
    KEY hot_history_key (topology, counter, `key`, taken_at),
    KEY hot_history_taken (topology, counter, taken_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
