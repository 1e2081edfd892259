"""Kafka engine: day-window topic exports, their restore into topics you name, and restore checks."""
