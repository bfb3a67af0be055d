//! `managed-secrets render -f ms.yaml --value-file sample.json`: the keys a ManagedSecret would
//! put in its Secret for a given AWS value, rendered by the controller's own code. Values are
//! redacted (sizes only) unless `--show-values`.

use super::documents;
use crate::crd::ManagedSecret;
use crate::render::{Mapping, SecretData, SecretValue};
use std::fmt::Write as _;
use std::time::Duration;

/// The ManagedSecrets in a file's text (all of them, or the one named `name`).
pub fn managed_secrets(text: &str, name: Option<&str>) -> anyhow::Result<Vec<ManagedSecret>> {
    let mut out = Vec::new();
    for (line, doc) in documents(text) {
        let v: serde_json::Value = serde_yaml::from_str(&doc)
            .map_err(|e| anyhow::anyhow!("line {line}: not valid YAML: {e}"))?;
        if v["kind"] != "ManagedSecret" {
            continue;
        }
        let ms: ManagedSecret = serde_json::from_value(v)
            .map_err(|e| anyhow::anyhow!("line {line}: not a valid ManagedSecret: {e}"))?;
        if name.is_none_or(|n| ms.metadata.name.as_deref() == Some(n)) {
            out.push(ms);
        }
    }
    Ok(out)
}

/// What the Secret would hold, as text: values as sizes unless `show_values`.
pub fn describe(ms: &ManagedSecret, data: &SecretData, show_values: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Secret {} (type {}) from AWS secret {}: {} key{}",
        ms.target_name(),
        ms.spec.target.type_.as_str(),
        ms.spec.secret_id,
        data.0.len(),
        if data.0.len() == 1 { "" } else { "s" }
    );
    for (k, v) in &data.0 {
        if show_values {
            match std::str::from_utf8(v) {
                Ok(text) => {
                    let _ = writeln!(s, "  {k}: {}", serde_json::Value::String(text.to_string()));
                }
                Err(_) => {
                    use base64::Engine;
                    let b64 = base64::engine::general_purpose::STANDARD.encode(v);
                    let _ = writeln!(s, "  {k}: (binary, base64) {b64}");
                }
            }
        } else {
            let _ = writeln!(s, "  {k}: <redacted, {} bytes>", v.len());
        }
    }
    s
}

/// Renders `ms` for `value` exactly as the controller would (its spec checks first).
pub fn render(
    ms: &ManagedSecret,
    value: &SecretValue,
    min_refresh: Duration,
) -> crate::Result<SecretData> {
    crate::crd::validate_spec(ms, min_refresh)?;
    Mapping::compile(&ms.spec)?.render(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: &str = "apiVersion: v1
kind: Namespace
metadata: {name: db}
---
apiVersion: managedsecrets.io/v1alpha1
kind: ManagedSecret
metadata:
  name: db
  namespace: db
spec:
  secretId: prod/db/credentials
  data:
    keys:
      - {from: password, to: DB_PASSWORD}
  templates:
    DATABASE_URL: \"postgres://{{ username }}:{{ password | urlencode }}@{{ host }}/app\"
";

    fn value() -> SecretValue {
        SecretValue::String(
            r#"{"username": "app", "password": "p@ss word", "host": "db.local"}"#.into(),
        )
    }

    #[test]
    fn renders_the_keys_redacted_or_shown() {
        let all = managed_secrets(MS, None).unwrap();
        assert_eq!(all.len(), 1);
        let data = render(&all[0], &value(), Duration::from_secs(10)).unwrap();
        assert_eq!(
            describe(&all[0], &data, false),
            "Secret db (type Opaque) from AWS secret prod/db/credentials: 2 keys\n  DATABASE_URL: <redacted, 41 bytes>\n  DB_PASSWORD: <redacted, 9 bytes>\n"
        );
        assert_eq!(
            describe(&all[0], &data, true),
            "Secret db (type Opaque) from AWS secret prod/db/credentials: 2 keys\n  DATABASE_URL: \"postgres://app:p%40ss%20word@db.local/app\"\n  DB_PASSWORD: \"p@ss word\"\n"
        );
    }

    #[test]
    fn picks_by_name_and_reports_errors_without_values() {
        assert_eq!(managed_secrets(MS, Some("other")).unwrap().len(), 0);
        let ms = &managed_secrets(MS, Some("db")).unwrap()[0];
        let e = render(
            ms,
            &SecretValue::String(r#"{"username": "secret-user"}"#.into()),
            Duration::from_secs(10),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("password"), "{e}");
        assert!(!e.contains("secret-user"), "{e}");
        let e = managed_secrets("kind: ManagedSecret\nspec: 3\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 1: not a valid ManagedSecret"), "{e}");
    }
}
