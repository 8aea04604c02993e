//! The Lambda API subset (2015-03-31, REST-JSON): event source mappings for Kinesis
//! streams and enhanced fan-out consumers, and functions with a URL in place of code.
//!
//! Routes (the server strips nothing; paths start with `/2015-03-31`):
//! `POST|GET /event-source-mappings/`, `GET|PUT|DELETE /event-source-mappings/{UUID}`,
//! `POST|GET /functions/`, `GET|DELETE /functions/{FunctionName}`. Any other path under
//! `/2015-03-31/` is answered with a Lambda-shaped error (`UnknownOperationException` 404, or
//! `InvalidRequestContentException` naming a Lambda operation Millrace does not implement).
//!
//! Parameters are checked against the model's ranges (botocore's `lambda/2015-03-31`) and
//! the rules Lambda applies to Kinesis sources; a refused request changes nothing.

use std::sync::Arc;

use millrace_catalog::Table;
use millrace_streams::RequestContext;
use millrace_wire::kinesis as k;
use serde_json::{Map, Value, json};

use crate::error::Error;
use crate::filter::{FILTERS_MAX, Filter};
use crate::model::{FunctionRecord, MappingRecord, StartingPosition};
use crate::{Inner, MappingHandle, function_key_of_arn, strip_qualifier};

pub const PATH_PREFIX: &str = "/2015-03-31";
/// Items per page of the List operations at most (the model's `MaxListItems`).
const LIST_ITEMS_MAX: usize = 10_000;
const LIST_MAPPINGS_DEFAULT: usize = 100;
const LIST_FUNCTIONS_DEFAULT: usize = 50;
const BATCH_SIZE_DEFAULT: u32 = 100;
const BATCH_SIZE_MAX: i64 = 10_000;
const DECLARED_ROLE: &str = "role/millrace-declared-function";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    CreateEventSourceMapping,
    GetEventSourceMapping,
    ListEventSourceMappings,
    UpdateEventSourceMapping,
    DeleteEventSourceMapping,
    CreateFunction,
    GetFunction,
    ListFunctions,
    DeleteFunction,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::CreateEventSourceMapping => "CreateEventSourceMapping",
            Operation::GetEventSourceMapping => "GetEventSourceMapping",
            Operation::ListEventSourceMappings => "ListEventSourceMappings",
            Operation::UpdateEventSourceMapping => "UpdateEventSourceMapping",
            Operation::DeleteEventSourceMapping => "DeleteEventSourceMapping",
            Operation::CreateFunction => "CreateFunction",
            Operation::GetFunction => "GetFunction",
            Operation::ListFunctions => "ListFunctions",
            Operation::DeleteFunction => "DeleteFunction",
        }
    }
}

/// The operation a method and path name, with its path parameter (percent-decoded).
pub fn route(method: &str, path: &str) -> Result<(Operation, Option<String>), Error> {
    let unknown = || Error::UnknownOperation {
        method: method.to_string(),
        path: path.to_string(),
    };
    let rest = path.strip_prefix(PATH_PREFIX).ok_or_else(unknown)?;
    let rest = rest.trim_end_matches('/');
    let segments: Vec<&str> = rest.split('/').skip(1).collect();
    let op = match (method, segments.as_slice()) {
        ("POST", ["event-source-mappings"]) => (Operation::CreateEventSourceMapping, None),
        ("GET", ["event-source-mappings"]) => (Operation::ListEventSourceMappings, None),
        ("GET", ["event-source-mappings", id]) => {
            (Operation::GetEventSourceMapping, Some(decode(id)))
        }
        ("PUT", ["event-source-mappings", id]) => {
            (Operation::UpdateEventSourceMapping, Some(decode(id)))
        }
        ("DELETE", ["event-source-mappings", id]) => {
            (Operation::DeleteEventSourceMapping, Some(decode(id)))
        }
        ("POST", ["functions"]) => (Operation::CreateFunction, None),
        ("GET", ["functions"]) => (Operation::ListFunctions, None),
        ("GET", ["functions", name]) => (Operation::GetFunction, Some(decode(name))),
        ("DELETE", ["functions", name]) => (Operation::DeleteFunction, Some(decode(name))),
        (_, ["functions", _, "invocations"]) => {
            return Err(Error::NotImplemented {
                operation: "Invoke".into(),
            });
        }
        (_, ["functions", ..]) | (_, ["event-source-mappings", ..]) | (_, ["tags", ..]) => {
            return Err(Error::NotImplemented {
                operation: format!("{method} {path}"),
            });
        }
        _ => return Err(unknown()),
    };
    Ok(op)
}

/// The operation and resource of a request, for authorization.
pub fn authorization(
    method: &str,
    path: &str,
    account: &str,
    region: &str,
) -> Option<(&'static str, String)> {
    let (op, param) = route(method, path).ok()?;
    let ctx = RequestContext {
        account: account.to_string(),
        region: region.to_string(),
        request_id: String::new(),
        principal: None,
    };
    let resource = match (op, param) {
        (Operation::GetFunction | Operation::DeleteFunction, Some(name)) => {
            function_arn(&ctx, &name).unwrap_or_else(|_| "*".into())
        }
        (
            Operation::GetEventSourceMapping
            | Operation::UpdateEventSourceMapping
            | Operation::DeleteEventSourceMapping,
            Some(uuid),
        ) => format!("arn:aws:lambda:{region}:{account}:event-source-mapping:{uuid}"),
        _ => "*".into(),
    };
    Some((op.name(), resource))
}

pub(crate) async fn handle(
    inner: &Arc<Inner>,
    ctx: &RequestContext,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
) -> Result<(u16, Value), Error> {
    let (operation, param) = route(method, path)?;
    let param = param.unwrap_or_default();
    let input = || -> Result<Map<String, Value>, Error> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Map::new());
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(Error::InvalidRequestContent(
                "Could not parse request body into json".into(),
            )),
        }
    };
    match operation {
        Operation::CreateEventSourceMapping => create_mapping(inner, ctx, &input()?).await,
        Operation::GetEventSourceMapping => {
            let handle = mapping(inner, &param)?;
            Ok((200, render_mapping(&handle, None)))
        }
        Operation::ListEventSourceMappings => list_mappings(inner, ctx, query),
        Operation::UpdateEventSourceMapping => update_mapping(inner, ctx, &param, &input()?).await,
        Operation::DeleteEventSourceMapping => delete_mapping(inner, &param).await,
        Operation::CreateFunction => create_function(inner, ctx, &input()?).await,
        Operation::GetFunction => get_function(inner, ctx, &param),
        Operation::ListFunctions => list_functions(inner, ctx, query),
        Operation::DeleteFunction => delete_function(inner, ctx, &param).await,
    }
}

// ---- parameters -------------------------------------------------------------------------

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidParameter(message.into())
}

fn get_str(input: &Map<String, Value>, key: &str) -> Result<Option<String>, Error> {
    match input.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Error::InvalidRequestContent(format!(
            "Could not parse request body into json: {key} must be a string"
        ))),
    }
}

fn get_bool(input: &Map<String, Value>, key: &str) -> Result<Option<bool>, Error> {
    match input.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Error::InvalidRequestContent(format!(
            "Could not parse request body into json: {key} must be a boolean"
        ))),
    }
}

/// An integer member checked against its range; `member` is the model's camelCase name.
fn get_int(
    input: &Map<String, Value>,
    key: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, Error> {
    let value = match input.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v.as_i64().ok_or_else(|| {
            Error::InvalidRequestContent(format!(
                "Could not parse request body into json: {key} must be an integer"
            ))
        })?,
    };
    let member = lower_first(key);
    if value < min {
        return Err(invalid(format!(
            "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: Member must have value greater than or equal to {min}"
        )));
    }
    if value > max {
        return Err(invalid(format!(
            "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: Member must have value less than or equal to {max}"
        )));
    }
    Ok(Some(value))
}

fn lower_first(key: &str) -> String {
    let mut chars = key.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes.get(i).copied().unwrap_or(0);
        if byte == b'%'
            && let Some(hex) = segment.get(i + 1..i + 3)
            && let Ok(value) = u8::from_str_radix(hex, 16)
        {
            out.push(value);
            i += 3;
            continue;
        }
        out.push(if byte == b'+' { b' ' } else { byte });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key) == name).then(|| decode(value))
    })
}

fn page_size(query: &str, default: usize) -> Result<usize, Error> {
    match query_param(query, "MaxItems") {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=LIST_ITEMS_MAX).contains(&n) => Ok(n),
            _ => Err(invalid(format!(
                "1 validation error detected: Value '{text}' at 'maxItems' failed to satisfy constraint: Member must have value between 1 and {LIST_ITEMS_MAX}"
            ))),
        },
    }
}

/// A function name, partial ARN or ARN → the function's unqualified ARN.
fn function_arn(ctx: &RequestContext, name: &str) -> Result<String, Error> {
    let bad = || {
        invalid(format!(
            "1 validation error detected: Value '{name}' at 'functionName' failed to satisfy constraint: Member must satisfy regular expression pattern: (arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{{2}}(-gov)?-[a-z]+-\\d{{1}}:)?(\\d{{12}}:)?(function:)?([a-zA-Z0-9-_\\.]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?"
        ))
    };
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.len() <= 140
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    };
    let parts: Vec<&str> = name.split(':').collect();
    let (region, account, function) = match parts.as_slice() {
        [
            "arn",
            _,
            "lambda",
            region,
            account,
            "function",
            function,
            ..,
        ] => (
            region.to_string(),
            account.to_string(),
            function.to_string(),
        ),
        [account, "function", function, ..] => (
            ctx.region.clone(),
            account.to_string(),
            function.to_string(),
        ),
        [function] | [function, _] => (
            ctx.region.clone(),
            ctx.account.clone(),
            function.to_string(),
        ),
        _ => return Err(bad()),
    };
    if !valid_name(&function) || account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    Ok(format!(
        "arn:aws:lambda:{region}:{account}:function:{function}"
    ))
}

/// A Kinesis event source: (stream ARN, consumer ARN if any, account, region).
fn kinesis_source(arn: &str) -> Option<(String, Option<String>, String, String)> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ["arn", _, "kinesis", region, account, resource] = parts.as_slice() else {
        return None;
    };
    let resource = resource.strip_prefix("stream/")?;
    let (stream_name, consumer) = match resource.split_once("/consumer/") {
        Some((stream, _)) => (stream, Some(arn.to_string())),
        None => (resource, None),
    };
    if stream_name.is_empty() || stream_name.contains('/') {
        return None;
    }
    let prefix_len = arn.len() - resource.len();
    let stream_arn = format!("{}{stream_name}", arn.get(..prefix_len)?);
    Some((
        stream_arn,
        consumer,
        account.to_string(),
        region.to_string(),
    ))
}

/// Checks that the stream (or consumer) exists.
async fn check_source(
    inner: &Inner,
    stream_arn: &str,
    consumer_arn: Option<&str>,
    account: &str,
    region: &str,
) -> Result<(), Error> {
    let ctx = RequestContext {
        account: account.to_string(),
        region: region.to_string(),
        request_id: "functions-check-source".into(),
        principal: None,
    };
    let request = match consumer_arn {
        Some(consumer) => k::Request::DescribeStreamConsumer(k::DescribeStreamConsumerInput {
            consumer_arn: Some(consumer.to_string()),
            ..Default::default()
        }),
        None => k::Request::DescribeStreamSummary(k::DescribeStreamSummaryInput {
            stream_arn: Some(stream_arn.to_string()),
            ..Default::default()
        }),
    };
    match inner.streams.handle(&ctx, request).await {
        Ok(_) => Ok(()),
        Err(millrace_streams::Error::StreamNotFound { .. }) => Err(Error::EventSourceNotFound {
            arn: consumer_arn.unwrap_or(stream_arn).to_string(),
        }),
        Err(error) if error.is_internal() => Err(Error::Streams(error.to_string())),
        Err(_) => Err(Error::EventSourceNotFound {
            arn: consumer_arn.unwrap_or(stream_arn).to_string(),
        }),
    }
}

/// A Kinesis stream ARN or an S3 bucket ARN.
fn check_destination(arn: &str) -> Result<(), Error> {
    if crate::destination::Destination::parse(arn).is_some() {
        return Ok(());
    }
    Err(invalid(format!(
        "Unsupported DestinationConfig OnFailure destination {arn}: Millrace sends failure records to a Kinesis stream (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME) or an S3 bucket (arn:aws:s3:::BUCKET)."
    )))
}

/// The settings common to Create and Update, applied onto `record`.
fn apply_settings(record: &mut MappingRecord, input: &Map<String, Value>) -> Result<(), Error> {
    if let Some(n) = get_int(input, "BatchSize", 1, BATCH_SIZE_MAX)? {
        record.batch_size = n as u32;
    }
    if let Some(n) = get_int(input, "MaximumBatchingWindowInSeconds", 0, 300)? {
        record.batching_window_s = n as u32;
    }
    if let Some(n) = get_int(input, "ParallelizationFactor", 1, 10)? {
        record.parallelization_factor = n as u32;
    }
    if let Some(b) = get_bool(input, "BisectBatchOnFunctionError")? {
        record.bisect_on_error = b;
    }
    if let Some(n) = get_int(input, "MaximumRetryAttempts", -1, 10_000)? {
        record.retry_attempts_max = n as i32;
    }
    if let Some(n) = get_int(input, "MaximumRecordAgeInSeconds", -1, 604_800)? {
        if (0..60).contains(&n) {
            return Err(invalid(format!(
                "1 validation error detected: Value '{n}' at 'maximumRecordAgeInSeconds' failed to satisfy constraint: Member must have value greater than or equal to 60"
            )));
        }
        record.record_age_s_max = n as i32;
    }
    if let Some(n) = get_int(input, "TumblingWindowInSeconds", 0, 900)? {
        record.tumbling_window_s = n as u32;
    }
    if let Some(b) = get_bool(input, "Enabled")? {
        record.enabled = b;
    }
    match input.get("FunctionResponseTypes") {
        None | Some(Value::Null) => {}
        Some(Value::Array(types)) => {
            let mut report = false;
            for t in types {
                match t.as_str() {
                    Some("ReportBatchItemFailures") => report = true,
                    _ => {
                        return Err(invalid(format!(
                            "1 validation error detected: Value '{t}' at 'functionResponseTypes' failed to satisfy constraint: Member must satisfy enum value set: [ReportBatchItemFailures]"
                        )));
                    }
                }
            }
            record.report_batch_item_failures = report;
        }
        Some(_) => {
            return Err(Error::InvalidRequestContent(
                "FunctionResponseTypes must be a list".into(),
            ));
        }
    }
    if let Some(criteria) = input.get("FilterCriteria") {
        let filters = criteria
            .get("Filters")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if filters.len() > FILTERS_MAX {
            return Err(invalid(format!(
                "Invalid filter criteria: at most {FILTERS_MAX} filters are allowed."
            )));
        }
        let mut patterns = Vec::with_capacity(filters.len());
        for filter in filters {
            let pattern = filter
                .get("Pattern")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            Filter::parse(&pattern).map_err(invalid)?;
            patterns.push(pattern);
        }
        record.filters = patterns;
    }
    if let Some(config) = input.get("DestinationConfig") {
        if config
            .get("OnSuccess")
            .and_then(|s| s.get("Destination"))
            .and_then(Value::as_str)
            .is_some_and(|d| !d.is_empty())
        {
            return Err(invalid(
                "Unsupported DestinationConfig parameter for given event source mapping type.",
            ));
        }
        let destination = config
            .get("OnFailure")
            .and_then(|f| f.get("Destination"))
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty());
        if let Some(destination) = destination {
            check_destination(destination)?;
        }
        record.on_failure = destination.map(str::to_string);
    }
    Ok(())
}

// ---- event source mappings --------------------------------------------------------------

fn mapping(inner: &Inner, uuid: &str) -> Result<Arc<MappingHandle>, Error> {
    inner
        .mappings
        .lock()
        .get(uuid)
        .cloned()
        .ok_or_else(|| Error::MappingNotFound {
            uuid: uuid.to_string(),
        })
}

async fn create_mapping(
    inner: &Arc<Inner>,
    ctx: &RequestContext,
    input: &Map<String, Value>,
) -> Result<(u16, Value), Error> {
    let name = get_str(input, "FunctionName")?.ok_or_else(|| {
        invalid("1 validation error detected: Value null at 'functionName' failed to satisfy constraint: Member must not be null")
    })?;
    let function_arn = function_arn(ctx, &name)?;
    let source = get_str(input, "EventSourceArn")?
        .ok_or_else(|| invalid("Unrecognized event source, must be kinesis stream ARN."))?;
    let (stream_arn, consumer_arn, account, region) = kinesis_source(&source).ok_or_else(|| {
        invalid(format!(
            "Unsupported event source {source}: Millrace maps Kinesis streams and stream consumers."
        ))
    })?;
    let position = match get_str(input, "StartingPosition")? {
        None => {
            return Err(invalid(
                "1 validation error detected: Value null at 'startingPosition' failed to satisfy constraint: Member must not be null",
            ));
        }
        Some(text) => StartingPosition::parse(&text).ok_or_else(|| {
            invalid(format!(
                "1 validation error detected: Value '{text}' at 'startingPosition' failed to satisfy constraint: Member must satisfy enum value set: [TRIM_HORIZON, LATEST, AT_TIMESTAMP]"
            ))
        })?,
    };
    let timestamp_ms = match input.get("StartingPositionTimestamp") {
        Some(Value::Number(n)) => n.as_f64().map(|secs| (secs * 1000.0) as i64),
        _ => None,
    };
    if position == StartingPosition::AtTimestamp && timestamp_ms.is_none() {
        return Err(invalid(
            "StartingPositionTimestamp must be set when StartingPosition is AT_TIMESTAMP.",
        ));
    }
    let now_ms = inner.clock.now_millis();
    let mut record = MappingRecord {
        uuid: uuid::Uuid::new_v4().to_string(),
        account: ctx.account.clone(),
        region: ctx.region.clone(),
        function_arn: function_arn.clone(),
        event_source_arn: source.clone(),
        stream_arn: stream_arn.clone(),
        starting_position: position,
        starting_position_timestamp_ms: timestamp_ms
            .filter(|_| position == StartingPosition::AtTimestamp),
        batch_size: BATCH_SIZE_DEFAULT,
        batching_window_s: 0,
        parallelization_factor: 1,
        bisect_on_error: false,
        retry_attempts_max: -1,
        record_age_s_max: -1,
        report_batch_item_failures: false,
        tumbling_window_s: 0,
        filters: Vec::new(),
        on_failure: None,
        enabled: true,
        created_ms: now_ms,
        modified_ms: now_ms,
    };
    apply_settings(&mut record, input)?;
    let _control = inner.control.lock().await;
    if inner.function_target(&function_arn).is_none() {
        return Err(Error::FunctionNotFound { arn: function_arn });
    }
    check_source(
        inner,
        &stream_arn,
        consumer_arn.as_deref(),
        &account,
        &region,
    )
    .await?;
    {
        let mappings = inner.mappings.lock();
        if mappings.len() >= inner.config.mappings_max {
            return Err(Error::TooManyMappings {
                mappings_max: inner.config.mappings_max,
            });
        }
        if let Some(existing) = mappings.values().find(|h| {
            let r = h.record.read();
            r.function_arn == function_arn && r.event_source_arn == source
        }) {
            return Err(Error::MappingExists {
                event_source_arn: source,
                function_arn,
                uuid: existing.record.read().uuid.clone(),
            });
        }
    }
    inner.catalog.write(|txn| -> Result<(), Error> {
        txn.put(Table::EventSourceMappings, &record.uuid, &record)?;
        Ok(())
    })?;
    let handle = Arc::new(MappingHandle::new(record.clone()));
    inner
        .mappings
        .lock()
        .insert(record.uuid.clone(), handle.clone());
    inner.spawn(&handle);
    Ok((202, render_mapping(&handle, Some("Creating"))))
}

async fn update_mapping(
    inner: &Arc<Inner>,
    ctx: &RequestContext,
    uuid: &str,
    input: &Map<String, Value>,
) -> Result<(u16, Value), Error> {
    let _control = inner.control.lock().await;
    let handle = mapping(inner, uuid)?;
    if *handle.deleting.lock() {
        return Err(Error::MappingDeleting {
            uuid: uuid.to_string(),
        });
    }
    let mut record = (**handle.record.read()).clone();
    let was_enabled = record.enabled;
    if let Some(name) = get_str(input, "FunctionName")? {
        let arn = function_arn(ctx, &name)?;
        if inner.function_target(&arn).is_none() {
            return Err(Error::FunctionNotFound { arn });
        }
        record.function_arn = arn;
    }
    apply_settings(&mut record, input)?;
    record.modified_ms = inner.clock.now_millis();
    inner.catalog.write(|txn| -> Result<(), Error> {
        txn.put(Table::EventSourceMappings, &record.uuid, &record)?;
        Ok(())
    })?;
    let enabled = record.enabled;
    *handle.record.write() = Arc::new(record);
    // The running task stops; a new one (with the new settings) starts after it.
    if let Some(stop) = handle.stop.lock().take() {
        stop.cancel();
    }
    inner.spawn(&handle);
    let state = match (was_enabled, enabled) {
        (true, false) => "Disabling",
        (false, true) => "Enabling",
        _ => "Updating",
    };
    Ok((202, render_mapping(&handle, Some(state))))
}

async fn delete_mapping(inner: &Arc<Inner>, uuid: &str) -> Result<(u16, Value), Error> {
    let _control = inner.control.lock().await;
    let handle = mapping(inner, uuid)?;
    {
        let mut deleting = handle.deleting.lock();
        if *deleting {
            return Err(Error::MappingDeleting {
                uuid: uuid.to_string(),
            });
        }
        *deleting = true;
    }
    if let Some(stop) = handle.stop.lock().take() {
        stop.cancel();
    }
    let answer = render_mapping(&handle, Some("Deleting"));
    // The record goes once the task has stopped (its last checkpoint written or abandoned).
    let finish = {
        let inner = inner.clone();
        let handle = handle.clone();
        let uuid = uuid.to_string();
        async move {
            let _lease = handle.lease.lock().await;
            let prefix = format!("{uuid}/");
            let keys: Vec<String> = inner
                .catalog
                .load_all::<crate::model::ShardCheckpoint>(Table::MappingCheckpoints)
                .map(|all| {
                    all.into_iter()
                        .map(|(key, _)| key)
                        .filter(|key| key.starts_with(&prefix))
                        .collect()
                })
                .unwrap_or_default();
            let result = inner.catalog.write(|txn| -> Result<(), Error> {
                txn.delete(Table::EventSourceMappings, &uuid)?;
                for key in &keys {
                    txn.delete(Table::MappingCheckpoints, key)?;
                }
                Ok(())
            });
            if let Err(error) = result {
                tracing::error!(mapping = %uuid, %error, "cannot delete the event source mapping");
                *handle.deleting.lock() = false;
                return;
            }
            inner.mappings.lock().remove(&uuid);
        }
    };
    let runtime = inner.runtime.lock().clone();
    match runtime {
        Some((tracker, _)) => {
            tracker.spawn(finish);
        }
        None => finish.await,
    }
    Ok((202, answer))
}

fn list_mappings(inner: &Inner, ctx: &RequestContext, query: &str) -> Result<(u16, Value), Error> {
    let source = query_param(query, "EventSourceArn");
    let function = match query_param(query, "FunctionName") {
        Some(name) => Some(function_arn(ctx, &name)?),
        None => None,
    };
    let limit = page_size(query, LIST_MAPPINGS_DEFAULT)?;
    let start: usize = match query_param(query, "Marker") {
        Some(marker) => marker
            .parse()
            .map_err(|_| invalid(format!("Invalid marker: {marker}")))?,
        None => 0,
    };
    let mut handles: Vec<Arc<MappingHandle>> = inner
        .mappings
        .lock()
        .values()
        .filter(|h| {
            let r = h.record.read();
            r.account == ctx.account
                && source.as_ref().is_none_or(|s| *s == r.event_source_arn)
                && function.as_ref().is_none_or(|f| *f == r.function_arn)
        })
        .cloned()
        .collect();
    handles.sort_by_key(|h| {
        let r = h.record.read();
        (r.created_ms, r.uuid.clone())
    });
    let page: Vec<Value> = handles
        .iter()
        .skip(start)
        .take(limit)
        .map(|h| render_mapping(h, None))
        .collect();
    let mut answer = json!({ "EventSourceMappings": page });
    if start + limit < handles.len()
        && let Some(map) = answer.as_object_mut()
    {
        map.insert(
            "NextMarker".into(),
            Value::String((start + limit).to_string()),
        );
    }
    Ok((200, answer))
}

/// EventSourceMappingConfiguration; `state` overrides the current state (the transitional
/// state a control operation answers with).
pub(crate) fn render_mapping(handle: &MappingHandle, state: Option<&str>) -> Value {
    let r = handle.record.read().clone();
    let current = if *handle.deleting.lock() {
        "Deleting"
    } else if r.enabled {
        "Enabled"
    } else {
        "Disabled"
    };
    let mut answer = json!({
        "UUID": r.uuid,
        "StartingPosition": r.starting_position.name(),
        "BatchSize": r.batch_size,
        "MaximumBatchingWindowInSeconds": r.batching_window_s,
        "ParallelizationFactor": r.parallelization_factor,
        "EventSourceArn": r.event_source_arn,
        "FunctionArn": r.function_arn,
        "LastModified": r.modified_ms as f64 / 1000.0,
        "LastProcessingResult": *handle.last_result.lock(),
        "State": state.unwrap_or(current),
        "StateTransitionReason": "User action",
        "DestinationConfig": match &r.on_failure {
            Some(d) => json!({"OnFailure": {"Destination": d}}),
            None => json!({"OnFailure": {}}),
        },
        "MaximumRecordAgeInSeconds": r.record_age_s_max,
        "BisectBatchOnFunctionError": r.bisect_on_error,
        "MaximumRetryAttempts": r.retry_attempts_max,
        "FunctionResponseTypes": if r.report_batch_item_failures {
            vec!["ReportBatchItemFailures"]
        } else {
            Vec::new()
        },
        "EventSourceMappingArn": format!(
            "arn:aws:lambda:{}:{}:event-source-mapping:{}",
            r.region, r.account, r.uuid
        ),
    });
    if let Some(map) = answer.as_object_mut() {
        if let Some(ms) = r.starting_position_timestamp_ms {
            map.insert(
                "StartingPositionTimestamp".into(),
                json!(ms as f64 / 1000.0),
            );
        }
        if r.tumbling_window_s > 0 {
            map.insert("TumblingWindowInSeconds".into(), json!(r.tumbling_window_s));
        }
        if !r.filters.is_empty() {
            let filters: Vec<Value> = r.filters.iter().map(|p| json!({"Pattern": p})).collect();
            map.insert("FilterCriteria".into(), json!({ "Filters": filters }));
        }
    }
    answer
}

// ---- functions --------------------------------------------------------------------------

async fn create_function(
    inner: &Arc<Inner>,
    ctx: &RequestContext,
    input: &Map<String, Value>,
) -> Result<(u16, Value), Error> {
    let missing = |member: &str| {
        invalid(format!(
            "1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
        ))
    };
    let name = get_str(input, "FunctionName")?.ok_or_else(|| missing("functionName"))?;
    let arn = function_arn(ctx, &name)?;
    let role = get_str(input, "Role")?.ok_or_else(|| missing("role"))?;
    let code = input.get("Code").ok_or_else(|| missing("code"))?;
    let url = code
        .get("ImageUri")
        .and_then(Value::as_str)
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .ok_or_else(|| {
            invalid("Millrace runs functions as HTTP services: give the function's URL as Code.ImageUri (http:// or https://).")
        })?;
    let record = FunctionRecord {
        name: arn.rsplit(':').next().unwrap_or_default().to_string(),
        arn: arn.clone(),
        url: url.to_string(),
        role,
        runtime: get_str(input, "Runtime")?,
        handler: get_str(input, "Handler")?,
        description: get_str(input, "Description")?.unwrap_or_default(),
        timeout_s: get_int(input, "Timeout", 1, 900)?.unwrap_or(3) as u32,
        memory_mb: get_int(input, "MemorySize", 128, 10_240)?.unwrap_or(128) as u32,
        modified_ms: inner.clock.now_millis(),
    };
    let key = function_key_of_arn(&arn).ok_or_else(|| invalid("Invalid function name"))?;
    let _control = inner.control.lock().await;
    if inner.function_target(&arn).is_some() {
        return Err(Error::FunctionExists { arn });
    }
    inner.catalog.write(|txn| -> Result<(), Error> {
        txn.put(Table::Functions, &key, &record)?;
        Ok(())
    })?;
    Ok((201, render_function(&record)))
}

fn render_function(f: &FunctionRecord) -> Value {
    let mut answer = json!({
        "FunctionName": f.name,
        "FunctionArn": f.arn,
        "Role": f.role,
        "CodeSize": 0,
        "Description": f.description,
        "Timeout": f.timeout_s,
        "MemorySize": f.memory_mb,
        "LastModified": lambda_time(f.modified_ms),
        "CodeSha256": "",
        "Version": "$LATEST",
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Image",
        "Architectures": ["x86_64"],
    });
    if let Some(map) = answer.as_object_mut() {
        if let Some(runtime) = &f.runtime {
            map.insert("Runtime".into(), json!(runtime));
        }
        if let Some(handler) = &f.handler {
            map.insert("Handler".into(), json!(handler));
        }
    }
    answer
}

/// Lambda's `LastModified` format: `2024-01-01T00:00:00.000+0000`.
fn lambda_time(ms: i64) -> String {
    let iso = crate::invoke::iso8601(ms);
    format!("{}+0000", iso.trim_end_matches('Z'))
}

/// Every function visible to the caller: declared ones of its account and region, then
/// created ones.
fn functions_of(inner: &Inner, ctx: &RequestContext) -> Result<Vec<FunctionRecord>, Error> {
    let mut out: Vec<FunctionRecord> = inner
        .declared
        .iter()
        .filter(|(arn, _)| {
            let parts: Vec<&str> = arn.split(':').collect();
            parts.get(3) == Some(&ctx.region.as_str())
                && parts.get(4) == Some(&ctx.account.as_str())
        })
        .map(|(arn, url)| declared_record(arn, url, &ctx.account))
        .collect();
    let prefix = format!("{}/{}/", ctx.account, ctx.region);
    for (key, record) in inner.catalog.load_all::<FunctionRecord>(Table::Functions)? {
        if key.starts_with(&prefix) {
            out.push(record);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn declared_record(arn: &str, url: &str, account: &str) -> FunctionRecord {
    FunctionRecord {
        name: arn.rsplit(':').next().unwrap_or_default().to_string(),
        arn: arn.to_string(),
        url: url.to_string(),
        role: format!("arn:aws:iam::{account}:{DECLARED_ROLE}"),
        runtime: None,
        handler: None,
        description: "Declared in the Millrace config file".into(),
        timeout_s: 900,
        memory_mb: 128,
        modified_ms: 0,
    }
}

fn find_function(
    inner: &Inner,
    ctx: &RequestContext,
    name: &str,
) -> Result<(FunctionRecord, bool), Error> {
    let arn = function_arn(ctx, name)?;
    if let Some(url) = inner.declared.get(strip_qualifier(&arn)) {
        return Ok((declared_record(&arn, url, &ctx.account), true));
    }
    let key =
        function_key_of_arn(&arn).ok_or_else(|| Error::FunctionNotFound { arn: arn.clone() })?;
    match inner
        .catalog
        .get::<FunctionRecord>(Table::Functions, &key)?
    {
        Some(record) => Ok((record, false)),
        None => Err(Error::FunctionNotFound { arn }),
    }
}

fn get_function(inner: &Inner, ctx: &RequestContext, name: &str) -> Result<(u16, Value), Error> {
    let (record, _) = find_function(inner, ctx, name)?;
    Ok((
        200,
        json!({
            "Configuration": render_function(&record),
            "Code": {"RepositoryType": "HTTP", "ImageUri": record.url, "Location": record.url},
        }),
    ))
}

fn list_functions(inner: &Inner, ctx: &RequestContext, query: &str) -> Result<(u16, Value), Error> {
    let limit = page_size(query, LIST_FUNCTIONS_DEFAULT)?;
    let start: usize = match query_param(query, "Marker") {
        Some(marker) => marker
            .parse()
            .map_err(|_| invalid(format!("Invalid marker: {marker}")))?,
        None => 0,
    };
    let all = functions_of(inner, ctx)?;
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(render_function)
        .collect();
    let mut answer = json!({ "Functions": page });
    if start + limit < all.len()
        && let Some(map) = answer.as_object_mut()
    {
        map.insert(
            "NextMarker".into(),
            Value::String((start + limit).to_string()),
        );
    }
    Ok((200, answer))
}

async fn delete_function(
    inner: &Arc<Inner>,
    ctx: &RequestContext,
    name: &str,
) -> Result<(u16, Value), Error> {
    let _control = inner.control.lock().await;
    let (record, declared) = find_function(inner, ctx, name)?;
    if declared {
        return Err(Error::FunctionDeclared { arn: record.arn });
    }
    let key = function_key_of_arn(&record.arn).ok_or_else(|| Error::FunctionNotFound {
        arn: record.arn.clone(),
    })?;
    // As on AWS, mappings of a deleted function stay; their invocations fail until a
    // function of that name exists again.
    inner.catalog.write(|txn| -> Result<(), Error> {
        txn.delete(Table::Functions, &key)?;
        Ok(())
    })?;
    Ok((204, Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RequestContext {
        RequestContext {
            account: "000000000000".into(),
            region: "us-east-1".into(),
            request_id: "t".into(),
            principal: None,
        }
    }

    #[test]
    fn routes() {
        let op = |m: &str, p: &str| route(m, p).map(|(op, param)| (op.name(), param)).ok();
        assert_eq!(
            op("POST", "/2015-03-31/event-source-mappings/"),
            Some(("CreateEventSourceMapping", None))
        );
        assert_eq!(
            op("GET", "/2015-03-31/event-source-mappings/abc"),
            Some(("GetEventSourceMapping", Some("abc".into())))
        );
        assert_eq!(
            op(
                "GET",
                "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Af"
            ),
            Some((
                "GetFunction",
                Some("arn:aws:lambda:us-east-1:000000000000:function:f".into())
            ))
        );
        assert!(matches!(
            route("POST", "/2015-03-31/functions/f/invocations"),
            Err(Error::NotImplemented { .. })
        ));
        assert!(matches!(
            route("GET", "/2015-03-31/layers"),
            Err(Error::UnknownOperation { .. })
        ));
    }

    #[test]
    fn function_names() {
        let expected = "arn:aws:lambda:us-east-1:000000000000:function:f";
        for name in [
            "f",
            "f:$LATEST",
            "000000000000:function:f",
            "arn:aws:lambda:us-east-1:000000000000:function:f",
            "arn:aws:lambda:us-east-1:000000000000:function:f:prod",
        ] {
            assert_eq!(
                function_arn(&ctx(), name).ok().as_deref(),
                Some(expected),
                "{name}"
            );
        }
        assert!(function_arn(&ctx(), "a/b").is_err());
    }

    #[test]
    fn sources() {
        let (stream, consumer, account, region) =
            kinesis_source("arn:aws:kinesis:us-east-1:000000000000:stream/s/consumer/c:1")
                .expect("a consumer ARN");
        assert_eq!(stream, "arn:aws:kinesis:us-east-1:000000000000:stream/s");
        assert!(consumer.is_some());
        assert_eq!(
            (account.as_str(), region.as_str()),
            ("000000000000", "us-east-1")
        );
        assert!(kinesis_source("arn:aws:sqs:us-east-1:000000000000:q").is_none());
    }
}
