"""Apache Kafka message specs (JSON) for the APIs kafka-python does not bundle.

Each `<Name>Request.json` / `<Name>Response.json` here is written from the KIP that defines
the message (KIP-848 consumer groups, KIP-932 share groups, ...) in Kafka's own spec format,
and becomes a message class exactly like kafka-python's generated ones (see `protocol.codec`).
A spec that kafka-python ships is never repeated here.
"""
