//! Throughput of the pure pipeline (PT1H.json bytes → records → tuples → ECS documents in an
//! NDJSON bulk body) against bare JSON validation of the same bytes, our practical ceiling.
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flowlogd::bulk_buffer::BulkBuffer;
use flowlogd::config::document::Schema;
use flowlogd::encode::document::{BlobContext, DocumentEncoder};
use flowlogd::generator::{GenKind, GenOptions, generate};
use flowlogd::index_pattern::IndexPattern;
use flowlogd::pipeline::BlobDecoder;

fn inputs() -> Vec<(&'static str, Vec<u8>, u64)> {
    [("vnet", GenKind::Vnet), ("nsg2", GenKind::Nsg2)]
        .into_iter()
        .map(|(name, kind)| {
            // A busy NIC: 60 one-minute records of 200 tuples each.
            let blob = generate(&GenOptions {
                kind,
                records: 60,
                tuples_per_record: 200,
                seed: 42,
                ..GenOptions::default()
            });
            (name, blob.bytes(), blob.tuples)
        })
        .collect()
}

fn pipeline(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_to_ndjson");
    for (name, bytes, tuples) in inputs() {
        for schema in [Schema::Ecs, Schema::Logstash] {
            group.throughput(Throughput::Elements(tuples));
            let mut encoder = DocumentEncoder::new(
                schema,
                IndexPattern::parse("vnet-flow-logs-%{+xxxx.ww}").unwrap(),
            );
            let mut out = BulkBuffer::new();
            group.bench_with_input(
                BenchmarkId::new(format!("{schema:?}").to_lowercase(), name),
                &bytes,
                |b, bytes| {
                    b.iter(|| {
                        out.clear();
                        let mut decoder = BlobDecoder::new(
                            &mut encoder,
                            BlobContext::new("insights-logs-flowlogflowevent", "bench/PT1H.json"),
                            0,
                        );
                        decoder.feed(bytes, &mut out, &mut |p| panic!("{p}"));
                        assert_eq!(out.len() as u64, tuples);
                    })
                },
            );
        }
    }
    group.finish();

    let mut group = c.benchmark_group("bare_json_validation");
    for (name, bytes, tuples) in inputs() {
        group.throughput(Throughput::Elements(tuples));
        group.bench_with_input(BenchmarkId::new("ignored_any", name), &bytes, |b, bytes| {
            b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(bytes).unwrap())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("bytes_per_second");
    for (name, bytes, _) in inputs() {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        let mut encoder = DocumentEncoder::new(
            Schema::Ecs,
            IndexPattern::parse("vnet-flow-logs-%{+xxxx.ww}").unwrap(),
        );
        let mut out = BulkBuffer::new();
        group.bench_with_input(BenchmarkId::new("ecs", name), &bytes, |b, bytes| {
            b.iter(|| {
                out.clear();
                let mut decoder = BlobDecoder::new(&mut encoder, BlobContext::new("c", "b"), 0);
                decoder.feed(bytes, &mut out, &mut |p| panic!("{p}"));
            })
        });
        group.bench_with_input(BenchmarkId::new("ignored_any", name), &bytes, |b, bytes| {
            b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(bytes).unwrap())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(4));
    targets = pipeline
}
criterion_main!(benches);
