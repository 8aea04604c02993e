// AWS SDK for Java v2, synchronous DynamoDbClient (the one KCL's jars ship) against millrace's
// DynamoDB subset: a table with a sort key, conditional writes (expressions and the legacy
// Expected KCL uses), update expressions, return values, Query with paging on the table and
// on a global secondary index, and the error shapes the SDK maps to its exception classes.
//
// usage: java -cp CLASSES:JARS/* DynamoDbClientTest ENDPOINT
// Exit status 0 when every check passed; prints one line per check and "N passed, N failed".

import java.net.URI;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;

import software.amazon.awssdk.auth.credentials.AwsBasicCredentials;
import software.amazon.awssdk.auth.credentials.StaticCredentialsProvider;
import software.amazon.awssdk.awscore.retry.AwsRetryStrategy;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.dynamodb.DynamoDbClient;
import software.amazon.awssdk.services.dynamodb.model.*;

public class DynamoDbClientTest {
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

    static void expectEqual(Object expected, Object actual, String what) {
        if (expected == null ? actual != null : !expected.equals(actual)) {
            throw new AssertionError(what + ": expected <" + expected + "> but was <" + actual + ">");
        }
    }

    static AttributeValue s(String v) { return AttributeValue.builder().s(v).build(); }
    static AttributeValue n(long v) { return AttributeValue.builder().n(Long.toString(v)).build(); }

    public static void main(String[] args) {
        DynamoDbClient ddb = DynamoDbClient.builder()
            .endpointOverride(URI.create(args[0]))
            .region(Region.US_EAST_1)
            .credentialsProvider(StaticCredentialsProvider.create(AwsBasicCredentials.create("AKIDJAVA", "secret")))
            .overrideConfiguration(c -> c.retryStrategy(AwsRetryStrategy.doNotRetry()))
            .build();
        String table = "java-" + UUID.randomUUID().toString().substring(0, 8);

        check("create table (provisioned, sort key)", () -> {
            TableDescription d = ddb.createTable(r -> r.tableName(table)
                .keySchema(KeySchemaElement.builder().attributeName("pk").keyType(KeyType.HASH).build(),
                           KeySchemaElement.builder().attributeName("sk").keyType(KeyType.RANGE).build())
                .attributeDefinitions(
                    AttributeDefinition.builder().attributeName("pk").attributeType(ScalarAttributeType.S).build(),
                    AttributeDefinition.builder().attributeName("sk").attributeType(ScalarAttributeType.N).build())
                .provisionedThroughput(p -> p.readCapacityUnits(5L).writeCapacityUnits(5L))).tableDescription();
            expectEqual(table, d.tableName(), "TableName");
            ddb.waiter().waitUntilTableExists(r -> r.tableName(table));
        });

        check("conditional put and ConditionalCheckFailedException", () -> {
            Map<String, AttributeValue> item = Map.of("pk", s("a"), "sk", n(1), "owner", s("w1"), "counter", n(1));
            ddb.putItem(r -> r.tableName(table).item(item).conditionExpression("attribute_not_exists(pk)"));
            try {
                ddb.putItem(r -> r.tableName(table).item(item).conditionExpression("attribute_not_exists(pk)"));
                throw new AssertionError("the second put should have failed");
            } catch (ConditionalCheckFailedException e) {
                expectEqual("The conditional request failed", e.awsErrorDetails().errorMessage(), "message");
                expectEqual(400, e.statusCode(), "status");
            }
        });

        check("update expression with names, values and UPDATED_NEW", () -> {
            Map<String, AttributeValue> got = ddb.updateItem(r -> r.tableName(table)
                .key(Map.of("pk", s("a"), "sk", n(1)))
                .updateExpression("SET #o = :w, #c = #c + :one")
                .conditionExpression("#c = :expected")
                .expressionAttributeNames(Map.of("#o", "owner", "#c", "counter"))
                .expressionAttributeValues(Map.of(":w", s("w2"), ":one", n(1), ":expected", n(1)))
                .returnValues(ReturnValue.UPDATED_NEW)).attributes();
            expectEqual(Map.of("owner", s("w2"), "counter", n(2)), got, "Attributes");
        });

        check("legacy Expected and AttributeUpdates (as KCL's lease refresher sends them)", () -> {
            ddb.updateItem(r -> r.tableName(table).key(Map.of("pk", s("a"), "sk", n(1)))
                .expected(Map.of("counter", ExpectedAttributeValue.builder().value(n(2)).build()))
                .attributeUpdates(Map.of("checkpoint", AttributeValueUpdate.builder()
                    .value(s("4960")).action(AttributeAction.PUT).build())));
            try {
                ddb.deleteItem(r -> r.tableName(table).key(Map.of("pk", s("a"), "sk", n(1)))
                    .expected(Map.of("counter", ExpectedAttributeValue.builder().value(n(1)).build())));
                throw new AssertionError("the delete should have failed");
            } catch (ConditionalCheckFailedException e) {
                // expected
            }
            Map<String, AttributeValue> item = ddb.getItem(r -> r.tableName(table)
                .key(Map.of("pk", s("a"), "sk", n(1))).consistentRead(true)).item();
            expectEqual(s("4960"), item.get("checkpoint"), "checkpoint");
        });

        check("query pages in sort-key order", () -> {
            for (int i = 2; i <= 12; i++) {
                final int k = i;
                ddb.putItem(r -> r.tableName(table).item(Map.of("pk", s("a"), "sk", n(k), "owner", s("w" + (k % 2)))));
            }
            List<Long> seen = new ArrayList<>();
            Map<String, AttributeValue> start = null;
            do {
                QueryRequest.Builder q = QueryRequest.builder().tableName(table)
                    .keyConditionExpression("pk = :a AND sk >= :lo")
                    .expressionAttributeValues(Map.of(":a", s("a"), ":lo", n(2))).limit(4);
                if (start != null) q.exclusiveStartKey(start);
                QueryResponse page = ddb.query(q.build());
                page.items().forEach(i -> seen.add(Long.parseLong(i.get("sk").n())));
                start = page.hasLastEvaluatedKey() && !page.lastEvaluatedKey().isEmpty() ? page.lastEvaluatedKey() : null;
            } while (start != null);
            expectEqual(List.of(2L, 3L, 4L, 5L, 6L, 7L, 8L, 9L, 10L, 11L, 12L), seen, "sort keys");
        });

        check("global secondary index added by UpdateTable, then queried", () -> {
            ddb.updateTable(r -> r.tableName(table)
                .attributeDefinitions(AttributeDefinition.builder().attributeName("owner").attributeType(ScalarAttributeType.S).build())
                .globalSecondaryIndexUpdates(GlobalSecondaryIndexUpdate.builder().create(c -> c.indexName("by-owner")
                    .keySchema(KeySchemaElement.builder().attributeName("owner").keyType(KeyType.HASH).build())
                    .projection(p -> p.projectionType(ProjectionType.ALL))
                    .provisionedThroughput(p -> p.readCapacityUnits(1L).writeCapacityUnits(1L))).build()));
            QueryResponse page = ddb.query(r -> r.tableName(table).indexName("by-owner")
                .keyConditionExpression("#o = :w").expressionAttributeNames(Map.of("#o", "owner"))
                .expressionAttributeValues(Map.of(":w", s("w0"))));
            expectEqual(6, page.count(), "items owned by w0 (sk 2, 4, ..., 12)");
        });

        check("ResourceNotFoundException and ValidationException", () -> {
            try {
                ddb.describeTable(r -> r.tableName("no-such-table"));
                throw new AssertionError("describe should have failed");
            } catch (ResourceNotFoundException e) {
                // expected
            }
            try {
                ddb.getItem(r -> r.tableName(table).key(Map.of("pk", s("a"))));
                throw new AssertionError("get should have failed");
            } catch (DynamoDbException e) {
                expectEqual("ValidationException", e.awsErrorDetails().errorCode(), "code");
            }
        });

        check("delete table", () -> {
            ddb.deleteTable(r -> r.tableName(table));
            ddb.waiter().waitUntilTableNotExists(r -> r.tableName(table));
        });

        ddb.close();
        System.out.printf("%d passed, %d failed%n", passed, failed);
        System.exit(failed == 0 ? 0 : 1);
    }
}
