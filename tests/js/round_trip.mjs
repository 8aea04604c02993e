// AWS SDK for JavaScript v3 (default HTTP/2 handler): create a stream, wait until ACTIVE,
// put and get records with exact data, list shards, errors, delete.
// usage: node round_trip.mjs http://127.0.0.1:PORT
import {
  CreateStreamCommand,
  DeleteStreamCommand,
  DescribeStreamSummaryCommand,
  GetRecordsCommand,
  GetShardIteratorCommand,
  ListShardsCommand,
  ListStreamsCommand,
  PutRecordCommand,
  PutRecordsCommand,
  ResourceNotFoundException,
} from "@aws-sdk/client-kinesis";
import {
  assert, bytes, endpointFromArgs, makeClient, run, text, uniqueName, waitStatus, waitUntil,
} from "./lib.mjs";

const endpoint = endpointFromArgs();
const client = makeClient(endpoint);
const name = uniqueName("js");
const HASH_KEY_MAX = (1n << 128n) - 1n;

async function readShard(shardId, wantN) {
  let iterator = (await client.send(new GetShardIteratorCommand({
    StreamName: name, ShardId: shardId, ShardIteratorType: "TRIM_HORIZON",
  }))).ShardIterator;
  const records = [];
  await waitUntil(async () => {
    const out = await client.send(new GetRecordsCommand({ ShardIterator: iterator }));
    records.push(...out.Records);
    iterator = out.NextShardIterator;
    return records.length >= wantN;
  }, 10000, `${wantN} records from ${shardId}`, 250);
  return records;
}

await run([
  ["create stream and wait until ACTIVE", async () => {
    const out = await client.send(new CreateStreamCommand({ StreamName: name, ShardCount: 2 }));
    assert.equal(out.$metadata.httpStatusCode, 200);
    assert.ok(out.$metadata.requestId, "x-amzn-RequestId reaches the SDK");
    await waitStatus(client, name, "ACTIVE");
    const summary = (await client.send(new DescribeStreamSummaryCommand({ StreamName: name })))
      .StreamDescriptionSummary;
    assert.equal(summary.StreamName, name);
    assert.equal(summary.StreamARN, `arn:aws:kinesis:us-east-1:000000000000:stream/${name}`);
    assert.equal(summary.OpenShardCount, 2);
    assert.ok(summary.StreamCreationTimestamp instanceof Date);
    const streams = await client.send(new ListStreamsCommand({}));
    assert.ok(streams.StreamNames.includes(name));
  }],
  ["list shards", async () => {
    const out = await client.send(new ListShardsCommand({ StreamName: name }));
    assert.deepEqual(out.Shards.map((s) => s.ShardId), ["shardId-000000000000", "shardId-000000000001"]);
    assert.equal(out.Shards[0].HashKeyRange.StartingHashKey, "0");
    assert.equal(BigInt(out.Shards[0].HashKeyRange.EndingHashKey) + 1n,
      BigInt(out.Shards[1].HashKeyRange.StartingHashKey));
    assert.equal(BigInt(out.Shards[1].HashKeyRange.EndingHashKey), HASH_KEY_MAX);
  }],
  ["put and get records round trip", async () => {
    const binary = new Uint8Array(256).map((_, i) => i);
    const single = await client.send(new PutRecordCommand({
      StreamName: name, PartitionKey: "one", Data: binary, ExplicitHashKey: "0",
    }));
    assert.equal(single.ShardId, "shardId-000000000000");
    const batch = await client.send(new PutRecordsCommand({
      StreamName: name,
      Records: Array.from({ length: 20 }, (_, i) => ({
        PartitionKey: `pk-${i}`, Data: bytes(`js record ${i}`), ExplicitHashKey: (i % 2 ? HASH_KEY_MAX : 0n).toString(),
      })),
    }));
    assert.equal(batch.FailedRecordCount, 0);
    assert.equal(batch.Records.length, 20);
    batch.Records.forEach((r, i) => assert.equal(r.ShardId, i % 2 ? "shardId-000000000001" : "shardId-000000000000"));

    const first = await readShard("shardId-000000000000", 11);
    assert.deepEqual(Array.from(first[0].Data), Array.from(binary));
    assert.equal(first[0].SequenceNumber, single.SequenceNumber);
    assert.equal(first[0].PartitionKey, "one");
    assert.ok(first[0].ApproximateArrivalTimestamp instanceof Date);
    const evens = batch.Records.filter((_, i) => i % 2 === 0);
    assert.deepEqual(first.slice(1).map((r) => r.SequenceNumber), evens.map((r) => r.SequenceNumber));
    assert.deepEqual(first.slice(1).map((r) => text(r.Data)),
      Array.from({ length: 10 }, (_, k) => `js record ${2 * k}`));
    const seqs = first.map((r) => BigInt(r.SequenceNumber));
    for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], "sequence numbers increase");

    const second = await readShard("shardId-000000000001", 10);
    assert.deepEqual(second.map((r) => text(r.Data)), Array.from({ length: 10 }, (_, k) => `js record ${2 * k + 1}`));
  }],
  ["errors come back typed", async () => {
    await assert.rejects(
      client.send(new DescribeStreamSummaryCommand({ StreamName: `${name}-missing` })),
      (e) => e instanceof ResourceNotFoundException &&
        e.message === `Stream ${name}-missing under account 000000000000 not found.` &&
        e.$metadata.httpStatusCode === 400 && Boolean(e.$metadata.requestId),
    );
  }],
  ["delete stream", async () => {
    await client.send(new DeleteStreamCommand({ StreamName: name }));
    await waitStatus(client, name, null);
  }],
]);
