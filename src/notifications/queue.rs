//! The queue notifications arrive on, behind a small trait: SQS (long polling) in production, the
//! same through moto in tests.

use futures::future::BoxFuture;
use std::time::Duration;

/// One message as received.
#[derive(Clone)]
pub struct Message {
    pub id: String,
    /// The handle that deletes it (valid for this receipt only).
    pub receipt: String,
    pub body: String,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Message({}, {} bytes)", self.id, self.body.len())
    }
}

/// A queue error, worded for a log line (the queue, the call and what the service said).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueueError(pub String);

pub trait NotificationQueue: Send + Sync {
    /// Waits up to `wait` for messages (at most 10), hiding them from other receivers for
    /// `visibility`; an empty answer is normal.
    fn receive(
        &self,
        wait: Duration,
        visibility: Duration,
    ) -> BoxFuture<'_, Result<Vec<Message>, QueueError>>;
    /// Deletes a handled message.
    fn delete<'a>(&'a self, receipt: &'a str) -> BoxFuture<'a, Result<(), QueueError>>;
    /// The queue, for logs.
    fn name(&self) -> String;
}

/// An SQS queue by URL.
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsQueue {
    /// A client for `url` with the operator's AWS configuration; its calls time out after the
    /// long poll plus a margin, so a lost connection is noticed.
    pub fn new(base: &aws_config::SdkConfig, url: &str, wait: Duration) -> SqsQueue {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(wait + Duration::from_secs(10))
            .operation_timeout(wait + Duration::from_secs(30))
            .build();
        let mut conf = aws_sdk_sqs::config::Builder::from(base).timeout_config(timeouts);
        // The queue's region is in its URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME).
        if let Some(region) = region_of_url(url) {
            conf = conf.region(aws_config::Region::new(region));
        }
        SqsQueue {
            client: aws_sdk_sqs::Client::from_conf(conf.build()),
            url: url.to_string(),
        }
    }
}

/// The region in an SQS queue URL, when it is the usual endpoint.
pub fn region_of_url(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?.split('/').next()?;
    let mut parts = host.split('.');
    match (parts.next(), parts.next()) {
        (Some("sqs"), Some(region)) if region.contains('-') => Some(region.to_string()),
        _ => None,
    }
}

fn describe<E: std::error::Error + 'static>(
    call: &str,
    e: &aws_sdk_sqs::error::SdkError<E>,
) -> QueueError {
    QueueError(format!(
        "SQS {call}: {}",
        aws_sdk_sqs::error::DisplayErrorContext(e)
    ))
}

impl NotificationQueue for SqsQueue {
    fn receive(
        &self,
        wait: Duration,
        visibility: Duration,
    ) -> BoxFuture<'_, Result<Vec<Message>, QueueError>> {
        Box::pin(async move {
            let out = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .wait_time_seconds(i32::try_from(wait.as_secs().min(20)).unwrap_or(20))
                .visibility_timeout(i32::try_from(visibility.as_secs().min(43_200)).unwrap_or(300))
                .send()
                .await
                .map_err(|e| describe("ReceiveMessage", &e))?;
            Ok(out
                .messages
                .unwrap_or_default()
                .into_iter()
                .filter_map(|m| {
                    Some(Message {
                        id: m.message_id.unwrap_or_default(),
                        receipt: m.receipt_handle?,
                        body: m.body.unwrap_or_default(),
                    })
                })
                .collect())
        })
    }

    fn delete<'a>(&'a self, receipt: &'a str) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async move {
            self.client
                .delete_message()
                .queue_url(&self.url)
                .receipt_handle(receipt)
                .send()
                .await
                .map_err(|e| describe("DeleteMessage", &e))?;
            Ok(())
        })
    }

    fn name(&self) -> String {
        self.url.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_the_queue_url() {
        assert_eq!(
            region_of_url(
                "https://sqs.eu-west-1.amazonaws.com/123456789012/managed-secrets-events"
            )
            .as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_of_url("http://127.0.0.1:4566/123456789012/q"), None);
        assert_eq!(region_of_url("not a url"), None);
    }
}
