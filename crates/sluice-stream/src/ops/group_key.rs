//! [`GroupKey`]: a group key's arrow-row bytes, held inline when short.
//!
//! The keyed operators look every input row's key up in a hash map of all keys. With the
//! key behind a `Box<[u8]>`, each probe that reaches a candidate reads a second, random
//! heap line to compare the bytes; at 100,000 keys that miss was most of the lookup.
//! Keys of at most [`INLINE`] bytes (a string key of up to 24 bytes, as arrow-row
//! encodes it: a sentinel byte, then 8-byte mini-blocks each followed by a length byte)
//! live in the map's bucket itself; longer ones are boxed as before. Hashing, equality and
//! ordering are those of the bytes, so maps keyed by `GroupKey` are looked up with `&[u8]`.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// Longest key stored inline, bytes (the whole value is 32 bytes either way).
pub const INLINE: usize = 30;

/// The bytes of one group key (arrow-row encoded). 32 bytes; keys longer than
/// [`INLINE`] bytes are on the heap.
#[derive(Clone)]
pub enum GroupKey {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl GroupKey {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            GroupKey::Inline { len, bytes } => &bytes[..*len as usize],
            GroupKey::Heap(b) => b,
        }
    }
}

impl Default for GroupKey {
    fn default() -> Self {
        GroupKey::Inline { len: 0, bytes: [0; INLINE] }
    }
}

impl From<&[u8]> for GroupKey {
    fn from(key: &[u8]) -> Self {
        if key.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..key.len()].copy_from_slice(key);
            GroupKey::Inline { len: key.len() as u8, bytes }
        } else {
            GroupKey::Heap(key.into())
        }
    }
}

impl Deref for GroupKey {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for GroupKey {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Borrow<[u8]> for GroupKey {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for GroupKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for GroupKey {}

/// Hashes as the byte slice does, as `Borrow<[u8]>` requires.
impl Hash for GroupKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

impl PartialOrd for GroupKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Orders as the byte slices do (arrow-row bytes sort as their rows).
impl Ord for GroupKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl std::fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GroupKey({:?})", self.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};

    #[test]
    fn short_and_long_keys_behave_as_their_bytes() {
        assert_eq!(std::mem::size_of::<GroupKey>(), 32);
        let keys: Vec<Vec<u8>> = vec![vec![], vec![0], b"player-1".to_vec(), vec![7; INLINE], vec![7; INLINE + 1], vec![1; 200]];
        let mut map: HashMap<GroupKey, usize, foldhash::fast::RandomState> = HashMap::default();
        for (i, k) in keys.iter().enumerate() {
            let g = GroupKey::from(k.as_slice());
            assert_eq!(g.as_slice(), k.as_slice());
            assert_eq!(matches!(g, GroupKey::Inline { .. }), k.len() <= INLINE);
            map.insert(g, i);
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(map.get(k.as_slice()), Some(&i), "lookup by bytes of {k:?}");
        }
        let sorted: Vec<Vec<u8>> = keys.iter().map(|k| GroupKey::from(k.as_slice())).collect::<BTreeSet<_>>().iter().map(|g| g.to_vec()).collect();
        let mut expected = keys.clone();
        expected.sort();
        assert_eq!(sorted, expected);
        assert_eq!(GroupKey::default().as_slice(), b"");
    }

    #[test]
    fn string_keys_of_up_to_24_bytes_are_inline() {
        use arrow_array::{ArrayRef, StringArray};
        use arrow_row::{RowConverter, SortField};
        let conv = RowConverter::new(vec![SortField::new(arrow_schema::DataType::Utf8)]).unwrap();
        let col: ArrayRef = std::sync::Arc::new(StringArray::from(vec!["a".repeat(24), "a".repeat(25)]));
        let rows = conv.convert_columns(&[col]).unwrap();
        assert!(rows.row(0).as_ref().len() <= INLINE);
        assert!(rows.row(1).as_ref().len() > INLINE);
    }
}
