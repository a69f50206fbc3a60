-- The product catalogue prewarm loads into the cache (one row = one cache value).
-- Portable between MariaDB 10.5+ and MySQL 8: MariaDB stores JSON as LONGTEXT with a
-- json_valid() check, MySQL as its native JSON type; both accept this text.
CREATE TABLE IF NOT EXISTS products (
    id BIGINT NOT NULL,
    shop_id BIGINT NOT NULL,
    name VARCHAR(255) NOT NULL,
    price DECIMAL(12, 2) NOT NULL,
    stock INT NOT NULL DEFAULT 0,
    attributes JSON NULL,
    updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    KEY products_shop_id (shop_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
