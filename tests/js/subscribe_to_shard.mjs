// AWS SDK for JavaScript v3: enhanced fan-out. Register consumers, SubscribeToShard over
// the default HTTP/2 handler, put records, receive them as SubscribeToShardEvent events.
// Each subscription uses its own consumer: AWS refuses a second SubscribeToShard for the
// same consumer and shard within 5 seconds (ResourceInUseException).
// usage: node subscribe_to_shard.mjs http://127.0.0.1:PORT
import {
  CreateStreamCommand,
  DeleteStreamCommand,
  DeregisterStreamConsumerCommand,
  DescribeStreamConsumerCommand,
  DescribeStreamSummaryCommand,
  PutRecordsCommand,
  RegisterStreamConsumerCommand,
  SubscribeToShardCommand,
} from "@aws-sdk/client-kinesis";
import {
  assert, bytes, endpointFromArgs, makeClient, run, text, uniqueName, waitStatus, waitUntil,
} from "./lib.mjs";

const endpoint = endpointFromArgs();
const client = makeClient(endpoint);
const name = uniqueName("jsefo");
const SHARD = "shardId-000000000000";
const RECEIVE_TIMEOUT_MS = 15000;
let streamArn;
const consumerArns = {}; // name -> ARN
const CONSUMERS = ["from-trim-horizon", "from-latest", "after-sequence-number"];

// Reads events from a subscription until `wantN` records arrived; returns them and the events.
async function receive(subscription, wantN) {
  const records = [];
  const events = [];
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), RECEIVE_TIMEOUT_MS);
  const out = await client.send(subscription, { abortSignal: abort.signal });
  try {
    for await (const event of out.EventStream) {
      assert.ok(event.SubscribeToShardEvent, `unexpected event ${JSON.stringify(Object.keys(event))}`);
      events.push(event.SubscribeToShardEvent);
      records.push(...event.SubscribeToShardEvent.Records);
      if (records.length >= wantN) break;
    }
  } catch (e) {
    if (abort.signal.aborted) {
      throw new Error(`received ${records.length} of ${wantN} records within ${RECEIVE_TIMEOUT_MS} ms`);
    }
    throw e;
  } finally {
    clearTimeout(timer);
    abort.abort(); // end the subscription (the server holds it open up to 5 minutes)
  }
  return { records, events };
}

async function putBatch(prefix, n) {
  const out = await client.send(new PutRecordsCommand({
    StreamName: name,
    Records: Array.from({ length: n }, (_, i) => ({ PartitionKey: `${prefix}-${i}`, Data: bytes(`${prefix} ${i}`) })),
  }));
  assert.equal(out.FailedRecordCount, 0);
  return out.Records.map((r) => r.SequenceNumber);
}

await run([
  ["create stream and register consumers", async () => {
    await client.send(new CreateStreamCommand({ StreamName: name, ShardCount: 1 }));
    await waitStatus(client, name, "ACTIVE");
    streamArn = (await client.send(new DescribeStreamSummaryCommand({ StreamName: name })))
      .StreamDescriptionSummary.StreamARN;
    for (const consumerName of CONSUMERS) {
      const consumer = (await client.send(new RegisterStreamConsumerCommand({
        StreamARN: streamArn, ConsumerName: consumerName,
      }))).Consumer;
      assert.ok(consumer.ConsumerARN.startsWith(`${streamArn}/consumer/${consumerName}:`), consumer.ConsumerARN);
      consumerArns[consumerName] = consumer.ConsumerARN;
    }
    for (const consumerName of CONSUMERS) {
      await waitUntil(async () => (await client.send(new DescribeStreamConsumerCommand({
        ConsumerARN: consumerArns[consumerName],
      }))).ConsumerDescription.ConsumerStatus === "ACTIVE", 20000, `consumer ${consumerName} ACTIVE`);
    }
  }],
  ["subscribe from TRIM_HORIZON receives earlier records", async () => {
    const seqs = await putBatch("early", 5);
    const { records } = await receive(new SubscribeToShardCommand({
      ConsumerARN: consumerArns["from-trim-horizon"], ShardId: SHARD, StartingPosition: { Type: "TRIM_HORIZON" },
    }), 5);
    assert.deepEqual(records.map((r) => r.SequenceNumber), seqs);
    assert.deepEqual(records.map((r) => text(r.Data)), Array.from({ length: 5 }, (_, i) => `early ${i}`));
    assert.deepEqual(records.map((r) => r.PartitionKey), Array.from({ length: 5 }, (_, i) => `early-${i}`));
    records.forEach((r) => assert.ok(r.ApproximateArrivalTimestamp instanceof Date));
  }],
  ["a second subscription of the same consumer and shard within 5 s is refused", async () => {
    await assert.rejects(
      client.send(new SubscribeToShardCommand({
        ConsumerARN: consumerArns["from-trim-horizon"], ShardId: SHARD, StartingPosition: { Type: "LATEST" },
      })),
      (e) => e.name === "ResourceInUseException",
    );
  }],
  ["subscribe from LATEST receives records put while subscribed", async () => {
    const subscription = new SubscribeToShardCommand({
      ConsumerARN: consumerArns["from-latest"], ShardId: SHARD, StartingPosition: { Type: "LATEST" },
    });
    const records = [];
    const events = [];
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), RECEIVE_TIMEOUT_MS);
    // The response resolves once the subscription is established: records put after it are
    // after LATEST.
    const out = await client.send(subscription, { abortSignal: abort.signal });
    const seqs = await putBatch("live", 30);
    try {
      for await (const event of out.EventStream) {
        events.push(event.SubscribeToShardEvent);
        records.push(...event.SubscribeToShardEvent.Records);
        if (records.length >= 30) break;
      }
    } catch (e) {
      if (abort.signal.aborted) throw new Error(`received ${records.length} of 30 live records in time`);
      throw e;
    } finally {
      clearTimeout(timer);
      abort.abort();
    }
    assert.deepEqual(records.map((r) => r.SequenceNumber), seqs);
    assert.deepEqual(records.map((r) => text(r.Data)), Array.from({ length: 30 }, (_, i) => `live ${i}`));
    const last = events[events.length - 1];
    assert.equal(last.ContinuationSequenceNumber, seqs[seqs.length - 1]);
    assert.equal(typeof last.MillisBehindLatest, "number");
  }],
  ["subscribe AFTER_SEQUENCE_NUMBER", async () => {
    const seqs = await putBatch("after", 4);
    const { records } = await receive(new SubscribeToShardCommand({
      ConsumerARN: consumerArns["after-sequence-number"], ShardId: SHARD,
      StartingPosition: { Type: "AFTER_SEQUENCE_NUMBER", SequenceNumber: seqs[1] },
    }), 2);
    assert.deepEqual(records.map((r) => r.SequenceNumber), seqs.slice(2));
  }],
  ["deregister consumers and delete stream", async () => {
    for (const consumerName of CONSUMERS) {
      await client.send(new DeregisterStreamConsumerCommand({ ConsumerARN: consumerArns[consumerName] }));
    }
    await client.send(new DeleteStreamCommand({ StreamName: name }));
    await waitStatus(client, name, null);
  }],
]);
