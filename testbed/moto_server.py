"""moto's server with the one Amazon MSK call sluice needs that moto lacks: GetBootstrapBrokers.

moto keeps MSK clusters (CreateClusterV2, DescribeClusterV2, ...) but has no brokers, so it does not
implement GetBootstrapBrokers. Here a cluster's bootstrap strings come from its tags, which a test
sets when it creates the cluster: `sluice-test:BootstrapBrokerString` (and the same for the other
`BootstrapBrokerString*` fields) -- e.g. the test bed's Kafka broker. A cluster without them has none,
as a cluster with every listener disabled would. moto also names a cluster `cluster/<uuid>`; AWS's
ARNs are `cluster/<name>/<uuid>`, which is what sluice parses, so clusters get AWS's shape here.
Everything else is moto as shipped.
"""

import json
import sys
from urllib.parse import unquote

from moto.kafka.models import FakeKafkaCluster
from moto.kafka.responses import KafkaResponse
from moto.server import main

TAG_PREFIX = "sluice-test:"


def get_bootstrap_brokers(self):
    path = unquote(self.parsed_url.path)
    arn = path.split("/clusters/", 1)[-1].rsplit("/bootstrap-brokers", 1)[0]
    if arn not in self.kafka_backend.clusters:
        return 404, {}, json.dumps({"message": f"Cluster {arn} not found"})
    tags = self.kafka_backend.list_tags_for_resource(arn)
    strings = {
        # The API's JSON names are camelCase: bootstrapBrokerStringSaslIam, ...
        key[len(TAG_PREFIX)][0].lower() + key[len(TAG_PREFIX) + 1:]: value
        for key, value in tags.items()
        if key.startswith(TAG_PREFIX + "BootstrapBrokerString")
    }
    return json.dumps(strings)


def generate_arn(self):
    kind = "cluster" if self.cluster_type == "PROVISIONED" else "serverless-cluster"
    return (
        f"arn:aws:kafka:{self.region_name}:{self.account_id}:"
        f"{kind}/{self.cluster_name}/{self.cluster_id}"
    )


_get_action = KafkaResponse._get_action


def get_action(self):
    # An ARN with AWS's slashes, once unescaped, reads as DescribeCluster's path to moto's router.
    if self.method == "GET" and unquote(self.raw_path).rstrip("/").endswith("/bootstrap-brokers"):
        return "GetBootstrapBrokers"
    return _get_action(self)


KafkaResponse.get_bootstrap_brokers = get_bootstrap_brokers
KafkaResponse._get_action = get_action
FakeKafkaCluster._generate_arn = generate_arn

if __name__ == "__main__":
    main(sys.argv[1:])
