//! The DynamoDB_20120810 operations of the subset, on JSON request bodies.
//!
//! Control plane: CreateTable (on-demand and provisioned), DescribeTable, UpdateTable
//! (billing, throughput, global secondary indexes created and deleted, deletion protection),
//! DeleteTable, ListTables, UpdateTimeToLive/DescribeTimeToLive (stored, not enforced),
//! UpdateContinuousBackups/DescribeContinuousBackups (stored), TagResource, UntagResource,
//! ListTagsOfResource. Tables and indexes are ACTIVE as soon as they are created.
//! Data plane: GetItem, PutItem, UpdateItem, DeleteItem (conditions, return values),
//! BatchGetItem, BatchWriteItem, Query and Scan (tables and global secondary indexes, paging,
//! filters, projections, COUNT). No streams, local secondary indexes, PartiQL or backups.
//!
//! Item keys in redb: `[u32 length of the partition key bytes][partition key bytes][sort key
//! bytes]`, so all items of a partition are one key range. Query sorts a partition's items
//! in memory by the sort key (numbers do not order as bytes); index queries and scans read
//! the whole table, which is fine for the lease-table sizes this subset is for.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde_json::{Map, Value, json};

use crate::expr::{self, Condition, Placeholders, Step};
use crate::value::{self, Item};
use crate::{Context, Error, TABLES, Tables};

/// Items one Scan or Query page evaluates at most by size, as DynamoDB's 1 MB.
const PAGE_BYTES_MAX: usize = 1024 * 1024;
/// Tables per database, a bound on metadata (DynamoDB's default quota is 2,500).
const TABLES_MAX: usize = 2500;
/// Global secondary indexes per table, as DynamoDB's.
const INDEXES_MAX: usize = 20;
/// Items in one BatchWriteItem and keys in one BatchGetItem, as DynamoDB's.
const BATCH_WRITE_ITEMS_MAX: usize = 25;
const BATCH_GET_KEYS_MAX: usize = 100;
/// ListTables page size, as DynamoDB's.
const LIST_TABLES_MAX: usize = 100;

pub(crate) fn items_definition(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

pub(crate) fn items_table_name(name: &str) -> String {
    format!("items/{name}")
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub(crate) fn handle(
    tables: &Tables,
    ctx: &Context,
    operation: &str,
    request: &Map<String, Value>,
) -> Result<Value, Error> {
    match operation {
        "CreateTable" => create_table(tables, ctx, request),
        "DescribeTable" => describe_table(tables, request),
        "UpdateTable" => update_table(tables, request),
        "DeleteTable" => delete_table(tables, request),
        "ListTables" => list_tables(tables, request),
        "UpdateTimeToLive" => update_ttl(tables, request),
        "DescribeTimeToLive" => describe_ttl(tables, request),
        "UpdateContinuousBackups" => update_backups(tables, request),
        "DescribeContinuousBackups" => describe_backups(tables, request),
        "TagResource" => tag_resource(tables, request, true),
        "UntagResource" => tag_resource(tables, request, false),
        "ListTagsOfResource" => list_tags(tables, request),
        "DescribeEndpoints" => {
            Ok(json!({"Endpoints": [{"Address": "localhost", "CachePeriodInMinutes": 1440}]}))
        }
        "DescribeLimits" => Ok(json!({
            "AccountMaxReadCapacityUnits": 80000, "AccountMaxWriteCapacityUnits": 80000,
            "TableMaxReadCapacityUnits": 40000, "TableMaxWriteCapacityUnits": 40000})),
        "GetItem" => get_item(tables, request),
        "PutItem" => put_item(tables, request),
        "UpdateItem" => update_item(tables, request),
        "DeleteItem" => delete_item(tables, request),
        "BatchGetItem" => batch_get(tables, request),
        "BatchWriteItem" => batch_write(tables, request),
        "Query" => query(tables, request, true),
        "Scan" => query(tables, request, false),
        other => Err(Error::UnknownOperation(other.to_string())),
    }
}

// ---- request helpers ----

fn string<'a>(request: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, Error> {
    match request.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::Serialization(format!(
            "Unexpected value type for {key}"
        ))),
    }
}

fn table_name(request: &Map<String, Value>) -> Result<&str, Error> {
    let Some(name) = string(request, "TableName")? else {
        return Err(Error::validation(
            "1 validation error detected: Value null at 'tableName' failed to satisfy constraint: Member must not be null",
        ));
    };
    check_table_name(name)?;
    Ok(name)
}

fn check_table_name(name: &str) -> Result<(), Error> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !(3..=255).contains(&name.len()) || !ok_chars {
        let mut errors = Vec::new();
        if !ok_chars {
            errors.push(format!(
                "Value '{name}' at 'tableName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
            ));
        }
        if !(3..=255).contains(&name.len()) {
            errors.push(format!(
                "Value '{name}' at 'tableName' failed to satisfy constraint: Member must have length {}",
                if name.len() < 3 { "greater than or equal to 3" } else { "less than or equal to 255" }
            ));
        }
        return Err(Error::validation(format!(
            "{} validation error{} detected: {}",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            errors.join("; ")
        )));
    }
    Ok(())
}

fn object<'a>(
    request: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, Error> {
    match request.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(Error::Serialization(format!(
            "Unexpected value type for {key}"
        ))),
    }
}

fn not_found(name: &str) -> Error {
    let _ = name;
    Error::ResourceNotFound("Requested resource not found".to_string())
}

fn not_found_table(name: &str) -> Error {
    Error::ResourceNotFound(format!(
        "Requested resource not found: Table: {name} not found"
    ))
}

// ---- schemas ----

#[derive(Debug, Clone)]
struct KeyAttr {
    name: String,
    kind: String,
}

#[derive(Debug, Clone)]
struct Schema {
    hash: KeyAttr,
    range: Option<KeyAttr>,
}

impl Schema {
    fn from_key_schema(key_schema: &Value, definitions: &Value) -> Result<Schema, Error> {
        let kind_of = |name: &str| -> Result<String, Error> {
            definitions
                .as_array()
                .into_iter()
                .flatten()
                .find(|d| d.get("AttributeName").and_then(Value::as_str) == Some(name))
                .and_then(|d| d.get("AttributeType").and_then(Value::as_str))
                .map(str::to_string)
                .ok_or_else(|| {
                    Error::validation(
                        "One or more parameter values were invalid: Some index key attributes are not defined in AttributeDefinitions. Keys: [".to_string()
                            + name
                            + "], AttributeDefinitions: []",
                    )
                })
        };
        let mut hash = None;
        let mut range = None;
        let list = key_schema.as_array().cloned().unwrap_or_default();
        if list.is_empty() || list.len() > 2 {
            return Err(Error::validation(
                "1 validation error detected: Value at 'keySchema' failed to satisfy constraint: Member must have length less than or equal to 2",
            ));
        }
        for element in &list {
            let name = element
                .get("AttributeName")
                .and_then(Value::as_str)
                .unwrap_or("");
            let key_type = element.get("KeyType").and_then(Value::as_str).unwrap_or("");
            let attr = KeyAttr {
                name: name.to_string(),
                kind: kind_of(name)?,
            };
            match key_type {
                "HASH" if hash.is_none() => hash = Some(attr),
                "RANGE" if range.is_none() => range = Some(attr),
                _ => {
                    return Err(Error::validation(
                        "Invalid KeySchema: The first KeySchemaElement is not a HASH key type",
                    ));
                }
            }
        }
        let Some(hash) = hash else {
            return Err(Error::validation(
                "Invalid KeySchema: The first KeySchemaElement is not a HASH key type",
            ));
        };
        if range.as_ref().is_some_and(|r| r.name == hash.name) {
            return Err(Error::validation(
                "Both the Hash Key and the Range Key element in the KeySchema have the same name",
            ));
        }
        Ok(Schema { hash, range })
    }

    fn names(&self) -> Vec<&str> {
        let mut names = vec![self.hash.name.as_str()];
        if let Some(r) = &self.range {
            names.push(r.name.as_str());
        }
        names
    }

    /// The key attributes of `item`, checked against the schema; `None` when an index key
    /// is missing (the item is not in a sparse index).
    fn key_of(&self, item: &Item) -> Option<Vec<u8>> {
        let hash = item
            .get(&self.hash.name)
            .and_then(|v| value::key_bytes(v, &self.hash.kind))?;
        let mut key = Vec::with_capacity(4 + hash.len() + 16);
        key.extend_from_slice(&u32::try_from(hash.len()).ok()?.to_be_bytes());
        key.extend_from_slice(&hash);
        if let Some(range) = &self.range {
            key.extend_from_slice(
                &item
                    .get(&range.name)
                    .and_then(|v| value::key_bytes(v, &range.kind))?,
            );
        }
        Some(key)
    }

    /// Checks a `Key` parameter: exactly the key attributes, of the right types.
    fn check_key(&self, key: &Item) -> Result<Vec<u8>, Error> {
        let mismatch = || Error::validation("The provided key element does not match the schema");
        if key.len() != self.names().len() {
            return Err(mismatch());
        }
        for attr in std::iter::once(&self.hash).chain(self.range.as_ref()) {
            let v = key.get(&attr.name).ok_or_else(mismatch)?;
            value::validate(v, 1)?;
            if value::type_of(v) != Some(attr.kind.as_str()) {
                return Err(mismatch());
            }
        }
        self.key_of(key).ok_or_else(mismatch)
    }

    /// Checks an item's key attributes (PutItem).
    fn check_item(&self, item: &Item) -> Result<Vec<u8>, Error> {
        for attr in std::iter::once(&self.hash).chain(self.range.as_ref()) {
            let Some(v) = item.get(&attr.name) else {
                return Err(Error::validation(format!(
                    "One or more parameter values were invalid: Missing the key {} in the item",
                    attr.name
                )));
            };
            if value::type_of(v) != Some(attr.kind.as_str()) {
                return Err(Error::validation(format!(
                    "One or more parameter values were invalid: Type mismatch for key {} expected: {} actual: {}",
                    attr.name,
                    attr.kind,
                    value::type_of(v).unwrap_or("")
                )));
            }
            let bytes = value::key_bytes(v, &attr.kind).unwrap_or_default();
            let max = if attr.name == self.hash.name {
                value::HASH_KEY_BYTES_MAX
            } else {
                value::RANGE_KEY_BYTES_MAX
            };
            if bytes.is_empty() && attr.kind != "N" {
                return Err(Error::validation(format!(
                    "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an empty string value. Key: {}",
                    attr.name
                )));
            }
            if bytes.len() > max {
                return Err(Error::validation(format!(
                    "One or more parameter values were invalid: Size of hashkey has exceeded the maximum size limit of {max} bytes"
                )));
            }
        }
        self.key_of(item)
            .ok_or_else(|| Error::validation("The provided key element does not match the schema"))
    }

    fn project_key(&self, item: &Item) -> Item {
        let mut key = Item::new();
        for name in self.names() {
            if let Some(v) = item.get(name) {
                key.insert(name.to_string(), v.clone());
            }
        }
        key
    }
}

/// A stored table: the description DescribeTable returns (counts filled in on read) and
/// the settings around it.
struct Stored {
    record: Map<String, Value>,
}

impl Stored {
    fn description(&self) -> &Value {
        self.record.get("Description").unwrap_or(&Value::Null)
    }

    fn description_mut(&mut self) -> &mut Map<String, Value> {
        if !self.record.get("Description").is_some_and(Value::is_object) {
            self.record.insert("Description".into(), json!({}));
        }
        match self.record.get_mut("Description") {
            Some(Value::Object(m)) => m,
            _ => unreachable!("inserted above"),
        }
    }

    fn schema(&self) -> Result<Schema, Error> {
        let d = self.description();
        Schema::from_key_schema(
            d.get("KeySchema").unwrap_or(&Value::Null),
            d.get("AttributeDefinitions").unwrap_or(&Value::Null),
        )
    }

    fn index(&self, name: &str) -> Result<(Schema, Value), Error> {
        let d = self.description();
        let index = d
            .get("GlobalSecondaryIndexes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|i| i.get("IndexName").and_then(Value::as_str) == Some(name))
            .ok_or_else(|| {
                Error::validation(format!(
                    "The table does not have the specified index: {name}"
                ))
            })?;
        let schema = Schema::from_key_schema(
            index.get("KeySchema").unwrap_or(&Value::Null),
            d.get("AttributeDefinitions").unwrap_or(&Value::Null),
        )?;
        Ok((
            schema,
            index.get("Projection").cloned().unwrap_or(Value::Null),
        ))
    }

    fn bytes(&self) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(&self.record).map_err(|e| Error::Storage(e.to_string()))
    }
}

fn load(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<Option<Stored>, Error> {
    let Some(bytes) = table.get(name)? else {
        return Ok(None);
    };
    let record: Map<String, Value> = serde_json::from_slice(bytes.value())
        .map_err(|e| Error::Storage(format!("table record {name}: {e}")))?;
    Ok(Some(Stored { record }))
}

fn load_read(tables: &Tables, name: &str) -> Result<Stored, Error> {
    let txn = tables.db().begin_read()?;
    let meta = txn.open_table(TABLES)?;
    load(&meta, name)?.ok_or_else(|| not_found(name))
}

// ---- control plane ----

fn throughput(spec: Option<&Value>) -> Value {
    let read = spec
        .and_then(|s| s.get("ReadCapacityUnits"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let write = spec
        .and_then(|s| s.get("WriteCapacityUnits"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    json!({"NumberOfDecreasesToday": 0, "ReadCapacityUnits": read, "WriteCapacityUnits": write})
}

fn check_billing(billing: &str, throughput: Option<&Value>, what: &str) -> Result<(), Error> {
    match (billing, throughput) {
        ("PROVISIONED", None) => Err(Error::validation(format!(
            "One or more parameter values were invalid: ReadCapacityUnits and WriteCapacityUnits must both be specified when BillingMode is PROVISIONED{what}"
        ))),
        ("PAY_PER_REQUEST", Some(_)) => Err(Error::validation(
            "One or more parameter values were invalid: Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST",
        )),
        ("PROVISIONED", Some(t)) => {
            for field in ["ReadCapacityUnits", "WriteCapacityUnits"] {
                if t.get(field).and_then(Value::as_u64).is_none_or(|n| n < 1) {
                    return Err(Error::validation(format!(
                        "1 validation error detected: Value at 'provisionedThroughput.{}' failed to satisfy constraint: Member must have value greater than or equal to 1",
                        if field == "ReadCapacityUnits" {
                            "readCapacityUnits"
                        } else {
                            "writeCapacityUnits"
                        }
                    )));
                }
            }
            Ok(())
        }
        ("PAY_PER_REQUEST", None) => Ok(()),
        (other, _) => Err(Error::validation(format!(
            "1 validation error detected: Value '{other}' at 'billingMode' failed to satisfy constraint: Member must satisfy enum value set: [PROVISIONED, PAY_PER_REQUEST]"
        ))),
    }
}

fn index_description(ctx_arn: &str, spec: &Value, billing: &str) -> Result<Value, Error> {
    let name = spec.get("IndexName").and_then(Value::as_str).unwrap_or("");
    if !(3..=255).contains(&name.len()) {
        return Err(Error::validation("Invalid index name"));
    }
    let projection = spec
        .get("Projection")
        .cloned()
        .unwrap_or(json!({"ProjectionType": "ALL"}));
    let t = spec.get("ProvisionedThroughput");
    if billing == "PROVISIONED" && t.is_none() {
        return Err(Error::validation(format!(
            "One or more parameter values were invalid: ProvisionedThroughput must be specified for index: {name}"
        )));
    }
    Ok(json!({
        "IndexName": name,
        "KeySchema": spec.get("KeySchema").cloned().unwrap_or(Value::Null),
        "Projection": projection,
        "IndexStatus": "ACTIVE",
        "ProvisionedThroughput": throughput(t),
        "IndexSizeBytes": 0,
        "ItemCount": 0,
        "IndexArn": format!("{ctx_arn}/index/{name}"),
    }))
}

/// Every attribute definition must be used by a key of the table or an index, and every key
/// must be defined.
fn check_definitions(description: &Map<String, Value>) -> Result<(), Error> {
    let definitions: Vec<&str> = description
        .get("AttributeDefinitions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("AttributeName").and_then(Value::as_str))
        .collect();
    let mut used = BTreeSet::new();
    let schemas = std::iter::once(description.get("KeySchema")).chain(
        description
            .get("GlobalSecondaryIndexes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|i| i.get("KeySchema")),
    );
    for schema in schemas {
        for element in schema.and_then(Value::as_array).into_iter().flatten() {
            if let Some(name) = element.get("AttributeName").and_then(Value::as_str) {
                used.insert(name);
            }
        }
    }
    let defined: BTreeSet<&str> = definitions.iter().copied().collect();
    if defined.len() != definitions.len() {
        return Err(Error::validation(
            "One or more parameter values were invalid: Duplicate AttributeName in AttributeDefinitions",
        ));
    }
    if used != defined {
        return Err(Error::validation(
            "One or more parameter values were invalid: Number of attributes in KeySchema does not exactly match number of attributes defined in AttributeDefinitions",
        ));
    }
    for d in description
        .get("AttributeDefinitions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let kind = d.get("AttributeType").and_then(Value::as_str).unwrap_or("");
        if !matches!(kind, "S" | "N" | "B") {
            return Err(Error::validation(format!(
                "1 validation error detected: Value '{kind}' at 'attributeDefinitions.1.member.attributeType' failed to satisfy constraint: Member must satisfy enum value set: [B, N, S]"
            )));
        }
    }
    Ok(())
}

fn create_table(
    tables: &Tables,
    ctx: &Context,
    request: &Map<String, Value>,
) -> Result<Value, Error> {
    let name = table_name(request)?;
    let billing = string(request, "BillingMode")?.unwrap_or("PROVISIONED");
    check_billing(billing, request.get("ProvisionedThroughput"), "")?;
    let arn = format!(
        "arn:aws:dynamodb:{}:{}:table/{name}",
        ctx.region, ctx.account
    );
    let mut indexes = Vec::new();
    for spec in request
        .get("GlobalSecondaryIndexes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        indexes.push(index_description(&arn, spec, billing)?);
    }
    if indexes.len() > INDEXES_MAX {
        return Err(Error::validation(
            "One or more parameter values were invalid: GlobalSecondaryIndex count exceeds the per-table limit of 20",
        ));
    }
    if request.get("LocalSecondaryIndexes").is_some() {
        return Err(Error::validation(
            "Local secondary indexes are not supported by Millrace's DynamoDB subset",
        ));
    }
    let mut description = json!({
        "AttributeDefinitions": request.get("AttributeDefinitions").cloned().unwrap_or(json!([])),
        "TableName": name,
        "KeySchema": request.get("KeySchema").cloned().unwrap_or(Value::Null),
        "TableStatus": "ACTIVE",
        "CreationDateTime": now_secs(),
        "ProvisionedThroughput": throughput(request.get("ProvisionedThroughput")),
        "TableSizeBytes": 0,
        "ItemCount": 0,
        "TableArn": arn,
        "TableId": uuid::Uuid::new_v4().to_string(),
        "DeletionProtectionEnabled": request.get("DeletionProtectionEnabled").and_then(Value::as_bool).unwrap_or(false),
    });
    let Some(d) = description.as_object_mut() else {
        return Err(Error::Storage("description is an object".into()));
    };
    if billing == "PAY_PER_REQUEST" {
        d.insert("BillingModeSummary".into(), json!({"BillingMode": "PAY_PER_REQUEST", "LastUpdateToPayPerRequestDateTime": now_secs()}));
    }
    if !indexes.is_empty() {
        d.insert("GlobalSecondaryIndexes".into(), Value::Array(indexes));
    }
    let mut names = BTreeSet::new();
    for index in d
        .get("GlobalSecondaryIndexes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if !names.insert(
            index
                .get("IndexName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        ) {
            return Err(Error::validation(
                "One or more parameter values were invalid: Duplicate index name",
            ));
        }
    }
    check_definitions(d)?;
    let stored = Stored {
        record: json!({"Description": description, "Tags": request.get("Tags").cloned().unwrap_or(json!([]))})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    };
    stored.schema()?;
    for index in stored
        .description()
        .get("GlobalSecondaryIndexes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        stored.index(index.get("IndexName").and_then(Value::as_str).unwrap_or(""))?;
    }
    let txn = tables.db().begin_write()?;
    {
        let mut meta = txn.open_table(TABLES)?;
        if meta.get(name)?.is_some() {
            return Err(Error::ResourceInUse(format!(
                "Table already exists: {name}"
            )));
        }
        if meta.len()? as usize >= TABLES_MAX {
            return Err(Error::LimitExceeded(format!(
                "Subscriber limit exceeded: Table count limit of {TABLES_MAX} reached"
            )));
        }
        meta.insert(name, stored.bytes()?.as_slice())?;
        txn.open_table(items_definition(&items_table_name(name)))?;
    }
    txn.commit()?;
    tracing::info!(table = name, "DynamoDB table created");
    Ok(json!({"TableDescription": stored.description()}))
}

fn with_counts(tables: &Tables, stored: &Stored) -> Result<Value, Error> {
    let mut d = stored.description().clone();
    let name = d
        .get("TableName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let txn = tables.db().begin_read()?;
    let (count, size) = match txn.open_table(items_definition(&items_table_name(&name))) {
        Ok(items) => {
            let mut size = 0u64;
            for entry in items.iter()? {
                size += entry?.1.value().len() as u64;
            }
            (items.len()?, size)
        }
        Err(redb::TableError::TableDoesNotExist(_)) => (0, 0),
        Err(e) => return Err(e.into()),
    };
    if let Some(m) = d.as_object_mut() {
        m.insert("ItemCount".into(), count.into());
        m.insert("TableSizeBytes".into(), size.into());
    }
    Ok(d)
}

fn describe_table(tables: &Tables, request: &Map<String, Value>) -> Result<Value, Error> {
    let name = table_name(request)?;
    let stored = load_read(tables, name).map_err(|_| not_found_table(name))?;
    Ok(json!({"Table": with_counts(tables, &stored)?}))
}

/// Reads, changes and writes a table record in one write transaction.
fn change_table(
    tables: &Tables,
    name: &str,
    change: impl FnOnce(&mut Stored) -> Result<(), Error>,
) -> Result<Stored, Error> {
    let txn = tables.db().begin_write()?;
    let stored = {
        let mut meta = txn.open_table(TABLES)?;
        let mut stored = load(&meta, name)?.ok_or_else(|| not_found_table(name))?;
        change(&mut stored)?;
        meta.insert(name, stored.bytes()?.as_slice())?;
        stored
    };
    txn.commit()?;
    Ok(stored)
}

fn update_table(tables: &Tables, request: &Map<String, Value>) -> Result<Value, Error> {
    let name = table_name(request)?;
    let stored = change_table(tables, name, |stored| {
        let arn = stored
            .description()
            .get("TableArn")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let d = stored.description_mut();
        let mut billing = d
            .get("BillingModeSummary")
            .and_then(|b| b.get("BillingMode"))
            .and_then(Value::as_str)
            .unwrap_or("PROVISIONED")
            .to_string();
        if let Some(new_billing) = string(request, "BillingMode")? {
            billing = new_billing.to_string();
            d.insert(
                "BillingModeSummary".into(),
                json!({"BillingMode": new_billing}),
            );
        }
        if let Some(t) = request.get("ProvisionedThroughput") {
            check_billing(&billing, Some(t), "")?;
            d.insert("ProvisionedThroughput".into(), throughput(Some(t)));
        }
        if let Some(p) = request
            .get("DeletionProtectionEnabled")
            .and_then(Value::as_bool)
        {
            d.insert("DeletionProtectionEnabled".into(), p.into());
        }
        if let Some(defs) = request
            .get("AttributeDefinitions")
            .and_then(Value::as_array)
        {
            let mut all = d
                .get("AttributeDefinitions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for def in defs {
                let n = def.get("AttributeName");
                if let Some(existing) = all.iter_mut().find(|e| e.get("AttributeName") == n) {
                    *existing = def.clone();
                } else {
                    all.push(def.clone());
                }
            }
            d.insert("AttributeDefinitions".into(), Value::Array(all));
        }
        let mut indexes = d
            .get("GlobalSecondaryIndexes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for update in request
            .get("GlobalSecondaryIndexUpdates")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(create) = update.get("Create") {
                let index = index_description(&arn, create, &billing)?;
                if indexes
                    .iter()
                    .any(|i| i.get("IndexName") == index.get("IndexName"))
                {
                    return Err(Error::validation(format!(
                        "One or more parameter values were invalid: Attempting to create an index which already exists. IndexName: {}",
                        index.get("IndexName").and_then(Value::as_str).unwrap_or("")
                    )));
                }
                indexes.push(index);
            } else if let Some(delete) = update.get("Delete") {
                let index_name = delete.get("IndexName");
                let before = indexes.len();
                indexes.retain(|i| i.get("IndexName") != index_name);
                if indexes.len() == before {
                    return Err(Error::ResourceNotFound(format!(
                        "Requested resource not found: Index: {} not found",
                        index_name.and_then(Value::as_str).unwrap_or("")
                    )));
                }
            } else if let Some(update) = update.get("Update") {
                let index_name = update.get("IndexName");
                let Some(index) = indexes
                    .iter_mut()
                    .find(|i| i.get("IndexName") == index_name)
                else {
                    return Err(Error::ResourceNotFound(
                        "Requested resource not found".into(),
                    ));
                };
                if let Some(obj) = index.as_object_mut() {
                    obj.insert(
                        "ProvisionedThroughput".into(),
                        throughput(update.get("ProvisionedThroughput")),
                    );
                }
            }
        }
        if indexes.len() > INDEXES_MAX {
            return Err(Error::LimitExceeded(
                "GlobalSecondaryIndex count exceeds the per-table limit of 20".into(),
            ));
        }
        if indexes.is_empty() {
            d.remove("GlobalSecondaryIndexes");
        } else {
            d.insert("GlobalSecondaryIndexes".into(), Value::Array(indexes));
        }
        // Definitions no key uses any more are dropped, as DynamoDB does.
        let used: BTreeSet<String> = std::iter::once(d.get("KeySchema"))
            .chain(
                d.get("GlobalSecondaryIndexes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|i| i.get("KeySchema")),
            )
            .flat_map(|s| s.and_then(Value::as_array).cloned().unwrap_or_default())
            .filter_map(|e| {
                e.get("AttributeName")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect();
        if let Some(Value::Array(defs)) = d.get_mut("AttributeDefinitions") {
            defs.retain(|def| {
                def.get("AttributeName")
                    .and_then(Value::as_str)
                    .is_some_and(|n| used.contains(n))
            });
        }
        check_definitions(d)?;
        stored.schema()?;
        Ok(())
    })?;
    Ok(json!({"TableDescription": with_counts(tables, &stored)?}))
}

fn delete_table(tables: &Tables, request: &Map<String, Value>) -> Result<Value, Error> {
    let name = table_name(request)?;
    let txn = tables.db().begin_write()?;
    let stored = {
        let mut meta = txn.open_table(TABLES)?;
        let stored = load(&meta, name)?.ok_or_else(|| not_found_table(name))?;
        if stored
            .description()
            .get("DeletionProtectionEnabled")
            .and_then(Value::as_bool)
            == Some(true)
        {
            return Err(Error::validation(
                "Resource cannot be deleted as it is currently protected against deletion. Disable deletion protection first.",
            ));
        }
        meta.remove(name)?;
        stored
    };
    let items_name = items_table_name(name);
    txn.delete_table(items_definition(&items_name))?;
    txn.commit()?;
    let mut d = stored.description().clone();
    if let Some(m) = d.as_object_mut() {
        m.insert("TableStatus".into(), "DELETING".into());
    }
    tracing::info!(table = name, "DynamoDB table deleted");
    Ok(json!({"TableDescription": d}))
}

fn list_tables(tables: &Tables, request: &Map<String, Value>) -> Result<Value, Error> {
    let limit = match request.get("Limit") {
        None | Some(Value::Null) => LIST_TABLES_MAX,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=100) => n as usize,
            _ => {
                return Err(Error::validation(format!(
                    "1 validation error detected: Value '{v}' at 'limit' failed to satisfy constraint: Member must have value {}",
                    if v.as_i64().is_some_and(|n| n < 1) {
                        "greater than or equal to 1"
                    } else {
                        "less than or equal to 100"
                    }
                )));
            }
        },
    };
    let start = string(request, "ExclusiveStartTableName")?;
    let txn = tables.db().begin_read()?;
    let meta = txn.open_table(TABLES)?;
    let mut names = Vec::new();
    let mut more = false;
    for entry in meta.iter()? {
        let (name, _) = entry?;
        let name = name.value().to_string();
        if start.is_some_and(|s| name.as_str() <= s) {
            continue;
        }
        if names.len() == limit {
            more = true;
            break;
        }
        names.push(name);
    }
    let mut response = json!({"TableNames": names});
    if more && let (Some(obj), Some(last)) = (response.as_object_mut(), names.last()) {
        obj.insert("LastEvaluatedTableName".into(), last.clone().into());
    }
    Ok(response)
}

fn update_ttl(tables: &Tables, request: &Map<String, Value>) -> Result<Value, Error> {
    let name = table_name(request)?;
    let Some(spec) = request.get("TimeToLiveSpecification").cloned() else {
        return Err(Error::validation(
            "1 validation error detected: Value null at 'timeToLiveSpecification' failed to satisfy constraint: Member must not be null",
        ));
    };
    let enabled = spec
        .get("Enabled")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let attribute = spec
        .get("AttributeName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    change_table(tables, name, |stored| {
        let current = stored
            .record
            .get("TimeToLive")
            .and_then(|t| t.get("Enabled"))
            .and_then(Value::as_bool);
        if current == Some(enabled) {
            return Err(Error::validation(if enabled {
                "TimeToLive is already enabled"
            } else {
                "TimeToLive is already disabled"
            }));
        }
        stored.record.insert(
            "TimeToLive".into(),
            json!({"Enabled": enabled, "AttributeName": attribute}),
        );
        Ok(())
    })?;
    Ok(json!({"TimeToLiveSpecification": spec}))
}

fn describe_ttl(tables: &Tables, request: &Map<String, Value>) -> Result<Value, Error> {
    let name = table_name(request)?;
    let stored = load_read(tables, name).map_err(|_| not_found_table(name))?;
    let ttl = stored.record.get("TimeToLive");
    let description = match ttl {
        Some(t) if t.get("Enabled").and_then(Value::as_bool) == Some(true) => {
            json!({"TimeToLiveStatus": "ENABLED", "AttributeName": t.get("AttributeName").cloned().unwrap_or(Value::Null)})
        }
        _ => json!({"TimeToLiveStatus": "DISABLED"}),
    };
    Ok(json!({"TimeToLiveDescription": description}))
}

fn backups_description(stored: &Stored) -> Value {
    let enabled = stored
        .record
        .get("PointInTimeRecovery")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut pitr =
        json!({"PointInTimeRecoveryStatus": if enabled { "ENABLED" } else { "DISABLED" }});
    if enabled && let Some(obj) = pitr.as_object_mut() {
        obj.insert("RecoveryPeriodInDays".into(), 35.into());
    }
    json!({"ContinuousBackupsStatus": "ENABLED", "PointInTimeRecoveryDescription": pitr})
}

fn update_backups(tables: &Tables, request: &Map<String, Value>) -> Result<Value, Error> {
    let name = table_name(request)?;
    let enabled = request
        .get("PointInTimeRecoverySpecification")
        .and_then(|s| s.get("PointInTimeRecoveryEnabled"))
        .and_then(Value::as_bool)
        .ok_or_else(|| {
            Error::validation(
                "1 validation error detected: Value null at 'pointInTimeRecoverySpecification' failed to satisfy constraint: Member must not be null",
            )
        })?;
    let stored = change_table(tables, name, |stored| {
        stored
            .record
            .insert("PointInTimeRecovery".into(), enabled.into());
        Ok(())
    })
    .map_err(|e| match e {
        Error::ResourceNotFound(_) => Error::TableNotFound(format!("Table not found: {name}")),
        other => other,
    })?;
    Ok(json!({"ContinuousBackupsDescription": backups_description(&stored)}))
}

fn describe_backups(tables: &Tables, request: &Map<String, Value>) -> Result<Value, Error> {
    let name = table_name(request)?;
    let stored = load_read(tables, name)
        .map_err(|_| Error::TableNotFound(format!("Table not found: {name}")))?;
    Ok(json!({"ContinuousBackupsDescription": backups_description(&stored)}))
}

fn table_of_arn(arn: &str) -> Result<&str, Error> {
    arn.split_once(":table/")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(rest))
        .ok_or_else(|| {
            Error::validation(format!(
                "Invalid TableArn: Invalid ResourceArn provided as input {arn}"
            ))
        })
}

fn tag_resource(tables: &Tables, request: &Map<String, Value>, add: bool) -> Result<Value, Error> {
    let arn = string(request, "ResourceArn")?.unwrap_or("");
    let name = table_of_arn(arn)?.to_string();
    change_table(tables, &name, |stored| {
        let mut tags = stored
            .record
            .get("Tags")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if add {
            for tag in request
                .get("Tags")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                tags.retain(|t| t.get("Key") != tag.get("Key"));
                tags.push(tag.clone());
            }
            if tags.len() > 50 {
                return Err(Error::validation(
                    "One or more parameter values were invalid: Too many tags",
                ));
            }
        } else {
            let keys: Vec<&Value> = request
                .get("TagKeys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .collect();
            tags.retain(|t| !t.get("Key").is_some_and(|k| keys.contains(&k)));
        }
        stored.record.insert("Tags".into(), Value::Array(tags));
        Ok(())
    })?;
    Ok(json!({}))
}

fn list_tags(tables: &Tables, request: &Map<String, Value>) -> Result<Value, Error> {
    let arn = string(request, "ResourceArn")?.unwrap_or("");
    let name = table_of_arn(arn)?;
    let stored = load_read(tables, name)?;
    Ok(json!({"Tags": stored.record.get("Tags").cloned().unwrap_or(json!([]))}))
}

// ---- items ----

fn return_values<'a>(request: &'a Map<String, Value>, allowed: &[&str]) -> Result<&'a str, Error> {
    let rv = string(request, "ReturnValues")?.unwrap_or("NONE");
    if !allowed.contains(&rv) {
        if ["NONE", "ALL_OLD", "UPDATED_OLD", "ALL_NEW", "UPDATED_NEW"].contains(&rv) {
            return Err(Error::validation("Return values set to invalid value"));
        }
        return Err(Error::validation(format!(
            "1 validation error detected: Value '{rv}' at 'returnValues' failed to satisfy constraint: Member must satisfy enum value set: [ALL_NEW, UPDATED_OLD, ALL_OLD, NONE, UPDATED_NEW]"
        )));
    }
    Ok(rv)
}

/// The condition of a write: `ConditionExpression` or the legacy `Expected`.
fn write_condition(
    request: &Map<String, Value>,
    placeholders: &mut Placeholders,
) -> Result<Option<Condition>, Error> {
    let expression = string(request, "ConditionExpression")?;
    let expected = object(request, "Expected")?;
    match (expression, expected) {
        (Some(_), Some(_)) => Err(Error::validation(
            "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {Expected} Expression parameters: {ConditionExpression}",
        )),
        (Some(text), None) => Ok(Some(expr::parse_condition(
            text,
            "ConditionExpression",
            placeholders,
        )?)),
        (None, Some(expected)) => {
            let or = string(request, "ConditionalOperator")? == Some("OR");
            expr::legacy_conditions(expected, or, true)
        }
        (None, None) => Ok(None),
    }
}

fn check_condition(
    request: &Map<String, Value>,
    condition: Option<&Condition>,
    old: Option<&Item>,
) -> Result<(), Error> {
    let Some(condition) = condition else {
        return Ok(());
    };
    let empty = Item::new();
    if expr::evaluate(old.unwrap_or(&empty), condition) {
        return Ok(());
    }
    let want_item = string(request, "ReturnValuesOnConditionCheckFailure")? == Some("ALL_OLD");
    Err(Error::ConditionalCheckFailed {
        item: if want_item { old.cloned() } else { None },
    })
}

fn consumed(request: &Map<String, Value>, name: &str, units: f64) -> Option<Value> {
    match request
        .get("ReturnConsumedCapacity")
        .and_then(Value::as_str)
    {
        Some("TOTAL") => Some(json!({"TableName": name, "CapacityUnits": units})),
        Some("INDEXES") => Some(
            json!({"TableName": name, "CapacityUnits": units, "Table": {"CapacityUnits": units}}),
        ),
        _ => None,
    }
}

fn answer_with(
    mut response: Map<String, Value>,
    request: &Map<String, Value>,
    name: &str,
    units: f64,
) -> Value {
    if let Some(c) = consumed(request, name, units) {
        response.insert("ConsumedCapacity".into(), c);
    }
    Value::Object(response)
}

fn decode_item(bytes: &[u8]) -> Result<Item, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Storage(format!("stored item: {e}")))
}

fn encode_item(item: &Item) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(item).map_err(|e| Error::Storage(e.to_string()))
}

fn projection(
    request: &Map<String, Value>,
    placeholders: &mut Placeholders,
) -> Result<Option<Vec<expr::Path>>, Error> {
    let expression = string(request, "ProjectionExpression")?;
    let attributes = request.get("AttributesToGet").and_then(Value::as_array);
    match (expression, attributes) {
        (Some(_), Some(_)) => Err(Error::validation(
            "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {AttributesToGet} Expression parameters: {ProjectionExpression}",
        )),
        (Some(text), None) => Ok(Some(expr::parse_projection(text, placeholders)?)),
        (None, Some(list)) => Ok(Some(
            list.iter()
                .filter_map(Value::as_str)
                .map(|n| vec![Step::Name(n.to_string())])
                .collect(),
        )),
        (None, None) => Ok(None),
    }
}

fn get_item(tables: &Tables, request: &Map<String, Value>) -> Result<Value, Error> {
    let name = table_name(request)?;
    let mut placeholders = Placeholders::new(request)?;
    let projection = projection(request, &mut placeholders)?;
    placeholders.check_all_used()?;
    let key = object(request, "Key")?.ok_or_else(|| Error::validation("1 validation error detected: Value null at 'key' failed to satisfy constraint: Member must not be null"))?;
    let txn = tables.db().begin_read()?;
    let meta = txn.open_table(TABLES)?;
    let stored = load(&meta, name)?.ok_or_else(|| not_found(name))?;
    let encoded = stored.schema()?.check_key(key)?;
    let items = txn.open_table(items_definition(&items_table_name(name)))?;
    let mut response = Map::new();
    if let Some(bytes) = items.get(encoded.as_slice())? {
        let item = decode_item(bytes.value())?;
        let item = match &projection {
            Some(paths) => expr::project(&item, paths),
            None => item,
        };
        response.insert("Item".into(), Value::Object(item));
    }
    Ok(answer_with(response, request, name, 0.5))
}

fn put_item(tables: &Tables, request: &Map<String, Value>) -> Result<Value, Error> {
    let name = table_name(request)?;
    let rv = return_values(request, &["NONE", "ALL_OLD"])?;
    let mut placeholders = Placeholders::new(request)?;
    let condition = write_condition(request, &mut placeholders)?;
    placeholders.check_all_used()?;
    let item = object(request, "Item")?
        .ok_or_else(|| Error::validation("1 validation error detected: Value null at 'item' failed to satisfy constraint: Member must not be null"))?
        .clone();
    value::validate_item(&item)?;
    let item = normalize(item);
    let txn = tables.db().begin_write()?;
    let old = {
        let meta = txn.open_table(TABLES)?;
        let stored = load(&meta, name)?.ok_or_else(|| not_found(name))?;
        let schema = stored.schema()?;
        let key = schema.check_item(&item)?;
        check_index_keys(&stored, &item)?;
        let mut items = txn.open_table(items_definition(&items_table_name(name)))?;
        let old = items
            .get(key.as_slice())?
            .map(|b| decode_item(b.value()))
            .transpose()?;
        check_condition(request, condition.as_ref(), old.as_ref())?;
        items.insert(key.as_slice(), encode_item(&item)?.as_slice())?;
        old
    };
    txn.commit()?;
    let mut response = Map::new();
    if rv == "ALL_OLD"
        && let Some(old) = old
    {
        response.insert("Attributes".into(), Value::Object(old));
    }
    Ok(answer_with(response, request, name, 1.0))
}

/// Numbers are stored in the canonical form DynamoDB returns them in.
fn normalize(item: Item) -> Item {
    item.into_iter()
        .map(|(k, v)| (k, normalize_value(v)))
        .collect()
}

fn normalize_value(v: Value) -> Value {
    let Some(kind) = value::type_of(&v).map(str::to_string) else {
        return v;
    };
    match (kind.as_str(), v) {
        ("N", v) => match value::as_str(&v, "N") {
            Some(n) => json!({"N": value::canonical_number(n)}),
            None => v,
        },
        ("NS", v) => {
            let list: Vec<Value> = v
                .get("NS")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|n| Value::String(value::canonical_number(n)))
                .collect();
            json!({"NS": list})
        }
        ("L", Value::Object(mut m)) => {
            if let Some(Value::Array(list)) = m.remove("L") {
                json!({"L": list.into_iter().map(normalize_value).collect::<Vec<_>>()})
            } else {
                Value::Object(m)
            }
        }
        ("M", Value::Object(mut m)) => {
            if let Some(Value::Object(members)) = m.remove("M") {
                json!({"M": members.into_iter().map(|(k, v)| (k, normalize_value(v))).collect::<Map<_, _>>()})
            } else {
                Value::Object(m)
            }
        }
        (_, v) => v,
    }
}

/// An index key attribute, when present, must have the index's type.
fn check_index_keys(stored: &Stored, item: &Item) -> Result<(), Error> {
    for definition in stored
        .description()
        .get("AttributeDefinitions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(name), Some(kind)) = (
            definition.get("AttributeName").and_then(Value::as_str),
            definition.get("AttributeType").and_then(Value::as_str),
        ) else {
            continue;
        };
        if let Some(v) = item.get(name)
            && value::type_of(v) != Some(kind)
        {
            return Err(Error::validation(format!(
                "One or more parameter values were invalid: Type mismatch for Index Key {name} Expected: {kind} Actual: {} IndexName: {}",
                value::type_of(v).unwrap_or(""),
                index_using(stored, name)
            )));
        }
    }
    Ok(())
}

fn index_using(stored: &Stored, attribute: &str) -> String {
    stored
        .description()
        .get("GlobalSecondaryIndexes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|i| {
            i.get("KeySchema")
                .and_then(Value::as_array)
                .is_some_and(|k| {
                    k.iter()
                        .any(|e| e.get("AttributeName").and_then(Value::as_str) == Some(attribute))
                })
        })
        .and_then(|i| i.get("IndexName").and_then(Value::as_str))
        .unwrap_or("")
        .to_string()
}

fn update_item(tables: &Tables, request: &Map<String, Value>) -> Result<Value, Error> {
    let name = table_name(request)?;
    let rv = return_values(
        request,
        &["NONE", "ALL_OLD", "UPDATED_OLD", "ALL_NEW", "UPDATED_NEW"],
    )?;
    let mut placeholders = Placeholders::new(request)?;
    let update = match (
        string(request, "UpdateExpression")?,
        object(request, "AttributeUpdates")?,
    ) {
        (Some(_), Some(_)) => {
            return Err(Error::validation(
                "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {AttributeUpdates} Expression parameters: {UpdateExpression}",
            ));
        }
        (Some(text), None) => Some(expr::parse_update(text, &mut placeholders)?),
        (None, Some(updates)) => Some(expr::legacy_update(updates)?),
        (None, None) => None,
    };
    let condition = write_condition(request, &mut placeholders)?;
    placeholders.check_all_used()?;
    let key = object(request, "Key")?
        .ok_or_else(|| Error::validation("1 validation error detected: Value null at 'key' failed to satisfy constraint: Member must not be null"))?;
    let txn = tables.db().begin_write()?;
    let (old, new, touched) = {
        let meta = txn.open_table(TABLES)?;
        let stored = load(&meta, name)?.ok_or_else(|| not_found(name))?;
        let schema = stored.schema()?;
        let encoded = schema.check_key(key)?;
        let mut items = txn.open_table(items_definition(&items_table_name(name)))?;
        let old = items
            .get(encoded.as_slice())?
            .map(|b| decode_item(b.value()))
            .transpose()?;
        check_condition(request, condition.as_ref(), old.as_ref())?;
        let mut new = old.clone().unwrap_or_else(|| key.clone());
        let touched = match &update {
            Some(update) => expr::apply_update(&mut new, update)?,
            None => BTreeSet::new(),
        };
        for key_name in schema.names() {
            if touched.contains(key_name) {
                return Err(Error::validation(format!(
                    "One or more parameter values were invalid: Cannot update attribute {key_name}. This attribute is part of the key"
                )));
            }
        }
        let new = normalize(new);
        value::validate_item(&new)?;
        check_index_keys(&stored, &new)?;
        items.insert(encoded.as_slice(), encode_item(&new)?.as_slice())?;
        (old, new, touched)
    };
    txn.commit()?;
    let pick = |item: &Item| -> Item {
        item.iter()
            .filter(|(k, _)| touched.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let attributes = match rv {
        "ALL_OLD" => old,
        "UPDATED_OLD" => old.as_ref().map(pick),
        "ALL_NEW" => Some(new),
        "UPDATED_NEW" => Some(pick(&new)),
        _ => None,
    };
    let mut response = Map::new();
    if let Some(a) = attributes.filter(|a| !a.is_empty()) {
        response.insert("Attributes".into(), Value::Object(a));
    }
    Ok(answer_with(response, request, name, 1.0))
}

fn delete_item(tables: &Tables, request: &Map<String, Value>) -> Result<Value, Error> {
    let name = table_name(request)?;
    let rv = return_values(request, &["NONE", "ALL_OLD"])?;
    let mut placeholders = Placeholders::new(request)?;
    let condition = write_condition(request, &mut placeholders)?;
    placeholders.check_all_used()?;
    let key = object(request, "Key")?
        .ok_or_else(|| Error::validation("1 validation error detected: Value null at 'key' failed to satisfy constraint: Member must not be null"))?;
    let txn = tables.db().begin_write()?;
    let old = {
        let meta = txn.open_table(TABLES)?;
        let stored = load(&meta, name)?.ok_or_else(|| not_found(name))?;
        let encoded = stored.schema()?.check_key(key)?;
        let mut items = txn.open_table(items_definition(&items_table_name(name)))?;
        let old = items
            .get(encoded.as_slice())?
            .map(|b| decode_item(b.value()))
            .transpose()?;
        check_condition(request, condition.as_ref(), old.as_ref())?;
        items.remove(encoded.as_slice())?;
        old
    };
    txn.commit()?;
    let mut response = Map::new();
    if rv == "ALL_OLD"
        && let Some(old) = old
    {
        response.insert("Attributes".into(), Value::Object(old));
    }
    Ok(answer_with(response, request, name, 1.0))
}

fn batch_get(tables: &Tables, request: &Map<String, Value>) -> Result<Value, Error> {
    let Some(requests) = object(request, "RequestItems")? else {
        return Err(Error::validation(
            "1 validation error detected: Value null at 'requestItems' failed to satisfy constraint: Member must not be null",
        ));
    };
    let n_keys: usize = requests
        .values()
        .map(|r| r.get("Keys").and_then(Value::as_array).map_or(0, Vec::len))
        .sum();
    if n_keys > BATCH_GET_KEYS_MAX {
        return Err(Error::validation(
            "Too many items requested for the BatchGetItem call",
        ));
    }
    let mut responses = Map::new();
    for (name, spec) in requests {
        check_table_name(name)?;
        let Some(spec) = spec.as_object() else {
            return Err(Error::Serialization(
                "RequestItems must map to objects".into(),
            ));
        };
        let mut placeholders = Placeholders::new(spec)?;
        let projection = projection(spec, &mut placeholders)?;
        placeholders.check_all_used()?;
        let txn = tables.db().begin_read()?;
        let meta = txn.open_table(TABLES)?;
        let stored = load(&meta, name)?.ok_or_else(|| not_found(name))?;
        let schema = stored.schema()?;
        let items = txn.open_table(items_definition(&items_table_name(name)))?;
        let mut found = Vec::new();
        for key in spec
            .get("Keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = key
                .as_object()
                .ok_or_else(|| Error::Serialization("Key must be an object".into()))?;
            let encoded = schema.check_key(key)?;
            if let Some(bytes) = items.get(encoded.as_slice())? {
                let item = decode_item(bytes.value())?;
                found.push(Value::Object(match &projection {
                    Some(paths) => expr::project(&item, paths),
                    None => item,
                }));
            }
        }
        responses.insert(name.clone(), Value::Array(found));
    }
    Ok(json!({"Responses": responses, "UnprocessedKeys": {}}))
}

fn batch_write(tables: &Tables, request: &Map<String, Value>) -> Result<Value, Error> {
    let Some(requests) = object(request, "RequestItems")? else {
        return Err(Error::validation(
            "1 validation error detected: Value null at 'requestItems' failed to satisfy constraint: Member must not be null",
        ));
    };
    let n: usize = requests
        .values()
        .map(|r| r.as_array().map_or(0, Vec::len))
        .sum();
    if n == 0 || n > BATCH_WRITE_ITEMS_MAX {
        return Err(Error::validation(
            "1 validation error detected: Value at 'requestItems' failed to satisfy constraint: Member must have length less than or equal to 25",
        ));
    }
    let txn = tables.db().begin_write()?;
    {
        let meta = txn.open_table(TABLES)?;
        for (name, writes) in requests {
            check_table_name(name)?;
            let stored = load(&meta, name)?.ok_or_else(|| not_found(name))?;
            let schema = stored.schema()?;
            let mut items = txn.open_table(items_definition(&items_table_name(name)))?;
            let mut seen = BTreeSet::new();
            for write in writes.as_array().into_iter().flatten() {
                if let Some(item) = write
                    .get("PutRequest")
                    .and_then(|p| p.get("Item"))
                    .and_then(Value::as_object)
                {
                    value::validate_item(item)?;
                    let item = normalize(item.clone());
                    let key = schema.check_item(&item)?;
                    check_index_keys(&stored, &item)?;
                    if !seen.insert(key.clone()) {
                        return Err(Error::validation(
                            "Provided list of item keys contains duplicates",
                        ));
                    }
                    items.insert(key.as_slice(), encode_item(&item)?.as_slice())?;
                } else if let Some(key) = write
                    .get("DeleteRequest")
                    .and_then(|p| p.get("Key"))
                    .and_then(Value::as_object)
                {
                    let key = schema.check_key(key)?;
                    if !seen.insert(key.clone()) {
                        return Err(Error::validation(
                            "Provided list of item keys contains duplicates",
                        ));
                    }
                    items.remove(key.as_slice())?;
                } else {
                    return Err(Error::validation(
                        "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes",
                    ));
                }
            }
        }
    }
    txn.commit()?;
    Ok(json!({"UnprocessedItems": {}}))
}

// ---- Query and Scan ----

/// The key condition of a Query, split into the partition value and a sort-key condition.
fn key_condition(
    request: &Map<String, Value>,
    placeholders: &mut Placeholders,
    schema: &Schema,
) -> Result<(Value, Option<Condition>), Error> {
    let condition = match (
        string(request, "KeyConditionExpression")?,
        object(request, "KeyConditions")?,
    ) {
        (Some(_), Some(_)) => {
            return Err(Error::validation(
                "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {KeyConditions} Expression parameters: {KeyConditionExpression}",
            ));
        }
        (Some(text), None) => expr::parse_condition(text, "KeyConditionExpression", placeholders)?,
        (None, Some(conditions)) => expr::legacy_conditions(conditions, false, false)?
            .ok_or_else(|| Error::validation("Conditions can be of length 1 or 2 only"))?,
        (None, None) => {
            return Err(Error::validation(
                "Either the KeyConditions or KeyConditionExpression parameter must be specified in the request.",
            ));
        }
    };
    let mut parts = Vec::new();
    flatten_and(condition, &mut parts)?;
    let mut hash = None;
    let mut range = None;
    let path_name = |o: &expr::Operand| match o {
        expr::Operand::Path(p) if p.len() == 1 => match p.first() {
            Some(Step::Name(n)) => Some(n.clone()),
            _ => None,
        },
        _ => None,
    };
    for part in parts {
        let attribute = match &part {
            Condition::Compare(a, _, _)
            | Condition::Between(a, _, _)
            | Condition::BeginsWith(a, _) => path_name(a),
            _ => {
                return Err(Error::validation(
                    "Invalid operator used in KeyConditionExpression: OR",
                ));
            }
        };
        let Some(attribute) = attribute else {
            return Err(Error::validation(
                "Invalid KeyConditionExpression: The left operand must be an attribute",
            ));
        };
        if attribute == schema.hash.name {
            let Condition::Compare(_, expr::Comparator::Eq, expr::Operand::Value(v)) = &part else {
                return Err(Error::validation("Query key condition not supported"));
            };
            if hash.replace(v.clone()).is_some() {
                return Err(Error::validation(
                    "KeyConditionExpressions must only contain one condition per key",
                ));
            }
            if value::type_of(v) != Some(schema.hash.kind.as_str()) {
                return Err(Error::validation(
                    "One or more parameter values were invalid: Condition parameter type does not match schema type",
                ));
            }
        } else if schema.range.as_ref().is_some_and(|r| r.name == attribute) {
            if range.replace(part).is_some() {
                return Err(Error::validation(
                    "KeyConditionExpressions must only contain one condition per key",
                ));
            }
        } else {
            return Err(Error::validation(format!(
                "Query key condition not supported; non-key attribute: {attribute}"
            )));
        }
    }
    let Some(hash) = hash else {
        return Err(Error::validation(format!(
            "Query condition missed key schema element: {}",
            schema.hash.name
        )));
    };
    Ok((hash, range))
}

fn flatten_and(condition: Condition, parts: &mut Vec<Condition>) -> Result<(), Error> {
    match condition {
        Condition::And(a, b) => {
            flatten_and(*a, parts)?;
            flatten_and(*b, parts)
        }
        Condition::Or(..) => Err(Error::validation(
            "Invalid operator used in KeyConditionExpression: OR",
        )),
        Condition::Not(..) => Err(Error::validation(
            "Invalid operator used in KeyConditionExpression: NOT",
        )),
        other => {
            if parts.len() >= 2 {
                return Err(Error::validation("Conditions can be of length 1 or 2 only"));
            }
            parts.push(other);
            Ok(())
        }
    }
}

fn query(tables: &Tables, request: &Map<String, Value>, is_query: bool) -> Result<Value, Error> {
    let name = table_name(request)?;
    let mut placeholders = Placeholders::new(request)?;
    let projection = projection(request, &mut placeholders)?;
    let filter_name = if is_query {
        "QueryFilter"
    } else {
        "ScanFilter"
    };
    let filter = match (
        string(request, "FilterExpression")?,
        object(request, filter_name)?,
    ) {
        (Some(_), Some(_)) => {
            return Err(Error::validation(format!(
                "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {{{filter_name}}} Expression parameters: {{FilterExpression}}"
            )));
        }
        (Some(text), None) => Some(expr::parse_condition(
            text,
            "FilterExpression",
            &mut placeholders,
        )?),
        (None, Some(f)) => expr::legacy_conditions(
            f,
            string(request, "ConditionalOperator")? == Some("OR"),
            false,
        )?,
        (None, None) => None,
    };
    let limit = match request.get("Limit") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Some(n as usize),
            _ => {
                return Err(Error::validation(format!(
                    "1 validation error detected: Value '{v}' at 'limit' failed to satisfy constraint: Member must have value greater than or equal to 1"
                )));
            }
        },
    };
    let select = string(request, "Select")?.unwrap_or(if projection.is_some() {
        "SPECIFIC_ATTRIBUTES"
    } else {
        "ALL_ATTRIBUTES"
    });
    if select == "COUNT" && projection.is_some() {
        return Err(Error::validation(
            "Cannot specify the AttributesToGet or ProjectionExpression when choosing to get only the Count",
        ));
    }
    let index_name = string(request, "IndexName")?;
    if index_name.is_some() && request.get("ConsistentRead").and_then(Value::as_bool) == Some(true)
    {
        return Err(Error::validation(
            "Consistent reads are not supported on global secondary indexes",
        ));
    }
    let forward = request
        .get("ScanIndexForward")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let segment = match (
        request.get("Segment").and_then(Value::as_u64),
        request.get("TotalSegments").and_then(Value::as_u64),
    ) {
        (Some(s), Some(t)) if t >= 1 && s < t && t <= 1_000_000 => Some((s, t)),
        (None, None) => None,
        _ => {
            return Err(Error::validation(
                "The Segment parameter is required but was not present in the request when parameter TotalSegments is present",
            ));
        }
    };

    let txn = tables.db().begin_read()?;
    let meta = txn.open_table(TABLES)?;
    let stored = load(&meta, name)?.ok_or_else(|| not_found(name))?;
    let table_schema = stored.schema()?;
    let index = match index_name {
        Some(index) => Some(stored.index(index)?),
        None => None,
    };
    let schema = index.as_ref().map_or(&table_schema, |(s, _)| s);
    let key_cond = if is_query {
        Some(key_condition(request, &mut placeholders, schema)?)
    } else {
        None
    };
    placeholders.check_all_used()?;
    let start_key = object(request, "ExclusiveStartKey")?;
    let items_table = txn.open_table(items_definition(&items_table_name(name)))?;

    // Candidates in result order, each with its table key bytes.
    let mut candidates: Vec<(Vec<u8>, Item)> = Vec::new();
    let start_bytes = match start_key {
        Some(k) => Some(
            table_schema
                .key_of(k)
                .ok_or_else(|| Error::validation("The provided starting key is invalid: The provided key element does not match the schema"))?,
        ),
        None => None,
    };
    if index.is_none() && !is_query {
        // Table scan: in key order, from the start key.
        let range = match &start_bytes {
            Some(s) => items_table.range::<&[u8]>((
                std::ops::Bound::Excluded(s.as_slice()),
                std::ops::Bound::Unbounded,
            ))?,
            None => items_table.range::<&[u8]>(..)?,
        };
        let mut bytes_seen = 0usize;
        for entry in range {
            let (k, v) = entry?;
            let key = k.value().to_vec();
            if let Some((s, t)) = segment
                && segment_of(&key, t) != s
            {
                continue;
            }
            bytes_seen += v.value().len();
            candidates.push((key, decode_item(v.value())?));
            if limit.is_some_and(|l| candidates.len() > l) || bytes_seen > PAGE_BYTES_MAX + 1 {
                break;
            }
        }
    } else {
        let (hash_value, range_cond) = key_cond.clone().unwrap_or((Value::Null, None));
        let iter = if index.is_none() {
            // Base-table query: the partition's key range.
            let hash = value::key_bytes(&hash_value, &schema.hash.kind).unwrap_or_default();
            let mut prefix = u32::try_from(hash.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes()
                .to_vec();
            prefix.extend_from_slice(&hash);
            let mut all = Vec::new();
            for entry in items_table.range::<&[u8]>(prefix.as_slice()..)? {
                let (k, v) = entry?;
                if !k.value().starts_with(&prefix) {
                    break;
                }
                all.push((k.value().to_vec(), decode_item(v.value())?));
            }
            all
        } else {
            let mut all = Vec::new();
            for entry in items_table.iter()? {
                let (k, v) = entry?;
                all.push((k.value().to_vec(), decode_item(v.value())?));
            }
            all
        };
        for (key, item) in iter {
            if schema.key_of(&item).is_none() {
                continue; // not in the (sparse) index
            }
            if let Some((s, t)) = segment
                && segment_of(&key, t) != s
            {
                continue;
            }
            if is_query {
                if !item
                    .get(&schema.hash.name)
                    .is_some_and(|v| value::equal(v, &hash_value))
                {
                    continue;
                }
                if let Some(cond) = &range_cond
                    && !expr::evaluate(&item, cond)
                {
                    continue;
                }
            }
            candidates.push((key, item));
        }
        let order = |a: &(Vec<u8>, Item), b: &(Vec<u8>, Item)| -> Ordering {
            let by_range = match (&schema.range, is_query) {
                (Some(r), true) => match (a.1.get(&r.name), b.1.get(&r.name)) {
                    (Some(x), Some(y)) => value::compare(x, y).unwrap_or(Ordering::Equal),
                    _ => Ordering::Equal,
                },
                _ => Ordering::Equal,
            };
            by_range.then_with(|| a.0.cmp(&b.0))
        };
        candidates.sort_by(order);
        if !forward {
            candidates.reverse();
        }
        if let (Some(start), Some(start_item)) = (&start_bytes, start_key) {
            let probe = (start.clone(), start_item.clone());
            candidates.retain(|c| {
                let o = order(c, &probe);
                if forward {
                    o == Ordering::Greater
                } else {
                    o == Ordering::Less
                }
            });
        }
    }

    let mut out = Vec::new();
    let mut scanned = 0usize;
    let mut bytes = 0usize;
    let mut last: Option<Item> = None;
    let total = candidates.len();
    for (position, (_, item)) in candidates.into_iter().enumerate() {
        if limit.is_some_and(|l| scanned >= l) || bytes > PAGE_BYTES_MAX {
            break;
        }
        scanned += 1;
        bytes += value::item_size(&item);
        let mut key = table_schema.project_key(&item);
        if index.is_some() {
            key.extend(schema.project_key(&item));
        }
        let more = position + 1 < total
            || (index.is_none() && !is_query && limit.is_some_and(|l| scanned >= l));
        last = if more { Some(key) } else { None };
        if let Some(f) = &filter
            && !expr::evaluate(&item, f)
        {
            continue;
        }
        let item = match (&projection, &index) {
            (Some(paths), _) => expr::project(&item, paths),
            (None, Some((_, projection))) => {
                project_index(&item, projection, &table_schema, schema)
            }
            (None, None) => item,
        };
        out.push(Value::Object(item));
    }
    // A table scan that stopped at its Limit with nothing after it still has no next page.
    if index.is_none() && !is_query && last.is_some() {
        let last_key = last.as_ref().and_then(|k| table_schema.key_of(k));
        if let Some(k) = last_key {
            let mut after = items_table.range::<&[u8]>((
                std::ops::Bound::Excluded(k.as_slice()),
                std::ops::Bound::Unbounded,
            ))?;
            let has_more = match segment {
                None => after.next().is_some(),
                Some((s, t)) => after.any(|e| e.is_ok_and(|(k, _)| segment_of(k.value(), t) == s)),
            };
            if !has_more {
                last = None;
            }
        }
    }
    let mut response = Map::new();
    response.insert("Count".into(), out.len().into());
    response.insert("ScannedCount".into(), scanned.into());
    if select != "COUNT" {
        response.insert("Items".into(), Value::Array(out));
    }
    if let Some(last) = last {
        response.insert("LastEvaluatedKey".into(), Value::Object(last));
    }
    Ok(answer_with(
        response,
        request,
        name,
        (bytes as f64 / 4096.0).ceil().max(0.5),
    ))
}

fn segment_of(key: &[u8], total: u64) -> u64 {
    // FNV-1a over the key bytes: stable across restarts.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash % total
}

fn project_index(item: &Item, projection: &Value, table: &Schema, index: &Schema) -> Item {
    match projection.get("ProjectionType").and_then(Value::as_str) {
        Some("KEYS_ONLY") | Some("INCLUDE") => {
            let mut out = table.project_key(item);
            out.extend(index.project_key(item));
            for name in projection
                .get("NonKeyAttributes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(n) = name.as_str()
                    && let Some(v) = item.get(n)
                {
                    out.insert(n.to_string(), v.clone());
                }
            }
            out
        }
        _ => item.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            account: "000000000000".into(),
            region: "us-east-1".into(),
            request_id: "r".into(),
        }
    }

    fn call(tables: &Tables, operation: &str, body: Value) -> Result<Value, Error> {
        let request = body.as_object().cloned().unwrap_or_default();
        handle(tables, &ctx(), operation, &request)
    }

    #[test]
    fn conditional_writes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("tables.redb");
        {
            let tables = Tables::open(&path).unwrap_or_else(|e| panic!("{e}"));
            call(
                &tables,
                "CreateTable",
                json!({
                "TableName": "leases", "BillingMode": "PAY_PER_REQUEST",
                "KeySchema": [{"AttributeName": "leaseKey", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "leaseKey", "AttributeType": "S"}]}),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let put = json!({"TableName": "leases", "Item": {"leaseKey": {"S": "s0"}, "counter": {"N": "01"}},
                             "ConditionExpression": "attribute_not_exists(leaseKey)"});
            call(&tables, "PutItem", put.clone()).unwrap_or_else(|e| panic!("{e}"));
            let again = call(&tables, "PutItem", put);
            assert!(matches!(
                again,
                Err(Error::ConditionalCheckFailed { item: None })
            ));
        }
        let tables = Tables::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let got = call(
            &tables,
            "GetItem",
            json!({"TableName": "leases", "Key": {"leaseKey": {"S": "s0"}}}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got["Item"]["counter"], json!({"N": "1"}));
        let missing = call(&tables, "DescribeTable", json!({"TableName": "nope"}));
        assert!(matches!(missing, Err(Error::ResourceNotFound(_))));
    }
}
