//! Client-side rate limits for AWS Secrets Manager: a token bucket per API and region at a share of
//! the documented quotas, so that a burst (thousands of ManagedSecrets created at once, a sweep)
//! waits briefly instead of being throttled.

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;

/// The documented request quotas per second (per account and region).
pub const QUOTAS: &[(&str, u32)] = &[
    ("GetSecretValue", 10_000),
    ("DescribeSecret", 40_000),
    ("ListSecrets", 100),
    ("BatchGetSecretValue", 100),
];

/// The rate a share of a quota allows (at least one request a second).
pub fn allowed(quota: u32, share: f64) -> NonZeroU32 {
    let n = (f64::from(quota) * share.clamp(0.0, 1.0)).floor() as u32;
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

pub struct ApiLimits {
    limiters: HashMap<&'static str, DefaultKeyedRateLimiter<String>>,
}

impl ApiLimits {
    pub fn new(share: f64) -> ApiLimits {
        ApiLimits {
            limiters: QUOTAS
                .iter()
                .map(|(api, q)| {
                    (
                        *api,
                        RateLimiter::keyed(Quota::per_second(allowed(*q, share))),
                    )
                })
                .collect(),
        }
    }

    /// Takes a token if one is there (without waiting).
    pub fn try_take(&self, api: &str, region: &str) -> bool {
        self.limiters
            .get(api)
            .map(|l| l.check_key(&region.to_string()).is_ok())
            .unwrap_or(true)
    }

    /// Waits until `api` may be called in `region`.
    pub async fn wait(&self, api: &str, region: &str) {
        if let Some(l) = self.limiters.get(api) {
            l.until_key_ready(&region.to_string()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_of_each_quota_by_default() {
        assert_eq!(allowed(10_000, 0.5).get(), 5_000);
        assert_eq!(allowed(100, 0.5).get(), 50);
        assert_eq!(allowed(100, 0.0).get(), 1, "never zero");
        assert_eq!(allowed(100, 7.0).get(), 100, "never above the quota");
    }

    #[test]
    fn a_burst_over_the_bucket_has_to_wait_and_regions_have_their_own() {
        // ListSecrets at 2% of 100/s: a bucket of two.
        let l = ApiLimits::new(0.02);
        assert!(l.try_take("ListSecrets", "us-east-1"));
        assert!(l.try_take("ListSecrets", "us-east-1"));
        assert!(
            !l.try_take("ListSecrets", "us-east-1"),
            "the third has to wait"
        );
        assert!(
            l.try_take("ListSecrets", "eu-west-1"),
            "another region's bucket"
        );
        assert!(
            l.try_take("GetSecretValue", "us-east-1"),
            "another API's bucket"
        );
        assert!(
            l.try_take("SomethingElse", "us-east-1"),
            "unknown APIs are not limited"
        );
    }
}
