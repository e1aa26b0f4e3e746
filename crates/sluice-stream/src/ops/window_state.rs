//! The rows the per-key windowed aggregate ([`super::window_agg`]) writes to its state
//! files, in the layout of [`super::window_io::state_schema`]: for each key, its key row
//! (level [`META_LEVEL`]: `max_event_ms`, `closed_until`, `accept_from`, `seen`), then one
//! row per open window with each aggregate's state columns `a<i>_<j>`; a deleted key is one
//! tombstone row. A key's rows are one group (see [`crate::state`]).

use std::sync::Arc;

use arrow_array::builder::{ArrayBuilder, BinaryBuilder, BooleanBuilder, Int64Builder, ListBuilder, UInt8Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{FieldRef, SchemaRef};

use super::keyed::KeyState;
use super::native::{Native, StateColumns};
use super::window_io::META_LEVEL;
use crate::sql::plan::AggPlan;
use crate::StreamError;

/// State rows being built.
pub(crate) struct StateRows {
    key: BinaryBuilder,
    tomb: BooleanBuilder,
    level: UInt8Builder,
    start: Int64Builder,
    end: Int64Builder,
    max_ev: Int64Builder,
    closed: Int64Builder,
    accept: Int64Builder,
    seen: ListBuilder<Int64Builder>,
    states: StateColumns,
}

impl StateRows {
    /// Room for `rows` rows of keys about `key_len` bytes long.
    pub fn new(aggs: &[AggPlan], natives: &[Option<Native>], state_fields: &[Vec<FieldRef>], rows: usize, key_len: usize) -> Result<Self, StreamError> {
        let int = || Int64Builder::with_capacity(rows);
        Ok(StateRows {
            key: BinaryBuilder::with_capacity(rows, rows * key_len),
            tomb: BooleanBuilder::with_capacity(rows),
            level: UInt8Builder::with_capacity(rows),
            start: int(),
            end: int(),
            max_ev: int(),
            closed: int(),
            accept: int(),
            seen: ListBuilder::with_capacity(Int64Builder::with_capacity(rows * 8), rows),
            states: StateColumns::new(aggs, natives, state_fields, rows)?,
        })
    }

    pub fn tombstone(&mut self, k: &[u8]) {
        self.key.append_value(k);
        self.tomb.append_value(true);
        self.level.append_null();
        for b in [&mut self.start, &mut self.end, &mut self.max_ev, &mut self.closed, &mut self.accept] {
            b.append_null();
        }
        self.seen.append_null();
        self.states.push_null();
    }

    /// A key's rows: its own, then one per open window.
    pub fn key(&mut self, aggs: &[AggPlan], k: &[u8], st: &mut KeyState) -> Result<(), StreamError> {
        self.key.append_value(k);
        self.tomb.append_value(false);
        self.level.append_value(META_LEVEL);
        self.start.append_null();
        self.end.append_null();
        self.max_ev.append_value(st.max_event_ms);
        self.closed.append_value(st.closed_until);
        self.accept.append_value(st.accept_from);
        self.seen.values().extend(st.seen.iter().map(Some));
        self.seen.append(true);
        self.states.push_null();
        for (li, wins) in st.levels.iter_mut().enumerate() {
            for win in wins.iter_mut() {
                self.key.append_value(k);
                self.tomb.append_value(false);
                self.level.append_value(li as u8);
                self.start.append_value(win.start);
                self.end.append_value(win.end);
                for b in [&mut self.max_ev, &mut self.closed, &mut self.accept] {
                    b.append_null();
                }
                self.seen.append_null();
                self.states.push(aggs, &mut win.accs)?;
            }
        }
        Ok(())
    }

    /// The batch, or None without rows.
    pub fn finish(mut self, schema: &SchemaRef, state_fields: &[Vec<FieldRef>]) -> Result<Option<RecordBatch>, StreamError> {
        if self.tomb.len() == 0 {
            return Ok(None);
        }
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.key.finish()),
            Arc::new(self.tomb.finish()),
            Arc::new(self.level.finish()),
            Arc::new(self.start.finish()),
            Arc::new(self.end.finish()),
            Arc::new(self.max_ev.finish()),
            Arc::new(self.closed.finish()),
            Arc::new(self.accept.finish()),
            Arc::new(self.seen.finish()),
        ];
        columns.extend(self.states.finish(state_fields)?);
        RecordBatch::try_new(schema.clone(), columns).map(Some).map_err(|e| StreamError::Eval(format!("building window state: {e}")))
    }
}
