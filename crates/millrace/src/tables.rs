//! Wiring of the tables service (DynamoDB subset and CloudWatch metrics): the adapter the
//! server calls. The database is `DATA_DIR/tables.redb`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use millrace_server::{TablesAnswer, TablesApi, TablesCall, TablesProtocol, TablesService};
use millrace_tables::{Context, Protocol, ServiceDatum, Tables};

pub struct Adapter(pub Arc<Tables>);

pub fn open(data_dir: &Path) -> anyhow::Result<Arc<Tables>> {
    let tables =
        Tables::open(&data_dir.join("tables.redb")).context("cannot open the tables database")?;
    Ok(Arc::new(tables))
}

impl TablesService for Adapter {
    fn call(&self, call: TablesCall) -> TablesAnswer {
        let ctx = Context {
            account: call.account,
            region: call.region,
            request_id: call.request_id,
        };
        let answer = match call.api {
            TablesApi::DynamoDb => self.0.dynamodb_answer(&ctx, &call.operation, &call.body),
            TablesApi::CloudWatch => {
                let protocol = match call.protocol {
                    TablesProtocol::Json10 => Protocol::Json10,
                    TablesProtocol::Query => Protocol::Query,
                    TablesProtocol::RpcV2Cbor => Protocol::RpcV2Cbor,
                };
                self.0
                    .cloudwatch_answer(&ctx, protocol, &call.operation, &call.body)
            }
        };
        TablesAnswer {
            status: answer.status,
            content_type: answer.content_type,
            headers: answer.headers,
            body: answer.body,
        }
    }

    fn reset(&self) -> Result<(), String> {
        self.0.reset().map_err(|e| e.to_string())
    }

    fn put_service_metrics(
        &self,
        namespace: &str,
        at_secs: f64,
        data: &[millrace_server::metrics::Datum],
    ) -> Result<(), String> {
        let data: Vec<ServiceDatum> = data
            .iter()
            .map(|d| ServiceDatum {
                metric_name: d.metric_name,
                dimensions: d.dimensions.clone(),
                unit: d.unit,
                sample_count: d.sample_count,
                sum: d.sum,
                min: d.min,
                max: d.max,
            })
            .collect();
        self.0
            .put_service_metrics(namespace, at_secs, &data)
            .map_err(|e| e.to_string())
    }
}
