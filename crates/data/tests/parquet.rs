//! Parquet corpora: the fixtures in `fixtures/parquet` (written by pyarrow, see
//! `make_parquet.py`) prepare to exactly the shards of their JSON-lines twin, in every codec,
//! and bad files are refused with the file, column, row group and row named.

use std::path::{Path, PathBuf};

use llm_bpe::Tokenizer;
use llm_data::parquet::ParquetDocuments;
use llm_data::text::{documents, Document};
use llm_data::{prepare, Manifest, PrepareConfig};
use parquet::file::reader::{FileReader, SerializedFileReader};

const CODECS: [&str; 5] = ["snappy", "zstd", "gzip", "lz4", "none"];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parquet")
        .join(name)
}

fn small_shards() -> PrepareConfig {
    PrepareConfig {
        shard_tokens: 2_000,
        ..PrepareConfig::default()
    }
}

fn prepare_into(input: &Path, out: &Path) -> Manifest {
    prepare(
        &[input.to_path_buf()],
        out,
        &Tokenizer::gpt2(),
        "gpt2",
        &small_shards(),
        &|_, _| {},
    )
    .unwrap()
    .manifest
}

fn texts(docs: impl Iterator<Item = llm_data::Result<Document>>) -> Vec<String> {
    docs.map(|d| d.unwrap().text).collect()
}

#[test]
fn rows_are_read_in_order_across_row_groups() {
    let jsonl = texts(documents(&[fixture("sample.jsonl")], "text"));
    assert_eq!(jsonl.len(), 126);
    for codec in CODECS {
        let path = fixture(&format!("sample-{codec}.parquet"));
        let docs = ParquetDocuments::open(&path, "text").unwrap();
        assert_eq!(docs.rows(), 126);
        let rows = texts(docs);
        assert!(rows == jsonl, "{codec}: the rows differ from sample.jsonl");
    }
}

#[test]
fn parquet_prepares_to_the_same_shards_as_its_jsonl_twin() {
    let dir = tempfile::tempdir().unwrap();
    let twin = prepare_into(&fixture("sample.jsonl"), &dir.path().join("jsonl"));
    assert_eq!(
        (twin.documents, twin.split_method.as_str()),
        (126, "documents")
    );
    assert!(twin.train.shards.len() > 1, "several shards are compared");
    for codec in CODECS {
        let m = prepare_into(
            &fixture(&format!("sample-{codec}.parquet")),
            &dir.path().join(codec),
        );
        assert_eq!(m.documents, twin.documents, "{codec}");
        assert_eq!(m.train, twin.train, "{codec}: train shards differ");
        assert_eq!(m.val, twin.val, "{codec}: val shards differ");
    }
}

#[test]
fn a_file_without_the_text_column_names_its_columns() {
    let path = fixture("bad-no-text.parquet");
    let err = ParquetDocuments::open(&path, "text")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("bad-no-text.parquet"), "{err}");
    assert!(err.contains("no column \"text\""), "{err}");
    assert!(err.contains("content, id, dump, url"), "{err}");
    assert!(err.contains("--text-field"), "{err}");
    // The same through prepare, before anything is written.
    let out = tempfile::tempdir().unwrap();
    let err = prepare(
        std::slice::from_ref(&path),
        out.path(),
        &Tokenizer::gpt2(),
        "gpt2",
        &small_shards(),
        &|_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no column \"text\""), "{err}");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    // Another column is a string column too: it reads.
    assert_eq!(
        ParquetDocuments::open(&path, "content").unwrap().count(),
        20
    );
    // A column that is not text is named as such.
    let err = ParquetDocuments::open(&path, "token_count")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("column \"token_count\" holds INT64, not text"),
        "{err}"
    );
}

#[test]
fn a_null_text_names_its_row_group_and_row() {
    let mut docs = ParquetDocuments::open(&fixture("bad-null-text.parquet"), "text").unwrap();
    let before: Vec<_> = docs.by_ref().take(16).collect();
    assert!(before.iter().all(Result::is_ok));
    let err = docs.find_map(Result::err).unwrap().to_string();
    assert!(err.contains("bad-null-text.parquet"), "{err}");
    assert!(
        err.contains("row group 2 of 2, row 5 of the group (row 21 of the file): the text is null"),
        "{err}"
    );
    assert!(docs.next().is_none(), "reading stops at the error");
}

#[test]
fn a_truncated_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("sample-snappy.parquet")).unwrap();
    let cut = dir.path().join("cut.parquet");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = ParquetDocuments::open(&cut, "text")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cut.parquet"), "{err}");
    assert!(err.contains("truncated or corrupt footer"), "{err}");
}

#[test]
fn a_corrupt_row_group_is_named() {
    let source = fixture("sample-snappy.parquet");
    let reader = SerializedFileReader::new(std::fs::File::open(&source).unwrap()).unwrap();
    let chunk = reader.metadata().row_group(3).column(0);
    let start = chunk
        .dictionary_page_offset()
        .unwrap_or(chunk.data_page_offset()) as usize;
    let mut bytes = std::fs::read(&source).unwrap();
    bytes[start..start + 32].fill(0xFF); // the text column's first page header
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("corrupt.parquet");
    std::fs::write(&bad, &bytes).unwrap();

    let mut docs = ParquetDocuments::open(&bad, "text").unwrap();
    let good = docs.by_ref().take(48).filter(Result::is_ok).count();
    assert_eq!(good, 48, "the first three row groups read");
    let err = docs.next().unwrap().unwrap_err().to_string();
    assert!(err.contains("corrupt.parquet"), "{err}");
    assert!(
        err.contains("row group 4 of 8, reading from row 1 of the group (row 49 of the file)"),
        "{err}"
    );
}

#[test]
fn parquet_reruns_are_byte_identical_on_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("sample-zstd.parquet");
    let manifests: Vec<Manifest> = [1, 2, 2]
        .iter()
        .enumerate()
        .map(|(i, &threads)| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| prepare_into(&input, &dir.path().join(format!("run{i}"))))
        })
        .collect();
    assert!(manifests.iter().all(|m| *m == manifests[0]));
}
