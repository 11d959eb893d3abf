//! Waits on one replica's leases, and the takeover timings the replica tests measure.

use super::*;

/// Waits until `id`'s `sluice_leases_held` for the mapping is `n`.
pub async fn wait_leases_held(sluice: &Sluice, n: usize, timeout: Duration) {
    let labels = format!("mapping=\"{MAPPING}\"");
    wait_for(
        &format!("sluice_leases_held to be {n}"),
        timeout,
        || async {
            let (_, text) = sluice.get("/metrics").await?;
            let prefix = format!("sluice_leases_held{{{labels}}} ");
            let v: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix(&prefix))?
                .parse()
                .ok()?;
            (v as usize == n).then_some(())
        },
    )
    .await
}

/// Waits until every one of `shards` got a request at or after `since` from a replica other than
/// `except`; returns, per shard, how long after `since` the first came and from whom.
pub async fn wait_resumed(
    fleet: &Fleet,
    shards: &[String],
    since: Instant,
    except: Option<&str>,
    timeout: Duration,
) -> BTreeMap<String, (Duration, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let first = first_after(&fleet.sink.received.lock().unwrap(), since, except);
        if shards.iter().all(|s| first.contains_key(s)) {
            return shards
                .iter()
                .map(|s| {
                    let (at, run) = &first[s];
                    (s.clone(), (*at - since, run.clone()))
                })
                .collect();
        }
        if Instant::now() > deadline {
            let missing: Vec<&String> = shards.iter().filter(|s| !first.contains_key(*s)).collect();
            panic!(
                "timed out after {timeout:?}: shards {missing:?} got no request from a replica other than {except:?}; status:{}\n{}",
                fleet.status_summary().await,
                fleet.log_tails(60)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `sluice_leases_held` for the mapping from the admin server at `admin`; `None` while it does not
/// answer.
pub async fn leases_held(admin: &str) -> Option<usize> {
    let text = reqwest::get(format!("{admin}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("sluice_leases_held{{mapping=\"{MAPPING}\"}} ");
    let v: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))?
        .parse()
        .ok()?;
    Some(v as usize)
}

/// Polls the admin server at `admin` every 50 ms in the background from now: resolves to how long
/// after `since` it first reported holding no lease of the mapping, or `None` if it did not
/// within `timeout`.
pub fn time_to_no_leases(
    admin: &str,
    since: Instant,
    timeout: Duration,
) -> tokio::task::JoinHandle<Option<Duration>> {
    let admin = admin.to_string();
    tokio::spawn(async move {
        while since.elapsed() < timeout {
            if leases_held(&admin).await == Some(0) {
                return Some(since.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    })
}
