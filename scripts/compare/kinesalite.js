// Start kinesalite on loopback with its fastest settings: in-memory store (no --path),
// streams ACTIVE/deleted at once, and a shard limit high enough for the many-shards run.
// Its CLI listens on every interface; the programmatic API (documented in its README)
// lets us bind 127.0.0.1 only.
//
// Usage: node kinesalite.js NODE_MODULES_DIR PORT
const [modules, port] = process.argv.slice(2);
const kinesalite = require(require("path").join(modules, "kinesalite"));
const server = kinesalite({
  createStreamMs: 0,
  deleteStreamMs: 0,
  updateStreamMs: 0,
  shardLimit: 20000,
});
server.listen(Number(port), "127.0.0.1", () => {
  console.log(`kinesalite listening on 127.0.0.1:${port}`);
});
