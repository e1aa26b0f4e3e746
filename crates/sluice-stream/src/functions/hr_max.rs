//! `hr_max(player_id)`: a player's maximal heart rate in bpm, from the `[heart_rate]`
//! configuration (`hr_max_bpm` per player, else `hr_max_default_bpm`). Null for a null id.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, Float64Array};
use arrow_schema::DataType;
use datafusion_common::{plan_err, Result, ScalarValue};
use datafusion_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility};

/// Name of the function in SQL.
pub const NAME: &str = "hr_max";

/// HRmax per player, bpm.
#[derive(Debug, Clone, PartialEq)]
pub struct HrMaxTable {
    pub default_bpm: f64,
    pub players: HashMap<String, f64>,
}

impl Default for HrMaxTable {
    fn default() -> Self {
        HrMaxTable { default_bpm: crate::zones::DEFAULT_HR_MAX_BPM, players: HashMap::new() }
    }
}

impl HrMaxTable {
    pub fn get(&self, player: &str) -> f64 {
        self.players.get(player).copied().unwrap_or(self.default_bpm)
    }
}

/// The `hr_max` scalar function over one table.
#[derive(Debug)]
pub struct HrMax {
    table: Arc<HrMaxTable>,
    /// `(default, sorted entries)`: what equality and hashing compare.
    identity: (u64, Vec<(String, u64)>),
    signature: Signature,
}

impl HrMax {
    pub fn new(table: HrMaxTable) -> Self {
        let mut entries: Vec<(String, u64)> = table.players.iter().map(|(k, v)| (k.clone(), v.to_bits())).collect();
        entries.sort();
        HrMax { identity: (table.default_bpm.to_bits(), entries), table: Arc::new(table), signature: Signature::user_defined(Volatility::Immutable) }
    }
}

impl PartialEq for HrMax {
    fn eq(&self, other: &Self) -> bool {
        self.identity == other.identity
    }
}
impl Eq for HrMax {}
impl std::hash::Hash for HrMax {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.identity.hash(state)
    }
}

impl ScalarUDFImpl for HrMax {
    fn name(&self) -> &str {
        NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 | DataType::Null] => Ok(vec![DataType::Utf8]),
            [other] => plan_err!("{NAME}(player_id) takes a string, got {other}"),
            _ => plan_err!("{NAME}(player_id) takes 1 argument, got {}", arg_types.len()),
        }
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match &args.args[0] {
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(p))) => Ok(ColumnarValue::Scalar(ScalarValue::Float64(Some(self.table.get(p))))),
            ColumnarValue::Scalar(_) => Ok(ColumnarValue::Scalar(ScalarValue::Float64(None))),
            ColumnarValue::Array(a) => {
                let ids = a.as_string::<i32>();
                let out: Float64Array = (0..ids.len()).map(|i| ids.is_valid(i).then(|| self.table.get(ids.value(i)))).collect();
                Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
            }
        }
    }
}
