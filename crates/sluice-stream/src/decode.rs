//! JSON records → Arrow batches, by a topic's declared schema.
//!
//! Each record's declared fields become columns (see [`crate::sql::catalog`] for the
//! types), followed by `_partition`, `_offset` and `_timestamp`. Only declared top-level
//! keys are materialized (`sluice_core::schema::Decoder`). A record that does not decode
//! is skipped and reported with its field and reason: ingest already sent it to the
//! dead-letter topic (HTTP), or stored and dead-lettered it (Kafka).

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder};
use arrow_array::{ArrayRef, Int32Array, Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow_schema::{ArrowError, SchemaRef};
use sluice_core::schema::{Datum, Decoder, FieldError, FieldType, RecordSchema, Slots};

use crate::sql::catalog::source_schema;

/// Where one record read from a source partition lies in its [`SourceChunk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRef {
    pub offset: u64,
    /// The record's log timestamp (create time or log-append time), epoch ms.
    pub timestamp_ms: i64,
    /// The value's position in the chunk's buffer.
    pub start: usize,
    pub len: usize,
}

/// Records read from one source partition: their bytes in one buffer (for the log, the
/// batches as stored), and where each record's value lies. Nothing is copied per record.
#[derive(Debug, Clone, Default)]
pub struct SourceChunk {
    pub buf: Vec<u8>,
    pub records: Vec<SourceRef>,
}

impl SourceChunk {
    /// The value of record `i`.
    pub fn value(&self, i: usize) -> &[u8] {
        let r = &self.records[i];
        self.buf.get(r.start..r.start + r.len).unwrap_or_default()
    }

    /// A chunk of values, one per record, at offsets from `first_offset` (for tests and tools).
    pub fn from_values<'a>(first_offset: u64, timestamp_ms: i64, values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut c = SourceChunk::default();
        for (i, v) in values.into_iter().enumerate() {
            c.records.push(SourceRef { offset: first_offset + i as u64, timestamp_ms, start: c.buf.len(), len: v.len() });
            c.buf.extend_from_slice(v);
        }
        c
    }
}

enum Col {
    Str(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Ts(TimestampMillisecondBuilder),
}

impl Col {
    fn new(t: FieldType, cap: usize) -> Col {
        match t {
            FieldType::String => Col::Str(StringBuilder::with_capacity(cap, cap * 16)),
            FieldType::Int => Col::Int(Int64Builder::with_capacity(cap)),
            FieldType::Float => Col::Float(Float64Builder::with_capacity(cap)),
            FieldType::Bool => Col::Bool(BooleanBuilder::with_capacity(cap)),
            FieldType::Timestamp => Col::Ts(TimestampMillisecondBuilder::with_capacity(cap)),
        }
    }

    fn push(&mut self, d: &Datum<'_>) {
        match (self, d) {
            (Col::Str(b), Datum::Str(s)) => b.append_value(s),
            (Col::Int(b), Datum::Int(i)) => b.append_value(*i),
            (Col::Float(b), Datum::Float(f)) => b.append_value(*f),
            (Col::Float(b), Datum::Int(i)) => b.append_value(*i as f64),
            (Col::Bool(b), Datum::Bool(v)) => b.append_value(*v),
            (Col::Ts(b), Datum::Timestamp(t)) => b.append_value(*t),
            (Col::Str(b), _) => b.append_null(),
            (Col::Int(b), _) => b.append_null(),
            (Col::Float(b), _) => b.append_null(),
            (Col::Bool(b), _) => b.append_null(),
            (Col::Ts(b), _) => b.append_null(),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Col::Str(mut b) => Arc::new(b.finish()),
            Col::Int(mut b) => Arc::new(b.finish()),
            Col::Float(mut b) => Arc::new(b.finish()),
            Col::Bool(mut b) => Arc::new(b.finish()),
            Col::Ts(mut b) => Arc::new(b.finish().with_timezone("UTC")),
        }
    }
}

/// What one call to [`BatchDecoder::decode`] produced.
pub struct Decoded {
    pub batch: RecordBatch,
    /// For each row of `batch`, the index of its record in the input.
    pub origin: Vec<u32>,
    /// Records that failed their schema: (index in the input, why).
    pub invalid: Vec<(usize, FieldError)>,
}

/// Decodes records of one topic into batches of its source schema.
#[derive(Clone)]
pub struct BatchDecoder {
    decoder: Decoder,
    schema: SchemaRef,
}

impl BatchDecoder {
    pub fn new(record: RecordSchema) -> Self {
        BatchDecoder { schema: source_schema(&record), decoder: Decoder::new(record) }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes the records of `chunk`, read from `partition`. Invalid records are skipped
    /// and reported.
    pub fn decode(&mut self, partition: u32, chunk: &SourceChunk) -> Result<Decoded, ArrowError> {
        let fields = &self.decoder.schema().fields;
        let records = &chunk.records;
        let mut cols: Vec<Col> = fields.iter().map(|f| Col::new(f.ty, records.len())).collect();
        let mut offsets = Vec::with_capacity(records.len());
        let mut times = Vec::with_capacity(records.len());
        let mut origin = Vec::with_capacity(records.len());
        let mut invalid = Vec::new();
        let (mut slots, mut scratch) = (Slots::default(), Vec::new());
        for (i, r) in records.iter().enumerate() {
            if let Err(e) = self.decoder.decode_with(chunk.value(i), &mut slots, &mut scratch) {
                invalid.push((i, e));
                continue;
            }
            for (c, d) in cols.iter_mut().zip(&scratch) {
                c.push(d);
            }
            offsets.push(r.offset as i64);
            times.push(r.timestamp_ms);
            origin.push(i as u32);
        }
        let n = offsets.len();
        let mut arrays: Vec<ArrayRef> = cols.into_iter().map(Col::finish).collect();
        arrays.push(Arc::new(Int32Array::from(vec![partition as i32; n])));
        arrays.push(Arc::new(Int64Array::from(offsets)));
        arrays.push(Arc::new(TimestampMillisecondArray::from(times).with_timezone("UTC")));
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)?;
        Ok(Decoded { batch, origin, invalid })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, TimestampMillisecondType};
    use arrow_array::Array;

    #[test]
    fn heartbeat_records_become_columns() {
        let mut d = BatchDecoder::new(sluice_core::schema::heartbeat());
        let values: [&[u8]; 3] = [
            br#"{"playerId":"a","heartbeat":80,"createdAt":1000}"#,
            br#"{"playerId":"a","heartbeat":"x","createdAt":1000}"#,
            br#"{"playerId":"b","heartbeat":90.5,"createdAt":"1970-01-01T00:00:02Z"}"#,
        ];
        let out = d.decode(1, &SourceChunk::from_values(7, 5, values)).unwrap();
        assert_eq!(out.batch.num_rows(), 2);
        assert_eq!(out.origin, vec![0, 2]);
        assert_eq!(out.invalid.len(), 1);
        assert_eq!(out.invalid[0].1.field, "heartbeat");
        assert_eq!(out.batch.column(1).as_primitive::<Float64Type>().value(1), 90.5);
        assert_eq!(out.batch.column(2).as_primitive::<TimestampMillisecondType>().value(1), 2000);
        assert_eq!(out.batch.column(3).len(), 2);
        assert_eq!(out.batch.schema().field(5).name(), "_timestamp");
    }
}
