//! moto, the AWS emulator, started through tests/aws/moto_server.py, and helpers that drive it with
//! the real aws-sdk-secretsmanager the way users and rotation Lambdas do.

use aws_sdk_secretsmanager::primitives::Blob;
use aws_sdk_secretsmanager::Client;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

pub struct Moto {
    child: Child,
    pub url: String,
    pub client: Client,
    http: reqwest::Client,
    control: Arc<Mutex<(ChildStdin, BufReader<ChildStdout>)>>,
}

fn python() -> String {
    std::env::var("MANAGED_SECRETS_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_string())
}

impl Moto {
    pub async fn start() -> Moto {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aws/moto_server.py");
        let mut child = Command::new(python())
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting moto with {} (run scripts/setup-tools.sh): {e}",
                    python()
                )
            });
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take().unwrap();
        let (line, reader) = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            let mut l = String::new();
            reader.read_line(&mut l).map(|_| (l, reader))
        })
        .await
        .unwrap()
        .expect("moto prints its address");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected moto output: {line:?}"))
            .to_string();
        Moto {
            child,
            client: Client::new(&sdk_config_for(&url)),
            url,
            http: reqwest::Client::new(),
            control: Arc::new(Mutex::new((stdin, reader))),
        }
    }

    async fn command(&self, cmd: &'static str) {
        let control = self.control.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = control.lock().unwrap();
            writeln!(c.0, "{cmd}").unwrap();
            c.0.flush().unwrap();
            let mut ack = String::new();
            c.1.read_line(&mut ack).unwrap();
            assert_eq!(ack.trim(), format!("ok {cmd}"));
        })
        .await
        .unwrap();
    }

    /// AWS becomes unreachable: the port refuses connections (moto keeps its secrets).
    pub async fn pause(&self) {
        self.command("pause").await;
    }

    /// AWS answers again, on the same port, with the same secrets.
    pub async fn resume(&self) {
        self.command("resume").await;
    }

    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config_for(&self.url)
    }

    /// An SQS client (moto serves SQS on the same port).
    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk_config())
    }

    /// Creates a queue; returns its URL.
    pub async fn create_queue(&self, name: &str) -> String {
        self.sqs()
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .expect("CreateQueue")
            .queue_url
            .expect("queue url")
    }

    /// Sends one message, as an EventBridge rule's SQS target does.
    pub async fn send_message(&self, queue: &str, body: &str) {
        self.sqs()
            .send_message()
            .queue_url(queue)
            .message_body(body)
            .send()
            .await
            .expect("SendMessage");
    }

    /// Messages in the queue, visible or in flight (0 once every message was deleted).
    pub async fn queue_depth(&self, queue: &str) -> u64 {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = self
            .sqs()
            .get_queue_attributes()
            .queue_url(queue)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("GetQueueAttributes");
        let attrs = out.attributes.unwrap_or_default();
        [
            A::ApproximateNumberOfMessages,
            A::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .filter_map(|a| attrs.get(a)?.parse::<u64>().ok())
        .sum()
    }

    /// The ARN AWS gives a secret (for events that name it by ARN).
    pub async fn arn_of(&self, name: &str) -> String {
        self.client
            .describe_secret()
            .secret_id(name)
            .send()
            .await
            .expect("DescribeSecret")
            .arn
            .expect("arn")
    }

    pub async fn create_string(&self, name: &str, value: &str) -> String {
        let out = self
            .client
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .expect("CreateSecret");
        out.version_id().unwrap().to_string()
    }
    pub async fn create_json(&self, name: &str, value: &Value) -> String {
        self.create_string(name, &value.to_string()).await
    }
    pub async fn create_binary(&self, name: &str, value: &[u8]) -> String {
        let out = self
            .client
            .create_secret()
            .name(name)
            .secret_binary(Blob::new(value.to_vec()))
            .send()
            .await
            .expect("CreateSecret");
        out.version_id().unwrap().to_string()
    }
    /// A client acting in the account of `role_arn` (moto keeps one store per account, as AWS
    /// does: an assumed role in another account sees that account's secrets).
    pub async fn client_as(&self, role_arn: &str) -> Client {
        let sts = aws_sdk_sts::Client::new(&self.sdk_config());
        let c = sts
            .assume_role()
            .role_arn(role_arn)
            .role_session_name("e2e-setup")
            .send()
            .await
            .expect("AssumeRole")
            .credentials
            .expect("credentials");
        let creds = aws_sdk_secretsmanager::config::Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            None,
            "e2e",
        );
        let conf = aws_sdk_secretsmanager::config::Builder::from(&self.sdk_config())
            .credentials_provider(
                aws_sdk_secretsmanager::config::SharedCredentialsProvider::new(creds),
            )
            .build();
        Client::from_conf(conf)
    }

    /// PutSecretValue: a new AWSCURRENT version (as a person updating the secret does).
    pub async fn put_json(&self, name: &str, value: &Value) -> String {
        let out = self
            .client
            .put_secret_value()
            .secret_id(name)
            .secret_string(value.to_string())
            .send()
            .await
            .expect("PutSecretValue");
        out.version_id().unwrap().to_string()
    }

    /// The version id holding `stage`, per DescribeSecret.
    pub async fn version_with_stage(&self, name: &str, stage: &str) -> Option<String> {
        let d = self
            .client
            .describe_secret()
            .secret_id(name)
            .send()
            .await
            .ok()?;
        d.version_ids_to_stages()?
            .iter()
            .find(|(_, s)| s.iter().any(|x| x == stage))
            .map(|(v, _)| v.clone())
    }

    /// Rotation as a rotation Lambda does it: createSecret puts the new value as AWSPENDING,
    /// finishSecret moves AWSCURRENT to it. Returns the new version id.
    pub async fn put_pending(&self, name: &str, value: &Value) -> String {
        let token = format!("rotation-{}", uuid());
        self.client
            .put_secret_value()
            .secret_id(name)
            .secret_string(value.to_string())
            .client_request_token(&token)
            .version_stages("AWSPENDING")
            .send()
            .await
            .expect("PutSecretValue AWSPENDING");
        token
    }
    pub async fn finish_rotation(&self, name: &str, pending: &str) {
        let current = self
            .version_with_stage(name, "AWSCURRENT")
            .await
            .expect("a current version");
        self.client
            .update_secret_version_stage()
            .secret_id(name)
            .version_stage("AWSCURRENT")
            .move_to_version_id(pending)
            .remove_from_version_id(current)
            .send()
            .await
            .expect("UpdateSecretVersionStage");
    }
    pub async fn rotate_like_lambda(&self, name: &str, value: &Value) -> String {
        let v = self.put_pending(name, value).await;
        self.finish_rotation(name, &v).await;
        v
    }

    /// An EventBridge rule on Secrets Manager's `Secret Label Updated` whose target is `queue`
    /// (wrapped in an SNS notification when `sns`): every label move is delivered there.
    pub async fn route_label_events_to(&self, queue: &str, sns: bool) {
        self.http
            .post(format!("{}/__eventbridge", self.url))
            .json(&json!({"queue_url": queue, "sns": sns}))
            .send()
            .await
            .expect("eventbridge rule");
    }

    /// Rotation enabled on `name`, its next rotation window opening at `at` (unix seconds) for an
    /// hour: a schedule coming due, without waiting days for it.
    pub async fn schedule_rotation(&self, name: &str, at: i64) {
        self.http
            .post(format!("{}/__rotation", self.url))
            .json(&json!({"secret_id": name, "next_rotation_date": at, "duration": "1h"}))
            .send()
            .await
            .expect("rotation schedule");
    }

    /// Makes the next `count` calls of `action` for `secret_id` answer the AWS error `code`.
    pub async fn fault(&self, action: &str, secret_id: &str, code: &str, count: u32) {
        let status = if code == "InternalServiceError" {
            500
        } else {
            400
        };
        self.http
            .post(format!("{}/__faults", self.url))
            .json(&json!({"action": action, "secret_id": secret_id, "code": code, "count": count, "status": status}))
            .send()
            .await
            .expect("fault");
    }
    /// Clears pending AWS error injections.
    pub async fn clear_faults(&self) {
        self.http
            .delete(format!("{}/__faults", self.url))
            .send()
            .await
            .expect("clear faults");
    }

    /// Every call moto answered: action, secret_id, access_key, region; for STS also role_arn,
    /// session_name, external_id, tags, token_aud, token_sub.
    /// (Empty while moto is paused.)
    pub async fn requests(&self) -> Vec<Value> {
        match self
            .http
            .get(format!("{}/__requests", self.url))
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => vec![],
        }
    }

    /// Calls of `action` for `secret_id`.
    pub async fn calls_for(&self, action: &str, secret_id: &str) -> usize {
        self.requests()
            .await
            .iter()
            .filter(|r| r["action"] == action && r["secret_id"] == secret_id)
            .count()
    }

    /// Calls that read `secret_id`'s value or versions: GetSecretValue and DescribeSecret for it,
    /// and BatchGetSecretValue calls that list it.
    pub async fn reads_of(&self, secret_id: &str) -> usize {
        self.requests()
            .await
            .iter()
            .filter(|r| {
                (matches!(
                    r["action"].as_str(),
                    Some("GetSecretValue" | "DescribeSecret")
                ) && r["secret_id"] == secret_id)
                    || (r["action"] == "BatchGetSecretValue"
                        && r["secret_ids"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|x| x == secret_id)))
            })
            .count()
    }

    pub async fn calls(&self, action: &str) -> u64 {
        let v: Value = self
            .http
            .get(format!("{}/__calls", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v[action].as_u64().unwrap_or(0)
    }
}

fn uuid() -> String {
    use rand::Rng;
    let mut r = rand::rng();
    (0..32)
        .map(|_| char::from(b"0123456789abcdef"[r.random_range(0..16)]))
        .collect()
}

pub fn sdk_config_for(url: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(
            aws_sdk_secretsmanager::config::SharedCredentialsProvider::new(
                aws_sdk_secretsmanager::config::Credentials::new(
                    "testing", "testing", None, None, "e2e",
                ),
            ),
        )
        .build()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
