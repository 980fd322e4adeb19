"""Parse an OpenMetrics text exposition (pycomd's /metrics) on stdin with
the Python client's parser, the one Prometheus's own tooling mirrors, and
print every sample as one JSON object: {"name{label=value,...}": value}.
A text the parser rejects fails with its message (exit 1)."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

samples = {}
families = []
for family in text_string_to_metric_families(sys.stdin.read()):
    families.append(family.name)
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        samples[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps({"families": families, "samples": samples}))
