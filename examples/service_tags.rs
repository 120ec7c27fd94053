//! Writes a service tags file of the real one's size and shape (`ServiceTagsShape::FULL`, about
//! 50,000 prefixes in 2,501 tags) for benchmarks: `cargo run --release --example service_tags
//! -- OUT.json`. Microsoft's file cannot be downloaded here, and no registry package ships it.
use flowlogd::enrich::testdata::{ServiceTagsShape, generate_service_tags};

fn main() -> anyhow::Result<()> {
    let Some(out) = std::env::args_os().nth(1) else {
        anyhow::bail!("usage: service_tags OUT.json");
    };
    std::fs::write(&out, generate_service_tags(&ServiceTagsShape::FULL))?;
    Ok(())
}
