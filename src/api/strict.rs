//! Strict JSON for request bodies. `serde_json` alone lets through what a billing API must refuse:
//! - a NUL character (`\u0000`), which PostgreSQL cannot store in text or jsonb;
//! - an object key given twice (the last one silently won);
//! - an array where an object is expected (serde fills a struct from an array of its fields in
//!   order, so `"credits": [null, null]` was a pool with every field null).
//!
//! And it refuses what the schema allows: a whole number written as a float (`652.0`) is an
//! integer in JSON Schema. `Checked` reads the text, refusing the first two; `Strict` is the
//! deserializer the typed request is read through, refusing the third and taking whole floats.

use std::fmt;

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess};
use serde::forward_to_deserialize_any;
use serde_json::{Map, Number, Value};

/// What a NUL character is refused with.
const NUL: &str = "contains a NUL character (\\u0000), which cannot be stored";

/// A JSON value read from text, with no NUL character in any string or key and no key twice in
/// an object. Read it with `serde_path_to_error` to learn where the first problem is.
pub struct Checked(pub Value);

impl<'de> de::Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor).map(Checked)
    }
}

struct CheckedVisitor;

impl<'de> de::Visitor<'de> for CheckedVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("is not a finite number"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        if v.contains('\0') {
            return Err(E::custom(NUL));
        }
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        if v.contains('\0') {
            return Err(E::custom(NUL));
        }
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Checked(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // Refused while reading the key's value, so the error's path names the key.
            let refusal = if key.contains('\0') {
                Some(format!("the key {NUL}"))
            } else if object.contains_key(&key) {
                Some("is given twice; give each field once".to_owned())
            } else {
                None
            };
            if let Some(message) = refusal {
                return map.next_value_seed(Refuse(message));
            }
            let Checked(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Fails with its message, wherever it is asked to read.
struct Refuse(String);

impl<'de> DeserializeSeed<'de> for Refuse {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, _: D) -> Result<Value, D::Error> {
        Err(de::Error::custom(self.0))
    }
}

/// A deserializer over a JSON value that reads a struct or a map only from an object, and an
/// integer from a float with no fractional part.
pub struct Strict<'a>(pub &'a Value);

/// The largest integer a float holds exactly.
const EXACT: f64 = 9_007_199_254_740_992.0;

impl<'de> Strict<'de> {
    fn integer<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, serde_json::Error> {
        if let Value::Number(n) = self.0 {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                if f.fract() == 0.0 && f.abs() <= EXACT {
                    // Whole and exact, hence in i64's range.
                    return visitor.visit_i64(f as i64);
                }
            }
        }
        self.deserialize_any(visitor)
    }

    fn object<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, serde_json::Error> {
        match self.0 {
            Value::Object(_) => self.deserialize_any(visitor),
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
        }
    }
}

fn unexpected(value: &Value) -> de::Unexpected<'_> {
    match value {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => de::Unexpected::Unsigned(u),
            (_, Some(i), _) => de::Unexpected::Signed(i),
            (_, _, f) => de::Unexpected::Float(f.unwrap_or(f64::NAN)),
        },
        Value::String(s) => de::Unexpected::Str(s),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
    }
}

impl<'de> Deserializer<'de> for Strict<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => visitor.visit_u64(u),
                (_, Some(i), _) => visitor.visit_i64(i),
                (_, _, f) => visitor.visit_f64(f.unwrap_or(f64::NAN)),
            },
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => {
                let mut seq = SeqDeserializer::new(items.iter().map(Strict));
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Value::Object(map) => {
                let mut access =
                    MapDeserializer::new(map.iter().map(|(k, v)| (k.as_str(), Strict(v))));
                let value = visitor.visit_map(&mut access)?;
                access.end()?;
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.object(visitor)
    }

    fn deserialize_map<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.object(visitor)
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_i8<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.integer(visitor)
    }

    fn deserialize_i16<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.integer(visitor)
    }

    fn deserialize_i32<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.integer(visitor)
    }

    fn deserialize_i64<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.integer(visitor)
    }

    fn deserialize_u8<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.integer(visitor)
    }

    fn deserialize_u16<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.integer(visitor)
    }

    fn deserialize_u32<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.integer(visitor)
    }

    fn deserialize_u64<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.integer(visitor)
    }

    forward_to_deserialize_any! {
        bool i128 u128 f32 f64 char str string bytes byte_buf unit unit_struct seq tuple
        tuple_struct identifier ignored_any
    }
}

impl<'de> IntoDeserializer<'de, serde_json::Error> for Strict<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    fn check(text: &str) -> Result<Value, String> {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de)
            .map(|Checked(v)| v)
            .map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    #[test]
    fn nul_characters_and_repeated_keys_are_refused_where_they_are() {
        assert!(check(r#"{"a": {"b": "x\u0000y"}}"#)
            .unwrap_err()
            .starts_with("a.b: contains a NUL"));
        assert!(check(r#"{"m": {"k\u0000": 1}}"#)
            .unwrap_err()
            .starts_with("m.k\0: the key contains a NUL"));
        assert!(check(r#"{"a": 1, "b": [{"c": 1, "c": 2}]}"#)
            .unwrap_err()
            .starts_with("b[0].c: is given twice"));
        assert_eq!(
            check(r#"{"a": [1, "x", null, 1.5, {"b": true}]}"#).unwrap(),
            json!({"a": [1, "x", null, 1.5, {"b": true}]})
        );
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Pool {
        allowance: Option<i64>,
        cap: Option<u32>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Body {
        pools: std::collections::BTreeMap<String, Pool>,
    }

    fn typed(value: Value) -> Result<Body, String> {
        serde_path_to_error::deserialize(Strict(&value))
            .map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    #[test]
    fn structs_come_only_from_objects() {
        let err = typed(json!({"pools": {"credits": [null, null]}})).unwrap_err();
        assert!(
            err.starts_with("pools.credits: invalid type: sequence"),
            "{err}"
        );
        assert!(typed(json!({"pools": [1]})).is_err());
        assert!(typed(json!({"pools": {"credits": {"allowance": 5}}})).is_ok());
    }

    #[test]
    fn whole_floats_are_integers_and_others_are_not() {
        let body = typed(json!({"pools": {"c": {"allowance": 652.0, "cap": 3.0}}})).unwrap();
        assert_eq!(body.pools["c"].allowance, Some(652));
        assert_eq!(body.pools["c"].cap, Some(3));
        assert!(typed(json!({"pools": {"c": {"allowance": 1.5}}})).is_err());
        assert!(typed(json!({"pools": {"c": {"cap": -1.0}}})).is_err());
        assert!(typed(json!({"pools": {"c": {"allowance": 1e300}}})).is_err());
    }
}
