//! Which AWS region a secret is read in: the region its spec names, else the one in its ARN, else
//! the operator's default. Pure; the access check, the AWS clients and the rate limits all ask here.

/// The region in a Secrets Manager ARN (`arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME`).
pub fn of_arn(secret_id: &str) -> Option<&str> {
    let parts: Vec<&str> = secret_id.split(':').collect();
    (parts.len() >= 7 && parts[0] == "arn" && parts[2] == "secretsmanager" && !parts[3].is_empty())
        .then(|| parts[3])
}

/// The region a secret is read in: `spec` (the ManagedSecret's `region`), else the region of
/// `secret_id` when it is an ARN, else `default`; None when none of them says.
pub fn resolve(spec: Option<&str>, secret_id: &str, default: Option<&str>) -> Option<String> {
    spec.or_else(|| of_arn(secret_id))
        .or(default)
        .map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:prod/db-AbCdEf";

    #[test]
    fn region_comes_from_an_arn() {
        assert_eq!(
            of_arn(
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db/credentials-AbCdEf"
            ),
            Some("eu-west-1")
        );
        assert_eq!(of_arn("prod/db/credentials"), None);
    }

    #[test]
    fn the_spec_region_wins() {
        assert_eq!(
            resolve(Some("ap-south-1"), ARN, Some("us-east-1")),
            Some("ap-south-1".to_string())
        );
        assert_eq!(
            resolve(Some("ap-south-1"), "prod/db", None),
            Some("ap-south-1".to_string())
        );
    }

    #[test]
    fn the_arn_region_comes_next() {
        assert_eq!(
            resolve(None, ARN, Some("us-east-1")),
            Some("eu-west-1".to_string())
        );
        assert_eq!(resolve(None, ARN, None), Some("eu-west-1".to_string()));
    }

    #[test]
    fn the_default_comes_last() {
        assert_eq!(
            resolve(None, "prod/db", Some("us-east-1")),
            Some("us-east-1".to_string())
        );
        assert_eq!(resolve(None, "prod/db", None), None);
    }

    #[test]
    fn a_malformed_arn_names_no_region() {
        for id in [
            "arn:aws:secretsmanager::111122223333:secret:prod/db",
            "arn:aws:secretsmanager:eu-west-1:111122223333",
            "arn:aws:s3:eu-west-1:111122223333:secret:prod/db",
            "urn:aws:secretsmanager:eu-west-1:111122223333:secret:prod/db",
            "",
        ] {
            assert_eq!(of_arn(id), None, "{id}");
            assert_eq!(
                resolve(None, id, Some("us-east-1")),
                Some("us-east-1".to_string()),
                "{id}"
            );
        }
    }
}
