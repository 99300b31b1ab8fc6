"""Values only: the model every package reads, the one NamespaceId, the exception family and the
rules callers' input must meet. Imports nothing of the agent's, nothing of gRPC or protobuf, and
touches no file: anything here can be built and compared in a test without a node."""
