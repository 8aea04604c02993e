//! What the server's authorization needs to know about resources before a request runs:
//! the resource policies that PutResourcePolicy stored (streams, consumers, queues), the full ARN of a consumer named by
//! stream and name, and the stream an opaque token (shard iterator, ListShards NextToken)
//! refers to. Read-only lookups on the in-memory registry; no HTTP, no policy logic (the
//! server evaluates the documents).

use crate::control::decode_next_token;
use crate::iterator::IteratorToken;
use crate::{Streams, parse_stream_arn, stream_exists, stream_key};

impl Streams {
    fn view_by_arn(&self, arn: &str) -> Option<std::sync::Arc<crate::StreamView>> {
        let (account, region, name) = parse_stream_arn(arn)?;
        let entry = self
            .inner
            .registry
            .read()
            .get(&stream_key(&account, &region, &name))
            .cloned()?;
        let view = entry.view();
        stream_exists(&view.record, self.inner.now_ms()).then_some(view)
    }

    /// The resource policy attached to a stream, consumer or queue ARN, if any.
    pub fn resource_policy(&self, arn: &str) -> Option<String> {
        if let Some((account, region, queue_id)) = crate::queues::parse_queue_arn(arn) {
            let runtime = self.inner.queues.read().get(&queue_id).cloned()?;
            if runtime.account != account || runtime.region != region {
                return None;
            }
            let entry = self
                .inner
                .registry
                .read()
                .get(&runtime.stream_key)
                .cloned()?;
            let view = entry.view();
            return view
                .record
                .queues
                .iter()
                .find(|q| q.queue_id == queue_id)
                .and_then(|q| q.policy.clone());
        }
        let view = self.view_by_arn(arn)?;
        match arn.split_once("/consumer/") {
            Some((_, consumer)) => {
                let name = consumer.split(':').next().unwrap_or(consumer);
                view.record
                    .consumers
                    .iter()
                    .find(|c| c.name == name)
                    .and_then(|c| c.policy.clone())
            }
            None => view.record.policy.clone(),
        }
    }

    /// The ARN of a registered consumer of a stream.
    pub fn consumer_arn(&self, stream_arn: &str, consumer_name: &str) -> Option<String> {
        let view = self.view_by_arn(stream_arn)?;
        let consumer = view
            .record
            .consumers
            .iter()
            .find(|c| c.name == consumer_name)?;
        Some(format!(
            "{}/consumer/{}:{}",
            crate::stream_arn(&view.record),
            consumer.name,
            consumer.created_ms / 1000
        ))
    }

    /// The stream a shard iterator reads, as GetRecords will resolve it (the caller's
    /// account and region); `None` for a token this installation did not issue.
    pub fn iterator_stream_arn(
        &self,
        account: &str,
        region: &str,
        iterator: &str,
    ) -> Option<String> {
        let token = IteratorToken::decode(iterator, &self.inner.secret)?;
        Some(format!(
            "arn:aws:kinesis:{region}:{account}:stream/{}",
            token.stream_name
        ))
    }

    /// The stream name and shard id a shard iterator reads (for the shard-level metrics);
    /// `None` for a token this installation did not issue.
    pub fn iterator_stream_shard(&self, iterator: &str) -> Option<(String, String)> {
        let token = IteratorToken::decode(iterator, &self.inner.secret)?;
        Some((token.stream_name, crate::shard_id(token.shard_index)))
    }

    /// The shard-level metrics EnableEnhancedMonitoring turned on for a stream (AWS names),
    /// empty for a stream that does not exist.
    pub fn enhanced_metrics(&self, account: &str, region: &str, name: &str) -> Vec<String> {
        let entry = self
            .inner
            .registry
            .read()
            .get(&stream_key(account, region, name))
            .cloned();
        entry.map_or_else(Vec::new, |entry| {
            entry.view().record.enhanced_metrics.clone()
        })
    }

    /// The stream a ListShards NextToken pages through.
    pub fn list_shards_token_stream_arn(&self, token: &str) -> Option<String> {
        let fields = decode_next_token(token, 7, self.inner.now_ms()).ok()?;
        if fields.first().map(String::as_str) != Some("shards") {
            return None;
        }
        let field = |i: usize| fields.get(i).cloned().unwrap_or_default();
        Some(format!(
            "arn:aws:kinesis:{}:{}:stream/{}",
            field(2),
            field(1),
            field(3)
        ))
    }
}
