//! Strict JSON for request bodies. `serde_json` alone lets through what a billing API must refuse:
//! - a NUL character (`\u0000`), which PostgreSQL cannot store in text or jsonb;
//! - an object key given twice (the last one silently won);
//! - an array where an object is expected (serde fills a struct from an array of its fields in
//!   order, so `"credits": [null, null]` was a pool with every field null).
//!
//! And it refuses what the schema allows: a whole number written as a float (`652.0`) is an
//! integer in JSON Schema. `Checked` reads the text, refusing the first two; `Strict` is the
//! deserializer the typed request is read through, refusing the third and taking whole floats.
//!
//! `Strict` also reads query strings (every value a string, numbers and booleans parsed from
//! it), and its error, [`ShapeError`], says in plain words what the value must be and what it
//! was: serde's `de::Error` hooks tell what went wrong (a missing field, an unknown variant …),
//! and `Strict`, at the value where it happened, knows the form it was asked for (a whole
//! number of some range, true or false, an object, one of some variants) and the value given.

use std::fmt;

use chrono::{DateTime, FixedOffset, Utc};
use serde::de::value::{BorrowedStrDeserializer, MapDeserializer, SeqDeserializer};
use serde::de::{
    self, DeserializeSeed, Deserializer, Expected, IntoDeserializer, MapAccess, SeqAccess,
    Unexpected,
};
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

/// Why a request value does not fit the type it is read into.
#[derive(Debug)]
pub struct ShapeError {
    problem: Problem,
    /// Set by the `Strict` level that read the value: the form it must have, when the method
    /// serde called says it better than serde's expectation ("i64"), and the value given.
    placed: bool,
}

#[derive(Debug)]
enum Problem {
    /// A value of the wrong type, or of the right type but not one the type takes (serde's
    /// `invalid_type`, `invalid_value`, `invalid_length`).
    Mismatch {
        expected: String,
        given: String,
    },
    UnknownVariant {
        given: String,
        variants: &'static [&'static str],
    },
    UnknownField {
        fields: &'static [&'static str],
    },
    Missing(&'static str),
    Duplicate,
    /// Anything else, in the words of whoever refused (a `try_from`, a custom visitor).
    Other(String),
}

/// Whether the request part is a JSON body (it has fields) or a query string (parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Body,
    Query,
}

impl Source {
    fn noun(self) -> &'static str {
        match self {
            Source::Body => "field",
            Source::Query => "parameter",
        }
    }
}

impl ShapeError {
    fn mismatch(expected: impl Into<String>, given: String) -> Self {
        ShapeError {
            problem: Problem::Mismatch {
                expected: expected.into(),
                given,
            },
            placed: true,
        }
    }

    /// Text of a query string that does not parse as the type asked for; the caller places it.
    fn unparsed() -> Self {
        ShapeError {
            problem: Problem::Mismatch {
                expected: String::new(),
                given: String::new(),
            },
            placed: false,
        }
    }

    /// Says, once, where a mismatch happened: the form expected (if the caller knows it better
    /// than serde) and the value given.
    fn at(mut self, form: Option<String>, value: &Value) -> Self {
        if let Problem::Mismatch { expected, given } = &mut self.problem {
            if !self.placed {
                if let Some(form) = form {
                    *expected = form;
                }
                *given = describe(value);
                self.placed = true;
            }
        }
        self
    }

    /// The name of the field where it happened, given the path of the value where serde was
    /// when it failed (`.` for the whole body).
    pub fn field(&self, path: &str) -> String {
        match self.problem {
            // Reported at the object that lacks it.
            Problem::Missing(name) if path == "." => name.to_owned(),
            Problem::Missing(name) => format!("{path}.{name}"),
            _ => path.to_owned(),
        }
    }

    /// What is wrong, to follow the field's name: "must be a whole number, got 1.5".
    pub fn reason(&self, source: Source) -> String {
        let noun = source.noun();
        match &self.problem {
            Problem::Mismatch { expected, given } => format!("must be {expected}, got {given}"),
            Problem::UnknownVariant { given, variants } => {
                format!("must be {}, got {given}", one_of(variants))
            }
            Problem::UnknownField { fields: [] } => {
                format!("is not a known {noun}; there are none")
            }
            Problem::UnknownField { fields } => {
                format!(
                    "is not a known {noun}; known {noun}s: {}",
                    fields.join(", ")
                )
            }
            Problem::Missing(_) => "is required".to_owned(),
            Problem::Duplicate => format!("is given twice; give each {noun} once"),
            Problem::Other(message) => message.clone(),
        }
    }
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason(Source::Body))
    }
}

impl std::error::Error for ShapeError {}

impl de::Error for ShapeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ShapeError {
            problem: Problem::Other(msg.to_string()),
            placed: true,
        }
    }

    fn invalid_type(unexpected: Unexpected, expected: &dyn Expected) -> Self {
        ShapeError {
            problem: Problem::Mismatch {
                expected: expected.to_string(),
                given: describe_unexpected(&unexpected),
            },
            placed: false,
        }
    }

    fn invalid_value(unexpected: Unexpected, expected: &dyn Expected) -> Self {
        Self::invalid_type(unexpected, expected)
    }

    fn invalid_length(len: usize, expected: &dyn Expected) -> Self {
        ShapeError {
            problem: Problem::Mismatch {
                expected: expected.to_string(),
                given: format!("{len} items"),
            },
            placed: false,
        }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        ShapeError {
            problem: Problem::UnknownVariant {
                given: quoted(variant),
                variants: expected,
            },
            placed: true,
        }
    }

    fn unknown_field(_field: &str, expected: &'static [&'static str]) -> Self {
        // The path names the field already.
        ShapeError {
            problem: Problem::UnknownField { fields: expected },
            placed: true,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        ShapeError {
            problem: Problem::Missing(field),
            placed: true,
        }
    }

    fn duplicate_field(_field: &'static str) -> Self {
        ShapeError {
            problem: Problem::Duplicate,
            placed: true,
        }
    }
}

/// `'none', 'difference' or 'reset'`.
fn one_of(variants: &[&str]) -> String {
    let quoted: Vec<String> = variants.iter().map(|v| format!("'{v}'")).collect();
    match quoted.split_last() {
        None => "nothing".to_owned(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// A string as a message quotes it: in single quotes, cut after 60 characters, control
/// characters escaped.
fn quoted(text: &str) -> String {
    const MAX: usize = 60;
    let mut shown: String = text
        .chars()
        .take(MAX)
        .flat_map(char::escape_default)
        .collect();
    if text.chars().nth(MAX).is_some() {
        shown.push('…');
    }
    format!("'{shown}'")
}

/// A value as a message names it: scalars as written, containers by kind.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quoted(s),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

fn describe_unexpected(unexpected: &Unexpected) -> String {
    match unexpected {
        Unexpected::Bool(b) => b.to_string(),
        Unexpected::Unsigned(n) => n.to_string(),
        Unexpected::Signed(n) => n.to_string(),
        Unexpected::Float(n) => n.to_string(),
        Unexpected::Char(c) => quoted(&c.to_string()),
        Unexpected::Str(s) => quoted(s),
        Unexpected::Unit => "null".to_owned(),
        Unexpected::Seq => "an array".to_owned(),
        Unexpected::Map => "an object".to_owned(),
        other => other.to_string(),
    }
}

/// The range of an integer type, for a message.
#[derive(Clone, Copy)]
struct Int {
    min: i128,
    max: i128,
}

impl Int {
    const fn of(min: i128, max: i128) -> Int {
        Int { min, max }
    }

    /// The form a value was asked for: a whole number, with the type's range when the value
    /// was whole (the range is then what it missed).
    fn form(self, value: &Value, text: bool) -> String {
        let whole = match value {
            Value::Number(n) if n.is_f64() => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() == 0.0
                    && f.abs() > EXACT
                    && (self.min as f64..=self.max as f64).contains(&f)
                {
                    return format!(
                        "a whole number, written without a decimal point or exponent beyond {EXACT}"
                    );
                }
                f.fract() == 0.0
            }
            Value::Number(_) => true,
            Value::String(s) if text => {
                let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
            }
            _ => false,
        };
        if whole {
            format!("a whole number from {} to {}", self.min, self.max)
        } else {
            "a whole number".to_owned()
        }
    }
}

/// A deserializer over a JSON value that reads a struct or a map only from an object, and an
/// integer from a float with no fractional part. Over a query string (`text`), every value is a
/// string, and integers and booleans are parsed from it.
pub struct Strict<'a> {
    value: &'a Value,
    text: bool,
}

impl<'a> Strict<'a> {
    /// Over a JSON body.
    pub fn json(value: &'a Value) -> Self {
        Strict { value, text: false }
    }

    /// Over a query string, as an object of strings.
    pub fn text(value: &'a Value) -> Self {
        Strict { value, text: true }
    }

    fn nested(&self, value: &'a Value) -> Self {
        Strict {
            value,
            text: self.text,
        }
    }
}

/// The largest integer a float holds exactly.
const EXACT: f64 = 9_007_199_254_740_992.0;

impl<'de> Strict<'de> {
    fn integer<V: de::Visitor<'de>>(self, visitor: V, int: Int) -> Result<V::Value, ShapeError> {
        let (value, text) = (self.value, self.text);
        let result = match value {
            Value::Number(n) if n.is_f64() => match n.as_f64() {
                // Whole and exact, hence in i64's range.
                Some(f) if f.fract() == 0.0 && f.abs() <= EXACT => visitor.visit_i64(f as i64),
                _ => self.any(visitor),
            },
            Value::String(s) if text => {
                if let Ok(n) = s.parse::<i64>() {
                    visitor.visit_i64(n)
                } else if let Ok(n) = s.parse::<u64>() {
                    visitor.visit_u64(n)
                } else {
                    Err(ShapeError::unparsed())
                }
            }
            _ => self.any(visitor),
        };
        result.map_err(|e| e.at(Some(int.form(value, text)), value))
    }

    fn any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => visitor.visit_u64(u),
                (_, Some(i), _) => visitor.visit_i64(i),
                (_, _, f) => visitor.visit_f64(f.unwrap_or(f64::NAN)),
            },
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => {
                let mut seq = SeqDeserializer::new(items.iter().map(|v| self.nested(v)));
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Value::Object(map) => {
                let mut access =
                    MapDeserializer::new(map.iter().map(|(k, v)| (k.as_str(), self.nested(v))));
                let value = visitor.visit_map(&mut access)?;
                access.end()?;
                Ok(value)
            }
        }
    }

    /// A value the visitor reads whole (a string, a timestamp): a mismatch is at this value.
    fn scalar<V: de::Visitor<'de>>(
        self,
        visitor: V,
        form: Option<&str>,
    ) -> Result<V::Value, ShapeError> {
        let value = self.value;
        self.any(visitor)
            .map_err(|e| e.at(form.map(str::to_owned), value))
    }

    fn object<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match self.value {
            Value::Object(_) => self.any(visitor),
            other => Err(ShapeError::mismatch("a JSON object", describe(other))),
        }
    }
}

impl<'de> Deserializer<'de> for Strict<'de> {
    type Error = ShapeError;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        // A container's own values are placed where they are read.
        match self.value {
            Value::Array(_) | Value::Object(_) => self.any(visitor),
            _ => self.scalar(visitor, None),
        }
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.value {
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

    fn deserialize_seq<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.value {
            Value::Array(_) => self.any(visitor),
            other => Err(ShapeError::mismatch("an array", describe(other))),
        }
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    /// Unit variants only, as a string: the API has no other enums.
    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.value {
            Value::String(s) => visitor.visit_enum(BorrowedStrDeserializer::new(s)),
            other => Err(ShapeError::mismatch(one_of(variants), describe(other))),
        }
    }

    fn deserialize_bool<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let value = self.value;
        let result = match value {
            Value::String(s) if self.text => match s.as_str() {
                "true" => visitor.visit_bool(true),
                "false" => visitor.visit_bool(false),
                _ => Err(ShapeError::unparsed()),
            },
            _ => self.any(visitor),
        };
        result.map_err(|e| e.at(Some("true or false".to_owned()), value))
    }

    fn deserialize_f64<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.scalar(visitor, Some("a number"))
    }

    fn deserialize_f32<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.scalar(visitor, Some("a number"))
    }

    fn deserialize_str<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.scalar(visitor, None)
    }

    fn deserialize_string<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.scalar(visitor, None)
    }

    fn deserialize_i8<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.integer(visitor, Int::of(i8::MIN as i128, i8::MAX as i128))
    }

    fn deserialize_i16<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.integer(visitor, Int::of(i16::MIN as i128, i16::MAX as i128))
    }

    fn deserialize_i32<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.integer(visitor, Int::of(i32::MIN as i128, i32::MAX as i128))
    }

    fn deserialize_i64<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.integer(visitor, Int::of(i64::MIN as i128, i64::MAX as i128))
    }

    fn deserialize_u8<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.integer(visitor, Int::of(0, u8::MAX as i128))
    }

    fn deserialize_u16<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.integer(visitor, Int::of(0, u16::MAX as i128))
    }

    fn deserialize_u32<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.integer(visitor, Int::of(0, u32::MAX as i128))
    }

    fn deserialize_u64<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.integer(visitor, Int::of(0, u64::MAX as i128))
    }

    forward_to_deserialize_any! {
        i128 u128 char bytes byte_buf unit unit_struct tuple
        tuple_struct identifier ignored_any
    }
}

impl<'de> IntoDeserializer<'de, ShapeError> for Strict<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// What a timestamp of a request must be.
pub const TIMESTAMP: &str = "an RFC 3339 timestamp such as 2026-12-01T00:00:00Z";

/// For `#[serde(default, deserialize_with = "…")]` on an `Option<DateTime<Utc>>` of a request:
/// reads what chrono reads, but a refusal names the form wanted and the text given, where
/// chrono's says only "premature end of input".
pub fn timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    de::Deserialize::deserialize(d).map(|t: Option<Timestamp>| t.map(|Timestamp(t)| t))
}

struct Timestamp(DateTime<Utc>);

impl<'de> de::Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TimestampVisitor)
    }
}

struct TimestampVisitor;

impl de::Visitor<'_> for TimestampVisitor {
    type Value = Timestamp;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(TIMESTAMP)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
        v.parse::<DateTime<FixedOffset>>()
            .map(|t| Timestamp(t.with_timezone(&Utc)))
            .map_err(|_| E::invalid_value(Unexpected::Str(v), &self))
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
        serde_path_to_error::deserialize(Strict::json(&value))
            .map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    #[test]
    fn structs_come_only_from_objects() {
        let err = typed(json!({"pools": {"credits": [null, null]}})).unwrap_err();
        assert_eq!(err, "pools.credits: must be a JSON object, got an array");
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

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Request {
        operation: String,
        quantity: Option<i64>,
        priority: Option<i32>,
        dry_run: Option<bool>,
        proration: Option<Proration>,
        tags: Option<Vec<String>>,
        #[serde(default, deserialize_with = "timestamp")]
        to: Option<DateTime<Utc>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Proration {
        None,
        Difference,
        Reset,
    }

    /// (field, reason) of the refusal of `value`, read as JSON or as a query string.
    fn refusal(value: Value, text: bool) -> (String, String) {
        let strict = if text {
            Strict::text(&value)
        } else {
            Strict::json(&value)
        };
        let source = if text { Source::Query } else { Source::Body };
        let err = serde_path_to_error::deserialize::<_, Request>(strict).unwrap_err();
        (
            err.inner().field(&err.path().to_string()),
            err.inner().reason(source),
        )
    }

    fn refused(value: Value) -> (String, String) {
        refusal(value, false)
    }

    fn pair(field: &str, reason: &str) -> (String, String) {
        (field.to_owned(), reason.to_owned())
    }

    #[test]
    fn refusals_say_what_the_field_must_be_and_what_it_got() {
        let ok = json!({"operation": "search"});
        let with = |field: &str, value: Value| {
            let mut body = ok.clone();
            body[field] = value;
            body
        };
        assert_eq!(
            refused(with("quantity", json!(1.5))),
            pair("quantity", "must be a whole number, got 1.5")
        );
        assert_eq!(
            refused(with("quantity", json!("2"))),
            pair("quantity", "must be a whole number, got '2'")
        );
        assert_eq!(
            refused(with("quantity", json!(1e300))),
            pair(
                "quantity",
                "must be a whole number from -9223372036854775808 to 9223372036854775807, got 1e+300"
            )
        );
        assert_eq!(
            refused(with("quantity", json!(1e17))),
            pair(
                "quantity",
                "must be a whole number, written without a decimal point or exponent beyond 9007199254740992, got 1e+17"
            )
        );
        assert_eq!(
            refused(with("priority", json!(3_000_000_000_i64))),
            pair(
                "priority",
                "must be a whole number from -2147483648 to 2147483647, got 3000000000"
            )
        );
        assert_eq!(
            refused(with("quantity", json!({"n": 1}))),
            pair("quantity", "must be a whole number, got an object")
        );
        assert_eq!(
            refused(with("dry_run", json!("yes"))),
            pair("dry_run", "must be true or false, got 'yes'")
        );
        assert_eq!(
            refused(json!({"operation": 7})),
            pair("operation", "must be a string, got 7")
        );
        assert_eq!(
            refused(json!({"operation": ["a"]})),
            pair("operation", "must be a string, got an array")
        );
        assert_eq!(
            refused(with("tags", json!("a"))),
            pair("tags", "must be an array, got 'a'")
        );
        assert_eq!(
            refused(with("tags", json!(["a", 2]))),
            pair("tags[1]", "must be a string, got 2")
        );
        assert_eq!(
            refused(with("to", json!("2026-12-01"))),
            pair(
                "to",
                "must be an RFC 3339 timestamp such as 2026-12-01T00:00:00Z, got '2026-12-01'"
            )
        );
        assert_eq!(
            refused(with("to", json!(5))),
            pair(
                "to",
                "must be an RFC 3339 timestamp such as 2026-12-01T00:00:00Z, got 5"
            )
        );
        assert_eq!(
            refused(with("proration", json!("sometimes"))),
            pair(
                "proration",
                "must be 'none', 'difference' or 'reset', got 'sometimes'"
            )
        );
        assert_eq!(
            refused(with("proration", json!({"none": null}))),
            pair(
                "proration",
                "must be 'none', 'difference' or 'reset', got an object"
            )
        );
        assert_eq!(
            refused(json!({"quantity": 1})),
            pair("operation", "is required")
        );
        let (field, reason) = refused(with("quantty", json!(1)));
        assert_eq!(field, "quantty");
        assert!(
            reason.starts_with("is not a known field; known fields: operation, quantity,"),
            "{reason}"
        );
        assert_eq!(
            refused(json!([])),
            pair(".", "must be a JSON object, got an array")
        );
        assert_eq!(
            refused(json!(null)),
            pair(".", "must be a JSON object, got null")
        );
    }

    #[test]
    fn a_timestamp_is_read_as_chrono_reads_it() {
        let read = |text: &str| {
            serde_path_to_error::deserialize::<_, Request>(Strict::json(
                &json!({"operation": "x", "to": text}),
            ))
            .map(|r| r.to)
            .map_err(|e| e.to_string())
        };
        let expected = "2026-12-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(read("2026-12-01T00:00:00Z").unwrap(), Some(expected));
        assert_eq!(read("2026-12-01T01:00:00+01:00").unwrap(), Some(expected));
        assert_eq!(read("2026-12-01 00:00:00Z").unwrap(), Some(expected));
        assert!(read("yesterday").is_err());
    }

    #[test]
    fn a_query_string_is_read_from_text() {
        let ok: Request = serde_path_to_error::deserialize(Strict::text(&json!({
            "operation": "search", "quantity": "12", "dry_run": "true", "proration": "reset",
            "to": "2026-12-01T00:00:00Z"
        })))
        .unwrap();
        assert_eq!((ok.quantity, ok.dry_run), (Some(12), Some(true)));
        let query =
            |field: &str, value: &str| refusal(json!({"operation": "search", field: value}), true);
        assert_eq!(
            query("quantity", "abc"),
            pair("quantity", "must be a whole number, got 'abc'")
        );
        assert_eq!(
            query("priority", "99999999999"),
            pair(
                "priority",
                "must be a whole number from -2147483648 to 2147483647, got '99999999999'"
            )
        );
        assert_eq!(
            query("dry_run", "1"),
            pair("dry_run", "must be true or false, got '1'")
        );
        assert_eq!(
            query("proration", "later"),
            pair(
                "proration",
                "must be 'none', 'difference' or 'reset', got 'later'"
            )
        );
        let (field, reason) = query("page", "2");
        assert_eq!(field, "page");
        assert!(
            reason.starts_with("is not a known parameter; known parameters: operation,"),
            "{reason}"
        );
    }
}
