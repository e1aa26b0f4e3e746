//! `hr_zone_seconds(heartbeat, time, hr_max)`: time spent in each ACSM intensity zone.
//!
//! Returns `struct {low_s, moderate_s, high_s}` (seconds, `double`). Each reading covers
//! `min(t_next − t, 5 s)`, the last reading 1 s; zones by `heartbeat / hr_max` (rules and
//! source in [`crate::zones`]). Arguments: `heartbeat` in bpm (any number), `time` a
//! timestamp, `hr_max` in bpm (any number, the last one seen is used). Rows with a null
//! argument are skipped.
//!
//! Coverage depends on the *next* reading, so the accumulator keeps a sorted tail of
//! readings whose successor may still change. The streaming window operator calls
//! [`ZoneAccumulator::fold`] with its watermark (less allowed lateness): readings whose
//! successor is at or below it are final and folded into three sums, and the
//! accumulator's [`ZoneAccumulator::frontier`] rises to that successor. A reading earlier
//! than the frontier would change folded coverage, so the operator treats it as late.
//! Without folding (a batch query) the tail holds every reading until `evaluate`.
//!
//! State (`state()` / `merge_batch`): `low_ms, moderate_ms, high_ms: Int64` (folded),
//! `frontier_ms: Int64`, `hr_max: Float64`, `tail: Binary` (the pending readings, 16
//! bytes each: event time as i64 then bpm as f64, little-endian). Memory: 48 bytes plus 16
//! bytes per pending reading (with 1 Hz input and a 10 s out-of-orderness bound, about 10
//! readings).

use std::any::Any;
use std::collections::VecDeque;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, ArrayRef, Float64Array, StructArray};
use arrow_schema::{DataType, Field, FieldRef, Fields, TimeUnit};
use datafusion_common::{internal_err, plan_err, Result, ScalarValue};
use datafusion_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion_expr::utils::format_state_name;
use datafusion_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};

use crate::zones::{self, Zone};

/// Name of the function in SQL.
pub const NAME: &str = "hr_zone_seconds";

/// The `hr_zone_seconds` aggregate function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HrZoneSeconds {
    signature: Signature,
}

impl Default for HrZoneSeconds {
    fn default() -> Self {
        HrZoneSeconds { signature: Signature::user_defined(Volatility::Immutable) }
    }
}

/// The result type: `struct {low_s, moderate_s, high_s}` in seconds.
pub fn result_type() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new("low_s", DataType::Float64, false),
        Field::new("moderate_s", DataType::Float64, false),
        Field::new("high_s", DataType::Float64, false),
    ]))
}

fn ts_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

impl AggregateUDFImpl for HrZoneSeconds {
    fn name(&self) -> &str {
        NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 3 {
            return plan_err!("{NAME}(heartbeat, time, hr_max) takes 3 arguments, got {}", arg_types.len());
        }
        if !arg_types[0].is_numeric() || !arg_types[2].is_numeric() {
            return plan_err!("{NAME}: heartbeat and hr_max must be numbers (bpm), got {} and {}", arg_types[0], arg_types[2]);
        }
        if !matches!(arg_types[1], DataType::Timestamp(_, _)) {
            return plan_err!("{NAME}: the second argument must be a timestamp, got {}", arg_types[1]);
        }
        Ok(vec![DataType::Float64, ts_ms(), DataType::Float64])
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(result_type())
    }
    fn accumulator(&self, _acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(ZoneAccumulator::default()))
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let f = |n: &str, t: DataType| Arc::new(Field::new(format_state_name(args.name, n), t, true));
        Ok(vec![
            f("low_ms", DataType::Int64),
            f("moderate_ms", DataType::Int64),
            f("high_ms", DataType::Int64),
            f("frontier_ms", DataType::Int64),
            f("hr_max", DataType::Float64),
            f("tail", DataType::Binary),
        ])
    }
}

/// Zone time of one window: folded sums plus the pending tail. See the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneAccumulator {
    /// Folded time per zone, ms.
    pub folded: [i64; 3],
    /// Readings earlier than this would change folded coverage, epoch ms.
    pub frontier_ms: i64,
    /// HRmax used for the zones, bpm (the last one seen).
    pub hr_max: f64,
    /// Pending readings: (event time, epoch ms; bpm), sorted by time, times distinct.
    pub tail: VecDeque<(i64, f64)>,
}

impl Default for ZoneAccumulator {
    fn default() -> Self {
        ZoneAccumulator { folded: [0; 3], frontier_ms: i64::MIN, hr_max: zones::DEFAULT_HR_MAX_BPM, tail: VecDeque::new() }
    }
}

fn slot(z: Zone) -> usize {
    match z {
        Zone::Low => 0,
        Zone::Moderate => 1,
        Zone::High => 2,
    }
}

impl ZoneAccumulator {
    /// Adds one reading (a resent event time keeps the first reading). Readings in time
    /// order append at the end.
    pub fn add(&mut self, t_ms: i64, bpm: f64) {
        match self.tail.back() {
            None => self.tail.push_back((t_ms, bpm)),
            Some(&(last, _)) if t_ms > last => self.tail.push_back((t_ms, bpm)),
            _ => {
                if let Err(i) = self.tail.binary_search_by_key(&t_ms, |r| r.0) {
                    self.tail.insert(i, (t_ms, bpm));
                }
            }
        }
    }

    /// Folds every pending reading whose successor is at or below `until_ms`; returns
    /// the frontier after folding.
    pub fn fold(&mut self, until_ms: i64) -> i64 {
        while self.tail.len() >= 2 && self.tail[1].0 <= until_ms {
            let (t, bpm) = self.tail[0];
            let next = self.tail[1].0;
            self.folded[slot(zones::zone(bpm, self.hr_max))] += zones::coverage_ms(t, Some(next));
            self.tail.pop_front();
            self.frontier_ms = self.frontier_ms.max(next);
        }
        self.frontier_ms
    }

    /// The lowest event time that can still be added without changing folded coverage.
    pub fn frontier(&self) -> i64 {
        self.frontier_ms
    }

    /// Time per zone if the input ended now (the last reading covers 1 s), ms.
    /// The `tail` state field: 16 bytes per pending reading (see the module docs).
    pub fn tail_bytes(&self, out: &mut Vec<u8>) {
        for (t, bpm) in &self.tail {
            out.extend_from_slice(&t.to_le_bytes());
            out.extend_from_slice(&bpm.to_le_bytes());
        }
    }

    pub fn zone_ms(&self) -> [i64; 3] {
        let mut z = self.folded;
        let mut it = self.tail.iter().peekable();
        while let Some(&(t, bpm)) = it.next() {
            let next = it.peek().map(|&&(n, _)| n);
            z[slot(zones::zone(bpm, self.hr_max))] += zones::coverage_ms(t, next);
        }
        z
    }
}

/// Converts the pending readings of the state layout before 2026-11-29 (`tail_ms:
/// List<Int64>`, `tail_bpm: List<Float64>`, two columns) to today's `tail: Binary`
/// (16 bytes a reading, as [`ZoneAccumulator::state`] writes it). `None` when the columns
/// are not of that layout.
pub fn upgrade_tail(tail_ms: &ArrayRef, tail_bpm: &ArrayRef) -> Option<ArrayRef> {
    let (ms, bpm) = (tail_ms.as_list_opt::<i32>()?, tail_bpm.as_list_opt::<i32>()?);
    if ms.len() != bpm.len() {
        return None;
    }
    let mut out = arrow_array::builder::BinaryBuilder::new();
    for i in 0..ms.len() {
        if ms.is_null(i) {
            out.append_null();
            continue;
        }
        let (t, b) = (ms.value(i), bpm.value(i));
        let (t, b) = (t.as_primitive_opt::<Int64Type>()?, b.as_primitive_opt::<Float64Type>()?);
        let mut v = Vec::with_capacity(t.len() * 16);
        for j in 0..t.len().min(b.len()) {
            v.extend_from_slice(&t.value(j).to_le_bytes());
            v.extend_from_slice(&b.value(j).to_le_bytes());
        }
        out.append_value(v);
    }
    Some(Arc::new(out.finish()))
}

impl Accumulator for ZoneAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let [hr, t, hr_max] = values else { return internal_err!("{NAME} expects 3 argument arrays") };
        let hr = hr.as_primitive::<Float64Type>();
        let t = t.as_primitive::<TimestampMillisecondType>();
        let hr_max = hr_max.as_primitive::<Float64Type>();
        for i in 0..hr.len() {
            if hr.is_null(i) || t.is_null(i) {
                continue;
            }
            if hr_max.is_valid(i) && hr_max.value(i) > 0.0 {
                self.hr_max = hr_max.value(i);
            }
            self.add(t.value(i), hr.value(i));
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let z = self.zone_ms();
        let secs = |ms: i64| Arc::new(Float64Array::from(vec![ms as f64 / 1000.0])) as ArrayRef;
        let DataType::Struct(fields) = result_type() else { return internal_err!("{NAME}: result type") };
        Ok(ScalarValue::Struct(Arc::new(StructArray::new(fields, vec![secs(z[0]), secs(z[1]), secs(z[2])], None))))
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.tail.len() * 48
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let mut tail = Vec::with_capacity(self.tail.len() * 16);
        self.tail_bytes(&mut tail);
        Ok(vec![
            ScalarValue::Int64(Some(self.folded[0])),
            ScalarValue::Int64(Some(self.folded[1])),
            ScalarValue::Int64(Some(self.folded[2])),
            ScalarValue::Int64(Some(self.frontier_ms)),
            ScalarValue::Float64(Some(self.hr_max)),
            ScalarValue::Binary(Some(tail)),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [low, moderate, high, frontier, hr_max, tail] = states else {
            return internal_err!("{NAME} state has 6 columns, got {}", states.len());
        };
        let (Some(low), Some(moderate), Some(high), Some(frontier), Some(hr_max), Some(tail)) = (
            low.as_primitive_opt::<Int64Type>(),
            moderate.as_primitive_opt::<Int64Type>(),
            high.as_primitive_opt::<Int64Type>(),
            frontier.as_primitive_opt::<Int64Type>(),
            hr_max.as_primitive_opt::<Float64Type>(),
            tail.as_binary_opt::<i32>(),
        ) else {
            return internal_err!("{NAME} state: columns of other types than Int64 ×4, Float64, Binary");
        };
        for i in 0..low.len() {
            if low.is_null(i) {
                continue;
            }
            self.folded[0] += low.value(i);
            self.folded[1] += moderate.value(i);
            self.folded[2] += high.value(i);
            self.frontier_ms = self.frontier_ms.max(frontier.value(i));
            if hr_max.is_valid(i) {
                self.hr_max = hr_max.value(i);
            }
            if tail.is_valid(i) {
                for r in tail.value(i).chunks_exact(16) {
                    let (t, bpm) = r.split_at(8);
                    let (Ok(t), Ok(bpm)) = (<[u8; 8]>::try_from(t), <[u8; 8]>::try_from(bpm)) else { continue };
                    self.add(i64::from_le_bytes(t), f64::from_le_bytes(bpm));
                }
            }
        }
        Ok(())
    }
}

/// Downcasts an accumulator to a [`ZoneAccumulator`], if it is one.
pub fn as_zone(acc: &mut dyn Accumulator) -> Option<&mut ZoneAccumulator> {
    (acc as &mut dyn Any).downcast_mut::<ZoneAccumulator>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(readings: &[(i64, f64)]) -> ZoneAccumulator {
        let mut a = ZoneAccumulator { hr_max: 200.0, ..Default::default() };
        for &(t, b) in readings {
            a.add(t, b);
        }
        a
    }

    #[test]
    fn coverage_capped_and_last_reading_one_second() {
        // 100 bpm (low), 140 bpm (moderate at 200), 160 bpm (high): gaps 1 s and 60 s.
        let a = acc(&[(0, 100.0), (1_000, 140.0), (61_000, 160.0)]);
        assert_eq!(a.zone_ms(), [1_000, 5_000, 1_000]);
    }

    #[test]
    fn folding_keeps_totals_and_raises_the_frontier() {
        let readings: Vec<(i64, f64)> = (0..20).map(|i| (i * 1000, 100.0 + 5.0 * i as f64)).collect();
        let whole = acc(&readings).zone_ms();
        let mut a = acc(&readings);
        assert_eq!(a.fold(9_500), 9_000);
        assert_eq!(a.tail.len(), 11);
        assert_eq!(a.zone_ms(), whole);
        // Round trip through state and merge.
        let state: Vec<ArrayRef> = a.state().unwrap().iter().map(|s| s.to_array_of_size(1).unwrap()).collect();
        let mut b = ZoneAccumulator::default();
        b.merge_batch(&state).unwrap();
        assert_eq!(b, a);
        assert_eq!(b.zone_ms(), whole);
    }

    #[test]
    fn merging_two_halves_equals_the_whole() {
        let readings: Vec<(i64, f64)> = (0..10).map(|i| (i * 2000, 120.0 + i as f64)).collect();
        let whole = acc(&readings).zone_ms();
        let mut left = acc(&readings[..5]);
        let right = acc(&readings[5..]);
        let mut r = right.clone();
        let state: Vec<ArrayRef> = r.state().unwrap().iter().map(|s| s.to_array_of_size(1).unwrap()).collect();
        left.merge_batch(&state).unwrap();
        assert_eq!(left.zone_ms(), whole);
    }
}
