"""Fault tests on a three-broker Kafka cluster (scripts/kafka-cluster.sh); run with ``make test-cluster``."""
