// AWS SDK for Java v2, KinesisAsyncClient on the Netty client: HTTP/2 with prior knowledge
// on http://, CBOR 1.1, as the Kinesis Client Library uses it. Covers put/get and
// SubscribeToShard (enhanced fan-out) from TRIM_HORIZON and from LATEST, each with its own
// consumer (AWS refuses a second subscription of one consumer to one shard within 5 s).
//
// usage: java -cp CLASSES:JARS/* AsyncClientTest ENDPOINT
// Exit status 0 when every check passed; prints one line per check and "N passed, N failed".

import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.BooleanSupplier;

import org.reactivestreams.Subscriber;
import org.reactivestreams.Subscription;

import software.amazon.awssdk.auth.credentials.AwsBasicCredentials;
import software.amazon.awssdk.auth.credentials.StaticCredentialsProvider;
import software.amazon.awssdk.awscore.retry.AwsRetryStrategy;
import software.amazon.awssdk.core.SdkBytes;
import software.amazon.awssdk.core.interceptor.Context;
import software.amazon.awssdk.core.interceptor.ExecutionAttributes;
import software.amazon.awssdk.core.interceptor.ExecutionInterceptor;
import software.amazon.awssdk.http.Protocol;
import software.amazon.awssdk.http.nio.netty.NettyNioAsyncHttpClient;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.kinesis.KinesisAsyncClient;
import software.amazon.awssdk.services.kinesis.model.*;

public class AsyncClientTest {
    static final Duration TIMEOUT = Duration.ofSeconds(20);

    static final class ContentTypes implements ExecutionInterceptor {
        final Set<String> requests = ConcurrentHashMap.newKeySet();

        @Override
        public void beforeTransmission(Context.BeforeTransmission context, ExecutionAttributes attributes) {
            requests.add(context.httpRequest().firstMatchingHeader("Content-Type").orElse("(none)"));
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

    static <T> T await(CompletableFuture<T> future) throws Exception {
        try {
            return future.get(TIMEOUT.toSeconds(), TimeUnit.SECONDS);
        } catch (java.util.concurrent.ExecutionException e) {
            if (e.getCause() instanceof Exception cause) throw cause;
            throw e;
        }
    }

    static StreamStatus status(KinesisAsyncClient kinesis, String name) {
        try {
            return await(kinesis.describeStreamSummary(r -> r.streamName(name))).streamDescriptionSummary().streamStatus();
        } catch (ResourceNotFoundException e) {
            return null;
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
    }

    /** One SubscribeToShard call; collects records until `wantN` arrived, then cancels. */
    static final class Subscription1 {
        final List<software.amazon.awssdk.services.kinesis.model.Record> records = Collections.synchronizedList(new ArrayList<>());
        final List<SubscribeToShardEvent> events = Collections.synchronizedList(new ArrayList<>());
        final CountDownLatch established = new CountDownLatch(1);
        final CountDownLatch done = new CountDownLatch(1);
        final AtomicReference<Throwable> error = new AtomicReference<>();
        CompletableFuture<Void> call;

        Subscription1 start(KinesisAsyncClient kinesis, SubscribeToShardRequest request, int wantN) {
            SubscribeToShardResponseHandler handler = SubscribeToShardResponseHandler.builder()
                    .onResponse(response -> established.countDown())
                    .onError(t -> { error.compareAndSet(null, t); done.countDown(); })
                    .onEventStream(publisher -> publisher.subscribe(new Subscriber<SubscribeToShardEventStream>() {
                        Subscription subscription;

                        @Override public void onSubscribe(Subscription s) { subscription = s; s.request(1); }

                        @Override public void onNext(SubscribeToShardEventStream event) {
                            if (event instanceof SubscribeToShardEvent e) {
                                events.add(e);
                                records.addAll(e.records());
                            }
                            if (records.size() >= wantN) {
                                subscription.cancel();
                                done.countDown();
                            } else {
                                subscription.request(1);
                            }
                        }

                        @Override public void onError(Throwable t) { error.compareAndSet(null, t); done.countDown(); }

                        @Override public void onComplete() { done.countDown(); }
                    }))
                    .build();
            call = kinesis.subscribeToShard(request, handler);
            return this;
        }

        void awaitEstablished() throws InterruptedException {
            if (!established.await(TIMEOUT.toSeconds(), TimeUnit.SECONDS)) {
                throw new AssertionError("subscription not established within " + TIMEOUT + "; error: " + error.get());
            }
        }

        void awaitDone(int wantN) throws InterruptedException {
            boolean finished = done.await(TIMEOUT.toSeconds(), TimeUnit.SECONDS);
            call.cancel(true);
            if (error.get() != null && records.size() < wantN) throw new AssertionError("subscription failed", error.get());
            expect(finished, "received " + records.size() + " of " + wantN + " records within " + TIMEOUT);
            expect(records.size() >= wantN, "subscription ended after " + records.size() + " of " + wantN + " records");
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: AsyncClientTest ENDPOINT");
            System.exit(2);
        }
        ContentTypes seen = new ContentTypes();
        KinesisAsyncClient kinesis = KinesisAsyncClient.builder()
                .endpointOverride(URI.create(args[0]))
                .region(Region.US_EAST_1)
                .credentialsProvider(StaticCredentialsProvider.create(AwsBasicCredentials.create("AKIDMILLRACEJAVA", "secret")))
                .httpClientBuilder(NettyNioAsyncHttpClient.builder().protocol(Protocol.HTTP2))
                .overrideConfiguration(o -> o.retryStrategy(AwsRetryStrategy.doNotRetry()).addExecutionInterceptor(seen))
                .build();
        String name = "java-async-" + UUID.randomUUID().toString().substring(0, 12);
        String shardId = "shardId-000000000000";
        List<String> consumerNames = List.of("java-efo-trim-horizon", "java-efo-latest");
        java.util.Map<String, String> consumerArns = new ConcurrentHashMap<>();

        check("create stream and register consumers", () -> {
            await(kinesis.createStream(r -> r.streamName(name).shardCount(1)));
            waitUntil(() -> status(kinesis, name) == StreamStatus.ACTIVE, TIMEOUT, name + " ACTIVE");
            String streamArn = await(kinesis.describeStreamSummary(r -> r.streamName(name)))
                    .streamDescriptionSummary().streamARN();
            for (String consumerName : consumerNames) {
                Consumer consumer = await(kinesis.registerStreamConsumer(r -> r.streamARN(streamArn).consumerName(consumerName))).consumer();
                expect(consumer.consumerARN().startsWith(streamArn + "/consumer/" + consumerName + ":"), consumer.consumerARN());
                consumerArns.put(consumerName, consumer.consumerARN());
            }
            for (String consumerName : consumerNames) {
                waitUntil(() -> {
                    try {
                        return await(kinesis.describeStreamConsumer(r -> r.consumerARN(consumerArns.get(consumerName))))
                                .consumerDescription().consumerStatus() == ConsumerStatus.ACTIVE;
                    } catch (Exception e) {
                        throw new RuntimeException(e);
                    }
                }, TIMEOUT, "consumer " + consumerName + " ACTIVE");
            }
        });

        List<String> earlySeqs = new ArrayList<>();
        check("put and get over HTTP/2 with CBOR", () -> {
            for (int i = 0; i < 5; i++) {
                int n = i;
                earlySeqs.add(await(kinesis.putRecord(r -> r.streamName(name).partitionKey("k" + n)
                        .data(SdkBytes.fromUtf8String("early " + n)))).sequenceNumber());
            }
            String iterator = await(kinesis.getShardIterator(r -> r.streamName(name).shardId(shardId)
                    .shardIteratorType(ShardIteratorType.TRIM_HORIZON))).shardIterator();
            GetRecordsResponse got = await(kinesis.getRecords(r -> r.shardIterator(iterator)));
            expectEqual(earlySeqs, got.records().stream().map(software.amazon.awssdk.services.kinesis.model.Record::sequenceNumber).toList(), "sequence numbers");
            expectEqual("early 3", got.records().get(3).data().asString(StandardCharsets.UTF_8), "data");
            expectEqual(Set.of("application/x-amz-cbor-1.1"), seen.requests, "request content types");
        });

        check("SubscribeToShard from TRIM_HORIZON", () -> {
            Subscription1 sub = new Subscription1().start(kinesis, SubscribeToShardRequest.builder()
                    .consumerARN(consumerArns.get("java-efo-trim-horizon")).shardId(shardId)
                    .startingPosition(StartingPosition.builder().type(ShardIteratorType.TRIM_HORIZON).build()).build(), 5);
            sub.awaitDone(5);
            expectEqual(earlySeqs, sub.records.stream().map(software.amazon.awssdk.services.kinesis.model.Record::sequenceNumber).toList(), "sequence numbers");
            expectEqual("early 0", sub.records.get(0).data().asString(StandardCharsets.UTF_8), "data");
            expectEqual("k4", sub.records.get(4).partitionKey(), "partition key");
        });

        check("SubscribeToShard from LATEST sees records put while subscribed", () -> {
            Subscription1 sub = new Subscription1().start(kinesis, SubscribeToShardRequest.builder()
                    .consumerARN(consumerArns.get("java-efo-latest")).shardId(shardId)
                    .startingPosition(StartingPosition.builder().type(ShardIteratorType.LATEST).build()).build(), 25);
            sub.awaitEstablished();
            List<PutRecordsRequestEntry> entries = new ArrayList<>();
            for (int i = 0; i < 25; i++) {
                entries.add(PutRecordsRequestEntry.builder().partitionKey("live-" + i)
                        .data(SdkBytes.fromUtf8String("live " + i)).build());
            }
            PutRecordsResponse batch = await(kinesis.putRecords(r -> r.streamName(name).records(entries)));
            expectEqual(0, batch.failedRecordCount(), "FailedRecordCount");
            sub.awaitDone(25);
            expectEqual(batch.records().stream().map(PutRecordsResultEntry::sequenceNumber).toList(),
                    sub.records.stream().map(software.amazon.awssdk.services.kinesis.model.Record::sequenceNumber).toList(),
                    "live sequence numbers");
            expectEqual("live 24", sub.records.get(24).data().asString(StandardCharsets.UTF_8), "data");
            SubscribeToShardEvent last = sub.events.get(sub.events.size() - 1);
            expect(last.continuationSequenceNumber() != null, "ContinuationSequenceNumber is set");
            expect(last.millisBehindLatest() != null, "MillisBehindLatest is set");
        });

        check("deregister consumers and delete stream", () -> {
            for (String consumerArn : consumerArns.values()) {
                await(kinesis.deregisterStreamConsumer(r -> r.consumerARN(consumerArn)));
            }
            await(kinesis.deleteStream(r -> r.streamName(name)));
            waitUntil(() -> status(kinesis, name) == null, TIMEOUT, name + " deleted");
        });

        kinesis.close();
        System.out.printf("%d passed, %d failed%n", passed, failed);
        System.exit(failed == 0 ? 0 : 1);
    }
}
