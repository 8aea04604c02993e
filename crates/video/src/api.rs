//! The control plane (`kinesisvideo`): streams, data retention, data endpoints and tags.
//! Streams are ACTIVE as soon as they are created (there is nothing to provision).

use serde_json::{Value, json};

use crate::error::VideoError;
use crate::{Answer, Call, STREAMS_MAX, StreamMeta, TAGS_MAX, Video, open_data, seconds};

const DATA_APIS: &[&str] = &[
    "PUT_MEDIA",
    "GET_MEDIA",
    "LIST_FRAGMENTS",
    "GET_MEDIA_FOR_FRAGMENT_LIST",
    "GET_HLS_STREAMING_SESSION_URL",
    "GET_DASH_STREAMING_SESSION_URL",
    "GET_CLIP",
    "GET_IMAGES",
];
const RETENTION_HOURS_MAX: u64 = 87_600;

pub(crate) fn str_field<'a>(body: &'a Value, name: &str) -> Result<Option<&'a str>, VideoError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(VideoError::invalid(format!("{name} must be a string."))),
    }
}

pub(crate) fn int_field(body: &Value, name: &str) -> Result<Option<i64>, VideoError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| VideoError::invalid(format!("{name} must be an integer."))),
    }
}

fn check_name(field: &str, value: &str) -> Result<(), VideoError> {
    let valid = !value.is_empty()
        && value.len() <= 256
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(VideoError::invalid(format!(
            "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+ and have length between 1 and 256"
        )))
    }
}

fn tags_of(value: Option<&Value>) -> Result<Vec<(String, String)>, VideoError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let mut tags = Vec::new();
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                let value = value
                    .as_str()
                    .ok_or_else(|| VideoError::invalid("Tag values must be strings."))?;
                tags.push((key.clone(), value.to_string()));
            }
        }
        Value::Array(list) => {
            for tag in list {
                let key = tag.get("Key").and_then(Value::as_str);
                let value = tag.get("Value").and_then(Value::as_str).unwrap_or("");
                let key = key.ok_or_else(|| VideoError::invalid("Every tag needs a Key."))?;
                tags.push((key.to_string(), value.to_string()));
            }
        }
        _ => return Err(VideoError::invalid("Tags must be a map.")),
    }
    for (key, value) in &tags {
        if key.is_empty() || key.len() > 128 || value.len() > 256 {
            return Err(VideoError::invalid(
                "Tag keys have 1 to 128 characters, values at most 256.",
            ));
        }
    }
    Ok(tags)
}

fn new_version() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..20].to_string()
}

impl Video {
    /// The stream a request names by `StreamName` or `StreamARN` (ARN first).
    pub(crate) fn find_stream(&self, call: &Call, body: &Value) -> Result<StreamMeta, VideoError> {
        let name = str_field(body, "StreamName")?;
        let arn = str_field(body, "StreamARN")?.or(str_field(body, "ResourceARN")?);
        self.find_stream_by(call, name, arn)
    }

    pub(crate) fn find_stream_by(
        &self,
        call: &Call,
        name: Option<&str>,
        arn: Option<&str>,
    ) -> Result<StreamMeta, VideoError> {
        let streams = self.inner.streams.lock();
        let found = match (arn, name) {
            (Some(arn), _) => streams.iter().find(|s| s.arn == arn),
            (None, Some(name)) => streams
                .iter()
                .find(|s| s.account == call.account && s.region == call.region && s.name == name),
            (None, None) => {
                return Err(VideoError::invalid(
                    "Either StreamName or StreamARN must be given.",
                ));
            }
        };
        found.cloned().ok_or_else(|| VideoError::StreamNotFound {
            name: arn.or(name).unwrap_or("").to_string(),
        })
    }

    fn describe(&self, stream: &StreamMeta) -> Value {
        let mut info = json!({
            "StreamName": stream.name,
            "StreamARN": stream.arn,
            "Version": stream.version,
            "Status": "ACTIVE",
            "CreationTime": seconds(stream.creation_ms),
            "DataRetentionInHours": stream.retention_hours,
        });
        for (field, value) in [
            ("DeviceName", &stream.device_name),
            ("MediaType", &stream.media_type),
            ("KmsKeyId", &stream.kms_key_id),
        ] {
            if let (Some(value), Some(map)) = (value, info.as_object_mut()) {
                map.insert(field.to_string(), json!(value));
            }
        }
        info
    }

    pub(crate) fn create_stream(&self, call: &Call, body: &Value) -> Result<Answer, VideoError> {
        let name = str_field(body, "StreamName")?
            .ok_or_else(|| VideoError::invalid("StreamName is required."))?;
        check_name("streamName", name)?;
        let retention = int_field(body, "DataRetentionInHours")?.unwrap_or(0);
        if retention < 0 || retention as u64 > RETENTION_HOURS_MAX {
            return Err(VideoError::invalid(format!(
                "DataRetentionInHours must be between 0 and {RETENTION_HOURS_MAX}."
            )));
        }
        let tags = tags_of(body.get("Tags"))?;
        if tags.len() > TAGS_MAX {
            return Err(VideoError::TagsPerResourceExceeded { max: TAGS_MAX });
        }
        let now = self.now_ms();
        let mut streams = self.inner.streams.lock();
        if streams
            .iter()
            .any(|s| s.account == call.account && s.region == call.region && s.name == name)
        {
            return Err(VideoError::StreamExists { name: name.into() });
        }
        if streams
            .iter()
            .filter(|s| s.account == call.account && s.region == call.region)
            .count()
            >= STREAMS_MAX
        {
            return Err(VideoError::AccountStreamLimitExceeded { max: STREAMS_MAX });
        }
        // Unique and increasing: creation time with room for 100 streams a millisecond.
        let mut uid = u64::try_from(now).unwrap_or(0) * 100;
        while streams.iter().any(|s| s.uid >= uid) {
            uid += 1;
        }
        let meta = StreamMeta {
            account: call.account.clone(),
            region: call.region.clone(),
            name: name.to_string(),
            arn: format!(
                "arn:aws:kinesisvideo:{}:{}:stream/{name}/{now}",
                call.region, call.account
            ),
            uid,
            device_name: str_field(body, "DeviceName")?.map(String::from),
            media_type: str_field(body, "MediaType")?.map(String::from),
            kms_key_id: str_field(body, "KmsKeyId")?.map(String::from),
            version: new_version(),
            creation_ms: now,
            retention_hours: retention as u32,
            tags: tags.into_iter().collect(),
        };
        let data = open_data(&self.inner.config.dir, uid)?;
        self.inner
            .data
            .lock()
            .insert(uid, std::sync::Arc::new(data));
        streams.push(meta.clone());
        if let Err(error) = self.save(&streams) {
            streams.pop();
            return Err(error);
        }
        Ok(Answer::json(&json!({"StreamARN": meta.arn})))
    }

    pub(crate) fn describe_stream(&self, call: &Call, body: &Value) -> Result<Answer, VideoError> {
        let stream = self.find_stream(call, body)?;
        Ok(Answer::json(&json!({"StreamInfo": self.describe(&stream)})))
    }

    pub(crate) fn list_streams(&self, call: &Call, body: &Value) -> Result<Answer, VideoError> {
        let max = int_field(body, "MaxResults")?.unwrap_or(10_000);
        if !(1..=10_000).contains(&max) {
            return Err(VideoError::invalid(
                "MaxResults must be between 1 and 10000.",
            ));
        }
        let prefix = match body.get("StreamNameCondition") {
            Some(condition) => {
                let operator = str_field(condition, "ComparisonOperator")?;
                if operator.is_some_and(|o| o != "BEGINS_WITH") {
                    return Err(VideoError::invalid(
                        "ComparisonOperator must be BEGINS_WITH.",
                    ));
                }
                str_field(condition, "ComparisonValue")?.unwrap_or("")
            }
            None => "",
        };
        let after = str_field(body, "NextToken")?.unwrap_or("");
        let streams = self.inner.streams.lock();
        let mut matching: Vec<&StreamMeta> = streams
            .iter()
            .filter(|s| s.account == call.account && s.region == call.region)
            .filter(|s| s.name.starts_with(prefix) && s.name.as_str() > after)
            .collect();
        matching.sort_by(|a, b| a.name.cmp(&b.name));
        let page: Vec<Value> = matching
            .iter()
            .take(max as usize)
            .map(|s| self.describe(s))
            .collect();
        let mut answer = json!({"StreamInfoList": page});
        if matching.len() > max as usize
            && let (Some(last), Some(map)) =
                (matching.get(max as usize - 1), answer.as_object_mut())
        {
            map.insert("NextToken".into(), json!(last.name));
        }
        Ok(Answer::json(&answer))
    }

    fn check_version(stream: &StreamMeta, body: &Value, required: bool) -> Result<(), VideoError> {
        match str_field(body, "CurrentVersion")? {
            Some(given) if given != stream.version => Err(VideoError::VersionMismatch {
                given: given.to_string(),
            }),
            None if required => Err(VideoError::invalid("CurrentVersion is required.")),
            _ => Ok(()),
        }
    }

    /// Applies `change` to the stream and saves the catalog.
    fn modify(
        &self,
        arn: &str,
        change: impl FnOnce(&mut StreamMeta) -> Result<(), VideoError>,
    ) -> Result<(), VideoError> {
        let mut streams = self.inner.streams.lock();
        let Some(at) = streams.iter().position(|s| s.arn == arn) else {
            return Err(VideoError::StreamNotFound { name: arn.into() });
        };
        let Some(stream) = streams.get_mut(at) else {
            return Err(VideoError::StreamNotFound { name: arn.into() });
        };
        let before = stream.clone();
        change(stream)?;
        if let Err(error) = self.save(&streams) {
            if let Some(stream) = streams.get_mut(at) {
                *stream = before;
            }
            return Err(error);
        }
        Ok(())
    }

    pub(crate) fn delete_stream(&self, call: &Call, body: &Value) -> Result<Answer, VideoError> {
        let stream = self.find_stream(call, body)?;
        Self::check_version(&stream, body, false)?;
        {
            let mut streams = self.inner.streams.lock();
            let before = streams.clone();
            streams.retain(|s| s.arn != stream.arn);
            if let Err(error) = self.save(&streams) {
                *streams = before;
                return Err(error);
            }
        }
        self.inner.data.lock().remove(&stream.uid);
        self.inner
            .sessions
            .lock()
            .retain(|_, session| session.uid != stream.uid);
        if let Err(error) =
            std::fs::remove_dir_all(crate::stream_dir(&self.inner.config.dir, stream.uid))
        {
            tracing::warn!(%error, stream = %stream.arn, "cannot remove a deleted video stream's files");
        }
        Ok(Answer::json(&json!({})))
    }

    pub(crate) fn update_stream(&self, call: &Call, body: &Value) -> Result<Answer, VideoError> {
        let stream = self.find_stream(call, body)?;
        Self::check_version(&stream, body, true)?;
        let device = str_field(body, "DeviceName")?.map(String::from);
        let media = str_field(body, "MediaType")?.map(String::from);
        self.modify(&stream.arn, |s| {
            if device.is_some() {
                s.device_name = device;
            }
            if media.is_some() {
                s.media_type = media;
            }
            s.version = new_version();
            Ok(())
        })?;
        Ok(Answer::json(&json!({})))
    }

    pub(crate) fn update_data_retention(
        &self,
        call: &Call,
        body: &Value,
    ) -> Result<Answer, VideoError> {
        let stream = self.find_stream(call, body)?;
        Self::check_version(&stream, body, true)?;
        let operation = str_field(body, "Operation")?
            .ok_or_else(|| VideoError::invalid("Operation is required."))?;
        let change = int_field(body, "DataRetentionChangeInHours")?
            .ok_or_else(|| VideoError::invalid("DataRetentionChangeInHours is required."))?;
        if change < 1 {
            return Err(VideoError::invalid(
                "DataRetentionChangeInHours must be at least 1.",
            ));
        }
        let current = i64::from(stream.retention_hours);
        let next = match operation {
            "INCREASE_DATA_RETENTION" => current + change,
            "DECREASE_DATA_RETENTION" => current - change,
            _ => {
                return Err(VideoError::invalid(
                    "Operation must be INCREASE_DATA_RETENTION or DECREASE_DATA_RETENTION.",
                ));
            }
        };
        if next < 0 || next as u64 > RETENTION_HOURS_MAX {
            return Err(VideoError::invalid(format!(
                "The data retention would be {next} hours; it must be between 0 and {RETENTION_HOURS_MAX}."
            )));
        }
        self.modify(&stream.arn, |s| {
            s.retention_hours = next as u32;
            s.version = new_version();
            Ok(())
        })?;
        Ok(Answer::json(&json!({})))
    }

    pub(crate) fn get_data_endpoint(
        &self,
        call: &Call,
        body: &Value,
    ) -> Result<Answer, VideoError> {
        self.find_stream(call, body)?;
        let api = str_field(body, "APIName")?
            .ok_or_else(|| VideoError::invalid("APIName is required."))?;
        if !DATA_APIS.contains(&api) {
            return Err(VideoError::invalid(format!(
                "1 validation error detected: Value '{api}' at 'aPIName' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
                DATA_APIS.join(", ")
            )));
        }
        Ok(Answer::json(&json!({"DataEndpoint": call.endpoint})))
    }

    pub(crate) fn tag_stream(&self, call: &Call, body: &Value) -> Result<Answer, VideoError> {
        let stream = self.find_stream(call, body)?;
        let tags = tags_of(body.get("Tags"))?;
        if tags.is_empty() {
            return Err(VideoError::invalid("Tags must not be empty."));
        }
        self.modify(&stream.arn, |s| {
            let mut next = s.tags.clone();
            next.extend(tags);
            if next.len() > TAGS_MAX {
                return Err(VideoError::TagsPerResourceExceeded { max: TAGS_MAX });
            }
            s.tags = next;
            Ok(())
        })?;
        Ok(Answer::json(&json!({})))
    }

    pub(crate) fn untag_stream(&self, call: &Call, body: &Value) -> Result<Answer, VideoError> {
        let stream = self.find_stream(call, body)?;
        let keys: Vec<String> = body
            .get("TagKeyList")
            .and_then(Value::as_array)
            .ok_or_else(|| VideoError::invalid("TagKeyList is required."))?
            .iter()
            .filter_map(|k| k.as_str().map(String::from))
            .collect();
        self.modify(&stream.arn, |s| {
            for key in &keys {
                s.tags.remove(key);
            }
            Ok(())
        })?;
        Ok(Answer::json(&json!({})))
    }

    pub(crate) fn list_tags_for_stream(
        &self,
        call: &Call,
        body: &Value,
    ) -> Result<Answer, VideoError> {
        let stream = self.find_stream(call, body)?;
        Ok(Answer::json(&json!({"Tags": stream.tags})))
    }
}
