//! The DynamoDB lease table's operations (issue 10): create the table on demand, create, read and
//! list lease items, and the conditional writes KCL's protocol is made of — take, renew, release and
//! checkpoint — each conditional on the `leaseCounter` the caller last observed (and, but for a
//! take, on being the owner), so two replicas can never both believe they hold a shard and a zombie
//! can never move a checkpoint. A failed condition comes back as [`LeaseError::Conflict`] with the
//! item as it now is (`ReturnValuesOnConditionCheckFailure: ALL_OLD`), so the caller can tell a
//! write that already landed (an SDK-level retry) from one that lost the race.
//!
//! This is the table client only; [`super::coordinator`] builds the `Leases` and `CheckpointStore`
//! implementations on top of it (balancing, expiry as observed locally, fencing of commits).

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableStatus,
};
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;
use std::time::Duration;

use super::item::{attr, lease_key, n, s, LeaseCheckpoint, LeaseItem};
use crate::aws::error_text;

/// A lease table operation that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The condition failed: someone else moved the lease. The item as it is now, if it exists.
    #[error("the lease moved on (now {})", .0.as_ref().map_or("gone".to_string(), |i| format!("{:?}#{}", i.owner, i.counter)))]
    Conflict(Option<Box<LeaseItem>>),
    /// The table or the call failed; worth retrying.
    #[error("lease table: {0}")]
    Table(String),
}

/// One lease table.
#[derive(Clone)]
pub struct LeaseTable {
    client: Client,
    table: String,
}

fn table_error<E, R>(op: &str, e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> LeaseError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    LeaseError::Table(format!("{op}: {}", error_text(e)))
}

/// A conditional write's outcome: true if it was applied, false if its condition failed.
fn applied<T, E, R>(
    out: Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>,
    op: &str,
) -> Result<bool, LeaseError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match out {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(table_error(op, &e)),
    }
}

fn key(mapping: &str, shard: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([(
        attr::LEASE_KEY.to_string(),
        AttributeValue::S(lease_key(mapping, shard)),
    )])
}

/// The attribute of a mapping's first start, on its own item ([`LeaseTable::mapping_start`]).
const MAPPING_START: &str = "mappingStartMillis";

fn meta_key(mapping: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([(
        attr::LEASE_KEY.to_string(),
        AttributeValue::S(format!("sluice-mapping-start:{mapping}")),
    )])
}

/// How long [`LeaseTable::ensure`] waits for a new table to become active.
const CREATE_WAIT: Duration = Duration::from_secs(60);

impl LeaseTable {
    pub fn new(client: Client, table: &str) -> Self {
        LeaseTable {
            client,
            table: table.to_string(),
        }
    }

    /// Uses the table if it exists; otherwise creates it (on-demand billing, key `leaseKey`) and
    /// waits until it is active.
    pub async fn ensure(&self) -> Result<(), LeaseError> {
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(out) if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) => {
                return Ok(())
            }
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                let created = self
                    .client
                    .create_table()
                    .table_name(&self.table)
                    .billing_mode(BillingMode::PayPerRequest)
                    .attribute_definitions(
                        AttributeDefinition::builder()
                            .attribute_name(attr::LEASE_KEY)
                            .attribute_type(ScalarAttributeType::S)
                            .build()
                            .map_err(|e| LeaseError::Table(e.to_string()))?,
                    )
                    .key_schema(
                        KeySchemaElement::builder()
                            .attribute_name(attr::LEASE_KEY)
                            .key_type(KeyType::Hash)
                            .build()
                            .map_err(|e| LeaseError::Table(e.to_string()))?,
                    )
                    .send()
                    .await;
                // Another replica may have created it first.
                if let Err(e) = created {
                    if e.code() != Some("ResourceInUseException") {
                        return Err(table_error("CreateTable", &e));
                    }
                }
            }
            Err(e) => return Err(table_error("DescribeTable", &e)),
        }
        let deadline = tokio::time::Instant::now() + CREATE_WAIT;
        loop {
            let out = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| table_error("DescribeTable", &e))?;
            if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LeaseError::Table(format!(
                    "table {} is not active after {} s",
                    self.table,
                    CREATE_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Creates `item` unless a lease with its key exists; false if one does.
    pub async fn create(&self, item: &LeaseItem) -> Result<bool, LeaseError> {
        self.put_new(item.to_item()).await
    }

    /// Puts `item` unless an item with its key exists; false if one does.
    async fn put_new(&self, item: HashMap<String, AttributeValue>) -> Result<bool, LeaseError> {
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", attr::LEASE_KEY)
            .send()
            .await;
        applied(out, "PutItem")
    }

    /// The lease of `shard` of `mapping`, read consistently.
    pub async fn get(&self, mapping: &str, shard: &str) -> Result<Option<LeaseItem>, LeaseError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(mapping, shard)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| table_error("GetItem", &e))?;
        out.item()
            .map(|i| LeaseItem::from_item(i).map_err(LeaseError::Table))
            .transpose()
    }

    /// Every lease of `mapping`, read consistently.
    pub async fn list(&self, mapping: &str) -> Result<Vec<LeaseItem>, LeaseError> {
        let prefix = lease_key(mapping, "");
        let mut leases = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .filter_expression("begins_with(#k, :prefix)")
                .expression_attribute_names("#k", attr::LEASE_KEY)
                .expression_attribute_values(":prefix", s(&prefix))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| table_error("Scan", &e))?;
            for item in out.items() {
                if item.contains_key(MAPPING_START) {
                    continue;
                }
                let lease = LeaseItem::from_item(item).map_err(LeaseError::Table)?;
                // The prefix also matches a mapping whose name extends this one's with a ':'.
                if lease.mapping == mapping {
                    leases.push(lease);
                }
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(leases),
            }
        }
    }

    /// Takes `observed` (free or expired) for `me`: owner `me`, counter + 1, one more owner
    /// switch since the checkpoint when the owner changes, and no handoff in progress.
    pub async fn take(&self, observed: &LeaseItem, me: &str) -> Result<LeaseItem, LeaseError> {
        self.take_over(observed, me, false).await
    }

    /// Takes `observed` from its live owner for `me`, as [`LeaseTable::take`], and records the
    /// previous owner as `checkpointOwner` (KCL 3's graceful handoff): it clears that once it has
    /// stopped ([`LeaseTable::handoff_done`]), and `me` starts the shard only then.
    pub async fn steal(&self, observed: &LeaseItem, me: &str) -> Result<LeaseItem, LeaseError> {
        self.take_over(observed, me, true).await
    }

    async fn take_over(
        &self,
        observed: &LeaseItem,
        me: &str,
        handoff: bool,
    ) -> Result<LeaseItem, LeaseError> {
        let mut set = vec!["#owner = :me", "#counter = :next"];
        let mut names = vec![
            ("#owner", attr::LEASE_OWNER),
            ("#counter", attr::LEASE_COUNTER),
            ("#previous", attr::CHECKPOINT_OWNER),
        ];
        let mut values = vec![
            (":me", s(me)),
            (":next", n(observed.counter + 1)),
            (":observed", n(observed.counter)),
        ];
        if observed.owner.as_deref() != Some(me) {
            set.push("#switches = if_not_exists(#switches, :zero) + :one");
            names.push(("#switches", attr::OWNER_SWITCHES));
            values.extend([(":zero", n(0)), (":one", n(1))]);
        }
        let remove = match (&observed.owner, handoff) {
            (Some(previous), true) => {
                set.push("#previous = :previous");
                values.push((":previous", s(previous)));
                ""
            }
            _ => " REMOVE #previous",
        };
        let update = format!("SET {}{remove}", set.join(", "));
        self.conditional(
            observed,
            &update,
            "#counter = :observed",
            &names,
            values,
            "take",
        )
        .await
    }

    /// Renews `observed`, held by `me`: counter + 1; `end_handoff` also clears a `checkpointOwner`
    /// left by a previous holder that never finished its handoff.
    pub async fn renew(
        &self,
        observed: &LeaseItem,
        me: &str,
        end_handoff: bool,
    ) -> Result<LeaseItem, LeaseError> {
        let update = if end_handoff {
            "SET #counter = :next REMOVE #previous"
        } else {
            "SET #counter = :next"
        };
        self.advance_held(observed, me, update, "renew").await
    }

    /// The previous holder `me` of a stolen lease has stopped: clears `checkpointOwner` if it
    /// still names `me`, so the new owner starts at once. False if it no longer did.
    pub async fn handoff_done(
        &self,
        mapping: &str,
        shard: &str,
        me: &str,
    ) -> Result<bool, LeaseError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(mapping, shard)))
            .update_expression("REMOVE #previous")
            .condition_expression("#previous = :me")
            .expression_attribute_names("#previous", attr::CHECKPOINT_OWNER)
            .expression_attribute_values(":me", s(me))
            .send()
            .await;
        applied(out, "UpdateItem (handoff)")
    }

    /// Gives `observed`, held by `me`, up at once (graceful handoff): no owner, counter + 1, so
    /// another replica may take it without waiting for it to expire.
    pub async fn release(&self, observed: &LeaseItem, me: &str) -> Result<LeaseItem, LeaseError> {
        self.advance_held(
            observed,
            me,
            "REMOVE #owner SET #counter = :next",
            "release",
        )
        .await
    }

    /// `update` (which sets `leaseCounter` to `:next`) on a lease `me` holds at the observed counter.
    async fn advance_held(
        &self,
        observed: &LeaseItem,
        me: &str,
        update: &str,
        op: &str,
    ) -> Result<LeaseItem, LeaseError> {
        self.conditional(
            observed,
            update,
            "#counter = :observed AND #owner = :me",
            &[
                ("#owner", attr::LEASE_OWNER),
                ("#counter", attr::LEASE_COUNTER),
                ("#previous", attr::CHECKPOINT_OWNER),
            ][..if update.contains("#previous") { 3 } else { 2 }],
            vec![
                (":me", s(me)),
                (":next", n(observed.counter + 1)),
                (":observed", n(observed.counter)),
            ],
            op,
        )
        .await
    }

    /// Moves the checkpoint of `observed`, held by `me` at its counter and still at its checkpoint,
    /// to `to`; the owner switches since the checkpoint go back to 0. The counter does not move, as
    /// in KCL.
    pub async fn checkpoint(
        &self,
        observed: &LeaseItem,
        me: &str,
        to: &LeaseCheckpoint,
    ) -> Result<LeaseItem, LeaseError> {
        self.checkpoint_window(observed, me, to, None).await
    }

    /// [`LeaseTable::checkpoint`], storing an open tumbling window's state beside it
    /// (`sluiceWindow`; `None` removes it).
    pub async fn checkpoint_window(
        &self,
        observed: &LeaseItem,
        me: &str,
        to: &LeaseCheckpoint,
        window: Option<&crate::checkpoint::WindowState>,
    ) -> Result<LeaseItem, LeaseError> {
        let mut values = vec![
            (":me", s(me)),
            (":observed", n(observed.counter)),
            (":from", s(observed.checkpoint.as_str())),
            (":to", s(to.as_str())),
            (":zero", n(0)),
        ];
        let update = match window {
            Some(w) => {
                values.push((":window", s(&super::item::window_json(w))));
                "SET #checkpoint = :to, #switches = :zero, #window = :window"
            }
            None => "SET #checkpoint = :to, #switches = :zero REMOVE #window",
        };
        self.conditional(
            observed,
            update,
            "#counter = :observed AND #owner = :me AND #checkpoint = :from",
            &[
                ("#owner", attr::LEASE_OWNER),
                ("#counter", attr::LEASE_COUNTER),
                ("#checkpoint", attr::CHECKPOINT),
                ("#switches", attr::OWNER_SWITCHES),
                ("#window", attr::WINDOW),
            ],
            values,
            "checkpoint",
        )
        .await
    }

    /// Deletes the lease of an ended shard (`checkpoint` SHARD_END, whoever holds it); false if it
    /// is gone already or not ended.
    pub async fn delete_ended(&self, mapping: &str, shard: &str) -> Result<bool, LeaseError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(mapping, shard)))
            .condition_expression("#checkpoint = :end")
            .expression_attribute_names("#checkpoint", attr::CHECKPOINT)
            .expression_attribute_values(":end", s(LeaseCheckpoint::ShardEnd.as_str()))
            .send()
            .await;
        applied(out, "DeleteItem")
    }

    /// When `mapping` first started reading (epoch milliseconds), if recorded: an item of its own
    /// beside the leases, keyed `sluice-mapping-start:<mapping>` (never a lease key of the mapping).
    pub async fn mapping_start(&self, mapping: &str) -> Result<Option<i64>, LeaseError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(meta_key(mapping)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| table_error("GetItem", &e))?;
        Ok(out
            .item()
            .and_then(|i| i.get(MAPPING_START))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok()))
    }

    /// Records `mapping`'s first start unless one is recorded; returns the one that stands.
    pub async fn set_mapping_start(&self, mapping: &str, epoch_ms: i64) -> Result<i64, LeaseError> {
        let mut item = meta_key(mapping);
        item.insert(
            MAPPING_START.into(),
            AttributeValue::N(epoch_ms.to_string()),
        );
        if self.put_new(item).await? {
            return Ok(epoch_ms);
        }
        self.mapping_start(mapping)
            .await?
            .ok_or_else(|| LeaseError::Table(format!("{MAPPING_START} of {mapping} vanished")))
    }

    /// Records `mapping`'s first start as `epoch_ms`, replacing any recorded one (an operator
    /// replaying a LATEST mapping from before it started, `sluice checkpoints`).
    pub async fn put_mapping_start(&self, mapping: &str, epoch_ms: i64) -> Result<(), LeaseError> {
        let mut item = meta_key(mapping);
        item.insert(
            MAPPING_START.into(),
            AttributeValue::N(epoch_ms.to_string()),
        );
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| table_error("PutItem", &e))?;
        Ok(())
    }

    /// An operator's move of `observed`'s checkpoint to `to` (`sluice checkpoints`), conditional
    /// on the lease still being at the observed counter and checkpoint: the lease is freed (no
    /// owner, no handoff) and its counter advanced, so a holder still running is fenced — its
    /// next renewal or checkpoint fails its condition — and any replica may take it at once. An
    /// open tumbling window's state is dropped (it belonged to the old checkpoint) and the owner
    /// switches since the checkpoint go back to 0.
    pub async fn overwrite_checkpoint(
        &self,
        observed: &LeaseItem,
        to: &LeaseCheckpoint,
    ) -> Result<LeaseItem, LeaseError> {
        self.conditional(
            observed,
            "SET #checkpoint = :to, #counter = :next, #switches = :zero REMOVE #owner, #previous, #window",
            "#counter = :observed AND #checkpoint = :from",
            &[
                ("#owner", attr::LEASE_OWNER),
                ("#counter", attr::LEASE_COUNTER),
                ("#checkpoint", attr::CHECKPOINT),
                ("#switches", attr::OWNER_SWITCHES),
                ("#previous", attr::CHECKPOINT_OWNER),
                ("#window", attr::WINDOW),
            ],
            vec![
                (":observed", n(observed.counter)),
                (":next", n(observed.counter + 1)),
                (":from", s(observed.checkpoint.as_str())),
                (":to", s(to.as_str())),
                (":zero", n(0)),
            ],
            "overwrite checkpoint",
        )
        .await
    }

    /// One conditional UpdateItem on the lease of `observed`; the item as it is after the write, or
    /// a conflict with the item as it is now.
    async fn conditional(
        &self,
        observed: &LeaseItem,
        update: &str,
        condition: &str,
        names: &[(&str, &str)],
        values: Vec<(&str, AttributeValue)>,
        op: &str,
    ) -> Result<LeaseItem, LeaseError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&observed.mapping, &observed.shard)))
            .update_expression(update)
            // The item must exist: an update never creates a lease.
            .condition_expression(format!("attribute_exists(#key) AND ({condition})"))
            .expression_attribute_names("#key", attr::LEASE_KEY)
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (placeholder, name) in names {
            req = req.expression_attribute_names(*placeholder, *name);
        }
        for (placeholder, value) in values {
            req = req.expression_attribute_values(placeholder, value);
        }
        match req.send().await {
            Ok(out) => out
                .attributes()
                .ok_or_else(|| LeaseError::Table(format!("{op}: UpdateItem returned no item")))
                .and_then(|i| LeaseItem::from_item(i).map_err(LeaseError::Table)),
            Err(e) => match e.as_service_error() {
                Some(svc) if svc.is_conditional_check_failed_exception() => {
                    let now = match svc {
                        aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => {
                            c.item().and_then(|i| LeaseItem::from_item(i).ok())
                        }
                        _ => None,
                    };
                    Err(LeaseError::Conflict(now.map(Box::new)))
                }
                _ => Err(table_error(&format!("UpdateItem ({op})"), &e)),
            },
        }
    }
}
