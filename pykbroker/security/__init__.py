"""Authentication: listeners' security protocols, TLS, SASL, and who a connection is.

`principal.py` is the interface the rest of the broker reads (the authorizer, quotas): every
Connection carries a `Session` (Kafka's RequestContext principal + client address + listener).
"""
