//! A stream batch under the mapping's `FilterCriteria` (docs/filtering.md): only the records that
//! match a filter go through [`ShardWorker::process`], where partial batch responses, bisect,
//! retries and give-ups work on them exactly as on an unfiltered batch; the rest are counted
//! (`filtered_out`) and never sent. The batch's end is then checkpointed whatever its last records
//! were: a batch in which nothing matched is checkpointed past without an invoke, and records
//! filtered out after the last one sent are covered too. A worker stopped before that (shutdown, a
//! lost lease) leaves them to be read and filtered again.

use tokio_util::sync::CancellationToken;

use super::{ShardWorker, Stop};
use crate::checkpoint::Checkpoint;
use crate::filter::RecordFilter;
use crate::source::Record;

impl ShardWorker {
    /// Processes `batch` (see the module docs); without filters, all of it.
    pub(super) async fn process_filtered(
        &mut self,
        batch: Vec<Record>,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        let ctx = self.ctx.clone();
        let Some(filter) = RecordFilter::of(&ctx.mapping) else {
            return self.process(batch, cancel).await;
        };
        let Some(end) = batch.last().map(|r| r.sequence.clone()) else {
            return Ok(());
        };
        let (sent, filtered) = filter.split(batch, |r| r.event.as_slice());
        if !filtered.is_empty() {
            self.telemetry.filtered_out(filtered.len());
        }
        let covered = sent.last().map(|r| r.sequence.clone());
        if !sent.is_empty() {
            self.process(sent, cancel).await?;
        }
        if covered.as_ref() != Some(&end) {
            self.checkpoint(Checkpoint::Sequence(end), cancel).await?;
        }
        Ok(())
    }
}
