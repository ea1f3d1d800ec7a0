//! x25519 keys as WireGuard uses them, in base64 (the form `wg` prints), from the OS's
//! random source.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use boringtun::x25519::{PublicKey, StaticSecret};

/// A fresh private key.
pub fn generate() -> StaticSecret {
    StaticSecret::random()
}

pub fn public_of(secret: &StaticSecret) -> PublicKey {
    PublicKey::from(secret)
}

pub fn encode(bytes: &[u8; 32]) -> String {
    STANDARD.encode(bytes)
}

/// 32 bytes from base64, or why not.
pub fn decode(text: &str) -> Result<[u8; 32], String> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| format!("{} bytes, not 32", bytes.len()))
}

pub fn secret_from(text: &str) -> Result<StaticSecret, String> {
    decode(text).map(StaticSecret::from)
}

pub fn public_from(text: &str) -> Result<PublicKey, String> {
    decode(text).map(PublicKey::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_bad_text_is_refused() {
        let secret = generate();
        let public = public_of(&secret);
        let again = secret_from(&encode(&secret.to_bytes())).unwrap();
        assert_eq!(public_of(&again).as_bytes(), public.as_bytes());
        assert!(decode("not base64!").is_err());
        assert!(decode(&encode(&[0; 32])[..20]).is_err());
    }
}
