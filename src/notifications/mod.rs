//! Notifications for event-driven refresh: Secrets Manager's events (EventBridge, through an SQS
//! queue) as hints that a secret may have a new version. ("Events" in this codebase are Kubernetes
//! Events; these are notifications.) Pure: what a message says, which ManagedSecrets it concerns,
//! and how the polling backstop stretches while notifications flow. The queue's I/O is `queue.rs`;
//! the consumer that confirms with AWS and triggers reconciles is `controller/notifications.rs`.

pub mod queue;

use serde_json::Value;
use std::time::Duration;

/// What one message says: a Secrets Manager event about one or more secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The API call or service event (`UpdateSecretVersionStage`, `RotationSucceeded`, ...).
    pub name: String,
    /// The secrets it names (names or ARNs, as the message gives them), deduplicated.
    pub secrets: Vec<String>,
    /// The region the event happened in, when it says.
    pub region: Option<String>,
    /// The staging label that moved (`Secret Label Updated`); None when the event does not say
    /// which (an API call recorded by CloudTrail may have moved any).
    pub label: Option<String>,
}

/// Secrets Manager's own event when a staging label moves to another version (every label but
/// AWSPENDING and AWSPREVIOUS), on by default, no CloudTrail trail needed.
pub const LABEL_UPDATED: &str = "Secret Label Updated";

/// Labels no ManagedSecret reads: a pending value is not in use yet, a previous one no longer.
const UNREAD_LABELS: &[&str] = &["AWSPENDING", "AWSPREVIOUS"];

/// Why a message is not a notification we act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// Not JSON, not an EventBridge event, or no secret named in it.
    Malformed(&'static str),
    /// An event that cannot move a version (a read, a tag, a policy change).
    ReadOnly(String),
}

impl Ignored {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Ignored::Malformed(_) => "malformed",
            Ignored::ReadOnly(_) => "irrelevant",
        }
    }
}

/// The API calls and service events after which a staging label may point elsewhere.
const MOVING: &[&str] = &[
    "PutSecretValue",
    "UpdateSecretVersionStage",
    "RotateSecret",
    "RotationSucceeded",
    "UpdateSecret",
    "RestoreSecret",
    "CreateSecret",
    "DeleteSecret",
    "CancelRotateSecret",
    "ReplicateSecretToRegions",
];

/// Bodies are at most this long (SQS's own limit is 256 KiB).
pub const MAX_BODY: usize = 256 * 1024;
/// Most secrets one message may name (a real event names one; more are ignored).
pub const MAX_NAMED: usize = 16;

/// A region as AWS spells them (`us-east-1`), or nothing.
fn region_of(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .filter(|r| {
            !r.is_empty()
                && r.len() <= 32
                && r.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
        .map(str::to_string)
}

/// Parses an SQS message body: an EventBridge event (as an EventBridge rule delivers it), or the
/// same wrapped in an SNS notification.
pub fn parse(body: &str) -> Result<Notification, Ignored> {
    if body.len() > MAX_BODY {
        return Err(Ignored::Malformed("the message is larger than SQS allows"));
    }
    let v: Value = serde_json::from_str(body).map_err(|_| Ignored::Malformed("not JSON"))?;
    // SNS in between: the event is the Message string.
    if v.get("Type").and_then(Value::as_str) == Some("Notification") {
        let inner = v
            .get("Message")
            .and_then(Value::as_str)
            .ok_or(Ignored::Malformed("an SNS notification without a Message"))?;
        return parse(inner);
    }
    if v.get("source").and_then(Value::as_str) != Some("aws.secretsmanager") {
        return Err(Ignored::Malformed("not a Secrets Manager event (source)"));
    }
    let detail = v
        .get("detail")
        .filter(|d| d.is_object())
        .ok_or(Ignored::Malformed("an event without a detail"))?;
    let detail_type = v.get("detail-type").and_then(Value::as_str);
    if detail_type == Some(LABEL_UPDATED) {
        return label_updated(&v, detail);
    }
    cloudtrail(&v, detail, detail_type)
}

/// An API call as CloudTrail records it (or a rotation service event): the secrets it names in
/// whichever field this call uses.
fn cloudtrail(
    v: &Value,
    detail: &Value,
    detail_type: Option<&str>,
) -> Result<Notification, Ignored> {
    let name = detail
        .get("eventName")
        .and_then(Value::as_str)
        .or(detail_type)
        .unwrap_or_default()
        .to_string();
    if !MOVING.contains(&name.as_str()) {
        return Err(Ignored::ReadOnly(name));
    }
    let mut secrets: Vec<String> = Vec::new();
    let mut add = |s: Option<&Value>| {
        if let Some(s) = s.and_then(Value::as_str).map(str::trim) {
            if !s.is_empty()
                && s.len() <= 2048
                && secrets.len() < MAX_NAMED
                && !secrets.iter().any(|x| x == s)
            {
                secrets.push(s.to_string());
            }
        }
    };
    // Field spellings vary between events (responseElements.arn and .aRN, SecretId and secretId).
    let field = |o: Option<&Value>, names: &[&str]| -> Vec<Value> {
        let Some(o) = o.and_then(Value::as_object) else {
            return vec![];
        };
        names.iter().filter_map(|n| o.get(*n).cloned()).collect()
    };
    for s in field(detail.get("responseElements"), &["arn", "aRN", "ARN"]) {
        add(Some(&s));
    }
    for s in field(
        detail.get("requestParameters"),
        &["secretId", "SecretId", "name", "Name"],
    ) {
        add(Some(&s));
    }
    for s in field(
        detail.get("additionalEventData"),
        &["SecretId", "secretId", "SecretArn", "secretArn"],
    ) {
        add(Some(&s));
    }
    for s in field(detail.get("serviceEventDetails"), &["secretId", "SecretId"]) {
        add(Some(&s));
    }
    for r in detail
        .get("resources")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(
            v.get("resources")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        )
    {
        match r {
            Value::String(_) => add(Some(r)),
            Value::Object(o) => add(o.get("ARN").or_else(|| o.get("arn"))),
            _ => {}
        }
    }
    if secrets.is_empty() {
        return Err(Ignored::Malformed("no secret named in the event"));
    }
    let region = region_of(detail.get("awsRegion").or_else(|| v.get("region")));
    Ok(Notification {
        name,
        secrets,
        region,
        label: None,
    })
}

/// A `Secret Label Updated` event: `resources` has the secret's ARN, `detail.name` its name,
/// `detail.labelUpdated` the label that moved.
fn label_updated(v: &Value, detail: &Value) -> Result<Notification, Ignored> {
    let label = detail
        .get("labelUpdated")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|l| !l.is_empty() && l.len() <= 256)
        .ok_or(Ignored::Malformed(
            "a Secret Label Updated event without a label",
        ))?;
    if UNREAD_LABELS.contains(&label) {
        return Err(Ignored::ReadOnly(format!("{LABEL_UPDATED} {label}")));
    }
    // The ARN says which account's secret it is; the name alone only when there is none.
    let mut secrets: Vec<String> = Vec::new();
    let resources = v.get("resources").and_then(Value::as_array);
    let named = resources.into_iter().flatten().chain(
        resources
            .is_none_or(Vec::is_empty)
            .then(|| detail.get("name"))
            .flatten(),
    );
    for s in named.filter_map(Value::as_str).map(str::trim) {
        if !s.is_empty()
            && s.len() <= 2048
            && secrets.len() < MAX_NAMED
            && !secrets.iter().any(|x| x == s)
        {
            secrets.push(s.to_string());
        }
    }
    if secrets.is_empty() {
        return Err(Ignored::Malformed("no secret named in the event"));
    }
    Ok(Notification {
        name: LABEL_UPDATED.into(),
        secrets,
        region: region_of(v.get("region")),
        label: Some(label.to_string()),
    })
}

/// Whether a notification about `label` can move what a ManagedSecret reads: the stage it reads
/// (`stage`, AWSCURRENT by default; AWSPREVIOUS moves with AWSCURRENT, and AWS announces only the
/// latter), never a pinned version id. No label: it may have moved any.
pub fn moves_what_it_reads(label: Option<&str>, stage: Option<&str>, pinned: bool) -> bool {
    let stage = stage.unwrap_or("AWSCURRENT");
    match label {
        None => true,
        Some(l) => !pinned && (stage == l || (l == "AWSCURRENT" && stage == "AWSPREVIOUS")),
    }
}

/// A secret's name: itself, or from an ARN (`arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-xxxxxx`,
/// the six characters AWS appends dropped).
pub fn secret_name(id: &str) -> &str {
    match id.split_once(":secret:") {
        Some((prefix, rest)) if prefix.starts_with("arn:") => match rest.rsplit_once('-') {
            Some((name, suffix))
                if suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_alphanumeric()) =>
            {
                name
            }
            _ => rest,
        },
        _ => id,
    }
}

/// The region in an ARN.
pub fn arn_region(id: &str) -> Option<&str> {
    let mut parts = id.split(':');
    (parts.next() == Some("arn")).then_some(())?;
    parts.nth(2).filter(|r| !r.is_empty())
}

/// Whether a ManagedSecret's `secretId` (in `ms_region`) is the secret a notification names (in
/// `notified_region`, when it says).
pub fn concerns(
    secret_id: &str,
    ms_region: Option<&str>,
    named: &str,
    notified_region: Option<&str>,
) -> bool {
    let region = arn_region(named).or(notified_region);
    if let (Some(a), Some(b)) = (region, arn_region(secret_id).or(ms_region)) {
        if a != b {
            return false;
        }
    }
    secret_id == named || secret_name(secret_id) == secret_name(named)
}

/// The refresh interval to schedule: while notifications flow, polling is only the backstop and
/// runs at least every `backstop` instead of every `spec`.
pub fn effective_interval(
    spec: Duration,
    backstop: Option<Duration>,
    notifications_healthy: bool,
) -> Duration {
    match backstop {
        Some(b) if notifications_healthy => spec.max(b),
        _ => spec,
    }
}

/// The notification queue is healthy when its last receive succeeded within `window` and none failed
/// since. Times in seconds (monotonic or unix, the same for both).
pub fn healthy(now: u64, last_ok: Option<u64>, last_error: Option<u64>, window: Duration) -> bool {
    match last_ok {
        Some(ok) => now.saturating_sub(ok) <= window.as_secs() && last_error.is_none_or(|e| e < ok),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ARN: &str =
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db/credentials-AbC123";

    fn cloudtrail(name: &str, detail: Value) -> String {
        let mut d = json!({"eventSource": "secretsmanager.amazonaws.com", "eventName": name, "awsRegion": "us-east-1"});
        d.as_object_mut()
            .unwrap()
            .extend(detail.as_object().unwrap().clone());
        json!({"version": "0", "id": "e-1", "detail-type": "AWS API Call via CloudTrail", "source": "aws.secretsmanager",
               "account": "123456789012", "time": "2026-11-29T10:00:00Z", "region": "us-east-1", "resources": [], "detail": d})
        .to_string()
    }

    #[test]
    fn cloudtrail_calls_name_their_secret_by_id_and_arn() {
        let body = cloudtrail(
            "UpdateSecretVersionStage",
            json!({"requestParameters": {"secretId": "prod/db/credentials", "versionStage": "AWSCURRENT"},
                   "responseElements": {"arn": ARN, "name": "prod/db/credentials"}}),
        );
        assert_eq!(
            parse(&body),
            Ok(Notification {
                name: "UpdateSecretVersionStage".into(),
                secrets: vec![ARN.into(), "prod/db/credentials".into()],
                region: Some("us-east-1".into()),
                label: None,
            })
        );
        // The other spelling some responses use.
        let body = cloudtrail("PutSecretValue", json!({"responseElements": {"aRN": ARN}}));
        assert_eq!(parse(&body).unwrap().secrets, vec![ARN.to_string()]);
    }

    #[test]
    fn service_events_and_sns_wrapping() {
        let service = json!({"detail-type": "AWS Service Event via CloudTrail", "source": "aws.secretsmanager",
            "region": "eu-west-1",
            "detail": {"eventName": "RotationSucceeded", "additionalEventData": {"SecretId": ARN}}})
        .to_string();
        let e = parse(&service).unwrap();
        assert_eq!(
            (e.name.as_str(), e.secrets.clone(), e.region.clone()),
            (
                "RotationSucceeded",
                vec![ARN.to_string()],
                Some("eu-west-1".into())
            )
        );
        let sns = json!({"Type": "Notification", "MessageId": "m", "Message": service}).to_string();
        assert_eq!(parse(&sns).unwrap(), e);
    }

    #[test]
    fn reads_and_junk_are_ignored_with_a_reason() {
        assert_eq!(parse("not json"), Err(Ignored::Malformed("not JSON")));
        assert_eq!(
            parse(&json!({"source": "aws.s3", "detail": {}}).to_string()),
            Err(Ignored::Malformed("not a Secrets Manager event (source)"))
        );
        assert_eq!(
            parse(&cloudtrail(
                "GetSecretValue",
                json!({"requestParameters": {"secretId": "x"}})
            )),
            Err(Ignored::ReadOnly("GetSecretValue".into()))
        );
        assert_eq!(
            parse(&cloudtrail("PutSecretValue", json!({}))),
            Err(Ignored::Malformed("no secret named in the event"))
        );
        assert_eq!(
            parse(&json!({"source": "aws.secretsmanager"}).to_string()),
            Err(Ignored::Malformed("an event without a detail"))
        );
        assert_eq!(
            parse(&"x".repeat(MAX_BODY + 1)),
            Err(Ignored::Malformed("the message is larger than SQS allows"))
        );
        assert_eq!(Ignored::ReadOnly("x".into()).reason(), "irrelevant");
    }

    #[test]
    fn names_from_arns_and_matching() {
        assert_eq!(secret_name(ARN), "prod/db/credentials");
        assert_eq!(secret_name("prod/db/credentials"), "prod/db/credentials");
        assert_eq!(
            secret_name("prod/db/name-with-dash"),
            "prod/db/name-with-dash"
        );
        assert_eq!(
            secret_name("arn:aws:secretsmanager:us-east-1:1:secret:partial"),
            "partial"
        );
        assert_eq!(arn_region(ARN), Some("us-east-1"));
        assert_eq!(arn_region("prod/x"), None);
        assert!(concerns(
            "prod/db/credentials",
            Some("us-east-1"),
            ARN,
            None
        ));
        assert!(concerns(
            ARN,
            None,
            "prod/db/credentials",
            Some("us-east-1")
        ));
        assert!(
            !concerns("prod/db/credentials", Some("eu-west-1"), ARN, None),
            "another region's secret of that name"
        );
        assert!(!concerns("prod/db/other", None, ARN, None));
        assert!(concerns(
            "prod/db/credentials",
            None,
            "prod/db/credentials",
            None
        ));
    }

    #[test]
    fn the_backstop_stretches_polling_only_while_events_flow() {
        let s = Duration::from_secs(300);
        let b = Some(Duration::from_secs(1800));
        assert_eq!(effective_interval(s, b, true), Duration::from_secs(1800));
        assert_eq!(effective_interval(s, b, false), s);
        assert_eq!(
            effective_interval(Duration::from_secs(7200), b, true),
            Duration::from_secs(7200)
        );
        assert_eq!(effective_interval(s, None, true), s);
        let w = Duration::from_secs(60);
        assert!(healthy(100, Some(90), None, w));
        assert!(healthy(100, Some(90), Some(80), w));
        assert!(!healthy(100, Some(90), Some(95), w), "failed since");
        assert!(!healthy(200, Some(90), None, w), "too long ago");
        assert!(!healthy(100, None, None, w));
    }

    fn label_updated_event(label: &str) -> Value {
        json!({"version": "0", "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
               "detail-type": "Secret Label Updated", "source": "aws.secretsmanager",
               "account": "123456789012", "time": "2026-12-01T10:00:00Z", "region": "us-east-1",
               "resources": [ARN],
               "detail": {"name": "prod/db/credentials", "labelUpdated": label,
                          "versionId": "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111"}})
    }

    #[test]
    fn a_secret_label_updated_event_names_its_secret_and_the_label_that_moved() {
        let want = Notification {
            name: "Secret Label Updated".into(),
            secrets: vec![ARN.into()],
            region: Some("us-east-1".into()),
            label: Some("AWSCURRENT".into()),
        };
        assert_eq!(
            parse(&label_updated_event("AWSCURRENT").to_string()),
            Ok(want.clone())
        );
        let sns = json!({"Type": "Notification", "MessageId": "m-1",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:secrets",
            "Message": label_updated_event("AWSCURRENT").to_string()});
        assert_eq!(parse(&sns.to_string()), Ok(want));
        // AWS sends neither of these; a message that says so moves nothing anyone reads.
        for l in ["AWSPREVIOUS", "AWSPENDING"] {
            assert_eq!(
                parse(&label_updated_event(l).to_string()),
                Err(Ignored::ReadOnly(format!("Secret Label Updated {l}")))
            );
        }
        let mut no_label = label_updated_event("AWSCURRENT");
        no_label["detail"]
            .as_object_mut()
            .unwrap()
            .remove("labelUpdated");
        assert_eq!(
            parse(&no_label.to_string()),
            Err(Ignored::Malformed(
                "a Secret Label Updated event without a label"
            ))
        );
        let custom = parse(&label_updated_event("blue").to_string()).unwrap();
        assert_eq!(custom.label.as_deref(), Some("blue"));
    }

    #[test]
    fn a_label_moves_what_its_readers_read_and_nothing_pinned() {
        assert!(moves_what_it_reads(Some("AWSCURRENT"), None, false));
        assert!(moves_what_it_reads(
            Some("AWSCURRENT"),
            Some("AWSCURRENT"),
            false
        ));
        assert!(!moves_what_it_reads(Some("blue"), None, false));
        assert!(moves_what_it_reads(Some("blue"), Some("blue"), false));
        assert!(!moves_what_it_reads(Some("AWSCURRENT"), None, true));
        assert!(
            moves_what_it_reads(Some("AWSCURRENT"), Some("AWSPREVIOUS"), false),
            "AWSPREVIOUS moves with AWSCURRENT"
        );
        assert!(!moves_what_it_reads(
            Some("blue"),
            Some("AWSPREVIOUS"),
            false
        ));
        assert!(moves_what_it_reads(None, Some("blue"), false));
        assert!(moves_what_it_reads(None, None, true), "CloudTrail: any");
    }

    #[test]
    fn a_message_names_at_most_sixteen_secrets_and_a_region_as_aws_spells_them() {
        let mut e = label_updated_event("AWSCURRENT");
        let many: Vec<String> = (0..1000).map(|i| format!("{ARN}{i}")).collect();
        e["resources"] = json!(many);
        e["region"] = json!("x".repeat(5000));
        let n = parse(&e.to_string()).unwrap();
        assert_eq!(n.secrets.len(), MAX_NAMED);
        assert_eq!(n.region, None);
        // Without resources, the name.
        e["resources"] = json!([]);
        e["region"] = json!("eu-west-1");
        let n = parse(&e.to_string()).unwrap();
        assert_eq!(n.secrets, vec!["prod/db/credentials".to_string()]);
        assert_eq!(n.region.as_deref(), Some("eu-west-1"));
    }
}
