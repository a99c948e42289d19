//! The summary of `mover benchmark`.

use serde::Serialize;

use crate::benchmark::{BenchReport, Row, SourceInfo};

/// The synthetic data the benchmark measures.
#[derive(Clone, Debug, Serialize)]
pub struct BenchCorpus {
    pub bytes: u64,
    pub chunk_size: usize,
    /// Half the chunks are text-like, half random.
    pub compressible_fraction: f64,
}

/// The source measured with `--source`.
#[derive(Clone, Debug, Serialize)]
pub struct BenchSource {
    pub spec: String,
    pub len: u64,
    pub data_bytes: u64,
    pub read_whole: bool,
}

impl From<&SourceInfo> for BenchSource {
    fn from(s: &SourceInfo) -> Self {
        BenchSource {
            spec: s.spec.clone(),
            len: s.len,
            data_bytes: s.data_bytes,
            read_whole: s.read_whole,
        }
    }
}

/// One measurement.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    pub stage: &'static str,
    pub level: Option<i32>,
    pub cipher: Option<&'static str>,
    pub threads: usize,
    pub bytes: u64,
    pub stored_bytes: Option<u64>,
    pub seconds: f64,
    pub mb_per_s: f64,
}

impl From<&Row> for BenchRow {
    fn from(r: &Row) -> Self {
        BenchRow {
            stage: r.stage.key(),
            level: r.stage.level(),
            cipher: r.stage.cipher().map(chunker::crypto::Aead::name),
            threads: r.threads,
            bytes: r.bytes,
            stored_bytes: r.stored_bytes,
            seconds: r.seconds,
            mb_per_s: r.mb_per_s(),
        }
    }
}

/// `mover benchmark`'s summary.
#[derive(Clone, Debug, Serialize)]
pub struct BenchmarkSummary {
    pub command: &'static str,
    pub threads: usize,
    pub seconds_per_row: f64,
    pub level: i32,
    pub corpus: BenchCorpus,
    pub source: Option<BenchSource>,
    pub rows: Vec<BenchRow>,
    /// What limits a backup, most limiting first.
    pub limits: Vec<String>,
}

impl From<&BenchReport> for BenchmarkSummary {
    fn from(r: &BenchReport) -> Self {
        BenchmarkSummary {
            command: "benchmark",
            threads: r.threads,
            seconds_per_row: r.seconds,
            level: r.level,
            corpus: BenchCorpus {
                bytes: r.corpus_bytes,
                chunk_size: r.chunk_size,
                compressible_fraction: 0.5,
            },
            source: r.source.as_ref().map(BenchSource::from),
            rows: r.rows.iter().map(BenchRow::from).collect(),
            limits: r.limits(),
        }
    }
}
