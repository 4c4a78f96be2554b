//! Stripe's webhook signatures: `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]`, where
//! each `v1` is an HMAC-SHA256 of `"<t>.<raw body>"` keyed by the endpoint's signing secret
//! (during a secret's rotation Stripe sends one `v1` per secret). The timestamp must lie within
//! the tolerance of now, so that a captured delivery cannot be replayed later.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Stripe's own libraries accept five minutes.
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header has no timestamp (t=) or no v1 signature")]
    Malformed,
    #[error("the Stripe-Signature timestamp is more than {TOLERANCE_SECS} seconds from now")]
    OutsideTolerance,
    #[error("no v1 signature matches the payload")]
    Mismatch,
}

/// Checks `header` against the raw `payload` at `now` (unix seconds).
pub fn verify(
    payload: &[u8],
    header: Option<&str>,
    secret: &str,
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => {
                if let Ok(bytes) = hex::decode(v) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(SignatureError::OutsideTolerance);
    }
    let mac = |signature: &[u8]| {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload);
        // Constant-time comparison.
        mac.verify_slice(signature).is_ok()
    };
    if signatures.iter().any(|s| mac(s)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The header Stripe would send for `payload` at `timestamp`: for tests and the test double.
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(payload);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"checkout.session.completed"}"#;

    #[test]
    fn a_signature_made_with_the_secret_verifies_within_the_tolerance() {
        let header = sign(BODY, SECRET, 1_000_000);
        assert_eq!(verify(BODY, Some(&header), SECRET, 1_000_000), Ok(()));
        assert_eq!(verify(BODY, Some(&header), SECRET, 1_000_300), Ok(()));
        assert_eq!(
            verify(BODY, Some(&header), SECRET, 1_000_301),
            Err(SignatureError::OutsideTolerance)
        );
        assert_eq!(
            verify(BODY, Some(&header), SECRET, 999_699),
            Err(SignatureError::OutsideTolerance)
        );
    }

    #[test]
    fn any_one_of_several_v1_signatures_may_match() {
        let good = sign(BODY, SECRET, 5);
        let good_v1 = good.split_once(",v1=").unwrap().1;
        let header = format!("t=5,v1={},v0=abc,v1={good_v1}", "00".repeat(32));
        assert_eq!(verify(BODY, Some(&header), SECRET, 5), Ok(()));
    }

    #[test]
    fn forged_altered_or_malformed_signatures_are_refused() {
        let header = sign(BODY, "whsec_other", 5);
        assert_eq!(
            verify(BODY, Some(&header), SECRET, 5),
            Err(SignatureError::Mismatch)
        );
        let header = sign(BODY, SECRET, 5);
        assert_eq!(
            verify(b"{\"id\":\"evt_2\"}", Some(&header), SECRET, 5),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(BODY, None, SECRET, 5), Err(SignatureError::Missing));
        for bad in ["", "t=5", "v1=00", "t=x,v1=00", "garbage"] {
            assert_eq!(
                verify(BODY, Some(bad), SECRET, 5),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }
}
