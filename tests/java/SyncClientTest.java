// AWS SDK for Java v2, synchronous KinesisClient on the Apache HTTP client (HTTP/1.1).
// The SDK speaks CBOR 1.1 to Kinesis by default; with -Daws.cborEnabled=false it speaks JSON 1.1.
// An interceptor checks that every request and response used the expected content type.
//
// usage: java -cp CLASSES:JARS/* SyncClientTest ENDPOINT EXPECTED_CONTENT_TYPE
// Exit status 0 when every check passed; prints one line per check and "N passed, N failed".

import java.math.BigInteger;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.BooleanSupplier;

import software.amazon.awssdk.auth.credentials.AwsBasicCredentials;
import software.amazon.awssdk.auth.credentials.StaticCredentialsProvider;
import software.amazon.awssdk.awscore.retry.AwsRetryStrategy;
import software.amazon.awssdk.core.SdkBytes;
import software.amazon.awssdk.core.interceptor.Context;
import software.amazon.awssdk.core.interceptor.ExecutionAttributes;
import software.amazon.awssdk.core.interceptor.ExecutionInterceptor;
import software.amazon.awssdk.http.apache.ApacheHttpClient;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.kinesis.KinesisClient;
import software.amazon.awssdk.services.kinesis.model.*;

public class SyncClientTest {
    static final BigInteger HASH_KEY_MAX = BigInteger.ONE.shiftLeft(128).subtract(BigInteger.ONE);

    /** Records the Content-Type of every request and response. */
    static final class ContentTypes implements ExecutionInterceptor {
        final Set<String> requests = ConcurrentHashMap.newKeySet();
        final Set<String> responses = ConcurrentHashMap.newKeySet();

        @Override
        public void beforeTransmission(Context.BeforeTransmission context, ExecutionAttributes attributes) {
            requests.add(context.httpRequest().firstMatchingHeader("Content-Type").orElse("(none)"));
        }

        @Override
        public void afterTransmission(Context.AfterTransmission context, ExecutionAttributes attributes) {
            responses.add(context.httpResponse().firstMatchingHeader("Content-Type").orElse("(none)"));
        }
    }

    interface Check { void run() throws Exception; }

    static int failed = 0;
    static int passed = 0;

    static void check(String name, Check body) {
        long started = System.nanoTime();
        try {
            body.run();
            passed++;
            System.out.printf("ok   %s (%d ms)%n", name, (System.nanoTime() - started) / 1_000_000);
        } catch (Throwable t) {
            failed++;
            System.out.printf("FAIL %s: %s%n", name, t);
            t.printStackTrace(System.out);
        }
    }

    static void expect(boolean condition, String message) {
        if (!condition) throw new AssertionError(message);
    }

    static void expectEqual(Object expected, Object actual, String what) {
        if (expected == null ? actual != null : !expected.equals(actual)) {
            throw new AssertionError(what + ": expected <" + expected + "> but was <" + actual + ">");
        }
    }

    static void waitUntil(BooleanSupplier condition, Duration timeout, String what) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) throw new AssertionError("timed out after " + timeout + " waiting for " + what);
            Thread.sleep(100);
        }
    }

    static StreamStatus status(KinesisClient kinesis, String name) {
        try {
            return kinesis.describeStreamSummary(r -> r.streamName(name)).streamDescriptionSummary().streamStatus();
        } catch (ResourceNotFoundException e) {
            return null;
        }
    }

    static List<software.amazon.awssdk.services.kinesis.model.Record> read(KinesisClient kinesis, String name, String shardId, int wantN) throws InterruptedException {
        String iterator = kinesis.getShardIterator(r -> r.streamName(name).shardId(shardId)
                .shardIteratorType(ShardIteratorType.TRIM_HORIZON)).shardIterator();
        List<software.amazon.awssdk.services.kinesis.model.Record> records = new ArrayList<>();
        long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
        while (records.size() < wantN) {
            String it = iterator;
            GetRecordsResponse out = kinesis.getRecords(r -> r.shardIterator(it));
            records.addAll(out.records());
            iterator = out.nextShardIterator();
            if (records.size() >= wantN) break;
            if (System.nanoTime() > deadline) throw new AssertionError("read " + records.size() + " of " + wantN);
            if (out.records().isEmpty()) Thread.sleep(250);
        }
        return records;
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: SyncClientTest ENDPOINT EXPECTED_CONTENT_TYPE");
            System.exit(2);
        }
        String endpoint = args[0];
        String contentType = args[1];
        ContentTypes seen = new ContentTypes();
        KinesisClient kinesis = KinesisClient.builder()
                .endpointOverride(URI.create(endpoint))
                .region(Region.US_EAST_1)
                .credentialsProvider(StaticCredentialsProvider.create(AwsBasicCredentials.create("AKIDMILLRACEJAVA", "secret")))
                .httpClientBuilder(ApacheHttpClient.builder())
                .overrideConfiguration(o -> o.retryStrategy(AwsRetryStrategy.doNotRetry()).addExecutionInterceptor(seen))
                .build();
        String name = "java-sync-" + UUID.randomUUID().toString().substring(0, 12);
        List<PutRecordResponse> puts = new ArrayList<>();

        check("create stream and wait until ACTIVE", () -> {
            kinesis.createStream(r -> r.streamName(name).shardCount(2));
            waitUntil(() -> status(kinesis, name) == StreamStatus.ACTIVE, Duration.ofSeconds(20), name + " ACTIVE");
            StreamDescriptionSummary summary = kinesis.describeStreamSummary(r -> r.streamName(name)).streamDescriptionSummary();
            expectEqual(name, summary.streamName(), "StreamName");
            expectEqual("arn:aws:kinesis:us-east-1:000000000000:stream/" + name, summary.streamARN(), "StreamARN");
            expectEqual(2, summary.openShardCount(), "OpenShardCount");
            expectEqual(24, summary.retentionPeriodHours(), "RetentionPeriodHours");
            expectEqual(StreamMode.PROVISIONED, summary.streamModeDetails().streamMode(), "StreamMode");
            Instant created = summary.streamCreationTimestamp();
            expect(Math.abs(Duration.between(created, Instant.now()).toSeconds()) < 60, "creation timestamp is now: " + created);
            expect(kinesis.listStreams().streamNames().contains(name), "ListStreams lists the stream");
        });

        check("list shards", () -> {
            List<Shard> shards = kinesis.listShards(r -> r.streamName(name)).shards();
            expectEqual(List.of("shardId-000000000000", "shardId-000000000001"),
                    shards.stream().map(Shard::shardId).toList(), "shard ids");
            expectEqual("0", shards.get(0).hashKeyRange().startingHashKey(), "first hash key");
            expectEqual(new BigInteger(shards.get(0).hashKeyRange().endingHashKey()).add(BigInteger.ONE),
                    new BigInteger(shards.get(1).hashKeyRange().startingHashKey()), "ranges touch");
            expectEqual(HASH_KEY_MAX, new BigInteger(shards.get(1).hashKeyRange().endingHashKey()), "last hash key");
        });

        check("put and get records round trip", () -> {
            byte[] binary = new byte[256];
            for (int i = 0; i < 256; i++) binary[i] = (byte) i;
            Instant before = Instant.now().minusSeconds(2);
            puts.add(kinesis.putRecord(r -> r.streamName(name).partitionKey("one").explicitHashKey("0")
                    .data(SdkBytes.fromByteArray(binary))));
            List<PutRecordsRequestEntry> entries = new ArrayList<>();
            for (int i = 0; i < 20; i++) {
                entries.add(PutRecordsRequestEntry.builder().partitionKey("pk-" + i).explicitHashKey("0")
                        .data(SdkBytes.fromUtf8String("java record " + i)).build());
            }
            PutRecordsResponse batch = kinesis.putRecords(r -> r.streamName(name).records(entries));
            expectEqual(0, batch.failedRecordCount(), "FailedRecordCount");
            expectEqual(20, batch.records().size(), "results");
            Instant after = Instant.now().plusSeconds(2);

            List<software.amazon.awssdk.services.kinesis.model.Record> got = read(kinesis, name, "shardId-000000000000", 21);
            expectEqual(21, got.size(), "records read");
            expect(java.util.Arrays.equals(binary, got.get(0).data().asByteArray()), "binary data survives");
            expectEqual(puts.get(0).sequenceNumber(), got.get(0).sequenceNumber(), "first sequence number");
            expectEqual("one", got.get(0).partitionKey(), "partition key");
            for (int i = 0; i < 20; i++) {
                expectEqual("java record " + i, got.get(i + 1).data().asString(StandardCharsets.UTF_8), "data " + i);
                expectEqual(batch.records().get(i).sequenceNumber(), got.get(i + 1).sequenceNumber(), "sequence " + i);
            }
            BigInteger previous = BigInteger.valueOf(-1);
            for (var record : got) {
                BigInteger seq = new BigInteger(record.sequenceNumber());
                expect(seq.compareTo(previous) > 0, "sequence numbers increase");
                previous = seq;
                Instant arrival = record.approximateArrivalTimestamp();
                expect(!arrival.isBefore(before) && !arrival.isAfter(after), "arrival timestamp " + arrival + " is now");
            }
        });

        check("split shard and lineage", () -> {
            kinesis.splitShard(r -> r.streamName(name).shardToSplit("shardId-000000000001")
                    .newStartingHashKey(BigInteger.ONE.shiftLeft(127).add(BigInteger.ONE.shiftLeft(126)).toString()));
            waitUntil(() -> status(kinesis, name) == StreamStatus.ACTIVE, Duration.ofSeconds(20), name + " ACTIVE after split");
            List<Shard> shards = kinesis.listShards(r -> r.streamName(name)).shards();
            expectEqual(4, shards.size(), "shards after split");
            expect(shards.get(1).sequenceNumberRange().endingSequenceNumber() != null, "parent is closed");
            expectEqual("shardId-000000000001", shards.get(2).parentShardId(), "child 2 parent");
            expectEqual("shardId-000000000001", shards.get(3).parentShardId(), "child 3 parent");
        });

        check("errors are typed with AWS messages", () -> {
            try {
                kinesis.describeStreamSummary(r -> r.streamName(name + "-missing"));
                throw new AssertionError("no exception");
            } catch (ResourceNotFoundException e) {
                expectEqual("Stream " + name + "-missing under account 000000000000 not found.",
                        e.awsErrorDetails().errorMessage(), "message");
                expectEqual(400, e.statusCode(), "status");
                expect(e.requestId() != null && !e.requestId().isEmpty(), "request id");
            }
            try {
                kinesis.getShardIterator(r -> r.streamName(name).shardId("shardId-000000000000")
                        .shardIteratorType(ShardIteratorType.AT_SEQUENCE_NUMBER));
                throw new AssertionError("no exception");
            } catch (InvalidArgumentException e) {
                expect(e.awsErrorDetails().errorMessage().startsWith("Must either specify"), e.getMessage());
            }
        });

        check("delete stream", () -> {
            kinesis.deleteStream(r -> r.streamName(name));
            waitUntil(() -> status(kinesis, name) == null, Duration.ofSeconds(20), name + " deleted");
        });

        check("every exchange used " + contentType, () -> {
            expectEqual(Set.of(contentType), seen.requests, "request content types");
            expectEqual(Set.of(contentType), seen.responses, "response content types");
        });

        kinesis.close();
        System.out.printf("%d passed, %d failed%n", passed, failed);
        System.exit(failed == 0 ? 0 : 1);
    }
}
