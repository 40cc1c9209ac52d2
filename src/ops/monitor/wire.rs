//! [`Wire`]: a value that crosses process boundaries as JSON inside timely's binary encoding.
//!
//! ```text
//!   human-readable serializer (serde_json: API, Kafka) ──> the value itself, unchanged
//!   binary serializer (bincode: timely between processes) ──> bytes of the value's JSON
//! ```
//!
//! Timely moves records between processes with bincode, which cannot represent some serde
//! attributes of the message contracts: a field skipped when `None`
//! (`Prediction::source`) shifts every following field, and tagged enums need self-describing
//! input. Wrapping such a value keeps its JSON semantics on the wire.

use std::ops::{Deref, DerefMut};

use serde::de::{DeserializeOwned, Visitor};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// See the module doc.
#[derive(Clone, Debug, PartialEq)]
pub struct Wire<T>(pub T);

impl<T> Deref for Wire<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Wire<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: Serialize> Serialize for Wire<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            self.0.serialize(s)
        } else {
            let bytes = serde_json::to_vec(&self.0).map_err(S::Error::custom)?;
            s.serialize_bytes(&bytes)
        }
    }
}

struct JsonBytes<T>(std::marker::PhantomData<T>);

impl<T: DeserializeOwned> Visitor<'_> for JsonBytes<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bytes of a JSON document")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<T, E> {
        serde_json::from_slice(v).map_err(E::custom)
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<T, E> {
        self.visit_bytes(&v)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Wire<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            T::deserialize(d).map(Wire)
        } else {
            d.deserialize_byte_buf(JsonBytes(std::marker::PhantomData)).map(Wire)
        }
    }
}
