"""The edge agent that runs in the factory (issue 19): sources (OPC UA, MQTT/Sparkplug B,
Modbus, files) -> readings grouped into signed time-series payloads (or blobs) -> a durable
store-and-forward spool -> Kafka, in exactly the format the pipeline accepts (docs/formats.md).

No Faust, no database: imports only `trust`, the config module and its own modules.
The shared values and protocols are in `edge.model`.
"""
