//! Encoding a query's answer as it streams: JSON, CSV or an Arrow IPC stream, one record
//! batch at a time (what `POST /v1/query` and `sluice query --format` write).
//!
//! JSON shape: `{"columns":[{"name":…,"type":…}],"rows":[{…},…]}` with one object per row
//! (nulls written as `null`; timestamps as RFC 3339 text, as `arrow-json` writes them).

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

/// Answer formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Arrow,
}

/// The media type of the Arrow IPC streaming format (IANA registration).
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

impl Format {
    /// From an `Accept` header: the first of its media types that is one of ours, else JSON.
    pub fn from_accept(accept: Option<&str>) -> Format {
        for t in accept.unwrap_or("").split(',').map(|t| t.split(';').next().unwrap_or("").trim()) {
            match t {
                "text/csv" => return Format::Csv,
                ARROW_STREAM => return Format::Arrow,
                "application/json" => return Format::Json,
                _ => {}
            }
        }
        Format::Json
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => ARROW_STREAM,
        }
    }
}

/// Encodes one answer: [`Encoder::head`], then [`Encoder::batch`] per batch, then
/// [`Encoder::finish`]; each returns the bytes to send next.
pub struct Encoder {
    format: Format,
    schema: SchemaRef,
    rows: usize,
    ipc: Option<arrow_ipc::writer::StreamWriter<Vec<u8>>>,
}

impl Encoder {
    pub fn new(format: Format, schema: SchemaRef) -> Result<Encoder, String> {
        let ipc = match format {
            Format::Arrow => Some(arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &schema).map_err(|e| e.to_string())?),
            _ => None,
        };
        Ok(Encoder { format, schema, rows: 0, ipc })
    }

    /// What comes before the first row.
    pub fn head(&mut self) -> Vec<u8> {
        match self.format {
            Format::Json => {
                let columns: Vec<serde_json::Value> = self.schema.fields().iter().map(|f| serde_json::json!({"name": f.name(), "type": f.data_type().to_string()})).collect();
                format!("{{\"columns\":{},\"rows\":[", serde_json::Value::Array(columns)).into_bytes()
            }
            Format::Csv => {
                let mut out = Vec::new();
                let empty = RecordBatch::new_empty(self.schema.clone());
                let _ = arrow_csv::WriterBuilder::new().with_header(true).build(&mut out).write(&empty);
                out
            }
            Format::Arrow => self.ipc.as_mut().map(|w| std::mem::take(w.get_mut())).unwrap_or_default(),
        }
    }

    /// The rows of `batch`.
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        match self.format {
            Format::Json => {
                let mut lines = Vec::new();
                let mut w = arrow_json::WriterBuilder::new().with_explicit_nulls(true).build::<_, arrow_json::writer::LineDelimited>(&mut lines);
                w.write(batch).map_err(|e| e.to_string())?;
                w.finish().map_err(|e| e.to_string())?;
                drop(w);
                for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    if self.rows > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(line);
                    self.rows += 1;
                }
            }
            Format::Csv => {
                arrow_csv::WriterBuilder::new().with_header(false).build(&mut out).write(batch).map_err(|e| e.to_string())?;
            }
            Format::Arrow => {
                let w = self.ipc.as_mut().ok_or("no IPC writer")?;
                w.write(batch).map_err(|e| e.to_string())?;
                out = std::mem::take(w.get_mut());
            }
        }
        Ok(out)
    }

    /// What comes after the last row.
    pub fn finish(&mut self) -> Vec<u8> {
        match self.format {
            Format::Json => b"]}".to_vec(),
            Format::Csv => Vec::new(),
            Format::Arrow => match self.ipc.as_mut() {
                Some(w) => {
                    let _ = w.finish();
                    std::mem::take(w.get_mut())
                }
                None => Vec::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("p", DataType::Utf8, true), Field::new("n", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec![Some("a"), None])), Arc::new(Int64Array::from(vec![1, 2]))]).unwrap()
    }

    fn encode(format: Format) -> Vec<u8> {
        let b = batch();
        let mut e = Encoder::new(format, b.schema()).unwrap();
        let mut out = e.head();
        out.extend(e.batch(&b).unwrap());
        out.extend(e.batch(&b).unwrap());
        out.extend(e.finish());
        out
    }

    #[test]
    fn json_is_one_document_with_every_row() {
        let v: serde_json::Value = serde_json::from_slice(&encode(Format::Json)).unwrap();
        assert_eq!(v["columns"][1]["name"], "n");
        assert_eq!(v["rows"].as_array().unwrap().len(), 4);
        assert_eq!(v["rows"][1]["p"], serde_json::Value::Null);
    }

    #[test]
    fn csv_has_one_header() {
        assert_eq!(String::from_utf8(encode(Format::Csv)).unwrap(), "p,n\na,1\n,2\na,1\n,2\n");
    }

    #[test]
    fn arrow_stream_reads_back() {
        let bytes = encode(Format::Arrow);
        let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
        let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 4);
    }

    #[test]
    fn accept_picks_the_first_known_type() {
        assert_eq!(Format::from_accept(Some("text/csv, application/json")), Format::Csv);
        assert_eq!(Format::from_accept(Some("application/vnd.apache.arrow.stream")), Format::Arrow);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Json);
        assert_eq!(Format::from_accept(None), Format::Json);
    }
}
