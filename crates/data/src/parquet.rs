//! Documents from Parquet files (the layout of FineWeb, FineWeb-Edu and most hub datasets):
//! one row is one document, its text in a string column.
//!
//! Reading streams: one row group at a time, [`RECORDS_PER_READ`] rows per read, so memory
//! holds a page and a few hundred documents whatever the file size. Errors name the file, and
//! the row group and row (both counted from 1) of a bad text, or where a failed read began.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::basic::Type as PhysicalType;
use parquet::column::reader::{get_typed_column_reader, ColumnReaderImpl};
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::reader::{FileReader, SerializedFileReader};

use crate::error::{DataError, Result};
use crate::text::Document;

/// Rows decoded per read of the text column.
pub const RECORDS_PER_READ: usize = 256;

/// Opens `path` and reads its footer; a file without one is named as truncated.
fn open_reader(path: &Path) -> Result<SerializedFileReader<File>> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    SerializedFileReader::new(file).map_err(|e| {
        DataError::file(
            path,
            format!("not a readable Parquet file (truncated or corrupt footer?): {e}"),
        )
    })
}

/// The text column's index: a top-level, non-repeated string (BYTE_ARRAY) column named
/// `field`. A miss lists the columns the file has.
fn text_column(path: &Path, reader: &SerializedFileReader<File>, field: &str) -> Result<usize> {
    let schema = reader.metadata().file_metadata().schema_descr();
    let columns = schema.columns();
    let Some(index) = columns.iter().position(|c| c.path().parts() == [field]) else {
        let names: Vec<String> = columns.iter().map(|c| c.path().string()).collect();
        return Err(DataError::file(
            path,
            format!(
                "no column {field:?}; the file has {} (choose one with --text-field)",
                names.join(", ")
            ),
        ));
    };
    let column = &columns[index];
    if column.physical_type() != PhysicalType::BYTE_ARRAY || column.max_rep_level() > 0 {
        return Err(DataError::file(
            path,
            format!(
                "column {field:?} holds {}{}, not text",
                column.physical_type(),
                if column.max_rep_level() > 0 {
                    " lists"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(index)
}

/// Documents of a Parquet file, read lazily a few hundred rows at a time.
pub struct ParquetDocuments {
    path: PathBuf,
    reader: SerializedFileReader<File>,
    column: usize,
    nullable: bool,
    /// The row group being read and its column reader.
    row_group: usize,
    current: Option<ColumnReaderImpl<ByteArrayType>>,
    /// Rows read so far in the file, and in the current row group.
    row: usize,
    row_in_group: usize,
    ready: VecDeque<Document>,
    values: Vec<ByteArray>,
    def_levels: Vec<i16>,
    failed: bool,
}

impl ParquetDocuments {
    /// Opens a Parquet file whose column `field` holds the text.
    pub fn open(path: &Path, field: &str) -> Result<Self> {
        let reader = open_reader(path)?;
        let column = text_column(path, &reader, field)?;
        let nullable = reader
            .metadata()
            .file_metadata()
            .schema_descr()
            .column(column)
            .max_def_level()
            > 0;
        Ok(ParquetDocuments {
            path: path.into(),
            reader,
            column,
            nullable,
            row_group: 0,
            current: None,
            row: 0,
            row_in_group: 0,
            ready: VecDeque::new(),
            values: Vec::new(),
            def_levels: Vec::new(),
            failed: false,
        })
    }

    /// Rows in the file, from its footer.
    pub fn rows(&self) -> usize {
        self.reader.metadata().file_metadata().num_rows().max(0) as usize
    }

    /// An error at the current row (counted from 1, as row groups are).
    fn at_row(&self, message: impl std::fmt::Display) -> DataError {
        self.error(format!("row {}", self.row_in_group + 1), message)
    }

    /// An error in a read of up to [`RECORDS_PER_READ`] rows from the current one.
    fn reading(&self, message: impl std::fmt::Display) -> DataError {
        self.error(
            format!("reading from row {}", self.row_in_group + 1),
            message,
        )
    }

    fn error(&self, place: String, message: impl std::fmt::Display) -> DataError {
        DataError::file(
            &self.path,
            format!(
                "row group {} of {}, {place} of the group (row {} of the file): {message}",
                self.row_group + 1,
                self.reader.num_row_groups(),
                self.row + 1
            ),
        )
    }

    /// Reads the next rows into `ready`; false at the end of the file.
    fn fill(&mut self) -> Result<bool> {
        loop {
            if self.current.is_none() {
                if self.row_group == self.reader.num_row_groups() {
                    return Ok(false);
                }
                self.row_in_group = 0;
                let column = self
                    .reader
                    .get_row_group(self.row_group)
                    .and_then(|group| group.get_column_reader(self.column))
                    .map_err(|e| self.reading(e))?;
                self.current = Some(get_typed_column_reader::<ByteArrayType>(column));
            }
            self.values.clear();
            self.def_levels.clear();
            let reader = self.current.as_mut().expect("opened above");
            let defs = self.nullable.then_some(&mut self.def_levels);
            let read = reader.read_records(RECORDS_PER_READ, defs, None, &mut self.values);
            let (records, _, _) = read.map_err(|e| self.reading(e))?;
            if records == 0 {
                self.current = None;
                self.row_group += 1;
                continue;
            }
            self.take_values(records)?;
            return Ok(true);
        }
    }

    /// Turns the rows just read into documents; a null or non-UTF-8 row is an error.
    fn take_values(&mut self, records: usize) -> Result<()> {
        if self.nullable && self.values.len() != records {
            let null = self.def_levels.iter().position(|&d| d == 0).unwrap_or(0);
            self.row += null;
            self.row_in_group += null;
            return Err(self.at_row("the text is null"));
        }
        for value in std::mem::take(&mut self.values) {
            let text = String::from_utf8(value.data().to_vec()).map_err(|e| {
                self.at_row(format!(
                    "not valid UTF-8 at byte {}",
                    e.utf8_error().valid_up_to()
                ))
            })?;
            self.ready.push_back(Document {
                source: format!("{} row {}", self.path.display(), self.row),
                text,
            });
            self.row += 1;
            self.row_in_group += 1;
        }
        Ok(())
    }
}

impl Iterator for ParquetDocuments {
    type Item = Result<Document>;

    fn next(&mut self) -> Option<Result<Document>> {
        if self.failed {
            return None;
        }
        if self.ready.is_empty() {
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        self.ready.pop_front().map(Ok)
    }
}

/// Writes documents as a Parquet file with one required string column `text`, `rows_per_group`
/// rows per row group, snappy-compressed, atomically. The inverse of [`ParquetDocuments`],
/// for tests, benchmarks and turning a corpus into Parquet.
pub fn write_documents<S: AsRef<str>>(
    path: &Path,
    texts: impl IntoIterator<Item = S>,
    rows_per_group: usize,
) -> Result<()> {
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use std::sync::Arc;

    let schema = parse_message_type("message documents { REQUIRED BYTE_ARRAY text (UTF8); }")
        .expect("a valid schema");
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut texts = texts.into_iter().peekable();
    llm_common::fs::atomic_write_with(path, |file| {
        let mut writer = SerializedFileWriter::new(file, Arc::new(schema), Arc::new(props))?;
        while texts.peek().is_some() {
            let rows: Vec<ByteArray> = texts
                .by_ref()
                .take(rows_per_group.max(1))
                .map(|t| ByteArray::from(t.as_ref()))
                .collect();
            let mut group = writer.next_row_group()?;
            let mut column = group.next_column()?.expect("one column");
            column
                .typed::<ByteArrayType>()
                .write_batch(&rows, None, None)?;
            column.close()?;
            group.close()?;
        }
        writer.close()?;
        Ok(())
    })
    .map_err(|e| DataError::io(path, e))
}
