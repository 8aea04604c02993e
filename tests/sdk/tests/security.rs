//! Security with the AWS SDK for Rust against a real server: SigV4 authentication (right
//! and wrong secrets, unknown keys, session tokens, clock skew), a policy matrix of
//! least-privilege principals, resource policies (same and cross account), TLS with a
//! certificate from `millrace gen-cert`, and encryption at rest (KMS errors, disabled keys,
//! and no trace of a known plaintext anywhere in the data directory).

use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{EncryptionType, ShardIteratorType};
use millrace_sdk_tests::{
    ClientOptions, Server, binary, client_with, error_of, eventually, files_containing,
};

const ACCOUNT: &str = "123456789012";
const PARTNER_ACCOUNT: &str = "111122223333";
const REGION: &str = "us-east-1";

fn stream_arn(name: &str) -> String {
    format!("arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}")
}

/// Principals: an administrator, a producer that may only put to `orders`, a consumer
/// that may only read `orders`, an auditor with no identity policy (resource policies grant
/// it), a session credential, and a partner in another account allowed everything by its
/// own identity policy.
fn security_config() -> String {
    let orders = stream_arn("orders");
    format!(
        r#"
[[credential]]
access_key_id = "AKIDADMIN"
secret_access_key = "admin-secret"
principal = "arn:aws:iam::{ACCOUNT}:user/admin"

[[credential]]
access_key_id = "AKIDPRODUCER"
secret_access_key = "producer-secret"
principal = "arn:aws:iam::{ACCOUNT}:user/producer"

[[credential]]
access_key_id = "AKIDCONSUMER"
secret_access_key = "consumer-secret"
principal = "arn:aws:iam::{ACCOUNT}:user/consumer"

[[credential]]
access_key_id = "AKIDAUDITOR"
secret_access_key = "auditor-secret"
principal = "arn:aws:iam::{ACCOUNT}:user/auditor"

[[credential]]
access_key_id = "ASIASESSION"
secret_access_key = "session-secret"
session_token = "session-token-value"
principal = "arn:aws:sts::{ACCOUNT}:assumed-role/admin-role/session-1"

[[credential]]
access_key_id = "AKIDPARTNER"
secret_access_key = "partner-secret"
principal = "arn:aws:iam::{PARTNER_ACCOUNT}:user/partner"

[[policy]]
name = "admin"
principals = ["arn:aws:iam::{ACCOUNT}:user/admin", "arn:aws:sts::{ACCOUNT}:assumed-role/admin-role/session-1"]
document = '{{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", "Action": "kinesis:*", "Resource": "*"}}]}}'

[[policy]]
name = "producer"
principals = ["arn:aws:iam::{ACCOUNT}:user/producer"]
document = '''{{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow",
  "Action": ["kinesis:PutRecord", "kinesis:PutRecords"], "Resource": "{orders}"}}]}}'''

[[policy]]
name = "consumer"
principals = ["arn:aws:iam::{ACCOUNT}:user/consumer"]
document = '''{{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow",
  "Action": ["kinesis:Get*", "kinesis:Describe*", "kinesis:List*"],
  "Resource": "arn:aws:kinesis:*:{ACCOUNT}:stream/ord*"}}]}}'''

[[policy]]
name = "partner"
principals = ["arn:aws:iam::{PARTNER_ACCOUNT}:user/partner"]
document = '{{"Statement": [{{"Effect": "Allow", "Action": "kinesis:*", "Resource": "*"}}]}}'
"#
    )
}

fn client(server: &Server, key: &str, secret: &str) -> aws_sdk_kinesis::Client {
    client_with(&server.endpoint, REGION, &ClientOptions::keys(key, secret))
}

async fn create_orders(admin: &aws_sdk_kinesis::Client, name: &str) -> anyhow::Result<()> {
    admin
        .create_stream()
        .stream_name(name)
        .shard_count(1)
        .send()
        .await?;
    millrace_sdk_tests::wait_active(admin, name).await
}

async fn first_iterator(client: &aws_sdk_kinesis::Client, name: &str) -> anyhow::Result<String> {
    let out = client
        .get_shard_iterator()
        .stream_name(name)
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await?;
    out.shard_iterator()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no iterator"))
}

#[tokio::test]
async fn signatures_keys_and_session_tokens() -> anyhow::Result<()> {
    let server = Server::start_with_config(&security_config(), &[])?;
    let admin = client(&server, "AKIDADMIN", "admin-secret");
    admin.list_streams().send().await?;

    let wrong = client(&server, "AKIDADMIN", "not-the-secret");
    let (code, message) = error_of(wrong.list_streams().send().await);
    assert_eq!(code, "InvalidSignatureException");
    assert!(
        message.starts_with(
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details."
        ),
        "{message}"
    );
    assert!(!message.contains("admin-secret"), "{message}");

    let unknown = client(&server, "AKIDNOBODY", "whatever");
    let (code, message) = error_of(unknown.list_streams().send().await);
    assert_eq!(
        (code.as_str(), message.as_str()),
        (
            "UnrecognizedClientException",
            "The security token included in the request is invalid."
        )
    );

    let mut session = ClientOptions::keys("ASIASESSION", "session-secret");
    session.session_token = Some("session-token-value".into());
    client_with(&server.endpoint, REGION, &session)
        .list_streams()
        .send()
        .await?;
    session.session_token = Some("stolen-or-stale".into());
    let (code, message) = error_of(
        client_with(&server.endpoint, REGION, &session)
            .list_streams()
            .send()
            .await,
    );
    assert_eq!(
        (code.as_str(), message.as_str()),
        (
            "UnrecognizedClientException",
            "The security token included in the request is invalid"
        )
    );
    session.session_token = None;
    let (code, _) = error_of(
        client_with(&server.endpoint, REGION, &session)
            .list_streams()
            .send()
            .await,
    );
    assert_eq!(code, "UnrecognizedClientException");
    Ok(())
}

#[tokio::test]
async fn clock_skew_over_fifteen_minutes_is_refused() -> anyhow::Result<()> {
    let server = Server::start_with_config(&security_config(), &[])?;
    let mut options = ClientOptions::keys("AKIDADMIN", "admin-secret");
    // Five minutes off is fine.
    options.signing_time = Some(SystemTime::now() - Duration::from_secs(300));
    client_with(&server.endpoint, REGION, &options)
        .list_streams()
        .send()
        .await?;
    options.signing_time = Some(SystemTime::now() - Duration::from_secs(20 * 60));
    let (code, message) = error_of(
        client_with(&server.endpoint, REGION, &options)
            .list_streams()
            .send()
            .await,
    );
    assert_eq!(code, "InvalidSignatureException");
    assert!(
        message.starts_with("Signature expired: ")
            && message.contains(" is now earlier than ")
            && message.ends_with(" - 15 min.)"),
        "{message}"
    );
    options.signing_time = Some(SystemTime::now() + Duration::from_secs(20 * 60));
    let (code, message) = error_of(
        client_with(&server.endpoint, REGION, &options)
            .list_streams()
            .send()
            .await,
    );
    assert_eq!(code, "InvalidSignatureException");
    assert!(
        message.starts_with("Signature not yet current: ") && message.ends_with(" + 15 min.)"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn least_privilege_policy_matrix() -> anyhow::Result<()> {
    let server = Server::start_with_config(&security_config(), &[])?;
    let admin = client(&server, "AKIDADMIN", "admin-secret");
    let producer = client(&server, "AKIDPRODUCER", "producer-secret");
    let consumer = client(&server, "AKIDCONSUMER", "consumer-secret");
    create_orders(&admin, "orders").await?;
    create_orders(&admin, "other").await?;

    // The producer may put to orders, and nothing else.
    producer
        .put_record()
        .stream_name("orders")
        .partition_key("p")
        .data(Blob::new("from the producer"))
        .send()
        .await?;
    producer
        .put_records()
        .stream_name("orders")
        .records(
            aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                .partition_key("p")
                .data(Blob::new("batch"))
                .build()?,
        )
        .send()
        .await?;
    let (code, message) = error_of(
        producer
            .put_record()
            .stream_name("other")
            .partition_key("p")
            .data(Blob::new("x"))
            .send()
            .await,
    );
    assert_eq!(code, "AccessDeniedException");
    assert_eq!(
        message,
        format!(
            "User: arn:aws:iam::{ACCOUNT}:user/producer is not authorized to perform: \
             kinesis:PutRecord on resource: {} because no identity-based policy allows the \
             kinesis:PutRecord action",
            stream_arn("other")
        )
    );
    let denied = |r: (String, String)| r.0 == "AccessDeniedException";
    assert!(denied(error_of(
        producer
            .get_shard_iterator()
            .stream_name("orders")
            .shard_id("shardId-000000000000")
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
    )));
    assert!(denied(error_of(producer.list_streams().send().await)));
    assert!(denied(error_of(
        producer.delete_stream().stream_name("orders").send().await
    )));
    assert!(denied(error_of(
        producer
            .describe_stream_summary()
            .stream_name("orders")
            .send()
            .await
    )));

    // The consumer may read orders (by name or ARN) and not write.
    let iterator = first_iterator(&consumer, "orders").await?;
    let records = consumer
        .get_records()
        .shard_iterator(iterator)
        .send()
        .await?;
    assert_eq!(records.records().len(), 2);
    consumer
        .list_shards()
        .stream_arn(stream_arn("orders"))
        .send()
        .await?;
    consumer
        .describe_stream_summary()
        .stream_name("orders")
        .send()
        .await?;
    let (code, message) = error_of(
        consumer
            .put_record()
            .stream_name("orders")
            .partition_key("p")
            .data(Blob::new("x"))
            .send()
            .await,
    );
    assert_eq!(code, "AccessDeniedException");
    assert!(message.contains("kinesis:PutRecord"), "{message}");
    assert!(denied(error_of(
        consumer
            .describe_stream_summary()
            .stream_name("other")
            .send()
            .await
    )));
    // Account-level operations act on resource "*".
    let (_, message) = error_of(consumer.describe_limits().send().await);
    assert!(
        message.contains("kinesis:DescribeLimits on resource: * because"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn resource_policies_grant_and_deny() -> anyhow::Result<()> {
    let server = Server::start_with_config(&security_config(), &[])?;
    let admin = client(&server, "AKIDADMIN", "admin-secret");
    let auditor = client(&server, "AKIDAUDITOR", "auditor-secret");
    let producer = client(&server, "AKIDPRODUCER", "producer-secret");
    let partner = client(&server, "AKIDPARTNER", "partner-secret");
    create_orders(&admin, "orders").await?;
    let arn = stream_arn("orders");

    // No identity policy: denied until the stream's policy names the auditor.
    let (code, _) = error_of(
        auditor
            .describe_stream_summary()
            .stream_name("orders")
            .send()
            .await,
    );
    assert_eq!(code, "AccessDeniedException");
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow",
             "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:user/auditor")},
             "Action": ["kinesis:DescribeStreamSummary", "kinesis:GetShardIterator",
                        "kinesis:GetRecords"],
             "Resource": arn},
            {"Effect": "Deny",
             "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:user/producer")},
             "Action": "kinesis:PutRecord",
             "Resource": arn},
            {"Effect": "Allow",
             "Principal": {"AWS": PARTNER_ACCOUNT},
             "Action": ["kinesis:PutRecord", "kinesis:DescribeStreamSummary"],
             "Resource": arn}
        ]
    });
    admin
        .put_resource_policy()
        .resource_arn(&arn)
        .policy(policy.to_string())
        .send()
        .await?;
    auditor
        .describe_stream_summary()
        .stream_name("orders")
        .send()
        .await?;
    let iterator = first_iterator(&auditor, "orders").await?;
    auditor
        .get_records()
        .shard_iterator(iterator)
        .send()
        .await?;
    let (code, _) = error_of(
        auditor
            .put_record()
            .stream_name("orders")
            .partition_key("p")
            .data(Blob::new("x"))
            .send()
            .await,
    );
    assert_eq!(code, "AccessDeniedException");

    // An explicit deny in the resource policy beats the producer's identity allow.
    let (code, message) = error_of(
        producer
            .put_record()
            .stream_name("orders")
            .partition_key("p")
            .data(Blob::new("x"))
            .send()
            .await,
    );
    assert_eq!(code, "AccessDeniedException");
    assert!(
        message.ends_with("with an explicit deny in a resource-based policy"),
        "{message}"
    );
    // PutRecords is not denied, and the identity policy allows it.
    producer
        .put_records()
        .stream_name("orders")
        .records(
            aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                .partition_key("p")
                .data(Blob::new("y"))
                .build()?,
        )
        .send()
        .await?;

    // Cross-account: the partner's identity policy allows everything, the stream's policy
    // allows PutRecord and DescribeStreamSummary to its account, so only those work.
    partner
        .put_record()
        .stream_arn(&arn)
        .partition_key("p")
        .data(Blob::new("from a partner"))
        .send()
        .await?;
    let (code, message) = error_of(
        partner
            .get_shard_iterator()
            .stream_arn(&arn)
            .shard_id("shardId-000000000000")
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await,
    );
    assert_eq!(code, "AccessDeniedException");
    assert!(
        message.ends_with(
            "because no resource-based policy allows the kinesis:GetShardIterator action"
        ),
        "{message}"
    );

    // A document this server cannot evaluate is refused rather than stored.
    let (code, _) = error_of(
        admin
            .put_resource_policy()
            .resource_arn(&arn)
            .policy(
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kinesis:*",
                   "Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}"#,
            )
            .send()
            .await,
    );
    assert_eq!(code, "InvalidArgumentException");
    Ok(())
}

fn gen_cert(dir: &Path) -> anyhow::Result<()> {
    let status = std::process::Command::new(binary())
        .arg("gen-cert")
        .arg("--out")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "gen-cert failed");
    Ok(())
}

#[tokio::test]
async fn tls_with_a_generated_certificate() -> anyhow::Result<()> {
    let certs = tempfile::tempdir()?;
    gen_cert(certs.path())?;
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(certs.path().join("key.pem"))?
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let config = format!(
        "{}\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        security_config(),
        certs.path().join("cert.pem").display(),
        certs.path().join("key.pem").display()
    );
    let server = Server::start_with_config(&config, &[])?;
    let mut options = ClientOptions::keys("AKIDADMIN", "admin-secret");
    options.root_pem = Some(std::fs::read(certs.path().join("cert.pem"))?);
    let admin = client_with(&server.https_endpoint(), REGION, &options);
    create_orders(&admin, "orders").await?;
    let put = admin
        .put_record()
        .stream_name("orders")
        .partition_key("p")
        .data(Blob::new("over tls"))
        .send()
        .await?;
    assert!(!put.sequence_number().is_empty());

    // A client that trusts another certificate cannot talk to the server...
    let other = tempfile::tempdir()?;
    gen_cert(other.path())?;
    options.root_pem = Some(std::fs::read(other.path().join("cert.pem"))?);
    let untrusting = client_with(&server.https_endpoint(), REGION, &options);
    assert!(untrusting.list_streams().send().await.is_err());
    // ... and neither can plain HTTP.
    let plain = client(&server, "AKIDADMIN", "admin-secret");
    assert!(plain.list_streams().send().await.is_err());
    Ok(())
}

/// The key store of a server started by the harness (the default, beside the data dir).
fn key_file(server: &Server) -> std::path::PathBuf {
    let name = server
        .data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    server
        .data_dir
        .with_file_name(format!("{name}.kms-keys.json"))
}

fn kms_cli(server: &Server, args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new(binary())
        .arg("kms")
        .arg(args.first().copied().unwrap_or(""))
        .arg("--key-file")
        .arg(key_file(server))
        .args(args.get(1..).unwrap_or_default())
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "millrace kms {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
}

#[tokio::test]
async fn encrypted_streams_leave_no_plaintext_in_the_data_directory() -> anyhow::Result<()> {
    let mut server = Server::start(&[])?;
    let kinesis = server.client();
    create_orders(&kinesis, "secret").await?;
    create_orders(&kinesis, "plain").await?;
    kinesis
        .start_stream_encryption()
        .stream_name("secret")
        .encryption_type(EncryptionType::Kms)
        .key_id("alias/aws/kinesis")
        .send()
        .await?;
    millrace_sdk_tests::wait_active(&kinesis, "secret").await?;
    let secret_text = "MILLRACE-CANARY-7f3a9c-the-eagle-lands-at-dawn";
    let secret_key = "MILLRACE-KEY-CANARY-51d2e0";
    let plain_text = "MILLRACE-CONTROL-CANARY-0b77e1";
    let put = kinesis
        .put_record()
        .stream_name("secret")
        .partition_key(secret_key)
        .data(Blob::new(secret_text))
        .send()
        .await?;
    assert_eq!(put.encryption_type(), Some(&EncryptionType::Kms));
    kinesis
        .put_records()
        .stream_name("secret")
        .records(
            aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                .partition_key(secret_key)
                .data(Blob::new(secret_text.repeat(100)))
                .build()?,
        )
        .send()
        .await?;
    kinesis
        .put_record()
        .stream_name("plain")
        .partition_key("p")
        .data(Blob::new(plain_text))
        .send()
        .await?;
    let iterator = first_iterator(&kinesis, "secret").await?;
    let read = kinesis
        .get_records()
        .shard_iterator(iterator)
        .send()
        .await?;
    let first = read
        .records()
        .first()
        .ok_or_else(|| anyhow::anyhow!("no record"))?;
    assert_eq!(first.data().as_ref(), secret_text.as_bytes());
    assert_eq!(first.partition_key(), Some(secret_key));
    assert_eq!(first.encryption_type(), Some(&EncryptionType::Kms));

    // Stop cleanly (checkpoint, segments written), then search every file.
    assert_eq!(server.terminate()?, Some(0));
    let control = files_containing(&server.data_dir, plain_text.as_bytes())?;
    assert!(
        !control.is_empty(),
        "the scan must find the unencrypted control record, or it proves nothing"
    );
    for needle in [secret_text, secret_key] {
        let hits = files_containing(&server.data_dir, needle.as_bytes())?;
        assert!(hits.is_empty(), "{needle} found in {hits:?}");
    }
    // The master key lives outside the data directory, owner-only; the directory is 0700.
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(key_file(&server))?.permissions().mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let dir_mode = std::fs::metadata(&server.data_dir)?.permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700);

    // After a restart the records still decrypt.
    server.restart()?;
    let kinesis = server.client();
    let iterator = first_iterator(&kinesis, "secret").await?;
    let read = kinesis
        .get_records()
        .shard_iterator(iterator)
        .send()
        .await?;
    assert_eq!(read.records().len(), 2);
    assert_eq!(
        read.records().first().map(|r| r.data().as_ref().to_vec()),
        Some(secret_text.as_bytes().to_vec())
    );
    Ok(())
}

#[tokio::test]
async fn kms_not_found_disabled_and_stop_encryption() -> anyhow::Result<()> {
    let server = Server::start(&[])?;
    let kinesis = server.client();
    create_orders(&kinesis, "orders").await?;
    let (code, message) = error_of(
        kinesis
            .start_stream_encryption()
            .stream_name("orders")
            .encryption_type(EncryptionType::Kms)
            .key_id("alias/does-not-exist")
            .send()
            .await,
    );
    assert_eq!(code, "KMSNotFoundException");
    assert!(message.contains("alias/does-not-exist"), "{message}");

    let key_id = kms_cli(&server, &["create-key", "--alias", "alias/orders-key"])?;
    kinesis
        .start_stream_encryption()
        .stream_name("orders")
        .encryption_type(EncryptionType::Kms)
        .key_id(format!("arn:aws:kms:{REGION}:000000000000:key/{key_id}"))
        .send()
        .await?;
    millrace_sdk_tests::wait_active(&kinesis, "orders").await?;
    let put = |data: &'static str| {
        kinesis
            .put_record()
            .stream_name("orders")
            .partition_key("p")
            .data(Blob::new(data))
            .send()
    };
    put("sealed").await?;

    // Disabling the key stops writes and reads (the server re-reads the key file).
    kms_cli(&server, &["disable-key", "alias/orders-key"])?;
    // Poll with a call that changes nothing while it still succeeds (re-naming the same
    // key), until the server has re-read the key file.
    let kinesis_ref = &kinesis;
    eventually(
        Duration::from_secs(10),
        "KMSDisabledException",
        move || async move {
            let result = kinesis_ref
                .start_stream_encryption()
                .stream_name("orders")
                .encryption_type(EncryptionType::Kms)
                .key_id("alias/orders-key")
                .send()
                .await;
            Ok(result.is_err().then_some(()))
        },
    )
    .await?;
    let (code, _) = error_of(put("refused").await);
    assert_eq!(code, "KMSDisabledException");
    let iterator = first_iterator(&kinesis, "orders").await?;
    let (code, _) = error_of(kinesis.get_records().shard_iterator(iterator).send().await);
    assert_eq!(code, "KMSDisabledException");
    let (code, _) = error_of(
        kinesis
            .start_stream_encryption()
            .stream_name("orders")
            .encryption_type(EncryptionType::Kms)
            .key_id("alias/orders-key")
            .send()
            .await,
    );
    assert_eq!(code, "KMSDisabledException");

    kms_cli(&server, &["enable-key", &key_id])?;
    let put_ref = &put;
    eventually(
        Duration::from_secs(10),
        "the key enabled again",
        move || async move { Ok(put_ref("accepted").await.is_ok().then_some(())) },
    )
    .await?;

    // StopStreamEncryption: new records in clear, the sealed ones still readable.
    kinesis
        .stop_stream_encryption()
        .stream_name("orders")
        .encryption_type(EncryptionType::Kms)
        .key_id("alias/orders-key")
        .send()
        .await?;
    millrace_sdk_tests::wait_active(&kinesis, "orders").await?;
    let after = put("clear again").await?;
    assert_eq!(after.encryption_type(), Some(&EncryptionType::None));
    let iterator = first_iterator(&kinesis, "orders").await?;
    let read = kinesis
        .get_records()
        .shard_iterator(iterator)
        .send()
        .await?;
    let datas: Vec<(Vec<u8>, Option<EncryptionType>)> = read
        .records()
        .iter()
        .map(|r| (r.data().as_ref().to_vec(), r.encryption_type().cloned()))
        .collect();
    assert_eq!(
        datas,
        vec![
            (b"sealed".to_vec(), Some(EncryptionType::Kms)),
            (b"accepted".to_vec(), Some(EncryptionType::Kms)),
            (b"clear again".to_vec(), Some(EncryptionType::None)),
        ]
    );
    Ok(())
}
