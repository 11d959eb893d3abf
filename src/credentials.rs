//! AWS credentials for the requests sluice signs itself (Kinesis GetRecords, see
//! `source/kinesis/wire.rs`), one cache for the whole process: the provider of the SDK's default
//! chain (which caches nothing itself) is called once per refresh, its credentials are kept until a
//! minute before they expire ([`REFRESH_BEFORE`]; [`NO_EXPIRY_REFRESH`] after they were fetched
//! when they never expire, as the SDK's own cache does), a fetch is bounded by [`FETCH_TIMEOUT`]
//! and a caller's whole wait (behind other callers' failing fetches too) by [`WAIT_TIMEOUT`], and
//! while one caller refreshes, the others go on with the old credentials as long as those are
//! still valid. Fresh credentials are handed out without a timer or a lock wait.

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_runtime_api::client::identity::Identity;
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

/// Cached credentials are replaced this long before they expire.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(60);
/// Credentials without an expiry are fetched again after this long.
pub const NO_EXPIRY_REFRESH: Duration = Duration::from_secs(15 * 60);
/// The longest one fetch from the provider may take (IMDS, the ECS agent, STS).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a caller waits for credentials that are not cached: the whole-call timeout of the
/// AWS calls they sign.
pub const WAIT_TIMEOUT: Duration = crate::aws::DEFAULT_OPERATION_TIMEOUT;

#[derive(Debug, Clone)]
struct Entry {
    identity: Identity,
    refresh_at: SystemTime,
    /// None: never expires.
    expires: Option<SystemTime>,
}

/// See the module.
#[derive(Debug)]
pub struct CachedCredentials {
    provider: Option<SharedCredentialsProvider>,
    current: RwLock<Option<Entry>>,
    refresh: tokio::sync::Mutex<()>,
}

impl CachedCredentials {
    /// `provider` None: the SDK's chain found no source; every [`get`](Self::get) fails.
    pub fn new(provider: Option<SharedCredentialsProvider>) -> Self {
        CachedCredentials {
            provider,
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// The cached identity when `keep` says it may still be used.
    fn current(&self, keep: impl Fn(&Entry, SystemTime) -> bool) -> Option<Identity> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        let now = SystemTime::now();
        current
            .as_ref()
            .filter(|e| keep(e, now))
            .map(|e| e.identity.clone())
    }

    fn fresh(&self) -> Option<Identity> {
        self.current(|e, now| now < e.refresh_at)
    }

    fn valid(&self) -> Option<Identity> {
        self.current(|e, now| e.expires.is_none_or(|at| now < at))
    }

    /// Credentials to sign with: the cached ones, or fetched now (within [`WAIT_TIMEOUT`]).
    pub async fn get(&self) -> Result<Identity, String> {
        if let Some(id) = self.fresh() {
            return Ok(id);
        }
        tokio::time::timeout(WAIT_TIMEOUT, self.refresh())
            .await
            .unwrap_or_else(|_| Err(format!("credentials: no answer within {WAIT_TIMEOUT:?}")))
    }

    /// The slow path of [`get`](Self::get): one caller fetches, the others wait for it or use
    /// the old credentials while they are valid.
    async fn refresh(&self) -> Result<Identity, String> {
        let _one = match self.refresh.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                // Another caller refreshes: the old credentials serve until they expire.
                if let Some(id) = self.valid() {
                    return Ok(id);
                }
                self.refresh.lock().await
            }
        };
        if let Some(id) = self.fresh() {
            return Ok(id);
        }
        let provider = self
            .provider
            .as_ref()
            .ok_or("no AWS credentials: the SDK's default chain found none")?;
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, provider.provide_credentials()).await;
        let credentials = match fetched {
            Ok(Ok(c)) => c,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => crate::aws::error_chain(&e),
                    _ => format!("no answer within {FETCH_TIMEOUT:?}"),
                };
                // A failed refresh of credentials that are still valid is not yet a failure.
                return self.valid().ok_or_else(|| format!("credentials: {why}"));
            }
        };
        let now = SystemTime::now();
        let expires = credentials.expiry();
        let refresh_at = match expires {
            Some(at) => at.checked_sub(REFRESH_BEFORE).unwrap_or(at),
            None => now + NO_EXPIRY_REFRESH,
        };
        let identity = Identity::from(credentials);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Entry {
            identity: identity.clone(),
            refresh_at,
            expires,
        });
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Counts its calls; its credentials expire `ttl` from each call (`None`: never); `hang`:
    /// never answers.
    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicUsize>,
        ttl: Option<Duration>,
        hang: bool,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.hang {
                return aws_credential_types::provider::future::ProvideCredentials::new(
                    std::future::pending(),
                );
            }
            let expiry = self.ttl.map(|ttl| SystemTime::now() + ttl);
            aws_credential_types::provider::future::ProvideCredentials::ready(Ok(Credentials::new(
                "a", "b", None, expiry, "counting",
            )))
        }
    }

    fn cache(ttl: Option<Duration>, hang: bool) -> (CachedCredentials, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let provider = Counting {
            calls: calls.clone(),
            ttl,
            hang,
        };
        let cache = CachedCredentials::new(Some(SharedCredentialsProvider::new(provider)));
        (cache, calls)
    }

    #[tokio::test]
    async fn credentials_are_kept_until_shortly_before_they_expire() {
        let (long, calls) = cache(Some(Duration::from_secs(3600)), false);
        for _ in 0..5 {
            long.get().await.unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // Without an expiry: kept too (refreshed after NO_EXPIRY_REFRESH).
        let (forever, calls) = cache(None, false);
        for _ in 0..3 {
            forever.get().await.unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // Within REFRESH_BEFORE of their expiry: fetched again on every use.
        let (short, calls) = cache(Some(REFRESH_BEFORE / 2), false);
        for _ in 0..3 {
            short.get().await.unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let e = CachedCredentials::new(None).get().await.unwrap_err();
        assert!(e.contains("no AWS credentials"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_provider_that_never_answers_fails_the_fetch_within_its_timeout() {
        let (hung, calls) = cache(None, true);
        let started = tokio::time::Instant::now();
        let e = hung.get().await.unwrap_err();
        assert!(e.contains("no answer"), "{e}");
        assert_eq!(started.elapsed(), FETCH_TIMEOUT);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_queued_behind_a_stuck_refresh_gives_up_within_the_wait_timeout() {
        let (c, calls) = cache(None, false);
        let stuck = c.refresh.lock().await;
        let started = tokio::time::Instant::now();
        let e = c.get().await.unwrap_err();
        assert!(e.contains("no answer"), "{e}");
        assert_eq!(started.elapsed(), WAIT_TIMEOUT);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        drop(stuck);
    }

    #[tokio::test]
    async fn while_one_caller_refreshes_the_others_use_the_still_valid_credentials() {
        let (c, _) = cache(None, false);
        let old = Identity::from(Credentials::new("old", "b", None, None, "t"));
        *c.current.write().unwrap() = Some(Entry {
            identity: old,
            refresh_at: SystemTime::now() - Duration::from_secs(1),
            expires: Some(SystemTime::now() + Duration::from_secs(30)),
        });
        let refreshing = c.refresh.lock().await;
        let got = c.get().await.unwrap();
        let creds = got.data::<Credentials>().unwrap();
        assert_eq!(creds.access_key_id(), "old");
        drop(refreshing);
        // Free to refresh: the provider's credentials.
        let got = c.get().await.unwrap();
        assert_eq!(got.data::<Credentials>().unwrap().access_key_id(), "a");
    }
}
