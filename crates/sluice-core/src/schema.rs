//! Declared record schemas: what a topic's JSON records hold, so that ingest can reject
//! bad records with the field and the reason, and pipelines can read records as typed
//! columns.
//!
//! A schema lists fields, each with a name, a type (`string`, `int`, `float`, `bool`,
//! `timestamp`), an optional JSON path (`$.device.hr` or `device.hr`; default: the name)
//! and optional checks. One field may be the event time, one the record key. In TOML:
//!
//! ```toml
//! [[topics]]
//! name = "readings"
//! schema = { event_time = "ts", key = "device", fields = [
//!   { name = "device", type = "string", required = true },
//!   { name = "temp", type = "float", path = "$.sensor.temp_c", min = -60.0, max = 80.0 },
//!   { name = "ts", type = "timestamp", format = "epoch_ms", required = true },
//! ] }
//! ```
//!
//! Timestamps are epoch milliseconds (UTC) once decoded. They arrive as the seed's
//! `[year, month, day, hour, minute, second, nanos]` array, an RFC 3339 string or integer
//! epoch milliseconds; `format` restricts which (`auto`, the default, takes all three).
//!
//! [`heartbeat`] is the built-in schema of the heart-rate reading (seed 003).
//!
//! Errors: [`FieldError`] names the first failing field, in declaration order (`$` for the
//! record itself), with a reason a person can act on.

use std::borrow::Cow;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time;

pub use crate::time::MAX_EPOCH_MS;

/// Why one record was rejected: the field (`$` for the record itself) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: &str, reason: impl Into<String>) -> Self {
        FieldError { field: field.to_string(), reason: reason.into() }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// A check of one record value against a topic's schema: `Err` names the field and why.
pub type RecordCheck = std::sync::Arc<dyn Fn(&[u8]) -> Result<(), FieldError> + Send + Sync>;

/// The type of a declared field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    /// 64-bit signed integer.
    Int,
    /// 64-bit float.
    Float,
    Bool,
    /// An instant, epoch ms (UTC) once decoded.
    Timestamp,
}

/// How a `timestamp` field is written in the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// Any of the forms below.
    #[default]
    Auto,
    /// `[year, month, day, hour, minute, second, nanos]`, UTC (seed 003).
    Parts,
    /// An RFC 3339 string, any offset.
    Rfc3339,
    /// Integer epoch milliseconds.
    EpochMs,
}

/// One declared field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Column name in SQL.
    pub name: String,
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// JSON path of the value: `$.a.b` or `a.b`. Default: the name, at the top level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A missing or null value is an error (otherwise the column is null).
    #[serde(default)]
    pub required: bool,
    /// Numbers: smallest accepted value (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Numbers: largest accepted value (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Strings: shortest accepted length, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<usize>,
    /// Strings: longest accepted length, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// Timestamps: the accepted form.
    #[serde(default, skip_serializing_if = "is_auto")]
    pub format: TimeFormat,
    /// Unit named in error messages (e.g. `bpm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

fn is_auto(f: &TimeFormat) -> bool {
    *f == TimeFormat::Auto
}

impl FieldSpec {
    /// A field of `ty` at the top-level key `name`, optional, without checks.
    pub fn new(name: &str, ty: FieldType) -> Self {
        FieldSpec { name: name.into(), ty, path: None, required: false, min: None, max: None, min_length: None, max_length: None, format: TimeFormat::Auto, unit: None }
    }

    /// The JSON path as segments.
    pub fn path_segments(&self) -> Vec<String> {
        match &self.path {
            None => vec![self.name.clone()],
            Some(p) => p.strip_prefix("$.").or_else(|| p.strip_prefix('$')).unwrap_or(p).split('.').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        }
    }
}

/// A topic's declared record schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSchema {
    pub fields: Vec<FieldSpec>,
    /// The field holding the event time (a `timestamp` field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    /// The field whose value is the record key (a `string` or `int` field): records with
    /// the same key land in the same partition, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A topic's `schema` setting: a built-in name or a declared schema.
///
/// - `"heartbeat"`: the heart-rate reading ([`heartbeat`]);
/// - `"json"`: any JSON object, no columns (the default);
/// - a table: a declared [`RecordSchema`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SchemaSpec {
    Named(String),
    Declared(RecordSchema),
}

impl Default for SchemaSpec {
    fn default() -> Self {
        SchemaSpec::Named("json".into())
    }
}

impl SchemaSpec {
    /// The declared schema, `None` for `"json"`. Errors name unknown built-ins and bad
    /// declarations.
    pub fn resolve(&self) -> Result<Option<RecordSchema>, SchemaError> {
        match self {
            SchemaSpec::Named(n) if n == "json" => Ok(None),
            SchemaSpec::Named(n) if n == "heartbeat" => Ok(Some(heartbeat())),
            SchemaSpec::Named(n) => Err(SchemaError(format!("unknown schema {n:?}: use \"heartbeat\", \"json\" or declare fields"))),
            SchemaSpec::Declared(s) => s.check().map(|_| Some(s.clone())),
        }
    }
}

/// A decoded field value; a string may borrow from the record. Timestamps are epoch ms.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum<'a> {
    Null,
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Timestamp(i64),
}

impl Datum<'_> {
    /// The same value, owning its string.
    pub fn into_owned(self) -> Datum<'static> {
        match self {
            Datum::Null => Datum::Null,
            Datum::Str(s) => Datum::Str(Cow::Owned(s.into_owned())),
            Datum::Int(i) => Datum::Int(i),
            Datum::Float(f) => Datum::Float(f),
            Datum::Bool(b) => Datum::Bool(b),
            Datum::Timestamp(t) => Datum::Timestamp(t),
        }
    }

    /// The value as a record key (strings as they are, numbers in decimal).
    pub fn key_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Datum::Str(s) => Some(s.as_bytes().to_vec()),
            Datum::Int(i) => Some(i.to_string().into_bytes()),
            _ => None,
        }
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Why a schema declaration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schema: {0}")]
pub struct SchemaError(pub String);

impl RecordSchema {
    /// Checks the declaration itself: unique non-empty names, event time and key naming
    /// fields of fitting types, bounds in order.
    pub fn check(&self) -> Result<(), SchemaError> {
        let bad = |m: String| Err(SchemaError(m));
        if self.fields.is_empty() {
            return bad("a schema needs at least one field".into());
        }
        let mut seen = std::collections::HashSet::new();
        for f in &self.fields {
            if f.name.is_empty() || f.name.starts_with('_') {
                return bad(format!("field name {:?} must be non-empty and must not start with '_' (reserved for _partition, _offset, _timestamp)", f.name));
            }
            if !seen.insert(f.name.as_str()) {
                return bad(format!("field {:?} is declared twice", f.name));
            }
            if f.path_segments().is_empty() {
                return bad(format!("field {:?}: path {:?} names no key", f.name, f.path));
            }
            if let (Some(lo), Some(hi)) = (f.min, f.max) {
                if lo > hi {
                    return bad(format!("field {:?}: min {lo} is greater than max {hi}", f.name));
                }
            }
        }
        if let Some(t) = &self.event_time {
            match self.field(t) {
                Some(f) if f.ty == FieldType::Timestamp => {}
                Some(_) => return bad(format!("event_time {t:?} must name a field of type timestamp")),
                None => return bad(format!("event_time {t:?} names no declared field")),
            }
        }
        if let Some(k) = &self.key {
            match self.field(k) {
                Some(f) if matches!(f.ty, FieldType::String | FieldType::Int) => {}
                Some(_) => return bad(format!("key {k:?} must name a string or int field")),
                None => return bad(format!("key {k:?} names no declared field")),
            }
        }
        Ok(())
    }

    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// Decodes a parsed record into one [`Datum`] per declared field.
    pub fn decode_value<'v>(&self, record: &'v Value) -> Result<Vec<Datum<'v>>, FieldError> {
        let obj = record
            .as_object()
            .ok_or_else(|| FieldError::new("$", format!("expected a JSON object, got {}", type_name(record))))?;
        let mut out = Vec::with_capacity(self.fields.len());
        for f in &self.fields {
            let segs = f.path_segments();
            let mut cur = obj.get(&segs[0]);
            for s in &segs[1..] {
                cur = cur.and_then(|v| v.get(s));
            }
            out.push(convert(f, cur)?);
        }
        Ok(out)
    }

    /// The record key of decoded values, if the schema names one.
    pub fn key_of(&self, values: &[Datum]) -> Option<Vec<u8>> {
        let i = self.field_index(self.key.as_deref()?)?;
        values.get(i).and_then(Datum::key_bytes)
    }
}

/// Converts the value found at a field's path (None: absent) into a checked [`Datum`].
fn convert<'v>(f: &FieldSpec, v: Option<&'v Value>) -> Result<Datum<'v>, FieldError> {
    let err = |reason: String| Err(FieldError::new(&f.name, reason));
    let v = match v {
        None if f.required => return err("missing".into()),
        None => return Ok(Datum::Null),
        Some(v) => v,
    };
    let unit = || f.unit.as_deref().map(|u| format!(" ({u})")).unwrap_or_default();
    if v.is_null() && !f.required {
        return Ok(Datum::Null);
    }
    match f.ty {
        FieldType::String => {
            let Value::String(s) = v else { return err(format!("expected a string, got {}", type_name(v))) };
            check_string(f, s)?;
            Ok(Datum::Str(Cow::Borrowed(s.as_str())))
        }
        FieldType::Float => {
            let Value::Number(n) = v else { return err(format!("expected a number{}, got {}", unit(), type_name(v))) };
            let x = n.as_f64().unwrap_or(f64::NAN);
            range(f, x)?;
            Ok(Datum::Float(x))
        }
        FieldType::Int => {
            let Some(x) = v.as_i64() else {
                return err(match v {
                    Value::Number(n) => format!("expected an integer{}, got {n}", unit()),
                    _ => format!("expected an integer{}, got {}", unit(), type_name(v)),
                });
            };
            range(f, x as f64)?;
            Ok(Datum::Int(x))
        }
        FieldType::Bool => match v {
            Value::Bool(b) => Ok(Datum::Bool(*b)),
            _ => err(format!("expected true or false, got {}", type_name(v))),
        },
        FieldType::Timestamp => timestamp(v, f.format).map(Datum::Timestamp).map_err(|reason| FieldError::new(&f.name, reason)),
    }
}

/// [`convert`] of a value as the decoder holds it: a string borrowed from the record is
/// kept borrowed.
fn convert_raw<'a>(f: &FieldSpec, v: Option<Raw<'a>>) -> Result<Datum<'a>, FieldError> {
    match v {
        None => convert(f, None).map(Datum::into_owned),
        Some(Raw::Tree(v)) => convert(f, Some(&v)).map(Datum::into_owned),
        Some(Raw::Str(s)) => match f.ty {
            FieldType::String => {
                check_string(f, &s)?;
                Ok(Datum::Str(s))
            }
            FieldType::Timestamp if matches!(f.format, TimeFormat::Auto | TimeFormat::Rfc3339) => {
                time::ms_from_rfc3339(&s).map(Datum::Timestamp).map_err(|reason| FieldError::new(&f.name, reason))
            }
            // Every other type refuses a string: take the error from `convert`.
            _ => convert(f, Some(&Value::String(s.into_owned()))).map(Datum::into_owned),
        },
    }
}

/// The length checks of a string field.
fn check_string(f: &FieldSpec, s: &str) -> Result<(), FieldError> {
    let err = |reason: String| Err(FieldError::new(&f.name, reason));
    if s.is_empty() && f.min_length.is_some_and(|m| m > 0) {
        return err("must not be empty".into());
    }
    if let Some(m) = f.min_length.filter(|&m| s.len() < m) {
        return err(format!("shorter than {m} bytes"));
    }
    if let Some(m) = f.max_length.filter(|&m| s.len() > m) {
        return err(format!("longer than {m} bytes"));
    }
    Ok(())
}

fn range(f: &FieldSpec, x: f64) -> Result<(), FieldError> {
    let lo = f.min.unwrap_or(f64::NEG_INFINITY);
    let hi = f.max.unwrap_or(f64::INFINITY);
    if x.is_nan() || x < lo || x > hi {
        let unit = f.unit.as_deref().map(|u| format!(" {u}")).unwrap_or_default();
        let bounds = match (f.min, f.max) {
            (Some(lo), Some(hi)) => format!("{lo}..={hi}"),
            (Some(lo), None) => format!("{lo}.."),
            (None, Some(hi)) => format!("..={hi}"),
            (None, None) => "of finite numbers".into(),
        };
        return Err(FieldError::new(&f.name, format!("{x}{unit} is outside the accepted range {bounds}{unit}")));
    }
    Ok(())
}

/// Parses an event time in one of the accepted forms to epoch ms.
pub fn timestamp(v: &Value, format: TimeFormat) -> Result<i64, String> {
    use TimeFormat::*;
    match (v, format) {
        (Value::Array(items), Auto | Parts) => {
            let mut parts = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item.as_i64() {
                    Some(n) => parts.push(n),
                    None => return Err(format!("element {i} must be an integer, got {}", type_name(item))),
                }
            }
            time::ms_from_parts(&parts)
        }
        (Value::String(s), Auto | Rfc3339) => time::ms_from_rfc3339(s),
        (Value::Number(n), Auto | EpochMs) => match n.as_i64() {
            Some(ms) => time::check_range(ms),
            None => Err(format!("epoch milliseconds must be an integer, got {n}")),
        },
        (other, Auto) => Err(format!(
            "expected [year, month, day, hour, minute, second, nanos], an RFC 3339 string or epoch ms, got {}",
            type_name(other)
        )),
        (other, Parts) => Err(format!("expected [year, month, day, hour, minute, second, nanos], got {}", type_name(other))),
        (other, Rfc3339) => Err(format!("expected an RFC 3339 string, got {}", type_name(other))),
        (other, EpochMs) => Err(format!("expected integer epoch milliseconds, got {}", type_name(other))),
    }
}

/// A schema prepared for decoding record bytes quickly: only declared top-level keys are
/// materialized; every other value is skipped without building a tree.
#[derive(Debug, Clone)]
pub struct Decoder {
    schema: RecordSchema,
    /// Top-level keys, by slot index (few: looked up by a linear scan).
    tops: Vec<String>,
    /// Per field: (slot, rest of the path).
    fields: Vec<(usize, Vec<String>)>,
    /// Per slot: whether exactly one field reads it (then its value can be moved).
    sole: Vec<bool>,
}

impl Decoder {
    pub fn new(schema: RecordSchema) -> Self {
        let mut tops: Vec<String> = Vec::new();
        let mut fields = Vec::new();
        for f in &schema.fields {
            let mut segs = f.path_segments();
            let rest = segs.split_off(1.min(segs.len()));
            let top = segs.into_iter().next().unwrap_or_default();
            let slot = match tops.iter().position(|t| *t == top) {
                Some(i) => i,
                None => {
                    tops.push(top);
                    tops.len() - 1
                }
            };
            fields.push((slot, rest));
        }
        let mut uses = vec![0usize; tops.len()];
        for (slot, _) in &fields {
            uses[*slot] += 1;
        }
        Decoder { schema, tops, fields, sole: uses.into_iter().map(|u| u == 1).collect() }
    }

    pub fn schema(&self) -> &RecordSchema {
        &self.schema
    }

    /// Decodes record bytes into `out` (cleared first), one [`Datum`] per declared field.
    pub fn decode<'a>(&self, bytes: &'a [u8], out: &mut Vec<Datum<'a>>) -> Result<(), FieldError> {
        self.decode_with(bytes, &mut Slots::default(), out)
    }

    /// [`Decoder::decode`] with a reusable buffer for the top-level values. Strings that
    /// need no unescaping are borrowed from `bytes`, not copied.
    pub fn decode_with<'a>(&self, bytes: &'a [u8], slots: &mut Slots<'a>, out: &mut Vec<Datum<'a>>) -> Result<(), FieldError> {
        out.clear();
        let slots = &mut slots.0;
        slots.clear();
        slots.resize_with(self.tops.len(), || None);
        // The whole record is checked as UTF-8 once (mostly ASCII: the check runs a word at
        // a time), so the parser need not check each string again (`from_str`).
        let text = std::str::from_utf8(bytes).map_err(|e| FieldError::new("$", format!("not JSON: invalid UTF-8 at byte {}", e.valid_up_to())))?;
        let mut de = serde_json::Deserializer::from_str(text);
        let seed = RecordSeed { tops: &self.tops, slots };
        match seed.deserialize(&mut de).and_then(|shape| de.end().map(|_| shape)) {
            Ok(Ok(())) => {}
            Ok(Err(got)) => return Err(FieldError::new("$", format!("expected a JSON object, got {got}"))),
            Err(e) => return Err(FieldError::new("$", format!("not JSON: {e}"))),
        }
        for (f, (slot, rest)) in self.schema.fields.iter().zip(&self.fields) {
            if rest.is_empty() && self.sole[*slot] {
                // The only field of this key: convert the value as it is held.
                out.push(convert_raw(f, slots[*slot].take())?);
                continue;
            }
            let tree = match &slots[*slot] {
                Some(Raw::Tree(v)) => Some(v),
                _ => None,
            };
            let mut cur = match (&slots[*slot], rest.is_empty()) {
                (Some(Raw::Str(s)), true) => {
                    out.push(convert_raw(f, Some(Raw::Str(Cow::Owned(s.to_string()))))?.into_owned());
                    continue;
                }
                _ => tree,
            };
            for s in rest {
                cur = cur.and_then(|v| v.get(s));
            }
            out.push(convert(f, cur)?.into_owned());
        }
        Ok(())
    }
}

/// A top-level value as the decoder holds it: a string (borrowed from the record when it
/// needs no unescaping), or any other JSON value.
#[derive(Debug)]
pub enum Raw<'a> {
    Str(Cow<'a, str>),
    Tree(Value),
}

/// Reusable storage for a record's top-level values (see [`Decoder::decode_with`]).
#[derive(Debug, Default)]
pub struct Slots<'a>(Vec<Option<Raw<'a>>>);

/// Reads one value into its slot: strings as [`Raw::Str`], anything else as a [`Value`].
/// The value is written in place rather than returned, so that the caller does not copy
/// the enum back out of the callee's frame once per field (measured: 199 → … ns a record).
struct RawSeed<'s, 'de>(&'s mut Option<Raw<'de>>);

impl<'de> DeserializeSeed<'de> for RawSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RawSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        *self.0 = Some(Raw::Str(Cow::Borrowed(v)));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        *self.0 = Some(Raw::Str(Cow::Owned(v.to_string())));
        Ok(())
    }
    fn visit_string<E>(self, v: String) -> Result<(), E> {
        *self.0 = Some(Raw::Str(Cow::Owned(v)));
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        *self.0 = Some(Raw::Tree(Value::Null));
        Ok(())
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        *self.0 = Some(Raw::Tree(Value::Bool(v)));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        *self.0 = Some(Raw::Tree(Value::from(v)));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        *self.0 = Some(Raw::Tree(Value::from(v)));
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        *self.0 = Some(Raw::Tree(Value::from(v)));
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        *self.0 = Some(Raw::Tree(Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?));
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        *self.0 = Some(Raw::Tree(Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?));
        Ok(())
    }
}

/// Reads one key of a record and finds its slot, without copying the key. Keys usually
/// come in the same order in every record, so the slot after the last match is tried first.
struct KeySeed<'s> {
    tops: &'s [String],
    next: &'s mut usize,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, k: &str) -> Result<Option<usize>, E> {
        let slot = match self.tops.get(*self.next) {
            Some(t) if t.as_str() == k => Some(*self.next),
            _ => self.tops.iter().position(|t| t.as_str() == k),
        };
        if let Some(s) = slot {
            *self.next = s + 1;
        }
        Ok(slot)
    }
}

/// Visits one record: stores the values of declared top-level keys, skips the rest.
/// Yields `Err(type name)` when the record is not an object.
struct RecordSeed<'s, 'de> {
    tops: &'s [String],
    slots: &'s mut Vec<Option<Raw<'de>>>,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_, 'de> {
    type Value = Result<(), &'static str>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_, 'de> {
    type Value = Result<(), &'static str>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut next = 0;
        while let Some(slot) = map.next_key_seed(KeySeed { tops: self.tops, next: &mut next })? {
            match slot {
                Some(slot) => map.next_value_seed(RawSeed(&mut self.slots[slot]))?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Ok(()))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err("an array"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err("a string"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err("a number"))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err("null"))
    }
}

/// The built-in schema of the heart-rate reading (seed 003, `heartbeat-raw-topic`):
///
/// ```json
/// {"playerId": "p1", "heartbeat": 128, "createdAt": [2023, 11, 23, 10, 15, 30, 0]}
/// ```
///
/// - `playerId`: non-empty string of at most 256 bytes; the record key.
/// - `heartbeat`: number, beats per minute, within 20..=250 bpm (outside is a sensor fault).
/// - `createdAt`: the event time, UTC, in any of the three forms.
///
/// Extra fields are allowed and kept in the stored record.
pub fn heartbeat() -> RecordSchema {
    let mut player = FieldSpec::new("playerId", FieldType::String);
    player.required = true;
    player.min_length = Some(1);
    player.max_length = Some(crate::heartbeat::MAX_PLAYER_ID_BYTES);
    let mut hr = FieldSpec::new("heartbeat", FieldType::Float);
    hr.required = true;
    hr.min = Some(crate::heartbeat::MIN_BPM);
    hr.max = Some(crate::heartbeat::MAX_BPM);
    hr.unit = Some("bpm".into());
    let mut at = FieldSpec::new("createdAt", FieldType::Timestamp);
    at.required = true;
    RecordSchema { fields: vec![player, hr, at], event_time: Some("createdAt".into()), key: Some("playerId".into()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn both(schema: &RecordSchema, v: &Value) -> Result<Vec<Datum<'static>>, FieldError> {
        let a = schema.decode_value(v).map(|d| d.into_iter().map(Datum::into_owned).collect::<Vec<_>>());
        let bytes = v.to_string().into_bytes();
        let mut b = Vec::new();
        let rb = Decoder::new(schema.clone()).decode(&bytes, &mut b).map(|_| b.into_iter().map(Datum::into_owned).collect::<Vec<_>>());
        assert_eq!(a, rb, "decode_value and Decoder disagree on {v}");
        a
    }

    #[test]
    fn heartbeat_accepts_all_three_time_forms() {
        let s = heartbeat();
        let a = both(&s, &json!({"playerId":"p","heartbeat":80,"createdAt":[2023,11,23,10,15,30,0], "extra": {"x": [1]}})).unwrap();
        let b = both(&s, &json!({"playerId":"p","heartbeat":80.0,"createdAt":"2023-11-23T10:15:30Z"})).unwrap();
        assert_eq!(a, b);
        assert_eq!(s.key_of(&a), Some(b"p".to_vec()));
    }

    #[test]
    fn keys_are_matched_after_unescaping_and_the_last_duplicate_wins() {
        let d = Decoder::new(heartbeat());
        let bytes = br#"{"player\u0049d":"p\u00e9","heartbeat":80,"heartbeat":90,"createdAt":1000,"other":{"a":[1]}}"#;
        let mut out = Vec::new();
        d.decode(bytes, &mut out).unwrap();
        assert_eq!(out, vec![Datum::Str("p\u{e9}".into()), Datum::Float(90.0), Datum::Timestamp(1000)]);
    }

    #[test]
    fn heartbeat_errors_name_their_field() {
        let s = heartbeat();
        let cases = [
            (json!([1]), "$", "expected a JSON object, got an array"),
            (json!({"heartbeat":80,"createdAt":0}), "playerId", "missing"),
            (json!({"playerId":"","heartbeat":80,"createdAt":0}), "playerId", "must not be empty"),
            (json!({"playerId":7,"heartbeat":80,"createdAt":0}), "playerId", "expected a string, got a number"),
            (json!({"playerId":"p","heartbeat":"80","createdAt":0}), "heartbeat", "expected a number (bpm), got a string"),
            (json!({"playerId":"p","heartbeat":null,"createdAt":0}), "heartbeat", "expected a number (bpm), got null"),
            (json!({"playerId":"p","heartbeat":400,"createdAt":0}), "heartbeat", "400 bpm is outside the accepted range 20..=250 bpm"),
            (json!({"playerId":"p","heartbeat":80}), "createdAt", "missing"),
            (json!({"playerId":"p","heartbeat":80,"createdAt":1.5}), "createdAt", "epoch milliseconds must be an integer, got 1.5"),
        ];
        for (record, field, reason) in cases {
            let e = both(&s, &record).unwrap_err();
            assert_eq!((e.field.as_str(), e.reason.as_str()), (field, reason), "{record}");
        }
        let e = both(&s, &json!({"playerId":"p","heartbeat":80,"createdAt":[2023,2,30,0,0,0,0]})).unwrap_err();
        assert!(e.reason.contains("calendar"), "{e}");
    }

    #[test]
    fn one_time_range_for_every_form() {
        // The same pre-1970 instant is refused whether it comes as a string (the decoder's
        // borrowed-string path and the tree path), as epoch ms or as parts.
        let s = heartbeat();
        for at in [json!("0001-01-01T00:00:00Z"), json!(-62135596800000i64), json!([1, 1, 1, 0, 0, 0, 0]), json!("1969-12-31T23:59:59Z")] {
            let e = both(&s, &json!({"playerId":"p","heartbeat":80,"createdAt":at})).unwrap_err();
            assert_eq!(e.field, "createdAt");
            assert!(e.reason.contains("outside") && e.reason.contains("1970"), "{at}: {}", e.reason);
        }
        for at in [json!("1970-01-01T00:00:00Z"), json!(0), json!([1970, 1, 1, 0, 0, 0, 0])] {
            assert!(both(&s, &json!({"playerId":"p","heartbeat":80,"createdAt":at})).is_ok(), "{at}");
        }
    }

    #[test]
    fn nested_paths_optional_fields_and_types() {
        let schema: RecordSchema = serde_json::from_value(json!({
            "event_time": "ts", "key": "dev",
            "fields": [
                {"name": "dev", "type": "int", "required": true},
                {"name": "temp", "type": "float", "path": "$.sensor.temp", "min": -60.0, "max": 80.0},
                {"name": "ok", "type": "bool"},
                {"name": "ts", "type": "timestamp", "format": "rfc3339", "required": true}
            ]
        }))
        .unwrap();
        schema.check().unwrap();
        let got = both(&schema, &json!({"dev": 7, "sensor": {"temp": 21.5}, "ts": "1970-01-01T00:00:01Z"})).unwrap();
        assert_eq!(got, vec![Datum::Int(7), Datum::Float(21.5), Datum::Null, Datum::Timestamp(1000)]);
        assert_eq!(schema.key_of(&got), Some(b"7".to_vec()));
        let e = both(&schema, &json!({"dev": 7, "ts": 1000})).unwrap_err();
        assert_eq!(e.field, "ts");
        assert!(e.reason.contains("RFC 3339"), "{e}");
        let e = both(&schema, &json!({"dev": 7.5, "ts": "1970-01-01T00:00:01Z"})).unwrap_err();
        assert_eq!(e.reason, "expected an integer, got 7.5");
    }

    #[test]
    fn declarations_are_checked() {
        let mut s = heartbeat();
        s.event_time = Some("playerId".into());
        assert!(s.check().unwrap_err().to_string().contains("timestamp"));
        let mut s = heartbeat();
        s.fields.push(FieldSpec::new("heartbeat", FieldType::Int));
        assert!(s.check().unwrap_err().to_string().contains("twice"));
        let mut s = heartbeat();
        s.fields.push(FieldSpec::new("_offset", FieldType::Int));
        assert!(s.check().is_err());
        heartbeat().check().unwrap();
    }

    #[test]
    fn decoder_reports_bad_json_and_trailing_bytes() {
        let d = Decoder::new(heartbeat());
        let mut out = Vec::new();
        assert_eq!(d.decode(b"{\"playerId\": ", &mut out).unwrap_err().field, "$");
        assert_eq!(d.decode(b"{} x", &mut out).unwrap_err().field, "$");
        assert_eq!(d.decode(b"7", &mut out).unwrap_err().reason, "expected a JSON object, got a number");
        let bad = d.decode(b"{\"playerId\": \"p\xff\"}", &mut out).unwrap_err();
        assert_eq!((bad.field.as_str(), bad.reason.as_str()), ("$", "not JSON: invalid UTF-8 at byte 15"));
        // Escapes and non-ASCII text still decode, borrowed where no unescaping is needed.
        d.decode("{\"playerId\": \"pé\\u00e9\", \"heartbeat\": 80, \"createdAt\": 1000}".as_bytes(), &mut out).unwrap();
        assert!(matches!(&out[0], Datum::Str(s) if s == "péé"));
    }
}
