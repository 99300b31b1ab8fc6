"""The gRPC face of the agent: one module per service, the mapping between the model and the
nsinspect.v1 messages (wire), the status of each error, who may call (auth), how many streams may
wait (admission), the audit trail and the metrics. The only package that knows its callers."""
