//! Secrets: values supplied when the unikernel is launched, never built into the image.

/// A secret value (a token, a key). Implementations never print it: their `Debug` output
/// is redacted.
pub trait Secret {
    /// The value.
    fn value(&self) -> &[u8];

    /// Whether `candidate` equals the value, in time that depends only on the lengths.
    fn matches(&self, candidate: &[u8]) -> bool {
        let value = self.value();
        if value.len() != candidate.len() {
            return false;
        }
        value
            .iter()
            .zip(candidate)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}
