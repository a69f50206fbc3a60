//! Key extraction cost per event: `cargo bench -p hotkeys --bench extract`.
use std::hint::black_box;
use std::time::Instant;

use hotkeys::event::KeyPointer;

fn main() {
    let event = br#"{"request_module":"product_detail_info","headers":{"host":"shop.example.com","user-agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36","accept":"text/html","referer":"https://shop.example.com/list?cat=3"},"uri_args":{"productId":"123456","shopId":"17"},"http_version":1.1,"method":"GET","raw_reader":"GET /product?productId=123456&shopId=17 HTTP/1.1\r\nHost: shop.example.com\r\n\r\n","body_data":null}"#;
    let pointer = KeyPointer::parse("/uri_args/productId");
    let n = 2_000_000;
    let start = Instant::now();
    for _ in 0..n {
        black_box(pointer.extract(Some(black_box(event)), None).unwrap());
    }
    let el = start.elapsed();
    println!(
        "extract: {:.0} ns/event ({} bytes)",
        el.as_nanos() as f64 / n as f64,
        event.len()
    );
}
