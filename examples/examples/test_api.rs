//! A local HTTP API to try the `rest-api` kind against: records with every pagination style
//! (see `arcane_test_support::rest_api`), served on 127.0.0.1:8089 until stopped.
//!
//! ```sh
//! cargo run -p arcane-examples --features test-api --example test_api -- 100000   # records to serve
//! cargo run --release --bin arcane --features rest-api -- run --spec examples/rest-api.json --backfill
//! ```
//!
//! `ARCANE_TEST_API_ADDR` changes the address.

#![allow(clippy::print_stdout)]

use arcane_test_support::rest_api::TestApi;

fn main() -> std::io::Result<()> {
    let records = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let addr = std::env::var("ARCANE_TEST_API_ADDR").unwrap_or_else(|_| "127.0.0.1:8089".into());
    let api = TestApi::start_on(&addr, records)?;
    println!(
        "serving {records} records on {} (e.g. {}); Ctrl-C to stop",
        api.base_url(),
        api.url("/items/cursor?limit=2")
    );
    loop {
        std::thread::park();
    }
}
