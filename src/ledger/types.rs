//! Domain types. Identifiers are validated once, at the edge, and carried as newtypes after.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// The largest amount of credits any single request may name (cost, allowance, grant …).
/// Keeps every sum the ledger forms far from `i64` overflow.
pub const MAX_CREDITS: i64 = 1_000_000_000_000_000;

/// The pool a price or debit uses when it names none.
pub const DEFAULT_POOL: &str = "credits";

/// Why an identifier was refused; rendered into a 4xx naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct InvalidField {
    pub field: String,
    pub reason: String,
}

impl InvalidField {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

fn check_identifier(
    field: &str,
    value: &str,
    max_len: usize,
    allowed: fn(char) -> bool,
    allowed_text: &str,
) -> Result<(), InvalidField> {
    if value.is_empty() {
        return Err(InvalidField::new(field, "must not be empty"));
    }
    if value.len() > max_len {
        return Err(InvalidField::new(
            field,
            format!("must be at most {max_len} characters long"),
        ));
    }
    if !value.chars().all(allowed) {
        return Err(InvalidField::new(
            field,
            format!("may contain only {allowed_text}"),
        ));
    }
    Ok(())
}

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
}

fn operation_char(c: char) -> bool {
    id_char(c) || c == '/'
}

fn pool_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.')
}

/// For `#[serde(default, deserialize_with = "present")]` on an `Option<Option<T>>` field:
/// absent is `None`, present-and-null is `Some(None)`, a value is `Some(Some(v))`; for fields
/// where null means something else than leaving the field out.
pub fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $max:expr, $allowed:expr, $text:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = InvalidField;

            fn try_from(value: String) -> Result<Self, InvalidField> {
                check_identifier(stringify!($name), &value, $max, $allowed, $text)?;
                Ok(Self(value))
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn parse(field: &str, value: &str) -> Result<Self, InvalidField> {
                check_identifier(field, value, $max, $allowed, $text)?;
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

identifier!(
    /// An Unkey `keyId`: the account's identity.
    KeyId,
    128,
    id_char,
    "letters, digits, '_', '-', '.' and ':'"
);
identifier!(
    /// A plan's id, chosen by the admin.
    PlanId,
    64,
    id_char,
    "letters, digits, '_', '-', '.' and ':'"
);
identifier!(
    /// A pool of credits (`credits`, `ai-tokens`, …).
    PoolName,
    64,
    pool_char,
    "lowercase letters, digits, '_', '-' and '.'"
);
identifier!(
    /// A priced operation (`image.generate`, `search`, …).
    OperationName,
    128,
    operation_char,
    "letters, digits, '_', '-', '.', ':' and '/'"
);

identifier!(
    /// A pack in a plan's catalogue (`starter`, `pack_5k`, …).
    PackId,
    64,
    id_char,
    "letters, digits, '_', '-', '.' and ':'"
);

impl PoolName {
    pub fn default_pool() -> Self {
        Self(DEFAULT_POOL.to_owned())
    }
}

/// A customer-facing external id (the customer or organisation); free text within limits.
pub fn check_external_id(value: &str) -> Result<(), InvalidField> {
    if value.is_empty() {
        return Err(InvalidField::new("external_id", "must not be empty"));
    }
    if value.len() > 255 {
        return Err(InvalidField::new(
            "external_id",
            "must be at most 255 characters long",
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidField::new(
            "external_id",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks a credit amount that must be positive (a cost, a quantity).
pub fn check_positive(field: &str, value: i64) -> Result<i64, InvalidField> {
    if value <= 0 {
        return Err(InvalidField::new(field, "must be at least 1"));
    }
    if value > MAX_CREDITS {
        return Err(InvalidField::new(
            field,
            format!("must be at most {MAX_CREDITS}"),
        ));
    }
    Ok(value)
}

/// Checks a credit amount that may be zero (an allowance, a cap).
pub fn check_non_negative(field: &str, value: i64) -> Result<i64, InvalidField> {
    if value < 0 {
        return Err(InvalidField::new(field, "must not be negative"));
    }
    if value > MAX_CREDITS {
        return Err(InvalidField::new(
            field,
            format!("must be at most {MAX_CREDITS}"),
        ));
    }
    Ok(value)
}

/// Checks that a timestamp lies in the years the ledger handles (1970 to 9999).
pub fn check_timestamp(
    field: &str,
    value: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, InvalidField> {
    use chrono::Datelike;
    if (1970..=9999).contains(&value.year()) {
        Ok(value)
    } else {
        Err(InvalidField::new(
            field,
            "must lie between 1970-01-01 and 9999-12-31",
        ))
    }
}

/// The length of a billing period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    Day,
    Week,
    Month,
    Year,
}

impl Interval {
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
            Interval::Year => "year",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "day" => Some(Interval::Day),
            "week" => Some(Interval::Week),
            "month" => Some(Interval::Month),
            "year" => Some(Interval::Year),
            _ => None,
        }
    }
}

macro_rules! kind_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(value: &str) -> Option<Self> {
                match value {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

kind_enum!(
    /// What a grant is: allowance and rollover come from periods, refund grants from refunds,
    /// the others from admins.
    GrantKind {
        Allowance => "allowance",
        Rollover => "rollover",
        Pack => "pack",
        Promotional => "promotional",
        Adjustment => "adjustment",
        Refund => "refund",
    }
);

kind_enum!(
    /// What a journal entry records.
    EntryKind {
        Grant => "grant",
        Debit => "debit",
        Hold => "hold",
        Release => "release",
        Expiration => "expiration",
        Void => "void",
        Refund => "refund",
        Adjustment => "adjustment",
        Overage => "overage",
    }
);

kind_enum!(
    /// Where a reservation stands.
    ReservationStatus {
        Active => "active",
        Committed => "committed",
        Released => "released",
        Expired => "expired",
    }
);

kind_enum!(
    /// Where a grant stands at a given instant.
    GrantStatus {
        Active => "active",
        Pending => "pending",
        Expired => "expired",
        Voided => "voided",
    }
);

impl GrantKind {
    /// The kinds an admin may create.
    pub const ADMIN: [GrantKind; 3] = [
        GrantKind::Pack,
        GrantKind::Promotional,
        GrantKind::Adjustment,
    ];

    /// Allowance and rollover belong to one period.
    pub fn is_periodic(self) -> bool {
        matches!(self, GrantKind::Allowance | GrantKind::Rollover)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_refuse_empty_long_and_odd_characters() {
        assert!(KeyId::parse("key_id", "key_123").is_ok());
        assert!(KeyId::parse("key_id", "").is_err());
        assert!(KeyId::parse("key_id", &"k".repeat(129)).is_err());
        assert!(KeyId::parse("key_id", &"k".repeat(128)).is_ok());
        assert!(KeyId::parse("key_id", "key 1").is_err());
        assert!(KeyId::parse("key_id", "kéy").is_err());
        assert!(PoolName::parse("pool", "Credits").is_err());
        assert!(PoolName::parse("pool", "ai-tokens").is_ok());
        assert!(OperationName::parse("operation", "images/generate").is_ok());
        let err = PlanId::parse("plan_id", "a b").unwrap_err();
        assert_eq!(err.field, "plan_id");
    }

    #[test]
    fn amounts_are_bounded() {
        assert!(check_positive("cost", 0).is_err());
        assert!(check_positive("cost", -1).is_err());
        assert!(check_positive("cost", MAX_CREDITS + 1).is_err());
        assert_eq!(check_positive("cost", MAX_CREDITS), Ok(MAX_CREDITS));
        assert_eq!(check_non_negative("allowance", 0), Ok(0));
        assert!(check_non_negative("allowance", -5).is_err());
    }
}
