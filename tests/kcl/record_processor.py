"""A KCL record processor for the MultiLangDaemon (the kclpy sample's shape).

The MultiLangDaemon starts one of these per shard lease and talks to it over stdin/stdout.
It appends every record it processes, one JSON line each (with ``$KCL_TEST_WORKER``, the
worker it ran in), to ``$KCL_TEST_OUTPUT_DIR/<shard id>.jsonl``, and checkpoints after every batch and at the end
of a shard (which lets KCL go on to the children after a reshard). It never writes to
stdout itself: stdout belongs to the protocol.
"""

from __future__ import annotations

import json
import os
import sys

from amazon_kclpy import kcl
from amazon_kclpy.v3 import processor


class RecordProcessor(processor.RecordProcessorBase):
    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.shard_id = "unknown"
        self.worker = os.environ.get("KCL_TEST_WORKER", "")

    def initialize(self, initialize_input):
        self.shard_id = initialize_input.shard_id

    def process_records(self, process_records_input):
        lines = []
        for record in process_records_input.records:
            lines.append(json.dumps({
                "shard": self.shard_id,
                "seq": record.sequence_number,
                "pk": record.partition_key,
                "data": record.binary_data.decode("utf-8"),
                "worker": self.worker,
            }) + "\n")
        if lines:
            path = os.path.join(self.output_dir, f"{self.shard_id}.jsonl")
            with open(path, "a", encoding="utf-8") as out:
                out.write("".join(lines))
                out.flush()
                os.fsync(out.fileno())
        process_records_input.checkpointer.checkpoint()

    def lease_lost(self, lease_lost_input):
        pass

    def shard_ended(self, shard_ended_input):
        shard_ended_input.checkpointer.checkpoint()

    def shutdown_requested(self, shutdown_requested_input):
        shutdown_requested_input.checkpointer.checkpoint()


if __name__ == "__main__":
    output_dir = os.environ.get("KCL_TEST_OUTPUT_DIR")
    if not output_dir:
        sys.stderr.write("KCL_TEST_OUTPUT_DIR is not set\n")
        sys.exit(2)
    kcl.KCLProcess(RecordProcessor(output_dir)).run()
