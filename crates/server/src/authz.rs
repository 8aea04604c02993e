//! Authorization: may this principal perform this action on this resource?
//!
//! Runs after authentication and decoding (it needs the stream or consumer the request
//! names) and before the service sees the request. The action is `kinesis:` plus the
//! operation name; the resource is the stream ARN (from StreamARN, or StreamName in the
//! caller's account and region, or the stream a shard iterator or ListShards NextToken
//! refers to), the consumer ARN for consumer operations, the queue ARN for queue operations
//! (the stream ARN for CreateQueue), the ResourceARN of the
//! tag/policy operations, and `*` for ListStreams, DescribeLimits and the account settings.
//! The identity policies come from the configuration (attached to principals); the resource
//! policy is the one PutResourcePolicy stored on that stream or consumer. `policy::evaluate`
//! decides, and a denial answers `AccessDeniedException` with AWS's message.
//!
//! With authentication on, PutResourcePolicy refuses a document this evaluator cannot
//! honour (`InvalidArgumentException`), so a stored policy never means less than it says.

use std::collections::HashMap;
use std::sync::Arc;

use millrace_streams::{RequestContext, Streams};
use millrace_wire::ErrorKind;
use millrace_wire::kinesis::Request;
use parking_lot::Mutex;

use crate::auth::Principal;
use crate::policy::{Decision, PolicyDocument, RequestFacts, evaluate};

/// Parsed resource policies kept in memory at most (keyed by their text).
pub const POLICY_CACHE_ENTRIES_MAX: usize = 1024;

/// Identity policies by principal, and a cache of parsed resource policies.
pub struct Authorizer {
    identity: HashMap<String, Vec<Arc<PolicyDocument>>>,
    cache: Mutex<HashMap<String, Option<Arc<PolicyDocument>>>>,
}

pub type Denial = (ErrorKind, String);

fn stream_arn(ctx: &RequestContext, name: Option<&str>, arn: Option<&str>) -> String {
    match (arn, name) {
        (Some(arn), _) => arn.to_string(),
        (None, Some(name)) => format!(
            "arn:aws:kinesis:{}:{}:stream/{name}",
            ctx.region, ctx.account
        ),
        (None, None) => "*".to_string(),
    }
}

/// The resource a request acts on (an ARN, or `*`).
pub fn resource_of(streams: &Streams, ctx: &RequestContext, request: &Request) -> String {
    use Request as R;
    let s = |name: &Option<String>, arn: &Option<String>| {
        stream_arn(ctx, name.as_deref(), arn.as_deref())
    };
    let consumer = |consumer_arn: &Option<String>,
                    stream: &Option<String>,
                    name: &Option<String>| match (consumer_arn, stream, name) {
        (Some(arn), _, _) => arn.clone(),
        (None, Some(stream), Some(name)) => streams
            .consumer_arn(stream, name)
            .unwrap_or_else(|| format!("{stream}/consumer/{name}")),
        (None, Some(stream), None) => stream.clone(),
        _ => "*".to_string(),
    };
    match request {
        R::AddTagsToStream(i) => s(&i.stream_name, &i.stream_arn),
        R::CreateStream(i) => stream_arn(ctx, Some(&i.stream_name), None),
        R::DecreaseStreamRetentionPeriod(i) => s(&i.stream_name, &i.stream_arn),
        R::DeleteStream(i) => s(&i.stream_name, &i.stream_arn),
        R::DescribeStream(i) => s(&i.stream_name, &i.stream_arn),
        R::DescribeStreamSummary(i) => s(&i.stream_name, &i.stream_arn),
        R::DisableEnhancedMonitoring(i) => s(&i.stream_name, &i.stream_arn),
        R::EnableEnhancedMonitoring(i) => s(&i.stream_name, &i.stream_arn),
        R::GetShardIterator(i) => s(&i.stream_name, &i.stream_arn),
        R::IncreaseStreamRetentionPeriod(i) => s(&i.stream_name, &i.stream_arn),
        R::ListTagsForStream(i) => s(&i.stream_name, &i.stream_arn),
        R::MergeShards(i) => s(&i.stream_name, &i.stream_arn),
        R::PutRecord(i) => s(&i.stream_name, &i.stream_arn),
        R::PutRecords(i) => s(&i.stream_name, &i.stream_arn),
        R::RemoveTagsFromStream(i) => s(&i.stream_name, &i.stream_arn),
        R::SplitShard(i) => s(&i.stream_name, &i.stream_arn),
        R::StartStreamEncryption(i) => s(&i.stream_name, &i.stream_arn),
        R::StopStreamEncryption(i) => s(&i.stream_name, &i.stream_arn),
        R::UpdateShardCount(i) => s(&i.stream_name, &i.stream_arn),
        R::UpdateStreamWarmThroughput(i) => s(&i.stream_name, &i.stream_arn),
        R::UpdateMaxRecordSize(i) => s(&None, &i.stream_arn),
        R::UpdateStreamMode(i) => i.stream_arn.clone(),
        R::ListStreamConsumers(i) => i.stream_arn.clone(),
        R::RegisterStreamConsumer(i) => i.stream_arn.clone(),
        R::ListShards(i) => match (&i.next_token, &i.stream_name, &i.stream_arn) {
            (Some(token), None, None) => streams
                .list_shards_token_stream_arn(token)
                .unwrap_or_else(|| "*".to_string()),
            _ => s(&i.stream_name, &i.stream_arn),
        },
        R::GetRecords(i) => match &i.stream_arn {
            Some(arn) => arn.clone(),
            None => streams
                .iterator_stream_arn(&ctx.account, &ctx.region, &i.shard_iterator)
                .unwrap_or_else(|| "*".to_string()),
        },
        R::DescribeStreamConsumer(i) => consumer(&i.consumer_arn, &i.stream_arn, &i.consumer_name),
        R::DeregisterStreamConsumer(i) => {
            consumer(&i.consumer_arn, &i.stream_arn, &i.consumer_name)
        }
        R::SubscribeToShard(i) => i.consumer_arn.clone(),
        R::TagResource(i) => i.resource_arn.clone(),
        R::UntagResource(i) => i.resource_arn.clone(),
        R::ListTagsForResource(i) => i.resource_arn.clone(),
        R::PutResourcePolicy(i) => i.resource_arn.clone(),
        R::GetResourcePolicy(i) => i.resource_arn.clone(),
        R::DeleteResourcePolicy(i) => i.resource_arn.clone(),
        R::UpdateStreamRecordDistributionStrategy(i) => i.stream_arn.clone(),
        // CreateQueue acts on the stream it reads (the queue has no ARN yet); every other
        // queue operation on the queue's ARN.
        R::CreateQueue(i) => i
            .stream_configuration_list
            .first()
            .map_or_else(|| "*".to_string(), |c| c.stream_arn.clone()),
        R::DescribeQueue(i) => i.queue_arn.clone(),
        // Channels likewise: CreateChannel on the stream it reads, the others on the channel.
        R::CreateChannel(i) => i
            .stream_configuration_list
            .first()
            .map_or_else(|| "*".to_string(), |c| c.stream_arn.clone()),
        R::DescribeChannel(i) => i.channel_arn.clone(),
        R::UpdateChannel(i) => i.channel_arn.clone(),
        R::DeleteChannel(i) => i.channel_arn.clone(),
        R::UpdateQueue(i) => i.queue_arn.clone(),
        R::DeleteQueue(i) => i.queue_arn.clone(),
        R::ReceiveQueueRecords(i) => i.queue_arn.clone(),
        R::AcknowledgeQueueRecords(i) => i.queue_arn.clone(),
        R::UpdateQueueRecordsVisibility(i) => i.queue_arn.clone(),
        R::ReceiveDeadLetterQueueRecords(i) => i.queue_arn.clone(),
        R::AcknowledgeDeadLetterQueueRecords(i) => i.queue_arn.clone(),
        R::UpdateDeadLetterQueueRecordsVisibility(i) => i.queue_arn.clone(),
        R::RestoreDeadLetterQueueRecords(i) => i.queue_arn.clone(),
        // ListStreams, ListQueues, DescribeLimits, the account settings and the operations
        // Millrace does not serve yet act on no resource.
        _ => "*".to_string(),
    }
}

/// The account that owns a resource ARN (its fifth field); `None` for `*`.
fn resource_account(resource: &str) -> Option<&str> {
    resource
        .strip_prefix("arn:")
        .and_then(|rest| rest.split(':').nth(3))
}

impl Authorizer {
    /// `policies` are (principal ARN, document) pairs: each document is attached to that
    /// principal.
    pub fn new(policies: Vec<(String, PolicyDocument)>) -> Authorizer {
        let mut identity: HashMap<String, Vec<Arc<PolicyDocument>>> = HashMap::new();
        for (principal, document) in policies {
            identity
                .entry(principal)
                .or_default()
                .push(Arc::new(document));
        }
        Authorizer {
            identity,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn resource_policy(&self, streams: &Streams, resource: &str) -> Option<Arc<PolicyDocument>> {
        let text = streams.resource_policy(resource)?;
        let mut cache = self.cache.lock();
        if let Some(parsed) = cache.get(&text) {
            return parsed.clone();
        }
        let parsed = match PolicyDocument::parse(&text) {
            Ok(document) => Some(Arc::new(document)),
            Err(error) => {
                // Stored before authentication was turned on, in a form this evaluator
                // cannot honour: it grants nothing (and denies nothing).
                tracing::warn!(%error, resource, "ignoring a resource policy Millrace cannot evaluate");
                None
            }
        };
        if cache.len() >= POLICY_CACHE_ENTRIES_MAX {
            cache.clear();
        }
        cache.insert(text, parsed.clone());
        parsed
    }

    /// `Ok` when the principal may perform the request; AWS's AccessDeniedException (or,
    /// for a policy document Millrace cannot evaluate, InvalidArgumentException) otherwise.
    pub fn authorize(
        &self,
        streams: &Streams,
        principal: &Principal,
        ctx: &RequestContext,
        request: &Request,
        secure_transport: bool,
    ) -> Result<(), Denial> {
        if let Request::PutResourcePolicy(input) = request
            && let Err(error) = PolicyDocument::parse(&input.policy)
        {
            return Err((ErrorKind::InvalidArgumentException, error.to_string()));
        }
        let action = format!("kinesis:{}", request.operation().name());
        let resource = resource_of(streams, ctx, request);
        let facts = RequestFacts {
            principal_arn: &principal.arn,
            principal_account: &principal.account,
            action: &action,
            resource: &resource,
            secure_transport,
        };
        let identity: Vec<&PolicyDocument> = self
            .identity
            .get(&principal.arn)
            .map(|docs| docs.iter().map(Arc::as_ref).collect())
            .unwrap_or_default();
        let resource_policy = (resource != "*")
            .then(|| self.resource_policy(streams, &resource))
            .flatten();
        let owner = resource_account(&resource).unwrap_or(&principal.account);
        match evaluate(&identity, resource_policy.as_deref(), owner, &facts) {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) => {
                tracing::debug!(principal = %principal.arn, %action, %resource, ?reason, "access denied");
                Err((ErrorKind::AccessDeniedException, reason.message(&facts)))
            }
        }
    }

    /// Authorizes an action of a service without resource policies (Firehose:
    /// `firehose:PutRecord` on `arn:aws:firehose:...:deliverystream/NAME`) against the
    /// principal's identity policies only.
    pub(crate) fn authorize_identity(
        &self,
        principal: &Principal,
        action: &str,
        resource: &str,
        secure_transport: bool,
    ) -> Result<(), Denial> {
        let facts = RequestFacts {
            principal_arn: &principal.arn,
            principal_account: &principal.account,
            action,
            resource,
            secure_transport,
        };
        let identity: Vec<&PolicyDocument> = self
            .identity
            .get(&principal.arn)
            .map(|docs| docs.iter().map(Arc::as_ref).collect())
            .unwrap_or_default();
        let owner = resource_account(resource).unwrap_or(&principal.account);
        match evaluate(&identity, None, owner, &facts) {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) => {
                tracing::debug!(principal = %principal.arn, %action, %resource, ?reason, "access denied");
                Err((ErrorKind::AccessDeniedException, reason.message(&facts)))
            }
        }
    }
}
