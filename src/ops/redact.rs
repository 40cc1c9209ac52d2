//! Keeping secrets out of logs and endpoints: librdkafka options whose names mark them as
//! credentials are shown as `<redacted>` wherever weatherflow prints or serves a configuration.
//!
//! ```text
//!   kafka.options / consumer / producer ──redact_options──> {"sasl.password": "<redacted>", "security.protocol": "SASL_SSL", ...}
//! ```

use std::collections::BTreeMap;

/// What a secret value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Whether a librdkafka option holds a secret (passwords, keys, tokens, OAuth client secrets,
/// JAAS configs, or anything else whose name says so).
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    const MARKS: [&str; 6] = ["password", "secret", "token", "jaas", "credential", "private"];
    MARKS.iter().any(|m| k.contains(m)) || k.ends_with(".key") || k.ends_with(".pem") || k == "sasl.oauthbearer.config"
}

/// `options` with every secret value replaced by [`REDACTED`].
pub fn redact_options(options: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    options
        .iter()
        .map(|(k, v)| (k.clone(), if is_secret(k) { REDACTED.to_string() } else { v.clone() }))
        .collect()
}

/// `k=v` pairs of `options`, secrets redacted, for one log line.
pub fn describe_options(options: &BTreeMap<String, String>) -> String {
    redact_options(options)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted_and_the_rest_is_kept() {
        let o: BTreeMap<String, String> = [
            ("sasl.password", "hunter2"),
            ("sasl.username", "app"),
            ("ssl.key.password", "k"),
            ("ssl.key.pem", "-----BEGIN"),
            ("sasl.oauthbearer.client.secret", "s"),
            ("sasl.oauthbearer.config", "principal=x secret=y"),
            ("ssl.keystore.password", "p"),
            ("sasl.jaas.config", "x"),
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-256"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let r = redact_options(&o);
        for k in [
            "sasl.password",
            "ssl.key.password",
            "ssl.key.pem",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
            "ssl.keystore.password",
            "sasl.jaas.config",
        ] {
            assert_eq!(r[k], REDACTED, "{k}");
        }
        assert_eq!(r["sasl.username"], "app");
        assert_eq!(r["security.protocol"], "SASL_SSL");
        let line = describe_options(&o);
        assert!(!line.contains("hunter2") && line.contains("sasl.mechanism=SCRAM-SHA-256"), "{line}");
    }
}
