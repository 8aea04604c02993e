// Shared helpers of the JavaScript suites: the client (with the SDK's DEFAULT request
// handler, which is HTTP/2 with prior knowledge on http://), deadlines and assertions.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import {
  KinesisClient,
  DescribeStreamSummaryCommand,
  ResourceNotFoundException,
} from "@aws-sdk/client-kinesis";

export { assert };

export function endpointFromArgs() {
  const endpoint = process.argv[2] ?? process.env.MILLRACE_ENDPOINT;
  if (!endpoint) {
    console.error("usage: node SCRIPT.mjs http://127.0.0.1:PORT (or MILLRACE_ENDPOINT)");
    process.exit(2);
  }
  return endpoint;
}

export function makeClient(endpoint) {
  const client = new KinesisClient({
    endpoint,
    region: "us-east-1",
    // The security suite (tests/python/test_security.py) passes real keys of a server
    // with authentication on; the others run against development mode.
    credentials: {
      accessKeyId: process.env.MILLRACE_ACCESS_KEY_ID ?? "AKIDMILLRACEJS",
      secretAccessKey: process.env.MILLRACE_SECRET_ACCESS_KEY ?? "secret",
    },
    maxAttempts: 1, // never hide a server error behind a retry
  });
  // The point of this suite: the default handler speaks HTTP/2 to an http:// endpoint.
  assert.equal(client.config.requestHandler.constructor.name, "NodeHttp2Handler");
  return client;
}

export function uniqueName(prefix) {
  return `${prefix}-${randomUUID().slice(0, 12)}`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Polls `condition` until it returns a truthy value, failing after `timeoutMs`.
export async function waitUntil(condition, timeoutMs, what, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await condition();
    if (last) return last;
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last value: ${JSON.stringify(last)}`);
    }
    await sleep(intervalMs);
  }
}

export async function streamStatus(client, name) {
  try {
    const out = await client.send(new DescribeStreamSummaryCommand({ StreamName: name }));
    return out.StreamDescriptionSummary.StreamStatus;
  } catch (e) {
    if (e instanceof ResourceNotFoundException) return null;
    throw e;
  }
}

export async function waitStatus(client, name, status) {
  await waitUntil(async () => (await streamStatus(client, name)) === status, 20000,
    `stream ${name} to be ${status ?? "gone"}`);
}

export const bytes = (text) => new TextEncoder().encode(text);
export const text = (data) => new TextDecoder().decode(data);

// Runs named async checks in order; prints one line per check and a closing count.
export async function run(checks) {
  let failed = 0;
  for (const [name, check] of checks) {
    const started = Date.now();
    try {
      await check();
      console.log(`ok   ${name} (${Date.now() - started} ms)`);
    } catch (e) {
      failed += 1;
      console.log(`FAIL ${name}: ${e?.stack ?? e}`);
      if (e?.$metadata) console.log(`     metadata: ${JSON.stringify(e.$metadata)}`);
    }
  }
  console.log(`${checks.length - failed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}
