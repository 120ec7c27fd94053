#!/usr/bin/env python3
"""The baseline flowlogd is measured against (docs/PERFORMANCE.md, "End to end"): what a plain
script costs for the same job. Lists a container through a SAS, downloads each blob whole,
expands every VNet (v4) or NSG (v1/v2) tuple with `json` into one flat document, and posts
`_bulk` batches of 5,000 `create` actions. No ids, offsets, retries or dead letters: only the
work every shipper has to do. Standard library only.

Usage: baseline-python.py CONTAINER_URL SAS_QUERY SINK_URL   (prints {"tuples": N, "requests": M})
"""
import json
import sys
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

container, sas, sink = sys.argv[1:4]
BATCH = 5000


def get(url):
    with urllib.request.urlopen(url) as response:
        return response.read()


def post(lines):
    request = urllib.request.Request(sink + "/_bulk", data="".join(lines).encode(),
                                     headers={"Content-Type": "application/x-ndjson"})
    with urllib.request.urlopen(request) as response:
        answer = json.loads(response.read())
    if answer.get("errors") is not False:
        sys.exit("bulk request refused: " + json.dumps(answer)[:300])


names, marker = [], ""
while True:
    listing = ET.fromstring(get(f"{container}?restype=container&comp=list&marker={marker}&{sas}"))
    names += [blob.findtext("Name") for blob in listing.iter("Blob")]
    marker = urllib.parse.quote(listing.findtext("NextMarker") or "", safe="")
    if not marker:
        break

VNET = ("src_ip dst_ip src_port dst_port protocol direction state encryption "
        "packets_sent bytes_sent packets_received bytes_received").split()
NSG = "src_ip dst_ip src_port dst_port protocol direction decision".split() + VNET[6:7] + VNET[8:]
ACTION = json.dumps({"create": {"_index": "baseline-flowlogs"}}) + "\n"
lines, tuples, requests = [], 0, 0
for name in names:
    for record in json.loads(get(f"{container}/{urllib.parse.quote(name)}?{sas}"))["records"]:
        props = record.get("properties") or record
        groups = [(flow.get("aclID"), group.get("rule"), group.get("flowTuples", []))
                  for flow in props.get("flowRecords", {}).get("flows", [])
                  for group in flow.get("flowGroups", [])]
        groups += [(None, rule.get("rule"), flows.get("flowTuples", []))
                   for rule in props.get("flows", []) for flows in rule.get("flows", [])]
        for acl, rule, flow_tuples in groups:
            for flow_tuple in flow_tuples:
                ts, *fields = flow_tuple.split(",")
                doc = dict(zip(VNET if record.get("flowLogVersion") else NSG, fields))
                doc.update({"@timestamp": int(ts), "time": record.get("time"), "acl": acl, "rule": rule,
                            "mac": record.get("macAddress"), "resource": record.get("flowLogResourceID") or
                            record.get("resourceId"), "target": record.get("targetResourceID"), "blob": name})
                lines += [ACTION, json.dumps(doc) + "\n"]
                tuples += 1
                if len(lines) == 2 * BATCH:
                    post(lines)
                    lines, requests = [], requests + 1
if lines:
    post(lines)
    requests += 1
print(json.dumps({"tuples": tuples, "requests": requests}))
